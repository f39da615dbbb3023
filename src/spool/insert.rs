//! Writing new messages and counters: one statement per table for a whole group commit, so
//! that a batch of a hundred messages costs three statements, not three hundred. (Each
//! statement is a round trip to sqlx's SQLite thread; the profile showed those hops, not
//! SQLite itself, as the main cost of a message.)

use std::collections::BTreeMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{ClaimedRecipient, NewMessage};

/// Rows per INSERT: 12 bound values per message row keeps a statement far below SQLite's
/// 32,766 variables.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// A message to write, and the lease its recipients are born with when delivery takes it at
/// once (None: the scheduler finds it when it is due).
pub(super) struct ToInsert<'a> {
    pub message: &'a NewMessage,
    pub lease_until: Option<i64>,
}

/// Inserts the messages, their bodies and recipients. Returns the recipients born leased, by
/// message id, for handing to delivery without reading them back.
pub(super) async fn insert_messages(
    conn: &mut SqliteConnection,
    items: &[ToInsert<'_>],
) -> Result<Vec<(String, ClaimedRecipient)>, sqlx::Error> {
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, received_at, sender, original_sender, helo, client_addr,
                 submitter, protocol, body_type, smtputf8, size, rewrites) ",
        );
        insert.push_values(chunk, |mut row, item| {
            let m = item.message;
            row.push_bind(m.id.as_str().to_string())
                .push_bind(m.received_at_ms)
                .push_bind(m.sender.clone())
                .push_bind(m.original_sender.clone())
                .push_bind(m.origin.helo.clone())
                .push_bind(m.origin.client_addr.clone())
                .push_bind(m.origin.submitter.clone())
                .push_bind(m.origin.protocol)
                .push_bind(m.body_type.as_str())
                .push_bind(m.smtputf8)
                .push_bind(m.body.len() as i64)
                .push_bind(m.rewrites.join("\n"));
        });
        insert.build().execute(&mut *conn).await?;

        let mut bodies = QueryBuilder::<Sqlite>::new("INSERT INTO bodies (message_id, data) ");
        bodies.push_values(chunk, |mut row, item| {
            row.push_bind(item.message.id.as_str().to_string())
                .push_bind(item.message.body.as_slice());
        });
        bodies.build().execute(&mut *conn).await?;
    }

    let recipients: Vec<(&ToInsert, &super::NewRecipient)> = items
        .iter()
        .flat_map(|item| item.message.recipients.iter().map(move |r| (item, r)))
        .collect();
    let mut leased = Vec::new();
    for chunk in recipients.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO recipients (message_id, address, original_address, next_attempt_at,
                 updated_at, lease_until) ",
        );
        insert.push_values(chunk, |mut row, (item, recipient)| {
            row.push_bind(item.message.id.as_str().to_string())
                .push_bind(recipient.address.clone())
                .push_bind(recipient.original_address.clone())
                .push_bind(item.message.received_at_ms)
                .push_bind(item.message.received_at_ms)
                .push_bind(item.lease_until);
        });
        insert.push(" RETURNING id, message_id, address, lease_until IS NOT NULL");
        for row in insert.build().fetch_all(&mut *conn).await? {
            if row.get::<bool, _>(3) {
                leased.push((
                    row.get(1),
                    ClaimedRecipient {
                        id: row.get(0),
                        address: row.get(2),
                        attempts: 0,
                    },
                ));
            }
        }
    }
    Ok(leased)
}

/// Additions to the running counters, written in the same transaction as what they count.
#[derive(Debug, Default)]
pub(super) struct Counters(BTreeMap<&'static str, i64>);

impl Counters {
    pub fn add(&mut self, name: &'static str, by: i64) {
        *self.0.entry(name).or_default() += by;
    }

    pub async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut update =
            QueryBuilder::<Sqlite>::new("UPDATE counters SET value = value + d.column2 FROM (");
        update.push_values(&self.0, |mut row, (name, by)| {
            row.push_bind(*name).push_bind(*by);
        });
        update.push(") AS d WHERE counters.name = d.column1");
        update.build().execute(&mut *conn).await?;
        Ok(())
    }
}
