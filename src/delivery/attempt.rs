//! One attempt at a chunk of a message's recipients: the upstreams in order until one
//! answers — SMTP on the worker's pooled connection (with the new transactions a recipient
//! limit asks for), or one SES API call — failing over on unreachable, refused, TLS or AUTH
//! trouble, and on an upstream that cannot take the message as it is.

use std::collections::HashMap;

use super::classify::{Disposition, Retry, classify, classify_api, is_too_many_recipients};
use super::outbound::{Capabilities, Outbound, Spooled, Unsendable, Verdict, prepare};
use super::ses_api::{self, Called, SesApiClient};
use super::upstream::{Broken, Connection, Endpoint, Transaction, Unusable};
use super::{Route, Shared};
use crate::model::{EnhancedStatus, UpstreamReply};
use crate::spool::{AttemptReply, ClaimedMessage, ClaimedRecipient};

/// The worker's open connections, by upstream index, valid for one configuration generation.
pub(super) struct Connections {
    pub generation: u64,
    pub open: HashMap<usize, Connection>,
}

impl Connections {
    pub async fn close_all(&mut self) {
        for (_, connection) in self.open.drain() {
            connection.quit().await;
        }
    }
}

/// What one attempt at a group of recipients came to: each recipient's disposition with the
/// reply behind it, the upstream that answered (if any), and what was changed on the way out.
pub(super) struct Attempt {
    pub upstream: Option<Answered>,
    pub outcomes: Vec<(Disposition, AttemptReply)>,
    pub changes: Vec<String>,
}

/// The upstream that answered: its name for the history, its host for DSNs' Remote-MTA.
pub(super) struct Answered {
    pub name: String,
    pub host: String,
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
    /// The upstream at `index` answered every recipient in one reply each.
    fn answered(
        shared: &Shared,
        index: usize,
        replies: Vec<UpstreamReply>,
        changes: Vec<String>,
    ) -> Attempt {
        let outcomes = replies
            .into_iter()
            .map(|reply| upstream_outcome(shared, reply))
            .collect();
        Attempt::at(shared, index, outcomes, changes)
    }

    /// The upstream at `index` took the attempt; `outcomes` says what became of each recipient.
    fn at(
        shared: &Shared,
        index: usize,
        outcomes: Vec<(Disposition, AttemptReply)>,
        changes: Vec<String>,
    ) -> Attempt {
        let upstream = &shared.upstreams[index].config;
        Attempt {
            upstream: Some(Answered {
                name: upstream.name(),
                host: upstream.host(),
            }),
            outcomes,
            changes,
        }
    }

    /// Not tried: our own check (preflight) holds every recipient, for `reason`.
    pub fn held(reason: &str, status: EnhancedStatus, recipients: usize) -> Attempt {
        let reply = AttemptReply::Local {
            reason: reason.to_string(),
            status,
        };
        Attempt {
            upstream: None,
            outcomes: vec![(Disposition::Held, reply); recipients],
            changes: Vec::new(),
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

/// An upstream's reply for one recipient, classified.
fn upstream_outcome(shared: &Shared, reply: UpstreamReply) -> (Disposition, AttemptReply) {
    (
        classify(&reply, &shared.config.hold_on),
        AttemptReply::Upstream(reply),
    )
}

/// RFC 3463 4.4.1: no answer from host (for our own reasons that are not final).
const TRANSIENT_LOCAL: EnhancedStatus = EnhancedStatus {
    class: 4,
    subject: 4,
    detail: 1,
};

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
pub(super) async fn attempt(
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
                let retry = match broken {
                    Broken::OutcomeUnknown(_) => Retry::OutcomeUnknown,
                    _ => Retry::Backoff,
                };
                let reason = lost_reason(broken);
                tracing::warn!(upstream = %name, %reason, "upstream failed between transactions");
                upstream.mark_down(shared.config.upstream_cooldown);
                let outcomes = replies
                    .into_iter()
                    .map(|reply| match reply {
                        Some(reply) => upstream_outcome(shared, reply),
                        None => (
                            Disposition::Deferred(retry),
                            AttemptReply::Local {
                                reason: format!("{name}: {reason}"),
                                status: TRANSIENT_LOCAL,
                            },
                        ),
                    })
                    .collect();
                return Tried::Answered(Attempt::at(shared, index, outcomes, outbound.changes));
            }
            Rounds::Broken(Broken::Lost(reason)) if reused => {
                tracing::debug!(upstream = %name, %reason, "idle connection was closed; reconnecting");
                continue;
            }
            // Not again at once, here or at another upstream: it may have been delivered.
            Rounds::Broken(Broken::OutcomeUnknown(reason)) => {
                return Tried::Answered(outcome_unknown(to, outbound.changes, &reason));
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
            let outcome = (classify_api(&reply), AttemptReply::Api(reply));
            let outcomes = vec![outcome; to.addresses.len()];
            Tried::Answered(Attempt::at(shared, to.index, outcomes, outbound.changes))
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
        Broken::OutcomeUnknown(reason) => format!("outcome unknown: {reason}"),
    }
}

/// The whole message went out and no final reply came (RFC 1047): the recipients wait at
/// least `retry_initial`, the attempt says "outcome unknown", and it is counted.
fn outcome_unknown(to: &Target<'_>, changes: Vec<String>, reason: &str) -> Attempt {
    let shared = to.shared;
    let name = to.name();
    tracing::warn!(queue_id = %to.message.id, upstream = %name, %reason,
        "outcome unknown: the message may have been delivered; not retried before retry_initial");
    shared.metrics.outcome_unknown(&name);
    shared.upstreams[to.index].mark_down(shared.config.upstream_cooldown);
    let reply = AttemptReply::Local {
        reason: format!(
            "outcome unknown: {reason}; it may have been delivered, so it is retried only after the backoff"
        ),
        status: TRANSIENT_LOCAL,
    };
    let outcomes = vec![(Disposition::Deferred(Retry::OutcomeUnknown), reply); to.addresses.len()];
    Attempt::at(shared, to.index, outcomes, changes)
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
