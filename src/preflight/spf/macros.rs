//! SPF macro strings (RFC 7208 section 7): parsed strictly when a record is read, so a bad
//! `%` is the record's syntax error, and expanded the way `check_host` expands them when a
//! term is evaluated.

use std::fmt;
use std::net::IpAddr;

/// RFC 7208 7.1 `delimiter`.
const DELIMITERS: &str = ".-+,/_=";
/// RFC 7208 7.3: a longer expanded domain loses labels from the left.
const MAX_DOMAIN_LEN: usize = 253;

/// A macro string as written: literal runs and `%{…}` expansions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroString {
    pieces: Vec<Piece>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Expand(Expansion),
}

/// `%{` letter transformers delimiters `}` (RFC 7208 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expansion {
    letter: Letter,
    /// An upper-case letter asks for the value URL-escaped (RFC 7208 7.3).
    escape: bool,
    /// Keep this many right-hand parts (never zero: 7.3 "MUST be nonzero").
    keep: Option<usize>,
    reverse: bool,
    delimiters: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Letter {
    Sender,
    Local,
    SenderDomain,
    Domain,
    Ip,
    ValidatedName,
    Version,
    Helo,
    /// `c`, `r`, `t`: only in `exp=` text (RFC 7208 7.2), which preflight never expands.
    ExplanationOnly(char),
}

/// Where a macro string stands, which decides what it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A target name: `include:`, `a:`, `redirect=`…; must end like a domain (7.1).
    Domain,
    /// The value of an unknown modifier: any macro string of the non-`exp` letters.
    Value,
    /// The `exp=` target: its TXT text may use `c`, `r`, `t`; the name itself may not.
    Explanation,
}

/// Why a macro string is not valid, for the permerror line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroError(pub String);

impl fmt::Display for MacroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The values `check_host` expands macros with (RFC 7208 7.2).
pub struct Context<'a> {
    pub sender: &'a str,
    pub local: &'a str,
    pub sender_domain: &'a str,
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    /// `%{p}`, found by the evaluator only when a record uses it.
    pub validated_name: Option<&'a str>,
}

impl MacroString {
    pub fn parse(text: &str, usage: Use) -> Result<MacroString, MacroError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                // 7.1 macro-literal: visible characters other than "%".
                if !c.is_ascii_graphic() {
                    return Err(MacroError(format!(
                        "'{}' is not allowed in a macro string (RFC 7208 7.1)",
                        c.escape_default()
                    )));
                }
                literal.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => literal.push('%'),
                Some('_') => literal.push(' '),
                Some('-') => literal.push_str("%20"),
                Some('{') => {
                    let mut body = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => body.push(c),
                            None => {
                                return Err(MacroError(format!(
                                    "unterminated %{{ in \"{text}\" (RFC 7208 7.1)"
                                )));
                            }
                        }
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Expand(Expansion::parse(&body, usage)?));
                }
                other => {
                    return Err(MacroError(format!(
                        "'%{}' is not a macro (RFC 7208 7.1: only %{{…}}, %%, %_ and %-)",
                        other.map(String::from).unwrap_or_default()
                    )));
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let string = MacroString {
            pieces,
            text: text.to_string(),
        };
        if usage != Use::Value && !string.ends_like_a_domain() {
            return Err(MacroError(format!(
                "\"{text}\" does not end in a top-level label or a macro (RFC 7208 7.1 domain-end)"
            )));
        }
        Ok(string)
    }

    /// Whether it uses `%{p}`, which costs the evaluator a PTR lookup to expand.
    pub fn uses_validated_name(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Expand(Expansion {
                    letter: Letter::ValidatedName,
                    ..
                })
            )
        })
    }

    /// RFC 7208 7.1: `domain-end = ( "." toplabel [ "." ] ) / macro-expand`. Judged on the
    /// text as written, before expansion.
    fn ends_like_a_domain(&self) -> bool {
        if self.text.ends_with('}') && matches!(self.pieces.last(), Some(Piece::Expand(_))) {
            return true;
        }
        let text = self.text.strip_suffix('.').unwrap_or(&self.text);
        let Some((_, last)) = text.rsplit_once('.') else {
            return false;
        };
        is_toplabel(last)
    }

    /// The expanded target name (7.3), without a final dot, shortened to 253 characters.
    pub fn expand_domain(&self, context: &Context) -> String {
        let mut out = self.expand(context);
        if out.ends_with('.') {
            out.pop();
        }
        while out.len() > MAX_DOMAIN_LEN {
            match out.split_once('.') {
                Some((_, rest)) => out = rest.to_string(),
                None => break,
            }
        }
        out
    }

    fn expand(&self, context: &Context) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Expand(expansion) => out.push_str(&expansion.expand(context)),
            }
        }
        out
    }
}

