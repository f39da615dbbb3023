//! The work the spool writer is handed besides new messages: delivery outcomes to record and
//! claims to run. Store-neutral: each store turns them into its own SQL.

use std::time::Duration;

use crate::spool::{AttemptRecord, NewMessage};

/// One attempt's outcomes, waiting for the writer.
pub(super) struct Outcome {
    pub message_id: String,
    pub records: Vec<AttemptRecord>,
    /// The DSN this attempt produced, inserted in the same transaction.
    pub bounce: Option<NewMessage>,
    /// What delivery changed on the way out, one note per line, for the rewrite notes.
    pub notes: Option<String>,
    pub now_ms: i64,
}

/// A claim for due recipients, run by the writer.
pub(super) struct ClaimRequest {
    pub now_ms: i64,
    pub lease: Duration,
    pub limit: usize,
}
