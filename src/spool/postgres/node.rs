//! Nodes: every daemon on the shared store names itself (host name plus a random suffix, so
//! that a restarted daemon, or two on one host, are told apart), beats its heart in `nodes`
//! while it runs, and says when it stops. `smarthost queue nodes` reads them back with what
//! each has in flight.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::{read_error, write_error};
use crate::spool::{SpoolError, now_ms};

/// How often a node beats its heart.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A node that missed this many beats is shown as silent (dead, paused or cut off).
const MISSED_BEATS: i64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId(String);

impl NodeId {
    pub fn generate() -> NodeId {
        let host = host_name();
        let suffix: u32 = rand::random();
        NodeId(format!("{host}-{:06x}", suffix & 0xff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A node as `queue nodes` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeSummary {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    /// "live", "stopped", or "silent" (no heartbeat lately, not stopped: dead or cut off).
    pub status: String,
    /// Recipients it holds under an unexpired lease.
    pub in_flight: i64,
    /// Recipients other nodes took over after its lease on them ran out.
    pub leases_reclaimed: i64,
}

pub(in crate::spool) async fn register(pool: &PgPool, node: &NodeId) -> Result<(), SpoolError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO nodes (id, host, pid, version, started_at, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(node.as_str())
    .bind(host_name())
    .bind(std::process::id() as i64)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(now)
    .execute(pool)
    .await
    .map_err(write_error)?;
    Ok(())
}

/// A heartbeat; the last one says the node stopped.
pub(super) async fn beat(pool: &PgPool, node: &NodeId, stopping: bool) -> Result<(), SpoolError> {
    sqlx::query(
        "UPDATE nodes SET heartbeat_at = $2, stopped_at = CASE WHEN $3 THEN $2 END WHERE id = $1",
    )
    .bind(node.as_str())
    .bind(now_ms())
    .bind(stopping)
    .execute(pool)
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Every node heard from since `since_ms`, most recent start first.
pub(super) async fn list(pool: &PgPool, since_ms: i64) -> Result<Vec<NodeSummary>, SpoolError> {
    let now = now_ms();
    sqlx::query_as(
        "SELECT n.id, n.host, n.pid, n.version, n.started_at AS started_at_ms,
                n.heartbeat_at AS heartbeat_at_ms, n.stopped_at AS stopped_at_ms,
                CASE WHEN n.stopped_at IS NOT NULL THEN 'stopped'
                     WHEN n.heartbeat_at >= $1 - $3 THEN 'live'
                     ELSE 'silent' END AS status,
                (SELECT COUNT(*) FROM recipients r
                 WHERE r.lease_owner = n.id AND r.lease_until >= $1) AS in_flight,
                n.leases_reclaimed
         FROM nodes n WHERE n.heartbeat_at >= $2 ORDER BY n.started_at DESC, n.id",
    )
    .bind(now)
    .bind(since_ms)
    .bind(MISSED_BEATS * HEARTBEAT_EVERY.as_millis() as i64)
    .fetch_all(pool)
    .await
    .map_err(read_error)
}
