//! Loading: read the layers, apply environment overrides, resolve the
//! tasks file, read and validate everything, and report all problems.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use actors::domain::{TaskType, TaskTypeId};

use super::{
    RateLimitConfig, ServiceConfig,
    env::{EnvSource, ProcessEnv, overrides},
    node::{self, Key, Node, Origin, Value},
    problem::{ConfigErrors, ConfigProblem, Problems},
    read::Ctx,
    service::{SECTIONS, read_service},
    tasks::read_tasks,
};

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The service sections.
    pub service: ServiceConfig,
    /// Every task definition, ids unique.
    pub tasks: Vec<TaskType>,
    /// Where the tasks came from (re-read on reload); a service file when
    /// the tasks were written inline.
    pub tasks_file: PathBuf,
    /// Problems that do not prevent running.
    pub warnings: Vec<ConfigProblem>,
}

/// Loads `paths` in order (later files win, mappings merge deeply), then
/// `TASKQUEUE_SECTION__KEY` overrides from the process environment, then
/// the tasks. Returns every problem when any is an error.
pub fn load(paths: &[PathBuf]) -> Result<LoadedConfig, ConfigErrors> {
    load_with(paths, &ProcessEnv)
}

/// Reads the tasks file again (on reload) with `${ENV_NAME}` from the
/// process environment. Warns about `rate_limit.per_task` keys that name
/// no task.
pub fn load_tasks(
    path: &Path,
    rate_limit: &RateLimitConfig,
) -> Result<(Vec<TaskType>, Vec<ConfigProblem>), ConfigErrors> {
    load_tasks_with(path, rate_limit, &ProcessEnv)
}

/// [`load`] with an explicit environment.
pub fn load_with(paths: &[PathBuf], env: &dyn EnvSource) -> Result<LoadedConfig, ConfigErrors> {
    let mut ctx = Ctx {
        env,
        problems: Problems::default(),
        execution_timeout: None,
    };
    let defaults_origin = Origin::file(&Arc::from(
        paths.last().map_or(Path::new(""), PathBuf::as_path),
    ));
    let mut root = Node {
        value: Value::Map(Vec::new()),
        origin: defaults_origin,
    };
    let mut inline_tasks: Option<(Node, PathBuf)> = None;
    for path in paths {
        let file: Arc<Path> = Arc::from(path.as_path());
        let Some(mut layer) = read_yaml(&mut ctx, &file) else {
            continue;
        };
        if !matches!(layer.value, Value::Map(_)) {
            ctx.error(
                &layer.origin,
                "",
                format!(
                    "expected a mapping of sections (scheduler, redis, ...) or `tasks:`, found {}",
                    layer.value.kind()
                ),
            );
            continue;
        }
        if let Some((_, list)) = take_task_list(&mut layer) {
            inline_tasks = Some((list, path.clone()));
        }
        root.merge(layer);
    }
    for found in overrides(env) {
        let origin = Origin::Env { var: found.var };
        root.set(
            &found.path,
            Node {
                value: Value::Str(found.value),
                origin,
            },
        );
    }

    let service = read_service(&root, &mut ctx);
    ctx.execution_timeout = Some(service.config.execution.timeout);
    let (tasks, tasks_file) = match inline_tasks {
        Some((list, path)) => (read_tasks(&list, &mut ctx), path),
        None => {
            let tasks_file = tasks_file_path(
                &service.config.tasks.config_file,
                service.config_file_origin.as_ref(),
                paths,
            );
            let must_exist = !paths.is_empty() || service.config_file_origin.is_some();
            if !must_exist && !tasks_file.exists() {
                ctx.warning(
                    &Origin::file(&Arc::from(tasks_file.as_path())),
                    "tasks.config_file",
                    "no configuration file given and no tasks file here: running without tasks",
                );
                (Vec::new(), tasks_file)
            } else {
                let tasks = read_tasks_file(&mut ctx, &tasks_file, TasksFile::TasksOnly);
                (tasks, tasks_file)
            }
        }
    };
    for (id, origin) in &service.per_task_keys {
        warn_unknown_per_task(&mut ctx, id, origin, &tasks, &tasks_file);
    }
    finish(ctx).map(|warnings| LoadedConfig {
        service: service.config,
        tasks,
        tasks_file,
        warnings,
    })
}

