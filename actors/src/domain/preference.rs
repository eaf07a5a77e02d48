//! What each user has enabled, and how they changed it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
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
    /// The user's own time zone (extension): every task the user has not
    /// given a `timezone` of its own (in `task_settings`) runs its interval
    /// in this zone. `None`: the task's `interval.timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Tz>,
}

/// A user's overrides for one task. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settings {
    /// Replaces the task's interval entirely, time zone included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_interval: Option<TaskInterval>,
    /// Sent to the endpoint with every run for this user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// The time zone the task's own interval is read in for this user
    /// (extension of the spec's `Settings`): wins over the user's default
    /// zone and the task's `interval.timezone`. A `custom_interval` wins
    /// over it (it carries its own zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "Asia/Tokyo"))]
    pub timezone: Option<Tz>,
}

impl Settings {
    /// True when the settings override nothing.
    pub fn is_empty(&self) -> bool {
        self.custom_interval.is_none() && self.parameters.is_empty() && self.timezone.is_none()
    }
}
