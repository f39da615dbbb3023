//! A per-upstream send rate cap (SES accounts have a maximum messages per second), which a
//! throttling reply halves for a while.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// When no cap is configured, a throttled upstream still gets at most this many per second.
const THROTTLED_UNCAPPED_RATE: f64 = 10.0;

pub struct RateLimiter {
    state: Mutex<State>,
}

struct State {
    /// Configured messages per second, or None for no cap.
    rate: Option<f64>,
    next_slot: Instant,
    throttled_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(rate: Option<f64>) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State {
                rate,
                next_slot: Instant::now(),
                throttled_until: None,
            }),
        }
    }

    /// Waits for this message's slot. Slots are handed out in order, so N workers together
    /// never exceed the rate.
    pub async fn acquire(&self) {
        let slot = {
            let mut state = self.state.lock().await;
            let now = Instant::now();
            let Some(interval) = state.interval(now) else {
                return;
            };
            let slot = state.next_slot.max(now);
            state.next_slot = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// The upstream said we send too fast: half the rate for `period`.
    pub async fn throttle(&self, period: Duration) {
        let mut state = self.state.lock().await;
        state.throttled_until = Some(Instant::now() + period);
    }
}

impl State {
    fn interval(&mut self, now: Instant) -> Option<Duration> {
        let throttled = self.throttled_until.is_some_and(|until| until > now);
        if !throttled {
            self.throttled_until = None;
        }
        let rate = match (self.rate, throttled) {
            (Some(rate), false) => rate,
            (Some(rate), true) => rate / 2.0,
            (None, true) => THROTTLED_UNCAPPED_RATE,
            (None, false) => return None,
        };
        Some(Duration::from_secs_f64(1.0 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_per_second_spaces_messages_by_100ms() {
        let limiter = RateLimiter::new(Some(10.0));
        let start = Instant::now();
        for _ in 0..21 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(2000) && elapsed < Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_for_a_while() {
        let limiter = RateLimiter::new(Some(10.0));
        limiter.throttle(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..11 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn uncapped_is_free_until_throttled() {
        let limiter = RateLimiter::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
    }
}
