//! Identity repair, between policy and spool: internal HELO names, envelope senders, header
//! senders and local recipients become real, deliverable identities — the reason smarthost
//! exists (the seed's points b and d). Every change is logged and stored with the message.

mod addresses;
mod headers;
mod internal;

use chrono::Utc;

pub use addresses::{AddressRules, NoRoute};
pub use headers::mailbox_address;
pub use internal::{DEFAULT_INTERNAL_SUFFIXES, InternalNames, is_private};

use crate::config::Config;
use crate::spool::{NewRecipient, QueueId};

#[derive(Debug, Clone)]
pub struct Rewriter {
    rules: AddressRules,
    strip_headers: Vec<String>,
    /// Domain for the Message-IDs we add; never an internal one.
    message_id_domain: Option<String>,
    hide_internal_received: bool,
}

/// A message's envelope and content after repair, with what was changed.
#[derive(Debug)]
pub struct Rewritten {
    pub sender: String,
    pub recipients: Vec<NewRecipient>,
    pub message: Vec<u8>,
    pub decisions: Vec<String>,
}

impl Rewriter {
    pub fn from_config(config: &Config) -> Rewriter {
        let rewrite = &config.rewrite;
        let public = |name: &String| !rewrite.internal_names.is_internal(name);
        let message_id_domain = rewrite
            .sender_domain
            .clone()
            .or_else(|| rewrite.helo_name.clone())
            .or_else(|| Some(config.hostname.clone()).filter(public));
        Rewriter {
            rules: AddressRules::new(rewrite, &config.hostname),
            strip_headers: rewrite.strip_headers.clone(),
            message_id_domain,
            hide_internal_received: rewrite.hide_internal_received,
        }
    }

    /// Whether a recipient can be delivered at all (checked at RCPT, or before `sendmail`
    /// queues anything).
    pub fn route(&self, recipient: &str) -> Result<(), NoRoute> {
        self.rules.recipient(recipient).map(|_| ())
    }

    /// Whether the Received header we add should leave this client address out.
    pub fn hides_client(&self, ip: std::net::IpAddr) -> bool {
        self.hide_internal_received && is_private(ip) && !ip.is_loopback()
    }

    /// Repairs one message. `recipients` must all have a route (see `route`); recipients that
    /// end up at the same address are kept once.
    pub fn apply(
        &self,
        id: &QueueId,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Rewritten, String> {
        let mut decisions = Vec::new();
        let new_sender = match self.rules.sender(sender) {
            Some(new) => {
                decisions.push(format!("envelope from {sender} -> {new}"));
                new
            }
            None => sender.to_string(),
        };
        let mut routed: Vec<NewRecipient> = Vec::with_capacity(recipients.len());
        for original in recipients {
            let address = match self.rules.recipient(original) {
                Ok(Some(target)) => {
                    decisions.push(format!("envelope to {original} -> {target}"));
                    target
                }
                Ok(None) => original.clone(),
                Err(NoRoute) => return Err(original.clone()),
            };
            if !routed
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(&address))
            {
                routed.push(NewRecipient {
                    address,
                    original_address: original.clone(),
                });
            }
        }
        let missing = headers::Missing {
            date: Utc::now().to_rfc2822(),
            message_id: self
                .message_id_domain
                .as_ref()
                .map(|domain| format!("<{id}@{domain}>")),
        };
        let edited = headers::rewrite(message, &self.rules, &self.strip_headers, &missing);
        decisions.extend(edited.decisions);
        for decision in &decisions {
            tracing::info!(queue_id = %id, "{decision}");
        }
        Ok(Rewritten {
            sender: new_sender,
            recipients: routed,
            message: edited.message,
            decisions,
        })
    }
}
