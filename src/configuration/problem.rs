//! What validation reports: one [`ConfigProblem`] per mistake, all of them
//! at once, each naming the file, the config path and the field.

use std::{fmt, path::PathBuf};

use actors::{
    domain::TaskTypeId,
    scheduler::{ReloadProblem, ReloadProblems},
};

use super::node::Origin;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Suspicious but usable (for example a rate limit for an unknown task).
    Warning,
}

/// One mistake in the configuration.
///
/// Messages never contain the value of a secret (passwords, header values,
/// tokens): they name the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the value came from; for an environment override, the
    /// variable's name prefixed with `$` (`$TASKQUEUE_REDIS__DB`).
    pub file: PathBuf,
    /// Config path of the field: `scheduler.batch_size`,
    /// `tasks[daily_report].interval.timezone` (`tasks[2]` when the task has
    /// no usable id). Empty for problems with the file as a whole.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
    /// 1-based line, when the parser knows it.
    pub line: Option<u32>,
    /// 1-based column, when the parser knows it.
    pub column: Option<u32>,
    /// Error or warning.
    pub severity: Severity,
}

impl ConfigProblem {
    /// A problem with the value found at `origin`.
    pub(crate) fn at(
        origin: &Origin,
        path: &str,
        message: impl Into<String>,
        severity: Severity,
    ) -> ConfigProblem {
        let (file, line, column) = match origin {
            Origin::File { file, line, column } => (
                file.to_path_buf(),
                (*line > 0).then_some(*line),
                (*line > 0).then_some(*column),
            ),
            Origin::Env { var } => (PathBuf::from(format!("${var}")), None, None),
        };
        ConfigProblem {
            file,
            path: path.to_owned(),
            message: message.into(),
            line,
            column,
            severity,
        }
    }

    /// Whether this problem makes the configuration unusable.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for ConfigProblem {
    /// `config/tasks.yaml:12:17: task daily_report: interval.timezone: unknown time zone ...`:
    /// the text of the [`ReloadProblem`] it makes, so `validate`, a refused
    /// start and `/health` after a rejected reload say the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ReloadProblem::from(self).fmt(f)
    }
}

impl From<&ConfigProblem> for ReloadProblem {
    fn from(problem: &ConfigProblem) -> ReloadProblem {
        let (task, field) = match task_subject(&problem.path) {
            Some((task, field)) => (Some(task), field.to_owned()),
            None => (None, problem.path.clone()),
        };
        ReloadProblem {
            file: problem.file.clone(),
            position: problem.line.zip(problem.column),
            task,
            field,
            warning: problem.severity == Severity::Warning,
            message: problem.message.clone(),
        }
    }
}

/// Splits `tasks[daily_report].interval.timezone` into the task id and
/// the field; `None` for other paths and for tasks without a usable id.
fn task_subject(path: &str) -> Option<(TaskTypeId, &str)> {
    let rest = path.strip_prefix("tasks[")?;
    let close = rest.find(']')?;
    let id = &rest[..close];
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = rest[close + 1..].strip_prefix('.').unwrap_or("");
    Some((TaskTypeId::parse(id).ok()?, field))
}

/// Everything wrong with a configuration (errors first among equals, then
/// in file order), returned when at least one problem is an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ConfigErrors {
    /// Every problem found, warnings included.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigErrors {
    /// The problems that are errors.
    pub fn errors(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.problems.iter().filter(|p| p.is_error())
    }
}

impl From<ConfigErrors> for ReloadProblems {
    /// Every problem, warnings included, as a rejected reload records them.
    fn from(errors: ConfigErrors) -> ReloadProblems {
        ReloadProblems(errors.problems.iter().map(ReloadProblem::from).collect())
    }
}

fn render(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects problems while a configuration is read.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub Vec<ConfigProblem>);

impl Problems {
    /// Records an error at `origin`.
    pub(crate) fn error(&mut self, origin: &Origin, path: &str, message: impl Into<String>) {
        self.0
            .push(ConfigProblem::at(origin, path, message, Severity::Error));
    }

    /// Records a warning at `origin`.
    pub(crate) fn warning(&mut self, origin: &Origin, path: &str, message: impl Into<String>) {
        self.0
            .push(ConfigProblem::at(origin, path, message, Severity::Warning));
    }

    /// Whether any error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        self.0.iter().any(ConfigProblem::is_error)
    }

    /// The problems in a stable, readable order: by file (in the order
    /// first seen), then line and column.
    pub(crate) fn sorted(self) -> Vec<ConfigProblem> {
        let mut files: Vec<PathBuf> = Vec::new();
        for problem in &self.0 {
            if !files.contains(&problem.file) {
                files.push(problem.file.clone());
            }
        }
        let mut problems = self.0;
        problems.sort_by_key(|p| (files.iter().position(|f| *f == p.file), p.line, p.column));
        problems
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;

    fn check(path: &str, severity: Severity, expected: &str) {
        let origin = Origin::File {
            file: Arc::from(Path::new("config/tasks.yaml")),
            line: 12,
            column: 17,
        };
        let problem = ConfigProblem::at(&origin, path, "bad", severity);
        assert_eq!(problem.to_string(), expected);
    }

    #[test]
    fn problems_render_file_position_subject_and_message() {
        check(
            "tasks[daily_report].interval.timezone",
            Severity::Error,
            "config/tasks.yaml:12:17: task daily_report: interval.timezone: bad",
        );
        check(
            "tasks[daily_report]",
            Severity::Error,
            "config/tasks.yaml:12:17: task daily_report: bad",
        );
        check(
            "tasks[3].id",
            Severity::Error,
            "config/tasks.yaml:12:17: tasks[3].id: bad",
        );
        check(
            "rate_limit.per_task.x",
            Severity::Warning,
            "config/tasks.yaml:12:17: warning: rate_limit.per_task.x: bad",
        );
        check("", Severity::Error, "config/tasks.yaml:12:17: bad");
    }

    #[test]
    fn environment_problems_name_the_variable() {
        let origin = Origin::Env {
            var: "TASKQUEUE_SCHEDULER__BATCH_SIZE".to_owned(),
        };
        let problem = ConfigProblem::at(&origin, "scheduler.batch_size", "bad", Severity::Error);
        assert_eq!(
            problem.to_string(),
            "$TASKQUEUE_SCHEDULER__BATCH_SIZE: scheduler.batch_size: bad"
        );
    }
}
