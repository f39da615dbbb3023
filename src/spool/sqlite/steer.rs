//! Operator actions on the queue (postqueue -f, postsuper -h/-H/-d): make mail due now, hold
//! it, release it, delete it. The running daemon sees the change at its next look (within
//! `delivery.poll_interval`).

use sqlx::{AssertSqlSafe, SqliteConnection};

use super::write_error;
use crate::spool::{HeldBy, Selection, SpoolError, now_ms};

impl Selection {
    /// SQL selecting message IDs, its parameter written `?{index}`, and that parameter's
    /// value (JSON) when it has one.
    fn sql(&self, index: usize) -> (String, Option<String>) {
        match self {
            Selection::Ids(ids) => (
                format!("SELECT value FROM json_each(?{index})"),
                serde_json::to_string(ids).ok(),
            ),
            Selection::State {
                state,
                received_before_ms,
            } => (
                format!(
                    "SELECT m.id FROM messages m WHERE
                         EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                                 AND r.state = json_extract(?{index}, '$.state'))
                         AND (json_extract(?{index}, '$.before') IS NULL
                              OR m.received_at < json_extract(?{index}, '$.before'))"
                ),
                Some(serde_json::json!({"state": state, "before": received_before_ms}).to_string()),
            ),
            Selection::ReceivedBefore(before) => (
                format!("SELECT id FROM messages WHERE received_at < ?{index}"),
                Some(before.to_string()),
            ),
            Selection::All => ("SELECT id FROM messages".to_string(), None),
        }
    }
}

/// Runs an UPDATE of recipients (`?1` is now) on the selected messages.
async fn update(
    conn: &mut SqliteConnection,
    set_where: &str,
    selection: &Selection,
) -> Result<u64, SpoolError> {
    let (select, parameter) = selection.sql(2);
    let sql = format!("UPDATE recipients SET {set_where} AND message_id IN ({select})");
    // Only our own SQL text and a placeholder number are formatted in; values are bound.
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms());
    if let Some(parameter) = parameter {
        query = query.bind(parameter);
    }
    let done = query.execute(conn).await.map_err(write_error)?;
    Ok(done.rows_affected())
}

/// Deferred and queued recipients become due now. Returns how many.
pub async fn retry(conn: &mut SqliteConnection, selection: &Selection) -> Result<u64, SpoolError> {
    update(
        conn,
        "next_attempt_at = ?1, updated_at = ?1 WHERE state IN ('queued', 'deferred')",
        selection,
    )
    .await
}

/// Queued and deferred recipients are held by the operator: never delivered or expired until
/// released. Returns how many.
pub async fn hold(conn: &mut SqliteConnection, selection: &Selection) -> Result<u64, SpoolError> {
    let set_where = format!(
        "state = 'held', held_by = '{}', updated_at = ?1 WHERE state IN ('queued', 'deferred')",
        HeldBy::Operator.as_str()
    );
    update(conn, &set_where, selection).await
}

/// Held recipients (by the operator, a configuration error, or a failed bounce) are queued
/// and due now. Returns how many.
pub async fn release(
    conn: &mut SqliteConnection,
    selection: &Selection,
) -> Result<u64, SpoolError> {
    update(
        conn,
        "state = 'queued', held_by = NULL, next_attempt_at = ?1, updated_at = ?1 WHERE state = 'held'",
        selection,
    )
    .await
}

/// Deletes the selected messages with their recipients, history and body. Returns their IDs.
pub async fn delete(
    conn: &mut SqliteConnection,
    selection: &Selection,
) -> Result<Vec<String>, SpoolError> {
    let (select, parameter) = selection.sql(1);
    let sql = format!("DELETE FROM messages WHERE id IN ({select}) RETURNING id");
    let mut query = sqlx::query_scalar(AssertSqlSafe(sql));
    if let Some(parameter) = parameter {
        query = query.bind(parameter);
    }
    let mut ids: Vec<String> = query.fetch_all(conn).await.map_err(write_error)?;
    ids.sort();
    Ok(ids)
}
