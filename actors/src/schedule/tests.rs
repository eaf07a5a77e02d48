//! The rules at every edge the calculus promises to meet: table tests
//! (expected instants worked out by hand from the tz database), then
//! property tests against a brute-force reading of the rules.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;
use crate::domain::{AtTime, Weekday};

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn interval(json: &str) -> TaskInterval {
    serde_json::from_str(json).unwrap()
}

/// The fires of `interval` after `after` are `expected` (in order), and
/// looking back from each one finds it and, a second earlier, its
/// predecessor; looking back from `after` finds a fire with none between
/// it and `expected[0]`.
fn check(json: &str, after: &str, expected: &[&str]) {
    let schedule = Schedule::try_new(&interval(json)).unwrap();
    let latest = schedule.latest_at_or_before(instant(after)).unwrap();
    assert!(latest <= instant(after), "{json} latest at {after}");
    assert_eq!(
        schedule.next_after(latest),
        instant(expected[0]),
        "{json}: latest at {after} is {latest}"
    );
    let fires: Vec<String> = schedule
        .fires_after(instant(after))
        .take(expected.len())
        .map(|fire| fire.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect();
    assert_eq!(fires, expected, "{json} after {after}");
    for pair in expected.windows(2) {
        let (previous, fire) = (instant(pair[0]), instant(pair[1]));
        assert_eq!(
            schedule.latest_at_or_before(fire),
            Some(fire),
            "{json} at {fire}"
        );
        assert_eq!(
            schedule.latest_at_or_before(fire - Duration::seconds(1)),
            Some(previous),
            "{json} just before {fire}"
        );
    }
}

#[test]
fn us_spring_forward_fires_gap_times_later_by_the_gap() {
    // 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 is read as EST (03:30 EDT).
    let daily = r#"{"type":"daily","value":1,"timezone":"America/New_York","at_time":"02:30"}"#;
    check(
        daily,
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-09T06:30:00Z",
        ],
    );
    // Hourly: 02:30 (gap) and 03:30 EDT are the same instant and fire once.
    let hourly = r#"{"type":"hourly","value":1,"timezone":"America/New_York","at_time":"00:30"}"#;
    check(
        hourly,
        "2026-03-08T05:00:00Z",
        &[
            "2026-03-08T05:30:00Z",
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-08T08:30:00Z",
        ],
    );
    // Asked from inside the hour after the jump, the gap fire is still ahead.
    check(
        hourly,
        "2026-03-08T07:00:00Z",
        &["2026-03-08T07:30:00Z", "2026-03-08T08:30:00Z"],
    );
    // Every 5 local hours: 00:00, 05:00 (EDT), 10:00, 15:00 on the day.
    check(
        r#"{"type":"hourly","value":5,"timezone":"America/New_York"}"#,
        "2026-03-08T03:00:00Z",
        &[
            "2026-03-08T05:00:00Z",
            "2026-03-08T09:00:00Z",
            "2026-03-08T14:00:00Z",
            "2026-03-08T19:00:00Z",
        ],
    );
    // Weekly on Sundays.
    check(
        r#"{"type":"weekly","value":1,"timezone":"America/New_York","at_time":"02:30","weekday":"sun"}"#,
        "2026-03-01T12:00:00Z",
        &[
            "2026-03-08T07:30:00Z",
            "2026-03-15T06:30:00Z",
            "2026-03-22T06:30:00Z",
        ],
    );
}

#[test]
fn us_fall_back_fires_once_at_the_first_occurrence() {
    // 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice.
    check(
        r#"{"type":"daily","value":1,"timezone":"America/New_York","at_time":"01:30"}"#,
        "2026-10-31T00:00:00Z",
        &[
            "2026-10-31T05:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
        ],
    );
    let hourly = r#"{"type":"hourly","value":1,"timezone":"America/New_York","at_time":"00:30"}"#;
    check(
        hourly,
        "2026-11-01T04:00:00Z",
        &[
            "2026-11-01T04:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T07:30:00Z",
            "2026-11-01T08:30:00Z",
        ],
    );
    // Asked during the second 01:xx, the repeated 01:30 does not fire again.
    check(hourly, "2026-11-01T06:10:00Z", &["2026-11-01T07:30:00Z"]);
    check(
        r#"{"type":"hourly","value":5,"timezone":"America/New_York"}"#,
        "2026-11-01T03:00:00Z",
        &[
            "2026-11-01T08:00:00Z",
            "2026-11-01T13:00:00Z",
            "2026-11-01T18:00:00Z",
            "2026-11-01T23:00:00Z",
        ],
    );
}

