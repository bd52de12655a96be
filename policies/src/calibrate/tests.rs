use proptest::prelude::*;

use super::*;

fn point(similarity: f32, probability: f32, trap: bool) -> CalibrationPoint {
    CalibrationPoint {
        similarity,
        probability,
        trap,
    }
}

/// Every grid point scored from scratch, the same preference order: what `calibrate` must pick.
fn brute_force(points: &[CalibrationPoint], budget: f64, confidence: f64) -> Option<Calibrated> {
    let traps = points.iter().filter(|p| p.trap).count();
    let should_hits = points.len() - traps;
    if traps == 0 {
        return None;
    }
    let bounds: Vec<f64> = (0..=traps)
        .map(|k| upper_bound(k, traps, confidence))
        .collect();
    let mut best: Option<Calibrated> = None;
    for threshold in threshold_grid() {
        for cutoff in cutoff_grid() {
            let served = |trap: bool| {
                points
                    .iter()
                    .filter(|p| {
                        p.trap == trap && p.similarity >= threshold && p.probability >= cutoff
                    })
                    .count()
            };
            let (hits, wrong) = (served(false), served(true));
            let bound = bounds[wrong];
            if bound > budget {
                continue;
            }
            let candidate = Calibrated {
                point: OperatingPoint {
                    threshold: Threshold::new(f64::from(threshold)).expect("in range"),
                    cutoff,
                },
                served: hits as f64 / should_hits.max(1) as f64,
                wrong: wrong as f64 / traps as f64,
                wrong_bound: bound,
                should_hits,
                traps,
            };
            let key = |c: &Calibrated| {
                (
                    (c.served * should_hits.max(1) as f64).round() as usize,
                    -c.wrong_bound,
                    c.point.cutoff,
                    c.point.threshold.get(),
                )
            };
            if best.as_ref().is_none_or(|b| {
                key(&candidate)
                    .partial_cmp(&key(b))
                    .is_some_and(|o| o.is_gt())
            }) {
                best = Some(candidate);
            }
        }
    }
    best
}

/// A fixed set: 120 should-hits above 0.55 similarity and 0.5 probability, 400 traps spread
/// (none served has an upper bound of 0.75% at 95%).
fn fixed_set() -> Vec<CalibrationPoint> {
    let mut points = Vec::new();
    for i in 0..120 {
        let x = (i * 37 % 120) as f32 / 120.0;
        let y = (i * 53 % 120) as f32 / 120.0;
        points.push(point(0.55 + 0.45 * x, 0.5 + 0.5 * y, false));
    }
    for i in 0..400 {
        let x = (i * 41 % 400) as f32 / 400.0;
        let y = (i * 67 % 400) as f32 / 400.0;
        points.push(point(0.4 + 0.6 * x, y * y, true));
    }
    points
}

#[test]
fn picks_what_a_brute_force_scan_picks_on_a_fixed_set() {
    let points = fixed_set();
    for budget in [0.01, 0.02, 0.05, 0.2] {
        let fast = calibrate(&points, budget, 0.95).expect("a point meets the budget");
        let slow = brute_force(&points, budget, 0.95).expect("a point meets the budget");
        assert_eq!(fast, slow, "budget {budget}");
        assert!(fast.wrong_bound <= budget);
    }
    // A looser budget never serves less.
    let served = |b| calibrate(&points, b, 0.95).map_or(0.0, |c| c.served);
    assert!(served(0.01) <= served(0.05) && served(0.05) <= served(0.2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn agrees_with_brute_force_on_random_sets(
        rows in proptest::collection::vec((0.3f32..1.0, 0.0f32..1.0, any::<bool>()), 1..40),
        budget in 0.0f64..0.6,
    ) {
        let points: Vec<_> = rows.into_iter().map(|(s, p, t)| point(s, p, t)).collect();
        prop_assert_eq!(calibrate(&points, budget, 0.9), brute_force(&points, budget, 0.9));
    }
}

#[test]
fn an_unmeetable_budget_or_no_trap_gives_nothing() {
    // Ten traps: even none served has an upper bound of 26% at 95%.
    let points: Vec<_> = (0..10).map(|_| point(0.9, 0.9, true)).collect();
    assert_eq!(calibrate(&points, 0.1, 0.95), None);
    assert_eq!(calibrate(&[point(0.9, 0.9, false)], 0.1, 0.95), None);
}

#[test]
fn clopper_pearson_upper_bounds() {
    // k = 0: 1 - alpha^(1/n).
    let expected = 1.0 - 0.05f64.powf(1.0 / 100.0);
    assert!((upper_bound(0, 100, 0.95) - expected).abs() < 1e-9);
    // 1 of 10 at 95%: the beta(2, 9) quantile 0.3942.
    assert!((upper_bound(1, 10, 0.95) - 0.3942).abs() < 1e-3);
    // 5 of 1000 at 95%: 0.01051 (beta(6, 995) quantile).
    assert!((upper_bound(5, 1000, 0.95) - 0.01051).abs() < 1e-4);
    assert_eq!(upper_bound(3, 3, 0.95), 1.0);
    // Lower bounds: 5 of 9 at 95% is 0.2514 (the beta(5, 5) quantile at 0.05); none is 0.
    assert!((lower_bound(5, 9, 0.95) - 0.2514).abs() < 1e-3);
    assert!((lower_bound(1, 10, 0.95) - 0.00512).abs() < 1e-4);
    assert_eq!(lower_bound(0, 50, 0.95), 0.0);
    assert!(lower_bound(4, 8, 0.95) < 0.2 && lower_bound(5, 9, 0.95) > 0.2);
    assert_eq!(upper_bound(0, 0, 0.95), 1.0);
}
