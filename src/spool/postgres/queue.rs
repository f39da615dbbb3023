//! `QueueAdmin` on the shared store: the whole fleet's queue, for `mailq`, `smarthost queue`
//! and metrics. Columns are named as `spool::rows` reads them. Steering wakes every node
//! (NOTIFY), so a `queue retry` typed on one node is picked up by whichever node is free.

use sqlx::PgPool;

use super::node::{self, NodeSummary};
use super::open::{Role, pool};
use super::{DUE_CHANNEL, read_error, write_error};
use crate::config::SpoolConfig;
use crate::spool::rows::{
    self, AttemptRow, DetailRow, ListRow, PendingRecipientRow, PendingRow, StateRow,
};
use crate::spool::{
    ALL_STATES, Filter, HeldBy, MessageDetails, MessageSummary, OpenMode, QueueAdmin, QueueStats,
    Selection, SpoolError, now_ms,
};

pub struct PgQueue {
    pool: PgPool,
}

impl PgQueue {
    pub async fn open(
        config: &SpoolConfig,
        url: &str,
        mode: OpenMode,
    ) -> Result<PgQueue, SpoolError> {
        let pool = pool(url, 2, config.busy_timeout, mode, Role::Queue).await?;
        Ok(PgQueue { pool })
    }

    /// Every node heard from since `since_ms`.
    pub async fn nodes(&self, since_ms: i64) -> Result<Vec<NodeSummary>, SpoolError> {
        node::list(&self.pool, since_ms).await
    }

    /// Runs an UPDATE of recipients (`$1` is now) on the selected messages, then wakes the
    /// nodes when `wake` (the recipients became due).
    async fn update(
        &self,
        set_where: &str,
        selection: &Selection,
        wake: bool,
    ) -> Result<u64, SpoolError> {
        let (ids, state, before) = parameters(selection);
        let sql = format!(
            "UPDATE recipients SET {set_where} AND message_id IN ({})",
            selected(2)
        );
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        // Only our own SQL text is formatted in; values are bound.
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(ids)
            .bind(state)
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        if wake && done.rows_affected() > 0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(DUE_CHANNEL)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
        }
        tx.commit().await.map_err(write_error)?;
        Ok(done.rows_affected())
    }
}

/// SQL selecting message IDs by the three `parameters`, bound from `$first` on: IDs, a
/// recipient state, received before (each NULL when the selection does not use it).
fn selected(first: usize) -> String {
    let (ids, state, before) = (first, first + 1, first + 2);
    format!(
        "SELECT m.id FROM messages m
         WHERE (${ids}::text[] IS NULL OR m.id = ANY(${ids}))
           AND (${state}::text IS NULL OR EXISTS (SELECT 1 FROM recipients r
                                             WHERE r.message_id = m.id AND r.state = ${state}))
           AND (${before}::bigint IS NULL OR m.received_at < ${before})"
    )
}

fn parameters(selection: &Selection) -> (Option<&[String]>, Option<&str>, Option<i64>) {
    match selection {
        Selection::Ids(ids) => (Some(ids), None, None),
        Selection::State {
            state,
            received_before_ms,
        } => (None, Some(state), *received_before_ms),
        Selection::ReceivedBefore(before) => (None, None, Some(*before)),
        Selection::All => (None, None, None),
    }
}

