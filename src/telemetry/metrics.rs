//! The numbers a monitoring system scrapes: what came in (sessions, accepted, refused by
//! reason), what went out (delivered, deferred, bounced, held, by upstream and reply class),
//! how long it took, and the queue itself (depth by state, bytes, oldest message, upstreams up).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::spool::QueueStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
    pub upstream: String,
    /// 2xx, 4xx, 5xx, or none when no upstream answered.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

/// The commit this binary was built from: `SMARTHOST_COMMIT` at build time (contrib/package.sh
/// sets it), else "unknown".
pub const COMMIT: &str = match option_env!("SMARTHOST_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PreflightLabels {
    /// The check's kind, e.g. `spf authorizes email-smtp.eu-west-1.amazonaws.com:587`.
    pub check: String,
    /// The sender domain it is about; empty for checks of the relay itself (helo, rdns).
    pub domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

/// Every metric, registered once; handles are cheap to clone and lock-free to update.
pub struct Metrics {
    registry: Registry,
    pub sessions: Counter,
    pub accepted: Counter,
    pub refused: Family<ReasonLabel, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// From the end of DATA (or of sendmail input) to the commit: what a client waits for 250.
    pub acceptance_seconds: Histogram,
    /// From arrival to delivery or bounce.
    pub queue_seconds: Histogram,
    /// Each spool commit that added mail: its transaction, disk sync included, and how many
    /// messages it carried (acceptance latency minus this is the wait for the writer).
    spool_commit_seconds: Histogram,
    spool_commit_messages: Histogram,
    pub upstream_up: Family<UpstreamLabel, Gauge>,
    /// Transactions whose final reply never came: the message may have been delivered.
    pub outcome_unknown: Family<UpstreamLabel, Counter>,
    /// 1, labelled with this daemon's node identity on a shared spool: the counters above are
    /// this node's, the queue gauges the whole fleet's.
    node: Family<NodeLabel, Gauge>,
    /// The daemon's last preflight: 0 pass, 1 warn, 2 fail per check, and when it ran.
    preflight: Family<PreflightLabels, Gauge>,
    preflight_last_run: Gauge,
    queue: QueueGauges,
}

/// Gauges read from the spool when scraped.
#[derive(Clone, Default)]
pub struct QueueGauges {
    depth: Family<StateLabel, Gauge>,
    bytes: Gauge,
    oldest_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("smarthost");
        let sessions = Counter::default();
        let accepted = Counter::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        // 1 ms to about 16 s.
        let acceptance_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        // 1 s to about 6 days.
        let queue_seconds = Histogram::new(exponential_buckets(1.0, 3.0, 14));
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        // 100 µs to about 1.6 s; 1 to 4096 messages.
        let spool_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        let spool_commit_messages = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "spool_commit_seconds",
            "Spool transactions that added mail: time to commit, disk sync included",
            spool_commit_seconds.clone(),
        );
        registry.register(
            "spool_commit_messages",
            "Spool transactions that added mail: messages each carried",
            spool_commit_messages.clone(),
        );
        let outcome_unknown = Family::<UpstreamLabel, Counter>::default();
        let queue = QueueGauges::default();
        let node = Family::<NodeLabel, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: COMMIT.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version and commit of this binary",
            build,
        );
        let preflight = Family::<PreflightLabels, Gauge>::default();
        let preflight_last_run = Gauge::default();
        registry.register(
            "preflight_check",
            "The daemon's last preflight result per check: 0 pass, 1 warn, 2 fail",
            preflight.clone(),
        );
        registry.register(
            "preflight_last_run_timestamp_seconds",
            "When the daemon last ran its preflight checks (Unix time)",
            preflight_last_run.clone(),
        );
        registry.register(
            "node_info",
            "This daemon's node identity on a shared spool (the queue gauges are the fleet's)",
            node.clone(),
        );
        registry.register("smtp_sessions", "SMTP sessions started", sessions.clone());
        registry.register(
            "messages_accepted",
            "Messages committed to the spool",
            accepted.clone(),
        );
        registry.register(
            "messages_refused",
            "Commands or messages refused, by reason",
            refused.clone(),
        );
        registry.register(
            "recipient_deliveries",
            "Delivery outcomes per recipient, by upstream and reply class",
            deliveries.clone(),
        );
        registry.register(
            "acceptance_seconds",
            "Time from end of data to the durable commit",
            acceptance_seconds.clone(),
        );
        registry.register(
            "queue_seconds",
            "Time from arrival to delivery or bounce",
            queue_seconds.clone(),
        );
        registry.register(
            "upstream_up",
            "1 when the upstream is usable, 0 while it cools down after failing",
            upstream_up.clone(),
        );
        registry.register(
            "delivery_outcome_unknown",
            "Transactions sent whole whose final reply never came (they may have been delivered)",
            outcome_unknown.clone(),
        );
        registry.register(
            "queue_recipients",
            "Recipients in the spool, by state",
            queue.depth.clone(),
        );
        registry.register(
            "queue_pending_bytes",
            "Bytes of messages with recipients still to deliver",
            queue.bytes.clone(),
        );
        registry.register(
            "queue_oldest_seconds",
            "Age of the oldest message still to deliver",
            queue.oldest_seconds.clone(),
        );
        Metrics {
            registry,
            sessions,
            accepted,
            refused,
            deliveries,
            acceptance_seconds,
            queue_seconds,
            spool_commit_seconds,
            spool_commit_messages,
            upstream_up,
            outcome_unknown,
            node,
            preflight,
            preflight_last_run,
            queue,
        }
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn delivery(&self, outcome: &'static str, upstream: Option<&str>, class: &'static str) {
        let labels = OutcomeLabels {
            outcome,
            upstream: upstream.unwrap_or("none").to_string(),
            class,
        };
        self.deliveries.get_or_create(&labels).inc();
    }

    pub fn outcome_unknown(&self, upstream: &str) {
        self.outcome_unknown
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .inc();
    }

    /// Names this daemon's node on a shared spool.
    pub fn set_node(&self, node: &str) {
        self.node
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(1);
    }

    /// One preflight check's status (0 pass, 1 warn, 2 fail).
    pub fn set_preflight(&self, check: &str, domain: &str, status: i64) {
        self.preflight
            .get_or_create(&PreflightLabels {
                check: check.to_string(),
                domain: domain.to_string(),
            })
            .set(status);
    }

    pub fn set_preflight_run(&self, unix_seconds: i64) {
        self.preflight_last_run.set(unix_seconds);
    }

    pub fn set_upstream_up(&self, upstream: &str, up: bool) {
        self.upstream_up
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .set(i64::from(up));
    }

    /// Sets the queue gauges from a fresh look at the spool.
    pub fn set_queue(&self, stats: &QueueStats, now_ms: i64) {
        for state in crate::spool::ALL_STATES {
            let count = stats.states.get(*state).map(|s| s.recipients).unwrap_or(0);
            self.queue
                .depth
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(count);
        }
        self.queue.bytes.set(stats.pending_bytes);
        let oldest = stats
            .oldest_pending_ms
            .map(|ms| (now_ms - ms).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.queue.oldest_seconds.set(oldest);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl crate::spool::CommitObserver for Metrics {
    fn committed(&self, messages: usize, took: std::time::Duration) {
        self.spool_commit_seconds.observe(took.as_secs_f64());
        self.spool_commit_messages.observe(messages as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `smarthost_…` name in `text`.
    fn names(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("smarthost_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            found.push(&tail[..end]);
            rest = &tail[end..];
        }
        found
    }

    /// The alert rules and the dashboard (contrib/monitoring) name only metrics that exist.
    #[test]
    fn monitoring_files_name_only_exported_metrics() {
        let metrics = Metrics::new();
        metrics.refuse("relay");
        metrics.delivery("delivered", Some("u"), "2xx");
        metrics.outcome_unknown("u");
        metrics.set_upstream_up("u", true);
        metrics.set_node("n");
        metrics.set_preflight("spf", "d", 0);
        metrics.set_queue(&QueueStats::default(), 0);
        metrics.acceptance_seconds.observe(0.1);
        let exposition = metrics.encode();
        let exported = names(&exposition);
        for (file, text) in [
            (
                "smarthost-alerts.yml",
                include_str!("../../contrib/monitoring/smarthost-alerts.yml"),
            ),
            (
                "smarthost-dashboard.json",
                include_str!("../../contrib/monitoring/smarthost-dashboard.json"),
            ),
        ] {
            let used = names(text);
            assert!(used.len() >= 6, "{file}: {used:?}");
            for name in used {
                assert!(
                    exported.contains(&name),
                    "{file} names {name}, which /metrics never exports"
                );
            }
        }
    }

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.sessions.inc();
        metrics.refuse("relay");
        metrics.delivery("delivered", Some("127.0.0.1:587"), "2xx");
        let text = metrics.encode();
        for expected in [
            "smarthost_smtp_sessions_total 1",
            "smarthost_messages_refused_total{reason=\"relay\"} 1",
            "smarthost_recipient_deliveries_total{outcome=\"delivered\",upstream=\"127.0.0.1:587\",class=\"2xx\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
