//! SMTP replies, each with its RFC 3463 enhanced status code. Fixed texts are named constants
//! so that tests can assert on them.

pub use crate::intake::refusal::{
    MESSAGE_TOO_BIG, NO_VALID_RECIPIENTS, NUL_IN_MESSAGE, RELAY_DENIED, STORAGE_FAILURE,
};
pub use crate::model::Reply;

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
pub const UNKNOWN_COMMAND: Reply = Reply::fixed(500, "5.5.2 Error: command not recognized");
pub const NOT_IMPLEMENTED: Reply = Reply::fixed(502, "5.5.1 Error: command not implemented");
pub const READY_FOR_TLS: Reply = Reply::fixed(220, "2.0.0 Ready to start TLS");
pub const TLS_ACTIVE: Reply = Reply::fixed(503, "5.5.1 Error: TLS already active");
pub const TLS_IN_TRANSACTION: Reply =
    Reply::fixed(503, "5.5.1 Error: STARTTLS inside a mail transaction");
/// Commands sent behind STARTTLS before its reply would run inside the TLS session as if the
/// client had sent them there (the STARTTLS command-injection class, CVE-2011-0411): refused,
/// and the connection closed.
pub const PIPELINED_AFTER_STARTTLS: Reply =
    Reply::fixed(554, "5.5.0 Error: commands pipelined after STARTTLS");
pub const TLS_REQUIRED: Reply = Reply::fixed(530, "5.7.0 Must issue a STARTTLS command first");
pub const RATE_EXCEEDED: Reply = Reply::fixed(
    450,
    "4.7.1 Error: too many messages, slow down and try again later",
);
pub const AUTH_NEEDS_TLS: Reply = Reply::fixed(
    538,
    "5.7.11 Encryption required for requested authentication mechanism",
);
pub const AUTH_OK: Reply = Reply::fixed(235, "2.7.0 Authentication successful");
pub const AUTH_FAILED: Reply = Reply::fixed(535, "5.7.8 Authentication credentials invalid");
pub const AUTH_MALFORMED: Reply = Reply::fixed(501, "5.5.2 Cannot decode the response");
pub const AUTH_ABORTED: Reply = Reply::fixed(501, "5.7.0 Authentication aborted");
pub const AUTH_UNKNOWN_MECHANISM: Reply =
    Reply::fixed(504, "5.5.4 Unrecognized authentication type");
pub const AUTH_ALREADY: Reply = Reply::fixed(503, "5.5.1 Error: already authenticated");
pub const AUTH_IN_TRANSACTION: Reply =
    Reply::fixed(503, "5.5.1 Error: AUTH not allowed in a mail transaction");
pub const AUTH_LOCKED_OUT: Reply = Reply::fixed(
    421,
    "4.7.0 Error: too many failed authentications, try again later",
);
pub const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.2 Error: line too long");
pub const NUL_IN_COMMAND: Reply = Reply::fixed(500, "5.5.2 Error: NUL character in command");
pub const BARE_CR_IN_COMMAND: Reply = Reply::fixed(500, "5.5.2 Error: bare CR in command");
pub const NOT_UTF8: Reply = Reply::fixed(500, "5.5.2 Error: command is not valid UTF-8");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3 Error: too many recipients");
pub const TOO_MANY_ERRORS: Reply =
    Reply::fixed(421, "4.7.0 Error: too many errors, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::fixed(421, "4.7.0 Error: too many connections, try again later");
pub const TIMEOUT: Reply = Reply::fixed(421, "4.4.2 Error: timeout exceeded, closing connection");
pub const SHUTTING_DOWN: Reply = Reply::fixed(421, "4.3.2 Service shutting down, try again later");

/// Why a client was refused, for the `messages_refused` metric; None for replies that
/// refuse nothing (success, 354, shutting down).
pub fn refusal_reason(reply: &Reply) -> Option<&'static str> {
    if reply == &TOO_MANY_CONNECTIONS {
        return Some("rate");
    }
    let enhanced = reply.text.split_whitespace().next().unwrap_or("");
    let reason = match (reply.code, enhanced) {
        (0..400, _) | (421, "4.3.2") => return None,
        (554, "5.7.1") => "relay",
        (552, _) => "size",
        (553, "5.7.1") => "sender",
        (550, "5.1.1") => "recipient",
        (452, "4.5.3") => "recipients",
        (452, "4.3.1") => "storage",
        (421, "4.4.2") => "timeout",
        (450, "4.7.1") => "rate",
        (535, _) | (421, "4.7.0") if reply == &AUTH_FAILED || reply == &AUTH_LOCKED_OUT => "auth",
        (554, "5.6.0") => "content",
        (501 | 553, e) if e.starts_with("5.1.") || e == "5.6.7" => "address",
        _ => "protocol",
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified_for_metrics() {
        let reason = refusal_reason;
        assert_eq!(reason(&RELAY_DENIED), Some("relay"));
        assert_eq!(reason(&MESSAGE_TOO_BIG), Some("size"));
        assert_eq!(reason(&TOO_MANY_CONNECTIONS), Some("rate"));
        assert_eq!(reason(&TOO_MANY_ERRORS), Some("protocol"));
        assert_eq!(reason(&STORAGE_FAILURE), Some("storage"));
        assert_eq!(
            reason(&Reply::new(
                553,
                "5.7.1 <a@b>: Sender address rejected".into()
            )),
            Some("sender")
        );
        assert_eq!(
            reason(&Reply::new(553, "5.1.3 <x%y@z>: no".into())),
            Some("address")
        );
        assert_eq!(reason(&OK), None);
        assert_eq!(reason(&SHUTTING_DOWN), None);
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
