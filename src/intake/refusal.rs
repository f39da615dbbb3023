//! Why a message (or one of its addresses) was not taken: one typed cause each, and the one
//! place that says what a cause means to an SMTP client (reply with RFC 3463 enhanced code)
//! and to a `sendmail` caller (sysexits.h exit code).

use std::fmt;

use crate::model::{AddressError, Reply};
use crate::policy::RoutingTrick;
use crate::spool::SpoolError;
use crate::sysexits;

pub const RELAY_DENIED: Reply = Reply::fixed(554, "5.7.1 Relay access denied");
pub const MESSAGE_TOO_BIG: Reply =
    Reply::fixed(552, "5.3.4 Error: message exceeds fixed size limit");
pub const NUL_IN_MESSAGE: Reply = Reply::fixed(
    554,
    "5.6.0 Error: message contains NUL characters; not accepted",
);
pub const STORAGE_FAILURE: Reply = Reply::fixed(
    452,
    "4.3.1 Error: insufficient system storage, try again later",
);
/// The queue cannot be reached now (the daemon, or the shared store).
pub const QUEUE_UNAVAILABLE: Reply =
    Reply::fixed(451, "4.3.0 Error: cannot queue mail now, try again later");
/// RFC 2920 3.1: a pipelined DATA after every RCPT was refused.
pub const NO_VALID_RECIPIENTS: Reply = Reply::fixed(554, "5.5.1 Error: no valid recipients");

/// Which envelope address a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sender,
    Recipient,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{role} address '{address}': {error}")]
    BadAddress {
        role: Role,
        address: String,
        error: AddressError,
    },
    #[error("{role} address '{address}': {}", trick.describe())]
    RoutingTrick {
        role: Role,
        address: String,
        trick: RoutingTrick,
    },
    #[error("relay access denied for <{recipient}>")]
    RelayDenied { recipient: String },
    /// Judged after identity repair: `repaired` is what would have been sent.
    #[error("sender <{sender}> (sent as <{repaired}>) is not in smtp.allowed_sender_domains")]
    SenderNotAllowed { sender: String, repaired: String },
    /// An authenticated user used a sender (envelope or header From, after repair) that none
    /// of its `allow_senders` entries covers.
    #[error("sender <{sender}> is not one of user {user}'s allowed senders")]
    SenderNotOwned { sender: String, user: String },
    #[error(
        "<{recipient}>: local recipient with no alias; set rewrite.aliases or rewrite.admin_address"
    )]
    NoRoute { recipient: String },
    #[error("no recipients")]
    NoRecipients,
    #[error(
        "message is larger than {limit} bytes (smtp.max_message_size, or the most any upstream takes)"
    )]
    TooBig { limit: u64 },
    #[error("message contains NUL bytes")]
    ContainsNul,
    #[error("{0}")]
    Storage(SpoolError),
    /// The local hand-off could not reach the daemon (or it did not answer).
    #[error("{0}")]
    DaemonUnavailable(String),
    /// The daemon's own intake refused the handed-off message; its reply and exit code are
    /// passed on as they are.
    #[error("{}", reply.text)]
    ByDaemon { reply: Reply, exit: u8 },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Recipient => "recipient",
        })
    }
}

impl Role {
    /// RFC 3463: X.1.7 is about the sender's address, X.1.3 about a recipient's.
    fn enhanced(self) -> &'static str {
        match self {
            Role::Sender => "5.1.7",
            Role::Recipient => "5.1.3",
        }
    }
}

impl Refusal {
    /// What an SMTP client hears.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::BadAddress { role, error, .. } => {
                let code = match error {
                    AddressError::Syntax => 501,
                    _ => 553,
                };
                let enhanced = match error {
                    AddressError::NeedsSmtpUtf8 => "5.6.7",
                    _ => role.enhanced(),
                };
                Reply::new(
                    code,
                    format!("{enhanced} Error: bad {role} address: {error}"),
                )
            }
            Refusal::RoutingTrick {
                role,
                address,
                trick,
            } => Reply::new(
                553,
                format!("{} <{address}>: {}", role.enhanced(), trick.describe()),
            ),
            Refusal::RelayDenied { .. } => RELAY_DENIED,
            Refusal::SenderNotAllowed { sender, .. } => Reply::new(
                553,
                format!(
                    "5.7.1 <{sender}>: Sender address rejected: domain not allowed to send through this relay"
                ),
            ),
            Refusal::SenderNotOwned { sender, user } => Reply::new(
                553,
                format!("5.7.1 <{sender}>: Sender address rejected: not owned by user {user}"),
            ),
            Refusal::NoRoute { recipient } => Reply::new(
                550,
                format!(
                    "5.1.1 <{recipient}>: local recipient with no alias; set rewrite.aliases or rewrite.admin_address"
                ),
            ),
            Refusal::NoRecipients => NO_VALID_RECIPIENTS,
            Refusal::TooBig { .. } => MESSAGE_TOO_BIG,
            Refusal::ContainsNul => NUL_IN_MESSAGE,
            Refusal::Storage(SpoolError::Unavailable(_)) | Refusal::DaemonUnavailable(_) => {
                QUEUE_UNAVAILABLE
            }
            Refusal::Storage(_) => STORAGE_FAILURE,
            Refusal::ByDaemon { reply, .. } => reply.clone(),
        }
    }

    /// What a `sendmail` caller's exit status says (cron and mail clients read it).
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::BadAddress { .. }
            | Refusal::RoutingTrick { .. }
            | Refusal::RelayDenied { .. }
            | Refusal::SenderNotAllowed { .. }
            | Refusal::SenderNotOwned { .. }
            | Refusal::TooBig { .. }
            | Refusal::ContainsNul => sysexits::DATAERR,
            Refusal::NoRoute { .. } => sysexits::NOUSER,
            Refusal::NoRecipients => sysexits::USAGE,
            Refusal::Storage(_) | Refusal::DaemonUnavailable(_) => sysexits::TEMPFAIL,
            Refusal::ByDaemon { exit, .. } => *exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_reply_and_exit_code() {
        let cases = [
            (
                Refusal::NoRoute {
                    recipient: "nobody".into(),
                },
                550,
                "5.1.1",
                67,
            ),
            (
                Refusal::SenderNotAllowed {
                    sender: "a@evil.example".into(),
                    repaired: "a@evil.example".into(),
                },
                553,
                "5.7.1",
                65,
            ),
            (
                Refusal::Storage(SpoolError::Write("disk full".into())),
                452,
                "4.3.1",
                75,
            ),
            (
                Refusal::BadAddress {
                    role: Role::Sender,
                    address: "a b".into(),
                    error: AddressError::Syntax,
                },
                501,
                "5.1.7",
                65,
            ),
            (
                Refusal::RoutingTrick {
                    role: Role::Recipient,
                    address: "a%b@c".into(),
                    trick: RoutingTrick::PercentHack,
                },
                553,
                "5.1.3",
                65,
            ),
            (Refusal::TooBig { limit: 10 }, 552, "5.3.4", 65),
            (
                Refusal::DaemonUnavailable("no socket".into()),
                451,
                "4.3.0",
                75,
            ),
        ];
        for (refusal, code, enhanced, exit) in cases {
            let reply = refusal.reply();
            assert_eq!(reply.code, code, "{refusal:?}");
            assert!(
                reply.text.starts_with(enhanced),
                "{refusal:?}: {}",
                reply.text
            );
            assert_eq!(refusal.exit_code(), exit, "{refusal:?}");
        }
    }
}
