//! Identity repair, between policy and spool: internal HELO names, envelope senders, header
//! senders and local recipients become real, deliverable identities — the reason smarthost
//! exists (the seed's points b and d). Every change is logged and stored with the message.

mod addresses;
mod headers;

use chrono::Utc;

pub use addresses::{AddressRules, NoRoute};
pub use headers::mailbox_address;

use crate::config::Config;
use crate::model::is_private;
use crate::spool::{NewRecipient, QueueId};

#[derive(Debug, Clone)]
pub struct Rewriter {
    rules: AddressRules,
    strip_headers: Vec<String>,
    /// Domain for the Message-IDs we add; never an internal one.
    message_id_domain: Option<String>,
    hide_internal_received: bool,
}

/// Whether a message without a From header gets one.
#[derive(Debug, Clone, Copy)]
pub enum MissingFrom<'a> {
    /// An SMTP client's message is left as it is.
    Leave,
    /// A local submission gets `From: Full Name <repaired sender>`, or just the address when
    /// there is no name (never the old, internal address as a name).
    Add { full_name: Option<&'a str> },
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

    /// The envelope sender an address becomes ('' is the null sender, which stays).
    pub fn sender(&self, sender: &str) -> String {
        self.rules
            .sender(sender)
            .unwrap_or_else(|| sender.to_string())
    }

    /// Repairs one message. `recipients` must all have a route (see `route`); recipients that
    /// end up at the same address are kept once. A message without From gets one naming the
    /// repaired sender when `missing_from` says so.
    pub fn apply(
        &self,
        id: &QueueId,
        sender: &str,
        recipients: &[String],
        message: &[u8],
        missing_from: MissingFrom<'_>,
    ) -> Result<Rewritten, String> {
        let mut decisions = Vec::new();
        let new_sender = self.sender(sender);
        if new_sender != sender {
            decisions.push(format!("envelope from {sender} -> {new_sender}"));
        }
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
        let from = match missing_from {
            MissingFrom::Add { .. } if new_sender.is_empty() => None,
            MissingFrom::Add {
                full_name: Some(name),
            } => Some(format!("{} <{new_sender}>", headers::phrase(name))),
            MissingFrom::Add { full_name: None } => Some(new_sender.clone()),
            MissingFrom::Leave => None,
        };
        let missing = headers::Missing {
            from,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(extra: &str) -> Rewriter {
        let config = Config::from_toml(&format!(
            "hostname = \"ip-10-0-0-12.ec2.internal\"\n[rewrite]\nsender_domain = \"example.com\"\n{extra}\n[rewrite.aliases]\nroot = \"ops@example.com\"\n"
        ))
        .unwrap();
        Rewriter::from_config(&config)
    }

    #[test]
    fn private_clients_are_hidden_from_received_unless_disabled() {
        let hiding = rewriter("");
        for (ip, hidden) in [
            ("10.0.0.5", true),
            ("fd00::5", true),
            ("127.0.0.1", false),
            ("203.0.113.5", false),
        ] {
            assert_eq!(hiding.hides_client(ip.parse().unwrap()), hidden, "{ip}");
        }
        let showing = rewriter("hide_internal_received = false");
        assert!(!showing.hides_client("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn apply_rewrites_envelope_and_merges_recipients_that_meet() {
        let r = rewriter("");
        let id = QueueId::generate();
        let message = b"From: root\r\nTo: root, root@localhost\r\nSubject: s\r\n\r\nbody\r\n";
        let recipients = ["root".to_string(), "root@localhost".to_string()];
        let out = r
            .apply(
                &id,
                "root@ip-10-0-0-12.ec2.internal",
                &recipients,
                message,
                MissingFrom::Leave,
            )
            .unwrap();
        assert_eq!(out.sender, "root@example.com");
        assert_eq!(out.recipients.len(), 1, "both aliases reach ops@ once");
        assert_eq!(out.recipients[0].address, "ops@example.com");
        assert_eq!(out.recipients[0].original_address, "root");
        let text = String::from_utf8(out.message).unwrap();
        assert!(
            text.contains(&format!("Message-ID: <{id}@example.com>\r\n")),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
        assert_eq!(
            r.apply(
                &id,
                "",
                &["nobody@web-1".to_string()],
                message,
                MissingFrom::Leave
            )
            .unwrap_err(),
            "nobody@web-1"
        );
        assert_eq!(
            r.apply(&id, "", &[], message, MissingFrom::Leave)
                .unwrap()
                .sender,
            "",
            "the null sender stays null"
        );
    }
}
