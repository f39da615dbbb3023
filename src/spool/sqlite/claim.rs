//! Claims: due recipients leased to a delivery round. A lease that ran out (its holder died
//! or stalled) is due again, so a claim run while the daemon runs reclaims it.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{Row, SqliteConnection};

use super::jobs::ClaimRequest;
use crate::model::BodyType;
use crate::spool::{ClaimedMessage, ClaimedRecipient};

/// Claims up to `limit` due recipients (oldest due first) for `lease`, grouped by message
/// with each message's envelope and body.
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
    let rows = sqlx::query(
        "UPDATE recipients SET lease_until = ?1, updated_at = ?2
         WHERE id IN (
             SELECT id FROM recipients
             WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until < ?2)
             ORDER BY next_attempt_at, id LIMIT ?3)
         RETURNING id, message_id, address, attempts, delay_warned",
    )
    .bind(lease_until)
    .bind(now_ms)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_message: HashMap<String, Vec<ClaimedRecipient>> = HashMap::new();
    for row in rows {
        by_message
            .entry(row.get::<String, _>(1))
            .or_default()
            .push(ClaimedRecipient {
                id: row.get(0),
                address: row.get(2),
                attempts: row.get(3),
                delay_warned: row.get(4),
            });
    }
    if by_message.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&by_message.keys().collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let rows = sqlx::query(
        "SELECT m.id, m.sender, m.received_at, m.body_type, m.smtputf8, b.data
         FROM messages m JOIN bodies b ON b.message_id = m.id
         WHERE m.id IN (SELECT value FROM json_each(?1)) ORDER BY m.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let Some(mut recipients) = by_message.remove(&id) else {
            continue;
        };
        recipients.sort_by_key(|r| r.id);
        let body_type: String = row.get(3);
        claimed.push(ClaimedMessage {
            id,
            sender: row.get(1),
            received_at_ms: row.get(2),
            body_type: BodyType::from_stored(&body_type),
            smtputf8: row.get(4),
            body: Arc::new(row.get(5)),
            recipients,
        });
    }
    Ok(claimed)
}
