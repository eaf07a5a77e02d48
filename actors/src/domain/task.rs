//! Task definitions: what runs, how often, and how it is called.
//!
//! These are the spec's `TaskType`, `TaskInterval` and `TaskConfig`, plus a
//! few documented extension fields (`priority`, `catchup_window`, `misfire`,
//! `overlap`, `weekday`, `day_of_month`). Optional fields stay `Option` so a
//! definition serialises back to exactly what was written; the accessors
//! supply the defaults.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Priority, TaskTypeId};

/// A kind of recurring work, run once per period for every enabled user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskType {
    /// Unique id; part of Redis keys and job ids.
    pub id: TaskTypeId,
    /// Human-readable name.
    pub name: String,
    /// What the task does.
    #[serde(default)]
    pub description: String,
    /// When it runs.
    pub interval: TaskInterval,
    /// Longest one attempt may take (never zero).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first one; `None` means `execution.max_retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// How the task's endpoint is called.
    pub config: TaskConfig,
    /// Queue the task's jobs go to (extension; default `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// How old a missed fire may be and still run once after downtime
    /// (extension; default one nominal period of the interval).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub catchup_window: Option<Duration>,
    /// What to do with fires missed while no scheduler ran (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<MisfirePolicy>,
    /// Whether two runs for the same user may overlap (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
}

impl TaskType {
    /// The priority of this task's jobs.
    pub fn priority(&self) -> Priority {
        self.priority.unwrap_or_default()
    }

    /// The misfire policy in force.
    pub fn misfire(&self) -> MisfirePolicy {
        self.misfire.unwrap_or_default()
    }

    /// The overlap policy in force.
    pub fn overlap(&self) -> OverlapPolicy {
        self.overlap.unwrap_or_default()
    }

    /// The catch-up window in force: the configured one, else one nominal
    /// period of the interval.
    pub fn catchup_window(&self) -> Duration {
        self.catchup_window
            .unwrap_or_else(|| self.interval.nominal_period())
    }
}

/// How the task's endpoint is called. `Debug` redacts header values
/// (they may carry credentials).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    /// Absolute `http` or `https` URL.
    pub endpoint: String,
    /// HTTP method, upper case (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`).
    pub method: String,
    /// Extra request headers. Values may be written `${ENV_NAME}`; they are
    /// resolved when the file is loaded and never logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Upper bound of one call, at most `timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// Request body template for POST, PUT and PATCH (extension): any JSON
    /// value whose strings may hold `{{user_id}}` (filled when the job is
    /// made; the result is `Job.payload`) and `{{param.NAME}}` (the user's
    /// parameter, filled when the call is made). Without it the body is
    /// the job as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

impl fmt::Debug for TaskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), "[redacted]"))
            .collect();
        f.debug_struct("TaskConfig")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("headers", &headers)
            .field("max_duration", &self.max_duration)
            .field("payload", &self.payload.as_ref().map(|_| "[template]"))
            .finish()
    }
}

/// When a task fires. See the schedule calculus for the exact rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInterval {
    /// Unit of the period.
    #[serde(rename = "type")]
    pub kind: IntervalType,
    /// Period length in units, at least 1.
    pub value: u32,
    /// IANA time zone the wall-clock rules are read in; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "America/New_York"))]
    pub timezone: Option<Tz>,
    /// Local time of day (`HH:MM[:SS]`); hourly intervals use only its
    /// minutes and seconds. Default `00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "02:30"))]
    pub at_time: Option<AtTime>,
    /// Day of the week for weekly intervals (extension; default `mon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<Weekday>,
    /// Day of the month for monthly intervals, clamped to the month's last
    /// day (extension; 1..=31, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u8>,
}

impl TaskInterval {
    /// The time zone in force.
    pub fn tz(&self) -> Tz {
        self.timezone.unwrap_or(Tz::UTC)
    }

    /// This interval read in `zone` instead of its own time zone: the
    /// schedule of a user whose zone (per task, else the user's default)
    /// is `zone`. Every other field stays the task's.
    pub fn in_zone(&self, zone: Tz) -> TaskInterval {
        TaskInterval {
            timezone: Some(zone),
            ..self.clone()
        }
    }

    /// The time of day in force.
    pub fn at(&self) -> AtTime {
        self.at_time.unwrap_or_default()
    }

    /// One nominal period: 1h, 24h, 7d or 28d times `value`.
    pub fn nominal_period(&self) -> Duration {
        let unit_secs: u64 = match self.kind {
            IntervalType::Hourly => 3_600,
            IntervalType::Daily => 86_400,
            IntervalType::Weekly => 7 * 86_400,
            IntervalType::Monthly => 28 * 86_400,
        };
        Duration::from_secs(unit_secs * u64::from(self.value.max(1)))
    }
}

/// Unit of a [`TaskInterval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IntervalType {
    /// Every `value` hours.
    Hourly,
    /// Every `value` days.
    Daily,
    /// Every `value` weeks.
    Weekly,
    /// Every `value` months.
    Monthly,
}

/// Day of the week, written `mon` .. `sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Days since Monday (0..=6).
    pub fn days_from_monday(self) -> u32 {
        self as u32
    }
}

/// A local time of day, written `HH:MM` or `HH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AtTime {
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
}

/// Why an `at_time` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a time of day; expected HH:MM or HH:MM:SS (00:00 to 23:59:59)")]
pub struct ParseAtTimeError(pub String);

impl FromStr for AtTime {
    type Err = ParseAtTimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || ParseAtTimeError(text.to_owned());
        let parts: Vec<&str> = text.split(':').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
            return Err(refuse());
        }
        let number = |part: &str, max: u8| -> Result<u8, ParseAtTimeError> {
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse());
            }
            part.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(refuse)
        };
        Ok(AtTime {
            hour: number(parts[0], 23)?,
            minute: number(parts[1], 59)?,
            second: parts.get(2).map_or(Ok(0), |s| number(s, 59))?,
        })
    }
}

impl fmt::Display for AtTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)?;
        if self.second != 0 {
            write!(f, ":{:02}", self.second)?;
        }
        Ok(())
    }
}

impl Serialize for AtTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AtTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the scheduler does with fires missed while it was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Run the latest missed fire once, if it is within the catch-up window.
    #[default]
    RunOnce,
    /// Never run a missed fire.
    Skip,
}

/// Whether a second run for the same (task, user) may start while one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Skip (and acknowledge) a job whose (task, user) is already running.
    #[default]
    Skip,
    /// Run it anyway.
    Allow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<(u8, u8, u8)>) {
        let parsed = input
            .parse::<AtTime>()
            .ok()
            .map(|t| (t.hour, t.minute, t.second));
        assert_eq!(parsed, expected, "input {input:?}");
    }

    #[test]
    fn at_time_accepts_hh_mm_and_hh_mm_ss_only() {
        check("00:00", Some((0, 0, 0)));
        check("23:59:59", Some((23, 59, 59)));
        check("07:05", Some((7, 5, 0)));
        check("24:00", None);
        check("7:05", None);
        check("07:60", None);
        check("07:05:60", None);
        check("07-05", None);
        check("+1:05", None);
        check("", None);
        check("07:05:00:00", None);
    }

    #[test]
    fn at_time_writes_back_what_was_read() {
        for text in ["00:00", "09:30", "09:30:15"] {
            assert_eq!(text.parse::<AtTime>().unwrap().to_string(), text);
        }
    }
}
