//! Claims: due recipients leased to a delivery round. A lease that ran out (its holder died
//! or stalled) is due again, so a claim run while the daemon runs reclaims it.

use sqlx::SqliteConnection;

use crate::spool::ClaimedMessage;
use crate::spool::jobs::ClaimRequest;
use crate::spool::rows::{self, ClaimedMessageRow, ClaimedRow};

/// Claims up to `limit` due recipients (oldest due first) for `lease`, grouped by message
/// with each message's envelope and body. One process delivers from a SQLite spool: its
/// leases carry no token (0).
pub(super) async fn claim_in(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedMessage>, sqlx::Error> {
    let ClaimRequest {
        now_ms,
        lease,
        limit,
    } = *request;
    let lease_until = now_ms + lease.as_millis() as i64;
    let claimed: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE recipients SET lease_until = ?1, updated_at = ?2
         WHERE id IN (
             SELECT id FROM recipients
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until < ?2)
             ORDER BY next_attempt_at, id LIMIT ?3)
         RETURNING id, message_id, address, attempts, delay_warned, 0 AS lease",
    )
    .bind(lease_until)
    .bind(now_ms)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let by_message = rows::by_message(claimed);
    if by_message.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&by_message.keys().collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let messages: Vec<ClaimedMessageRow> = sqlx::query_as(
        "SELECT m.id, m.sender, m.received_at, m.body_type, m.smtputf8, b.data
         FROM messages m JOIN bodies b ON b.message_id = m.id
         WHERE m.id IN (SELECT value FROM json_each(?1)) ORDER BY m.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows::claimed(by_message, messages))
}
