//! What a reply means for a recipient. The class of the reply decides (2xx delivered, 4xx
//! deferred, 5xx bounced) except where a provider's reply is known to mean something else: a
//! quota that refills over a day, a rate to slow down for, or our own setup being wrong — which
//! holds the mail instead of bouncing it, so one bad IAM policy never becomes a bounce storm.
//!
//! The known replies are data (`RULES`), listed in README's provider table and tested one by
//! one; `delivery.hold_on` adds the operator's own.

use std::time::Duration;

use crate::model::{ApiReply, UpstreamReply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    Deferred(Retry),
    Bounced,
    /// A configuration error: kept, logged and counted; tried again after a reload or restart.
    Held,
}

/// When a deferred recipient is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The ordinary backoff.
    Backoff,
    /// The backoff, and the upstream's send rate is halved for `throttle_period`.
    SlowDown,
    /// Not before this long (a daily quota): the upstream is also rested for as long.
    After(Duration),
    /// The final reply never came; the message may have been delivered. The backoff, and at
    /// least `retry_initial` whatever the attempt count, so a stalling upstream cannot
    /// multiply copies.
    OutcomeUnknown,
}

/// What a matching reply does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    SlowDown,
    DeferFor(Duration),
    Hold,
    Bounce,
}

/// One known reply: codes `low..=high`, the enhanced status if given, and a text fragment
/// matched case-insensitively if given. The first matching rule wins.
pub struct Rule {
    pub provider: &'static str,
    pub codes: (u16, u16),
    pub enhanced: Option<&'static str>,
    pub text: Option<&'static str>,
    pub action: Action,
}

/// SES's daily quota is a rolling 24-hour window: capacity comes back gradually, so an hour
/// is long enough not to hammer and short enough not to sit on mail.
const QUOTA_PAUSE: Duration = Duration::from_secs(3600);

const fn rule(
    provider: &'static str,
    codes: (u16, u16),
    enhanced: Option<&'static str>,
    text: Option<&'static str>,
    action: Action,
) -> Rule {
    Rule {
        provider,
        codes,
        enhanced,
        text,
        action,
    }
}

#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    // Amazon SES (SMTP interface).
    rule("Amazon SES", (454, 454), None, Some("daily message quota exceeded"), Action::DeferFor(QUOTA_PAUSE)),
    rule("Amazon SES", (454, 454), None, Some("maximum sending rate exceeded"), Action::SlowDown),
    rule("Amazon SES", (454, 454), None, Some("throttling"), Action::SlowDown),
    rule("Amazon SES", (554, 554), None, Some("is not authorized to perform"), Action::Hold),
    rule("Amazon SES", (554, 554), None, Some("access denied"), Action::Hold),
    rule("Amazon SES", (554, 554), None, Some("email address is not verified"), Action::Hold),
    rule("Amazon SES", (554, 554), None, Some("missing final '@domain'"), Action::Hold),
    rule("Amazon SES", (554, 554), None, Some("sending paused"), Action::Hold),
    // Google Workspace SMTP relay.
    rule("Google Workspace", (550, 550), Some("5.4.5"), Some("daily"), Action::DeferFor(QUOTA_PAUSE)),
    rule("Google Workspace", (550, 550), Some("5.7.0"), Some("mail relay denied"), Action::Hold),
    // Microsoft 365.
    rule("Microsoft 365", (550, 550), Some("5.7.60"), None, Action::Hold),
    rule("Microsoft 365", (554, 554), Some("5.2.0"), Some("sendasdenied"), Action::Hold),
    // Any provider: authentication required, too weak or refused (RFC 4954 6).
    rule("any", (530, 530), None, None, Action::Hold),
    rule("any", (534, 535), None, None, Action::Hold),
];

/// One known SESv2 API error: its code, and a message fragment matched case-insensitively if
/// given. The first matching rule wins; codes not listed are retried.
pub struct ApiRule {
    pub code: &'static str,
    pub text: Option<&'static str>,
    pub action: Action,
}

const fn api_rule(code: &'static str, text: Option<&'static str>, action: Action) -> ApiRule {
    ApiRule { code, text, action }
}