#[test]
fn eu_spring_forward_and_fall_back() {
    let daily = r#"{"type":"daily","value":1,"timezone":"Europe/Berlin","at_time":"02:30"}"#;
    // 2026-03-29 02:00 CET -> 03:00 CEST.
    check(
        daily,
        "2026-03-28T00:00:00Z",
        &[
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-30T00:30:00Z",
        ],
    );
    // 2026-10-25 03:00 CEST -> 02:00 CET.
    check(
        daily,
        "2026-10-24T00:00:00Z",
        &[
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ],
    );
    check(
        r#"{"type":"hourly","value":1,"timezone":"Europe/Berlin","at_time":"00:15"}"#,
        "2026-10-24T23:00:00Z",
        &[
            "2026-10-24T23:15:00Z",
            "2026-10-25T00:15:00Z",
            "2026-10-25T02:15:00Z",
            "2026-10-25T03:15:00Z",
        ],
    );
}

#[test]
fn lord_howe_shifts_by_thirty_minutes() {
    // 2026-10-04 02:00 +10:30 -> 02:30 +11.
    check(
        r#"{"type":"daily","value":1,"timezone":"Australia/Lord_Howe","at_time":"02:15"}"#,
        "2026-10-02T00:00:00Z",
        &[
            "2026-10-02T15:45:00Z",
            "2026-10-03T15:45:00Z",
            "2026-10-04T15:15:00Z",
        ],
    );
    check(
        r#"{"type":"hourly","value":1,"timezone":"Australia/Lord_Howe","at_time":"00:15"}"#,
        "2026-10-03T14:00:00Z",
        &[
            "2026-10-03T14:45:00Z",
            "2026-10-03T15:45:00Z",
            "2026-10-03T16:15:00Z",
            "2026-10-03T17:15:00Z",
        ],
    );
    // 2026-04-05 02:00 +11 -> 01:30 +10:30.
    check(
        r#"{"type":"daily","value":1,"timezone":"Australia/Lord_Howe","at_time":"01:45"}"#,
        "2026-04-03T00:00:00Z",
        &[
            "2026-04-03T14:45:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-05T15:15:00Z",
        ],
    );
}

#[test]
fn half_and_quarter_hour_zones() {
    check(
        r#"{"type":"daily","value":1,"timezone":"Asia/Kolkata","at_time":"09:00"}"#,
        "2026-01-01T00:00:00Z",
        &["2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"],
    );
    // d(2026-01-01) * 24 = 490896, 1 mod 5: local hours 4, 9, 14, 19, then 0.
    check(
        r#"{"type":"hourly","value":5,"timezone":"Asia/Kathmandu"}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T03:15:00Z",
            "2026-01-01T08:15:00Z",
            "2026-01-01T13:15:00Z",
            "2026-01-01T18:15:00Z",
        ],
    );
    check(
        r#"{"type":"monthly","value":3,"day_of_month":31,"timezone":"Asia/Kolkata","at_time":"10:00"}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-31T04:30:00Z",
            "2026-04-30T04:30:00Z",
            "2026-07-31T04:30:00Z",
            "2026-10-31T04:30:00Z",
        ],
    );
}

