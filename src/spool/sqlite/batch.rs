//! One group commit's SQL: new messages (submissions and bounces), delivery outcomes and the
//! counters, as one fixed script run in one call.
//!
//! Why one script: every statement sqlx runs is a round trip to its SQLite thread (two thread
//! wake-ups), and the profile showed those round trips, not SQLite's own work, as the largest
//! cost of a message. The script's SQL never changes, so SQLite prepares it once; the batch
//! travels as JSON arrays and one blob holding every body, which `substr` slices. The arrays
//! are read with `jsonb_each`, whose row values stay in SQLite's binary JSON: with
//! `json_each` every `value->>'field'` parsed the row's text again, which was a tenth of the
//! relay's CPU time with 20 sessions. The script is several statements in one prepared query, which the SQLite
//! driver of sqlx 0.9 runs in order (a behaviour sqlx calls deprecated; the spool tests fail
//! loudly if a later version drops it).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Row, SqliteConnection};

use super::jobs::Outcome;
use crate::spool::{ClaimedRecipient, HeldBy, NewMessage, RecipientState};

/// Parameters are positional, bound in the order they appear (see `Batch::write`): sqlx binds
/// `?NNN` per statement and stops binding once unused lower slots have used up the argument
/// list, so numbered parameters cannot be shared between the statements of one script.
macro_rules! script_body {
    () => {
        "BEGIN IMMEDIATE;
        INSERT INTO messages (id, received_at, sender, original_sender, helo, client_addr,
            submitter, protocol, body_type, smtputf8, size, rewrites)
        SELECT value->>'id', value->>'received_at', value->>'sender', value->>'original_sender',
            value->>'helo', value->>'client_addr', value->>'submitter', value->>'protocol',
            value->>'body_type', value->>'smtputf8', value->>'size', value->>'rewrites'
        FROM jsonb_each(?);
        INSERT INTO bodies (message_id, data)
        SELECT value->>'id', substr(?, value->>'start', value->>'size') FROM jsonb_each(?);
        INSERT INTO recipients (message_id, address, original_address, next_attempt_at,
            updated_at, lease_until)
        SELECT m.value->>'id', r.value->>'address', r.value->>'original_address',
            m.value->>'received_at', m.value->>'received_at', m.value->>'lease_until'
        FROM jsonb_each(?) AS m, jsonb_each(m.value, '$.recipients') AS r
        RETURNING id, message_id, address, lease_until IS NOT NULL;

        UPDATE recipients SET
            state = CASE WHEN recipients.state = 'held' AND recipients.held_by = 'operator'
                              AND o.value->>'state' = 'deferred'
                         THEN 'held' ELSE o.value->>'state' END,
            held_by = CASE WHEN recipients.state = 'held' AND recipients.held_by = 'operator'
                                AND o.value->>'state' = 'deferred'
                           THEN 'operator' ELSE o.value->>'held_by' END,
            attempts = attempts + 1, last_reply = o.value->>'reply',
            delay_warned = MAX(delay_warned, o.value->>'delay_warned'),
            next_attempt_at = COALESCE(o.value->>'next_attempt_at', next_attempt_at),
            lease_until = NULL, updated_at = o.value->>'now'
        FROM jsonb_each(?) AS o WHERE recipients.id = o.value->>'recipient_id';
        INSERT INTO attempts (recipient_id, started_at, duration_ms, upstream, reply, outcome,
            reply_code, reply_enhanced)
        SELECT o.value->>'recipient_id', o.value->>'started_at', o.value->>'duration_ms',
            o.value->>'upstream', o.value->>'reply', o.value->>'state',
            o.value->>'reply_code', o.value->>'reply_enhanced'
        FROM jsonb_each(?) AS o
        WHERE EXISTS (SELECT 1 FROM recipients WHERE id = o.value->>'recipient_id');
        UPDATE messages SET rewrites = CASE WHEN messages.rewrites = '' THEN n.value->>'notes'
                ELSE messages.rewrites || char(10) || (n.value->>'notes') END
        FROM jsonb_each(?) AS n
        WHERE messages.id = n.value->>'id' AND instr(messages.rewrites, n.value->>'notes') = 0;
        UPDATE messages SET finished_at = ?
        WHERE id IN (SELECT value FROM jsonb_each(?)) AND finished_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = messages.id
                          AND state IN ('queued', 'deferred', 'held'));
        UPDATE bodies SET data = substr(data, 1, instr(data, X'0D0A0D0A') + 1)
        WHERE message_id IN (SELECT id FROM messages WHERE id IN (SELECT value FROM jsonb_each(?))
                             AND finished_at IS NOT NULL)
          AND instr(data, X'0D0A0D0A') > 0;

        UPDATE counters SET value = counters.value + c.value FROM jsonb_each(?) AS c
        WHERE counters.name = c.key;
        COMMIT;"
    };
}

