//! Identifiers that become parts of Redis keys and queue headers.
//!
//! They are parsed once, at the edge (config, API, queue message), and never
//! re-validated: holding a [`TaskTypeId`] or a [`UserId`] is proof that the
//! value is non-empty, at most [`MAX_ID_LEN`] bytes, and free of characters
//! that would break a key pattern (`:`, `*`), whitespace and control
//! characters.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The value was empty.
    #[error("must not be empty")]
    Empty,
    /// The value was longer than [`MAX_ID_LEN`] bytes.
    #[error("is {0} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong(usize),
    /// The value held a character that cannot appear in a key part.
    #[error("contains {0:?}, which is not allowed (no whitespace, control characters, ':' or '*')")]
    BadChar(char),
}

fn check_id(value: &str) -> Result<(), ParseIdError> {
    if value.is_empty() {
        return Err(ParseIdError::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return Err(ParseIdError::TooLong(value.len()));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ':' || *c == '*')
    {
        return Err(ParseIdError::BadChar(bad));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, refusing what cannot be a key part.
            pub fn parse(value: impl Into<String>) -> Result<Self, ParseIdError> {
                let value = value.into();
                check_id(&value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseIdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

identifier!(
    /// The id of a task type, as in `tasks.yaml` (`daily_report`).
    TaskTypeId
);
identifier!(
    /// The id of a user of the product (`user_12345`).
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), ParseIdError>) {
        assert_eq!(
            UserId::parse(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
        assert_eq!(
            TaskTypeId::parse(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn identifiers_are_checked_once_at_the_edge() {
        check("user_12345", Ok(()));
        check("é-ü.42", Ok(()));
        check("", Err(ParseIdError::Empty));
        check(&"x".repeat(128), Ok(()));
        check(&"x".repeat(129), Err(ParseIdError::TooLong(129)));
        check("a:b", Err(ParseIdError::BadChar(':')));
        check("a*", Err(ParseIdError::BadChar('*')));
        check("a b", Err(ParseIdError::BadChar(' ')));
        check("a\tb", Err(ParseIdError::BadChar('\t')));
        check("a\u{7}", Err(ParseIdError::BadChar('\u{7}')));
    }

    #[test]
    fn serde_refuses_bad_identifiers() {
        assert!(serde_json::from_str::<UserId>("\"ok\"").is_ok());
        let err = serde_json::from_str::<UserId>("\"a:b\"").unwrap_err();
        assert!(err.to_string().contains("':'"), "{err}");
    }
}
