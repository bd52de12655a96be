//! Operating points chosen for an error budget: from labelled calibration scores (the cosine
//! similarity and the verifier's probability of each pair, and whether serving it would be
//! right), the similarity threshold and verifier cut-off that serve the most should-hits while
//! the one-sided upper confidence bound of the share of traps served stays within the budget.

use std::fmt;

use crate::config::Threshold;

/// One labelled pair of the calibration set, as the gateway would score it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationPoint {
    pub similarity: f32,
    /// The verifier's probability; 1 for every pair when there is no verifier.
    pub probability: f32,
    /// Serving the cached answer would be wrong.
    pub trap: bool,
}

/// Where a category serves: a candidate needs both values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    pub threshold: Threshold,
    /// The verifier's probability a candidate needs (0 serves whatever the verifier says).
    pub cutoff: f32,
}

/// An operating point with what the calibration set says of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    pub point: OperatingPoint,
    /// Share of the calibration set's should-hits served.
    pub served: f64,
    /// Share of its traps served, and the upper confidence bound of that share.
    pub wrong: f64,
    pub wrong_bound: f64,
    pub should_hits: usize,
    pub traps: usize,
}

impl fmt::Display for Calibrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "threshold {:.2}", self.point.threshold.get())?;
        if self.point.cutoff > 0.0 {
            write!(f, ", score cut-off {:.3}", self.point.cutoff)?;
        }
        write!(
            f,
            ": serves {:.1}% of {} should-hits, {:.2}% of {} traps (upper bound {:.2}%)",
            self.served * 100.0,
            self.should_hits,
            self.wrong * 100.0,
            self.traps,
            self.wrong_bound * 100.0
        )
    }
}

/// The similarity thresholds searched: 0.30 to 0.99 in steps of 0.01.
pub fn threshold_grid() -> impl Iterator<Item = f32> {
    (30..=99).map(|i| i as f32 / 100.0)
}

/// The verifier cut-offs searched: 0 to 0.995 in steps of 0.005.
pub fn cutoff_grid() -> impl Iterator<Item = f32> {
    (0..200).map(|i| i as f32 / 200.0)
}

/// The operating point on the grids that serves the most should-hits with the upper bound
/// (at `confidence`, e.g. 0.95) of the share of traps served at most `max_wrong_rate`; ties go
/// to the smaller bound, then to the stricter point. `None` when no point meets the budget or
/// the set has no trap.
///
/// For each cut-off, the pairs that pass it are sorted by similarity once, and every threshold
/// is then a prefix count: `O(cut-offs × (n log n + thresholds))`.
pub fn calibrate(
    points: &[CalibrationPoint],
    max_wrong_rate: f64,
    confidence: f64,
) -> Option<Calibrated> {
    let traps = points.iter().filter(|p| p.trap).count();
    let should_hits = points.len() - traps;
    if traps == 0 {
        return None;
    }
    let bounds = BoundTable::new(traps, confidence);
    let thresholds: Vec<f32> = threshold_grid().collect();
    let mut best: Option<(usize, f64, OperatingPoint, usize)> = None;
    for cutoff in cutoff_grid() {
        let mut passing: Vec<(f32, bool)> = points
            .iter()
            .filter(|p| p.probability >= cutoff)
            .map(|p| (p.similarity, p.trap))
            .collect();
        passing.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Walk thresholds from the highest down, extending the served prefix.
        let (mut at, mut served, mut wrong) = (0, 0, 0);
        for &threshold in thresholds.iter().rev() {
            while at < passing.len() && passing[at].0 >= threshold {
                if passing[at].1 {
                    wrong += 1;
                } else {
                    served += 1;
                }
                at += 1;
            }
            let bound = bounds.upper(wrong);
            if bound > max_wrong_rate {
                continue;
            }
            let point = OperatingPoint {
                threshold: Threshold::new(f64::from(threshold)).unwrap_or(Threshold::MAX),
                cutoff,
            };
            if better((served, bound, point), best.as_ref()) {
                best = Some((served, bound, point, wrong));
            }
        }
    }
    best.map(|(served, bound, point, wrong)| Calibrated {
        point,
        served: served as f64 / should_hits.max(1) as f64,
        wrong: wrong as f64 / traps as f64,
        wrong_bound: bound,
        should_hits,
        traps,
    })
}

/// More served, then a smaller bound, then a higher cut-off, then a higher threshold.
fn better(
    (served, bound, point): (usize, f64, OperatingPoint),
    best: Option<&(usize, f64, OperatingPoint, usize)>,
) -> bool {
    let Some((b_served, b_bound, b_point, _)) = best else {
        return true;
    };
    let key = |s: usize, bound: f64, p: &OperatingPoint| (s, -bound, p.cutoff, p.threshold.get());
    let (a, b) = (
        key(served, bound, &point),
        key(*b_served, *b_bound, b_point),
    );
    a.partial_cmp(&b).is_some_and(|o| o.is_gt())
}

/// One-sided upper confidence bounds for `k` of `n`, computed once per `k` asked.
struct BoundTable {
    n: usize,
    confidence: f64,
    cache: std::cell::RefCell<Vec<Option<f64>>>,
}

impl BoundTable {
    fn new(n: usize, confidence: f64) -> Self {
        Self {
            n,
            confidence,
            cache: std::cell::RefCell::new(vec![None; n + 1]),
        }
    }

    fn upper(&self, k: usize) -> f64 {
        let mut cache = self.cache.borrow_mut();
        *cache[k].get_or_insert_with(|| upper_bound(k, self.n, self.confidence))
    }
}

/// The Clopper-Pearson one-sided upper bound at `confidence` of a rate seen `k` times in `n`:
/// the largest `p` under which seeing at most `k` still has probability `1 - confidence`.
pub fn upper_bound(k: usize, n: usize, confidence: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let alpha = 1.0 - confidence;
    // P(X <= k) falls as p rises: bisect for the p where it equals alpha.
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(k, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The Clopper-Pearson one-sided lower bound at `confidence` of a rate seen `k` times in `n`:
/// the smallest `p` under which seeing at least `k` still has probability `1 - confidence`.
/// Above a budget, it says the rate is over the budget with that confidence.
pub fn lower_bound(k: usize, n: usize, confidence: f64) -> f64 {
    if n == 0 || k == 0 {
        return 0.0;
    }
    let alpha = 1.0 - confidence;
    let k = k.min(n);
    // P(X >= k) = 1 - P(X <= k - 1) rises with p: bisect for the p where it equals alpha.
    let (mut lo, mut hi) = (0.0, k as f64 / n as f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if 1.0 - binomial_cdf(k - 1, n, mid) < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// `P(X <= k)` for `X ~ Binomial(n, p)`, summed in log space.
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let ln_n = ln_factorial(n);
    let mut total = 0.0;
    for i in 0..=k {
        let ln_choose = ln_n - ln_factorial(i) - ln_factorial(n - i);
        total += (ln_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    total.min(1.0)
}

/// `ln(n!)` by Stirling's series beyond a direct sum for small `n`.
fn ln_factorial(n: usize) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
}

#[cfg(test)]
mod tests;
