//! The single spool writer and its group commit, for either store: sessions hand over
//! messages, delivery hands over its claims and outcomes, all through one channel; the writer
//! takes everything waiting, writes it in one transaction and answers every sender only after
//! COMMIT returned. While one commit runs, the next batch gathers. With one writer per
//! process, no write of ours waits on another's lock (SQLite's busy handler sleeps in steps of
//! milliseconds), and a PostgreSQL store sees one connection per node writing.
//!
//! Two things keep a message's path short when delivery keeps up:
//! - A new message is handed straight to a delivery worker when one has room: its recipients
//!   are born leased in the enqueue transaction, so there is no claim to write and no body to
//!   read back (Postfix's qmgr likewise takes new mail from the incoming queue at once).
//! - Only transactions that add messages must reach the disk before anyone is answered; the
//!   store may commit the others more cheaply (SQLite: `synchronous=NORMAL`). A power cut can
//!   then forget the latest outcomes, which means a message delivered again, never one lost
//!   (Postfix, too, removes delivered queue files without an fsync).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::batch::{Batch, ToInsert};
use super::jobs::{ClaimRequest, Outcome};
use crate::spool::{ClaimedMessage, ClaimedRecipient, NewMessage, SpoolError, now_ms};

/// Most messages in one transaction, and most body bytes: large enough that a busy relay
/// commits rarely, small enough that one transaction never holds much memory or time.
const MAX_BATCH_MESSAGES: usize = 256;
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// How long outcomes alone wait for a submission to share their commit: with one serial
/// client the next message arrives well within this, and one transaction then carries both.
const OUTCOME_LINGER: Duration = Duration::from_millis(5);

/// Handle for enqueueing; cheap to clone, one per session.
#[derive(Clone)]
pub struct SpoolWriter {
    jobs: mpsc::Sender<Job>,
    /// Set by delivery when it starts (and on reload); read by the writer at each commit.
    hand_off: Arc<Mutex<Option<HandOff>>>,
    /// Signalled after a commit that added mail not handed to delivery directly, so that the
    /// scheduler claims it at once.
    committed: Arc<Notify>,
}

/// Where new messages go straight after their commit, while there is room.
struct HandOff {
    /// Weak, so that delivery closing its queue at shutdown is not held up by the writer.
    to: mpsc::WeakSender<ClaimedMessage>,
    lease: Duration,
}

enum Job {
    Enqueue {
        message: NewMessage,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Nobody waits for an outcome's commit: a failure is logged here, and the lease running
    /// out brings the recipients back (a possible duplicate, never a loss).
    Record(Outcome),
    Claim {
        request: ClaimRequest,
        done: oneshot::Sender<Result<Vec<ClaimedMessage>, SpoolError>>,
    },
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Enqueue { message, .. } => message.body.len(),
            Job::Record(_) | Job::Claim { .. } => 0,
        }
    }

    /// Whether someone waits for this job's commit (a session for its 250, the scheduler for
    /// its claim).
    fn is_awaited(&self) -> bool {
        matches!(self, Job::Enqueue { .. } | Job::Claim { .. })
    }

    /// Whether the job adds a message (a submission or a bounce): only then must the commit
    /// reach the disk before anyone is answered.
    fn adds_message(&self) -> bool {
        match self {
            Job::Enqueue { .. } => true,
            Job::Record(outcome) => outcome.bounce.is_some(),
            Job::Claim { .. } => false,
        }
    }

    fn fail(self, error: SpoolError) {
        // A requester that went away no longer needs the answer.
        match self {
            Job::Enqueue { done, .. } => {
                let _ = done.send(Err(error));
            }
            Job::Claim { done, .. } => {
                let _ = done.send(Err(error));
            }
            Job::Record(outcome) => {
                tracing::error!(queue_id = %outcome.message_id, %error,
                    "cannot record delivery outcome; the recipients are tried again when their lease runs out");
            }
        }
    }
}

/// What a committed batch produced, handed out to the jobs afterwards.
#[derive(Default)]
struct Written {
    /// For each claim job, in order. Claims run after the main transaction committed, so
    /// their failure is theirs alone.
    claimed: VecDeque<Result<Vec<ClaimedMessage>, SpoolError>>,
    /// Recipients born leased, by message id.
    leased: HashMap<String, Vec<ClaimedRecipient>>,
}

/// What the writer did, reported when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub commits: u64,
    pub messages: u64,
    pub failed_batches: u64,
}

/// Told of every commit that added mail: how many messages it carried and how long its
/// transaction took, disk sync included (the metrics: messages per commit, commit latency).
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, messages: usize, took: Duration);
}

/// For writers nobody watches (`sendmail`'s own).
impl CommitObserver for () {
    fn committed(&self, _messages: usize, _took: Duration) {}
}

