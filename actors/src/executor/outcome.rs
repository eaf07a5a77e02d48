//! How an attempt ended and what comes of it: the call's result
//! classified ([`Outcome`], [`classify`], `Retry-After` read), and the
//! retry policy ([`next_step`]: the full-jitter [`Backoff`], the job's
//! [`ThrottleBudget`]); also how long a job that got no token is deferred
//! ([`defer_delay`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::call::CallResult;
use crate::domain::{DeadLetterReason, ErrorDetail};

/// Shortest deferral of a job that got no token within the wait cap.
const MIN_DEFER: Duration = Duration::from_millis(250);

/// How long a job that got no token within the wait cap is deferred: the
/// wait the limiter asked for, at least [`MIN_DEFER`], plus up to
/// [`MIN_DEFER`] of jitter (`jitter` in [0, 1)) so deferred jobs do not
/// come back together.
pub(super) fn defer_delay(wait: Duration, jitter: f64) -> Duration {
    wait.max(MIN_DEFER) + MIN_DEFER.mul_f64(jitter.clamp(0.0, 1.0))
}

/// How an attempt ended, before counting attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 2xx.
    Success,
    /// The endpoint asked to come back after this long (429/503 with
    /// `Retry-After`); the detail names the answer.
    Throttled(Duration, ErrorDetail),
    /// Worth another attempt.
    Transient(ErrorDetail),
    /// Never worth another attempt.
    Permanent(ErrorDetail),
}

/// Classifies a call's result (`now` reads `Retry-After` dates).
pub(super) fn classify(call: &CallResult, now: DateTime<Utc>) -> Outcome {
    let detail = |code: String, message: String, retry: bool| ErrorDetail {
        code,
        message,
        retry,
    };
    match call {
        CallResult::Status { code, .. } if (200..300).contains(code) => Outcome::Success,
        CallResult::Status {
            code: code @ (429 | 503),
            retry_after: Some(value),
            ..
        } => match parse_retry_after(value, now) {
            Some(wait) => Outcome::Throttled(
                wait,
                detail(
                    format!("http_{code}"),
                    format!("endpoint answered {code} with Retry-After {value:?}"),
                    true,
                ),
            ),
            None => Outcome::Transient(detail(
                format!("http_{code}"),
                format!("endpoint answered {code} with an unreadable Retry-After {value:?}"),
                true,
            )),
        },
        CallResult::Status { code, .. } if *code == 408 || *code == 429 || *code >= 500 => {
            Outcome::Transient(detail(
                format!("http_{code}"),
                format!("endpoint answered {code}"),
                true,
            ))
        }
        CallResult::Status { code, .. } => Outcome::Permanent(detail(
            format!("http_{code}"),
            format!("endpoint answered {code}"),
            false,
        )),
        CallResult::Timeout => Outcome::Transient(detail(
            "timeout".to_owned(),
            "no answer within the timeout".to_owned(),
            true,
        )),
        CallResult::Connect(message) => {
            Outcome::Transient(detail("connect".to_owned(), message.clone(), true))
        }
        CallResult::Invalid(message) => {
            Outcome::Permanent(detail("invalid_request".to_owned(), message.clone(), false))
        }
    }
}

/// Reads a `Retry-After` value: whole seconds, or an HTTP date.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// `90s` for 90 seconds (a duration in error text).
fn humantime_secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after attempt `attempt` (1-based) failed: uniform in
    /// [0, min(cap, base * 2^(attempt-1))], `jitter` in [0, 1) picking the
    /// point.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do with a delivery after its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Record the success and ack.
    Succeed,
    /// Republish the same attempt to run after this long.
    Throttle(Duration),
    /// Republish as attempt `attempt` after `delay`.
    Retry {
        /// The next attempt's number.
        attempt: u32,
        /// How long it waits.
        delay: Duration,
    },
    /// Send to the dead-letter queue.
    DeadLetter {
        /// Why (of [`DeadLetterReason::OF_EXECUTION`]).
        reason: DeadLetterReason,
        /// The last error.
        error: ErrorDetail,
    },
}

/// A job's throttles against its budget: `per_attempt` throttles per
/// allowed attempt, and no try later than `max_age` after the job was
/// created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ThrottleBudget {
    /// The job's throttles so far, the one being decided included.
    pub throttles: u32,
    /// Throttles allowed per allowed attempt (1 + retries).
    pub per_attempt: u32,
    /// How long ago the job was created.
    pub age: Duration,
    /// The oldest a job may be when tried again after a throttle.
    pub max_age: Duration,
}

