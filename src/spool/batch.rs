//! One group commit's content, as both stores write it: new messages (submissions and bounces)
//! and delivery outcomes, turned into JSON rows and one blob holding every body, plus the
//! counters they move. A store binds these as parameters of its own SQL: the SQL never
//! changes with the batch's size, so each store prepares it once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::jobs::Outcome;
use crate::spool::{HeldBy, NewMessage, RecipientState};

/// A message to write, and the lease its recipients are born with when delivery takes it at
/// once (None: the scheduler finds it when it is due).
pub(super) struct ToInsert<'a> {
    pub message: &'a NewMessage,
    pub lease_until: Option<i64>,
}

/// Everything one transaction writes.
#[derive(Default)]
pub(super) struct Batch<'a> {
    pub new: Vec<ToInsert<'a>>,
    pub outcomes: Vec<&'a Outcome>,
    /// How many of `new` are submissions (the rest are bounces).
    pub submissions: usize,
}

/// New messages as rows: `messages` is a JSON array (one object per message, its recipients
/// nested), `bodies` every body back to back, each row saying where its body starts.
pub(super) struct NewRows {
    pub messages: String,
    pub bodies: Vec<u8>,
}

#[derive(Serialize)]
struct MessageRow<'a> {
    id: &'a str,
    received_at: i64,
    sender: &'a str,
    original_sender: &'a str,
    helo: Option<&'a str>,
    client_addr: Option<&'a str>,
    submitter: Option<&'a str>,
    protocol: &'a str,
    body_type: &'a str,
    smtputf8: bool,
    /// Where the body starts in the bodies blob (1-based, as `substr` counts) and its length.
    start: usize,
    size: usize,
    rewrites: String,
    lease_until: Option<i64>,
    recipients: Vec<RecipientRow<'a>>,
}

#[derive(Serialize)]
struct RecipientRow<'a> {
    address: &'a str,
    original_address: &'a str,
}

impl NewRows {
    pub fn build<'a>(new: impl IntoIterator<Item = &'a ToInsert<'a>>) -> NewRows {
        let new: Vec<&ToInsert> = new.into_iter().collect();
        // One allocation for every body: growing it would copy the bodies again and again.
        let mut bodies = Vec::with_capacity(new.iter().map(|n| n.message.body.len()).sum());
        let mut messages = Vec::with_capacity(new.len());
        for ToInsert {
            message: m,
            lease_until,
        } in new
        {
            messages.push(MessageRow {
                id: m.id.as_str(),
                received_at: m.received_at_ms,
                sender: &m.sender,
                original_sender: &m.original_sender,
                helo: m.origin.helo.as_deref(),
                client_addr: m.origin.client_addr.as_deref(),
                submitter: m.origin.submitter.as_deref(),
                protocol: m.origin.protocol,
                body_type: m.body_type.as_str(),
                smtputf8: m.smtputf8,
                start: bodies.len() + 1,
                size: m.body.len(),
                rewrites: m.rewrites.join("\n"),
                lease_until: *lease_until,
                recipients: m
                    .recipients
                    .iter()
                    .map(|r| RecipientRow {
                        address: &r.address,
                        original_address: &r.original_address,
                    })
                    .collect(),
            });
            bodies.extend_from_slice(&m.body);
        }
        NewRows {
            messages: json(&messages),
            bodies,
        }
    }
}

/// Outcomes as rows: one JSON object per recipient's attempt, the rewrite notes delivery
/// added, and the IDs of the messages concerned (whose finished state may change).
pub(super) struct OutcomeRows {
    pub records: String,
    pub notes: String,
    pub message_ids: String,
    /// The latest outcome's time: when finished messages finished.
    pub now: i64,
}

#[derive(Serialize)]
struct OutcomeRow<'a> {
    recipient_id: i64,
    /// The lease the attempt was made under: only its holder may record the outcome.
    lease: i64,
    state: &'a str,
    held_by: Option<&'a str>,
    next_attempt_at: Option<i64>,
    reply: String,
    reply_code: Option<u16>,
    reply_enhanced: Option<String>,
    upstream: Option<&'a str>,
    started_at: i64,
    duration_ms: i64,
    delay_warned: bool,
    now: i64,
}

/// What delivery changed in a message on the way out.
#[derive(Serialize)]
struct NotesRow<'a> {
    id: &'a str,
    notes: &'a str,
}

impl OutcomeRows {
    pub fn build(outcomes: &[&Outcome]) -> OutcomeRows {
        let mut records = Vec::new();
        for outcome in outcomes {
            for record in &outcome.records {
                let (next_attempt_at, held_by) = match &record.state {
                    RecipientState::Deferred { next_attempt_at_ms } => {
                        (Some(*next_attempt_at_ms), None)
                    }
                    RecipientState::Held(by) => (None, Some(by.as_str())),
                    _ => (None, None),
                };
                records.push(OutcomeRow {
                    recipient_id: record.recipient_id,
                    lease: record.lease,
                    state: record.state.name(),
                    held_by,
                    next_attempt_at,
                    reply: record.reply.to_string(),
                    reply_code: record.reply.code(),
                    reply_enhanced: record.reply.enhanced().map(|e| e.to_string()),
                    upstream: record.upstream.as_deref(),
                    started_at: record.started_at_ms,
                    duration_ms: record.duration_ms,
                    delay_warned: record.delay_warned,
                    now: outcome.now_ms,
                });
            }
        }
        let message_ids: Vec<&str> = outcomes.iter().map(|o| o.message_id.as_str()).collect();
        let notes: Vec<NotesRow> = outcomes
            .iter()
            .filter_map(|o| {
                o.notes.as_deref().map(|notes| NotesRow {
                    id: &o.message_id,
                    notes,
                })
            })
            .collect();
        OutcomeRows {
            records: json(&records),
            notes: json(&notes),
            message_ids: json(&message_ids),
            now: outcomes.iter().map(|o| o.now_ms).max().unwrap_or(0),
        }
    }
}

pub(super) fn json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs, strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Additions to the running counters, written in the same transaction as what they count.
#[derive(Debug, Default)]
pub(super) struct Counters(BTreeMap<&'static str, i64>);

impl Counters {
    /// What a batch moves: its submissions, and each recorded attempt by outcome.
    pub fn of(submissions: usize, outcomes: &[&Outcome]) -> Counters {
        let mut counters = Counters::default();
        if submissions > 0 {
            counters.add("enqueue_commits", 1);
            counters.add("messages_enqueued", submissions as i64);
        }
        for outcome in outcomes {
            for record in &outcome.records {
                // An attempt counts even if the operator deleted the recipient meanwhile.
                counters.add(record.state.name(), 1);
                if record.state == RecipientState::Held(HeldBy::Bounce) {
                    counters.add("bounce_failures", 1);
                }
                if record.delay_warned {
                    counters.add("delay_warnings_sent", 1);
                }
            }
            let failed = outcome
                .records
                .iter()
                .any(|r| r.state == RecipientState::Bounced);
            if outcome.bounce.is_some() && failed {
                counters.add("bounces_sent", 1);
            }
        }
        counters
    }

    pub fn add(&mut self, name: &'static str, by: i64) {
        *self.0.entry(name).or_default() += by;
    }

    /// `{"name": addition, ...}`, as the stores' counter UPDATE reads it.
    pub fn json(&self) -> String {
        json(&self.0)
    }
}
