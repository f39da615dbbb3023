//! Retry timing: exponential backoff with jitter, like Postfix (about 5 minutes first, doubling,
//! capped near 70 minutes); every value comes from the configuration so tests can use seconds.

use std::time::Duration;

use crate::config::RetryPolicy;

/// A message's jitter factor (±10%), drawn once per delivery of the message: it keeps deferred
/// messages from all coming due in the same second, while the recipients of one message that
/// were deferred together come due together and are retried in one transaction.
pub fn jitter() -> f64 {
    0.9 + rand::random::<f64>() * 0.2
}

/// The wait before the next attempt, after `failed_attempts` failures (1 for the first), scaled
/// by the message's `jitter`.
pub fn next_delay(policy: &RetryPolicy, failed_attempts: i64, jitter: f64) -> Duration {
    let doublings = failed_attempts.saturating_sub(1).clamp(0, 30) as u32;
    let base = policy
        .initial
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(policy.max)
        .min(policy.max);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(300),
            max: Duration::from_secs(4200),
        };
        for (attempts, expected) in [
            (1, 300.0),
            (2, 600.0),
            (3, 1200.0),
            (4, 2400.0),
            (5, 4200.0),
            (50, 4200.0),
        ] {
            for _ in 0..50 {
                let delay = next_delay(&policy, attempts, jitter()).as_secs_f64();
                assert!(
                    delay >= expected * 0.9 && delay <= expected * 1.1,
                    "{attempts}: {delay}"
                );
            }
        }
    }
}
