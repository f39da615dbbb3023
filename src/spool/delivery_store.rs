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

use super::open::{OpenMode, open_connection};
use super::writer::{Spool, insert_message};
use super::{BodyType, NewMessage, SpoolError};
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
    fn as_str(self) -> &'static str {
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

fn read_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}

fn write_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Write(e.to_string())
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
    /// atomically: a bounce is queued exactly when its recipients are marked bounced. Outcomes
    /// from parallel deliveries share a transaction (group commit), as enqueues do.
    pub async fn record(
        &self,
        message_id: &str,
        records: &[AttemptRecord],
        bounce: Option<&NewMessage>,
        now_ms: i64,
    ) -> Result<(), SpoolError> {
        let outcome = Outcome {
            message_id: message_id.to_string(),
            records: records.to_vec(),
            bounce: bounce.cloned(),
            now_ms,
        };
        self.spool.record(outcome).await
    }

    /// Adds to a counter outside an attempt (for example a configuration error).
    pub async fn count(&self, name: &str, by: i64) -> Result<(), SpoolError> {
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        bump(&mut tx, name, by).await?;
        tx.commit().await.map_err(write_error)
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
    message_id: String,
    records: Vec<AttemptRecord>,
    bounce: Option<NewMessage>,
    now_ms: i64,
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
    let mut claimed = Vec::with_capacity(by_message.len());
    for (id, mut recipients) in by_message {
        recipients.sort_by_key(|r| r.id);
        let row = sqlx::query(
            "SELECT m.sender, m.received_at, m.body_type, m.smtputf8, b.data
             FROM messages m JOIN bodies b ON b.message_id = m.id WHERE m.id = ?1",
        )
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
        let body_type: String = row.get(2);
        claimed.push(ClaimedMessage {
            id,
            sender: row.get(0),
            received_at_ms: row.get(1),
            body_type: if body_type == "8BITMIME" {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8: row.get(3),
            body: Arc::new(row.get(4)),
            recipients,
        });
    }
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

pub(super) async fn write_outcome(
    conn: &mut SqliteConnection,
    outcome: &Outcome,
) -> Result<(), SpoolError> {
    let Outcome {
        message_id,
        records,
        bounce,
        now_ms,
    } = outcome;
    let (message_id, now_ms) = (message_id.as_str(), *now_ms);
    for record in records {
        let (next_attempt, held_by) = match &record.state {
            RecipientState::Deferred { next_attempt_at_ms } => (Some(*next_attempt_at_ms), None),
            RecipientState::Held(by) => (None, Some(by.as_str())),
            _ => (None, None),
        };
        // An operator's hold placed while the attempt ran survives a deferral.
        let updated = sqlx::query(
            "UPDATE recipients SET
                     state = CASE WHEN state = 'held' AND held_by = 'operator' AND ?1 = 'deferred'
                                  THEN 'held' ELSE ?1 END,
                     held_by = CASE WHEN state = 'held' AND held_by = 'operator' AND ?1 = 'deferred'
                                    THEN 'operator' ELSE ?4 END,
                     attempts = attempts + 1, last_reply = ?2,
                     next_attempt_at = COALESCE(?3, next_attempt_at),
                     lease_until = NULL, updated_at = ?5
                 WHERE id = ?6",
        )
        .bind(record.state.name())
        .bind(&record.reply)
        .bind(next_attempt)
        .bind(held_by)
        .bind(now_ms)
        .bind(record.recipient_id)
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
        if updated.rows_affected() == 0 {
            // Deleted by the operator while in flight: nothing to record, nothing to revive.
            continue;
        }
        sqlx::query(
            "INSERT INTO attempts (recipient_id, started_at, duration_ms, upstream, reply, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(record.recipient_id)
        .bind(record.started_at_ms)
        .bind(record.duration_ms)
        .bind(&record.upstream)
        .bind(&record.reply)
        .bind(record.state.name())
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
        bump(conn, record.state.name(), 1).await?;
        if record.state == RecipientState::Held(HeldBy::Bounce) {
            bump(conn, "bounce_failures", 1).await?;
        }
    }
    if let Some(bounce) = bounce {
        insert_message(conn, bounce).await.map_err(write_error)?;
        bump(conn, "bounces_sent", 1).await?;
    }
    // A message with nothing left to do keeps its envelope, headers and history (for
    // `queue show`) until the retention passes, but not its body.
    let finished = sqlx::query(
        "UPDATE messages SET finished_at = ?2 WHERE id = ?1 AND finished_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM recipients
                               WHERE message_id = ?1 AND state IN ('queued', 'deferred', 'held'))",
    )
    .bind(message_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(write_error)?;
    if finished.rows_affected() > 0 {
        sqlx::query(
            "UPDATE bodies SET data = substr(data, 1, instr(data, X'0D0A0D0A') + 1)
                 WHERE message_id = ?1 AND instr(data, X'0D0A0D0A') > 0",
        )
        .bind(message_id)
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    }
    Ok(())
}

async fn bump(conn: &mut SqliteConnection, name: &str, by: i64) -> Result<(), SpoolError> {
    sqlx::query("UPDATE counters SET value = value + ?2 WHERE name = ?1")
        .bind(name)
        .bind(by)
        .execute(&mut *conn)
        .await
        .map_err(write_error)?;
    Ok(())
}
