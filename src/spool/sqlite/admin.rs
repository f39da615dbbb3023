//! `QueueAdmin` for the SQLite store: one connection (read-only for commands that only look),
//! WAL readers never block delivery.

use std::path::PathBuf;

use sqlx::SqliteConnection;
use tokio::sync::Mutex;

use super::open::{OpenMode, open_connection};
use super::{compact, maildrop, queries, reserve, steer};
use crate::config::SpoolConfig;
use crate::spool::{
    Filter, MessageDetails, MessageSummary, NewMessage, QueueAdmin, QueueStats, Selection,
    SpoolError,
};

pub struct SqliteQueue {
    conn: Mutex<SqliteConnection>,
    path: PathBuf,
}

impl SqliteQueue {
    /// Opens an existing spool (never created here); `mode` says whether rows may change.
    pub async fn open(config: &SpoolConfig, mode: OpenMode) -> Result<SqliteQueue, SpoolError> {
        if mode == OpenMode::Existing {
            reserve::release_if_full(&config.path);
        }
        let conn = open_connection(&config.path, config.busy_timeout, mode).await?;
        Ok(SqliteQueue {
            conn: Mutex::new(conn),
            path: config.path.clone(),
        })
    }
}

impl QueueAdmin for SqliteQueue {
    async fn list(&self, filter: &Filter) -> Result<Vec<MessageSummary>, SpoolError> {
        queries::list(&mut *self.conn.lock().await, filter).await
    }

    async fn details(&self, id: &str) -> Result<Option<MessageDetails>, SpoolError> {
        queries::details(&mut *self.conn.lock().await, id).await
    }

    async fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, SpoolError> {
        queries::ids_with_prefix(&mut *self.conn.lock().await, prefix).await
    }

    async fn stats(&self) -> Result<QueueStats, SpoolError> {
        queries::stats(&mut *self.conn.lock().await).await
    }

    async fn retry(&self, selection: &Selection) -> Result<u64, SpoolError> {
        steer::retry(&mut *self.conn.lock().await, selection).await
    }

    async fn hold(&self, selection: &Selection) -> Result<u64, SpoolError> {
        steer::hold(&mut *self.conn.lock().await, selection).await
    }

    async fn release(&self, selection: &Selection) -> Result<u64, SpoolError> {
        steer::release(&mut *self.conn.lock().await, selection).await
    }

    async fn reachable(&self) -> Result<(), SpoolError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn.lock().await)
            .await
            .map_err(|e| SpoolError::Read(e.to_string()))?;
        Ok(())
    }

    /// Deletes, even on a full disk: the spool's reserve is given up to make room for the
    /// delete's own writes, the freed pages go back to the file system, and the reserve is
    /// taken again from them.
    async fn delete(&self, selection: &Selection) -> Result<Vec<String>, SpoolError> {
        let mut conn = self.conn.lock().await;
        let deleted = match steer::delete(&mut conn, selection).await {
            Err(SpoolError::NoSpace(_)) if reserve::release(&self.path) => {
                steer::delete(&mut conn, selection).await?
            }
            other => other?,
        };
        compact::give_freed_pages_back(&mut conn).await;
        reserve::keep(&self.path);
        Ok(deleted)
    }
}

/// The maildrop, for the mover (`spool::maildrop`). The mover runs on a spawned task, and
/// rustc cannot prove the opening's future `Send` (the migrator's nested async bodies,
/// rust-lang/rust#110338): the daemon opens the maildrop before spawning.
impl SqliteQueue {
    /// Opens the spool file as this node's maildrop (creating and migrating it when missing,
    /// so that `sendmail` finds it).
    pub(in crate::spool) async fn open_maildrop(
        config: &SpoolConfig,
    ) -> Result<SqliteQueue, SpoolError> {
        let conn = open_connection(&config.path, config.busy_timeout, OpenMode::Write).await?;
        Ok(SqliteQueue {
            conn: Mutex::new(conn),
            path: config.path.clone(),
        })
    }

    /// Forgets messages moved into the shared store (their pages are reused by the next
    /// `sendmail`; nothing to compact).
    pub(in crate::spool) async fn forget(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<String>, SpoolError> {
        steer::delete(&mut *self.conn.lock().await, &Selection::Ids(ids)).await
    }

    /// Up to `limit` messages still to deliver, as the intake handed them over.
    pub(in crate::spool) async fn pending(
        &self,
        limit: usize,
    ) -> Result<Vec<NewMessage>, SpoolError> {
        maildrop::pending(&mut *self.conn.lock().await, limit).await
    }
}
