//! Reads task definitions (the spec's `tasks.yaml`) into domain
//! [`TaskType`]s, checking every rule and reporting every problem; one bad
//! task never stops the others from being read.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use actors::domain::{
    AtTime, IntervalType, MisfirePolicy, OverlapPolicy, Priority, TaskConfig, TaskInterval,
    TaskType, TaskTypeId, Weekday,
};
use chrono_tz::Tz;
use serde_aux::serde_introspection::serde_introspect;

use super::{
    node::{Node, Origin, Value},
    read::{Ctx, Fields, join},
};

/// HTTP methods a task may use.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

// The fields each mapping may hold are those of the domain types' serde
// derive: one schema for this reader (which adds line:column and every
// problem at once) and for the JSON the API and tests read. The test
// `the_reader_reads_what_the_derive_reads` holds the two readers equal.

/// The fields of a task definition.
fn task_fields() -> &'static [&'static str] {
    serde_introspect::<TaskType>()
}

/// The fields of an `interval`.
fn interval_fields() -> &'static [&'static str] {
    serde_introspect::<TaskInterval>()
}

/// The fields of a task's `config`.
fn config_fields() -> &'static [&'static str] {
    serde_introspect::<TaskConfig>()
}

/// Reads the `tasks:` list.
pub(crate) fn read_tasks(list: &Node, ctx: &mut Ctx<'_>) -> Vec<TaskType> {
    let Value::Seq(items) = &list.value else {
        ctx.error(
            &list.origin,
            "tasks",
            format!(
                "expected a list of task definitions, found {}",
                list.value.kind()
            ),
        );
        return Vec::new();
    };
    let mut seen: BTreeMap<TaskTypeId, Origin> = BTreeMap::new();
    let mut tasks = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let id = task_id(ctx, item, index);
        let path = match &id {
            Some(id) => format!("tasks[{id}]"),
            None => format!("tasks[{index}]"),
        };
        if let Some(id) = &id {
            if let Some(first) = seen.get(id) {
                let (origin, where_first) = match (item.get("id"), first) {
                    (Some(node), Origin::File { line, .. }) if *line > 0 => {
                        (node.origin.clone(), format!("first defined at line {line}"))
                    }
                    (Some(node), _) => (node.origin.clone(), "defined earlier".to_owned()),
                    (None, _) => (item.origin.clone(), "defined earlier".to_owned()),
                };
                ctx.error(
                    &origin,
                    &join(&path, "id"),
                    format!("duplicate task id {:?}; {where_first}", id.as_str()),
                );
            } else if let Some(node) = item.get("id") {
                seen.insert(id.clone(), node.origin.clone());
            }
        }
        if let Some(task) = read_task(ctx, item, &path, id) {
            tasks.push(task);
        }
    }
    // Drop later duplicates so callers never see two definitions of an id
    // (the load fails anyway; this keeps the partial result consistent).
    let mut ids = std::collections::BTreeSet::new();
    tasks.retain(|t| ids.insert(t.id.clone()));
    tasks
}

fn task_id(ctx: &mut Ctx<'_>, item: &Node, index: usize) -> Option<TaskTypeId> {
    let node = item.get("id")?;
    let path = format!("tasks[{index}].id");
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        other => {
            ctx.error(
                &node.origin,
                &path,
                format!("expected text, found {}", other.kind()),
            );
            return None;
        }
    };
    TaskTypeId::parse(text)
        .map_err(|err| ctx.error(&node.origin, &path, format!("task id {err}")))
        .ok()
}

