//! Intake: the one way into the queue, as Postfix's cleanup(8) is. Every entry point (the SMTP
//! session, `sendmail`, `sendmail -bs`, and the daemon's end of the local hand-off) builds a
//! `Submission` and calls `Intake::accept`, which
//!
//! 1. judges the envelope *after* identity repair: relay access (its own small function, from
//!    who the client is), address tricks, the repaired sender against
//!    `allowed_sender_domains`, and a route for every recipient;
//! 2. repairs identities (envelope, headers; a From for local submissions that lack one);
//! 3. puts our Received header first, once;
//! 4. commits the message to the spool — or, for a `sendmail` caller who may not write the
//!    spool, hands the *raw* submission to the running daemon, whose own intake does all of
//!    the above (Postfix's postdrop → pickup → cleanup).
//!
//! The SMTP session asks the same questions early (`check_sender` at MAIL, `check_recipient`
//! at RCPT) so that a client hears a refusal while it is still connected; `accept` asks them
//! again, so that no path can skip a rule.

pub mod maildrop;
mod received;
pub mod refusal;
mod submission;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use refusal::{Refusal, Role};
pub use submission::{Client, LocalUser, Submission};

use crate::auth::User;
use crate::config::Config;
use crate::model::{Address, BodyType, QueueId, ReversePath, UpstreamSizes};
use crate::policy::{RelayDecision, SenderDomains, TrustedNetworks, routing_trick};
use crate::rewrite::{MissingFrom, Rewriter};
use crate::spool::{NewMessage, Origin, SpoolWriter, now_ms};

/// Where accepted mail goes.
pub enum Queue {
    /// This process commits to the spool itself (the daemon; a `sendmail` caller who may
    /// write the spool).
    Spool(SpoolWriter),
    /// The raw submission goes to the running daemon over its local socket.
    Daemon { socket: PathBuf },
}

pub struct Intake {
    hostname: String,
    rewriter: Rewriter,
    trusted_networks: TrustedNetworks,
    sender_domains: SenderDomains,
    /// `smtp.max_message_size`.
    max_message_size: u64,
    /// What the upstreams take; delivery keeps it current in the daemon.
    upstream_sizes: Arc<UpstreamSizes>,
    queue: Queue,
}

impl Intake {
    pub fn new(config: &Config, queue: Queue) -> Intake {
        Intake {
            hostname: config.hostname.clone(),
            rewriter: Rewriter::from_config(config),
            trusted_networks: config.smtp.trusted_networks.clone(),
            sender_domains: config.smtp.allowed_sender_domains.clone(),
            max_message_size: config.smtp.limits.max_message_size,
            upstream_sizes: Arc::new(UpstreamSizes::new(&config.delivery.upstream_size_limits())),
            queue,
        }
    }

    /// The upstream size limits this intake obeys, for delivery to keep current.
    pub fn upstream_sizes(&self) -> Arc<UpstreamSizes> {
        self.upstream_sizes.clone()
    }

    /// The largest message accepted now: `smtp.max_message_size`, or less when no upstream
    /// would take that much (what is bigger would only bounce later).
    pub fn max_message_size(&self) -> u64 {
        match self.upstream_sizes.largest() {
            Some(upstream) => upstream.min(self.max_message_size),
            None => self.max_message_size,
        }
    }

    /// Our own name, for greetings.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Relay access, decided from who the client is and nothing else.
    pub fn relay(&self, client: Option<IpAddr>) -> RelayDecision {
        self.trusted_networks.decide(client)
    }

    /// The sender as given may be used: no routing trick, and the sender it is *repaired*
    /// into is in an allowed domain (an internal `root@ip-10-….internal` that the rewrite
    /// makes `root@example.com` passes; `app@evil.example` does not).
    pub fn check_sender(&self, sender: &ReversePath) -> Result<(), Refusal> {
        let ReversePath::Mailbox(address) = sender else {
            return Ok(());
        };
        if let Some(trick) = routing_trick(address) {
            return Err(Refusal::RoutingTrick {
                role: Role::Sender,
                address: address.to_string(),
                trick,
            });
        }
        let original = address.to_string();
        let repaired = self.rewriter.sender(&original);
        if self.sender_domains.allows(&repaired) {
            Ok(())
        } else {
            Err(Refusal::SenderNotAllowed {
                sender: original,
                repaired,
            })
        }
    }

    /// An authenticated user may send as the address the sender is *repaired* into only when
    /// one of its `allow_senders` entries covers it (Postfix's
    /// `reject_sender_login_mismatch`).
    pub fn check_user_sender(&self, sender: &ReversePath, user: &User) -> Result<(), Refusal> {
        let ReversePath::Mailbox(address) = sender else {
            return Ok(());
        };
        let original = address.to_string();
        let repaired = self.rewriter.sender(&original);
        if user.may_send_as(&repaired) {
            Ok(())
        } else {
            Err(Refusal::SenderNotOwned {
                sender: original,
                user: user.name.clone(),
            })
        }
    }