/// SESv2 reports an unverified sender as `MessageRejected` ("Email address is not verified";
/// moto says "Did not have authority to send from email"): our setup, so it holds; other
/// rejections are about the message and bounce.
#[rustfmt::skip]
pub const API_RULES: &[ApiRule] = &[
    api_rule("TooManyRequestsException", None, Action::SlowDown),
    api_rule("ThrottlingException", None, Action::SlowDown),
    api_rule("Throttling", None, Action::SlowDown),
    api_rule("LimitExceededException", Some("daily"), Action::DeferFor(QUOTA_PAUSE)),
    api_rule("LimitExceededException", None, Action::SlowDown),
    api_rule("MessageRejected", Some("not verified"), Action::Hold),
    api_rule("MessageRejected", Some("did not have authority"), Action::Hold),
    api_rule("MessageRejected", None, Action::Bounce),
    api_rule("MailFromDomainNotVerifiedException", None, Action::Hold),
    api_rule("AccessDeniedException", None, Action::Hold),
    api_rule("AccessDenied", None, Action::Hold),
    api_rule("SendingPausedException", None, Action::Hold),
    api_rule("AccountSuspendedException", None, Action::Hold),
    api_rule("NotFoundException", None, Action::Hold),
    api_rule("UnrecognizedClientException", None, Action::Hold),
    api_rule("InvalidClientTokenId", None, Action::Hold),
    api_rule("SignatureDoesNotMatch", None, Action::Hold),
    api_rule("ExpiredTokenException", None, Action::Hold),
    api_rule("BadRequestException", None, Action::Bounce),
];

/// What an API error means for the recipients of the call.
pub fn classify_api(reply: &ApiReply) -> Disposition {
    let Some(code) = reply.error_code.as_deref() else {
        return Disposition::Delivered;
    };
    let text = reply.message.to_lowercase();
    let action = API_RULES
        .iter()
        .find(|rule| rule.code == code && rule.text.is_none_or(|t| text.contains(t)))
        .map_or(Action::Retry, |rule| rule.action);
    disposition_of(action)
}

fn disposition_of(action: Action) -> Disposition {
    match action {
        Action::Retry => Disposition::Deferred(Retry::Backoff),
        Action::SlowDown => Disposition::Deferred(Retry::SlowDown),
        Action::DeferFor(pause) => Disposition::Deferred(Retry::After(pause)),
        Action::Hold => Disposition::Held,
        Action::Bounce => Disposition::Bounced,
    }
}

/// `hold_on` entries are three-digit codes (`535`) or texts matched case-insensitively.
pub fn classify(reply: &UpstreamReply, hold_on: &[String]) -> Disposition {
    if reply.is_positive() {
        return Disposition::Delivered;
    }
    let text = reply.text.to_lowercase();
    if held_by_operator_rule(reply, &text, hold_on) {
        return Disposition::Held;
    }
    let action = matching_rule(reply, &text)
        .map(|rule| rule.action)
        .unwrap_or(match reply.code {
            500..=599 => Action::Bounce,
            _ => Action::Retry,
        });
    disposition_of(action)
}

fn matching_rule(reply: &UpstreamReply, lowercase_text: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|rule| rule.matches(reply, lowercase_text))
}

/// Whose known reply this is ("Amazon SES"), for the log line that explains a hold or pause.
pub fn known_from(reply: &UpstreamReply) -> Option<&'static str> {
    matching_rule(reply, &reply.text.to_lowercase()).map(|rule| rule.provider)
}

impl Rule {
    fn matches(&self, reply: &UpstreamReply, lowercase_text: &str) -> bool {
        (self.codes.0..=self.codes.1).contains(&reply.code)
            && self
                .enhanced
                .is_none_or(|e| reply.enhanced.is_some_and(|got| got.to_string() == e))
            && self.text.is_none_or(|t| lowercase_text.contains(t))
    }
}

