//! Resilience around one provider: a circuit breaker, and jittered exponential back-off.
//!
//! The breaker opens after `failures` consecutive failures; while open every call is refused at once
//! (the router falls back to the next provider without waiting). After `cooldown` one probe is let
//! through (half-open): its success closes the breaker, its failure opens it for another cool-down.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker's state, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused at once.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

/// A circuit breaker for one provider.
#[derive(Debug)]
pub struct CircuitBreaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// Opens after `failures` consecutive failures, for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State::Closed { consecutive: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go now; an open breaker past its cool-down lets this one call through as the probe.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// A call succeeded.
    pub fn record_success(&self) {
        *self.lock() = State::Closed { consecutive: 0 };
    }

    /// A call failed.
    pub fn record_failure(&self) {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        *state = match *state {
            State::Closed { consecutive } if consecutive + 1 < self.failures => State::Closed {
                consecutive: consecutive + 1,
            },
            _ => open,
        };
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// The wait before retry number `attempt` (from 1): `base × 2^(attempt-1)`, plus up to 50% jitter so that
/// callers that failed together do not retry together.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let jitter_ms = (exp.as_millis() as u64 / 2).max(1);
    // UUIDv7's low bits are random: good enough for jitter, no extra RNG crate.
    let r = (uuid::Uuid::now_v7().as_u128() as u64) % jitter_ms;
    exp + Duration::from_millis(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_recovers_after_a_probe() {
        let b = CircuitBreaker::new(2, Duration::from_secs(30));
        assert!(b.try_acquire());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.try_acquire(), "the probe goes through");
        assert!(!b.try_acquire(), "only one probe at a time");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.try_acquire());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(30));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 1..5 {
            let d = backoff(base, attempt);
            let exp = base * (1 << (attempt - 1));
            assert!(d >= exp && d <= exp + exp / 2, "{attempt}: {d:?}");
        }
    }
}
