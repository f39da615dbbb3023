//! Delivery's reads and rare writes on SQLite (lease clearing, releases, purges), on its own
//! connection beside the spool writer; SQLite serialises the two (WAL, busy timeout).
//!
//! A claim is a lease, not a removal: if the daemon dies mid-delivery the lease simply expires
//! (and is cleared at the next start), so nothing is lost or locked forever.

use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

use super::batch::write_counters;
use super::open::{OpenMode, open_connection};
use super::{read_error, write_error};
use crate::config::SpoolConfig;
use crate::spool::SpoolError;
use crate::spool::batch::Counters;

#[derive(Clone)]
pub(in crate::spool) struct SqliteDelivery {
    pool: SqlitePool,
}

impl SqliteDelivery {
    pub async fn open(config: &SpoolConfig) -> Result<SqliteDelivery, SpoolError> {
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
        Ok(SqliteDelivery { pool })
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

    /// When the earliest recipient not claimable now becomes claimable (unix ms), if any: its
    /// next attempt, or the end of the lease it is under.
    pub async fn next_due(&self) -> Result<Option<i64>, SpoolError> {
        sqlx::query_scalar(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until + 1, 0))) FROM recipients
             WHERE state IN ('queued', 'deferred')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)
    }

    /// Adds to a counter outside an attempt (for example a configuration error).
    pub async fn count(&self, counters: &Counters) -> Result<(), SpoolError> {
        let mut conn = self.pool.acquire().await.map_err(write_error)?;
        write_counters(&mut conn, counters)
            .await
            .map_err(write_error)
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
