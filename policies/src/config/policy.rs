//! The sections that steer policy at run time: `[classifier]` (prototype classification) and
//! `[adaptive]` (relaxing under upstream load).

use std::time::Duration;

use super::checker::Checker;
use crate::raw::{RawAdaptive, RawClassifier};

/// How a query's embedding picks a category when no header or rule does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassifierSettings {
    /// Cosine similarity (`0..=1`) the nearest category prototype needs.
    pub min_similarity: f32,
    /// How much (`0..=1`) the nearest prototype's similarity must exceed the second's.
    pub margin: f32,
}

/// When the upstream counts as loaded, so that categories serve with their relaxed threshold
/// and TTL. Any signal at or above its high level enters the relaxed state; all signals at or
/// below their low levels for `hold` leave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSettings {
    pub enabled: bool,
    /// Requests waiting on the upstream.
    pub high_in_flight: usize,
    /// Moving average of the upstream's time to answer.
    pub high_latency: Duration,
    /// Share (`0..=1`) of recent upstream answers that were 429 or 503.
    pub high_error_rate: f64,
    pub low_in_flight: usize,
    pub low_latency: Duration,
    pub low_error_rate: f64,
    /// How long every signal must stay low before the normal state returns.
    pub hold: Duration,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            high_in_flight: 64,
            high_latency: Duration::from_secs(5),
            high_error_rate: 0.1,
            low_in_flight: 16,
            low_latency: Duration::from_secs(1),
            low_error_rate: 0.02,
            hold: Duration::from_secs(30),
        }
    }
}

pub(super) fn classifier(c: &mut Checker, raw: &RawClassifier) -> ClassifierSettings {
    ClassifierSettings {
        min_similarity: c.fraction("classifier.min_similarity", raw.min_similarity, 0.5) as f32,
        margin: c.fraction("classifier.margin", raw.margin, 0.15) as f32,
    }
}

pub(super) fn adaptive(c: &mut Checker, raw: &RawAdaptive) -> AdaptiveSettings {
    let d = AdaptiveSettings::default();
    let count = |c: &mut Checker, field: &str, value: Option<i64>, default: usize| {
        c.non_negative(&format!("adaptive.{field}"), value, default)
    };
    let duration =
        |c: &mut Checker, field: &str, value: &Option<String>, default: Duration| match value {
            None => default,
            Some(text) => c.duration(&format!("adaptive.{field}"), Some(text), text),
        };
    let settings = AdaptiveSettings {
        enabled: raw.enabled.unwrap_or(d.enabled),
        high_in_flight: count(c, "high_in_flight", raw.high_in_flight, d.high_in_flight),
        high_latency: duration(c, "high_latency", &raw.high_latency, d.high_latency),
        high_error_rate: c.fraction(
            "adaptive.high_error_rate",
            raw.high_error_rate,
            d.high_error_rate,
        ),
        low_in_flight: count(c, "low_in_flight", raw.low_in_flight, d.low_in_flight),
        low_latency: duration(c, "low_latency", &raw.low_latency, d.low_latency),
        low_error_rate: c.fraction(
            "adaptive.low_error_rate",
            raw.low_error_rate,
            d.low_error_rate,
        ),
        hold: duration(c, "hold", &raw.hold, d.hold),
    };
    // A high level of zero would hold the relaxed state forever, whatever the load.
    let s = &settings;
    for (field, zero) in [
        ("high_in_flight", s.high_in_flight == 0),
        // Zero from an unreadable duration is reported already.
        (
            "high_latency",
            s.high_latency.is_zero()
                && raw
                    .high_latency
                    .as_deref()
                    .is_some_and(|t| humantime::parse_duration(t).is_ok()),
        ),
        ("high_error_rate", s.high_error_rate == 0.0),
    ] {
        if zero {
            c.report(format!("adaptive.{field}"), "must be above zero");
        }
    }
    let pairs = [
        (
            "low_in_flight",
            s.low_in_flight > s.high_in_flight,
            s.low_in_flight.to_string(),
            s.high_in_flight.to_string(),
        ),
        (
            "low_latency",
            s.low_latency > s.high_latency,
            humantime::format_duration(s.low_latency).to_string(),
            humantime::format_duration(s.high_latency).to_string(),
        ),
        (
            "low_error_rate",
            s.low_error_rate > s.high_error_rate,
            s.low_error_rate.to_string(),
            s.high_error_rate.to_string(),
        ),
    ];
    for (field, above, low, high) in pairs {
        let high_field = field.replacen("low", "high", 1);
        // A level already refused stands in with its default: comparing it would mislead.
        let refused = |name: &str| {
            let path = format!("adaptive.{name}");
            c.problems.iter().any(|p| p.path == path)
        };
        if above && !refused(field) && !refused(&high_field) {
            c.report(
                format!("adaptive.{field}"),
                format!(
                    "{low} is above {high_field} {high}: the low level must not exceed the high one"
                ),
            );
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive_problems(text: &str) -> Vec<String> {
        let raw: RawAdaptive = toml::from_str(text).expect("well-typed adaptive table");
        let mut c = Checker::default();
        adaptive(&mut c, &raw);
        c.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn adaptive_defaults_are_off_and_consistent() {
        assert!(adaptive_problems("").is_empty());
        assert!(!AdaptiveSettings::default().enabled);
    }

    #[test]
    fn low_levels_must_not_exceed_high_levels() {
        assert_eq!(
            adaptive_problems(
                "high_in_flight = 10\nlow_in_flight = 11\nhigh_latency = \"1s\"\n\
                 low_latency = \"2s\"\nhigh_error_rate = 0.1\nlow_error_rate = 0.2\n"
            ),
            [
                "adaptive.low_in_flight: 11 is above high_in_flight 10: the low level must not exceed the high one",
                "adaptive.low_latency: 2s is above high_latency 1s: the low level must not exceed the high one",
                "adaptive.low_error_rate: 0.2 is above high_error_rate 0.1: the low level must not exceed the high one",
            ]
        );
        // A refused level is not compared.
        assert_eq!(
            adaptive_problems("high_error_rate = 1.5\nlow_error_rate = 0.5\n"),
            ["adaptive.high_error_rate: 1.5 is not between 0 and 1"]
        );
        // Equal levels are allowed.
        assert!(adaptive_problems("high_in_flight = 10\nlow_in_flight = 10\n").is_empty());
    }

    #[test]
    fn bad_adaptive_values_name_their_field() {
        let got = adaptive_problems(
            "high_in_flight = 0\nlow_in_flight = -1\nhigh_error_rate = 1.5\nhold = \"later\"\n\
             high_latency = \"0s\"\nlow_latency = \"0s\"\n",
        );
        let paths: Vec<&str> = got
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            [
                "adaptive.high_error_rate",
                "adaptive.low_in_flight",
                "adaptive.hold",
                "adaptive.high_in_flight",
                "adaptive.high_latency",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn classifier_values_are_fractions() {
        let raw: RawClassifier = toml::from_str("min_similarity = 1.2\nmargin = -0.1\n")
            .expect("well-typed classifier table");
        let mut c = Checker::default();
        classifier(&mut c, &raw);
        assert_eq!(c.problems.len(), 2);
        let raw = RawClassifier::default();
        let settings = classifier(&mut c, &raw);
        assert_eq!(settings.min_similarity, 0.5);
        assert_eq!(settings.margin, 0.15);
    }
}
