//! The one reconnect backoff of the adapter: the first wait is
//! [`AmqpOptions::reconnect_initial`], each next one doubles, up to
//! [`AmqpOptions::reconnect_max`]. Connecting, publishing, the consumer and
//! the delay pump all wait through it.

use std::time::Duration;

use tokio::time::Instant;

use super::AmqpOptions;

/// Exponential backoff between reconnect attempts.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// The wait the next retry takes.
    wait: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff over the reconnect settings of `options`.
    pub(super) fn new(options: &AmqpOptions) -> Self {
        Backoff {
            wait: options.reconnect_initial,
            initial: options.reconnect_initial,
            max: options.reconnect_max,
        }
    }

    /// The same backoff, with a first wait of `first` instead of the
    /// initial one (a reset goes back to the initial one).
    pub(super) fn starting_at(mut self, first: Duration) -> Self {
        self.wait = first;
        self
    }

    /// The wait the next retry takes.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// Whether the next wait ends by `deadline` (always, without one).
    pub(super) fn fits(&self, deadline: Option<Instant>) -> bool {
        deadline.is_none_or(|deadline| Instant::now() + self.wait <= deadline)
    }

    /// Takes the next wait and doubles the one after it (up to the max).
    pub(super) fn next_wait(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (wait * 2).min(self.max);
        wait
    }

    /// Sleeps the next wait.
    pub(super) async fn sleep(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// Back to the initial wait (after a success).
    pub(super) fn reset(&mut self) {
        self.wait = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(initial_ms: u64, max_ms: u64) -> AmqpOptions {
        AmqpOptions {
            reconnect_initial: Duration::from_millis(initial_ms),
            reconnect_max: Duration::from_millis(max_ms),
            ..AmqpOptions::default()
        }
    }

    #[test]
    fn waits_double_up_to_the_max_and_reset_to_the_initial() {
        let mut backoff = Backoff::new(&options(100, 500));
        let waits: Vec<u64> = (0..5)
            .map(|_| u64::try_from(backoff.next_wait().as_millis()).unwrap())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.wait(), Duration::from_millis(100));
    }

    #[test]
    fn a_first_wait_of_its_own_is_followed_by_doubling_and_reset_forgets_it() {
        let mut backoff = Backoff::new(&options(10, 1000)).starting_at(Duration::from_millis(100));
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
        assert_eq!(backoff.next_wait(), Duration::from_millis(200));
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_fits_a_deadline_only_if_it_ends_by_it() {
        let backoff = Backoff::new(&options(100, 500));
        let now = Instant::now();
        assert!(backoff.fits(None));
        assert!(backoff.fits(Some(now + Duration::from_millis(100))));
        assert!(!backoff.fits(Some(now + Duration::from_millis(99))));
    }
}