/// The script, with the `synchronous` setting of its commit. Only the recipients INSERT
/// returns rows.
fn script(durable: bool) -> &'static str {
    if durable {
        concat!("PRAGMA synchronous = FULL;", script_body!())
    } else {
        concat!("PRAGMA synchronous = NORMAL;", script_body!())
    }
}

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
    pub counters: Counters,
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

/// What delivery changed in a message on the way out.
#[derive(Serialize)]
struct NotesRow<'a> {
    id: &'a str,
    notes: &'a str,
}

#[derive(Serialize)]
struct OutcomeRow<'a> {
    recipient_id: i64,
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

impl Batch<'_> {
    /// Runs the batch in one transaction: committed with `synchronous=FULL` when `durable`.
    /// Returns the recipients born leased, with their message id. On error the transaction
    /// is rolled back and nothing of the batch is written.
    pub async fn write(
        mut self,
        conn: &mut SqliteConnection,
        durable: bool,
    ) -> Result<Vec<(String, ClaimedRecipient)>, sqlx::Error> {
        let mut bodies = Vec::with_capacity(self.new.iter().map(|n| n.message.body.len()).sum());
        let mut messages = Vec::with_capacity(self.new.len());
        for ToInsert {
            message: m,
            lease_until,
        } in &self.new
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
        let mut outcomes = Vec::new();
        for outcome in &self.outcomes {
            for record in &outcome.records {
                let (next_attempt_at, held_by) = match &record.state {
                    RecipientState::Deferred { next_attempt_at_ms } => {
                        (Some(*next_attempt_at_ms), None)
                    }
                    RecipientState::Held(by) => (None, Some(by.as_str())),
                    _ => (None, None),
                };
                outcomes.push(OutcomeRow {
                    recipient_id: record.recipient_id,
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
                // An attempt counts even if the operator deleted the recipient meanwhile.
                self.counters.add(record.state.name(), 1);
                if record.state == RecipientState::Held(HeldBy::Bounce) {
                    self.counters.add("bounce_failures", 1);
                }
                if record.delay_warned {
                    self.counters.add("delay_warnings_sent", 1);
                }
            }
            let failed = outcome
                .records
                .iter()
                .any(|r| r.state == RecipientState::Bounced);
            if outcome.bounce.is_some() && failed {
                self.counters.add("bounces_sent", 1);
            }
        }
        let outcome_ids: Vec<&str> = self
            .outcomes
            .iter()
            .map(|o| o.message_id.as_str())
            .collect();
        let notes: Vec<NotesRow> = self
            .outcomes
            .iter()
            .filter_map(|o| {
                o.notes.as_deref().map(|notes| NotesRow {
                    id: &o.message_id,
                    notes,
                })
            })
            .collect();
        let now = self.outcomes.iter().map(|o| o.now_ms).max().unwrap_or(0);

        let (messages, outcomes, outcome_ids) =
            (json(&messages), json(&outcomes), json(&outcome_ids));
        // In the order the script's parameters appear.
        let result = sqlx::query(script(durable))
            .bind(messages.clone()) // INSERT INTO messages
            .bind(bodies) // INSERT INTO bodies ...
            .bind(messages.clone()) // ... with their ids
            .bind(messages) // INSERT INTO recipients
            .bind(outcomes.clone()) // UPDATE recipients
            .bind(outcomes) // INSERT INTO attempts
            .bind(json(&notes)) // UPDATE messages SET rewrites
            .bind(now) // UPDATE messages SET finished_at ...
            .bind(outcome_ids.clone()) // ... of these messages
            .bind(outcome_ids) // UPDATE bodies
            .bind(json(&self.counters.0)) // UPDATE counters
            .fetch_all(&mut *conn)
            .await;
        match result {
            Ok(rows) => Ok(rows
                .into_iter()
                .filter(|row| row.get::<bool, _>(3))
                .map(|row| {
                    (
                        row.get(1),
                        ClaimedRecipient {
                            id: row.get(0),
                            address: row.get(2),
                            attempts: 0,
                            delay_warned: false,
                        },
                    )
                })
                .collect()),
            Err(error) => {
                // The script stopped inside its transaction; end it so that the next one can
                // begin. (Failing here too means there was no transaction left to end.)
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(error)
            }
        }
    }
}

fn json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs, strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Additions to the running counters, written in the same transaction as what they count.
#[derive(Debug, Default)]
pub(super) struct Counters(BTreeMap<&'static str, i64>);

impl Counters {
    pub fn add(&mut self, name: &'static str, by: i64) {
        *self.0.entry(name).or_default() += by;
    }

    /// Writes the counters alone, outside any batch.
    pub async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE counters SET value = counters.value + c.value FROM jsonb_each(?1) AS c
             WHERE counters.name = c.key",
        )
        .bind(json(&self.0))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