/// [`load_tasks`] with an explicit environment.
pub fn load_tasks_with(
    path: &Path,
    rate_limit: &RateLimitConfig,
    env: &dyn EnvSource,
) -> Result<(Vec<TaskType>, Vec<ConfigProblem>), ConfigErrors> {
    let mut ctx = Ctx {
        env,
        problems: Problems::default(),
        execution_timeout: None,
    };
    let tasks = read_tasks_file(&mut ctx, path, TasksFile::MayHoldSections);
    let origin = Origin::file(&Arc::from(path));
    for id in rate_limit.per_task.keys() {
        warn_unknown_per_task(&mut ctx, id, &origin, &tasks, path);
    }
    finish(ctx).map(|warnings| (tasks, warnings))
}

fn finish(ctx: Ctx<'_>) -> Result<Vec<ConfigProblem>, ConfigErrors> {
    let failed = ctx.problems.has_errors();
    let problems = ctx.problems.sorted();
    if failed {
        Err(ConfigErrors { problems })
    } else {
        Ok(problems)
    }
}

/// Reads and parses one file, recording why it could not be.
fn read_yaml(ctx: &mut Ctx<'_>, file: &Arc<Path>) -> Option<Node> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            ctx.error(&Origin::file(file), "", format!("cannot read file: {err}"));
            return None;
        }
    };
    match node::parse(&text, file) {
        Ok(node) => Some(node),
        Err(err) => {
            let origin = Origin::File {
                file: file.clone(),
                line: err.line,
                column: err.column,
            };
            ctx.error(&origin, "", format!("invalid YAML: {}", err.message));
            None
        }
    }
}

/// Removes a top-level `tasks:` that is a list (task definitions), leaving
/// a `tasks:` mapping (the service section) in place.
fn take_task_list(layer: &mut Node) -> Option<(Key, Node)> {
    if !matches!(layer.get("tasks")?.value, Value::Seq(_)) {
        return None;
    }
    layer.take("tasks")
}

/// What else a tasks file may hold besides `tasks: [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TasksFile {
    /// Nothing: the file named by `tasks.config_file`.
    TasksOnly,
    /// Service sections, ignored: on reload, the file the tasks came from
    /// may be a service file with its tasks inline.
    MayHoldSections,
}

/// Reads the `tasks: [...]` of a tasks file.
fn read_tasks_file(ctx: &mut Ctx<'_>, path: &Path, kind: TasksFile) -> Vec<TaskType> {
    let file: Arc<Path> = Arc::from(path);
    let Some(root) = read_yaml(ctx, &file) else {
        return Vec::new();
    };
    let known = match kind {
        TasksFile::TasksOnly => &["tasks"][..],
        TasksFile::MayHoldSections => SECTIONS,
    };
    let Some(fields) = ctx.fields(&root, "", known) else {
        return Vec::new();
    };
    match fields.get("tasks") {
        Some((list, _)) => read_tasks(list, ctx),
        None => {
            ctx.error(
                &root.origin,
                "tasks",
                "missing; a tasks file holds `tasks:`, a list of task definitions",
            );
            Vec::new()
        }
    }
}

/// `tasks.config_file`, relative to the directory of the file that names
/// it; from an environment override, relative to the working directory;
/// by default, next to the last configuration file.
fn tasks_file_path(config_file: &Path, origin: Option<&Origin>, paths: &[PathBuf]) -> PathBuf {
    if config_file.is_absolute() {
        return config_file.to_path_buf();
    }
    let base = match origin {
        Some(Origin::File { file, .. }) => file.parent().map(Path::to_path_buf),
        Some(Origin::Env { .. }) => None,
        None => paths.last().and_then(|p| p.parent()).map(Path::to_path_buf),
    };
    match base {
        Some(dir) => dir.join(config_file),
        None => config_file.to_path_buf(),
    }
}

/// A per-task limit for an id no task has is a warning, not an error:
/// tasks reload at runtime independently of the worker configuration, so
/// the limit may be meant for a task that is about to be added.
fn warn_unknown_per_task(
    ctx: &mut Ctx<'_>,
    id: &TaskTypeId,
    origin: &Origin,
    tasks: &[TaskType],
    tasks_file: &Path,
) {
    if tasks.iter().any(|t| &t.id == id) {
        return;
    }
    ctx.warning(
        origin,
        &format!("rate_limit.per_task.{id}"),
        format!(
            "no task {:?} in {}; the limit applies once such a task is defined",
            id.as_str(),
            tasks_file.display()
        ),
    );
}
