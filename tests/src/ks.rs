//! The two-sample Kolmogorov–Smirnov test, for the timing audits: do two sets of response times
//! come from the same distribution? (The audit of *Auditing Prompt Caching in Language Model
//! APIs* runs this test on a cache hit's and a miss's times.)

/// The outcome of [`two_sample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// The largest distance between the two empirical distribution functions, `0..=1`.
    pub statistic: f64,
    /// The probability of a distance at least this large if both samples came from one
    /// continuous distribution (asymptotic, with Stephens' small-sample correction).
    pub p_value: f64,
}

/// Compares samples `a` and `b` (neither may be empty; NaN sorts last).
pub fn two_sample(a: &[f64], b: &[f64]) -> KsTest {
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the Kolmogorov-Smirnov test needs two non-empty samples"
    );
    let statistic = statistic(a, b);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let effective = (n * m / (n + m)).sqrt();
    let p_value = kolmogorov_survival((effective + 0.12 + 0.11 / effective) * statistic);
    KsTest { statistic, p_value }
}

/// `sup |F_a(x) - F_b(x)|` over the merged sample, with ties stepped over together.
fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (sorted(a), sorted(b));
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = if a[i].total_cmp(&b[j]).is_le() {
            a[i]
        } else {
            b[j]
        };
        while i < a.len() && a[i].total_cmp(&x).is_le() {
            i += 1;
        }
        while j < b.len() && b[j].total_cmp(&x).is_le() {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// `Q(λ) = 2 Σ_{k≥1} (-1)^{k-1} e^{-2 k² λ²}`, the Kolmogorov distribution's upper tail.
fn kolmogorov_survival(lambda: f64) -> f64 {
    // Below this the series converges too slowly to sum, and Q is 1 to double precision.
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let term = (-2.0 * f64::from(k * k) * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-16 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kolmogorov_tail_matches_the_classic_critical_values() {
        // The 5% and 1% critical values of √n·D are 1.358 and 1.628.
        assert!((kolmogorov_survival(1.358) - 0.05).abs() < 5e-4);
        assert!((kolmogorov_survival(1.628) - 0.01).abs() < 2e-4);
        assert_eq!(kolmogorov_survival(0.0), 1.0);
        assert!(kolmogorov_survival(4.0) < 1e-12);
    }

    #[test]
    fn the_statistic_is_the_largest_gap_between_the_distributions() {
        let same: Vec<f64> = (0..200).map(f64::from).collect();
        let equal = two_sample(&same, &same);
        assert_eq!(equal.statistic, 0.0);
        assert_eq!(equal.p_value, 1.0);
        // Shifted by a quarter of the range: the gap is a quarter.
        let shifted: Vec<f64> = same.iter().map(|x| x + 50.0).collect();
        let quarter = two_sample(&same, &shifted);
        assert!((quarter.statistic - 0.25).abs() < 1e-12);
        assert!(quarter.p_value < 1e-4, "{quarter:?}");
        // Disjoint: every value of one below every value of the other.
        let far: Vec<f64> = same.iter().map(|x| x + 1_000.0).collect();
        let disjoint = two_sample(&same, &far);
        assert_eq!(disjoint.statistic, 1.0);
        assert!(disjoint.p_value < 1e-50);
        // Ties are stepped over together, and order does not matter.
        let a = [1.0, 2.0, 2.0, 3.0];
        let b = [2.0, 2.0, 4.0, 1.0];
        assert!((two_sample(&a, &b).statistic - 0.25).abs() < 1e-12);
        assert_eq!(two_sample(&a, &b), two_sample(&b, &a));
    }

    #[test]
    fn interleaved_draws_of_one_distribution_are_not_told_apart() {
        // A deterministic stand-in for two samples of one distribution: the halves of one
        // well-mixed sequence.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut draw = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let a: Vec<f64> = (0..200).map(|_| draw()).collect();
        let b: Vec<f64> = (0..200).map(|_| draw()).collect();
        assert!(two_sample(&a, &b).p_value > 0.01);
    }
}
