//! `queue check`: a monitoring plugin in the Nagios/Icinga convention — one line with
//! perfdata, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the spool cannot be read).

use std::time::Duration;

use crate::config::Config;
use crate::spool::{OpenMode, QueueAdmin, QueueStats, StoreQueue, now_ms};

pub struct Thresholds {
    pub warn_age: Duration,
    pub crit_age: Duration,
    pub warn_depth: i64,
    pub crit_depth: i64,
}

const OK: u8 = 0;
const WARNING: u8 = 1;
const CRITICAL: u8 = 2;
const UNKNOWN: u8 = 3;

pub async fn run(config: &Config, thresholds: Thresholds) -> u8 {
    let stats = async {
        StoreQueue::open(&config.spool, OpenMode::Read)
            .await?
            .stats()
            .await
    }
    .await;
    let (code, line) = match stats {
        Ok(stats) => evaluate(&stats, &thresholds, now_ms()),
        Err(error) => (
            UNKNOWN,
            format!("SMARTHOST UNKNOWN - cannot read the queue: {error}"),
        ),
    };
    println!("{line}");
    code
}

fn evaluate(stats: &QueueStats, t: &Thresholds, now: i64) -> (u8, String) {
    let depth = stats.pending_messages;
    let oldest_ms = stats
        .oldest_pending_ms
        .map(|ms| (now - ms).max(0))
        .unwrap_or(0);
    let oldest_secs = oldest_ms / 1000;
    let age_over = |limit: Duration| oldest_ms > limit.as_millis() as i64;
    let code = if depth >= t.crit_depth || age_over(t.crit_age) {
        CRITICAL
    } else if depth >= t.warn_depth || age_over(t.warn_age) {
        WARNING
    } else {
        OK
    };
    let word = ["OK", "WARNING", "CRITICAL"][code as usize];
    let held = stats.states.get("held").map(|s| s.messages).unwrap_or(0);
    let line = format!(
        "SMARTHOST {word} - {depth} message(s) queued, {held} held, oldest {oldest_secs}s | depth={depth};{};{};0 oldest_age={oldest_secs}s;{};{};0 held={held};;;0",
        t.warn_depth,
        t.crit_depth,
        t.warn_age.as_secs(),
        t.crit_age.as_secs(),
    );
    (code, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            warn_age: Duration::from_secs(1800),
            crit_age: Duration::from_secs(7200),
            warn_depth: 100,
            crit_depth: 1000,
        }
    }

    fn queue(depth: i64, oldest_secs: i64, now: i64) -> QueueStats {
        QueueStats {
            pending_messages: depth,
            oldest_pending_ms: (depth > 0).then_some(now - oldest_secs * 1000),
            ..QueueStats::default()
        }
    }

    #[test]
    fn each_threshold_sets_its_exit_code() {
        let now = 10_000_000_000;
        let cases = [
            (0, 0, OK),
            (99, 60, OK),
            (100, 60, WARNING),
            (5, 1801, WARNING),
            (1000, 60, CRITICAL),
            (5, 7201, CRITICAL),
        ];
        for (depth, oldest, expected) in cases {
            let (code, line) = evaluate(&queue(depth, oldest, now), &thresholds(), now);
            assert_eq!(code, expected, "{depth} {oldest}: {line}");
            assert!(
                line.contains(&format!("depth={depth};100;1000;0")),
                "{line}"
            );
        }
    }
}