#[test]
fn southern_hemisphere() {
    let daily = r#"{"type":"daily","value":1,"timezone":"Australia/Sydney","at_time":"02:30"}"#;
    // 2026-10-04 02:00 AEST -> 03:00 AEDT.
    check(
        daily,
        "2026-10-02T00:00:00Z",
        &[
            "2026-10-02T16:30:00Z",
            "2026-10-03T16:30:00Z",
            "2026-10-04T15:30:00Z",
        ],
    );
    // 2026-04-05 03:00 AEDT -> 02:00 AEST.
    check(
        daily,
        "2026-04-03T00:00:00Z",
        &[
            "2026-04-03T15:30:00Z",
            "2026-04-04T15:30:00Z",
            "2026-04-05T16:30:00Z",
        ],
    );
    // Santiago springs forward at midnight (2026-09-06 00:00 -04 -> 01:00 -03).
    check(
        r#"{"type":"daily","value":1,"timezone":"America/Santiago"}"#,
        "2026-09-04T00:00:00Z",
        &[
            "2026-09-04T04:00:00Z",
            "2026-09-05T04:00:00Z",
            "2026-09-06T04:00:00Z",
            "2026-09-07T03:00:00Z",
        ],
    );
}

#[test]
fn apia_skipped_day() {
    // 2011-12-29 23:59:59 -10 -> 2011-12-31 00:00 +14: Dec 30 never happened.
    // Dec 30 09:00 read at -10 is the instant of Dec 31 09:00 +14: one fire.
    check(
        r#"{"type":"daily","value":1,"timezone":"Pacific/Apia","at_time":"09:00"}"#,
        "2011-12-28T00:00:00Z",
        &[
            "2011-12-28T19:00:00Z",
            "2011-12-29T19:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-31T19:00:00Z",
        ],
    );
    // Every other day, Dec 30 (day 15338) is a fire day: it fires at the
    // instant of Dec 31 09:00, and Jan 1 is next.
    check(
        r#"{"type":"daily","value":2,"timezone":"Pacific/Apia","at_time":"09:00"}"#,
        "2011-12-27T00:00:00Z",
        &[
            "2011-12-28T19:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-31T19:00:00Z",
            "2012-01-02T19:00:00Z",
        ],
    );
    // Every 5 hours: the skipped day's wall times, read at -10, interleave
    // with the real ones after the jump; output stays strictly increasing.
    check(
        r#"{"type":"hourly","value":5,"timezone":"Pacific/Apia"}"#,
        "2011-12-30T05:00:00Z",
        &[
            "2011-12-30T08:00:00Z",
            "2011-12-30T13:00:00Z",
            "2011-12-30T14:00:00Z",
            "2011-12-30T18:00:00Z",
            "2011-12-30T19:00:00Z",
            "2011-12-30T23:00:00Z",
            "2011-12-31T00:00:00Z",
            "2011-12-31T04:00:00Z",
            "2011-12-31T05:00:00Z",
            "2011-12-31T09:00:00Z",
        ],
    );
}

#[test]
fn month_end_clamps_to_the_last_day() {
    check(
        r#"{"type":"monthly","value":1,"day_of_month":31}"#,
        "2024-01-01T00:00:00Z",
        &[
            "2024-01-31T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2024-03-31T00:00:00Z",
            "2024-04-30T00:00:00Z",
        ],
    );
    check(
        r#"{"type":"monthly","value":1,"day_of_month":29}"#,
        "2023-01-01T00:00:00Z",
        &[
            "2023-01-29T00:00:00Z",
            "2023-02-28T00:00:00Z",
            "2023-03-29T00:00:00Z",
        ],
    );
    // Default day 1; 2100 is not a leap year, 2000 is.
    check(
        r#"{"type":"monthly","value":12,"day_of_month":29,"at_time":"12:00"}"#,
        "2099-06-01T00:00:00Z",
        &["2100-01-29T12:00:00Z", "2101-01-29T12:00:00Z"],
    );
    check(
        r#"{"type":"monthly","value":1,"day_of_month":30}"#,
        "2100-02-01T00:00:00Z",
        &["2100-02-28T00:00:00Z", "2100-03-30T00:00:00Z"],
    );
    check(
        r#"{"type":"monthly","value":1,"day_of_month":30}"#,
        "2000-02-01T00:00:00Z",
        &["2000-02-29T00:00:00Z", "2000-03-30T00:00:00Z"],
    );
    check(
        r#"{"type":"monthly","value":2}"#,
        "2026-01-01T00:00:00Z",
        &["2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z"],
    );
}

