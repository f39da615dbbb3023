//! One group commit's SQL for SQLite: new messages (submissions and bounces), delivery
//! outcomes and the counters (see `spool::batch`), as one fixed script run in one call (one
//! of a few: a batch runs only the parts it has rows for).
//!
//! Why one script: every statement sqlx runs is a round trip to its SQLite thread (two thread
//! wake-ups), and the profile showed those round trips, not SQLite's own work, as the largest
//! cost of a message. A script's SQL never changes, so SQLite prepares it once; the batch
//! travels as JSON arrays and one blob holding every body, which `substr` slices. The arrays
//! are read with `jsonb_each`, whose row values stay in SQLite's binary JSON: with
//! `json_each` every `value->>'field'` parsed the row's text again, which was a tenth of the
//! relay's CPU time with 20 sessions. A script is several statements in one prepared query,
//! which the SQLite driver of sqlx 0.9 runs in order (a behaviour sqlx calls deprecated; the spool tests fail
//! loudly if a later version drops it).

use sqlx::{Row, SqliteConnection};

use crate::spool::ClaimedRecipient;
use crate::spool::batch::{Batch, Counters, NewRows, OutcomeRows};

/// Parameters are positional, bound in the order they appear (see `write`): sqlx binds
/// `?NNN` per statement and stops binding once unused lower slots have used up the argument
/// list, so numbered parameters cannot be shared between the statements of one script.
macro_rules! insert_new {
    () => {
        "
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
"
    };
}

/// Delivery outcomes: the recipients' new state, the attempt, rewrite notes, finished
/// messages and their bodies cut down to the headers.
macro_rules! record_outcomes {
    () => {
        "
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
"
    };
}

/// One transaction of the given parts, and the counters they moved.
macro_rules! script {
    ($synchronous:literal $(, $part:expr)*) => {
        concat!("PRAGMA synchronous = ", $synchronous, "; BEGIN IMMEDIATE;", $($part,)*
        "UPDATE counters SET value = counters.value + c.value FROM jsonb_each(?) AS c
        WHERE counters.name = c.key;
        COMMIT;")
    };
}

/// The script for a batch: only the parts it has rows for (a script is prepared once per
/// connection, but `sendmail` opens a connection per message, and there parsing the whole
/// script was a tenth of its time), with the `synchronous` setting of its commit. Only the
/// recipients INSERT returns rows.
fn script(durable: bool, new: bool, outcomes: bool) -> &'static str {
    match (durable, new, outcomes) {
        (true, true, true) => script!("FULL", insert_new!(), record_outcomes!()),
        (true, true, false) => script!("FULL", insert_new!()),
        (true, false, true) => script!("FULL", record_outcomes!()),
        (true, false, false) => script!("FULL"),
        (false, true, true) => script!("NORMAL", insert_new!(), record_outcomes!()),
        (false, true, false) => script!("NORMAL", insert_new!()),
        (false, false, true) => script!("NORMAL", record_outcomes!()),
        (false, false, false) => script!("NORMAL"),
    }
}

/// Runs the batch in one transaction: committed with `synchronous=FULL` when `durable`.
/// Returns the recipients born leased, with their message id. On error the transaction is
/// rolled back and nothing of the batch is written. (A single process delivers from a SQLite
/// spool, so an outcome's lease is not checked: its leases are cleared only at start.)
pub(super) async fn write(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
    durable: bool,
) -> Result<Vec<(String, ClaimedRecipient)>, sqlx::Error> {
    let new = NewRows::build(&batch.new);
    let outcomes = OutcomeRows::build(&batch.outcomes);
    let counters = Counters::of(batch.submissions, &batch.outcomes);
    let (has_new, has_outcomes) = (!batch.new.is_empty(), !batch.outcomes.is_empty());
    // In the order the script's parameters appear.
    let mut query = sqlx::query(script(durable, has_new, has_outcomes));
    if has_new {
        query = query
            .bind(new.messages.clone()) // INSERT INTO messages
            .bind(new.bodies) // INSERT INTO bodies ...
            .bind(new.messages.clone()) // ... with their ids
            .bind(new.messages); // INSERT INTO recipients
    }
    if has_outcomes {
        query = query
            .bind(outcomes.records.clone()) // UPDATE recipients
            .bind(outcomes.records) // INSERT INTO attempts
            .bind(outcomes.notes) // UPDATE messages SET rewrites
            .bind(outcomes.now) // UPDATE messages SET finished_at ...
            .bind(outcomes.message_ids.clone()) // ... of these messages
            .bind(outcomes.message_ids); // UPDATE bodies
    }
    let result = query
        .bind(counters.json()) // UPDATE counters
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
                        lease: 0,
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

/// Writes counters alone, outside any batch.
pub(super) async fn write_counters(
    conn: &mut SqliteConnection,
    counters: &Counters,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE counters SET value = counters.value + c.value FROM jsonb_each(?1) AS c
         WHERE counters.name = c.key",
    )
    .bind(counters.json())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