/// Decides the step after attempt `attempt` of a job allowed `retries`
/// retries ended with `outcome`; a throttle past `budget` (more throttles
/// than `per_attempt × (1 + retries)`, or a next try past `max_age`) is
/// dead-lettered as `throttled_too_long`.
pub(super) fn next_step(
    outcome: Outcome,
    attempt: u32,
    retries: u32,
    backoff: &Backoff,
    jitter: f64,
    budget: &ThrottleBudget,
) -> Step {
    match outcome {
        Outcome::Success => Step::Succeed,
        Outcome::Throttled(wait, mut error) => {
            let wait = wait.min(backoff.cap);
            let allowed = budget.per_attempt.saturating_mul(retries.saturating_add(1));
            if budget.throttles > allowed {
                error.retry = false;
                error.message = format!(
                    "{}; {} throttles, {allowed} allowed",
                    error.message, budget.throttles
                );
                Step::DeadLetter {
                    reason: DeadLetterReason::ThrottledTooLong,
                    error,
                }
            } else if budget.age.saturating_add(wait) > budget.max_age {
                error.retry = false;
                error.message = format!(
                    "{}; the job would be older than {}",
                    error.message,
                    humantime_secs(budget.max_age)
                );
                Step::DeadLetter {
                    reason: DeadLetterReason::ThrottledTooLong,
                    error,
                }
            } else {
                Step::Throttle(wait)
            }
        }
        Outcome::Transient(_) if attempt <= retries => Step::Retry {
            attempt: attempt + 1,
            delay: backoff.delay(attempt, jitter),
        },
        Outcome::Transient(error) => Step::DeadLetter {
            reason: DeadLetterReason::RetriesExhausted,
            error,
        },
        Outcome::Permanent(error) => Step::DeadLetter {
            reason: DeadLetterReason::PermanentFailure,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn status(code: u16, retry_after: Option<&str>) -> CallResult {
        CallResult::Status {
            code,
            retry_after: retry_after.map(str::to_owned),
            body: Vec::new(),
        }
    }

    /// A throttle budget with `throttles` so far, 10 per attempt, a job
    /// `age_secs` old of at most a day.
    fn budget(throttles: u32, age_secs: u64) -> ThrottleBudget {
        ThrottleBudget {
            throttles,
            per_attempt: 10,
            age: Duration::from_secs(age_secs),
            max_age: Duration::from_secs(86_400),
        }
    }

    /// (call, attempt, retries) -> the step, with zero jitter.
    fn check(call: CallResult, attempt: u32, retries: u32, expected: &str) {
        check_budget(call, attempt, retries, budget(1, 0), expected);
    }

    fn check_budget(
        call: CallResult,
        attempt: u32,
        retries: u32,
        budget: ThrottleBudget,
        expected: &str,
    ) {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let step = next_step(
            classify(&call, now()),
            attempt,
            retries,
            &backoff,
            1.0,
            &budget,
        );
        let got = match &step {
            Step::Succeed => "succeed".to_owned(),
            Step::Throttle(wait) => format!("throttle {}ms", wait.as_millis()),
            Step::Retry { attempt, delay } => {
                format!("retry #{attempt} within {}ms", delay.as_millis())
            }
            Step::DeadLetter { reason, error } => format!("{reason} {}", error.code),
        };
        assert_eq!(got, expected, "{call:?} attempt {attempt} of 1+{retries}");
    }

    #[test]
    fn outcomes_map_to_steps() {
        check(status(200, None), 1, 3, "succeed");
        check(status(204, None), 4, 3, "succeed");
        check(status(429, Some("1")), 1, 3, "throttle 1000ms");
        check(status(503, Some("2")), 4, 3, "throttle 2000ms");
        check(status(503, Some("3600")), 1, 3, "throttle 60000ms");
        check(
            status(429, Some("Thu, 01 Jan 2026 00:00:05 GMT")),
            1,
            3,
            "throttle 5000ms",
        );
        check(status(429, None), 1, 3, "retry #2 within 1000ms");
        check(status(503, None), 2, 3, "retry #3 within 2000ms");
        check(status(500, None), 3, 3, "retry #4 within 4000ms");
        check(status(500, None), 4, 3, "retries_exhausted http_500");
        check(status(408, None), 1, 0, "retries_exhausted http_408");
        check(CallResult::Timeout, 1, 1, "retry #2 within 1000ms");
        check(
            CallResult::Connect("refused".into()),
            2,
            1,
            "retries_exhausted connect",
        );
        check(status(404, None), 1, 3, "permanent_failure http_404");
        check(status(400, None), 1, 3, "permanent_failure http_400");
        check(status(301, None), 1, 3, "permanent_failure http_301");
        check(
            CallResult::Invalid("bad url".into()),
            1,
            3,
            "permanent_failure invalid_request",
        );
    }

    #[test]
    fn throttles_past_their_budget_are_dead_lettered() {
        let throttled = || status(429, Some("1"));
        // 10 per allowed attempt: 1 + 2 retries allow 30.
        check_budget(throttled(), 1, 2, budget(30, 0), "throttle 1000ms");
        check_budget(
            throttled(),
            1,
            2,
            budget(31, 0),
            "throttled_too_long http_429",
        );
        check_budget(
            status(503, Some("0")),
            1,
            0,
            budget(11, 0),
            "throttled_too_long http_503",
        );
        // A past date is a zero wait; it still counts.
        check_budget(
            status(429, Some("Wed, 31 Dec 2025 23:59:00 GMT")),
            1,
            0,
            budget(11, 0),
            "throttled_too_long http_429",
        );
        // The next try would come after the job's maximum age.
        check_budget(throttled(), 1, 3, budget(1, 86_399), "throttle 1000ms");
        check_budget(
            throttled(),
            1,
            3,
            budget(1, 86_400),
            "throttled_too_long http_429",
        );
        // Other outcomes ignore the throttle budget.
        check_budget(
            status(500, None),
            1,
            3,
            budget(99, 90_000),
            "retry #2 within 1000ms",
        );
    }

    #[test]
    fn deferrals_wait_at_least_the_minimum_with_jitter() {
        assert_eq!(defer_delay(Duration::ZERO, 0.0), MIN_DEFER);
        assert_eq!(
            defer_delay(Duration::from_secs(2), 0.5),
            Duration::from_secs(2) + MIN_DEFER / 2
        );
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(50));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_millis(500));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }
}
