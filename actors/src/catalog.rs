//! The task definitions in force, shared by actors and API handlers.
//!
//! A reload swaps the whole set at once; readers hold an `Arc` snapshot, so
//! a reload never shows them half a file.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use crate::domain::{TaskType, TaskTypeId};

/// Task types by id, replaced wholesale on reload.
#[derive(Debug, Clone, Default)]
pub struct TaskCatalog {
    tasks: Arc<RwLock<Arc<BTreeMap<TaskTypeId, TaskType>>>>,
}

impl TaskCatalog {
    /// A catalog holding `tasks` (ids assumed unique, as validated).
    pub fn new(tasks: impl IntoIterator<Item = TaskType>) -> Self {
        let catalog = TaskCatalog::default();
        catalog.replace(tasks);
        catalog
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<BTreeMap<TaskTypeId, TaskType>> {
        match self.tasks.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// One task type, if defined.
    pub fn get(&self, id: &TaskTypeId) -> Option<TaskType> {
        self.snapshot().get(id).cloned()
    }

    /// Replaces the whole set.
    pub fn replace(&self, tasks: impl IntoIterator<Item = TaskType>) {
        let next: BTreeMap<_, _> = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        let next = Arc::new(next);
        match self.tasks.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}