#[test]
fn hourly_periods_that_do_not_divide_a_day() {
    // d(2026-01-01) * 24 = 490896 = 7 * 70128: 00:00 is a fire, exclusive.
    check(
        r#"{"type":"hourly","value":7}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T07:00:00Z",
            "2026-01-01T14:00:00Z",
            "2026-01-01T21:00:00Z",
            "2026-01-02T04:00:00Z",
        ],
    );
    // The hour of at_time is ignored for hourly intervals.
    check(
        r#"{"type":"hourly","value":1,"at_time":"17:05:30"}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T00:05:30Z",
            "2026-01-01T01:05:30Z",
            "2026-01-01T02:05:30Z",
        ],
    );
}

#[test]
fn daily_and_weekly_counts_from_the_epoch() {
    // d(2026-01-01) = 20454 = 3 * 6818.
    check(
        r#"{"type":"daily","value":3,"at_time":"06:00"}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T06:00:00Z",
            "2026-01-04T06:00:00Z",
            "2026-01-07T06:00:00Z",
        ],
    );
    // The week of 2026-01-05 is week 2922 since 1970-01-05.
    check(
        r#"{"type":"weekly","value":2,"weekday":"wed","at_time":"10:00"}"#,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-07T10:00:00Z",
            "2026-01-21T10:00:00Z",
            "2026-02-04T10:00:00Z",
        ],
    );
    check(
        r#"{"type":"weekly","value":1}"#,
        "1969-12-31T00:00:00Z",
        &["1970-01-05T00:00:00Z", "1970-01-12T00:00:00Z"],
    );
    // Before the epoch the indices go negative and still count in step:
    // d(1969-12-30) = -2.
    check(
        r#"{"type":"daily","value":2}"#,
        "1969-12-28T12:00:00Z",
        &[
            "1969-12-30T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1970-01-03T00:00:00Z",
        ],
    );
    // Fires exactly at `after` are not "after".
    check(
        r#"{"type":"daily","value":1,"at_time":"09:00"}"#,
        "2026-01-01T09:00:00Z",
        &["2026-01-02T09:00:00Z"],
    );
    check(
        r#"{"type":"daily","value":1,"at_time":"09:00"}"#,
        "2026-01-01T08:59:59.999Z",
        &["2026-01-01T09:00:00Z"],
    );
}

/// `task` (its own zone Europe/Paris) read in `zone`, as a zone group
/// runs it, fires at `expected` after `after`; the same holds for the
/// interval written with `zone` directly.
fn check_in_zone(task: &str, zone: &str, after: &str, expected: &[&str]) {
    let zone: Tz = zone.parse().unwrap();
    let task_interval = interval(task);
    assert_eq!(task_interval.tz(), chrono_tz::Europe::Paris, "{task}");
    let zoned = task_interval.in_zone(zone);
    assert_eq!(zoned.tz(), zone);
    assert_eq!(
        (
            zoned.kind,
            zoned.value,
            zoned.at_time,
            zoned.weekday,
            zoned.day_of_month
        ),
        (
            task_interval.kind,
            task_interval.value,
            task_interval.at_time,
            task_interval.weekday,
            task_interval.day_of_month
        )
    );
    let json = serde_json::to_string(&zoned).unwrap();
    check(&json, after, expected);
}

