//! What delivery and the spool exchange: claimed messages with their recipients, and the
//! outcome of each attempt as a typed recipient state.

use std::sync::Arc;

use std::fmt;

use crate::model::{ApiReply, BodyType, EnhancedStatus, UpstreamReply};

/// Who held a recipient. Only `Config` holds are released by a restart or reload; an
/// operator's hold outlives deferrals and restarts until the operator releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// `smarthost queue hold` (Postfix's `postsuper -h`).
    Operator,
    /// Our setup is wrong (AUTH refused, TLS verification failed, identity not verified).
    Config,
    /// A bounce that could not be delivered: kept for inspection, never bounced again.
    Bounce,
}

impl HeldBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldBy::Operator => "operator",
            HeldBy::Config => "config",
            HeldBy::Bounce => "bounce",
        }
    }
}

/// Where one attempt left a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientState {
    Delivered,
    Deferred { next_attempt_at_ms: i64 },
    Bounced,
    Held(HeldBy),
}

impl RecipientState {
    pub fn name(&self) -> &'static str {
        match self {
            RecipientState::Delivered => "delivered",
            RecipientState::Deferred { .. } => "deferred",
            RecipientState::Bounced => "bounced",
            RecipientState::Held(_) => "held",
        }
    }
}

/// A message with the recipients this delivery round claimed.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: String,
    /// '' is the null sender (a bounce).
    pub sender: String,
    pub received_at_ms: i64,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub body: Arc<Vec<u8>>,
    pub recipients: Vec<ClaimedRecipient>,
}

#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: i64,
    /// The lease's token: the outcome is recorded only under it (0 where one process
    /// delivers from the store).
    pub lease: i64,
    pub address: String,
    pub attempts: i64,
    /// A delay DSN was already sent for it.
    pub delay_warned: bool,
}

/// What an attempt's outcome rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptReply {
    /// The upstream's answer for this recipient.
    Upstream(UpstreamReply),
    /// An API upstream's answer for the whole call.
    Api(ApiReply),
    /// No upstream answered, or none could take the message: our own account of why
    /// (unreachable, TLS, AUTH, SMTPUTF8 not offered, too big), with the RFC 3463 status a
    /// bounce would report.
    Local {
        reason: String,
        status: EnhancedStatus,
    },
}

impl AttemptReply {
    pub fn code(&self) -> Option<u16> {
        match self {
            AttemptReply::Upstream(reply) => Some(reply.code),
            AttemptReply::Api(_) | AttemptReply::Local { .. } => None,
        }
    }

    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        match self {
            AttemptReply::Upstream(reply) => reply.enhanced,
            AttemptReply::Api(_) | AttemptReply::Local { .. } => None,
        }
    }

    /// The RFC 3463 status a bounce reports: the upstream's, or ours.
    pub fn status(&self) -> EnhancedStatus {
        match self {
            AttemptReply::Upstream(reply) => reply.status(),
            AttemptReply::Local { status, .. } => *status,
            // The API has no status codes; a refusal that bounces is permanent, cause unknown.
            AttemptReply::Api(_) => EnhancedStatus {
                class: 5,
                subject: 0,
                detail: 0,
            },
        }
    }
}

impl fmt::Display for AttemptReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptReply::Upstream(reply) => reply.fmt(f),
            AttemptReply::Api(reply) => reply.fmt(f),
            AttemptReply::Local { reason, .. } => f.write_str(reason),
        }
    }
}

/// The outcome of one attempt for one recipient.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub recipient_id: i64,
    /// The lease the attempt was made under (`ClaimedRecipient::lease`).
    pub lease: i64,
    pub state: RecipientState,
    pub reply: AttemptReply,
    pub upstream: Option<String>,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    /// This attempt's DSN warns the sender that the recipient is delayed.
    pub delay_warned: bool,
}
