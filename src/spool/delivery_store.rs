//! The delivery side of the spool: claim due recipients under a lease, record each attempt's
//! outcome per recipient (with the bounce it produced, in the same transaction), release what
//! our own configuration held, and forget finished messages after their retention.
//!
//! A claim is a lease, not a removal: if the daemon dies mid-delivery the lease simply expires
//! (and is cleared at the next start), so nothing is lost or locked forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

use super::batch::Counters;
use super::open::{OpenMode, open_connection};
use super::writer::Spool;
use super::{BodyType, NewMessage, SpoolError};
use super::{read_error, write_error};
use crate::config::SpoolConfig;

/// Who held a recipient. Only `Config` holds are released by a restart or reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// Our setup is wrong (AUTH refused, TLS verification failed, identity not verified).
    Config,
    /// A bounce that could not be delivered: kept for inspection, never bounced again.
    Bounce,
}

impl HeldBy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            HeldBy::Config => "config",
            HeldBy::Bounce => "bounce",
        }
    }
}

/// Where one attempt left a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientState {
    Delivered,
    Deferred { next_attempt_at_ms: i64 },
    Bounced,
    Held(HeldBy),
}

impl RecipientState {
    pub fn name(&self) -> &'static str {
        match self {
            RecipientState::Delivered => "delivered",
            RecipientState::Deferred { .. } => "deferred",
            RecipientState::Bounced => "bounced",
            RecipientState::Held(_) => "held",
        }
    }
}

/// A message with the recipients this delivery round claimed.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: String,
    /// '' is the null sender (a bounce).
    pub sender: String,
    pub received_at_ms: i64,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub body: Arc<Vec<u8>>,
    pub recipients: Vec<ClaimedRecipient>,
}

#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: i64,
    pub address: String,
    pub attempts: i64,
}

/// The outcome of one attempt for one recipient.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub recipient_id: i64,
    pub state: RecipientState,
    /// The upstream's full reply, or our own description of what went wrong.
    pub reply: String,
    pub upstream: Option<String>,
    pub started_at_ms: i64,
    pub duration_ms: i64,
}

/// Delivery's own connection to the spool, beside the enqueue writer; SQLite serialises the two
/// (WAL, busy timeout).
#[derive(Clone)]
pub struct DeliveryStore {
    /// For reads and rare writes (lease clearing, releases, purges).
    pool: SqlitePool,
    /// Claims and outcomes go through the spool's one writer, which commits them together
    /// with new messages: no two writers ever wait on each other's lock.
    spool: Spool,
}

impl DeliveryStore {
    pub async fn open(config: &SpoolConfig, spool: Spool) -> Result<DeliveryStore, SpoolError> {
        // Migrate (and create) through the ordinary path first; the pool then reuses the file.
        let conn = open_connection(&config.path, config.busy_timeout, OpenMode::Write).await?;
        super::open::close_quietly(conn).await;
        let options =
            super::open::connect_options(&config.path, config.busy_timeout, OpenMode::Write);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| SpoolError::Open {
                path: config.path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(DeliveryStore { pool, spool })
    }

    /// At start nobody else is delivering from this spool: every lease is stale.
    pub async fn clear_leases(&self) -> Result<u64, SpoolError> {
        let done =
            sqlx::query("UPDATE recipients SET lease_until = NULL WHERE lease_until IS NOT NULL")
                .execute(&self.pool)
                .await
                .map_err(write_error)?;
        Ok(done.rows_affected())
    }

    /// Recipients held because our configuration was wrong become due again (start, SIGHUP).
    pub async fn release_config_holds(&self, now_ms: i64) -> Result<u64, SpoolError> {
        let done = sqlx::query(
            "UPDATE recipients SET state = 'queued', held_by = NULL, next_attempt_at = ?1, updated_at = ?1
             WHERE state = 'held' AND held_by = 'config'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(done.rows_affected())
    }

    /// Claims up to `limit` due recipients (oldest due first) for `lease`, grouped by message
    /// with each message's envelope and body.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        self.spool
            .claim(ClaimRequest {
                now_ms,
                lease,
                limit,
            })
            .await
    }

    /// Has the spool writer give new messages to `workers` right after their commit, leased
    /// for `lease`, whenever the queue has room; the rest are claimed as usual.
    pub fn hand_new_mail_to(
        &self,
        workers: &tokio::sync::mpsc::Sender<ClaimedMessage>,
        lease: Duration,
    ) {
        self.spool.hand_off(workers, lease);
    }

    /// When the earliest not-yet-due recipient becomes due (unix ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>, SpoolError> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM recipients WHERE state IN ('queued', 'deferred')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)
    }

