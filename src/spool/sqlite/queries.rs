//! Read-only questions about the queue, for `mailq`, `smarthost queue` and metrics. WAL
//! readers never block delivery. Columns are named as `spool::rows` reads them.

use sqlx::SqliteConnection;

use super::read_error;
use crate::spool::rows::{
    self, AttemptRow, DetailRow, ListRow, PendingRecipientRow, PendingRow, StateRow,
};
use crate::spool::{ALL_STATES, Filter, MessageDetails, MessageSummary, QueueStats, SpoolError};

pub async fn list(
    conn: &mut SqliteConnection,
    filter: &Filter,
) -> Result<Vec<MessageSummary>, SpoolError> {
    let states = serde_json::to_string(&filter.states).unwrap_or_else(|_| "[]".into());
    let rows: Vec<ListRow> = sqlx::query_as(
        "SELECT m.id, m.received_at, m.size, m.sender, m.original_sender,
                r.address, r.original_address, r.state, r.attempts, r.next_attempt_at, r.last_reply, r.held_by
         FROM messages m JOIN recipients r ON r.message_id = m.id
         WHERE m.id IN (
             SELECT r2.message_id FROM recipients r2
             WHERE r2.state IN (SELECT value FROM json_each(?1))
               AND (?2 IS NULL OR instr(lower(r2.address), lower(?2)) > 0
                               OR instr(lower(r2.original_address), lower(?2)) > 0))
           AND (?3 IS NULL OR instr(lower(m.sender), lower(?3)) > 0
                           OR instr(lower(m.original_sender), lower(?3)) > 0)
           AND (?4 IS NULL OR m.received_at < ?4)
         ORDER BY m.id, r.id",
    )
    .bind(states)
    .bind(&filter.recipient)
    .bind(&filter.sender)
    .bind(filter.received_before_ms)
    .fetch_all(conn)
    .await
    .map_err(read_error)?;
    Ok(rows::summaries(rows))
}

/// The full IDs starting with `prefix` (case-insensitive), at most a few.
pub async fn ids_with_prefix(
    conn: &mut SqliteConnection,
    prefix: &str,
) -> Result<Vec<String>, SpoolError> {
    sqlx::query_scalar(
        "SELECT id FROM messages WHERE substr(id, 1, length(?1)) = upper(?1) ORDER BY id LIMIT 5",
    )
    .bind(prefix)
    .fetch_all(conn)
    .await
    .map_err(read_error)
}

pub async fn details(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<MessageDetails>, SpoolError> {
    let filter = Filter {
        states: ALL_STATES.iter().map(|s| s.to_string()).collect(),
        ..Filter::default()
    };
    let Some(summary) = list(&mut *conn, &filter)
        .await?
        .into_iter()
        .find(|m| m.id == id)
    else {
        return Ok(None);
    };
    let row: DetailRow = sqlx::query_as(
        "SELECT m.helo, m.client_addr, m.submitter, m.protocol, m.body_type, m.smtputf8,
                m.finished_at, m.rewrites, b.data
         FROM messages m LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = ?1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(read_error)?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT r.address AS recipient, a.started_at, a.duration_ms, a.upstream, a.reply,
                a.outcome, a.reply_code, a.reply_enhanced
         FROM attempts a JOIN recipients r ON r.id = a.recipient_id
         WHERE r.message_id = ?1 ORDER BY a.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?;
    Ok(Some(rows::details(summary, row, attempts)))
}

pub async fn stats(conn: &mut SqliteConnection) -> Result<QueueStats, SpoolError> {
    let states: Vec<StateRow> = sqlx::query_as(
        "SELECT r.state, COUNT(*) AS recipients, COUNT(DISTINCT r.message_id) AS messages,
                (SELECT COALESCE(SUM(size), 0) FROM messages WHERE id IN
                    (SELECT message_id FROM recipients WHERE state = r.state)) AS bytes
         FROM recipients r GROUP BY r.state",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?;
    let pending: PendingRow = sqlx::query_as(
        "SELECT COUNT(*) AS messages, COALESCE(SUM(size), 0) AS bytes, MIN(received_at) AS oldest
         FROM messages WHERE id IN
             (SELECT message_id FROM recipients WHERE state IN ('queued', 'deferred', 'held'))",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(read_error)?;
    let recipients: Vec<PendingRecipientRow> = sqlx::query_as(
        "SELECT r.address, m.received_at FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.state IN ('queued', 'deferred', 'held')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?;
    Ok(rows::stats(states, pending, recipients))
}
