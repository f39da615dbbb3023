//! SMTP replies, each with its RFC 3463 enhanced status code. Fixed texts are named constants
//! so that tests can assert on them.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// One or more lines separated by '\n'; each is sent as its own reply line.
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn fixed(code: u16, text: &'static str) -> Reply {
        Reply {
            code,
            text: Cow::Borrowed(text),
        }
    }

    pub fn new(code: u16, text: String) -> Reply {
        Reply {
            code,
            text: Cow::Owned(text),
        }
    }

    /// 4xx and 5xx: the client did something wrong, or we cannot do it now.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Why a client was refused, for the `messages_refused` metric; None for replies that
    /// refuse nothing (success, 354, shutting down).
    pub fn refusal_reason(&self) -> Option<&'static str> {
        if self == &TOO_MANY_CONNECTIONS {
            return Some("rate");
        }
        let enhanced = self.text.split_whitespace().next().unwrap_or("");
        let reason = match (self.code, enhanced) {
            (0..400, _) | (421, "4.3.2") => return None,
            (554, "5.7.1") => "relay",
            (552, _) => "size",
            (553, "5.7.1") => "sender",
            (550, "5.1.1") => "recipient",
            (452, "4.5.3") => "recipients",
            (452, "4.3.1") => "storage",
            (421, "4.4.2") => "timeout",
            (554, "5.6.0") => "content",
            (501 | 553, e) if e.starts_with("5.1.") || e == "5.6.7" => "address",
            _ => "protocol",
        };
        Some(reason)
    }

    /// Appends the reply in wire form: `250-first\r\n250 last\r\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let separator = if lines.peek().is_some() { '-' } else { ' ' };
            out.extend_from_slice(format!("{}{}{}\r\n", self.code, separator, line).as_bytes());
        }
    }
}

pub const OK: Reply = Reply::fixed(250, "2.0.0 Ok");
pub const SENDER_OK: Reply = Reply::fixed(250, "2.1.0 Ok");
pub const RECIPIENT_OK: Reply = Reply::fixed(250, "2.1.5 Ok");
pub const START_DATA: Reply = Reply::fixed(354, "End data with <CR><LF>.<CR><LF>");
pub const BYE: Reply = Reply::fixed(221, "2.0.0 Bye");
pub const HELP: Reply = Reply::fixed(
    214,
    "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\nEnd of HELP",
);
pub const CANNOT_VRFY: Reply = Reply::fixed(
    252,
    "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
);

pub const NEED_HELO: Reply = Reply::fixed(503, "5.5.1 Error: send HELO/EHLO first");
pub const NESTED_MAIL: Reply = Reply::fixed(503, "5.5.1 Error: nested MAIL command");
pub const NEED_MAIL: Reply = Reply::fixed(503, "5.5.1 Error: need MAIL command");
pub const NEED_RCPT: Reply = Reply::fixed(503, "5.5.1 Error: need RCPT command");
/// RFC 2920 3.1: a pipelined DATA after every RCPT was refused.
pub const NO_VALID_RECIPIENTS: Reply = Reply::fixed(554, "5.5.1 Error: no valid recipients");
pub const UNKNOWN_COMMAND: Reply = Reply::fixed(500, "5.5.2 Error: command not recognized");
pub const NOT_IMPLEMENTED: Reply = Reply::fixed(502, "5.5.1 Error: command not implemented");
pub const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.2 Error: line too long");
pub const NUL_IN_COMMAND: Reply = Reply::fixed(500, "5.5.2 Error: NUL character in command");
pub const NOT_UTF8: Reply = Reply::fixed(500, "5.5.2 Error: command is not valid UTF-8");
pub const RELAY_DENIED: Reply = Reply::fixed(554, "5.7.1 Relay access denied");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3 Error: too many recipients");
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
pub const TOO_MANY_ERRORS: Reply =
    Reply::fixed(421, "4.7.0 Error: too many errors, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::fixed(421, "4.7.0 Error: too many connections, try again later");
pub const TIMEOUT: Reply = Reply::fixed(421, "4.4.2 Error: timeout exceeded, closing connection");
pub const SHUTTING_DOWN: Reply = Reply::fixed(421, "4.3.2 Service shutting down, try again later");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified_for_metrics() {
        assert_eq!(RELAY_DENIED.refusal_reason(), Some("relay"));
        assert_eq!(MESSAGE_TOO_BIG.refusal_reason(), Some("size"));
        assert_eq!(TOO_MANY_CONNECTIONS.refusal_reason(), Some("rate"));
        assert_eq!(TOO_MANY_ERRORS.refusal_reason(), Some("protocol"));
        assert_eq!(STORAGE_FAILURE.refusal_reason(), Some("storage"));
        assert_eq!(
            Reply::new(553, "5.7.1 <a@b>: Sender address rejected".into()).refusal_reason(),
            Some("sender")
        );
        assert_eq!(
            Reply::new(553, "5.1.3 <x%y@z>: no".into()).refusal_reason(),
            Some("address")
        );
        assert_eq!(OK.refusal_reason(), None);
        assert_eq!(SHUTTING_DOWN.refusal_reason(), None);
    }

    #[test]
    fn multiline_replies_use_dash_continuation() {
        let mut out = Vec::new();
        HELP.write_to(&mut out);
        assert_eq!(
            out,
            b"214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n214 End of HELP\r\n"
        );
    }
}
