//! Messages per minute from one client address and from one authenticated user
//! (`smtp.message_rate_per_client`, `smtp.message_rate_per_user`; 0: no limit), so that one
//! compromised application cannot spend the whole upstream quota of a shared relay. Beyond
//! the rate, MAIL gets `450 4.7.1` and the client retries later (Postfix's anvil does the same
//! with `smtpd_client_message_rate_limit`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::EventWindow;

const WINDOW: Duration = Duration::from_secs(60);

pub struct MessageRates {
    per_client: Option<EventWindow<IpAddr>>,
    per_user: Option<EventWindow<String>>,
}

impl MessageRates {
    pub fn new(per_client: u64, per_user: u64) -> MessageRates {
        MessageRates {
            per_client: window(per_client),
            per_user: window(per_user),
        }
    }

    /// The client (and its user) may start another message now.
    pub fn may_send(&self, ip: Option<IpAddr>, user: Option<&str>) -> bool {
        let now = Instant::now();
        let client_full = match (&self.per_client, ip) {
            (Some(window), Some(ip)) => window.full(&ip, now),
            _ => false,
        };
        let user_full = match (&self.per_user, user) {
            (Some(window), Some(user)) => window.full(&user.to_string(), now),
            _ => false,
        };
        !client_full && !user_full
    }

    /// A message was accepted.
    pub fn sent(&self, ip: Option<IpAddr>, user: Option<&str>) {
        let now = Instant::now();
        if let (Some(window), Some(ip)) = (&self.per_client, ip) {
            window.record(&ip, now);
        }
        if let (Some(window), Some(user)) = (&self.per_user, user) {
            window.record(&user.to_string(), now);
        }
    }
}

fn window<K: std::hash::Hash + Eq + Clone>(max: u64) -> Option<EventWindow<K>> {
    (max > 0).then(|| EventWindow::new(max as usize, WINDOW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_counts_its_own_key_and_zero_is_no_limit() {
        let rates = MessageRates::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        rates.sent(Some(a), Some("app1"));
        rates.sent(Some(a), Some("app1"));
        assert!(!rates.may_send(Some(a), None), "client a is at its rate");
        assert!(rates.may_send(Some(b), Some("app1")));
        rates.sent(Some(b), Some("app1"));
        assert!(
            !rates.may_send(Some(b), Some("app1")),
            "app1 is at its rate from anywhere"
        );
        assert!(rates.may_send(Some(b), Some("app2")));
        let unlimited = MessageRates::new(0, 0);
        for _ in 0..100 {
            unlimited.sent(Some(a), Some("app1"));
        }
        assert!(unlimited.may_send(Some(a), Some("app1")));
    }
}