impl QueueAdmin for PgQueue {
    async fn list(&self, filter: &Filter) -> Result<Vec<MessageSummary>, SpoolError> {
        let rows: Vec<ListRow> = sqlx::query_as(
            "SELECT m.id, m.received_at, m.size, m.sender, m.original_sender,
                    r.address, r.original_address, r.state, r.attempts, r.next_attempt_at,
                    r.last_reply, r.held_by
             FROM messages m JOIN recipients r ON r.message_id = m.id
             WHERE m.id IN (
                 SELECT r2.message_id FROM recipients r2
                 WHERE r2.state = ANY($1)
                   AND ($2::text IS NULL OR strpos(lower(r2.address), lower($2)) > 0
                                         OR strpos(lower(r2.original_address), lower($2)) > 0))
               AND ($3::text IS NULL OR strpos(lower(m.sender), lower($3)) > 0
                                     OR strpos(lower(m.original_sender), lower($3)) > 0)
               AND ($4::bigint IS NULL OR m.received_at < $4)
             ORDER BY m.id, r.id",
        )
        .bind(&filter.states)
        .bind(&filter.recipient)
        .bind(&filter.sender)
        .bind(filter.received_before_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(rows::summaries(rows))
    }

    async fn details(&self, id: &str) -> Result<Option<MessageDetails>, SpoolError> {
        let filter = Filter {
            states: ALL_STATES.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        let Some(summary) = self.list(&filter).await?.into_iter().find(|m| m.id == id) else {
            return Ok(None);
        };
        let row: DetailRow = sqlx::query_as(
            "SELECT m.helo, m.client_addr, m.submitter, m.protocol, m.body_type, m.smtputf8,
                    m.finished_at, m.rewrites, b.data
             FROM messages m LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)?;
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT r.address AS recipient, a.started_at, a.duration_ms, a.upstream, a.reply,
                    a.outcome, a.reply_code, a.reply_enhanced
             FROM attempts a JOIN recipients r ON r.id = a.recipient_id
             WHERE r.message_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(Some(rows::details(summary, row, attempts)))
    }

    async fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, SpoolError> {
        sqlx::query_scalar(
            "SELECT id FROM messages WHERE left(id, length($1)) = upper($1) ORDER BY id LIMIT 5",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)
    }

    async fn stats(&self) -> Result<QueueStats, SpoolError> {
        let states: Vec<StateRow> = sqlx::query_as(
            "SELECT r.state, COUNT(*) AS recipients, COUNT(DISTINCT r.message_id) AS messages,
                    (SELECT COALESCE(SUM(size), 0)::bigint FROM messages WHERE id IN
                        (SELECT message_id FROM recipients WHERE state = r.state)) AS bytes
             FROM recipients r GROUP BY r.state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        let pending: PendingRow = sqlx::query_as(
            "SELECT COUNT(*) AS messages, COALESCE(SUM(size), 0)::bigint AS bytes,
                    MIN(received_at) AS oldest
             FROM messages WHERE id IN
                 (SELECT message_id FROM recipients WHERE state IN ('queued', 'deferred', 'held'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)?;
        let recipients: Vec<PendingRecipientRow> = sqlx::query_as(
            "SELECT r.address, m.received_at FROM recipients r JOIN messages m ON m.id = r.message_id
             WHERE r.state IN ('queued', 'deferred', 'held')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(rows::stats(states, pending, recipients))
    }

    async fn retry(&self, selection: &Selection) -> Result<u64, SpoolError> {
        self.update(
            "next_attempt_at = $1, updated_at = $1 WHERE state IN ('queued', 'deferred')",
            selection,
            true,
        )
        .await
    }

    async fn hold(&self, selection: &Selection) -> Result<u64, SpoolError> {
        let set_where = format!(
            "state = 'held', held_by = '{}', updated_at = $1 WHERE state IN ('queued', 'deferred')",
            HeldBy::Operator.as_str()
        );
        self.update(&set_where, selection, false).await
    }

    async fn release(&self, selection: &Selection) -> Result<u64, SpoolError> {
        self.update(
            "state = 'queued', held_by = NULL, next_attempt_at = $1, updated_at = $1 WHERE state = 'held'",
            selection,
            true,
        )
        .await
    }

    async fn reachable(&self) -> Result<(), SpoolError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(read_error)?;
        Ok(())
    }

    async fn delete(&self, selection: &Selection) -> Result<Vec<String>, SpoolError> {
        let (ids, state, before) = parameters(selection);
        let sql = format!(
            "DELETE FROM messages WHERE id IN ({}) RETURNING id",
            selected(1)
        );
        let mut deleted: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .bind(state)
            .bind(before)
            .fetch_all(&self.pool)
            .await
            .map_err(write_error)?;
        deleted.sort();
        Ok(deleted)
    }
}
