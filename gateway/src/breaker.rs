//! A circuit breaker for the entry store: after repeated failures the gateway stops asking the
//! store (every lookup is a miss, every fill is skipped) instead of paying a timeout on each
//! request, and lets one probe through after a pause to find out whether it has recovered.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Whether calls to the store go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are skipped until the pause ends.
    Open,
    /// One probe is in flight; other calls are skipped until it settles the state.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    retry_after: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

/// Permission for one call; report its outcome with [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Call,
    /// The call is the probe that decides whether the breaker closes again.
    Probe,
}

impl Breaker {
    pub fn new(failures_to_open: u32, retry_after: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            retry_after,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Whether a call may go to the store now; `None` means skip it.
    pub fn permit(&self, now: Instant) -> Option<Permit> {
        let mut inner = self.inner.lock();
        match inner.state {
            BreakerState::Closed => Some(Permit::Call),
            BreakerState::HalfOpen => None,
            BreakerState::Open => {
                let waited = inner
                    .opened_at
                    .is_none_or(|at| now.duration_since(at) >= self.retry_after);
                if waited {
                    inner.state = BreakerState::HalfOpen;
                    Some(Permit::Probe)
                } else {
                    None
                }
            }
        }
    }

    /// Records a call's outcome; returns the state it leaves the breaker in.
    pub fn record(&self, permit: Permit, ok: bool, now: Instant) -> BreakerState {
        let mut inner = self.inner.lock();
        if ok {
            inner.consecutive_failures = 0;
            if permit == Permit::Probe || inner.state == BreakerState::Closed {
                inner.state = BreakerState::Closed;
                inner.opened_at = None;
            }
        } else {
            inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
            let trips = permit == Permit::Probe
                || (inner.state == BreakerState::Closed
                    && inner.consecutive_failures >= self.failures_to_open);
            if trips {
                inner.state = BreakerState::Open;
                inner.opened_at = Some(now);
            }
        }
        inner.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE: Duration = Duration::from_secs(2);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = Breaker::new(3, PAUSE);
        let t = Instant::now();
        for _ in 0..2 {
            let permit = breaker.permit(t).unwrap();
            assert_eq!(breaker.record(permit, false, t), BreakerState::Closed);
        }
        // A success in between resets the count.
        let permit = breaker.permit(t).unwrap();
        breaker.record(permit, true, t);
        for _ in 0..2 {
            let permit = breaker.permit(t).unwrap();
            assert_eq!(breaker.record(permit, false, t), BreakerState::Closed);
        }
        let permit = breaker.permit(t).unwrap();
        assert_eq!(breaker.record(permit, false, t), BreakerState::Open);
        assert_eq!(breaker.permit(t), None, "open: calls are skipped");
    }

    #[test]
    fn lets_one_probe_through_after_the_pause() {
        let breaker = Breaker::new(1, PAUSE);
        let t = Instant::now();
        let permit = breaker.permit(t).unwrap();
        breaker.record(permit, false, t);
        assert_eq!(breaker.permit(t + PAUSE / 2), None);
        let later = t + PAUSE;
        assert_eq!(breaker.permit(later), Some(Permit::Probe));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.permit(later), None, "only one probe at a time");
        assert_eq!(
            breaker.record(Permit::Probe, true, later),
            BreakerState::Closed
        );
        assert_eq!(breaker.permit(later), Some(Permit::Call));
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_another_pause() {
        let breaker = Breaker::new(1, PAUSE);
        let t = Instant::now();
        let permit = breaker.permit(t).unwrap();
        breaker.record(permit, false, t);
        let probe_at = t + PAUSE;
        assert_eq!(breaker.permit(probe_at), Some(Permit::Probe));
        assert_eq!(
            breaker.record(Permit::Probe, false, probe_at),
            BreakerState::Open
        );
        assert_eq!(breaker.permit(probe_at + PAUSE / 2), None);
        assert_eq!(breaker.permit(probe_at + PAUSE), Some(Permit::Probe));
    }

    #[test]
    fn late_outcomes_of_calls_made_before_it_opened_do_not_close_it() {
        let breaker = Breaker::new(1, PAUSE);
        let t = Instant::now();
        let first = breaker.permit(t).unwrap();
        let second = breaker.permit(t).unwrap();
        breaker.record(first, false, t);
        assert_eq!(breaker.record(second, true, t), BreakerState::Open);
    }
}
