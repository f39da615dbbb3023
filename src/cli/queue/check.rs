//! `queue check`: a monitoring plugin in the Nagios/Icinga convention — one line with
//! perfdata, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the spool cannot be read). The
//! daemon's last preflight counts too: a FAIL is CRITICAL, a WARN (or a run that stopped
//! happening) WARNING.

use std::time::Duration;

use crate::config::Config;
use crate::preflight::{LastRun, Status};
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
        Ok(stats) => {
            let (queue_code, queue_line) = evaluate(&stats, &thresholds, now_ms());
            let preflight = config.preflight.interval.and_then(|_| {
                let path = LastRun::path(config);
                path.exists().then(|| LastRun::read(&path))
            });
            match preflight {
                Some(last) => with_preflight(queue_code, &queue_line, last, now_ms() / 1000),
                None => (queue_code, queue_line),
            }
        }
        Err(error) => (
            UNKNOWN,
            format!("SMARTHOST UNKNOWN - cannot read the queue: {error}"),
        ),
    };
    println!("{line}");
    code
}

/// A run is stale when it is this many intervals old: the daemon stopped running them.
const STALE_INTERVALS: i64 = 3;

/// The queue's verdict, made worse by the last preflight's failures and warnings.
fn with_preflight(
    queue_code: u8,
    queue_line: &str,
    last: Result<LastRun, String>,
    now_unix: i64,
) -> (u8, String) {
    let (code, note) = match last {
        Err(error) => (WARNING, format!("preflight result unreadable: {error}")),
        Ok(last) => {
            let age = now_unix - last.ran_at_unix;
            let failing: Vec<_> = last
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .collect();
            let warning = last
                .checks
                .iter()
                .filter(|c| c.status == Status::Warn)
                .count();
            if let Some(first) = failing.first() {
                (
                    CRITICAL,
                    format!(
                        "preflight: {} FAIL (first: {}: {})",
                        failing.len(),
                        first.check,
                        first.found
                    ),
                )
            } else if age > STALE_INTERVALS * last.interval_secs.max(1) as i64 {
                (WARNING, format!("preflight last ran {age}s ago"))
            } else if warning > 0 {
                (WARNING, format!("preflight: {warning} WARN"))
            } else {
                (OK, "preflight passed".into())
            }
        }
    };
    let code = code.max(queue_code);
    let word = ["OK", "WARNING", "CRITICAL"][code as usize];
    let (summary, perfdata) = queue_line.split_once(" | ").unwrap_or((queue_line, ""));
    let summary = summary
        .split_once(" - ")
        .map(|(_, rest)| rest)
        .unwrap_or(summary);
    (
        code,
        format!("SMARTHOST {word} - {summary}; {note} | {perfdata}"),
    )
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
    fn preflight_failures_and_warnings_raise_the_code() {
        use crate::preflight::Check;
        let run = |checks: Vec<Check>, ran_at_unix| {
            Ok(LastRun {
                ran_at_unix,
                interval_secs: 3600,
                checks,
            })
        };
        let queue_line =
            "SMARTHOST OK - 0 message(s) queued, 0 held, oldest 0s | depth=0;100;1000;0";
        let now = 1_000_000;
        let (code, line) = with_preflight(
            OK,
            queue_line,
            run(vec![Check::pass("helo", "ok")], now),
            now,
        );
        assert_eq!(code, OK, "{line}");
        assert!(
            line.ends_with("| depth=0;100;1000;0"),
            "perfdata kept: {line}"
        );
        let warn = vec![Check::warn("dmarc d", "no DMARC record", "add one")];
        assert_eq!(
            with_preflight(OK, queue_line, run(warn, now), now).0,
            WARNING
        );
        let fail = vec![Check::fail(
            "spf d authorizes u",
            "include:x is missing",
            "add it",
        )];
        let (code, line) = with_preflight(WARNING, queue_line, run(fail, now), now);
        assert_eq!(code, CRITICAL);
        assert!(
            line.starts_with("SMARTHOST CRITICAL - 0 message(s)"),
            "{line}"
        );
        assert!(
            line.contains("spf d authorizes u: include:x is missing"),
            "{line}"
        );
        let stale = with_preflight(OK, queue_line, run(Vec::new(), now - 4 * 3600), now);
        assert_eq!(stale.0, WARNING, "{}", stale.1);
        assert_eq!(
            with_preflight(CRITICAL, queue_line, run(Vec::new(), now), now).0,
            CRITICAL
        );
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
