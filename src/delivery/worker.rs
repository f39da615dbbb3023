//! One delivery worker: takes claimed messages, sends each through the first upstream that will
//! take it (failing over on unreachable, refused, TLS or AUTH trouble), keeps its connections
//! open for the next message, and records every recipient's outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::backoff::next_delay;
use super::classify::{Disposition, classify, is_throttling};
use super::dsn::{Bounce, Failure};
use super::upstream::{Broken, Connection, Transaction, Unusable};
use crate::model::UpstreamReply;
use crate::spool::{
    AttemptRecord, AttemptReply, ClaimedMessage, ClaimedRecipient, HeldBy, NewMessage,
    RecipientState, now_ms,
};

/// Connections idle this long are closed (SES closes idle ones itself after a while).
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// The worker's open connections, by upstream index, valid for one configuration generation.
struct Connections {
    generation: u64,
    open: HashMap<usize, Connection>,
}

impl Connections {
    async fn close_all(&mut self) {
        for (_, connection) in self.open.drain() {
            connection.quit().await;
        }
    }
}

pub async fn run(
    jobs: Arc<Mutex<mpsc::Receiver<ClaimedMessage>>>,
    shared: watch::Receiver<Arc<Shared>>,
) {
    let mut connections = Connections {
        generation: 0,
        open: HashMap::new(),
    };
    loop {
        let job = {
            let mut jobs = jobs.lock().await;
            tokio::time::timeout(IDLE_CLOSE, jobs.recv()).await
        };
        match job {
            Ok(Some(message)) => {
                let current = shared.borrow().clone();
                if current.generation != connections.generation {
                    // New configuration (credentials, CA): old connections must not be reused.
                    connections.close_all().await;
                    connections.generation = current.generation;
                }
                deliver(&current, &mut connections, message).await;
            }
            Ok(None) => break,
            Err(_idle) => connections.close_all().await,
        }
    }
    connections.close_all().await;
}

/// What one attempt at a group of recipients came to.
enum Attempt {
    /// An upstream answered for every recipient.
    Replies {
        upstream: String,
        replies: Vec<UpstreamReply>,
    },
    /// No upstream could take the message.
    NoUpstream(Vec<UpstreamFailure>),
}

struct UpstreamFailure {
    upstream: String,
    reason: String,
    config_error: bool,
}

