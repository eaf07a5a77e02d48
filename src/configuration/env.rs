//! The environment as configuration sees it: `TASKQUEUE_SECTION__KEY`
//! overrides and `${ENV_NAME}` references, read through [`EnvSource`] so
//! tests can inject a map instead of touching the process environment.

use std::collections::{BTreeMap, HashMap};

/// Prefix of override variables.
pub const OVERRIDE_PREFIX: &str = "TASKQUEUE_";

/// Separator between the levels of an override's path.
pub const OVERRIDE_SEPARATOR: &str = "__";

/// Where environment variables come from.
pub trait EnvSource {
    /// The value of `name`, if set (and valid Unicode).
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable (name, value).
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<_> = self.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort();
        vars
    }
}

/// One `TASKQUEUE_SECTION__KEY=value` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    /// The variable's name.
    pub var: String,
    /// Lower-cased path: `["scheduler", "batch_size"]`.
    pub path: Vec<String>,
    /// The raw value.
    pub value: String,
}

/// The override variables in `env`, sorted by name. Variables with the
/// prefix but no `__` (such as `TASKQUEUE_CONFIG`) are not overrides.
pub(crate) fn overrides(env: &dyn EnvSource) -> Vec<Override> {
    let mut found: Vec<Override> = env
        .vars()
        .into_iter()
        .filter_map(|(var, value)| {
            let rest = var.strip_prefix(OVERRIDE_PREFIX)?;
            if !rest.contains(OVERRIDE_SEPARATOR) {
                return None;
            }
            let path = rest
                .split(OVERRIDE_SEPARATOR)
                .map(str::to_lowercase)
                .collect();
            Some(Override { var, path, value })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// Why `${...}` references could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolateError {
    /// `${NAME}` named variables that are not set.
    Unset(Vec<String>),
    /// A `${` without a closing `}` or with a name that is not
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    Malformed,
}

/// Replaces every `${NAME}` in `text` with the variable's value. `$${`
/// writes a literal `${`.
pub(crate) fn interpolate(text: &str, env: &dyn EnvSource) -> Result<String, InterpolateError> {
    if !text.contains("${") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let close = tail.find('}').ok_or(InterpolateError::Malformed)?;
            let name = &tail[..close];
            if !is_var_name(name) {
                return Err(InterpolateError::Malformed);
            }
            match env.var(name) {
                Some(value) => out.push_str(&value),
                None => unset.push(name.to_owned()),
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if unset.is_empty() {
        Ok(out)
    } else {
        Err(InterpolateError::Unset(unset))
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("PW".to_owned(), "s3cret".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("TASKQUEUE_REDIS__DB".to_owned(), "2".to_owned()),
            ("TASKQUEUE_CONFIG".to_owned(), "x.yaml".to_owned()),
            ("TASKQUEUE_TEST_REDIS_URL".to_owned(), "redis://".to_owned()),
            (
                "TASKQUEUE_RATE_LIMIT__PER_TASK__API_HEAVY".to_owned(),
                "5".to_owned(),
            ),
        ])
    }

    fn check(input: &str, expected: Result<&str, InterpolateError>) {
        assert_eq!(
            interpolate(input, &env()),
            expected.map(str::to_owned),
            "input {input:?}"
        );
    }

    #[test]
    fn references_resolve_from_the_source() {
        check("plain", Ok("plain"));
        check("${PW}", Ok("s3cret"));
        check("Bearer ${PW}!", Ok("Bearer s3cret!"));
        check("${EMPTY}", Ok(""));
        check("$5 and $${PW}", Ok("$5 and ${PW}"));
        check(
            "${NOPE} ${PW} ${ALSO_NOPE}",
            Err(InterpolateError::Unset(vec![
                "NOPE".to_owned(),
                "ALSO_NOPE".to_owned(),
            ])),
        );
        check("${PW", Err(InterpolateError::Malformed));
        check("${1X}", Err(InterpolateError::Malformed));
        check("${}", Err(InterpolateError::Malformed));
    }

    #[test]
    fn only_double_underscore_variables_are_overrides() {
        let found = overrides(&env());
        let paths: Vec<_> = found.iter().map(|o| o.path.join(".")).collect();
        assert_eq!(paths, ["rate_limit.per_task.api_heavy", "redis.db"]);
    }
}
