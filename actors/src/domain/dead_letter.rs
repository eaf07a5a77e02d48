//! Why a job went to the failed queue: the `x-taskqueue-reason` header, the
//! `reason` of `GET /dead-letters` and the `reason` label of
//! `taskqueue_dead_letters_total`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Why a job (or a message that was not one) was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// A retryable failure on its last allowed attempt.
    RetriesExhausted,
    /// A failure no retry can fix (4xx other than 408/429, a bad request).
    PermanentFailure,
    /// Throttled (429/503 with `Retry-After`) past its budget or its age.
    ThrottledTooLong,
    /// Its task type stayed unknown past the grace period.
    UnknownTaskType,
    /// A message that is not a job envelope.
    Malformed,
    /// An envelope of a version this release does not read.
    UnsupportedVersion,
    /// A delayed message with nowhere to go.
    Unroutable,
}

impl DeadLetterReason {
    /// Every reason, in a stable order.
    pub const ALL: [DeadLetterReason; 7] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::ThrottledTooLong,
        DeadLetterReason::UnknownTaskType,
        DeadLetterReason::Malformed,
        DeadLetterReason::UnsupportedVersion,
        DeadLetterReason::Unroutable,
    ];

    /// The reasons an executor gives a job it ran or read (the rest are a
    /// consumer's, for messages that never reached an executor).
    pub const OF_EXECUTION: [DeadLetterReason; 4] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::ThrottledTooLong,
        DeadLetterReason::UnknownTaskType,
    ];

    /// As written on the wire: `retries_exhausted`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::PermanentFailure => "permanent_failure",
            DeadLetterReason::ThrottledTooLong => "throttled_too_long",
            DeadLetterReason::UnknownTaskType => "unknown_task_type",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::UnsupportedVersion => "unsupported_version",
            DeadLetterReason::Unroutable => "unroutable",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason that is not one of [`DeadLetterReason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for DeadLetterReason {
    type Err = UnknownReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DeadLetterReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| UnknownReason(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_reads_back_from_its_text_and_its_json() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(reason.as_str().parse::<DeadLetterReason>(), Ok(reason));
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{reason}\"")
            );
        }
        assert_eq!(
            "retry".parse::<DeadLetterReason>(),
            Err(UnknownReason("retry".to_owned()))
        );
    }
}
