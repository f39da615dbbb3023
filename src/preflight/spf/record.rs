//! One SPF record, read the way RFC 7208 section 12's grammar reads it: any term that does not
//! fit is a syntax error, which receivers turn into `permerror` (4.6). mail-auth's parser is
//! lenient (it saturates `ip4:192.0.2.256` and skips unknown mechanisms), which is right for
//! a receiver being kind and wrong for an audit.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::macros::{MacroString, Use};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// The address prefix lengths of `a` and `mx` (RFC 7208 5.6 dual-cidr-length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub v4: u8,
    pub v6: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr: Cidr,
    },
    Mx {
        domain: Option<MacroString>,
        cidr: Cidr,
    },
    Ptr(Option<MacroString>),
    Ip4(Ipv4Net),
    Ip6(Ipv6Net),
    Exists(MacroString),
}

impl Mechanism {
    /// RFC 7208 4.6.4: the terms that cost a DNS lookup, and count toward the limit of 10.
    pub fn costs_a_lookup(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
    /// The term as written, for findings.
    pub term: String,
}

/// A record that follows the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub directives: Vec<Directive>,
    pub redirect: Option<MacroString>,
    pub explanation: Option<MacroString>,
}

/// The first term that breaks the grammar, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub term: String,
    pub problem: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\": {}", self.term, self.problem)
    }
}

/// `v=spf1` followed by a space or nothing (RFC 7208 4.5), in any case.
pub fn is_spf(text: &str) -> bool {
    let Some(version) = text.get(..6) else {
        return false;
    };
    version.eq_ignore_ascii_case("v=spf1") && matches!(text.as_bytes().get(6), None | Some(b' '))
}

impl Record {
    /// Reads a record `is_spf` accepted. Terms are separated by one or more spaces (12:
    /// `terms = *( 1*SP ( directive / modifier ) )`); a tab is not a separator.
    pub fn parse(text: &str) -> Result<Record, SyntaxError> {
        let mut record = Record {
            directives: Vec::new(),
            redirect: None,
            explanation: None,
        };
        for term in text
            .get(6..)
            .unwrap_or("")
            .split(' ')
            .filter(|t| !t.is_empty())
        {
            let error = |problem: String| SyntaxError {
                term: term.to_string(),
                problem,
            };
            if let Some((name, value)) = modifier(term) {
                let slot = match name.to_ascii_lowercase().as_str() {
                    "redirect" => &mut record.redirect,
                    "exp" => &mut record.explanation,
                    _ => {
                        // 6: unknown modifiers are ignored, but must still be macro strings.
                        MacroString::parse(value, Use::Value)
                            .map_err(|e| error(format!("{e} (in an unknown modifier)")))?;
                        continue;
                    }
                };
                if slot.is_some() {
                    return Err(error(format!(
                        "{name}= appears twice (RFC 7208 6: at most once each)"
                    )));
                }
                let usage = if name.eq_ignore_ascii_case("exp") {
                    Use::Explanation
                } else {
                    Use::Domain
                };
                *slot = Some(MacroString::parse(value, usage).map_err(|e| error(e.0))?);
                continue;
            }
            record.directives.push(directive(term).map_err(error)?);
        }
        Ok(record)
    }

    /// RFC 7208 6.1: `redirect=` takes effect only in a record without an `all`.
    pub fn effective_redirect(&self) -> Option<&MacroString> {
        let has_all = self
            .directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All);
        self.redirect.as_ref().filter(|_| !has_all)
    }
}

/// `name "=" value`, where name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (RFC 7208 12).
fn modifier(term: &str) -> Option<(&str, &str)> {
    let (name, value) = term.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    .then_some((name, value))
}

