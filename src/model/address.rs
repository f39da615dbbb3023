//! Envelope addresses as SMTP carries them (RFC 5321 4.1.2), parsed strictly.
//!
//! smtp-proto's path parser is lenient in ways a relay must not be: it silently drops source
//! routes, unquotes quoted local parts and turns `<postmaster>` into the null sender. We parse
//! the raw path ourselves so that every trick is either refused or kept literally, never routed.

use std::fmt;

/// RFC 5321 4.5.3.1: limits on the parts of a path.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;

/// A mailbox: a local part and, when qualified, a domain. Kept exactly as the client wrote it
/// (quotes included), so what we relay is what we were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    local: String,
    domain: Option<String>,
}

/// The reverse path of MAIL FROM: a mailbox, or the null sender `<>` used by bounces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Address),
}

/// Why a path was refused. Each maps to an enhanced status code in the listener and to an exit
/// code in `sendmail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("malformed address")]
    Syntax,
    #[error("source routes are not accepted")]
    SourceRoute,
    #[error("more than one @ in address")]
    MultipleAt,
    #[error("address too long")]
    TooLong,
    #[error("non-ASCII address requires SMTPUTF8")]
    NeedsSmtpUtf8,
}

impl Address {
    /// Parses a bare mailbox (`local@domain` or an unqualified `local`), as found between the
    /// angle brackets of a path or on a `sendmail` command line.
    pub fn parse(text: &str, utf8_allowed: bool) -> Result<Address, AddressError> {
        if text.len() > MAX_PATH {
            return Err(AddressError::TooLong);
        }
        if !utf8_allowed && !text.is_ascii() {
            return Err(AddressError::NeedsSmtpUtf8);
        }
        let (local, rest) = split_local_part(text)?;
        let domain = match rest {
            None => None,
            Some(domain) if domain.contains('@') => return Err(AddressError::MultipleAt),
            Some(domain) => Some(validate_domain(domain)?.to_string()),
        };
        Ok(Address {
            local: local.to_string(),
            domain,
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// True for a quoted local part (`"a b"@example.com`).
    pub fn is_quoted(&self) -> bool {
        self.local.starts_with('"')
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(f, "{}@{}", self.local, domain),
            None => f.write_str(&self.local),
        }
    }
}

impl ReversePath {
    /// The address as stored in the spool and written in MAIL FROM: empty for the null sender.
    pub fn as_spooled(&self) -> String {
        match self {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(address) => address.to_string(),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.as_spooled())
    }
}

/// Parses the inside of `<...>` of MAIL FROM: empty is the null sender.
pub fn parse_reverse_path(inner: &str, utf8_allowed: bool) -> Result<ReversePath, AddressError> {
    if inner.is_empty() {
        return Ok(ReversePath::Null);
    }
    parse_forward_path(inner, utf8_allowed).map(ReversePath::Mailbox)
}

/// Parses the inside of `<...>` of RCPT TO. A leading `@` is the RFC 5321 A-d-l (source
/// route, `<@a,@b:u@c>`): refused rather than silently dropped, since honouring or stripping
/// it both change where mail goes.
pub fn parse_forward_path(inner: &str, utf8_allowed: bool) -> Result<Address, AddressError> {
    if inner.starts_with('@') {
        return Err(AddressError::SourceRoute);
    }
    Address::parse(inner, utf8_allowed)
}

/// Splits at the `@` that ends the local part, validating the local part as a dot-string or a
/// quoted string (RFC 5321 4.1.2).
fn split_local_part(text: &str) -> Result<(&str, Option<&str>), AddressError> {
    let end = if text.starts_with('"') {
        quoted_string_end(text)?
    } else {
        text.find('@').unwrap_or(text.len())
    };
    let local = &text[..end];
    if local.is_empty() || local.len() > MAX_LOCAL_PART {
        return Err(if local.is_empty() {
            AddressError::Syntax
        } else {
            AddressError::TooLong
        });
    }
    if !local.starts_with('"') && !is_dot_string(local) {
        return Err(AddressError::Syntax);
    }
    match &text[end..] {
        "" => Ok((local, None)),
        rest if rest.starts_with('@') => Ok((local, Some(&rest[1..]))),
        _ => Err(AddressError::Syntax),
    }
}

/// Index just past the closing quote of a quoted string that starts at byte 0.
fn quoted_string_end(text: &str) -> Result<usize, AddressError> {
    let mut escaped = false;
    for (index, ch) in text.char_indices().skip(1) {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Ok(index + 1),
            '\r' | '\n' => return Err(AddressError::Syntax),
            _ => {}
        }
    }
    Err(AddressError::Syntax)
}

/// RFC 5321 Dot-string: atoms of atext separated by single dots. UTF-8 is allowed here; the
/// caller decides whether SMTPUTF8 permits it.
fn is_dot_string(local: &str) -> bool {
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_atext(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(ch) || !ch.is_ascii()
}

/// A domain name or an address literal (`[192.0.2.1]`, `[IPv6:...]`).
fn validate_domain(domain: &str) -> Result<&str, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::Syntax);
    }
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip_text = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip_text
            .parse::<std::net::IpAddr>()
            .map(|_| domain)
            .map_err(|_| AddressError::Syntax);
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || !ch.is_ascii())
    });
    if labels_ok {
        Ok(domain)
    } else {
        Err(AddressError::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_unqualified_addresses_parse() {
        let a = Address::parse("user@example.com", false).unwrap();
        assert_eq!((a.local_part(), a.domain()), ("user", Some("example.com")));
        let root = Address::parse("root", false).unwrap();
        assert_eq!((root.local_part(), root.domain()), ("root", None));
        assert_eq!(root.to_string(), "root");
        let literal = Address::parse("u@[192.0.2.1]", false).unwrap();
        assert_eq!(literal.domain(), Some("[192.0.2.1]"));
    }

    #[test]
    fn tricks_are_refused_with_a_reason() {
        let cases = [
            ("@a,@b:u@c", AddressError::SourceRoute),
            ("@a:u@c", AddressError::SourceRoute),
            ("a@b@c", AddressError::MultipleAt),
            ("a..b@c", AddressError::Syntax),
            (".a@c", AddressError::Syntax),
            ("a@", AddressError::Syntax),
            ("@", AddressError::SourceRoute),
            ("a@-x.com", AddressError::Syntax),
            ("a b@c", AddressError::Syntax),
            ("\"unterminated@c", AddressError::Syntax),
            ("a@[300.1.1.1]", AddressError::Syntax),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_forward_path(input, false),
                Err(expected.clone()),
                "{input}"
            );
        }
    }

    #[test]
    fn quoted_local_part_is_kept_literally() {
        let a = Address::parse("\"a@b\"@c.example", false).unwrap();
        assert_eq!(a.local_part(), "\"a@b\"");
        assert_eq!(a.domain(), Some("c.example"));
        assert!(a.is_quoted());
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert_eq!(
            Address::parse("jörg@example.de", false),
            Err(AddressError::NeedsSmtpUtf8)
        );
        let a = Address::parse("jörg@bücher.example", true).unwrap();
        assert_eq!(a.to_string(), "jörg@bücher.example");
    }

    #[test]
    fn length_limits_follow_rfc5321() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            Address::parse(&long_local, false),
            Err(AddressError::TooLong)
        );
        let long_path = format!("a@{}.com", "b".repeat(260));
        assert_eq!(
            Address::parse(&long_path, false),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(parse_reverse_path("", false), Ok(ReversePath::Null));
        assert_eq!(ReversePath::Null.to_string(), "<>");
    }
}
