//! A per-upstream send rate cap (SES accounts have a maximum messages per second), which a
//! throttling reply halves for a while. The cap is the upstream account's, so in a fleet it
//! holds for all nodes together: each send reserves its slot in the shared store, and a
//! throttling reply to one node slows every node.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::spool::PgDelivery;

/// When no cap is configured, a throttled upstream still gets at most this many per second.
const THROTTLED_UNCAPPED_RATE: f64 = 10.0;

/// How often an uncapped upstream's limiter asks the shared store whether another node was
/// told to slow down (a capped one learns it with every reservation).
const FLEET_THROTTLE_CHECK: Duration = Duration::from_secs(1);

pub struct RateLimiter {
    state: Mutex<State>,
    fleet: Option<FleetRate>,
}

/// The shared store's rate for this upstream.
pub struct FleetRate {
    pub store: PgDelivery,
    /// The upstream's name, the same on every node of one configuration.
    pub upstream: String,
}

struct State {
    /// Configured messages per second, or None for no cap.
    rate: Option<f64>,
    next_slot: Instant,
    throttled_until: Option<Instant>,
    /// When the shared store was last asked about throttling.
    fleet_checked: Option<Instant>,
}

impl RateLimiter {
    pub fn new(rate: Option<f64>, fleet: Option<FleetRate>) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State {
                rate,
                next_slot: Instant::now(),
                throttled_until: None,
                fleet_checked: None,
            }),
            fleet,
        }
    }

    /// Waits for this message's slot. Slots are handed out in order, so N workers (and, in a
    /// fleet, N nodes) together never exceed the rate. Should the shared store fail to answer,
    /// this node keeps to the rate by itself meanwhile.
    pub async fn acquire(&self) {
        if let Some(fleet) = &self.fleet {
            let rate = self.state.lock().await.rate;
            match rate {
                Some(rate) => {
                    let interval = Duration::from_secs_f64(1.0 / rate);
                    match fleet
                        .store
                        .reserve_send_slot(&fleet.upstream, interval)
                        .await
                    {
                        Ok(wait) => return tokio::time::sleep(wait).await,
                        Err(error) => {
                            tracing::warn!(upstream = %fleet.upstream, %error, "cannot reserve a send slot in the shared store; keeping to the rate on this node alone")
                        }
                    }
                }
                None => self.learn_fleet_throttle(fleet).await,
            }
        }
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

    /// The upstream said we send too fast: half the rate for `period`, fleet-wide.
    pub async fn throttle(&self, period: Duration) {
        self.state.lock().await.throttled_until = Some(Instant::now() + period);
        if let Some(fleet) = &self.fleet
            && let Err(error) = fleet.store.throttle(&fleet.upstream, period).await
        {
            tracing::warn!(upstream = %fleet.upstream, %error, "cannot tell the other nodes to slow down");
        }
    }

    /// Takes over a throttle another node was told of, looking at most once a second.
    async fn learn_fleet_throttle(&self, fleet: &FleetRate) {
        {
            let mut state = self.state.lock().await;
            let now = Instant::now();
            if state
                .fleet_checked
                .is_some_and(|at| now.duration_since(at) < FLEET_THROTTLE_CHECK)
            {
                return;
            }
            state.fleet_checked = Some(now);
        }
        if let Ok(Some(left)) = fleet.store.throttled_for(&fleet.upstream).await {
            let mut state = self.state.lock().await;
            let until = Instant::now() + left;
            if state.throttled_until.is_none_or(|current| current < until) {
                state.throttled_until = Some(until);
            }
        }
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
        let limiter = RateLimiter::new(Some(10.0), None);
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
        let limiter = RateLimiter::new(Some(10.0), None);
        limiter.throttle(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..11 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn uncapped_is_free_until_throttled() {
        let limiter = RateLimiter::new(None, None);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
    }
}
