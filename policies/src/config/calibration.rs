//! `[calibration]` (the labelled scores error budgets are calibrated on, and the confidence of
//! every bound put on a wrong rate) and `[shadow]` (how shadow checks of semantic hits compare
//! answers and estimate a category's wrong rate).

use std::path::PathBuf;

use super::checker::Checker;
use crate::raw::{RawCalibration, RawShadow};

/// Where categories with `max_wrong_rate` take their operating point from.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationSettings {
    /// Labelled scores, one candidate a line (`similarity`, `passed`, `trap`, `group`, tab
    /// separated, a header first), as `cachet eval --scores` writes them.
    pub file: Option<PathBuf>,
    /// Confidence (`0.5..1`) of the one-sided upper bounds put on wrong rates.
    pub confidence: f64,
}

pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Shadow checks: a share of semantic hits (each category's `shadow_rate`) is also sent
/// upstream in the background and the fresh answer compared with the cached one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowSettings {
    /// Cosine similarity (`0..=1`) of the two answers' embeddings at or above which they
    /// agree; below it the hit counts as a wrong answer.
    pub agreement: f32,
    /// Shadowed hits a category needs before its estimate can tighten it.
    pub min_samples: usize,
    /// The most recent shadowed hits the estimate is taken over.
    pub window: usize,
    /// Shadow requests running at once, over all categories; more are skipped.
    pub max_in_flight: usize,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            agreement: 0.75,
            min_samples: 20,
            window: 500,
            max_in_flight: 4,
        }
    }
}

pub(super) fn calibration(c: &mut Checker, raw: &RawCalibration) -> CalibrationSettings {
    let confidence = match raw.confidence {
        None => DEFAULT_CONFIDENCE,
        Some(v) if (0.5..1.0).contains(&v) => v,
        Some(v) => {
            c.report("calibration.confidence", format!("{v} is not in 0.5..1"));
            DEFAULT_CONFIDENCE
        }
    };
    CalibrationSettings {
        file: raw.file.as_ref().map(PathBuf::from),
        confidence,
    }
}

pub(super) fn shadow(c: &mut Checker, raw: &RawShadow) -> ShadowSettings {
    let d = ShadowSettings::default();
    ShadowSettings {
        agreement: c.fraction("shadow.agreement", raw.agreement, f64::from(d.agreement)) as f32,
        min_samples: c
            .positive("shadow.min_samples", raw.min_samples, d.min_samples)
            .get(),
        window: c.positive("shadow.window", raw.window, d.window).get(),
        max_in_flight: c
            .positive("shadow.max_in_flight", raw.max_in_flight, d.max_in_flight)
            .get(),
    }
}
