//! The spool: the SQLite database that holds every accepted message until it is delivered or
//! bounced. Writes go through one writer task that commits many sessions' messages in one
//! transaction (group commit), so "250 means durable" costs one fsync per batch, not per
//! message.

mod batch;
mod delivery_store;
mod open;
mod queries;
mod steer;
mod writer;

pub use crate::model::{BodyType, QueueId};
pub use delivery_store::{
    AttemptRecord, ClaimedMessage, ClaimedRecipient, DeliveryStore, HeldBy, RecipientState,
};
pub use open::{OpenMode, open_connection, writable};
pub use queries::{
    ALL_STATES, AttemptSummary, Filter, MessageDetails, MessageSummary, PENDING_STATES, QueueStats,
    RecipientSummary, StateCount, details, ids_with_prefix, list, stats,
};
pub use steer::{Selection, delete, hold, release, retry};
pub use writer::{Spool, WriterStats};

/// A message ready to be committed, with its envelope as it will be sent and as it arrived.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: QueueId,
    pub received_at_ms: i64,
    /// '' is the null sender.
    pub sender: String,
    pub original_sender: String,
    pub recipients: Vec<NewRecipient>,
    pub origin: Origin,
    pub body_type: BodyType,
    pub smtputf8: bool,
    /// The whole message as it will be sent: our Received header, then the client's bytes.
    pub body: Vec<u8>,
    /// What the rewrite stage changed, for the operator.
    pub rewrites: Vec<String>,
}

/// Where a message came from, recorded with it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// What the SMTP client called itself.
    pub helo: Option<String>,
    /// The SMTP client's address; None for local submission.
    pub client_addr: Option<String>,
    /// The local user who ran sendmail; None over TCP.
    pub submitter: Option<String>,
    /// SMTP, ESMTP or LOCAL.
    pub protocol: &'static str,
}

#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub address: String,
    pub original_address: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("cannot migrate spool {path}: {reason}")]
    Migrate { path: String, reason: String },
    #[error(
        "spool {path} has schema version {found}, newer than this smarthost knows ({known}); use a newer smarthost"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "spool {path} has an older schema ({found} < {known}); run `smarthost serve` once to upgrade it"
    )]
    OlderSchema {
        path: String,
        found: i64,
        known: i64,
    },
    /// A write failed (disk full, database locked past busy_timeout, I/O error). Nothing of
    /// the failed batch was committed.
    #[error("spool write failed: {0}")]
    Write(String),
    #[error("spool query failed: {0}")]
    Read(String),
    #[error("spool writer has stopped")]
    Closed,
}

/// A failed write, as the spool reports it.
fn write_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Write(e.to_string())
}

/// A failed read, as the spool reports it.
fn read_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