fn read_task(
    ctx: &mut Ctx<'_>,
    item: &Node,
    path: &str,
    id: Option<TaskTypeId>,
) -> Option<TaskType> {
    let fields = ctx.fields(item, path, task_fields())?;
    if fields.get("id").is_none() {
        ctx.missing(&fields, "id", "every task needs a unique id");
    }
    let name = required(ctx, &fields, "name", "give the task a human-readable name")
        .and_then(|(n, p)| ctx.text(n, &p));
    let description = match fields.get("description") {
        Some((n, p)) => ctx.text(n, &p),
        None => Some(String::new()),
    };
    let interval = required(ctx, &fields, "interval", "e.g. {type: daily, value: 1}")
        .and_then(|(n, p)| read_interval(ctx, n, &p));
    let timeout_field = required(
        ctx,
        &fields,
        "timeout",
        "a duration longer than zero, e.g. 5m",
    );
    let timeout = timeout_field
        .as_ref()
        .and_then(|(n, p)| ctx.positive_duration(n, p));
    if let (Some((n, p)), Some(timeout), Some(bound)) =
        (&timeout_field, timeout, ctx.execution_timeout)
        && timeout > bound
    {
        ctx.warning(
            &n.origin,
            p,
            format!(
                "{} is longer than execution.timeout ({}), which bounds every call: \
                 this task's calls are cut at {}; raise execution.timeout or lower timeout",
                humantime::format_duration(timeout),
                humantime::format_duration(bound),
                humantime::format_duration(bound)
            ),
        );
    }
    let retries = optional(&fields, "retries", |n, p| ctx.count(n, p, 0));
    let config = required(ctx, &fields, "config", "endpoint and method are needed")
        .and_then(|(n, p)| read_config(ctx, n, &p, timeout));
    let priority = optional(&fields, "priority", |n, p| read_priority(ctx, n, p));
    let catchup_window = optional(&fields, "catchup_window", |n, p| ctx.duration(n, p));
    let misfire = optional(&fields, "misfire", |n, p| {
        ctx.choice(
            n,
            p,
            "misfire policy",
            &[
                ("run_once", MisfirePolicy::RunOnce),
                ("skip", MisfirePolicy::Skip),
            ],
        )
    });
    let overlap = optional(&fields, "overlap", |n, p| {
        ctx.choice(
            n,
            p,
            "overlap policy",
            &[
                ("skip", OverlapPolicy::Skip),
                ("allow", OverlapPolicy::Allow),
            ],
        )
    });
    Some(TaskType {
        id: id?,
        name: name?,
        description: description?,
        interval: interval?,
        timeout: timeout?,
        retries: retries?,
        config: config?,
        priority: priority?,
        catchup_window: catchup_window?,
        misfire: misfire?,
        overlap: overlap?,
    })
}

/// The field `name`, or a "missing" problem.
fn required<'n>(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'n>,
    name: &str,
    hint: &str,
) -> Option<(&'n Node, String)> {
    let found = fields.get(name);
    if found.is_none() {
        ctx.missing(fields, name, hint);
    }
    found
}

/// `Some(None)` when absent, `Some(Some(v))` when valid, `None` when
/// present but refused.
fn optional<T>(
    fields: &Fields<'_>,
    name: &str,
    mut read: impl FnMut(&Node, &str) -> Option<T>,
) -> Option<Option<T>> {
    match fields.get(name) {
        None => Some(None),
        Some((node, path)) => read(node, &path).map(Some),
    }
}

fn read_interval(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<TaskInterval> {
    let fields = ctx.fields(node, path, interval_fields())?;
    let kind =
        required(ctx, &fields, "type", "hourly, daily, weekly or monthly").and_then(|(n, p)| {
            ctx.choice(
                n,
                &p,
                "interval type",
                &[
                    ("hourly", IntervalType::Hourly),
                    ("daily", IntervalType::Daily),
                    ("weekly", IntervalType::Weekly),
                    ("monthly", IntervalType::Monthly),
                ],
            )
        });
    let value = required(ctx, &fields, "value", "the period in units, at least 1")
        .and_then(|(n, p)| ctx.count(n, &p, 1));
    let timezone = optional(&fields, "timezone", |n, p| {
        let name = ctx.text(n, p)?;
        match Tz::from_str(&name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                ctx.error(
                    &n.origin,
                    p,
                    format!("unknown time zone {name:?} (IANA names, e.g. Europe/Berlin)"),
                );
                None
            }
        }
    });
    let at_time = optional(&fields, "at_time", |n, p| {
        let text = ctx.text(n, p)?;
        text.parse::<AtTime>()
            .map_err(|err| ctx.error(&n.origin, p, err.to_string()))
            .ok()
    });
    let weekday = optional(&fields, "weekday", |n, p| {
        ctx.choice(
            n,
            p,
            "weekday",
            &[
                ("mon", Weekday::Mon),
                ("tue", Weekday::Tue),
                ("wed", Weekday::Wed),
                ("thu", Weekday::Thu),
                ("fri", Weekday::Fri),
                ("sat", Weekday::Sat),
                ("sun", Weekday::Sun),
            ],
        )
    });
    let day_of_month = optional(&fields, "day_of_month", |n, p| {
        let day = ctx.integer(n, p)?;
        if (1..=31).contains(&day) {
            u8::try_from(day).ok()
        } else {
            ctx.error(
                &n.origin,
                p,
                format!("must be a day of the month, 1 to 31, found {day}"),
            );
            None
        }
    });
    if let Some(kind) = kind {
        let misplaced = [
            ("weekday", IntervalType::Weekly),
            ("day_of_month", IntervalType::Monthly),
        ];
        for (field, applies_to) in misplaced {
            if kind != applies_to
                && let Some((n, p)) = fields.get(field)
            {
                ctx.warning(
                    &n.origin,
                    &p,
                    format!(
                        "ignored: {field} applies only to {} intervals",
                        interval_name(applies_to)
                    ),
                );
            }
        }
    }
    if kind == Some(IntervalType::Hourly)
        && let Some(Some(at)) = at_time
        && at.hour != 0
        && let Some((n, p)) = fields.get("at_time")
    {
        ctx.warning(
            &n.origin,
            &p,
            format!(
                "hourly intervals use only the minutes and seconds of at_time; the hour {:02} is ignored",
                at.hour
            ),
        );
    }
    Some(TaskInterval {
        kind: kind?,
        value: value?,
        timezone: timezone?,
        at_time: at_time?,
        weekday: weekday?,
        day_of_month: day_of_month?,
    })
}