fn directive(term: &str) -> Result<Directive, String> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, argument) = rest.split_at(name_end);
    let domain = |argument: &str| -> Result<MacroString, String> {
        let spec = argument
            .strip_prefix(':')
            .ok_or_else(|| format!("{name} needs \":domain\" (RFC 7208 5)"))?;
        MacroString::parse(spec, Use::Domain).map_err(|e| e.0)
    };
    let optional_domain = |argument: &str| -> Result<Option<MacroString>, String> {
        if argument.is_empty() {
            Ok(None)
        } else {
            domain(argument).map(Some)
        }
    };
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if argument.is_empty() => Mechanism::All,
        "all" => return Err("all takes no argument (RFC 7208 5.1)".into()),
        "include" => Mechanism::Include(domain(argument)?),
        "exists" => Mechanism::Exists(domain(argument)?),
        "ptr" => Mechanism::Ptr(optional_domain(argument)?),
        "a" | "mx" => {
            let (argument, cidr) = dual_cidr(argument)?;
            let domain = optional_domain(argument)?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A { domain, cidr }
            } else {
                Mechanism::Mx { domain, cidr }
            }
        }
        "ip4" => {
            let (address, length) = split_cidr(argument, "ip4", 32)?;
            let address = ip4_network(address)
                .ok_or_else(|| format!("\"{address}\" is not an IPv4 address (RFC 7208 5.6)"))?;
            Mechanism::Ip4(Ipv4Net::new(address, length.unwrap_or(32)).expect("length checked"))
        }
        "ip6" => {
            let (address, length) = split_cidr(argument, "ip6", 128)?;
            let address: Ipv6Addr = address
                .parse()
                .map_err(|_| format!("\"{address}\" is not an IPv6 address (RFC 7208 5.6)"))?;
            Mechanism::Ip6(Ipv6Net::new(address, length.unwrap_or(128)).expect("length checked"))
        }
        _ => {
            return Err(format!(
                "unknown mechanism \"{name}\" (RFC 7208 5: a permerror, never skipped)"
            ));
        }
    };
    Ok(Directive {
        qualifier,
        mechanism,
        term: term.to_string(),
    })
}

/// `":" network [ "/" length ]` of ip4/ip6; the length written without leading zeros and at
/// most `max` (RFC 7208 5.6 ip4-cidr-length / ip6-cidr-length). A `//` is not allowed here.
fn split_cidr<'a>(argument: &'a str, name: &str, max: u8) -> Result<(&'a str, Option<u8>), String> {
    let network = argument
        .strip_prefix(':')
        .ok_or_else(|| format!("{name} needs \":address\" (RFC 7208 5.6)"))?;
    match network.split_once('/') {
        None => Ok((network, None)),
        Some((address, length)) => Ok((address, Some(cidr_length(length, max)?))),
    }
}

