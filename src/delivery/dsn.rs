//! Bounces and delay warnings: a delivery status notification per RFC 3464 (multipart/report
//! with a message/delivery-status part and the original headers), sent with the null sender so
//! that it can never cause another bounce. One report covers an attempt's recipients, each
//! with its own action: failed, or delayed (still being retried).

use chrono::{DateTime, Utc};

use crate::model::EnhancedStatus;
use crate::spool::{BodyType, NewMessage, NewRecipient, Origin, QueueId, now_ms};

/// What became of a recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    /// Not delivered yet; retried until `retry_until_ms`.
    Delayed {
        retry_until_ms: i64,
    },
}

/// One recipient that could not be delivered (yet), and why.
pub struct Failure<'a> {
    pub recipient: &'a str,
    pub action: Action,
    /// The upstream's reply (or our reason, such as an expired queue lifetime).
    pub diagnostic: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: EnhancedStatus,
    /// The host name of the upstream that gave the reply (RFC 3464 2.3.5: a name, no port);
    /// none when the reason is our own.
    pub remote_mta: Option<&'a str>,
}

pub struct Bounce<'a> {
    /// Our host name, given as Reporting-MTA and in the text.
    pub reporting_mta: &'a str,
    /// Our public mail domain: the From address and the Message-ID.
    pub domain: &'a str,
    /// Where the bounce goes: `bounce_address`, or the original envelope sender.
    pub to: &'a str,
    pub original_id: &'a str,
    pub original_sender: &'a str,
    pub arrival_ms: i64,
    pub original_message: &'a [u8],
    pub failures: Vec<Failure<'a>>,
}

impl Bounce<'_> {
    pub fn into_message(self) -> NewMessage {
        let id = QueueId::generate();
        let boundary = format!("{id}/{}", self.reporting_mta);
        let date = Utc::now().to_rfc2822();
        let arrival = rfc2822(self.arrival_ms);
        let failed = self.failures.iter().any(|f| f.action == Action::Failed);
        let (subject, explanation) = if failed {
            (
                "Undelivered Mail Returned to Sender",
                "could not be delivered to one or more\r\nrecipients. The upstream relay's answer is given for each.",
            )
        } else {
            (
                "Delayed Mail (still being retried)",
                "has not been delivered yet to the\r\nrecipients below. It is being retried; no action is needed from you.",
            )
        };
        let mut text = format!(
            "From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{id}@{domain}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             This is the mail system at host {host}.\r\n\
             \r\n\
             Your message {original} from <{sender}> {explanation}\r\n\
             \r\n",
            host = self.reporting_mta,
            domain = self.domain,
            to = self.to,
            original = self.original_id,
            sender = self.original_sender,
        );
        for failure in &self.failures {
            text.push_str(&format!(
                "<{}>: {}\r\n",
                failure.recipient, failure.diagnostic
            ));
        }
        text.push_str(&format!(
            "\r\n--{boundary}\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; {host}\r\n\
             X-Smarthost-Queue-ID: {original}\r\n\
             Arrival-Date: {arrival}\r\n",
            host = self.reporting_mta,
            original = self.original_id,
        ));
        for failure in &self.failures {
            let action = match failure.action {
                Action::Failed => "failed",
                Action::Delayed { .. } => "delayed",
            };
            text.push_str(&format!(
                "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\n",
                failure.recipient, failure.status
            ));
            if let Some(mta) = failure.remote_mta {
                text.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
            }
            text.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                failure.diagnostic
            ));
            if let Action::Delayed { retry_until_ms } = failure.action {
                text.push_str(&format!(
                    "Will-Retry-Until: {}\r\n",
                    rfc2822(retry_until_ms)
                ));
            }
        }
        text.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ));
        let mut body = text.into_bytes();
        body.extend_from_slice(headers_of(self.original_message));
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        NewMessage {
            id,
            received_at_ms: now_ms(),
            sender: String::new(),
            original_sender: String::new(),
            recipients: vec![NewRecipient {
                address: self.to.to_string(),
                original_address: self.to.to_string(),
            }],
            origin: Origin {
                helo: None,
                client_addr: None,
                submitter: None,
                protocol: "LOCAL",
            },
            body_type: if body.is_ascii() {
                BodyType::SevenBit
            } else {
                BodyType::EightBitMime
            },
            smtputf8: !self.to.is_ascii(),
            body,
            rewrites: Vec::new(),
        }
    }
}

fn rfc2822(unix_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default()
}

/// The header section of a message, up to and including the line end before the blank line.
fn headers_of(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    #[test]
    fn dsn_parses_and_names_recipient_and_reply() {
        let original = b"From: cron@example.com\r\nSubject: nightly\r\n\r\nsecret body\r\n";
        let message = Bounce {
            reporting_mta: "relay.test",
            domain: "example.com",
            to: "ops@example.com",
            original_id: "0ABC",
            original_sender: "cron@example.com",
            arrival_ms: 1_795_000_000_000,
            original_message: original,
            failures: vec![Failure {
                recipient: "nobody@example.org",
                action: Action::Failed,
                diagnostic: "550 5.1.1 no such user".into(),
                status: EnhancedStatus {
                    class: 5,
                    subject: 1,
                    detail: 1,
                },
                remote_mta: Some("email-smtp.eu-west-1.amazonaws.com"),
            }],
        }
        .into_message();
        assert_eq!(message.sender, "");
        assert_eq!(message.recipients[0].address, "ops@example.com");
        let parsed = MessageParser::default().parse(&message.body).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert!(parsed.content_type().unwrap().attribute("report-type") == Some("delivery-status"));
        let text = String::from_utf8(message.body.clone()).unwrap();
        assert!(text.contains(
            "Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(text.contains("Reporting-MTA: dns; relay.test\r\n"));
        assert!(text.contains("Remote-MTA: dns; email-smtp.eu-west-1.amazonaws.com\r\n"));
        assert!(text.starts_with("From: Mail Delivery System <MAILER-DAEMON@example.com>"));
        assert!(text.contains("Subject: nightly"));
        assert!(
            !text.contains("secret body"),
            "only the headers are returned"
        );
    }
}
