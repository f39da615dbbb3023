//! One SMTP command line to a `Command`. smtp-proto recognises the verbs; MAIL and RCPT are
//! parsed here because smtp-proto's path parser rewrites paths (drops source routes, unquotes,
//! maps `<postmaster>` to `<>`), and a relay must see the path exactly as the client sent it.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

use super::reply::{self, Reply};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `path` is the text between the angle brackets, unparsed: whether UTF-8 is allowed in it
    /// depends on the SMTPUTF8 parameter.
    Mail {
        path: String,
        params: MailParams,
    },
    Rcpt {
        path: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]`; `=` is an empty initial response (RFC 4954 4).
    Auth {
        mechanism: Mechanism,
        initial: Option<String>,
    },
    NotImplemented,
}

/// The SASL mechanisms offered; anything else is `504 5.5.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 SIZE=: the client's estimate, checked against our limit before any data.
    pub size: Option<u64>,
    /// RFC 6152 BODY=8BITMIME.
    pub eight_bit: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
}

/// Parses one line, terminator included (CRLF or bare LF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let text = std::str::from_utf8(line).map_err(|_| reply::NOT_UTF8)?;
    let text = text.trim_end_matches(['\r', '\n']);
    // RFC 5321 2.3.8: CR only before LF. smtp-proto's tokenizer skips a CR inside a word
    // ("STARTTL\rS" reads as STARTTLS; found by the session fuzz target), and a receiver
    // further on may split lines at it: refused, like NUL.
    if text.contains('\r') {
        return Err(reply::BARE_CR_IN_COMMAND);
    }
    if let Some(rest) = strip_prefix_ignore_case(text, "MAIL FROM:") {
        let (path, params) = split_path(rest, "MAIL FROM:<address> [parameters]")?;
        return Ok(Command::Mail {
            path: path.to_string(),
            params: parse_mail_params(params)?,
        });
    }
    if let Some(rest) = strip_prefix_ignore_case(text, "RCPT TO:") {
        let (path, params) = split_path(rest, "RCPT TO:<address>")?;
        if let Some(param) = params.split_whitespace().next() {
            return Err(unsupported(param));
        }
        return Ok(Command::Rcpt {
            path: path.to_string(),
        });
    }
    let mut bytes = line.iter();
    match Request::parse(&mut bytes) {
        Ok(request) => Ok(from_request(request)),
        Err(ProtoError::SyntaxError { syntax }) => {
            Err(Reply::new(501, format!("5.5.4 Syntax: {syntax}")))
        }
        Err(ProtoError::UnknownCommand) => Err(reply::UNKNOWN_COMMAND),
        // MAIL/RCPT variants smtp-proto still sees (e.g. "MAIL FROM" without a colon).
        Err(ProtoError::InvalidSenderAddress | ProtoError::InvalidRecipientAddress) => Err(
            Reply::fixed(501, "5.5.4 Syntax: MAIL FROM:<address> / RCPT TO:<address>"),
        ),
        Err(_) => Err(Reply::fixed(501, "5.5.4 Error: invalid command syntax")),
    }
}

fn from_request(request: Request<Cow<'_, str>>) -> Command {
    match request {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                smtp_proto::AUTH_PLAIN => Mechanism::Plain,
                smtp_proto::AUTH_LOGIN => Mechanism::Login,
                _ => Mechanism::Other,
            },
            initial: match initial_response.as_ref() {
                "" => None,
                "=" => Some(String::new()),
                text => Some(text.to_string()),
            },
        },
        // MAIL and RCPT never reach smtp-proto with a valid prefix; the rest (EXPN, BDAT,
        // ETRN, ...) are extensions we do not offer.
        _ => Command::NotImplemented,
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Splits `<path> params` (a space after the colon is tolerated, as most MTAs do) into the
/// text inside the brackets and the parameters. Quoted strings may contain `>`.
fn split_path<'a>(rest: &'a str, syntax: &str) -> Result<(&'a str, &'a str), Reply> {
    let syntax_error = || Reply::new(501, format!("5.5.4 Syntax: {syntax}"));
    let rest = rest.trim_start_matches(' ');
    let inner = rest.strip_prefix('<').ok_or_else(syntax_error)?;
    let mut in_quote = false;
    let mut escaped = false;
    for (index, ch) in inner.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                let params = &inner[index + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err(syntax_error());
                }
                return Ok((&inner[..index], params));
            }
            _ => {}
        }
    }
    Err(syntax_error())
}

