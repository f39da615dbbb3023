//! The group commit's transactions on PostgreSQL. A batch is one transaction of a few
//! statements, each taking the whole batch as JSON rows (see `spool::batch`), so the SQL never
//! changes and the round trips do not grow with the batch:
//!
//! 1. outcomes, applied only under the lease they were attempted under: a node that stalled
//!    past its lease finds its lease gone and records nothing (nor the bounce it produced);
//! 2. new messages, their bodies and recipients in one statement, idempotent by queue ID
//!    (`ON CONFLICT DO NOTHING`: a maildrop message moved twice is stored once);
//! 3. messages finished by the outcomes, their bodies cut to the header, delivery's notes;
//! 4. counters, and a NOTIFY when mail is due that no worker of ours took.

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Transaction};

use super::node::NodeId;
use super::{DUE_CHANNEL, write_error};
use crate::spool::batch::{Batch, Counters, NewRows, OutcomeRows, ToInsert};
use crate::spool::group_commit::CommitStore;
use crate::spool::jobs::{ClaimRequest, Outcome};
use crate::spool::rows::{self, ClaimedMessageRow, ClaimedRow};
use crate::spool::{ClaimedMessage, ClaimedRecipient, SpoolError};

pub(in crate::spool) struct PgCommit {
    /// One connection: the writer is this node's only writer of mail.
    pool: PgPool,
    node: NodeId,
}

impl PgCommit {
    pub fn new(pool: PgPool, node: NodeId) -> PgCommit {
        PgCommit { pool, node }
    }
}

impl CommitStore for PgCommit {
    async fn write(
        &mut self,
        batch: &Batch<'_>,
        durable: bool,
    ) -> Result<Vec<(String, ClaimedRecipient)>, SpoolError> {
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        if !durable {
            // Outcomes alone: a server crash may forget the latest ones, which means a
            // message delivered again, never one lost (as SQLite's synchronous=NORMAL).
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
        }
        let recorded = record_outcomes(&mut tx, &self.node, &batch.outcomes).await?;
        // A bounce is queued only with the outcome that produced it.
        let new: Vec<&ToInsert> = batch
            .new
            .iter()
            .filter(|insert| {
                !batch.outcomes.iter().any(|o| {
                    o.bounce
                        .as_ref()
                        .is_some_and(|b| std::ptr::eq(b, insert.message))
                        && !recorded.iter().any(|r| std::ptr::eq(*r, *o))
                })
            })
            .collect();
        let born_leased = insert_messages(&mut tx, &self.node, &new).await?;
        let mut counters = Counters::of(batch.submissions, &recorded);
        let stale = batch.outcomes.len() - recorded.len();
        if stale > 0 {
            counters.add("stale_outcomes", stale as i64);
        }
        sqlx::query(
            "UPDATE counters SET value = counters.value + c.value::bigint
             FROM jsonb_each_text($1::jsonb) AS c WHERE counters.name = c.key",
        )
        .bind(counters.json())
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        if new.iter().any(|insert| insert.lease_until.is_none()) {
            notify_due(&mut tx).await?;
        }
        tx.commit().await.map_err(write_error)?;
        Ok(born_leased)
    }

    async fn claim(
        &mut self,
        requests: &[&ClaimRequest],
    ) -> Result<Vec<Vec<ClaimedMessage>>, SpoolError> {
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        let mut claimed = Vec::with_capacity(requests.len());
        for request in requests {
            claimed.push(claim_in(&mut tx, &self.node, request).await?);
        }
        tx.commit().await.map_err(write_error)?;
        Ok(claimed)
    }

    fn committed(&mut self) {}

    async fn close(self) {
        self.pool.close().await;
    }
}

