//! The SQLite file as a node's maildrop (with `spool.url` set): `sendmail` commits here
//! without database credentials, and the daemon moves what it holds into the shared store.
//! This reads the pending messages back as the intake handed them over.

use sqlx::SqliteConnection;

use super::read_error;
use crate::model::{BodyType, QueueId};
use crate::spool::{NewMessage, NewRecipient, Origin, SpoolError};

#[derive(sqlx::FromRow)]
struct DroppedRow {
    id: String,
    received_at: i64,
    sender: String,
    original_sender: String,
    helo: Option<String>,
    client_addr: Option<String>,
    submitter: Option<String>,
    protocol: String,
    body_type: String,
    smtputf8: bool,
    rewrites: String,
    data: Vec<u8>,
}

/// Up to `limit` messages with recipients still to deliver, oldest first, with those
/// recipients only.
pub(super) async fn pending(
    conn: &mut SqliteConnection,
    limit: usize,
) -> Result<Vec<NewMessage>, SpoolError> {
    let rows: Vec<DroppedRow> = sqlx::query_as(
        "SELECT m.id, m.received_at, m.sender, m.original_sender, m.helo, m.client_addr,
                m.submitter, m.protocol, m.body_type, m.smtputf8, m.rewrites, b.data
         FROM messages m JOIN bodies b ON b.message_id = m.id
         WHERE EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id
                       AND r.state IN ('queued', 'deferred', 'held'))
         ORDER BY m.id LIMIT ?1",
    )
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(read_error)?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let recipients: Vec<(String, String)> = sqlx::query_as(
            "SELECT address, original_address FROM recipients
             WHERE message_id = ?1 AND state IN ('queued', 'deferred', 'held') ORDER BY id",
        )
        .bind(&row.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(read_error)?;
        let Some(id) = QueueId::parse(&row.id) else {
            tracing::error!(queue_id = %row.id, "maildrop holds a message with an invalid queue ID; left there");
            continue;
        };
        messages.push(NewMessage {
            id,
            received_at_ms: row.received_at,
            sender: row.sender,
            original_sender: row.original_sender,
            recipients: recipients
                .into_iter()
                .map(|(address, original_address)| NewRecipient {
                    address,
                    original_address,
                })
                .collect(),
            origin: Origin {
                helo: row.helo,
                client_addr: row.client_addr,
                submitter: row.submitter,
                protocol: Origin::protocol_named(&row.protocol),
            },
            body_type: BodyType::from_stored(&row.body_type),
            smtputf8: row.smtputf8,
            body: row.data,
            rewrites: row
                .rewrites
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        });
    }
    Ok(messages)
}