impl fmt::Display for MacroString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// RFC 7208 7.1 `toplabel = ( *alphanum ALPHA *alphanum ) /
/// ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`: not all digits (so `a:192.0.2.1` is an
/// error, not a name), no hyphen at either end.
fn is_toplabel(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && (bytes.iter().any(u8::is_ascii_alphabetic) || bytes.contains(&b'-'))
}

impl Expansion {
    fn parse(body: &str, usage: Use) -> Result<Expansion, MacroError> {
        let bad = |why: &str| MacroError(format!("%{{{body}}}: {why} (RFC 7208 7.1)"));
        let mut chars = body.chars();
        let written = chars.next().ok_or_else(|| bad("no macro letter"))?;
        let letter = match written.to_ascii_lowercase() {
            's' => Letter::Sender,
            'l' => Letter::Local,
            'o' => Letter::SenderDomain,
            'd' => Letter::Domain,
            'i' => Letter::Ip,
            'p' => Letter::ValidatedName,
            'v' => Letter::Version,
            'h' => Letter::Helo,
            c @ ('c' | 'r' | 't') => {
                if usage != Use::Explanation {
                    return Err(MacroError(format!(
                        "%{{{body}}}: the {c} macro is allowed only in exp= text (RFC 7208 7.2)"
                    )));
                }
                Letter::ExplanationOnly(c)
            }
            _ => return Err(bad("unknown macro letter")),
        };
        let rest = chars.as_str();
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let keep = if digits == 0 {
            None
        } else {
            match rest[..digits].parse::<usize>() {
                Ok(0) => return Err(bad("the number of parts must be nonzero (7.3)")),
                Ok(n) => Some(n),
                Err(_) => return Err(bad("the number of parts is too large")),
            }
        };
        let rest = &rest[digits..];
        let (reverse, rest) = match rest.strip_prefix(['r', 'R']) {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if let Some(c) = rest.chars().find(|c| !DELIMITERS.contains(*c)) {
            return Err(bad(&format!("'{c}' is not a delimiter")));
        }
        Ok(Expansion {
            letter,
            escape: written.is_ascii_uppercase(),
            keep,
            reverse,
            delimiters: rest.to_string(),
        })
    }

    fn expand(&self, context: &Context) -> String {
        let value: String = match self.letter {
            Letter::Sender => context.sender.into(),
            Letter::Local => context.local.into(),
            Letter::SenderDomain => context.sender_domain.into(),
            Letter::Domain => context.domain.into(),
            Letter::Ip => dotted(context.ip),
            Letter::ValidatedName => context.validated_name.unwrap_or("unknown").into(),
            Letter::Version => match context.ip {
                IpAddr::V4(_) => "in-addr".into(),
                IpAddr::V6(_) => "ip6".into(),
            },
            Letter::Helo => context.helo.into(),
            Letter::ExplanationOnly(_) => String::new(),
        };
        let delimiters = if self.delimiters.is_empty() {
            "."
        } else {
            &self.delimiters
        };
        let mut parts: Vec<&str> = value.split(|c| delimiters.contains(c)).collect();
        if self.reverse {
            parts.reverse();
        }
        if let Some(keep) = self.keep
            && keep < parts.len()
        {
            parts.drain(..parts.len() - keep);
        }
        let joined = parts.join(".");
        if self.escape { escape(&joined) } else { joined }
    }
}

/// `%{i}`: dotted quad, or for IPv6 the 32 nibbles separated by dots (RFC 7208 7.3).
fn dotted(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .map(|nibble| format!("{nibble:x}"))
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// URL escaping of RFC 3986: everything but the unreserved characters (RFC 7208 7.3).
fn escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(ip: &str) -> Context<'static> {
        Context {
            sender: "strong-bad@email.example.com",
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            validated_name: None,
        }
    }

