//! One delivery worker: takes claimed messages, has each chunk of recipients attempted
//! (attempt.rs), keeps its connections open for the next message, and decides and records
//! every recipient's outcome — delivered, deferred (when), held, bounced — with the DSN it
//! causes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::Shared;
use super::attempt::{Attempt, Connections, attempt};
use super::backoff::{jitter, next_delay};
use super::classify::{Disposition, Retry, known_from};
use super::dsn::{Action, Bounce, Failure};
use super::outbound::Spooled;
use crate::model::EnhancedStatus;
use crate::spool::{
    AttemptRecord, AttemptReply, ClaimedMessage, ClaimedRecipient, HeldBy, NewMessage,
    RecipientState, now_ms,
};

/// Connections idle this long are closed (SES closes idle ones itself after a while).
const IDLE_CLOSE: Duration = Duration::from_secs(30);

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

/// RFC 7372 3.2: X.7.23, SPF validation failed (for mail our preflight holds: it would).
const SPF_NOT_AUTHORIZED: EnhancedStatus = EnhancedStatus {
    class: 4,
    subject: 7,
    detail: 23,
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
    let preflight_hold = match &shared.audit {
        Some(audit) if !message.sender.is_empty() => audit.hold_reason(&message.sender).await,
        _ => None,
    };
    for chunk in message.recipients.chunks(chunk_size) {
        let started_at_ms = now_ms();
        let started = Instant::now();
        let attempt = match &preflight_hold {
            Some(reason) => Attempt::held(reason, SPF_NOT_AUTHORIZED, chunk.len()),
            None => attempt(shared, connections, &message, &spooled, chunk).await,
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let upstream = attempt.upstream.as_ref().map(|a| a.name.clone());
        let mut records = Vec::with_capacity(chunk.len());
        let mut expired = Vec::with_capacity(chunk.len());
        // One clock reading for the chunk: read per recipient, the millisecond could turn
        // between them and split recipients deferred together into two later claims.
        let together = Together {
            jitter,
            decided_at_ms: now_ms(),
        };
        for (recipient, (disposition, reply)) in chunk.iter().zip(attempt.outcomes) {
            let decision = decide(
                shared,
                &message,
                recipient,
                disposition,
                &reply,
                upstream.as_deref(),
                together,
            );
            expired.push(decision.expired);
            let delay_warned = is_due_a_delay_warning(shared, &message, recipient, &decision.state);
            records.push(AttemptRecord {
                recipient_id: recipient.id,
                lease: recipient.lease,
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
/// What the recipients of one attempt share, so that those deferred together come due
/// together and are retried in one transaction.
#[derive(Clone, Copy)]
struct Together {
    jitter: f64,
    decided_at_ms: i64,
}

fn decide(
    shared: &Shared,
    message: &ClaimedMessage,
    recipient: &ClaimedRecipient,
    disposition: Disposition,
    reply: &AttemptReply,
    upstream: Option<&str>,
    together: Together,
) -> Decision {
    let id = &message.id;
    let address = &recipient.address;
    let upstream = upstream.unwrap_or("-");
    let is_bounce = message.sender.is_empty();
    // Whose known reply it is, for the log lines of holds and deferrals only: delivered
    // recipients (nearly all) skip the table.
    let known = || {
        match reply {
            AttemptReply::Upstream(reply) => known_from(reply),
            AttemptReply::Api(_) => Some("Amazon SES API"),
            AttemptReply::Local { .. } => None,
        }
        .unwrap_or("-")
    };
    match disposition {
        Disposition::Delivered => {
            tracing::info!(queue_id = %id, recipient = %address, %upstream, %reply, "delivered");
            RecipientState::Delivered.into()
        }
        Disposition::Held => {
            tracing::error!(queue_id = %id, recipient = %address, %upstream, %reply, known = known(),
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
            let age = Duration::from_millis(
                (together.decided_at_ms - message.received_at_ms).max(0) as u64,
            );
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
            let backoff = next_delay(
                &shared.config.retry,
                recipient.attempts + 1,
                together.jitter,
            );
            let delay = match retry {
                Retry::After(pause) => pause.max(backoff),
                Retry::OutcomeUnknown => shared.config.retry.initial.max(backoff),
                Retry::Backoff | Retry::SlowDown => backoff,
            };
            tracing::warn!(queue_id = %id, recipient = %address, %upstream, %reply, known = known(),
                retry_in = ?delay, "deferred");
            RecipientState::Deferred {
                next_attempt_at_ms: together.decided_at_ms + delay.as_millis() as i64,
            }
            .into()
        }
    }
}
