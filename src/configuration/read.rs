//! Typed reading of located nodes: each reader either returns a value or
//! records a problem at the node's position and returns `None`, so one
//! mistake never hides the next.

use std::time::Duration;

use super::{
    env::{EnvSource, InterpolateError, interpolate},
    node::{Key, Node, Origin, Value},
    problem::Problems,
};

/// State of one load: where variables come from and what went wrong.
pub(crate) struct Ctx<'a> {
    /// Resolves `${ENV_NAME}`.
    pub env: &'a dyn EnvSource,
    /// Everything found so far.
    pub problems: Problems,
    /// `execution.timeout` of the service configuration, when the tasks
    /// are read with it (a task's longer `timeout` is then a warning).
    pub execution_timeout: Option<std::time::Duration>,
}

/// A mapping whose unknown keys have been reported.
pub(crate) struct Fields<'n> {
    /// The mapping node itself (for "missing field" positions).
    pub node: &'n Node,
    /// Config path of the mapping.
    pub path: String,
    entries: &'n [(Key, Node)],
}

impl<'n> Fields<'n> {
    /// The value of `name` and its config path.
    pub(crate) fn get(&self, name: &str) -> Option<(&'n Node, String)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| (v, join(&self.path, name)))
    }

    /// Every entry (for free-form mappings such as headers).
    pub(crate) fn entries(&self) -> &'n [(Key, Node)] {
        self.entries
    }
}

/// `parent.name`, or `name` at the top.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

impl Ctx<'_> {
    /// Records an error.
    pub(crate) fn error(&mut self, origin: &Origin, path: &str, message: impl Into<String>) {
        self.problems.error(origin, path, message);
    }

    /// Records a warning.
    pub(crate) fn warning(&mut self, origin: &Origin, path: &str, message: impl Into<String>) {
        self.problems.warning(origin, path, message);
    }

    /// Reads `node` as a mapping with the fields `known`; every other key
    /// is reported (with a suggestion when it looks like a typo).
    pub(crate) fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries.as_slice(),
            Value::Null => &[],
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let message = unknown_field_message(&key.name, known);
                self.error(&key.origin, &join(path, &key.name), message);
            }
        }
        Some(Fields {
            node,
            path: path.to_owned(),
            entries,
        })
    }

    /// Reads `node` as a free-form mapping (any keys).
    pub(crate) fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                node,
                path: path.to_owned(),
                entries,
            }),
            Value::Null => Some(Fields {
                node,
                path: path.to_owned(),
                entries: &[],
            }),
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Reports a missing required field of `fields`.
    pub(crate) fn missing(&mut self, fields: &Fields<'_>, name: &str, hint: &str) {
        let path = join(&fields.path, name);
        self.error(&fields.node.origin, &path, format!("missing; {hint}"));
    }

    /// Reads a scalar as text and resolves `${ENV_NAME}` in it. Messages
    /// never include the value (it may be a secret).
    pub(crate) fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        let raw = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected text, found {}", other.kind()),
                );
                return None;
            }
        };
        match interpolate(&raw, self.env) {
            Ok(text) => Some(text),
            Err(InterpolateError::Unset(names)) => {
                let names: Vec<String> = names.iter().map(|n| format!("${{{n}}}")).collect();
                let verb = if names.len() == 1 { "is" } else { "are" };
                self.error(
                    &node.origin,
                    path,
                    format!("{} {verb} not set in the environment", names.join(", ")),
                );
                None
            }
            Err(InterpolateError::Malformed) => {
                self.error(
                    &node.origin,
                    path,
                    "malformed ${...} reference; write ${ENV_NAME} (letters, digits, _) or $${ for a literal ${",
                );
                None
            }
        }
    }

    /// Reads a whole number. Environment overrides arrive as text and are
    /// parsed.
    pub(crate) fn integer(&mut self, node: &Node, path: &str) -> Option<i64> {
        match &node.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) if node.origin.is_env() => match s.trim().parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    self.error(
                        &node.origin,
                        path,
                        format!("expected a whole number, found {s:?}"),
                    );
                    None
                }
            },
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected a whole number, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Reads a count of at least `min` that fits a `u32`.
    pub(crate) fn count(&mut self, node: &Node, path: &str, min: u32) -> Option<u32> {
        let value = self.integer(node, path)?;
        if value < i64::from(min) {
            let rule = if min == 0 {
                "must not be negative".to_owned()
            } else {
                format!("must be at least {min}")
            };
            self.error(&node.origin, path, format!("{rule}, found {value}"));
            return None;
        }
        match u32::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    &node.origin,
                    path,
                    format!("{value} is too large (at most {})", u32::MAX),
                );
                None
            }
        }
    }

    /// Reads `true` or `false`.
    pub(crate) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if node.origin.is_env() => match s.trim() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    self.error(
                        &node.origin,
                        path,
                        format!("expected true or false, found {other:?}"),
                    );
                    None
                }
            },
            other => {
                self.error(
                    &node.origin,
                    path,
                    format!("expected true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Reads a duration such as `30s`, `5m`, `1h 30m`.
    pub(crate) fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let Value::Str(text) = &node.value else {
            let found = match &node.value {
                Value::Int(i) => format!("the bare number {i}"),
                other => other.kind().to_owned(),
            };
            self.error(
                &node.origin,
                path,
                format!("expected a duration with a unit (e.g. 30s, 5m, 1h), found {found}"),
            );
            return None;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) => Some(d),
            Err(err) => {
                self.error(
                    &node.origin,
                    path,
                    format!("{text:?} is not a duration (e.g. 30s, 5m, 1h): {err}"),
                );
                None
            }
        }
    }

    /// Reads a duration that must not be zero.
    pub(crate) fn positive_duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let duration = self.duration(node, path)?;
        if duration.is_zero() {
            self.error(&node.origin, path, "must be longer than zero");
            return None;
        }
        Some(duration)
    }

    /// Reads one of the words `choices` (written as their first element).
    pub(crate) fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let Value::Str(text) = &node.value else {
            self.error(
                &node.origin,
                path,
                format!(
                    "expected {what} ({}), found {}",
                    names.join(", "),
                    node.value.kind()
                ),
            );
            return None;
        };
        match choices.iter().find(|(n, _)| n == text) {
            Some((_, value)) => Some(*value),
            None => {
                self.error(
                    &node.origin,
                    path,
                    format!("unknown {what} {text:?} ({})", names.join(", ")),
                );
                None
            }
        }
    }
}

fn unknown_field_message(name: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match closest {
        Some((_, suggestion)) => format!("unknown field; did you mean `{suggestion}`?"),
        None => format!("unknown field; expected one of: {}", known.join(", ")),
    }
}

/// Levenshtein distance, for typo suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(edit_distance("batch_sise", "batch_size"), 1);
        assert_eq!(
            unknown_field_message("batch_sise", &["batch_size", "check_interval"]),
            "unknown field; did you mean `batch_size`?"
        );
        assert_eq!(
            unknown_field_message("zzz", &["db", "prefix"]),
            "unknown field; expected one of: db, prefix"
        );
    }
}
