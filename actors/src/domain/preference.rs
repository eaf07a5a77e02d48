//! What each user has enabled, and how they changed it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{TaskInterval, TaskTypeId, UserId};

/// A user's choices across all task types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPreference {
    /// Whose preferences these are.
    pub user_id: UserId,
    /// Task id to enabled flag.
    #[serde(default)]
    pub enabled_tasks: BTreeMap<TaskTypeId, bool>,
    /// Task id to the user's overrides for it.
    #[serde(default)]
    pub task_settings: BTreeMap<TaskTypeId, Settings>,
    /// When any of it last changed.
    pub last_modified: DateTime<Utc>,
}

/// A user's overrides for one task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Settings {
    /// Replaces the task's interval entirely, time zone included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_interval: Option<TaskInterval>,
    /// Sent to the endpoint with every run for this user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl Settings {
    /// True when the settings override nothing.
    pub fn is_empty(&self) -> bool {
        self.custom_interval.is_none() && self.parameters.is_empty()
    }
}
