//! What the queries return, row by row, and how rows become reports and claimed messages. Both stores'
//! queries name their columns as these structs do, so the assembly is written once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::BodyType;
use crate::spool::{
    AttemptSummary, ClaimedMessage, ClaimedRecipient, MessageDetails, MessageSummary, QueueStats,
    RecipientSummary, StateCount,
};

/// One recipient of a listed message, with its message's envelope.
#[derive(sqlx::FromRow)]
pub(super) struct ListRow {
    id: String,
    received_at: i64,
    size: i64,
    sender: String,
    original_sender: String,
    address: String,
    original_address: String,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    last_reply: Option<String>,
    held_by: Option<String>,
}

/// Rows ordered by message, then recipient, grouped into messages.
pub(super) fn summaries(rows: Vec<ListRow>) -> Vec<MessageSummary> {
    let mut messages: Vec<MessageSummary> = Vec::new();
    for row in rows {
        let recipient = RecipientSummary {
            address: row.address,
            original_address: row.original_address,
            state: row.state,
            attempts: row.attempts,
            next_attempt_at_ms: row.next_attempt_at,
            last_reply: row.last_reply,
            held_by: row.held_by,
        };
        match messages.last_mut() {
            Some(message) if message.id == row.id => message.recipients.push(recipient),
            _ => messages.push(MessageSummary {
                id: row.id,
                received_at_ms: row.received_at,
                size: row.size,
                sender: row.sender,
                original_sender: row.original_sender,
                recipients: vec![recipient],
            }),
        }
    }
    messages
}

/// What `queue show` adds to a message's summary.
#[derive(sqlx::FromRow)]
pub(super) struct DetailRow {
    helo: Option<String>,
    client_addr: Option<String>,
    submitter: Option<String>,
    protocol: String,
    body_type: String,
    smtputf8: bool,
    finished_at: Option<i64>,
    rewrites: String,
    /// The stored message; None if the body row is missing.
    data: Option<Vec<u8>>,
}

/// One attempt, as `AttemptSummary` names its fields.
#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    recipient: String,
    started_at: i64,
    duration_ms: i64,
    upstream: Option<String>,
    reply: String,
    outcome: String,
    reply_code: Option<i64>,
    reply_enhanced: Option<String>,
}

pub(super) fn details(
    summary: MessageSummary,
    row: DetailRow,
    attempts: Vec<AttemptRow>,
) -> MessageDetails {
    let stored = row.data.unwrap_or_default();
    let header_end = stored
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| end + 2)
        .unwrap_or(stored.len());
    let headers = String::from_utf8_lossy(&stored[..header_end]).to_string();
    MessageDetails {
        summary,
        helo: row.helo,
        client_addr: row.client_addr,
        submitter: row.submitter,
        protocol: row.protocol,
        body_type: row.body_type,
        smtputf8: row.smtputf8,
        finished_at_ms: row.finished_at,
        rewrites: row.rewrites.lines().map(String::from).collect(),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptSummary {
                recipient: a.recipient,
                started_at_ms: a.started_at,
                duration_ms: a.duration_ms,
                upstream: a.upstream,
                reply: a.reply,
                outcome: a.outcome,
                reply_code: a.reply_code,
                reply_enhanced: a.reply_enhanced,
            })
            .collect(),
        headers,
        body: row.finished_at.is_none().then_some(stored),
    }
}

/// Recipients, messages and bytes in one state.
#[derive(sqlx::FromRow)]
pub(super) struct StateRow {
    state: String,
    recipients: i64,
    messages: i64,
    bytes: i64,
}

/// Messages still pending, their bytes and the oldest one's arrival.
#[derive(sqlx::FromRow)]
pub(super) struct PendingRow {
    messages: i64,
    bytes: i64,
    oldest: Option<i64>,
}

/// A pending recipient and its message's arrival.
#[derive(sqlx::FromRow)]
pub(super) struct PendingRecipientRow {
    address: String,
    received_at: i64,
}

pub(super) fn stats(
    states: Vec<StateRow>,
    pending: PendingRow,
    recipients: Vec<PendingRecipientRow>,
) -> QueueStats {
    QueueStats {
        states: states
            .into_iter()
            .map(|row| {
                (
                    row.state,
                    StateCount {
                        recipients: row.recipients,
                        messages: row.messages,
                        bytes: row.bytes,
                    },
                )
            })
            .collect(),
        pending_messages: pending.messages,
        pending_bytes: pending.bytes,
        oldest_pending_ms: pending.oldest,
        pending_recipients: recipients
            .into_iter()
            .map(|row| {
                let domain = row
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_lowercase())
                    .unwrap_or_else(|| "(local)".into());
                (domain, row.received_at)
            })
            .collect(),
    }
}

/// A claimed recipient, with the lease it is now under.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedRow {
    id: i64,
    message_id: String,
    address: String,
    attempts: i64,
    delay_warned: bool,
    lease: i64,
}

/// The envelope and body of a message some of whose recipients were claimed.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedMessageRow {
    id: String,
    sender: String,
    received_at: i64,
    body_type: String,
    smtputf8: bool,
    data: Vec<u8>,
}

impl ClaimedRow {
    /// Its message's ID, and the recipient as delivery sees it.
    pub fn into_parts(self) -> (String, ClaimedRecipient) {
        (
            self.message_id,
            ClaimedRecipient {
                id: self.id,
                lease: self.lease,
                address: self.address,
                attempts: self.attempts,
                delay_warned: self.delay_warned,
            },
        )
    }
}

/// The claimed recipients by message ID.
pub(super) fn by_message(rows: Vec<ClaimedRow>) -> HashMap<String, Vec<ClaimedRecipient>> {
    let mut by_message: HashMap<String, Vec<ClaimedRecipient>> = HashMap::new();
    for row in rows {
        let (message_id, recipient) = row.into_parts();
        by_message.entry(message_id).or_default().push(recipient);
    }
    by_message
}

/// Each message read with the recipients claimed of it, recipients in the order they were
/// added.
pub(super) fn claimed(
    mut recipients: HashMap<String, Vec<ClaimedRecipient>>,
    messages: Vec<ClaimedMessageRow>,
) -> Vec<ClaimedMessage> {
    let mut claimed = Vec::with_capacity(messages.len());
    for row in messages {
        let Some(mut of_message) = recipients.remove(&row.id) else {
            continue;
        };
        of_message.sort_by_key(|r| r.id);
        claimed.push(ClaimedMessage {
            id: row.id,
            sender: row.sender,
            received_at_ms: row.received_at,
            body_type: BodyType::from_stored(&row.body_type),
            smtputf8: row.smtputf8,
            body: Arc::new(row.data),
            recipients: of_message,
        });
    }
    claimed
}
