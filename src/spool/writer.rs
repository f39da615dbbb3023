//! The single spool writer and its group commit: sessions hand over messages, delivery hands
//! over its claims and outcomes, all through one channel; the writer takes everything waiting,
//! writes it in one transaction and answers every sender only after COMMIT returned. While one
//! commit's fsync runs, the next batch gathers. With one writer, no write ever waits on
//! SQLite's lock (whose busy handler sleeps in steps of milliseconds).

use sqlx::{Connection, SqliteConnection};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::delivery_store::{ClaimRequest, Outcome, claim_in, write_outcome};
use super::open::{OpenMode, close_quietly, open_connection};
use super::{ClaimedMessage, NewMessage, SpoolError};
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

enum Job {
    Enqueue {
        message: NewMessage,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Record {
        outcome: Outcome,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Claim {
        request: ClaimRequest,
        done: oneshot::Sender<Result<Vec<ClaimedMessage>, SpoolError>>,
    },
}

/// What one job produced inside the transaction, handed out after COMMIT.
enum Done {
    Unit,
    Claimed(Vec<ClaimedMessage>),
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Enqueue { message, .. } => message.body.len(),
            Job::Record { .. } | Job::Claim { .. } => 0,
        }
    }

    fn is_enqueue(&self) -> bool {
        matches!(self, Job::Enqueue { .. })
    }

    fn answer(self, result: Result<Done, SpoolError>) {
        // A requester that went away no longer needs the answer; what it asked is committed.
        match self {
            Job::Enqueue { done, .. } | Job::Record { done, .. } => {
                let _ = done.send(result.map(|_| ()));
            }
            Job::Claim { done, .. } => {
                let _ = done.send(result.map(|d| match d {
                    Done::Claimed(claimed) => claimed,
                    Done::Unit => Vec::new(),
                }));
            }
        }
    }
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
        self.submit(Job::Enqueue { message, done }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Records delivery outcomes (with their bounce), committed with whatever else is waiting.
    pub(super) async fn record(&self, outcome: Outcome) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.submit(Job::Record { outcome, done }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Claims due recipients under a lease.
    pub(super) async fn claim(
        &self,
        request: ClaimRequest,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        let (done, answer) = oneshot::channel();
        self.submit(Job::Claim { request, done }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    async fn submit(&self, job: Job) -> Result<(), SpoolError> {
        self.jobs.send(job).await.map_err(|_| SpoolError::Closed)
    }
}

async fn run_writer(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    committed: Arc<Notify>,
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH_MESSAGES);
    while let Some(first) = jobs.recv().await {
        let mut bytes = first.size();
        batch.push(first);
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.size();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let enqueued = batch.iter().filter(|j| j.is_enqueue()).count();
        match write_batch(&mut conn, &batch, enqueued).await {
            Ok(results) => {
                if enqueued > 0 {
                    committed.notify_one();
                    stats.commits += 1;
                    stats.messages += enqueued as u64;
                }
                tracing::debug!(jobs = batch.len(), enqueued, bytes, "spool commit");
                for (job, result) in batch.drain(..).zip(results) {
                    log_queued(&job);
                    job.answer(Ok(result));
                }
            }
            Err(error) => {
                stats.failed_batches += 1;
                tracing::error!(jobs = batch.len(), %error, "spool commit failed; trying each job alone");
                // One bad job must not fail the others: each gets its own transaction.
                for job in batch.drain(..) {
                    let alone = write_batch(
                        &mut conn,
                        std::slice::from_ref(&job),
                        usize::from(job.is_enqueue()),
                    )
                    .await;
                    match alone {
                        Ok(mut results) => {
                            log_queued(&job);
                            job.answer(Ok(results.remove(0)));
                        }
                        Err(error) => job.answer(Err(error)),
                    }
                }
            }
        }
    }
    close_quietly(conn).await;
    stats
}

fn log_queued(job: &Job) {
    if let Job::Enqueue { message, .. } = job {
        tracing::info!(queue_id = %message.id, sender = %message.sender,
            recipients = message.recipients.len(), size = message.body.len(), "queued");
    }
}

/// Runs every job of the batch and commits once. On any error nothing of the batch is
/// committed (the transaction rolls back when dropped).
async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &[Job],
    enqueued: usize,
) -> Result<Vec<Done>, SpoolError> {
    let write_error = |e: sqlx::Error| SpoolError::Write(e.to_string());
    let mut tx = conn.begin().await.map_err(write_error)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(match job {
            Job::Enqueue { message, .. } => {
                insert_message(&mut tx, message)
                    .await
                    .map_err(write_error)?;
                Done::Unit
            }
            Job::Record { outcome, .. } => {
                write_outcome(&mut tx, outcome).await?;
                Done::Unit
            }
            Job::Claim { request, .. } => {
                Done::Claimed(claim_in(&mut tx, request).await.map_err(write_error)?)
            }
        });
    }
    if enqueued > 0 {
        sqlx::query(
            "UPDATE counters SET value = value + CASE name WHEN 'enqueue_commits' THEN 1 ELSE ?1 END
             WHERE name IN ('enqueue_commits', 'messages_enqueued')",
        )
        .bind(enqueued as i64)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    }
    tx.commit().await.map_err(write_error)?;
    Ok(results)
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
    .bind(&m.origin.helo)
    .bind(&m.origin.client_addr)
    .bind(&m.origin.submitter)
    .bind(m.origin.protocol)
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
