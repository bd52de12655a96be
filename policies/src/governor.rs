//! The load governor: decides from the upstream's load whether categories serve with their
//! normal or their relaxed threshold and TTL. Pure state machine; the gateway measures the
//! load and feeds it samples with the time they were taken.

use std::time::{Duration, Instant};

use crate::config::AdaptiveSettings;

/// Which of a category's thresholds and TTLs apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadState {
    #[default]
    Normal,
    /// The upstream is loaded: serve more from the cache (lower threshold, longer TTL).
    Relaxed,
}

/// The upstream's load at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Requests waiting on the upstream.
    pub in_flight: usize,
    /// Moving average of the upstream's time to answer.
    pub latency_ewma: Duration,
    /// Share (`0..=1`) of recent upstream answers that were 429 or 503.
    pub error_rate: f64,
}

/// Hysteresis between the two states: enter `Relaxed` as soon as any signal reaches its high
/// level, leave it only once every signal has stayed at or below its low level for `hold`.
/// The gap between the levels and the hold keep a load that hovers around one level from
/// switching the policy back and forth.
#[derive(Debug, Clone)]
pub struct LoadGovernor {
    settings: AdaptiveSettings,
    state: LoadState,
    /// While relaxed: when the current unbroken run of low samples began.
    low_since: Option<Instant>,
}

impl LoadGovernor {
    pub fn new(settings: &AdaptiveSettings) -> Self {
        Self {
            settings: *settings,
            state: LoadState::Normal,
            low_since: None,
        }
    }

    /// The state decided by the last sample.
    pub fn state(&self) -> LoadState {
        self.state
    }

    /// Takes one sample and returns the state that applies from `now`. Disabled settings
    /// always give `Normal`. A sample with a NaN error rate is neither high nor low, so it
    /// keeps the state (and restarts the hold).
    pub fn observe(&mut self, sample: LoadSample, now: Instant) -> LoadState {
        let s = &self.settings;
        if !s.enabled {
            self.state = LoadState::Normal;
            self.low_since = None;
            return self.state;
        }
        let high = sample.in_flight >= s.high_in_flight
            || sample.latency_ewma >= s.high_latency
            || sample.error_rate >= s.high_error_rate;
        let low = sample.in_flight <= s.low_in_flight
            && sample.latency_ewma <= s.low_latency
            && sample.error_rate <= s.low_error_rate;
        match self.state {
            LoadState::Normal if high => {
                self.state = LoadState::Relaxed;
                self.low_since = None;
            }
            LoadState::Normal => {}
            LoadState::Relaxed if low && !high => {
                let since = *self.low_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= s.hold {
                    self.state = LoadState::Normal;
                    self.low_since = None;
                }
            }
            // Not low enough: the hold starts over with the next low sample.
            LoadState::Relaxed => self.low_since = None,
        }
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> AdaptiveSettings {
        AdaptiveSettings {
            enabled: true,
            high_in_flight: 100,
            high_latency: Duration::from_secs(4),
            high_error_rate: 0.2,
            low_in_flight: 20,
            low_latency: Duration::from_secs(1),
            low_error_rate: 0.05,
            hold: Duration::from_secs(30),
        }
    }

    fn sample(in_flight: usize, latency_ms: u64, error_rate: f64) -> LoadSample {
        LoadSample {
            in_flight,
            latency_ewma: Duration::from_millis(latency_ms),
            error_rate,
        }
    }

    const QUIET: LoadSample = LoadSample {
        in_flight: 0,
        latency_ewma: Duration::ZERO,
        error_rate: 0.0,
    };

    /// Feeds `(seconds after start, sample)` and returns the state after each.
    fn run(settings: &AdaptiveSettings, samples: &[(u64, LoadSample)]) -> Vec<LoadState> {
        let start = Instant::now();
        let mut governor = LoadGovernor::new(settings);
        samples
            .iter()
            .map(|(at, s)| governor.observe(*s, start + Duration::from_secs(*at)))
            .collect()
    }

    use LoadState::{Normal, Relaxed};

    #[test]
    fn any_high_signal_enters_relaxed() {
        for high in [sample(100, 0, 0.0), sample(0, 4000, 0.0), sample(0, 0, 0.2)] {
            assert_eq!(
                run(&settings(), &[(0, QUIET), (1, high)]),
                [Normal, Relaxed],
                "{high:?}"
            );
        }
        // Just below every high level is not enough.
        assert_eq!(run(&settings(), &[(0, sample(99, 3999, 0.19))]), [Normal]);
    }

    #[test]
    fn leaving_needs_every_signal_low_for_the_hold() {
        let got = run(
            &settings(),
            &[
                (0, sample(150, 0, 0.0)),
                (1, QUIET),
                (30, QUIET),
                (31, QUIET),
            ],
        );
        assert_eq!(got, [Relaxed, Relaxed, Relaxed, Normal]);
        // One signal above its low level keeps the relaxed state, however long.
        let got = run(
            &settings(),
            &[
                (0, sample(150, 0, 0.0)),
                (1, sample(0, 0, 0.06)),
                (100, sample(0, 0, 0.06)),
            ],
        );
        assert_eq!(got, [Relaxed, Relaxed, Relaxed]);
    }

    #[test]
    fn a_sample_between_the_levels_restarts_the_hold() {
        let got = run(
            &settings(),
            &[
                (0, sample(150, 0, 0.0)),
                (1, QUIET),
                (20, sample(50, 0, 0.0)),
                (21, QUIET),
                (40, QUIET),
                (51, QUIET),
            ],
        );
        assert_eq!(got, [Relaxed, Relaxed, Relaxed, Relaxed, Relaxed, Normal]);
    }

    #[test]
    fn oscillating_load_does_not_flap() {
        // Load swinging every 5 s between quiet and overloaded: once relaxed, it stays
        // relaxed, because the quiet spells are shorter than the hold.
        let samples: Vec<(u64, LoadSample)> = (0..40)
            .map(|i| {
                let s = if (i / 5) % 2 == 0 {
                    QUIET
                } else {
                    sample(200, 0, 0.0)
                };
                (i, s)
            })
            .collect();
        let got = run(&settings(), &samples);
        let changes = got.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 1, "{got:?}");
        // Load hovering around the high level, never falling to the low one, changes the
        // state once as well.
        let samples: Vec<(u64, LoadSample)> = (0..40)
            .map(|i| (i, sample(if i % 2 == 0 { 99 } else { 101 }, 0, 0.0)))
            .collect();
        let got = run(&settings(), &samples);
        assert_eq!(
            got.windows(2).filter(|w| w[0] != w[1]).count(),
            1,
            "{got:?}"
        );
    }