#[test]
fn a_task_interval_in_each_user_zone() {
    let daily = r#"{"type":"daily","value":1,"timezone":"Europe/Paris","at_time":"02:30"}"#;
    // Northern spring gap (New York, 2026-03-08 02:00 EST -> 03:00 EDT):
    // 02:30 is read as EST.
    check_in_zone(
        daily,
        "America/New_York",
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-09T06:30:00Z",
        ],
    );
    // Half-hour zone with DST (St. John's, NST -03:30 -> NDT -02:30 at
    // 02:00 on 2026-03-08): the gap's 02:30 is read as NST.
    check_in_zone(
        daily,
        "America/St_Johns",
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T06:00:00Z",
            "2026-03-08T06:00:00Z",
            "2026-03-09T05:00:00Z",
        ],
    );
    // Southern spring gap (Adelaide, ACST +09:30 -> ACDT +10:30 at 02:00
    // on 2026-10-04).
    check_in_zone(
        daily,
        "Australia/Adelaide",
        "2026-10-02T00:00:00Z",
        &[
            "2026-10-02T17:00:00Z",
            "2026-10-03T17:00:00Z",
            "2026-10-04T16:00:00Z",
        ],
    );
    // Southern autumn overlap (Adelaide, 03:00 ACDT -> 02:00 ACST on
    // 2026-04-05): 02:30 fires once, at its first (ACDT) occurrence.
    check_in_zone(
        daily,
        "Australia/Adelaide",
        "2026-04-03T00:00:00Z",
        &[
            "2026-04-03T16:00:00Z",
            "2026-04-04T16:00:00Z",
            "2026-04-05T17:00:00Z",
        ],
    );
    // Quarter-hour zone without DST (Kathmandu, +05:45): 02:30 local is
    // 20:45Z the day before.
    check_in_zone(
        daily,
        "Asia/Kathmandu",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T20:45:00Z", "2026-01-02T20:45:00Z"],
    );
    // Northern autumn overlap (London, 02:00 BST -> 01:00 GMT on
    // 2026-10-25): 01:30 fires once, as BST.
    let at_0130 = r#"{"type":"daily","value":1,"timezone":"Europe/Paris","at_time":"01:30"}"#;
    check_in_zone(
        at_0130,
        "Europe/London",
        "2026-10-24T00:00:00Z",
        &[
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ],
    );
    // Weekly on Monday 09:00 in Chatham's summer (+13:45): Sunday 19:15Z.
    let weekly = r#"{"type":"weekly","value":1,"timezone":"Europe/Paris","weekday":"mon","at_time":"09:00"}"#;
    check_in_zone(
        weekly,
        "Pacific/Chatham",
        "2026-01-01T00:00:00Z",
        &["2026-01-04T19:15:00Z", "2026-01-11T19:15:00Z"],
    );
    // Monthly on the 31st at 00:30 in Kathmandu: clamped to February's
    // last day, the day before in UTC.
    let monthly = r#"{"type":"monthly","value":1,"timezone":"Europe/Paris","day_of_month":31,"at_time":"00:30"}"#;
    check_in_zone(
        monthly,
        "Asia/Kathmandu",
        "2026-01-15T00:00:00Z",
        &[
            "2026-01-30T18:45:00Z",
            "2026-02-27T18:45:00Z",
            "2026-03-30T18:45:00Z",
        ],
    );
    // Hourly at :15 in Kathmandu is :30 in UTC; in India (+05:30) :45.
    let hourly = r#"{"type":"hourly","value":1,"timezone":"Europe/Paris","at_time":"00:15"}"#;
    check_in_zone(
        hourly,
        "Asia/Kathmandu",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z"],
    );
    check_in_zone(
        hourly,
        "Asia/Kolkata",
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:45:00Z", "2026-01-01T01:45:00Z"],
    );
}

