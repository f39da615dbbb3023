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
    fn multiline_replies_use_dash_continuation() {
        let mut out = Vec::new();
        HELP.write_to(&mut out);
        assert_eq!(
            out,
            b"214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n214 End of HELP\r\n"
        );
    }
}
