//! Finds one task definition in `tasks.yaml` files, for `next-runs`.

use std::path::PathBuf;

use actors::domain::TaskType;

use super::TaskFile;

/// The task `task` as defined in the tasks files `paths` (when several
/// define it, the last one wins). The error names the file or the task.
pub fn load_task(paths: &[PathBuf], task: &str) -> Result<TaskType, String> {
    let mut found = None;
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("--config {}: {error}", path.display()))?;
        let file: TaskFile = serde_saphyr::from_str(&text)
            .map_err(|error| format!("--config {}: {error}", path.display()))?;
        if let Some(definition) = file
            .tasks
            .into_iter()
            .rev()
            .find(|definition| definition.id.as_str() == task)
        {
            found = Some(definition);
        }
    }
    found.ok_or_else(|| format!("--task: no task {task:?} in the files given with --config"))
}
