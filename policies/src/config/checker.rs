//! Collects problems while the raw config is turned into validated values: each helper
//! reports what is wrong with its field path and returns a placeholder, so that validation
//! goes on and finds every other problem too.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use regex::Regex;

use crate::error::Problem;

#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(_) => {
                self.report(
                    path,
                    format!("{text:?} is not a duration (e.g. \"30s\", \"5m\", \"7d\")"),
                );
                Duration::ZERO
            }
        }
    }

    /// A duration that must be longer than zero (a timeout, an interval).
    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: &str,
    ) -> Duration {
        let duration = self.duration(path, value, default);
        if duration.is_zero() && humantime::parse_duration(value.unwrap_or(default)).is_ok() {
            self.report(path, "must be longer than zero");
        }
        duration
    }

    pub(super) fn positive(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: usize,
    ) -> NonZeroUsize {
        let value = value.unwrap_or(default as i64);
        match usize::try_from(value).ok().and_then(NonZeroUsize::new) {
            Some(n) => n,
            None => {
                self.report(path, format!("{value} must be a positive integer"));
                NonZeroUsize::MIN
            }
        }
    }

    pub(super) fn positive_u32(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: u32,
    ) -> NonZeroU32 {
        let value = value.unwrap_or(i64::from(default));
        match u32::try_from(value).ok().and_then(NonZeroU32::new) {
            Some(n) => n,
            None => {
                self.report(
                    path,
                    format!("{value} must be a positive integer up to {}", u32::MAX),
                );
                NonZeroU32::MIN
            }
        }
    }

    pub(super) fn non_negative(&mut self, path: &str, value: Option<i64>, default: usize) -> usize {
        let value = value.unwrap_or(default as i64);
        usize::try_from(value).unwrap_or_else(|_| {
            self.report(path, format!("{value} must not be negative"));
            0
        })
    }

    /// A share or similarity in `0..=1`.
    pub(super) fn fraction(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        match value {
            None => default,
            Some(v) if (0.0..=1.0).contains(&v) => v,
            Some(v) => {
                self.report(path, format!("{v} is not between 0 and 1"));
                default
            }
        }
    }

    pub(super) fn regex(&mut self, path: &str, pattern: &str) -> Option<Regex> {
        match Regex::new(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                self.report(
                    path,
                    format!("{pattern:?} is not a regular expression: {e}"),
                );
                None
            }
        }
    }
}