/// Applies the outcomes whose leases are still ours; returns those recorded whole. An
/// outcome some of whose recipients another node has taken over since is logged and dropped
/// for those recipients: that node's attempt is the one that counts.
async fn record_outcomes<'a>(
    tx: &mut Transaction<'_, Postgres>,
    node: &NodeId,
    outcomes: &[&'a Outcome],
) -> Result<Vec<&'a Outcome>, SpoolError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let rows = OutcomeRows::build(outcomes);
    let applied: Vec<i64> = sqlx::query_scalar(
        "WITH o AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS o(recipient_id bigint, lease bigint,
                 state text, held_by text, next_attempt_at bigint, reply text, reply_code bigint,
                 reply_enhanced text, upstream text, started_at bigint, duration_ms bigint,
                 delay_warned boolean, now bigint)),
         updated AS (
             UPDATE recipients r SET
                 state = CASE WHEN r.state = 'held' AND r.held_by = 'operator'
                                   AND o.state = 'deferred' THEN 'held' ELSE o.state END,
                 held_by = CASE WHEN r.state = 'held' AND r.held_by = 'operator'
                                     AND o.state = 'deferred' THEN 'operator' ELSE o.held_by END,
                 attempts = r.attempts + 1, last_reply = o.reply,
                 delay_warned = r.delay_warned OR o.delay_warned,
                 next_attempt_at = COALESCE(o.next_attempt_at, r.next_attempt_at),
                 lease_until = NULL, lease_owner = NULL, lease_token = NULL, updated_at = o.now
             FROM o WHERE r.id = o.recipient_id AND r.lease_owner = $2 AND r.lease_token = o.lease
             RETURNING r.id),
         attempts AS (
             INSERT INTO attempts (recipient_id, started_at, duration_ms, upstream, reply,
                 outcome, reply_code, reply_enhanced, node)
             SELECT o.recipient_id, o.started_at, o.duration_ms, o.upstream, o.reply, o.state,
                 o.reply_code, o.reply_enhanced, $2
             FROM o JOIN updated ON updated.id = o.recipient_id)
         SELECT id FROM updated",
    )
    .bind(&rows.records)
    .bind(node.as_str())
    .fetch_all(&mut **tx)
    .await
    .map_err(write_error)?;
    let applied: HashSet<i64> = applied.into_iter().collect();
    let mut recorded = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let lost = outcome
            .records
            .iter()
            .filter(|r| !applied.contains(&r.recipient_id))
            .count();
        if lost == 0 {
            recorded.push(*outcome);
        } else {
            tracing::warn!(queue_id = %outcome.message_id, recipients = lost,
                "outcome not recorded: the lease ran out and another node took the recipients over (or they were deleted)");
        }
    }
    // Finished messages keep only their header section, for the record. (The IDs go as an
    // array, not JSON: the planner then looks them up by key instead of scanning.)
    let message_ids: Vec<&str> = outcomes.iter().map(|o| o.message_id.as_str()).collect();
    sqlx::query(
        "WITH finished AS (
             UPDATE messages SET finished_at = $1
             WHERE id = ANY($2) AND finished_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = messages.id
                               AND state IN ('queued', 'deferred', 'held'))
             RETURNING id)
         UPDATE bodies SET data = substring(data FROM 1 FOR position('\\x0d0a0d0a'::bytea IN data) + 1)
         WHERE bodies.message_id = ANY(ARRAY(SELECT id FROM finished))
           AND position('\\x0d0a0d0a'::bytea IN data) > 0",
    )
    .bind(rows.now)
    .bind(&message_ids)
    .execute(&mut **tx)
    .await
    .map_err(write_error)?;
    if outcomes.iter().any(|o| o.notes.is_some()) {
        sqlx::query(
            "UPDATE messages SET rewrites = CASE WHEN messages.rewrites = '' THEN n.notes
                     ELSE messages.rewrites || E'\\n' || n.notes END
             FROM jsonb_to_recordset($1::jsonb) AS n(id text, notes text)
             WHERE messages.id = n.id AND strpos(messages.rewrites, n.notes) = 0",
        )
        .bind(&rows.notes)
        .execute(&mut **tx)
        .await
        .map_err(write_error)?;
    }
    Ok(recorded)
}

