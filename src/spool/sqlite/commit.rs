//! The group commit's transactions on SQLite: the batch as one script (`batch`), claims in a
//! transaction of their own, the commit mark (`watermark`) moved after each submission.

use sqlx::{Connection, SqliteConnection};

use super::claim::claim_in;
use super::open::{OpenMode, close_quietly, open_connection};
use super::watermark::Watermark;
use super::{batch, reserve, write_error};
use crate::config::SpoolConfig;
use crate::spool::batch::Batch;
use crate::spool::group_commit::CommitStore;
use crate::spool::jobs::ClaimRequest;
use crate::spool::{ClaimedMessage, ClaimedRecipient, SpoolError};

pub(in crate::spool) struct SqliteCommit {
    conn: SqliteConnection,
    watermark: Watermark,
}

impl SqliteCommit {
    /// Opens the spool file for writing, creating and migrating it as needed.
    pub async fn open(config: &SpoolConfig) -> Result<SqliteCommit, SpoolError> {
        let mut conn = open_connection(&config.path, config.busy_timeout, OpenMode::Write).await?;
        let watermark = Watermark::open(&config.path, &mut conn).await;
        reserve::keep(&config.path);
        Ok(SqliteCommit { conn, watermark })
    }
}

impl CommitStore for SqliteCommit {
    /// Only transactions that add messages are fsync'd (`synchronous=FULL`); the others commit
    /// with `synchronous=NORMAL`, which in WAL mode is just as safe against a crashed process
    /// and becomes durable with the next FULL commit.
    async fn write(
        &mut self,
        batch: &Batch<'_>,
        durable: bool,
    ) -> Result<Vec<(String, ClaimedRecipient)>, SpoolError> {
        batch::write(&mut self.conn, batch, durable)
            .await
            .map_err(write_error)
    }

    /// A claim only sets leases, which the next start clears anyway: no fsync needed.
    async fn claim(
        &mut self,
        requests: &[&ClaimRequest],
    ) -> Result<Vec<Vec<ClaimedMessage>>, SpoolError> {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut self.conn)
            .await
            .map_err(write_error)?;
        let mut tx = self.conn.begin().await.map_err(write_error)?;
        let mut claimed = Vec::with_capacity(requests.len());
        for request in requests {
            claimed.push(claim_in(&mut tx, request).await.map_err(write_error)?);
        }
        tx.commit().await.map_err(write_error)?;
        Ok(claimed)
    }

    fn committed(&mut self) {
        self.watermark.committed();
    }

    async fn close(mut self) {
        close_quietly(self.conn).await;
        self.watermark.flush();
    }
}
