//! Backoff schedules (pure). The numbers are part of the documented
//! behaviour:
//!
//! * a failed bind is retried after 10 s, doubling to at most 10 min;
//! * when accept fails for lack of descriptors or memory, every listener
//!   stops being polled for 100 ms, doubling to at most 1 s per burst;
//! * a controller child that dies is restarted after 1 s, doubling to at
//!   most 30 s (reset when it had run for a minute).
#![forbid(unsafe_code)]

use std::time::Duration;

pub const BIND_RETRY_FIRST: Duration = Duration::from_secs(10);
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(600);
pub const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(100);
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
pub const CONTROLLER_RESTART_FIRST: Duration = Duration::from_secs(1);
pub const CONTROLLER_RESTART_MAX: Duration = Duration::from_secs(30);

/// A doubling delay between `first` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the one after is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// The delay before bind retry number `attempt` (0 = the first retry).
pub fn bind_retry_delay(attempt: u32) -> Duration {
    let secs = BIND_RETRY_FIRST
        .as_secs()
        .saturating_mul(1u64.checked_shl(attempt.min(20)).unwrap_or(u64::MAX));
    Duration::from_secs(secs).min(BIND_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_retries_back_off_from_10s_to_10min() {
        let got: Vec<u64> = (0..9).map(|a| bind_retry_delay(a).as_secs()).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(bind_retry_delay(u32::MAX).as_secs(), 600);
    }

    #[test]
    fn doubling_backoff_caps_and_resets() {
        let mut b = Backoff::new(ACCEPT_PAUSE_FIRST, ACCEPT_PAUSE_MAX);
        let got: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
