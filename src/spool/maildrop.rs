//! Moving a node's maildrop into the shared store. With `spool.url` set, `sendmail` still
//! commits to the SQLite file at `spool.path` (it needs no database credentials and works
//! while the store or the daemon is down); the daemon moves each message into the shared store
//! and only then deletes it here. A crash in between moves it again, and the shared store
//! keeps it once: inserts there are idempotent by queue ID.

use std::time::Duration;

use tokio::sync::watch;

use super::sqlite::SqliteQueue;
use super::{SpoolError, SpoolWriter};
use crate::config::SpoolConfig;

/// How often the maildrop is looked at; `sendmail` mail waits at most this long.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Most messages moved in one round (one group commit in the shared store).
const ROUND: usize = 256;

/// A node's maildrop, open.
pub struct Maildrop(SqliteQueue);

impl Maildrop {
    /// Opens the SQLite file at `spool.path`, creating it when missing so that `sendmail`
    /// finds it.
    pub async fn open(config: &SpoolConfig) -> Result<Maildrop, SpoolError> {
        Ok(Maildrop(SqliteQueue::open_maildrop(config).await?))
    }

    /// Moves the maildrop's messages into `shared` until `stop` turns true.
    pub async fn move_forever(self, shared: SpoolWriter, mut stop: watch::Receiver<bool>) {
        let maildrop = self.0;
        loop {
            match move_round(&maildrop, shared.clone()).await {
                // A full round: more may be waiting.
                Ok(moved) if moved == ROUND => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot move the maildrop into the shared store yet; trying again")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Moves one round; returns how many messages it read.
async fn move_round(maildrop: &SqliteQueue, shared: SpoolWriter) -> Result<usize, SpoolError> {
    let pending = maildrop.pending(ROUND).await?;
    let read = pending.len();
    if read == 0 {
        return Ok(0);
    }
    // Handed over together, so that they share one commit.
    let mut handing = tokio::task::JoinSet::new();
    for message in pending {
        let shared = shared.clone();
        handing.spawn(async move {
            let id = message.id.as_str().to_string();
            (id, shared.enqueue(message).await)
        });
    }
    let mut moved = Vec::with_capacity(read);
    let mut failure = None;
    while let Some(handed) = handing.join_next().await {
        match handed {
            Ok((id, Ok(()))) => moved.push(id),
            Ok((_, Err(error))) => failure = Some(error),
            Err(_) => failure = Some(SpoolError::Closed),
        }
    }
    if !moved.is_empty() {
        let deleted = maildrop.forget(moved).await?;
        tracing::info!(
            messages = deleted.len(),
            "moved from the maildrop into the shared store"
        );
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(read),
    }
}
