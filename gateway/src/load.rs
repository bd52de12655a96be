//! Upstream load as the gateway sees it: requests waiting on the upstream, the latency until its
//! answer starts (an exponentially weighted moving average) and the share of 429/503 answers and
//! failed connections. Once a second the figures go to the policy's load governor, which
//! decides whether categories serve with their relaxed threshold and extended TTL.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cachet_policies::{AdaptiveSettings, LoadGovernor, LoadSample, LoadState};
use parking_lot::Mutex;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.2;
/// Per idle second, the averages shrink by this factor: no traffic is no load.
const IDLE_DECAY: f64 = 0.5;

#[derive(Debug)]
pub struct LoadTracker {
    in_flight: AtomicUsize,
    averages: Mutex<Averages>,
    governor: Mutex<LoadGovernor>,
    relaxed: AtomicBool,
}

#[derive(Debug, Default)]
struct Averages {
    latency_s: f64,
    error_rate: f64,
    observed_since_tick: bool,
}

/// Counts one request as waiting on the upstream until dropped.
#[derive(Debug)]
pub struct Waiting<'a> {
    tracker: &'a LoadTracker,
    started: Instant,
}

impl Waiting<'_> {
    /// Records the outcome: the time until the answer started, and whether the upstream was
    /// overloaded (`429`, `503`, no connection, timeout).
    pub fn finish(self, overloaded: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut averages = self.tracker.averages.lock();
        let first = !averages.observed_since_tick && averages.latency_s == 0.0;
        averages.latency_s = if first {
            elapsed
        } else {
            ALPHA * elapsed + (1.0 - ALPHA) * averages.latency_s
        };
        let error = if overloaded { 1.0 } else { 0.0 };
        averages.error_rate = ALPHA * error + (1.0 - ALPHA) * averages.error_rate;
        averages.observed_since_tick = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.tracker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoadTracker {
    pub fn new(settings: &AdaptiveSettings) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            averages: Mutex::new(Averages::default()),
            governor: Mutex::new(LoadGovernor::new(settings)),
            relaxed: AtomicBool::new(false),
        }
    }

    /// Marks a request as sent to the upstream.
    pub fn start(&self) -> Waiting<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Waiting {
            tracker: self,
            started: Instant::now(),
        }
    }

    /// The state the policy is in: categories use relaxed thresholds and TTLs when `Relaxed`.
    pub fn state(&self) -> LoadState {
        if self.relaxed.load(Ordering::Relaxed) {
            LoadState::Relaxed
        } else {
            LoadState::Normal
        }
    }

    /// The current figures, as the governor sees them.
    pub fn sample(&self) -> LoadSample {
        let averages = self.averages.lock();
        LoadSample {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_ewma: Duration::from_secs_f64(averages.latency_s.max(0.0)),
            error_rate: averages.error_rate,
        }
    }

    /// Feeds the governor; called once a second. Returns the state it decided.
    pub fn tick(&self, now: Instant) -> LoadState {
        let sample = {
            let mut averages = self.averages.lock();
            if !averages.observed_since_tick && self.in_flight.load(Ordering::Relaxed) == 0 {
                averages.latency_s *= IDLE_DECAY;
                averages.error_rate *= IDLE_DECAY;
            }
            averages.observed_since_tick = false;
            drop(averages);
            self.sample()
        };
        let state = self.governor.lock().observe(sample, now);
        let relaxed = state == LoadState::Relaxed;
        if self.relaxed.swap(relaxed, Ordering::Relaxed) != relaxed {
            tracing::info!(
                ?state,
                in_flight = sample.in_flight,
                latency_ms = sample.latency_ewma.as_millis() as u64,
                error_rate = sample.error_rate,
                "upstream load changed the cache policy"
            );
        }
        metrics::gauge!("cachet_upstream_in_flight").set(sample.in_flight as f64);
        metrics::gauge!("cachet_upstream_latency_ewma_seconds")
            .set(sample.latency_ewma.as_secs_f64());
        metrics::gauge!("cachet_upstream_overload_rate").set(sample.error_rate);
        metrics::gauge!("cachet_load_relaxed").set(if relaxed { 1.0 } else { 0.0 });
        state
    }

    /// Applies new adaptive settings (config reload); the next tick decides the state anew.
    pub fn reconfigure(&self, settings: &AdaptiveSettings) {
        *self.governor.lock() = LoadGovernor::new(settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AdaptiveSettings {
        AdaptiveSettings {
            enabled: true,
            high_in_flight: 4,
            high_latency: Duration::from_secs(10),
            high_error_rate: 0.5,
            low_in_flight: 1,
            low_latency: Duration::from_secs(5),
            low_error_rate: 0.1,
            hold: Duration::from_secs(3),
        }
    }

    #[test]
    fn requests_waiting_on_the_upstream_are_counted_until_they_finish() {
        let tracker = LoadTracker::new(&settings());
        let a = tracker.start();
        let b = tracker.start();
        assert_eq!(tracker.sample().in_flight, 2);
        a.finish(false);
        drop(b);
        assert_eq!(tracker.sample().in_flight, 0);
    }

    #[test]
    fn overload_relaxes_the_policy_and_quiet_returns_it_after_the_hold() {
        let tracker = LoadTracker::new(&settings());
        let t0 = Instant::now();
        assert_eq!(tracker.tick(t0), LoadState::Normal);
        for _ in 0..6 {
            tracker.start().finish(true);
        }
        assert!(tracker.sample().error_rate >= 0.5);
        assert_eq!(
            tracker.tick(t0 + Duration::from_secs(1)),
            LoadState::Relaxed
        );
        assert_eq!(tracker.state(), LoadState::Relaxed);
        // Healthy answers bring the rate down; idle seconds decay it further.
        for _ in 0..10 {
            tracker.start().finish(false);
        }
        let low_from = t0 + Duration::from_secs(2);
        assert_eq!(tracker.tick(low_from), LoadState::Relaxed, "held");
        assert_eq!(
            tracker.tick(low_from + Duration::from_secs(2)),
            LoadState::Relaxed,
            "still within the hold"
        );
        assert_eq!(
            tracker.tick(low_from + Duration::from_secs(3)),
            LoadState::Normal
        );
    }

    #[test]
    fn many_requests_waiting_count_as_load() {
        let tracker = LoadTracker::new(&settings());
        let waiting: Vec<_> = (0..4).map(|_| tracker.start()).collect();
        assert_eq!(tracker.tick(Instant::now()), LoadState::Relaxed);
        drop(waiting);
    }

    #[test]
    fn disabled_settings_never_relax() {
        let tracker = LoadTracker::new(&AdaptiveSettings::default());
        for _ in 0..20 {
            tracker.start().finish(true);
        }
        assert_eq!(tracker.tick(Instant::now()), LoadState::Normal);
    }
}
