//! A value that must not reach logs: its `Debug` prints `***`.

use std::fmt;

/// Holds a secret (a token, a URL with a password). The value is reached only through
/// [`Secret::expose`], so that printing a config or a settings struct never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it (a connection, a comparison).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret<String> {
    /// Compares a presented value with the secret in time that depends only on the lengths,
    /// not on where the first differing byte is, so that a client cannot find a token one
    /// byte at a time by timing the answers.
    pub fn matches(&self, presented: &str) -> bool {
        let (secret, presented) = (self.0.as_bytes(), presented.as_bytes());
        if secret.len() != presented.len() {
            return false;
        }
        let difference = secret
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the optimiser from turning the fold into an early-exit comparison.
        std::hint::black_box(difference) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::new("redis://:hunter2@host:6379".to_owned());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "redis://:hunter2@host:6379");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let secret = Secret::new("0123456789abcdef".to_owned());
        assert!(secret.matches("0123456789abcdef"));
        assert!(!secret.matches("0123456789abcdeF"));
        assert!(!secret.matches("0123456789abcde"));
        assert!(!secret.matches(""));
    }
}
