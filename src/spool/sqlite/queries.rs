//! Read-only questions about the queue, for `mailq`, `smarthost queue` and metrics. WAL
//! readers never block delivery.

use sqlx::{Row, SqliteConnection};

use super::read_error;
use crate::spool::{
    ALL_STATES, AttemptSummary, Filter, MessageDetails, MessageSummary, QueueStats,
    RecipientSummary, SpoolError, StateCount,
};

pub async fn list(
    conn: &mut SqliteConnection,
    filter: &Filter,
) -> Result<Vec<MessageSummary>, SpoolError> {
    let states = serde_json::to_string(&filter.states).unwrap_or_else(|_| "[]".into());
    let rows = sqlx::query(
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
    let mut messages: Vec<MessageSummary> = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        let recipient = RecipientSummary {
            address: row.get(5),
            original_address: row.get(6),
            state: row.get(7),
            attempts: row.get(8),
            next_attempt_at_ms: row.get(9),
            last_reply: row.get(10),
            held_by: row.get(11),
        };
        match messages.last_mut() {
            Some(message) if message.id == id => message.recipients.push(recipient),
            _ => messages.push(MessageSummary {
                id,
                received_at_ms: row.get(1),
                size: row.get(2),
                sender: row.get(3),
                original_sender: row.get(4),
                recipients: vec![recipient],
            }),
        }
    }
    Ok(messages)
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
    let row = sqlx::query(
        "SELECT m.helo, m.client_addr, m.submitter, m.protocol, m.body_type, m.smtputf8,
                m.finished_at, m.rewrites, b.data
         FROM messages m LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = ?1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(read_error)?;
    let attempts = sqlx::query(
        "SELECT r.address, a.started_at, a.duration_ms, a.upstream, a.reply, a.outcome,
                a.reply_code, a.reply_enhanced
         FROM attempts a JOIN recipients r ON r.id = a.recipient_id
         WHERE r.message_id = ?1 ORDER BY a.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?
    .into_iter()
    .map(|a| AttemptSummary {
        recipient: a.get(0),
        started_at_ms: a.get(1),
        duration_ms: a.get(2),
        upstream: a.get(3),
        reply: a.get(4),
        outcome: a.get(5),
        reply_code: a.get(6),
        reply_enhanced: a.get(7),
    })
    .collect();
    let rewrites: String = row.get(7);
    let finished_at_ms: Option<i64> = row.get(6);
    let stored: Option<Vec<u8>> = row.get(8);
    let stored = stored.unwrap_or_default();
    let header_end = stored
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| end + 2)
        .unwrap_or(stored.len());
    let headers = String::from_utf8_lossy(&stored[..header_end]).to_string();
    Ok(Some(MessageDetails {
        summary,
        helo: row.get(0),
        client_addr: row.get(1),
        submitter: row.get(2),
        protocol: row.get(3),
        body_type: row.get(4),
        smtputf8: row.get(5),
        finished_at_ms,
        rewrites: rewrites.lines().map(String::from).collect(),
        attempts,
        headers,
        body: finished_at_ms.is_none().then_some(stored),
    }))
}

pub async fn stats(conn: &mut SqliteConnection) -> Result<QueueStats, SpoolError> {
    let mut stats = QueueStats::default();
    let rows = sqlx::query(
        "SELECT r.state, COUNT(*), COUNT(DISTINCT r.message_id),
                (SELECT COALESCE(SUM(size), 0) FROM messages WHERE id IN
                    (SELECT message_id FROM recipients WHERE state = r.state))
         FROM recipients r GROUP BY r.state",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?;
    for row in rows {
        stats.states.insert(
            row.get(0),
            StateCount {
                recipients: row.get(1),
                messages: row.get(2),
                bytes: row.get(3),
            },
        );
    }
    let pending = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received_at) FROM messages WHERE id IN
             (SELECT message_id FROM recipients WHERE state IN ('queued', 'deferred', 'held'))",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(read_error)?;
    stats.pending_messages = pending.get(0);
    stats.pending_bytes = pending.get(1);
    stats.oldest_pending_ms = pending.get(2);
    stats.pending_recipients = sqlx::query(
        "SELECT r.address, m.received_at FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.state IN ('queued', 'deferred', 'held')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?
    .into_iter()
    .map(|row| {
        let address: String = row.get(0);
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_else(|| "(local)".into());
        (domain, row.get(1))
    })
    .collect();
    Ok(stats)
}
