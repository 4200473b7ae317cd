//! Validated object names: route ids, service names and group names.

use std::fmt;

/// A name made of `[a-z0-9-]`, 1 to 63 characters long (a DNS label without the
/// leading/trailing-hyphen rule, so ids like `v2-` stay legal).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Box<str>);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} characters long; at most 63 are allowed")]
    TooLong(usize),
    #[error("has {0:?}; only lowercase letters, digits and '-' are allowed")]
    BadChar(char),
}

impl Name {
    pub const MAX_LEN: usize = 63;

    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(NameError::TooLong(s.chars().count()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("lms", Ok(())),
            ("lms-courses-2", Ok(())),
            ("", Err(NameError::Empty)),
            ("Lms", Err(NameError::BadChar('L'))),
            ("a_b", Err(NameError::BadChar('_'))),
            (&"a".repeat(63), Ok(())),
            (&"a".repeat(64), Err(NameError::TooLong(64))),
        ];
        for (input, want) in cases {
            assert_eq!(Name::new(input).map(|_| ()), *want, "input {input:?}");
        }
    }
}
