//! What operators see of the queue (`queue list`, `show`, `stats`, `mailq`, metrics) and how
//! they pick messages to steer. Field names are the stable JSON of `queue … --json`.

use std::collections::BTreeMap;

use serde::Serialize;

/// Recipient states, as stored.
pub const PENDING_STATES: &[&str] = &["queued", "deferred", "held"];
pub const ALL_STATES: &[&str] = &["queued", "deferred", "held", "delivered", "bounced"];

/// One message and its recipients, as `queue list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    pub id: String,
    pub received_at_ms: i64,
    pub size: i64,
    /// As it will be sent ('' is the null sender).
    pub sender: String,
    pub original_sender: String,
    pub recipients: Vec<RecipientSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecipientSummary {
    pub address: String,
    pub original_address: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_reply: Option<String>,
    /// `config`, `operator` or `bounce` when held.
    pub held_by: Option<String>,
}

/// Which messages `list` returns: those with at least one recipient in `states`, matching
/// the sender and recipient substrings, older than the age.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub states: Vec<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub received_before_ms: Option<i64>,
}

/// Everything about one message, for `queue show`.
#[derive(Debug, Clone, Serialize)]
pub struct MessageDetails {
    #[serde(flatten)]
    pub summary: MessageSummary,
    pub helo: Option<String>,
    pub client_addr: Option<String>,
    pub submitter: Option<String>,
    pub protocol: String,
    pub body_type: String,
    pub smtputf8: bool,
    pub finished_at_ms: Option<i64>,
    /// What the rewrite stage changed, one decision each.
    pub rewrites: Vec<String>,
    pub attempts: Vec<AttemptSummary>,
    /// The message's header section (kept after delivery, for the record).
    pub headers: String,
    /// The whole stored message; gone once nothing is left to deliver.
    #[serde(skip)]
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptSummary {
    pub recipient: String,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub upstream: Option<String>,
    pub reply: String,
    /// The upstream's reply code and enhanced status; null when no upstream answered.
    pub reply_code: Option<i64>,
    pub reply_enhanced: Option<String>,
    pub outcome: String,
}

/// Counts by recipient state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateCount {
    pub recipients: i64,
    pub messages: i64,
    pub bytes: i64,
}

/// The queue at a glance: counts by state, the oldest pending message, and pending
/// recipients by domain and arrival time (for a qshape table).
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub states: BTreeMap<String, StateCount>,
    /// Messages with a recipient still queued, deferred or held.
    pub pending_messages: i64,
    pub pending_bytes: i64,
    pub oldest_pending_ms: Option<i64>,
    /// (recipient domain, message arrival in unix ms) of every pending recipient.
    #[serde(skip)]
    pub pending_recipients: Vec<(String, i64)>,
}

/// Which messages an action applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<String>),
    /// Every message with a recipient in this state, received before the time (if given).
    State {
        state: String,
        received_before_ms: Option<i64>,
    },
    /// Every message received before this time.
    ReceivedBefore(i64),
    All,
}
