//! Exponential backoff between poll attempts.

use std::time::Duration;

/// Exponential backoff without jitter: `initial`, `2 × initial`, `4 × initial`, ... capped at
/// `max`. One agent per node polls its own cluster, so there is no thundering herd to
/// spread out and a deterministic sequence is easier to reason about in logs and tests.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `max` (if `max < initial`, every
    /// delay is `max`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay to wait now; the following call returns twice as much, up to the cap.
    #[allow(clippy::should_implement_trait)] // infinite, never `None`: an Iterator would mislead
    pub fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    /// Start over from the initial delay (after a successful poll).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_then_stays() {
        let mut b = Backoff::new(ms(100), ms(1000));
        let seq: Vec<_> = (0..7).map(|_| b.next()).collect();
        assert_eq!(
            seq,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(ms(50), ms(10_000));
        b.next();
        b.next();
        b.next();
        b.reset();
        assert_eq!(b.next(), ms(50));
        assert_eq!(b.next(), ms(100));
    }

    #[test]
    fn cap_below_initial_is_the_cap() {
        let mut b = Backoff::new(ms(500), ms(100));
        assert_eq!(b.next(), ms(100));
        assert_eq!(b.next(), ms(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        for _ in 0..10 {
            b.next();
        }
        assert_eq!(b.next(), Duration::MAX);
    }

    #[test]
    fn default_is_100ms_to_30s() {
        let mut b = Backoff::default();
        assert_eq!(b.next(), ms(100));
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), Duration::from_secs(30));
    }
}