#[test]
fn invalid_intervals_name_the_field() {
    let refuse = |json: &str| Schedule::try_new(&interval(json)).unwrap_err().to_string();
    assert!(refuse(r#"{"type":"daily","value":0}"#).starts_with("value:"));
    assert!(
        refuse(r#"{"type":"monthly","value":1,"day_of_month":32}"#).starts_with("day_of_month:")
    );
    assert!(
        refuse(r#"{"type":"monthly","value":1,"day_of_month":0}"#).starts_with("day_of_month:")
    );
}

// ---- property tests ------------------------------------------------------

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "America/Santiago",
    "America/St_Johns",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Africa/Casablanca",
    "America/Sao_Paulo",
];

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn any_interval() -> impl Strategy<Value = TaskInterval> {
    let kind_and_value = prop_oneof![
        (1u32..=30).prop_map(|n| (IntervalType::Hourly, n)),
        (1u32..=10).prop_map(|n| (IntervalType::Daily, n)),
        (1u32..=5).prop_map(|n| (IntervalType::Weekly, n)),
        (1u32..=13).prop_map(|n| (IntervalType::Monthly, n)),
    ];
    // Hours 1..4 are where DST gaps and overlaps usually are.
    let hour = prop_oneof![0u8..24, 0u8..4];
    (
        kind_and_value,
        0..ZONES.len(),
        hour,
        prop_oneof![Just(0u8), Just(30), 0u8..60],
        prop_oneof![Just(0u8), 0u8..60],
        0..7usize,
        1u8..=31,
    )
        .prop_map(
            |((kind, value), zone, hour, minute, second, weekday, day)| TaskInterval {
                kind,
                value,
                timezone: Some(ZONES[zone].parse().unwrap()),
                at_time: Some(AtTime {
                    hour,
                    minute,
                    second,
                }),
                weekday: Some(WEEKDAYS[weekday]),
                day_of_month: Some(day),
            },
        )
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let seconds = |from: &str, to: &str| instant(from).timestamp()..instant(to).timestamp();
    prop_oneof![
        seconds("1990-01-01T00:00:00Z", "2040-01-01T00:00:00Z"),
        // Around Samoa's skipped day.
        seconds("2011-12-20T00:00:00Z", "2012-01-02T00:00:00Z"),
        // Around the usual DST transitions.
        (
            2000i32..2035,
            prop_oneof![Just(3u32), Just(4), Just(9), Just(10), Just(11)],
            1u32..=28,
            0i64..86_400
        )
            .prop_map(|(year, month, day, second)| {
                let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
                date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() + second
            }),
    ]
    .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap())
}

/// The instant the rules give local wall time `wall` in `tz`, found the
/// slow way: a gap's offset is the one in force at the last minute whose
/// local time is before `wall`.
fn brute_resolve(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => at.to_utc(),
        LocalResult::Ambiguous(a, b) => a.to_utc().min(b.to_utc()),
        LocalResult::None => {
            let local = |at: DateTime<Utc>| at.with_timezone(&tz).naive_local();
            let mut probe = wall.and_utc() - Duration::hours(16);
            assert!(local(probe) < wall);
            while local(probe + Duration::minutes(1)) < wall {
                probe += Duration::minutes(1);
            }
            let offset = i64::from(
                tz.offset_from_utc_datetime(&probe.naive_utc())
                    .fix()
                    .local_minus_utc(),
            );
            wall.and_utc() - Duration::seconds(offset)
        }
    }
}

/// Whether local wall time `wall` satisfies the interval's rule, read
/// straight from the rule's wording.
fn satisfies(interval: &TaskInterval, wall: NaiveDateTime) -> bool {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    let date = wall.date();
    let days = date.signed_duration_since(epoch).num_days();
    let n = i64::from(interval.value);
    let at = interval.at();
    let time = wall.time();
    let at_time =
        chrono::NaiveTime::from_hms_opt(at.hour.into(), at.minute.into(), at.second.into())
            .unwrap();
    match interval.kind {
        IntervalType::Hourly => {
            let hour = i64::from(time.format("%H").to_string().parse::<u8>().unwrap());
            time.format("%M:%S").to_string() == at_time.format("%M:%S").to_string()
                && (days * 24 + hour).rem_euclid(n) == 0
        }
        IntervalType::Daily => time == at_time && days.rem_euclid(n) == 0,
        IntervalType::Weekly => {
            let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
            let week = (monday.signed_duration_since(epoch).num_days() - 4).div_euclid(7);
            time == at_time
                && date.weekday().num_days_from_monday()
                    == interval.weekday.unwrap().days_from_monday()
                && week.rem_euclid(n) == 0
        }
        IntervalType::Monthly => {
            let month_index = i64::from(date.year() - 1970) * 12 + i64::from(date.month0());
            let last_day = (28..=31)
                .rev()
                .find(|d| NaiveDate::from_ymd_opt(date.year(), date.month(), *d).is_some())
                .unwrap();
            let day = u32::from(interval.day_of_month.unwrap_or(1)).min(last_day);
            time == at_time && date.day() == day && month_index.rem_euclid(n) == 0
        }
    }
}

/// Every fire in (`from`, `to`], by walking every local date and hour.
fn brute_fires(
    interval: &TaskInterval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let tz = interval.tz();
    let at = interval.at();
    let mut date = from.with_timezone(&tz).date_naive() - Duration::days(3);
    let last = to.with_timezone(&tz).date_naive() + Duration::days(3);
    let mut fires = std::collections::BTreeSet::new();
    while date <= last {
        for hour in 0..24u32 {
            let wall = date
                .and_hms_opt(hour, at.minute.into(), at.second.into())
                .unwrap();
            if satisfies(interval, wall) {
                let fire = brute_resolve(tz, wall);
                if fire > from && fire <= to {
                    fires.insert(fire);
                }
            }
        }
        date += Duration::days(1);
    }
    fires.into_iter().collect()
}

fn span(interval: &TaskInterval) -> Duration {
    let n = i64::from(interval.value);
    match interval.kind {
        IntervalType::Hourly => Duration::hours(6 * n),
        IntervalType::Daily => Duration::days(6 * n),
        IntervalType::Weekly => Duration::weeks(4 * n),
        IntervalType::Monthly => Duration::days(31 * 3 * n),
    }
}

/// The first instant within 400 days after `from` at which the offset of
/// `tz` changes, found hour by hour (`None` for fixed-offset zones).
fn next_transition(tz: Tz, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset = |at: DateTime<Utc>| at.with_timezone(&tz).offset().fix();
    let start = offset(from);
    let mut hour = from;
    for _ in 0..400 * 24 {
        let next = hour + Duration::hours(1);
        if offset(next) != start {
            let mut minute = hour;
            while offset(minute + Duration::minutes(1)) == start {
                minute += Duration::minutes(1);
            }
            return Some(minute + Duration::minutes(1));
        }
        hour = next;
    }
    None
}

/// The fires in a range are exactly the instants of the wall times that
/// satisfy the rule (gap times shifted), each once, in order: strictly
/// increasing, none invented, none skipped; and looking back from
/// anywhere between two fires (and from each of `probes`) finds the
/// earlier one.
fn assert_follows_the_rules(
    interval: &TaskInterval,
    from: DateTime<Utc>,
    probes: &[DateTime<Utc>],
) -> Result<(), TestCaseError> {
    let schedule = Schedule::new(interval);
    let to = from + span(interval);
    let fires: Vec<_> = schedule
        .fires_after(from)
        .take_while(|fire| *fire <= to)
        .collect();
    prop_assert!(
        fires.windows(2).all(|pair| pair[0] < pair[1]),
        "not increasing: {fires:?}"
    );
    prop_assert_eq!(&fires, &brute_fires(interval, from, to));
    for pair in fires.windows(2) {
        let between = pair[1] - pair[0];
        for step in 0..12 {
            let at = pair[0] + between * step / 12;
            prop_assert_eq!(schedule.latest_at_or_before(at), Some(pair[0]), "at {}", at);
        }
    }
    for at in probes.iter().filter(|at| **at <= to) {
        if let Some(latest) = fires.iter().rev().find(|fire| *fire <= at) {
            prop_assert_eq!(
                schedule.latest_at_or_before(*at),
                Some(*latest),
                "at {}",
                at
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// The rules hold from any instant.
    #[test]
    fn fires_are_exactly_the_rule_s_wall_times(interval in any_interval(), from in any_instant()) {
        assert_follows_the_rules(&interval, from, &[])?;
    }

    /// The rules hold from just before a change of UTC offset, where the
    /// gap and overlap rules apply.
    #[test]
    fn fires_follow_the_rules_across_offset_changes(
        interval in any_interval(),
        near in any_instant(),
        before in 0i64..12 * 3_600,
    ) {
        let change = next_transition(interval.tz(), near).unwrap_or(near);
        let from = change - Duration::seconds(before);
        // Every five minutes from half an hour before the change to three
        // hours after it, so the second pass of an overlap is probed.
        let probes: Vec<_> = (-6..=36).map(|step| change + Duration::minutes(5 * step)).collect();
        assert_follows_the_rules(&interval, from, &probes)?;
    }

    /// Looking back finds a fire with no fire between it and the instant.
    #[test]
    fn latest_fire_is_the_last_one_before(interval in any_interval(), at in any_instant()) {
        let schedule = Schedule::new(&interval);
        let latest = schedule.latest_at_or_before(at).unwrap();
        prop_assert!(latest <= at);
        prop_assert_eq!(schedule.next_after(latest - Duration::seconds(1)), latest);
        prop_assert!(schedule.next_after(latest) > at);
    }
}
