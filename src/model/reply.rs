//! A reply as SMTP carries it: the three-digit code and its text, whose first word is the
//! RFC 3463 enhanced status code. Our own replies to clients and the upstream's replies to us
//! are the same thing, so one type holds both.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 2xx success, 3xx go on, 4xx try again later, 5xx permanent (RFC 5321 4.2.1).
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