/// What a store does for the group commit.
pub(super) trait CommitStore: Send + 'static {
    /// Writes the batch's new messages and outcomes in one transaction, on disk before it
    /// returns when `durable`. Returns the recipients born leased, with their message ids. An
    /// error means nothing of the batch was written.
    fn write(
        &mut self,
        batch: &Batch<'_>,
        durable: bool,
    ) -> impl Future<Output = Result<Vec<(String, ClaimedRecipient)>, SpoolError>> + Send;
    /// Runs the claims in one transaction of their own, one answer per request.
    fn claim(
        &mut self,
        requests: &[&ClaimRequest],
    ) -> impl Future<Output = Result<Vec<Vec<ClaimedMessage>>, SpoolError>> + Send;
    /// A transaction that added submissions has committed.
    fn committed(&mut self);
    fn close(self) -> impl Future<Output = ()> + Send;
}

impl SpoolWriter {
    /// Starts the writer task on an opened store. The task ends when every `SpoolWriter`
    /// handle is dropped, after committing what it already took.
    pub(super) fn spawn<S: CommitStore>(
        store: S,
        observer: Arc<dyn CommitObserver>,
    ) -> (SpoolWriter, tokio::task::JoinHandle<WriterStats>) {
        let (jobs, receiver) = mpsc::channel(MAX_BATCH_MESSAGES * 4);
        let committed = Arc::new(Notify::new());
        let hand_off = Arc::new(Mutex::new(None));
        let writer = Writer {
            store,
            committed: committed.clone(),
            hand_off: hand_off.clone(),
            stats: WriterStats::default(),
            observer,
        };
        let task = tokio::spawn(writer.run(receiver));
        (
            SpoolWriter {
                jobs,
                hand_off,
                committed,
            },
            task,
        )
    }

    /// Notified after each commit of new messages that delivery did not take directly.
    pub fn commit_signal(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Returns once the message is committed to disk, or with the reason it is not.
    pub async fn enqueue(&self, message: NewMessage) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        self.submit(Job::Enqueue { message, done }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Hands delivery outcomes (with their bounce) to the writer, which commits them with the
    /// next batch; returns once they are queued for it, not committed.
    pub(super) async fn record(&self, outcome: Outcome) -> Result<(), SpoolError> {
        self.submit(Job::Record(outcome)).await
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

    /// From now on, new messages go to `to` right after their commit, leased for `lease`,
    /// whenever it has room (otherwise the scheduler claims them as usual).
    pub(super) fn hand_off(&self, to: &mpsc::Sender<ClaimedMessage>, lease: Duration) {
        *self.hand_off.lock().unwrap_or_else(|e| e.into_inner()) = Some(HandOff {
            to: to.downgrade(),
            lease,
        });
    }

    async fn submit(&self, job: Job) -> Result<(), SpoolError> {
        self.jobs.send(job).await.map_err(|_| SpoolError::Closed)
    }
}

struct Writer<S> {
    store: S,
    committed: Arc<Notify>,
    hand_off: Arc<Mutex<Option<HandOff>>>,
    stats: WriterStats,
    observer: Arc<dyn CommitObserver>,
}

impl<S: CommitStore> Writer<S> {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) -> WriterStats {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH_MESSAGES);
        let mut open = true;
        while open {
            let Some(first) = jobs.recv().await else {
                break;
            };
            gather(first, &mut jobs, &mut batch);
            if !batch.is_empty() && !batch.iter().any(Job::is_awaited) {
                match tokio::time::timeout(OUTCOME_LINGER, jobs.recv()).await {
                    Ok(Some(job)) => gather(job, &mut jobs, &mut batch),
                    Ok(None) => open = false,
                    Err(_lingered) => {}
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch).await;
            }
        }
        self.store.close().await;
        self.stats
    }

    /// Writes the batch in one transaction and answers every job; on failure, each job is
    /// tried alone so that one bad job does not fail the others.
    async fn commit(&mut self, batch: &mut Vec<Job>) {
        let (sender, lease) = match &*self.hand_off.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(hand_off) => (hand_off.to.upgrade(), hand_off.lease),
            None => (None, Duration::ZERO),
        };
        let lease_until = now_ms() + lease.as_millis() as i64;
        let enqueues = batch
            .iter()
            .filter(|j| matches!(j, Job::Enqueue { .. }))
            .count();
        let mut permits = VecDeque::new();
        if let Some(sender) = &sender {
            while permits.len() < enqueues
                && let Ok(permit) = sender.try_reserve()
            {
                permits.push_back(permit);
            }
        }
        match self.write(batch, permits.len(), lease_until).await {
            Ok(mut written) => {
                let mut unclaimed_mail = false;
                for job in batch.drain(..) {
                    unclaimed_mail |= answer(job, &mut written, &mut permits);
                }
                if unclaimed_mail {
                    self.committed.notify_one();
                }
            }
            Err(error @ SpoolError::Unavailable(_)) => {
                permits.clear();
                self.stats.failed_batches += 1;
                tracing::error!(jobs = batch.len(), %error, "spool commit failed");
                for job in batch.drain(..) {
                    job.fail(error.clone());
                }
            }
            Err(error) => {
                permits.clear();
                self.stats.failed_batches += 1;
                tracing::error!(jobs = batch.len(), %error, "spool commit failed; trying each job alone");
                for job in batch.drain(..) {
                    let alone = [job];
                    match self.write(&alone, 0, lease_until).await {
                        Ok(mut written) => {
                            let [job] = alone;
                            if answer(job, &mut written, &mut permits) {
                                self.committed.notify_one();
                            }
                        }
                        Err(error) => {
                            let [job] = alone;
                            job.fail(error);
                        }
                    }
                }
            }
        }
    }

