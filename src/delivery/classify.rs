//! What a reply means for a recipient. The upstream's reply decides (2xx delivered, 4xx
//! deferred, 5xx bounced), except for replies that say our own setup is wrong: those hold the
//! mail instead of bouncing it, so one bad password never becomes a bounce storm.

use crate::model::UpstreamReply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    Deferred,
    Bounced,
    /// A configuration error: kept, logged and counted; tried again after a reload or restart.
    Held,
}

/// `hold_on` entries are three-digit codes (`535`) or texts matched case-insensitively
/// (`Email address is not verified`).
pub fn classify(reply: &UpstreamReply, hold_on: &[String]) -> Disposition {
    if reply.is_positive() {
        return Disposition::Delivered;
    }
    if is_config_error(reply, hold_on) {
        return Disposition::Held;
    }
    match reply.code {
        500..=599 => Disposition::Bounced,
        _ => Disposition::Deferred,
    }
}

fn is_config_error(reply: &UpstreamReply, hold_on: &[String]) -> bool {
    let text = reply.text.to_lowercase();
    hold_on.iter().any(|pattern| {
        if pattern.len() == 3 && pattern.bytes().all(|b| b.is_ascii_digit()) {
            pattern == &reply.code.to_string()
        } else {
            text.contains(&pattern.to_lowercase())
        }
    })
}

/// SES answers `454 Throttling failure: Maximum sending rate exceeded.` when we send too fast.
pub fn is_throttling(reply: &UpstreamReply) -> bool {
    let text = reply.text.to_lowercase();
    reply.code == 454 && (text.contains("rate") || text.contains("throttl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> UpstreamReply {
        UpstreamReply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    fn defaults() -> Vec<String> {
        [
            "530",
            "535",
            "Email address is not verified",
            "Missing final '@domain'",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn replies_decide_per_class() {
        let hold = defaults();
        let cases = [
            (250, "2.0.0 Ok", Disposition::Delivered),
            (451, "4.3.0 try again", Disposition::Deferred),
            (
                454,
                "4.7.0 Throttling failure: Maximum sending rate exceeded.",
                Disposition::Deferred,
            ),
            (550, "5.1.1 no such user", Disposition::Bounced),
            (
                554,
                "Message rejected: Email address is not verified. The following identities failed the check",
                Disposition::Held,
            ),
            (
                554,
                "Transaction failed: Missing final '@domain'",
                Disposition::Held,
            ),
            (
                535,
                "5.7.8 Authentication credentials invalid",
                Disposition::Held,
            ),
            (530, "5.7.0 Authentication required", Disposition::Held),
        ];
        for (code, text, expected) in cases {
            assert_eq!(
                classify(&reply(code, text), &hold),
                expected,
                "{code} {text}"
            );
        }
    }

    #[test]
    fn throttling_is_recognised() {
        assert!(is_throttling(&reply(
            454,
            "Throttling failure: Maximum sending rate exceeded."
        )));
        assert!(!is_throttling(&reply(454, "4.7.0 TLS not available")));
        assert!(!is_throttling(&reply(451, "rate")));
    }
}