    /// Every From address of the message, as repair will make it, must be the user's too: the
    /// envelope alone would let a tenant put another tenant's identity where readers see it.
    fn check_user_header_from(&self, message: &[u8], user: &User) -> Result<(), Refusal> {
        let Some(parsed) = mail_parser::MessageParser::default().parse_headers(message) else {
            return Ok(());
        };
        let Some(from) = parsed.from() else {
            return Ok(());
        };
        for addr in from.iter() {
            let Some(address) = crate::rewrite::mailbox_address(addr) else {
                continue;
            };
            let repaired = self.rewriter.sender(address);
            if !user.may_send_as(&repaired) {
                return Err(Refusal::SenderNotOwned {
                    sender: address.to_string(),
                    user: user.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// A recipient may be taken from a client with this relay decision: no routing trick,
    /// relaying allowed, and somewhere to go after aliases.
    pub fn check_recipient(
        &self,
        relay: RelayDecision,
        recipient: &Address,
    ) -> Result<(), Refusal> {
        if let Some(trick) = routing_trick(recipient) {
            return Err(Refusal::RoutingTrick {
                role: Role::Recipient,
                address: recipient.to_string(),
                trick,
            });
        }
        if relay == RelayDecision::Deny {
            return Err(Refusal::RelayDenied {
                recipient: recipient.to_string(),
            });
        }
        if self.rewriter.route(&recipient.to_string()).is_err() {
            return Err(Refusal::NoRoute {
                recipient: recipient.to_string(),
            });
        }
        Ok(())
    }

    /// Takes a message: judged, repaired, with our Received header, and committed (or handed to
    /// the daemon). `Ok` means it is durably queued.
    pub async fn accept(&self, submission: Submission) -> Result<QueueId, Refusal> {
        self.judge(&submission)?;
        match &self.queue {
            Queue::Daemon { socket } => maildrop::drop_off(socket, &submission).await,
            Queue::Spool(spool) => {
                let message = self.prepare(submission)?;
                let id = message.id.clone();
                match spool.enqueue(message).await {
                    Ok(()) => Ok(id),
                    Err(error) => {
                        tracing::error!(%error, "message not queued");
                        Err(Refusal::Storage(error))
                    }
                }
            }
        }
    }

    /// Every rule, on the envelope as given (each check repairs what it judges).
    fn judge(&self, submission: &Submission) -> Result<(), Refusal> {
        if submission.recipients.is_empty() {
            return Err(Refusal::NoRecipients);
        }
        let limit = self.max_message_size();
        if submission.message.len() as u64 > limit {
            return Err(Refusal::TooBig { limit });
        }
        if submission.message.contains(&0) {
            return Err(Refusal::ContainsNul);
        }
        self.check_sender(&submission.sender)?;
        let relay = match submission.client.user() {
            Some(user) => {
                self.check_user_sender(&submission.sender, user)?;
                self.check_user_header_from(&submission.message, user)?;
                RelayDecision::Allow
            }
            None => self.relay(submission.client.ip()),
        };
        for recipient in &submission.recipients {
            self.check_recipient(relay, recipient)?;
        }
        Ok(())
    }

    /// Repairs identities and builds the spool record, Received header first.
    fn prepare(&self, submission: Submission) -> Result<NewMessage, Refusal> {
        let id = QueueId::generate();
        let sender = submission.sender.as_spooled();
        let recipients: Vec<String> = submission
            .recipients
            .iter()
            .map(|r| r.to_string())
            .collect();
        let (received, origin) = self.provenance(&submission, &id);
        let missing_from = match &submission.client {
            Client::Local(user) => MissingFrom::Add {
                full_name: user.full_name.as_deref(),
            },
            Client::Smtp { .. } => MissingFrom::Leave,
        };
        let rewritten = self
            .rewriter
            .apply(&id, &sender, &recipients, &submission.message, missing_from)
            .map_err(|recipient| Refusal::NoRoute { recipient })?;
        let mut body = received;
        body.extend_from_slice(&rewritten.message);
        // A rewritten IDN address needs SMTPUTF8, and 8-bit header text 8BITMIME, even when the
        // client's own message needed neither.
        let smtputf8 = submission.smtputf8
            || !rewritten.sender.is_ascii()
            || rewritten.recipients.iter().any(|r| !r.address.is_ascii());
        let body_type = if submission.body_type == BodyType::EightBitMime || !body.is_ascii() {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        Ok(NewMessage {
            id,
            received_at_ms: now_ms(),
            sender: rewritten.sender,
            original_sender: sender,
            recipients: rewritten.recipients,
            origin,
            body_type,
            smtputf8,
            body,
            rewrites: rewritten.decisions,
        })
    }

    /// Our Received header and the provenance recorded with the message.
    fn provenance(&self, submission: &Submission, id: &QueueId) -> (Vec<u8>, Origin) {
        match &submission.client {
            Client::Smtp {
                ip,
                helo,
                esmtp,
                tls,
                user,
            } => {
                // RFC 3848 and RFC 6531 7.2: an S for STARTTLS or implicit TLS, an A for AUTH
                // (which is offered under TLS only).
                let protocol = match (*esmtp, submission.smtputf8, tls.is_some(), user.is_some()) {
                    (_, true, false, _) => "UTF8SMTP",
                    (_, true, true, false) => "UTF8SMTPS",
                    (_, true, true, true) => "UTF8SMTPSA",
                    (true, false, false, _) => "ESMTP",
                    (true, false, true, false) => "ESMTPS",
                    (true, false, true, true) => "ESMTPSA",
                    (false, false, _, _) => "SMTP",
                };
                let single = match submission.recipients.as_slice() {
                    [only] => Some(only.to_string()),
                    _ => None,
                };
                let client = format!("[{ip}]");
                let from = (!self.rewriter.hides_client(*ip))
                    .then_some((helo.as_deref(), client.as_str()));
                let header = received::smtp_header(
                    from,
                    tls.as_ref(),
                    &self.hostname,
                    protocol,
                    id,
                    single.as_deref(),
                );
                let origin = Origin {
                    helo: helo.clone(),
                    client_addr: Some(ip.to_string()),
                    submitter: user.as_ref().map(|user| user.name.clone()),
                    protocol,
                };
                (header, origin)
            }
            Client::Local(user) => (
                received::local_header(&self.hostname, user.uid, id),
                Origin {
                    helo: None,
                    client_addr: None,
                    submitter: Some(user.name.clone()),
                    protocol: "LOCAL",
                },
            ),
        }
    }
}
