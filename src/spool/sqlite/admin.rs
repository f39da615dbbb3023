//! `QueueAdmin` for the SQLite store: one connection (read-only for commands that only look),
//! WAL readers never block delivery.

use sqlx::SqliteConnection;
use tokio::sync::Mutex;

use super::open::{OpenMode, open_connection};
use super::{queries, steer};
use crate::config::SpoolConfig;
use crate::spool::{
    Filter, MessageDetails, MessageSummary, QueueAdmin, QueueStats, Selection, SpoolError,
};

pub struct SqliteQueue {
    conn: Mutex<SqliteConnection>,
}

impl SqliteQueue {
    /// Opens an existing spool (never created here); `mode` says whether rows may change.
    pub async fn open(config: &SpoolConfig, mode: OpenMode) -> Result<SqliteQueue, SpoolError> {
        let conn = open_connection(&config.path, config.busy_timeout, mode).await?;
        Ok(SqliteQueue {
            conn: Mutex::new(conn),
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

    async fn delete(&self, selection: &Selection) -> Result<Vec<String>, SpoolError> {
        steer::delete(&mut *self.conn.lock().await, selection).await
    }
}
