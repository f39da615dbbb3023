//! The delivery side of the spool: claim due recipients under a lease, record each attempt's
//! outcome per recipient (with the bounce it produced, in the same transaction), release what
//! our own configuration held, and forget finished messages after their retention.
//!
//! A claim is a lease, not a removal: if the daemon dies mid-delivery the lease simply expires
//! (and is cleared at the next start), so nothing is lost or locked forever.

use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

use super::batch::Counters;
use super::jobs::{ClaimRequest, Outcome};
use super::open::{OpenMode, open_connection};
use super::writer::SpoolWriter;
use super::{read_error, write_error};
use crate::config::SpoolConfig;
use crate::spool::{AttemptRecord, ClaimedMessage, NewMessage, SpoolError};

/// Delivery's own connection to the spool, beside the enqueue writer; SQLite serialises the two
/// (WAL, busy timeout).
#[derive(Clone)]
pub struct DeliveryStore {
    /// For reads and rare writes (lease clearing, releases, purges).
    pool: SqlitePool,
    /// Claims and outcomes go through the spool's one writer, which commits them together
    /// with new messages: no two writers ever wait on each other's lock.
    spool: SpoolWriter,
}

impl DeliveryStore {
    pub async fn open(
        config: &SpoolConfig,
        spool: SpoolWriter,
    ) -> Result<DeliveryStore, SpoolError> {
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
    /// atomically: a bounce is queued exactly when its recipients are marked bounced. What
    /// delivery changed in the message on the way out (`changes`) joins its rewrite notes,
    /// once. Returns
    /// once the spool writer has them; it commits them with the next batch (group commit with
    /// parallel deliveries and new mail), so the worker goes on without waiting for the disk.
    pub async fn record(
        &self,
        message_id: &str,
        records: Vec<AttemptRecord>,
        bounce: Option<NewMessage>,
        changes: Vec<String>,
        now_ms: i64,
    ) -> Result<(), SpoolError> {
        let outcome = Outcome {
            message_id: message_id.to_string(),
            records,
            bounce,
            notes: (!changes.is_empty()).then(|| changes.join("\n")),
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
