//! Time as the daemon sees it: µs on one monotonic clock, behind a trait so that tests
//! (and the simulation) can drive it by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock in µs.
pub trait Clock {
    /// Now, µs since the clock's origin.
    fn now_us(&self) -> u64;

    /// Block until `t_us` (at once if it has passed). A manual clock jumps there
    /// instead, which makes a waiting loop exact and instant under test.
    fn sleep_until(&self, t_us: u64) {
        let now = self.now_us();
        if t_us > now {
            std::thread::sleep(Duration::from_micros(t_us - now));
        }
    }
}

/// The system's monotonic clock, from the moment it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }
}

/// A clock that moves only when told; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Jump to `t` µs (never backwards).
    pub fn set(&self, t: u64) {
        self.0.fetch_max(t, Ordering::SeqCst);
    }

    /// Move forward by `dt` µs.
    pub fn advance(&self, dt: u64) {
        self.0.fetch_add(dt, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, t_us: u64) {
        self.set(t_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        let a = ManualClock::default();
        let b = a.clone();
        a.set(10);
        b.advance(5);
        a.set(3);
        assert_eq!((a.now_us(), b.now_us()), (15, 15));
        b.sleep_until(40);
        a.sleep_until(20);
        assert_eq!(a.now_us(), 40, "sleeping jumps forward, never back");
    }
}