fn held_by_operator_rule(reply: &UpstreamReply, lowercase_text: &str, hold_on: &[String]) -> bool {
    hold_on.iter().any(|pattern| {
        if pattern.len() == 3 && pattern.bytes().all(|b| b.is_ascii_digit()) {
            pattern == &reply.code.to_string()
        } else {
            lowercase_text.contains(&pattern.to_lowercase())
        }
    })
}

/// RFC 5321 4.5.3.1.10: `452` "too many recipients" asks for the rest in a new transaction.
pub fn is_too_many_recipients(reply: &UpstreamReply) -> bool {
    reply.code == 452
        && (reply.enhanced.is_some_and(|e| e.to_string() == "4.5.3")
            || reply.text.to_lowercase().contains("too many recipients"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnhancedStatus;

    /// A reply as an upstream sends it: `code [x.y.z] text`.
    fn reply(line: &str) -> UpstreamReply {
        let (code, rest) = line.split_once(' ').unwrap();
        let (enhanced, text) = match rest.split_once(' ') {
            Some((status, text)) if status.split('.').count() == 3 => {
                let mut parts = status.split('.').map(|p| p.parse::<u16>().unwrap());
                (
                    Some(EnhancedStatus {
                        class: parts.next().unwrap() as u8,
                        subject: parts.next().unwrap(),
                        detail: parts.next().unwrap(),
                    }),
                    text,
                )
            }
            _ => (None, rest),
        };
        UpstreamReply {
            code: code.parse().unwrap(),
            enhanced,
            text: text.into(),
        }
    }

    #[test]
    fn provider_replies_decide_reply_by_reply() {
        let quota = Disposition::Deferred(Retry::After(QUOTA_PAUSE));
        let cases = [
            ("250 2.0.0 Ok", Disposition::Delivered),
            ("451 4.3.0 try again", Disposition::Deferred(Retry::Backoff)),
            ("550 5.1.1 no such user", Disposition::Bounced),
            (
                "552 5.3.4 Message size exceeds fixed limit",
                Disposition::Bounced,
            ),
            // Amazon SES
            (
                "454 Throttling failure: Maximum sending rate exceeded.",
                Disposition::Deferred(Retry::SlowDown),
            ),
            (
                "454 Throttling failure: Daily message quota exceeded.",
                quota,
            ),
            (
                "554 Access denied: User arn:aws:iam::123456789012:user/relay is not authorized to perform ses:SendRawEmail on resource arn:aws:ses:eu-west-1:123456789012:identity/example.com",
                Disposition::Held,
            ),
            (
                "554 Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1: root@ip-10-0-0-1",
                Disposition::Held,
            ),
            (
                "554 Transaction failed: Missing final '@domain'",
                Disposition::Held,
            ),
            (
                "554 Sending paused for this account. For more information, please check the AWS SES console.",
                Disposition::Held,
            ),
            (
                "554 Transaction failed: Duplicate header 'Subject'.",
                Disposition::Bounced,
            ),
            // Google Workspace
            (
                "550 5.4.5 Daily SMTP relay limit exceeded for customer. For more information on SMTP relay sending limits please contact your administrator",
                quota,
            ),
            (
                "550 5.7.0 Mail relay denied [192.0.2.10]. Invalid credentials for relay for one of the domains in: example.com",
                Disposition::Held,
            ),
            (
                "550 5.1.1 The email account that you tried to reach does not exist.",
                Disposition::Bounced,
            ),
            // Microsoft 365
            (
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
                Disposition::Held,
            ),
            (
                "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
                Disposition::Held,
            ),
            (
                "452 4.3.1 Insufficient system resources",
                Disposition::Deferred(Retry::Backoff),
            ),
            // Any provider
            (
                "535 5.7.8 Authentication credentials invalid",
                Disposition::Held,
            ),
            ("530 5.7.0 Authentication required", Disposition::Held),
        ];
        for (line, expected) in cases {
            assert_eq!(classify(&reply(line), &[]), expected, "{line}");
        }
    }

    /// The body rows of the first table under `heading` in README.
    fn readme_rows(heading: &str) -> impl Iterator<Item = &'static str> {
        include_str!("../../README.md")
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("README has {heading}"))
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
    }

    /// README's provider table lists every rule, in order, with what it does.
    #[test]
    fn readme_lists_every_rule() {
        let mut rows = readme_rows("### Provider replies");
        for rule in RULES {
            let row = rows.next().expect("a row per rule");
            let (low, high) = rule.codes;
            let code = if low == high {
                format!("`{low}")
            } else {
                format!("`{low}`–`{high}`")
            };
            let does = match rule.action {
                Action::Retry => "defer",
                Action::SlowDown => "halve the rate",
                Action::DeferFor(_) => "defer 1 h",
                Action::Hold => "hold",
                Action::Bounce => "bounce",
            };
            assert!(row.starts_with(&format!("| {} | ", rule.provider)), "{row}");
            assert!(row.contains(&code), "{row}");
            assert!(rule.enhanced.is_none_or(|e| row.contains(e)), "{row}");
            assert!(
                rule.text.is_none_or(|t| row.contains(&format!("\"{t}\""))),
                "{row}"
            );
            assert!(row.contains(does), "{row}: {does}");
        }
    }

    #[test]
    fn ses_api_errors_decide_by_code_and_text() {
        let api = |code: Option<&str>, message: &str| ApiReply {
            error_code: code.map(String::from),
            message: message.into(),
        };
        let cases = [
            (None, "accepted as 0100", Disposition::Delivered),
            (
                Some("TooManyRequestsException"),
                "Too many requests",
                Disposition::Deferred(Retry::SlowDown),
            ),
            (
                Some("LimitExceededException"),
                "Daily message quota exceeded",
                Disposition::Deferred(Retry::After(QUOTA_PAUSE)),
            ),
            (
                Some("MessageRejected"),
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: app@example.com",
                Disposition::Held,
            ),
            (
                Some("MessageRejected"),
                "Did not have authority to send from email app@example.com",
                Disposition::Held,
            ),
            (
                Some("MessageRejected"),
                "Illegal header",
                Disposition::Bounced,
            ),
            (
                Some("SendingPausedException"),
                "Sending is paused for this account",
                Disposition::Held,
            ),
            (
                Some("AccountSuspendedException"),
                "suspended",
                Disposition::Held,
            ),
            (
                Some("AccessDeniedException"),
                "not authorized to perform ses:SendEmail",
                Disposition::Held,
            ),
            (
                Some("InternalFailure"),
                "internal error",
                Disposition::Deferred(Retry::Backoff),
            ),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                classify_api(&api(code, message)),
                expected,
                "{code:?} {message}"
            );
        }
    }

    /// README's SES API table lists every API rule, in order.
    #[test]
    fn readme_lists_every_api_rule() {
        let mut rows = readme_rows("### SES API errors");
        for rule in API_RULES {
            let row = rows.next().expect("a row per API rule");
            assert!(row.starts_with(&format!("| `{}` | ", rule.code)), "{row}");
            assert!(
                rule.text.is_none_or(|t| row.contains(&format!("\"{t}\""))),
                "{row}"
            );
        }
    }

    #[test]
    fn the_operator_can_hold_more() {
        let hold_on = vec!["421".to_string(), "Domain not allowed".to_string()];
        assert_eq!(classify(&reply("421 closing"), &hold_on), Disposition::Held);
        assert_eq!(
            classify(&reply("550 5.7.1 domain NOT ALLOWED here"), &hold_on),
            Disposition::Held
        );
        assert_eq!(
            classify(&reply("550 5.1.1 nobody"), &hold_on),
            Disposition::Bounced
        );
    }

    #[test]
    fn too_many_recipients_is_recognised_by_status_or_text() {
        assert!(is_too_many_recipients(&reply(
            "452 4.5.3 Error: too many recipients"
        )));
        assert!(is_too_many_recipients(&reply("452 Too many recipients")));
        assert!(!is_too_many_recipients(&reply(
            "452 4.3.1 Insufficient system storage"
        )));
        assert!(!is_too_many_recipients(&reply(
            "451 4.5.3 too many recipients"
        )));
    }
}
