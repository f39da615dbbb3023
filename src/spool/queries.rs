//! Read-only questions about the queue, for `mailq` and (later) the queue CLI.

use sqlx::{Row, SqliteConnection};

use super::SpoolError;

/// One message still in the queue, with its recipients that are not yet delivered.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub received_at_ms: i64,
    pub size: i64,
    pub sender: String,
    pub recipients: Vec<RecipientEntry>,
}

#[derive(Debug, Clone)]
pub struct RecipientEntry {
    pub address: String,
    pub state: String,
    pub last_reply: Option<String>,
}

/// Every message with at least one recipient still to deliver, oldest first.
pub async fn list_queue(conn: &mut SqliteConnection) -> Result<Vec<QueueEntry>, SpoolError> {
    let rows = sqlx::query(
        "SELECT m.id, m.received_at, m.size, m.sender, r.address, r.state, r.last_reply
         FROM messages m JOIN recipients r ON r.message_id = m.id
         WHERE r.state IN ('queued', 'deferred', 'held')
         ORDER BY m.id, r.id",
    )
    .fetch_all(conn)
    .await
    .map_err(|e| SpoolError::Read(e.to_string()))?;
    let mut entries: Vec<QueueEntry> = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        let recipient = RecipientEntry {
            address: row.get(4),
            state: row.get(5),
            last_reply: row.get(6),
        };
        match entries.last_mut() {
            Some(entry) if entry.id == id => entry.recipients.push(recipient),
            _ => entries.push(QueueEntry {
                id,
                received_at_ms: row.get(1),
                size: row.get(2),
                sender: row.get(3),
                recipients: vec![recipient],
            }),
        }
    }
    Ok(entries)
}