fn parse_mail_params(params: &str) -> Result<MailParams, Reply> {
    let mut parsed = MailParams::default();
    for param in params.split_whitespace() {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(value)) => {
                let size = value
                    .parse()
                    .map_err(|_| Reply::fixed(501, "5.5.4 Error: SIZE takes a number of bytes"))?;
                parsed.size = Some(size);
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("7BIT") => parsed.eight_bit = false,
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("8BITMIME") => {
                parsed.eight_bit = true
            }
            ("SMTPUTF8", None) => parsed.smtputf8 = true,
            _ => return Err(unsupported(param)),
        }
    }
    Ok(parsed)
}

fn unsupported(param: &str) -> Reply {
    let shown: String = param.chars().take(40).collect();
    Reply::new(555, format!("5.5.4 Error: unsupported parameter {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line.as_bytes()).unwrap_or_else(|r| panic!("{line:?} refused: {r:?}"))
    }

    fn refused(line: &str) -> u16 {
        parse(line.as_bytes()).expect_err(line).code
    }

    #[test]
    fn verbs_are_recognised_case_insensitively() {
        assert_eq!(
            ok("EHLO client.example\r\n"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("helo x\r\n"), Command::Helo("x".into()));
        assert_eq!(ok("DATA\r\n"), Command::Data);
        assert_eq!(ok("rset\r\n"), Command::Rset);
        assert_eq!(ok("NOOP\r\n"), Command::Noop);
        assert_eq!(ok("QUIT\n"), Command::Quit);
        assert_eq!(ok("VRFY root\r\n"), Command::Vrfy);
        assert_eq!(ok("HELP\r\n"), Command::Help);
        assert_eq!(ok("STARTTLS\r\n"), Command::StartTls);
        assert_eq!(refused("STARTTL\rS\r\n"), 500);
        assert_eq!(
            refused("MAIL FROM:<a@b.example>\rRCPT TO:<c@d.example>\r\n"),
            500
        );
        assert_eq!(
            ok("AUTH PLAIN AHVAcA==\r\n"),
            Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AHVAcA==".into())
            }
        );
        assert_eq!(
            ok("auth login\r\n"),
            Command::Auth {
                mechanism: Mechanism::Login,
                initial: None
            }
        );
        assert_eq!(
            ok("AUTH PLAIN =\r\n"),
            Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some(String::new())
            }
        );
        assert!(matches!(
            ok("AUTH CRAM-MD5\r\n"),
            Command::Auth {
                mechanism: Mechanism::Other,
                ..
            }
        ));
        assert_eq!(refused("FOO bar\r\n"), 500);
        assert_eq!(refused("EHLO\r\n"), 501);
    }

    #[test]
    fn mail_from_keeps_the_raw_path_and_reads_parameters() {
        assert_eq!(
            ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n"),
            Command::Mail {
                path: "a@b.example".into(),
                params: MailParams {
                    size: Some(1000),
                    eight_bit: true,
                    smtputf8: true
                }
            }
        );
        assert_eq!(
            ok("mail from: <@a,@b:u@c>\r\n"),
            Command::Mail {
                path: "@a,@b:u@c".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("MAIL FROM:<\"x>y\"@c>\r\n"),
            Command::Mail {
                path: "\"x>y\"@c".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(refused("MAIL FROM:a@b\r\n"), 501);
        assert_eq!(refused("MAIL FROM:<a@b\r\n"), 501);
        assert_eq!(refused("MAIL FROM:<a@b> RET=FULL\r\n"), 555);
        assert_eq!(refused("MAIL FROM:<a@b> SIZE=big\r\n"), 501);
        assert_eq!(refused("MAIL FROM:<a@b> BODY=BINARYMIME\r\n"), 555);
    }

    #[test]
    fn rcpt_to_takes_no_parameters() {
        assert_eq!(
            ok("RCPT TO:<root>\r\n"),
            Command::Rcpt {
                path: "root".into()
            }
        );
        assert_eq!(refused("RCPT TO:<a@b> NOTIFY=NEVER\r\n"), 555);
    }
}

#[cfg(test)]
mod fuzz {

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any line: see `fuzzing::command`.
        #[test]
        fn any_line_parses_or_is_refused_with_5xx(
            prefix in proptest::sample::select(vec!["", "MAIL FROM:", "RCPT TO:", "EHLO ", "HELO ", "DATA", "VRFY ", "mail from:<", "RCPT TO:<"]),
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            let mut line = prefix.as_bytes().to_vec();
            line.extend_from_slice(&rest);
            crate::fuzzing::command(&line);
        }
    }
}