    #[test]
    fn disabled_is_always_normal() {
        let off = AdaptiveSettings {
            enabled: false,
            ..settings()
        };
        assert_eq!(run(&off, &[(0, sample(1000, 60_000, 1.0))]), [Normal]);
    }

    #[test]
    fn nan_error_rate_keeps_the_state() {
        let nan = sample(0, 0, f64::NAN);
        assert_eq!(
            run(
                &settings(),
                &[(0, nan), (1, sample(150, 0, 0.0)), (2, nan), (100, nan)]
            ),
            [Normal, Relaxed, Relaxed, Relaxed]
        );
    }

    /// Quiet samples (every signal low) a third of the time, so that runs of them long enough
    /// to leave the relaxed state occur; otherwise anything.
    fn any_sample() -> impl Strategy<Value = LoadSample> {
        prop_oneof![
            (0usize..=20, 0u64..=1000, 0.0f64..=0.05).prop_map(|(n, ms, e)| sample(n, ms, e)),
            (0usize..300, 0u64..10_000, 0.0f64..=1.0).prop_map(|(n, ms, e)| sample(n, ms, e)),
            (0usize..300, 0u64..10_000, 0.0f64..=1.0).prop_map(|(n, ms, e)| sample(n, ms, e)),
        ]
    }

    proptest! {
        /// Whatever the load, a category's effective threshold stays between its relaxed
        /// threshold and its threshold, and its TTL between its TTL and its relaxed TTL.
        #[test]
        fn effective_values_stay_within_their_bounds(
            samples in proptest::collection::vec((0u64..5, any_sample()), 1..60),
            threshold in 0.0f64..=1.0,
            relax_by in 0.0f64..=1.0,
            ttl_s in 1u64..100_000,
            extend_s in 0u64..100_000,
        ) {
            let text = format!(
                "[categories.general]\nthreshold = {threshold}\nrelaxed_threshold = {}\n\
                 ttl = \"{ttl_s}s\"\nrelaxed_ttl = \"{}s\"\n",
                threshold * (1.0 - relax_by),
                ttl_s + extend_s,
            );
            let config = crate::Config::from_toml(&text).expect("valid category");
            let category = &config.categories[0];
            let mut governor = LoadGovernor::new(&settings());
            let mut now = Instant::now();
            for (step, s) in samples {
                now += Duration::from_secs(step);
                let state = governor.observe(s, now);
                let t = category.effective_threshold(state);
                prop_assert!(t >= category.relaxed_threshold && t <= category.threshold);
                let ttl = category.effective_ttl(state);
                prop_assert!(ttl >= category.ttl && ttl <= category.relaxed_ttl);
            }
        }

        /// A high sample always gives the relaxed state, until the first high sample the state
        /// stays normal, and the normal state returns only at the end of an unbroken run of
        /// low samples lasting at least `hold`.
        #[test]
        fn states_follow_the_samples(
            samples in proptest::collection::vec((0u64..20, any_sample()), 1..80),
        ) {
            let s = settings();
            let mut governor = LoadGovernor::new(&s);
            let mut now = Instant::now();
            let mut seen_high = false;
            let mut low_run_since: Option<Instant> = None;
            let mut previous = Normal;
            for (step, sample) in samples {
                now += Duration::from_secs(step);
                let high = sample.in_flight >= s.high_in_flight
                    || sample.latency_ewma >= s.high_latency
                    || sample.error_rate >= s.high_error_rate;
                let low = sample.in_flight <= s.low_in_flight
                    && sample.latency_ewma <= s.low_latency
                    && sample.error_rate <= s.low_error_rate;
                seen_high |= high;
                low_run_since = if low && !high { low_run_since.or(Some(now)) } else { None };
                let state = governor.observe(sample, now);
                if high {
                    prop_assert_eq!(state, Relaxed);
                }
                if !seen_high {
                    prop_assert_eq!(state, Normal);
                }
                if previous == Relaxed && state == Normal {
                    let since = low_run_since.expect("left relaxed on a low sample");
                    prop_assert!(now.duration_since(since) >= s.hold);
                }
                previous = state;
            }
        }
    }
}