    fn expand(text: &str) -> String {
        MacroString::parse(text, Use::Value)
            .unwrap()
            .expand(&context("192.0.2.3"))
    }

    /// The examples of RFC 7208 7.4.
    #[test]
    fn rfc_7208_examples_expand_as_written_there() {
        assert_eq!(expand("%{s}"), "strong-bad@email.example.com");
        assert_eq!(expand("%{o}"), "email.example.com");
        assert_eq!(expand("%{d}"), "email.example.com");
        assert_eq!(expand("%{d4}"), "email.example.com");
        assert_eq!(expand("%{d3}"), "email.example.com");
        assert_eq!(expand("%{d2}"), "example.com");
        assert_eq!(expand("%{d1}"), "com");
        assert_eq!(expand("%{dr}"), "com.example.email");
        assert_eq!(expand("%{d2r}"), "example.email");
        assert_eq!(expand("%{l}"), "strong-bad");
        assert_eq!(expand("%{l-}"), "strong.bad");
        assert_eq!(expand("%{lr}"), "strong-bad");
        assert_eq!(expand("%{lr-}"), "bad.strong");
        assert_eq!(expand("%{l1r-}"), "strong");
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}"),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            expand("%{lr-}.lp._spf.%{d2}"),
            "bad.strong.lp._spf.example.com"
        );
        assert_eq!(
            expand("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}"),
            "3.2.0.192.in-addr.strong.lp._spf.example.com"
        );
        assert_eq!(
            expand("%{d2}.trusted-domains.example.net"),
            "example.com.trusted-domains.example.net"
        );
        let v6 = MacroString::parse("%{ir}.%{v}._spf.%{d2}", Use::Domain)
            .unwrap()
            .expand(&context("2001:db8::cb01"));
        assert_eq!(
            v6,
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        assert_eq!(expand("%%%_%-"), "% %20");
        assert_eq!(expand("%{L}"), "strong-bad");
        assert_eq!(expand("%{S}"), "strong-bad%40email.example.com");
    }

    #[test]
    fn bad_macros_and_domain_ends_are_errors() {
        for bad in [
            "%{x}.example.com",
            "%{d0}.example.com",
            "%{d",
            "%a.example.com",
            "trailing%",
            "%{d}.%{c}.example.com",
            "%{d?}.example.com",
        ] {
            assert!(MacroString::parse(bad, Use::Domain).is_err(), "{bad}");
        }
        for bad_end in [
            "example",
            "example.com:8080",
            "192.0.2.1",
            "example.-com",
            "example.com/24",
        ] {
            assert!(
                MacroString::parse(bad_end, Use::Domain).is_err(),
                "{bad_end}"
            );
        }
        for good in [
            "example.com",
            "example.com.",
            "_spf.%{d}",
            "%{ir}.%{v}._spf.%{d2}",
            "x.1-2",
            "%{l}.example.com",
        ] {
            assert!(MacroString::parse(good, Use::Domain).is_ok(), "{good}");
        }
        assert!(MacroString::parse("%{c}", Use::Explanation).is_ok());
        assert!(MacroString::parse("anything/at:all", Use::Value).is_ok());
    }

    #[test]
    fn long_expansions_lose_labels_from_the_left() {
        let spec = MacroString::parse("%{l}.%{l}.%{l}.example.com", Use::Domain).unwrap();
        let local = "a".repeat(63);
        let mut c = context("192.0.2.3");
        c.local = &local;
        let out = spec.expand_domain(&c);
        assert!(out.len() <= MAX_DOMAIN_LEN);
        assert!(out.ends_with(".example.com"), "{out}");
    }
}