    /// Writes every job of the batch: new messages and outcomes in one transaction, then claims, if any, in a second one. The first `leased`
    /// submissions are born leased until `lease_until`. An error returned means the main
    /// transaction rolled back; claims that fail after it committed fail only themselves, so a
    /// committed message is never reported as failed (and then written twice).
    async fn write(
        &mut self,
        jobs: &[Job],
        leased: usize,
        lease_until: i64,
    ) -> Result<Written, SpoolError> {
        let durable = jobs.iter().any(Job::adds_message);
        let mut batch = Batch::default();
        let mut claims = Vec::new();
        let mut submissions = 0;
        for job in jobs {
            match job {
                Job::Enqueue { message, .. } => {
                    batch.new.push(ToInsert {
                        message,
                        lease_until: (submissions < leased).then_some(lease_until),
                    });
                    submissions += 1;
                }
                Job::Record(outcome) => {
                    if let Some(bounce) = &outcome.bounce {
                        batch.new.push(ToInsert {
                            message: bounce,
                            lease_until: None,
                        });
                    }
                    batch.outcomes.push(outcome);
                }
                Job::Claim { request, .. } => claims.push(request),
            }
        }
        batch.submissions = submissions;

        let started = std::time::Instant::now();
        let mut written = Written::default();
        if !batch.new.is_empty() || !batch.outcomes.is_empty() {
            let born_leased = self.store.write(&batch, durable).await?;
            if submissions > 0 {
                self.observer.committed(submissions, started.elapsed());
            }
            for (message_id, recipient) in born_leased {
                written
                    .leased
                    .entry(message_id)
                    .or_default()
                    .push(recipient);
            }
        }
        if !claims.is_empty() {
            written.claimed = match self.store.claim(&claims).await {
                Ok(claimed) => claimed.into_iter().map(Ok).collect(),
                Err(error) => claims.iter().map(|_| Err(error.clone())).collect(),
            };
        }
        if submissions > 0 {
            self.stats.commits += 1;
            self.stats.messages += submissions as u64;
            self.store.committed();
        }
        tracing::debug!(
            jobs = jobs.len(),
            submissions,
            leased,
            durable,
            elapsed_us = started.elapsed().as_micros() as u64,
            "spool commit"
        );
        Ok(written)
    }
}

/// Adds `job` and whatever else is waiting to the batch, up to the batch limits.
fn gather(job: Job, jobs: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    let mut bytes: usize = batch.iter().map(Job::size).sum();
    let mut next = Some(job);
    while let Some(job) = next.take() {
        bytes += job.size();
        batch.push(job);
        if batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            next = jobs.try_recv().ok();
        }
    }
}

/// Answers one committed job and hands its message to delivery if a permit was reserved for
/// it. Returns whether it added mail that the scheduler still has to claim.
fn answer(
    job: Job,
    written: &mut Written,
    permits: &mut VecDeque<mpsc::Permit<'_, ClaimedMessage>>,
) -> bool {
    match job {
        Job::Enqueue { message, done } => {
            log_queued(&message);
            let _ = done.send(Ok(()));
            let leased = written.leased.remove(message.id.as_str());
            match (leased, permits.pop_front()) {
                (Some(recipients), Some(permit)) => {
                    permit.send(claimed(message, recipients));
                    false
                }
                _ => true,
            }
        }
        Job::Record(outcome) => outcome.bounce.is_some(),
        Job::Claim { done, .. } => {
            let _ = done.send(written.claimed.pop_front().unwrap_or(Ok(Vec::new())));
            false
        }
    }
}

/// A just-committed message as delivery sees a claimed one.
fn claimed(message: NewMessage, mut recipients: Vec<ClaimedRecipient>) -> ClaimedMessage {
    recipients.sort_by_key(|r| r.id);
    ClaimedMessage {
        id: message.id.as_str().to_string(),
        sender: message.sender,
        received_at_ms: message.received_at_ms,
        body_type: message.body_type,
        smtputf8: message.smtputf8,
        body: Arc::new(message.body),
        recipients,
    }
}

fn log_queued(message: &NewMessage) {
    tracing::info!(queue_id = %message.id, sender = %message.sender,
        recipients = message.recipients.len(), size = message.body.len(), "queued");
}
