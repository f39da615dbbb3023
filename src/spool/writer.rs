//! The single spool writer and its group commit: sessions hand over messages through a
//! channel; the writer takes everything waiting, writes it in one transaction and answers every
//! sender only after COMMIT returned. While one commit's fsync runs, the next batch gathers.

use sqlx::{Connection, SqliteConnection};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::open::{OpenMode, close_quietly, open_connection};
use super::{NewMessage, SpoolError};
use crate::config::SpoolConfig;

/// Most messages in one transaction, and most body bytes: large enough that a busy relay
/// commits rarely, small enough that one transaction never holds much memory or time.
const MAX_BATCH_MESSAGES: usize = 256;
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Handle for enqueueing; cheap to clone, one per session.
#[derive(Clone)]
pub struct Spool {
    jobs: mpsc::Sender<Job>,
    /// Signalled after every commit, so that delivery picks new mail up at once.
    committed: Arc<Notify>,
}

struct Job {
    message: NewMessage,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// What the writer did, reported when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub commits: u64,
    pub messages: u64,
    pub failed_batches: u64,
}

impl Spool {
    /// Opens (creating and migrating as needed) and starts the writer task. The task ends when
    /// every `Spool` handle is dropped, after committing what it already took.
    pub async fn start(
        config: &SpoolConfig,
    ) -> Result<(Spool, tokio::task::JoinHandle<WriterStats>), SpoolError> {
        let conn = open_connection(&config.path, config.busy_timeout, OpenMode::Write).await?;
        let (jobs, receiver) = mpsc::channel(MAX_BATCH_MESSAGES * 4);
        let committed = Arc::new(Notify::new());
        let task = tokio::spawn(run_writer(conn, receiver, committed.clone()));
        Ok((Spool { jobs, committed }, task))
    }

    /// Notified after each commit of new messages.
    pub fn commit_signal(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Returns once the message is committed to disk, or with the reason it is not.
    pub async fn enqueue(&self, message: NewMessage) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { message, done })
            .await
            .map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }
}

async fn run_writer(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    committed: Arc<Notify>,
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut batch = Vec::with_capacity(MAX_BATCH_MESSAGES);
    while let Some(first) = jobs.recv().await {
        let mut bytes = first.message.body.len();
        batch.push(first);
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.message.body.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let result = write_batch(&mut conn, &batch).await;
        match &result {
            Ok(()) => {
                committed.notify_one();
                stats.commits += 1;
                stats.messages += batch.len() as u64;
                tracing::debug!(messages = batch.len(), bytes, "spool commit");
            }
            Err(error) => {
                stats.failed_batches += 1;
                tracing::error!(messages = batch.len(), %error, "spool commit failed; clients are told 452 4.3.1");
            }
        }
        for job in batch.drain(..) {
            if result.is_ok() {
                tracing::info!(queue_id = %job.message.id, sender = %job.message.sender,
                    recipients = job.message.recipients.len(), size = job.message.body.len(), "queued");
            }
            // A session that went away no longer needs the answer; its message stays committed.
            let _ = job.done.send(result.clone());
        }
    }
    close_quietly(conn).await;
    stats
}

/// Writes every message of the batch and commits once. On any error nothing of the batch is
/// committed (the transaction rolls back when dropped), and every sender hears the error.
async fn write_batch(conn: &mut SqliteConnection, batch: &[Job]) -> Result<(), SpoolError> {
    let write_error = |e: sqlx::Error| SpoolError::Write(e.to_string());
    let mut tx = conn.begin().await.map_err(write_error)?;
    for job in batch {
        insert_message(&mut tx, &job.message)
            .await
            .map_err(write_error)?;
    }
    sqlx::query(
        "UPDATE counters SET value = value + CASE name WHEN 'enqueue_commits' THEN 1 ELSE ?1 END
         WHERE name IN ('enqueue_commits', 'messages_enqueued')",
    )
    .bind(batch.len() as i64)
    .execute(&mut *tx)
    .await
    .map_err(write_error)?;
    tx.commit().await.map_err(write_error)
}

pub(super) async fn insert_message(
    conn: &mut SqliteConnection,
    m: &NewMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (id, received_at, sender, original_sender, helo, client_addr,
             submitter, protocol, body_type, smtputf8, size, rewrites)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .bind(m.id.as_str())
    .bind(m.received_at_ms)
    .bind(&m.sender)
    .bind(&m.original_sender)
    .bind(&m.helo)
    .bind(&m.client_addr)
    .bind(&m.submitter)
    .bind(m.protocol)
    .bind(m.body_type.as_str())
    .bind(m.smtputf8)
    .bind(m.body.len() as i64)
    .bind(m.rewrites.join("\n"))
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO bodies (message_id, data) VALUES (?1, ?2)")
        .bind(m.id.as_str())
        .bind(&m.body)
        .execute(&mut *conn)
        .await?;
    for recipient in &m.recipients {
        sqlx::query(
            "INSERT INTO recipients (message_id, address, original_address, next_attempt_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .bind(m.id.as_str())
        .bind(&recipient.address)
        .bind(&recipient.original_address)
        .bind(m.received_at_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
