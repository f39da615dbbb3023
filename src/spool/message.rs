//! A message as the intake hands it to the spool: its envelope as it will be sent and as it
//! arrived, where it came from, and the bytes as they will be sent.

use crate::model::{BodyType, QueueId};

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
    /// SMTP, ESMTP, ESMTPS, UTF8SMTP(S) or LOCAL.
    pub protocol: &'static str,
}

impl Origin {
    /// Every protocol name the intake records (RFC 3848, RFC 6531 7.2), and LOCAL.
    const PROTOCOLS: [&'static str; 8] = [
        "SMTP",
        "ESMTP",
        "ESMTPS",
        "ESMTPSA",
        "UTF8SMTP",
        "UTF8SMTPS",
        "UTF8SMTPSA",
        "LOCAL",
    ];

    /// The protocol recorded under `name`, read back from a store; LOCAL if unknown.
    pub fn protocol_named(name: &str) -> &'static str {
        Self::PROTOCOLS
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            .copied()
            .unwrap_or("LOCAL")
    }
}

#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub address: String,
    pub original_address: String,
}
