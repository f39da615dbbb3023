//! One delivery worker: takes claimed messages, sends each through the first upstream that will
//! take it (failing over on unreachable, refused, TLS or AUTH trouble), keeps its connections
//! open for the next message, and records every recipient's outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::backoff::{jitter, next_delay};
use super::classify::{
    Disposition, Retry, classify, classify_api, is_too_many_recipients, known_from,
};
use super::dsn::{Action, Bounce, Failure};
use super::outbound::{Capabilities, Outbound, Spooled, Unsendable, Verdict, prepare};
use super::ses_api::{self, Called, SesApiClient};
use super::upstream::{Broken, Connection, Endpoint, Transaction, Unusable};
use super::{Route, Shared};
use crate::model::{EnhancedStatus, UpstreamReply};
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

/// What one attempt at a group of recipients came to: each recipient's disposition with the
/// reply behind it, the upstream that answered (if any), and what was changed on the way out.
struct Attempt {
    upstream: Option<Answered>,
    outcomes: Vec<(Disposition, AttemptReply)>,
    changes: Vec<String>,
}

/// The upstream that answered: its name for the history, its host for DSNs' Remote-MTA.
struct Answered {
    name: String,
    host: String,
}

/// Why one upstream did not answer for the recipients.
struct UpstreamFailure {
    upstream: String,
    cause: Cause,
}

enum Cause {
    Unusable(Unusable),
    Lost(String),
    Unsendable(Unsendable),
}

impl Attempt {
    fn answered(
        shared: &Shared,
        index: usize,
        replies: Vec<UpstreamReply>,
        changes: Vec<String>,
    ) -> Attempt {
        let upstream = &shared.upstreams[index].config;
        Attempt {
            upstream: Some(Answered {
                name: upstream.name(),
                host: upstream.host(),
            }),
            outcomes: replies
                .into_iter()
                .map(|reply| {
                    let disposition = classify(&reply, &shared.config.hold_on);
                    (disposition, AttemptReply::Upstream(reply))
                })
                .collect(),
            changes,
        }
    }