fn interval_name(kind: IntervalType) -> &'static str {
    match kind {
        IntervalType::Hourly => "hourly",
        IntervalType::Daily => "daily",
        IntervalType::Weekly => "weekly",
        IntervalType::Monthly => "monthly",
    }
}

fn read_config(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    timeout: Option<Duration>,
) -> Option<TaskConfig> {
    let fields = ctx.fields(node, path, config_fields())?;
    let endpoint = required(ctx, &fields, "endpoint", "an absolute http(s) URL").and_then(
        |(n, p)| {
            let text = ctx.text(n, &p)?;
            match url::Url::parse(&text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                    Some(text)
                }
                _ => {
                    ctx.error(
                        &n.origin,
                        &p,
                        format!(
                            "{text:?} is not an absolute http(s) URL (e.g. https://api.example.com/run)"
                        ),
                    );
                    None
                }
            }
        },
    );
    let method = required(
        ctx,
        &fields,
        "method",
        "one of GET, POST, PUT, PATCH, DELETE",
    )
    .and_then(|(n, p)| {
        let text = ctx.text(n, &p)?;
        if METHODS.contains(&text.as_str()) {
            Some(text)
        } else {
            ctx.error(
                &n.origin,
                &p,
                format!("unknown HTTP method {text:?} ({})", METHODS.join(", ")),
            );
            None
        }
    });
    let headers = match fields.get("headers") {
        None => Some(BTreeMap::new()),
        Some((n, p)) => read_headers(ctx, n, &p),
    };
    let max_duration = optional(&fields, "max_duration", |n, p| {
        let max = ctx.positive_duration(n, p)?;
        match timeout {
            Some(timeout) if max > timeout => {
                ctx.error(
                    &n.origin,
                    p,
                    format!(
                        "{} exceeds the task's timeout ({})",
                        humantime::format_duration(max),
                        humantime::format_duration(timeout)
                    ),
                );
                None
            }
            _ => Some(max),
        }
    });
    let payload = optional(&fields, "payload", |n, p| {
        let payload = read_payload(ctx, n, p)?;
        if matches!(method.as_deref(), Some("GET" | "DELETE")) {
            ctx.warning(
                &n.origin,
                p,
                "ignored: GET and DELETE calls carry no body (the job goes in the query)",
            );
        }
        Some(payload)
    });
    Some(TaskConfig {
        endpoint: endpoint?,
        method: method?,
        headers: headers?,
        max_duration: max_duration?,
        payload: payload?,
    })
}