    /// Records one attempt's outcomes for a message's recipients, and the bounce they caused,
    /// atomically: a bounce is queued exactly when its recipients are marked bounced. Returns
    /// once the spool writer has them; it commits them with the next batch (group commit with
    /// parallel deliveries and new mail), so the worker goes on without waiting for the disk.
    pub async fn record(
        &self,
        message_id: &str,
        records: Vec<AttemptRecord>,
        bounce: Option<NewMessage>,
        now_ms: i64,
    ) -> Result<(), SpoolError> {
        let outcome = Outcome {
            message_id: message_id.to_string(),
            records,
            bounce,
            now_ms,
        };
        self.spool.record(outcome).await
    }

    /// Adds to a counter outside an attempt (for example a configuration error).
    pub async fn count(&self, name: &'static str, by: i64) -> Result<(), SpoolError> {
        let mut counters = Counters::default();
        counters.add(name, by);
        let mut conn = self.pool.acquire().await.map_err(write_error)?;
        counters.write(&mut conn).await.map_err(write_error)
    }

    /// The queue at a glance, for the metrics endpoint.
    pub async fn stats(&self) -> Result<super::QueueStats, SpoolError> {
        let mut conn = self.pool.acquire().await.map_err(read_error)?;
        super::stats(&mut conn).await
    }

    /// Deletes messages finished before `before_ms` (their recipients and attempts follow).
    pub async fn purge_finished(&self, before_ms: i64) -> Result<u64, SpoolError> {
        let done =
            sqlx::query("DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?1")
                .bind(before_ms)
                .execute(&self.pool)
                .await
                .map_err(write_error)?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One attempt's outcomes, waiting for the writer.
pub(super) struct Outcome {
    pub message_id: String,
    pub records: Vec<AttemptRecord>,
    /// The DSN this attempt produced, inserted in the same transaction.
    pub bounce: Option<NewMessage>,
    pub now_ms: i64,
}

/// A claim for due recipients, run by the writer.
pub(super) struct ClaimRequest {
    pub now_ms: i64,
    pub lease: Duration,
    pub limit: usize,
}

/// Claims up to `limit` due recipients (oldest due first) for `lease`, grouped by message
/// with each message's envelope and body.
pub(super) async fn claim_in(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedMessage>, sqlx::Error> {
    let ClaimRequest {
        now_ms,
        lease,
        limit,
    } = *request;
    let lease_until = now_ms + lease.as_millis() as i64;
    let rows = sqlx::query(
        "UPDATE recipients SET lease_until = ?1, updated_at = ?2
         WHERE id IN (
             SELECT id FROM recipients
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until < ?2)
             ORDER BY next_attempt_at, id LIMIT ?3)
         RETURNING id, message_id, address, attempts",
    )
    .bind(lease_until)
    .bind(now_ms)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_message: HashMap<String, Vec<ClaimedRecipient>> = HashMap::new();
    for row in rows {
        by_message
            .entry(row.get::<String, _>(1))
            .or_default()
            .push(ClaimedRecipient {
                id: row.get(0),
                address: row.get(2),
                attempts: row.get(3),
            });
    }
    if by_message.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&by_message.keys().collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let rows = sqlx::query(
        "SELECT m.id, m.sender, m.received_at, m.body_type, m.smtputf8, b.data
         FROM messages m JOIN bodies b ON b.message_id = m.id
         WHERE m.id IN (SELECT value FROM json_each(?1)) ORDER BY m.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let Some(mut recipients) = by_message.remove(&id) else {
            continue;
        };
        recipients.sort_by_key(|r| r.id);
        let body_type: String = row.get(3);
        claimed.push(ClaimedMessage {
            id,
            sender: row.get(1),
            received_at_ms: row.get(2),
            body_type: BodyType::from_stored(&body_type),
            smtputf8: row.get(4),
            body: Arc::new(row.get(5)),
            recipients,
        });
    }
    Ok(claimed)
}