/// `[ ip4-cidr-length ] [ "/" ip6-cidr-length ]` at the end of `a` and `mx`.
fn dual_cidr(argument: &str) -> Result<(&str, Cidr), String> {
    let mut cidr = Cidr { v4: 32, v6: 128 };
    let mut rest = argument;
    if let Some((before, v6)) = rest.rsplit_once("//")
        && is_number(v6)
    {
        cidr.v6 = cidr_length(v6, 128)?;
        rest = before;
    }
    if let Some((before, v4)) = rest.rsplit_once('/')
        && is_number(v4)
    {
        cidr.v4 = cidr_length(v4, 32)?;
        rest = before;
    }
    Ok((rest, cidr))
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn cidr_length(text: &str, max: u8) -> Result<u8, String> {
    let canonical = is_number(text) && (text == "0" || !text.starts_with('0'));
    match text.parse::<u8>() {
        Ok(n) if canonical && n <= max => Ok(n),
        _ => Err(format!(
            "/{text} is not a prefix length from 0 to {max} (RFC 7208 5.6)"
        )),
    }
}

/// `qnum "." qnum "." qnum "." qnum`, each 0–255 without leading zeros (RFC 7208 12).
fn ip4_network(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if !is_number(part) || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Record::parse(text).expect_err(text).to_string()
    }

    #[test]
    fn records_that_follow_the_grammar() {
        let record = Record::parse(
            "v=spf1 +a -mx:mail.example.com/24//64 ~ptr ?exists:%{ir}.bl.example.com ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com -all moo=x exp=why.example.com",
        )
        .unwrap();
        assert_eq!(record.directives.len(), 8);
        assert_eq!(
            record.directives[1].mechanism,
            Mechanism::Mx {
                domain: Some(MacroString::parse("mail.example.com", Use::Domain).unwrap()),
                cidr: Cidr { v4: 24, v6: 64 }
            }
        );
        assert_eq!(record.directives[2].qualifier, Qualifier::SoftFail);
        assert!(record.explanation.is_some());
        assert!(Record::parse("V=SPF1 IP4:192.0.2.1 -ALL").is_ok());
        assert!(Record::parse("v=spf1    a   -all  ").is_ok());
        assert_eq!(
            Record::parse("v=spf1 a//64 -all").unwrap().directives[0].mechanism,
            Mechanism::A {
                domain: None,
                cidr: Cidr { v4: 32, v6: 64 }
            }
        );
    }

    #[test]
    fn each_broken_term_is_a_syntax_error_naming_it() {
        for (record, term) in [
            ("v=spf1 foo:bar -all", "foo:bar"),
            ("v=spf1 ip4:192.0.2.256 -all", "ip4:192.0.2.256"),
            ("v=spf1 ip4:10.0.0.300 -all", "ip4:10.0.0.300"),
            ("v=spf1 ip4:10.0.0.1/33 -all", "ip4:10.0.0.1/33"),
            ("v=spf1 ip4:10.0.0.0/08 -all", "ip4:10.0.0.0/08"),
            ("v=spf1 ip4:10.0.0.0/ -all", "ip4:10.0.0.0/"),
            ("v=spf1 ip4:10.0.0.0//64 -all", "ip4:10.0.0.0//64"),
            ("v=spf1 ip4:010.0.0.1 -all", "ip4:010.0.0.1"),
            ("v=spf1 ip6:2001:db8::/129 -all", "ip6:2001:db8::/129"),
            ("v=spf1 ip6:2001:db8:zz:: -all", "ip6:2001:db8:zz::"),
            ("v=spf1 a/33 -all", "a/33"),
            ("v=spf1 mx//129 -all", "mx//129"),
            ("v=spf1 a:192.0.2.1 -all", "a:192.0.2.1"),
            ("v=spf1 a:example.com:8080 -all", "a:example.com:8080"),
            ("v=spf1 include -all", "include"),
            ("v=spf1 include:localhost -all", "include:localhost"),
            ("v=spf1 exists -all", "exists"),
            ("v=spf1 -all:x", "-all:x"),
            (
                "v=spf1 include:%{z}.example.com -all",
                "include:%{z}.example.com",
            ),
            (
                "v=spf1 redirect=a.example redirect=b.example",
                "redirect=b.example",
            ),
            (
                "v=spf1 -all exp=a.example.com exp=b.example.com",
                "exp=b.example.com",
            ),
            ("v=spf1 -all moo=%{x}", "moo=%{x}"),
            ("v=spf1 =a -all", "=a"),
            ("v=spf1 a,mx -all", "a,mx"),
        ] {
            let found = error(record);
            assert!(
                found.starts_with(&format!("\"{term}\"")),
                "{record}: {found}"
            );
        }
        assert!(error("v=spf1 ip4:192.0.2.256").contains("RFC 7208"));
    }

    #[test]
    fn redirect_beside_all_is_ignored() {
        let with_all = Record::parse("v=spf1 -all redirect=_spf.example.com").unwrap();
        assert!(with_all.effective_redirect().is_none());
        let without = Record::parse("v=spf1 a redirect=_spf.example.com").unwrap();
        assert!(without.effective_redirect().is_some());
    }

    #[test]
    fn spf_records_are_recognised_exactly() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=abc"));
        assert!(!is_spf("v=spf"));
    }
}
