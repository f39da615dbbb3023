//! Events per key within a sliding window: at most `max` in any `window`, then the key is
//! full until its oldest event is older than the window. Failed AUTH attempts per client
//! address (a password guesser gets `max` argon2 checks per window, not one per connection)
//! and messages per client address or user (`450 4.7.1` beyond the rate) are counted so.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond it the ones with no recent event are forgotten first, so
/// a flood of spoofed sources cannot grow the table without bound.
const MAX_KEYS: usize = 100_000;

pub struct EventWindow<K> {
    max: usize,
    window: Duration,
    by_key: Mutex<HashMap<K, VecDeque<Instant>>>,
}

impl<K: Hash + Eq + Clone> EventWindow<K> {
    pub fn new(max: usize, window: Duration) -> EventWindow<K> {
        EventWindow {
            max,
            window,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// The key has had `max` events within the window.
    pub fn full(&self, key: &K, now: Instant) -> bool {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(times) => {
                forget_old(times, now, self.window);
                times.len() >= self.max
            }
            None => false,
        }
    }

    /// Counts an event; true when the key is full from now on.
    pub fn record(&self, key: &K, now: Instant) -> bool {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, times| {
                forget_old(times, now, window);
                !times.is_empty()
            });
        }
        let times = map.entry(key.clone()).or_default();
        forget_old(times, now, self.window);
        times.push_back(now);
        while times.len() > self.max {
            times.pop_front();
        }
        times.len() >= self.max
    }

    /// Forgets the key's events (a success forgives earlier mistakes).
    pub fn clear(&self, key: &K) {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

fn forget_old(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|&at| now.saturating_duration_since(at) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn the_fifth_event_fills_the_key_until_the_window_passes() {
        let failures = EventWindow::new(5, Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        for n in 1..5 {
            assert!(!failures.record(&ip, start), "full after {n}");
        }
        assert!(failures.record(&ip, start));
        assert!(failures.full(&ip, start + Duration::from_secs(599)));
        assert!(!failures.full(&other, start), "another key is not affected");
        assert!(!failures.full(&ip, start + Duration::from_secs(600)));
    }

    #[test]
    fn clearing_forgives() {
        let failures = EventWindow::new(2, Duration::from_secs(60));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Instant::now();
        failures.record(&ip, now);
        failures.clear(&ip);
        assert!(!failures.record(&ip, now));
    }
}
