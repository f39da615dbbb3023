//! Failed AUTH attempts per client address: after `max` within `window`, the address is
//! refused (`421 4.7.0`) until the oldest of them is older than the window — a password
//! guesser gets `max` argon2 verifications per window, not one per connection.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at most; beyond it the ones with no recent failure are forgotten
/// first, so a flood of spoofed sources cannot grow the table without bound.
const MAX_ADDRESSES: usize = 100_000;

pub struct Failures {
    max: usize,
    window: Duration,
    by_address: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Failures {
    pub fn new(max: usize, window: Duration) -> Failures {
        Failures {
            max,
            window,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// The address has used up its attempts for now.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&ip) {
            Some(times) => {
                forget_old(times, now, self.window);
                times.len() >= self.max
            }
            None => false,
        }
    }

    /// Counts a failure; true when the address is locked from now on.
    pub fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, times| {
                forget_old(times, now, window);
                !times.is_empty()
            });
        }
        let times = map.entry(ip).or_default();
        forget_old(times, now, self.window);
        times.push_back(now);
        while times.len() > self.max {
            times.pop_front();
        }
        times.len() >= self.max
    }

    /// A success forgives the address's earlier mistakes.
    pub fn clear(&self, ip: IpAddr) {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
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
    use super::*;

    #[test]
    fn the_fifth_failure_locks_the_address_until_the_window_passes() {
        let failures = Failures::new(5, Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        for n in 1..5 {
            assert!(!failures.record(ip, start), "locked after {n}");
        }
        assert!(failures.record(ip, start));
        assert!(failures.locked(ip, start + Duration::from_secs(599)));
        assert!(
            !failures.locked(other, start),
            "another address is not affected"
        );
        assert!(!failures.locked(ip, start + Duration::from_secs(600)));
    }

    #[test]
    fn success_forgives() {
        let failures = Failures::new(2, Duration::from_secs(60));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Instant::now();
        failures.record(ip, now);
        failures.clear(ip);
        assert!(!failures.record(ip, now));
    }
}