impl Attempt {
    /// The upstream that answered, and each recipient's disposition with the reply behind it.
    /// When no upstream could be used, every recipient shares the reasons: held if any was a
    /// configuration error, deferred otherwise.
    fn outcomes(
        &self,
        hold_on: &[String],
        recipients: usize,
    ) -> (Option<String>, Vec<(Disposition, AttemptReply)>) {
        match self {
            Attempt::Replies { upstream, replies } => (
                Some(upstream.clone()),
                replies
                    .iter()
                    .map(|r| (classify(r, hold_on), AttemptReply::Upstream(r.clone())))
                    .collect(),
            ),
            Attempt::NoUpstream(failures) => {
                let text = failures
                    .iter()
                    .map(|f| format!("{}: {}", f.upstream, f.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                let disposition = if failures.iter().any(|f| f.config_error) {
                    Disposition::Held
                } else {
                    Disposition::Deferred
                };
                (
                    None,
                    vec![(disposition, AttemptReply::Local(text)); recipients],
                )
            }
        }
    }
}

async fn deliver(shared: &Shared, connections: &mut Connections, message: ClaimedMessage) {
    let chunk_size = shared.max_recipients_per_transaction();
    for chunk in message.recipients.chunks(chunk_size) {
        let started_at_ms = now_ms();
        let started = Instant::now();
        let attempt = attempt(shared, connections, &message, chunk).await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let (upstream, outcomes) = attempt.outcomes(&shared.config.hold_on, chunk.len());
        let mut records = Vec::with_capacity(chunk.len());
        for (recipient, (disposition, reply)) in chunk.iter().zip(outcomes) {
            let state = decide(
                shared,
                &message,
                recipient,
                disposition,
                &reply,
                upstream.as_deref(),
            );
            records.push(AttemptRecord {
                recipient_id: recipient.id,
                state,
                reply,
                upstream: upstream.clone(),
                started_at_ms,
                duration_ms,
            });
        }
        count(shared, &message, &records, upstream.as_deref());
        let bounce = bounce_for(shared, &message, chunk, &records, upstream.as_deref());
        let result = shared
            .store
            .record(&message.id, records, bounce, now_ms())
            .await;
        if let Err(error) = result {
            // The lease runs out and the recipients are tried again: a possible duplicate,
            // never a loss.
            tracing::error!(queue_id = %message.id, %error, "cannot record delivery outcome");
        }
    }
}

/// Outcomes by upstream and reply class, and how long finished recipients waited.
fn count(
    shared: &Shared,
    message: &ClaimedMessage,
    records: &[AttemptRecord],
    upstream: Option<&str>,
) {
    let waited = (now_ms() - message.received_at_ms).max(0) as f64 / 1000.0;
    for record in records {
        let class = match record.reply.code() {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "none",
        };
        shared
            .metrics
            .delivery(record.state.name(), upstream, class);
        if matches!(
            record.state,
            RecipientState::Delivered | RecipientState::Bounced
        ) {
            shared.metrics.queue_seconds.observe(waited);
        }
    }
}

/// One DSN for the recipients of this attempt that bounced, if any did.
fn bounce_for(
    shared: &Shared,
    message: &ClaimedMessage,
    chunk: &[ClaimedRecipient],
    records: &[AttemptRecord],
    upstream: Option<&str>,
) -> Option<NewMessage> {
    let failures: Vec<Failure> = chunk
        .iter()
        .zip(records)
        .filter(|(_, record)| record.state == RecipientState::Bounced)
        .map(|(recipient, record)| Failure {
            recipient: &recipient.address,
            diagnostic: record.reply.to_string(),
            status: record.reply.status(),
            remote_mta: upstream,
        })
        .collect();
    if failures.is_empty() {
        return None;
    }
    let to = shared
        .config
        .bounce_address
        .as_deref()
        .unwrap_or(&message.sender);
    let bounce = Bounce {
        hostname: &shared.hostname,
        to,
        original_id: &message.id,
        original_sender: &message.sender,
        arrival_ms: message.received_at_ms,
        original_message: &message.body,
        failures,
    }
    .into_message();
    tracing::info!(queue_id = %message.id, bounce_id = %bounce.id, %to, "bounce queued");
    Some(bounce)
}

/// Turns a classified reply into the recipient's next state, logging it.
fn decide(
    shared: &Shared,
    message: &ClaimedMessage,
    recipient: &ClaimedRecipient,
    disposition: Disposition,
    reply: &AttemptReply,
    upstream: Option<&str>,
) -> RecipientState {
    let id = &message.id;
    let address = &recipient.address;
    let upstream = upstream.unwrap_or("-");
    let is_bounce = message.sender.is_empty();
    match disposition {
        Disposition::Delivered => {
            tracing::info!(queue_id = %id, recipient = %address, %upstream, %reply, "delivered");
            RecipientState::Delivered
        }
        Disposition::Held => {
            tracing::error!(queue_id = %id, recipient = %address, %upstream, %reply,
                "held: the upstream refused our configuration; fix it and reload (SIGHUP)");
            RecipientState::Held(HeldBy::Config)
        }
        Disposition::Bounced if is_bounce => {
            tracing::error!(queue_id = %id, recipient = %address, %upstream, %reply,
                "a bounce could not be delivered; held for inspection, not bounced again");
            RecipientState::Held(HeldBy::Bounce)
        }
        Disposition::Bounced => {
            tracing::warn!(queue_id = %id, recipient = %address, %upstream, %reply, "bounced");
            RecipientState::Bounced
        }
        Disposition::Deferred => {
            let age = Duration::from_millis((now_ms() - message.received_at_ms).max(0) as u64);
            if age >= shared.config.queue_lifetime {
                tracing::warn!(queue_id = %id, recipient = %address, %reply, "queue lifetime exceeded");
                return if is_bounce {
                    RecipientState::Held(HeldBy::Bounce)
                } else {
                    RecipientState::Bounced
                };
            }
            let delay = next_delay(&shared.config.retry, recipient.attempts + 1);
            tracing::warn!(queue_id = %id, recipient = %address, %upstream, %reply,
                retry_in = ?delay, "deferred");
            RecipientState::Deferred {
                next_attempt_at_ms: now_ms() + delay.as_millis() as i64,
            }
        }
    }
}

/// Tries the upstreams in order until one answers for every recipient of this chunk.
async fn attempt(
    shared: &Shared,
    connections: &mut Connections,
    message: &ClaimedMessage,
    chunk: &[ClaimedRecipient],
) -> Attempt {
    let addresses: Vec<&str> = chunk.iter().map(|r| r.address.as_str()).collect();
    let transaction = Transaction {
        sender: &message.sender,
        body_type: message.body_type,
        smtputf8: message.smtputf8,
        recipients: &addresses,
        body: &message.body,
    };
    let mut failures = Vec::new();
    for index in shared.upstream_order() {
        let upstream = &shared.upstreams[index];
        let name = upstream.endpoint.upstream.name();
        upstream.rate.acquire().await;
        // A reused connection may have been closed by the upstream while idle: one fresh retry.
        for fresh_retry in [false, true] {
            let (mut connection, reused) = match connections.open.remove(&index) {
                Some(connection) if !fresh_retry => (connection, true),
                _ => match upstream.endpoint.connect(shared.timeouts).await {
                    Ok(connection) => (connection, false),
                    Err(unusable) => {
                        note_unusable(shared, index, &name, &unusable).await;
                        failures.push(UpstreamFailure {
                            upstream: name.clone(),
                            reason: unusable.to_string(),
                            config_error: unusable.is_config_error(),
                        });
                        break;
                    }
                },
            };
            match connection.send(&transaction).await {
                Ok(replies) => {
                    upstream.mark_up();
                    if replies.iter().any(is_throttling) {
                        tracing::warn!(upstream = %name, "throttled by the upstream; halving the send rate");
                        upstream.rate.throttle(shared.config.throttle_period).await;
                    }
                    connections.open.insert(index, connection);
                    return Attempt::Replies {
                        upstream: name,
                        replies,
                    };
                }
                Err(Broken::Lost(reason)) if reused => {
                    tracing::debug!(upstream = %name, %reason, "idle connection was closed; reconnecting");
                }
                Err(broken) => {
                    let reason = match broken {
                        Broken::ServiceUnavailable(reply) => reply.to_string(),
                        Broken::Lost(reason) => format!("connection lost: {reason}"),
                    };
                    tracing::warn!(upstream = %name, %reason, "upstream failed during the transaction");
                    upstream.mark_down(shared.config.upstream_cooldown);
                    failures.push(UpstreamFailure {
                        upstream: name.clone(),
                        reason,
                        config_error: false,
                    });
                    break;
                }
            }
        }
    }
    Attempt::NoUpstream(failures)
}

async fn note_unusable(shared: &Shared, index: usize, name: &str, unusable: &Unusable) {
    tracing::warn!(upstream = %name, reason = %unusable, "upstream unusable; trying the next one");
    shared.upstreams[index].mark_down(shared.config.upstream_cooldown);
    if unusable.is_config_error()
        && let Err(error) = shared.store.count("config_errors", 1).await
    {
        tracing::error!(%error, "cannot count a configuration error");
    }
}
