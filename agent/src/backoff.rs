//! Waiting in the agent's loops, one way each: exponential [`Backoff`] between attempts
//! (Kafka polls, watch restarts, refused evictions), and [`sleep_or_stop`], a wait that a
//! shutdown cuts short.

use std::time::Duration;

use tokio::sync::watch;

/// Sleeps `delay`, or less if `stop` turns true (or its sender is gone). Returns `true`
/// when the caller should stop.
pub async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

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

    #[tokio::test]
    async fn a_stop_cuts_the_sleep_short_and_a_dropped_sender_stops_too() {
        let (tx, mut rx) = watch::channel(false);
        assert!(
            !sleep_or_stop(ms(10), &mut rx).await,
            "slept the whole delay"
        );
        let waiting = tokio::spawn(async move {
            let stopped = sleep_or_stop(Duration::from_secs(3600), &mut rx).await;
            (stopped, rx)
        });
        tokio::task::yield_now().await;
        tx.send(true).expect("send");
        let (stopped, mut rx) = waiting.await.expect("task");
        assert!(stopped);
        assert!(
            sleep_or_stop(Duration::from_secs(3600), &mut rx).await,
            "already stopped"
        );
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        assert!(sleep_or_stop(Duration::from_secs(3600), &mut rx).await);
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