/// A payload template as JSON: any YAML value; texts may hold
/// `${ENV_NAME}` (resolved now) and `{{user_id}}`, `{{param.NAME}}` (filled
/// per job).
fn read_payload(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(_) => Json::String(ctx.text(node, path)?),
        Value::Seq(items) => {
            let mut values = Vec::with_capacity(items.len());
            let mut ok = true;
            for (index, item) in items.iter().enumerate() {
                match read_payload(ctx, item, &format!("{path}[{index}]")) {
                    Some(value) => values.push(value),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Json::Array(values)
        }
        Value::Map(entries) => {
            let mut fields = serde_json::Map::new();
            let mut ok = true;
            for (key, item) in entries {
                match read_payload(ctx, item, &format!("{path}.{}", key.name)) {
                    Some(value) => {
                        fields.insert(key.name.clone(), value);
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Json::Object(fields)
        }
    })
}

/// Header names must be HTTP tokens; values (secrets, perhaps) must not
/// hold line breaks. Values are never echoed.
fn read_headers(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
    let map = ctx.mapping(node, path)?;
    let mut headers = BTreeMap::new();
    let mut ok = true;
    for (key, value) in map.entries() {
        let field = format!("{path}.{}", key.name);
        let token = !key.name.is_empty()
            && key
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            ctx.error(&key.origin, &field, "is not a valid HTTP header name");
            ok = false;
        }
        match ctx.text(value, &field) {
            Some(text) if text.contains(['\r', '\n', '\0']) => {
                ctx.error(
                    &value.origin,
                    &field,
                    "header value must not contain line breaks",
                );
                ok = false;
            }
            Some(text) => {
                headers.insert(key.name.clone(), text);
            }
            None => ok = false,
        }
    }
    ok.then_some(headers)
}

fn read_priority(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Priority> {
    let priority = match &node.value {
        Value::Str(s) => match s.as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        },
        Value::Int(0) => Some(Priority::Low),
        Value::Int(1) => Some(Priority::Normal),
        Value::Int(2) => Some(Priority::High),
        _ => None,
    };
    if priority.is_none() {
        ctx.error(
            &node.origin,
            path,
            "unknown priority; expected low, normal or high (or 0, 1, 2)",
        );
    }
    priority
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::configuration::{RateLimitConfig, load_tasks_with};

    /// Every field of the schema, each interval kind: what a user may
    /// write in a tasks file.
    const EVERY_FIELD: &str = r#"
tasks:
  - id: digest
    name: Weekly digest
    description: Sums up the week
    interval: {type: weekly, value: 2, timezone: Europe/Paris, at_time: "07:30", weekday: mon}
    timeout: 90s
    retries: 4
    config:
      endpoint: https://example.com/digest
      method: POST
      headers: {X-Team: growth}
      max_duration: 1m
      payload: {kind: digest, depth: 3}
    priority: high
    catchup_window: 2h
    misfire: skip
    overlap: allow
  - id: statement
    name: Monthly statement
    interval: {type: monthly, value: 1, day_of_month: 28}
    timeout: 5m
    config: {endpoint: "http://127.0.0.1:9/statement", method: GET}
  - id: ping
    name: Ping
    interval: {type: hourly, value: 6}
    timeout: 10s
    config: {endpoint: "http://127.0.0.1:9/ping", method: PUT}
"#;

    /// The tasks of a document as serde's derive reads them.
    #[derive(serde::Deserialize)]
    struct Document {
        tasks: Vec<TaskType>,
    }

    fn keys_at(yaml: &serde_json::Value, pointer: &str, into: &mut BTreeSet<String>) {
        if let Some(map) = yaml.pointer(pointer).and_then(|v| v.as_object()) {
            into.extend(map.keys().cloned());
        }
    }

    #[test]
    fn the_reader_reads_what_the_derive_reads() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), EVERY_FIELD).unwrap();
        let env: BTreeMap<String, String> = BTreeMap::new();
        let (read, warnings) =
            load_tasks_with(file.path(), &RateLimitConfig::default(), &env).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let derived: Document = serde_saphyr::from_str(EVERY_FIELD).unwrap();
        assert_eq!(read, derived.tasks);

        // The sample writes every field the schema has: a field added to
        // the domain types fails here until the sample (and so the
        // comparison above) covers it.
        let as_json: serde_json::Value = serde_saphyr::from_str(EVERY_FIELD).unwrap();
        let (mut task, mut interval, mut config) = Default::default();
        for index in 0..3 {
            keys_at(&as_json, &format!("/tasks/{index}"), &mut task);
            keys_at(&as_json, &format!("/tasks/{index}/interval"), &mut interval);
            keys_at(&as_json, &format!("/tasks/{index}/config"), &mut config);
        }
        let schema = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect();
        assert_eq!(task, schema(task_fields()));
        assert_eq!(interval, schema(interval_fields()));
        assert_eq!(config, schema(config_fields()));
    }

    #[test]
    fn a_field_outside_the_schema_is_refused_with_the_schema_as_hint() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = EVERY_FIELD.replace("    retries: 4\n", "    retry: 4\n");
        std::fs::write(file.path(), &text).unwrap();
        let env: BTreeMap<String, String> = BTreeMap::new();
        let errors = load_tasks_with(file.path(), &RateLimitConfig::default(), &env)
            .expect_err("an unknown field is an error");
        let text = errors.to_string();
        assert!(text.contains("retry"), "{text}");
        assert!(text.contains(":8:"), "the line of the field: {text}");
    }
}