    /// No upstream could take the message; every recipient shares the reasons. Held if any
    /// was a configuration error; if every upstream was up but none could carry the message
    /// as it is, what the reasons say (bounce, or hold for an upstream that could); deferred
    /// otherwise.
    fn no_upstream(failures: Vec<UpstreamFailure>, recipients: usize) -> Attempt {
        let reason = failures
            .iter()
            .map(|f| {
                let cause = match &f.cause {
                    Cause::Unusable(unusable) => unusable.to_string(),
                    Cause::Lost(reason) => reason.clone(),
                    Cause::Unsendable(unsendable) => unsendable.to_string(),
                };
                format!("{}: {cause}", f.upstream)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let unsendable: Vec<&Unsendable> = failures
            .iter()
            .filter_map(|f| match &f.cause {
                Cause::Unsendable(u) => Some(u),
                _ => None,
            })
            .collect();
        let config_error = failures
            .iter()
            .any(|f| matches!(&f.cause, Cause::Unusable(u) if u.is_config_error()));
        let (disposition, status) = match unsendable.first() {
            _ if config_error => (Disposition::Held, TRANSIENT_LOCAL),
            Some(first) if unsendable.len() == failures.len() => {
                let hold = unsendable.iter().any(|u| u.verdict() == Verdict::Hold);
                let disposition = if hold {
                    Disposition::Held
                } else {
                    Disposition::Bounced
                };
                (disposition, first.status())
            }
            _ => (Disposition::Deferred(Retry::Backoff), TRANSIENT_LOCAL),
        };
        Attempt {
            upstream: None,
            outcomes: vec![(disposition, AttemptReply::Local { reason, status }); recipients],
            changes: Vec::new(),
        }
    }
}

/// RFC 3463 4.4.1: no answer from host (for our own reasons that are not final).
const TRANSIENT_LOCAL: EnhancedStatus = EnhancedStatus {
    class: 4,
    subject: 4,
    detail: 1,
};

/// RFC 3463 5.4.7: delivery time expired.
const EXPIRED: EnhancedStatus = EnhancedStatus {
    class: 5,
    subject: 4,
    detail: 7,
};

async fn deliver(shared: &Shared, connections: &mut Connections, message: ClaimedMessage) {
    let chunk_size = shared.max_recipients_per_transaction();
    // One jitter for the whole message: recipients deferred together stay together.
    let jitter = jitter();
    let spooled = Spooled {
        body: &message.body,
        body_type: message.body_type,
        smtputf8: message.smtputf8,
        envelope_needs_utf8: !message.sender.is_ascii()
            || message.recipients.iter().any(|r| !r.address.is_ascii()),
    };
    for chunk in message.recipients.chunks(chunk_size) {
        let started_at_ms = now_ms();
        let started = Instant::now();
        let attempt = attempt(shared, connections, &message, &spooled, chunk).await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let upstream = attempt.upstream.as_ref().map(|a| a.name.clone());
        let mut records = Vec::with_capacity(chunk.len());
        let mut expired = Vec::with_capacity(chunk.len());
        for (recipient, (disposition, reply)) in chunk.iter().zip(attempt.outcomes) {
            let decision = decide(
                shared,
                &message,
                recipient,
                disposition,
                &reply,
                upstream.as_deref(),
                jitter,
            );
            expired.push(decision.expired);
            let delay_warned = is_due_a_delay_warning(shared, &message, recipient, &decision.state);
            records.push(AttemptRecord {
                recipient_id: recipient.id,
                state: decision.state,
                reply,
                upstream: upstream.clone(),
                started_at_ms,
                duration_ms,
                delay_warned,
            });
        }
        count(shared, &message, &records, upstream.as_deref());
        let remote_mta = attempt.upstream.as_ref().map(|a| a.host.as_str());
        let bounce = dsn_for(shared, &message, chunk, &records, &expired, remote_mta);
        let result = shared
            .store
            .record(&message.id, records, bounce, attempt.changes, now_ms())
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

/// `delivery.delay_warning` (off by default): a recipient of a message with a sender, still
/// deferred after that long, and not warned about before.
fn is_due_a_delay_warning(
    shared: &Shared,
    message: &ClaimedMessage,
    recipient: &ClaimedRecipient,
    state: &RecipientState,
) -> bool {
    let age = Duration::from_millis((now_ms() - message.received_at_ms).max(0) as u64);
    matches!(state, RecipientState::Deferred { .. })
        && !message.sender.is_empty()
        && !recipient.delay_warned
        && shared
            .config
            .delay_warning
            .is_some_and(|after| age >= after)
}

/// One DSN for the recipients of this attempt that bounced or are due a delay warning, if
/// any. A recipient whose queue lifetime ran out is reported as such (5.4.7), with the last
/// reply.
fn dsn_for(
    shared: &Shared,
    message: &ClaimedMessage,
    chunk: &[ClaimedRecipient],
    records: &[AttemptRecord],
    expired: &[bool],
    remote_mta: Option<&str>,
) -> Option<NewMessage> {
    let lifetime = humantime::format_duration(shared.config.queue_lifetime);
    let retry_until_ms = message.received_at_ms + shared.config.queue_lifetime.as_millis() as i64;
    let failures: Vec<Failure> = chunk
        .iter()
        .zip(records)
        .zip(expired)
        .filter(|((_, record), _)| record.state == RecipientState::Bounced || record.delay_warned)
        .map(|((recipient, record), &expired)| {
            let action = if record.delay_warned {
                Action::Delayed { retry_until_ms }
            } else {
                Action::Failed
            };
            let status = match action {
                _ if expired => EXPIRED,
                Action::Delayed { .. } => EnhancedStatus {
                    class: 4,
                    ..record.reply.status()
                },
                Action::Failed => record.reply.status(),
            };
            Failure {
                recipient: &recipient.address,
                action,
                diagnostic: if expired {
                    format!(
                        "delivery time expired: not delivered within the queue lifetime of {lifetime}; last reply: {}",
                        record.reply
                    )
                } else {
                    record.reply.to_string()
                },
                status,
                remote_mta: record.reply.code().and(remote_mta),
            }
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
        reporting_mta: &shared.reporting_mta,
        domain: &shared.bounce_domain,
        to,
        original_id: &message.id,
        original_sender: &message.sender,
        arrival_ms: message.received_at_ms,
        original_message: &message.body,
        failures,
    }
    .into_message();
    tracing::info!(queue_id = %message.id, dsn_id = %bounce.id, %to, "delivery status notification queued");
    Some(bounce)
}

/// A recipient's next state, and whether it bounced because its queue lifetime ran out.
struct Decision {
    state: RecipientState,
    expired: bool,
}

impl From<RecipientState> for Decision {
    fn from(state: RecipientState) -> Decision {
        Decision {
            state,
            expired: false,
        }
    }
}

/// Turns a classified reply into the recipient's next state, logging it.
fn decide(
    shared: &Shared,
    message: &ClaimedMessage,
    recipient: &ClaimedRecipient,
    disposition: Disposition,
    reply: &AttemptReply,
    upstream: Option<&str>,
    jitter: f64,
) -> Decision {
    let id = &message.id;
    let address = &recipient.address;
    let upstream = upstream.unwrap_or("-");
    let is_bounce = message.sender.is_empty();
    let known = match reply {
        AttemptReply::Upstream(reply) => known_from(reply),
        AttemptReply::Api(_) => Some("Amazon SES API"),
        AttemptReply::Local { .. } => None,
    }
    .unwrap_or("-");
    match disposition {
        Disposition::Delivered => {
            tracing::info!(queue_id = %id, recipient = %address, %upstream, %reply, "delivered");
            RecipientState::Delivered.into()
        }
        Disposition::Held => {
            tracing::error!(queue_id = %id, recipient = %address, %upstream, %reply, %known,
                "held: our configuration cannot deliver it; fix it and reload (SIGHUP)");
            RecipientState::Held(HeldBy::Config).into()
        }
        Disposition::Bounced if is_bounce => {
            tracing::error!(queue_id = %id, recipient = %address, %upstream, %reply,
                "a bounce could not be delivered; held for inspection, not bounced again");
            RecipientState::Held(HeldBy::Bounce).into()
        }
        Disposition::Bounced => {
            tracing::warn!(queue_id = %id, recipient = %address, %upstream, %reply, "bounced");
            RecipientState::Bounced.into()
        }
        Disposition::Deferred(retry) => {
            let age = Duration::from_millis((now_ms() - message.received_at_ms).max(0) as u64);
            if age >= shared.config.queue_lifetime {
                tracing::warn!(queue_id = %id, recipient = %address, %reply, "queue lifetime exceeded");
                if is_bounce {
                    return RecipientState::Held(HeldBy::Bounce).into();
                }
                return Decision {
                    state: RecipientState::Bounced,
                    expired: true,
                };
            }
            let backoff = next_delay(&shared.config.retry, recipient.attempts + 1, jitter);
            let delay = match retry {
                Retry::After(pause) => pause.max(backoff),
                Retry::Backoff | Retry::SlowDown => backoff,
            };
            tracing::warn!(queue_id = %id, recipient = %address, %upstream, %reply, %known,
                retry_in = ?delay, "deferred");
            RecipientState::Deferred {
                next_attempt_at_ms: now_ms() + delay.as_millis() as i64,
            }
            .into()
        }
    }
}

/// How a transaction, with the new transactions that a recipient limit asked for, ended.
enum Rounds {
    /// A reply for every recipient.
    Answered(Vec<UpstreamReply>),
    /// The connection broke before any recipient was answered.
    Broken(Broken),
    /// The connection broke after some recipients were answered in an earlier round: their
    /// replies stand (they may already be delivered); the rest are `None`.
    Partial(Vec<Option<UpstreamReply>>, Broken),
}

/// Sends the transaction; recipients refused with "too many recipients" (RFC 5321
/// 4.5.3.1.10) go again at once in a new transaction on the same connection, for as long as
/// each round gets some recipient answered.
async fn send_in_rounds(
    connection: &mut Connection,
    sender: &str,
    outbound: &Outbound<'_>,
    addresses: &[&str],
) -> Rounds {
    let mut replies: Vec<Option<UpstreamReply>> = vec![None; addresses.len()];
    let mut pending: Vec<usize> = (0..addresses.len()).collect();
    // Each round answers at least one recipient, so this ends within `addresses.len()` rounds.
    while !pending.is_empty() {
        let round: Vec<&str> = pending.iter().map(|&i| addresses[i]).collect();
        let transaction = Transaction {
            sender,
            eight_bit_mime: outbound.eight_bit_mime,
            smtputf8: outbound.smtputf8,
            recipients: &round,
            body: &outbound.body,
        };
        let got = match connection.send(&transaction).await {
            Ok(got) => got,
            Err(broken) if replies.iter().all(Option::is_none) => return Rounds::Broken(broken),
            Err(broken) => return Rounds::Partial(replies, broken),
        };
        let progress = got.iter().any(|r| !is_too_many_recipients(r));
        let mut again = Vec::new();
        for (index, reply) in pending.into_iter().zip(got) {
            if progress && is_too_many_recipients(&reply) {
                again.push(index);
            } else {
                replies[index] = Some(reply);
            }
        }
        pending = again;
    }
    Rounds::Answered(replies.into_iter().flatten().collect())
}

/// Tries the upstreams in order until one answers for every recipient of this chunk.
async fn attempt(
    shared: &Shared,
    connections: &mut Connections,
    message: &ClaimedMessage,
    spooled: &Spooled<'_>,
    chunk: &[ClaimedRecipient],
) -> Attempt {
    let addresses: Vec<&str> = chunk.iter().map(|r| r.address.as_str()).collect();
    let mut failures = Vec::new();
    for index in shared.upstream_order() {
        let upstream = &shared.upstreams[index];
        upstream.rate.acquire().await;
        let to = Target {
            shared,
            index,
            message,
            spooled,
            addresses: &addresses,
        };
        let tried = match &upstream.route {
            Route::Smtp(endpoint) => try_smtp(&to, endpoint, connections).await,
            Route::SesApi(client) => try_ses_api(&to, client).await,
        };
        match tried {
            Tried::Answered(attempt) => {
                steer_by_replies(shared, index, &attempt).await;
                return attempt;
            }
            Tried::Failed(failure) => failures.push(failure),
        }
    }
    Attempt::no_upstream(failures, chunk.len())
}

/// One upstream's try at a chunk: what it is for.
struct Target<'a> {
    shared: &'a Shared,
    index: usize,
    message: &'a ClaimedMessage,
    spooled: &'a Spooled<'a>,
    addresses: &'a [&'a str],
}

impl Target<'_> {
    fn name(&self) -> String {
        self.shared.upstreams[self.index].config.name()
    }

    fn failed(&self, cause: Cause) -> Tried {
        Tried::Failed(UpstreamFailure {
            upstream: self.name(),
            cause,
        })
    }

    /// The message as this upstream can take it, or why it cannot.
    fn prepare(&self, capabilities: Capabilities) -> Result<Outbound<'_>, Tried> {
        prepare(self.spooled, capabilities).map_err(|unsendable| {
            tracing::warn!(queue_id = %self.message.id, upstream = %self.name(), reason = %unsendable,
                "this upstream cannot take the message; trying the next one");
            self.failed(Cause::Unsendable(unsendable))
        })
    }
}

enum Tried {
    /// The upstream answered for the recipients (some perhaps only in part).
    Answered(Attempt),
    /// It could not be used; the next one is tried.
    Failed(UpstreamFailure),
}

async fn try_smtp(to: &Target<'_>, endpoint: &Endpoint, connections: &mut Connections) -> Tried {
    let shared = to.shared;
    let index = to.index;
    let upstream = &shared.upstreams[index];
    let name = to.name();
    // A reused connection may have been closed by the upstream while idle: one fresh retry.
    for fresh_retry in [false, true] {
        let (mut connection, reused) = match connections.open.remove(&index) {
            Some(connection) if !fresh_retry => (connection, true),
            _ => match endpoint.connect(shared.timeouts).await {
                Ok(connection) => {
                    let size = connection.capabilities().size.map(|s| s as u64);
                    shared.sizes.learn(index, size);
                    (connection, false)
                }
                Err(unusable) => {
                    note_unusable(shared, index, &name, &unusable).await;
                    return to.failed(Cause::Unusable(unusable));
                }
            },
        };
        let outbound = match to.prepare(connection.capabilities()) {
            Ok(outbound) => outbound,
            Err(failed) => {
                connections.open.insert(index, connection);
                return failed;
            }
        };
        let sender = &to.message.sender;
        let lost = match send_in_rounds(&mut connection, sender, &outbound, to.addresses).await {
            Rounds::Answered(replies) => {
                upstream.mark_up();
                keep_or_retire(shared, connections, index, connection).await;
                return Tried::Answered(Attempt::answered(
                    shared,
                    index,
                    replies,
                    outbound.changes,
                ));
            }
            Rounds::Partial(replies, broken) => {
                let reason = lost_reason(broken);
                tracing::warn!(upstream = %name, %reason, "upstream failed between transactions");
                upstream.mark_down(shared.config.upstream_cooldown);
                let mut attempt = Attempt::answered(shared, index, Vec::new(), outbound.changes);
                attempt.outcomes = replies
                    .into_iter()
                    .map(|reply| match reply {
                        Some(reply) => (
                            classify(&reply, &shared.config.hold_on),
                            AttemptReply::Upstream(reply),
                        ),
                        None => (
                            Disposition::Deferred(Retry::Backoff),
                            AttemptReply::Local {
                                reason: format!("{name}: {reason}"),
                                status: TRANSIENT_LOCAL,
                            },
                        ),
                    })
                    .collect();
                return Tried::Answered(attempt);
            }
            Rounds::Broken(Broken::Lost(reason)) if reused => {
                tracing::debug!(upstream = %name, %reason, "idle connection was closed; reconnecting");
                continue;
            }
            Rounds::Broken(broken) => lost_reason(broken),
        };
        tracing::warn!(upstream = %name, reason = %lost, "upstream failed during the transaction");
        upstream.mark_down(shared.config.upstream_cooldown);
        return to.failed(Cause::Lost(lost));
    }
    to.failed(Cause::Lost("the connection closed twice".into()))
}

/// One `SendEmail` call for the chunk: the service's answer holds for every recipient.
async fn try_ses_api(to: &Target<'_>, client: &SesApiClient) -> Tried {
    let shared = to.shared;
    let upstream = &shared.upstreams[to.index];
    let outbound = match to.prepare(ses_api::CAPABILITIES) {
        Ok(outbound) => outbound,
        Err(failed) => return failed,
    };
    match client
        .send(&to.message.sender, to.addresses, &outbound.body)
        .await
    {
        Called::Answered(reply) => {
            upstream.mark_up();
            let disposition = classify_api(&reply);
            let mut attempt = Attempt::answered(shared, to.index, Vec::new(), outbound.changes);
            attempt.outcomes = vec![(disposition, AttemptReply::Api(reply)); to.addresses.len()];
            Tried::Answered(attempt)
        }
        Called::Unusable(unusable) => {
            note_unusable(shared, to.index, &to.name(), &unusable).await;
            to.failed(Cause::Unusable(unusable))
        }
    }
}

fn lost_reason(broken: Broken) -> String {
    match broken {
        Broken::ServiceUnavailable(reply) => reply.to_string(),
        Broken::Lost(reason) => format!("connection lost: {reason}"),
    }
}

/// Back in the pool, unless the connection has carried enough messages or lived long enough
/// (`max_messages_per_connection`, `max_connection_age`).
async fn keep_or_retire(
    shared: &Shared,
    connections: &mut Connections,
    index: usize,
    connection: Connection,
) {
    let upstream = &shared.upstreams[index].config;
    if connection.is_worn_out(
        upstream.max_messages_per_connection,
        upstream.max_connection_age,
    ) {
        tracing::debug!(upstream = %upstream.name(), "connection recycled");
        connection.quit().await;
    } else {
        connections.open.insert(index, connection);
    }
}

/// A throttling reply halves the upstream's rate for a while; a quota reply rests it for as
/// long as the recipients wait, so that other mail fails over instead of hitting the quota.
async fn steer_by_replies(shared: &Shared, index: usize, attempt: &Attempt) {
    let upstream = &shared.upstreams[index];
    let name = upstream.config.name();
    for (disposition, _) in &attempt.outcomes {
        match disposition {
            Disposition::Deferred(Retry::SlowDown) => {
                tracing::warn!(upstream = %name, "throttled by the upstream; halving the send rate");
                upstream.rate.throttle(shared.config.throttle_period).await;
                return;
            }
            Disposition::Deferred(Retry::After(pause)) => {
                tracing::warn!(upstream = %name, pause = ?pause, "upstream quota exhausted; resting it");
                upstream.mark_down(*pause);
                return;
            }
            _ => {}
        }
    }
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