/// Inserts the messages not stored yet, with their bodies and recipients (leased to this node
/// when delivery takes them at once); returns the recipients born leased.
async fn insert_messages(
    tx: &mut Transaction<'_, Postgres>,
    node: &NodeId,
    new: &[&ToInsert<'_>],
) -> Result<Vec<(String, ClaimedRecipient)>, SpoolError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let rows = NewRows::build(new.iter().copied());
    let inserted: Vec<BornRow> = sqlx::query_as(
        "WITH m AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS m(id text, received_at bigint,
                 sender text, original_sender text, helo text, client_addr text, submitter text,
                 protocol text, body_type text, smtputf8 boolean, start integer, size integer,
                 rewrites text, lease_until bigint, recipients jsonb)),
         stored AS (
             INSERT INTO messages (id, received_at, sender, original_sender, helo, client_addr,
                 submitter, protocol, body_type, smtputf8, size, rewrites)
             SELECT id, received_at, sender, original_sender, helo, client_addr, submitter,
                 protocol, body_type, smtputf8, size, rewrites FROM m
             ON CONFLICT (id) DO NOTHING RETURNING id),
         bodies AS (
             INSERT INTO bodies (message_id, data)
             SELECT m.id, substring($2::bytea FROM m.start FOR m.size) FROM m JOIN stored USING (id))
         INSERT INTO recipients (message_id, address, original_address, next_attempt_at,
             updated_at, lease_until, lease_owner, lease_token)
         SELECT m.id, r.address, r.original_address, m.received_at, m.received_at, m.lease_until,
             CASE WHEN m.lease_until IS NULL THEN NULL ELSE $3 END,
             CASE WHEN m.lease_until IS NULL THEN NULL ELSE nextval('lease_tokens') END
         FROM m JOIN stored USING (id),
             jsonb_to_recordset(m.recipients) AS r(address text, original_address text)
         RETURNING id, message_id, address, attempts, delay_warned,
             COALESCE(lease_token, 0) AS lease, lease_token IS NOT NULL AS leased",
    )
    .bind(&rows.messages)
    .bind(&rows.bodies)
    .bind(node.as_str())
    .fetch_all(&mut **tx)
    .await
    .map_err(write_error)?;
    Ok(inserted
        .into_iter()
        .filter(|row| row.leased)
        .map(|row| row.recipient.into_parts())
        .collect())
}

/// A recipient just inserted, and whether it was born leased.
#[derive(sqlx::FromRow)]
struct BornRow {
    #[sqlx(flatten)]
    recipient: ClaimedRow,
    leased: bool,
}

/// A recipient just claimed, and the node whose expired lease it was under, if any.
#[derive(sqlx::FromRow)]
struct TakenRow {
    #[sqlx(flatten)]
    recipient: ClaimedRow,
    previous: Option<String>,
}

/// Claims due recipients for this node, taking over leases that ran out (whose holder died,
/// stalled or lost the store), and skipping rows another node is claiming right now.
async fn claim_in(
    tx: &mut Transaction<'_, Postgres>,
    node: &NodeId,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedMessage>, SpoolError> {
    let lease_until = request.now_ms + request.lease.as_millis() as i64;
    let claimed: Vec<TakenRow> = sqlx::query_as(
        "WITH due AS (
             SELECT id, lease_owner AS previous FROM recipients
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= $2
               AND (lease_until IS NULL OR lease_until < $2)
             ORDER BY next_attempt_at, id LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE recipients r SET lease_until = $1, lease_owner = $4,
             lease_token = nextval('lease_tokens'), updated_at = $2
         FROM due WHERE r.id = due.id
         RETURNING r.id, r.message_id, r.address, r.attempts, r.delay_warned,
             r.lease_token AS lease, due.previous",
    )
    .bind(lease_until)
    .bind(request.now_ms)
    .bind(request.limit as i64)
    .bind(node.as_str())
    .fetch_all(&mut **tx)
    .await
    .map_err(write_error)?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let previous: Vec<String> = claimed.iter().filter_map(|c| c.previous.clone()).collect();
    if !previous.is_empty() {
        tracing::warn!(recipients = previous.len(), from = ?previous.iter().collect::<HashSet<_>>(),
            "took over recipients whose lease ran out");
        sqlx::query(
            "WITH taken AS (SELECT id, COUNT(*) AS n FROM unnest($1::text[]) AS id GROUP BY id),
             nodes_updated AS (
                 UPDATE nodes SET leases_reclaimed = nodes.leases_reclaimed + taken.n
                 FROM taken WHERE nodes.id = taken.id)
             UPDATE counters SET value = value + $2 WHERE name = 'leases_reclaimed'",
        )
        .bind(&previous)
        .bind(previous.len() as i64)
        .execute(&mut **tx)
        .await
        .map_err(write_error)?;
    }
    let by_message = rows::by_message(claimed.into_iter().map(|c| c.recipient).collect());
    let ids: Vec<&String> = by_message.keys().collect();
    let messages: Vec<ClaimedMessageRow> = sqlx::query_as(
        "SELECT m.id, m.sender, m.received_at, m.body_type, m.smtputf8, b.data
         FROM messages m JOIN bodies b ON b.message_id = m.id
         WHERE m.id = ANY($1) ORDER BY m.id",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(write_error)?;
    Ok(rows::claimed(by_message, messages))
}

/// Tells every node's scheduler that mail is due (delivered when the transaction commits).
pub(super) async fn notify_due(tx: &mut Transaction<'_, Postgres>) -> Result<(), SpoolError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(DUE_CHANNEL)
        .execute(&mut **tx)
        .await
        .map_err(write_error)?;
    Ok(())
}
