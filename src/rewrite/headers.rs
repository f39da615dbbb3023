//! Header repair by splicing: mail-parser finds each header's byte range, only the headers that
//! change are replaced (or removed), and every other byte of the message — other headers,
//! encoded words, folding, the 8-bit body — stays exactly as it was.

use std::ops::Range;

use base64::Engine as _;
use mail_parser::{Addr, Address, HeaderName, HeaderValue, MessageParser};

use super::addresses::AddressRules;

/// What header repair did to one message.
pub struct Edited {
    pub message: Vec<u8>,
    pub decisions: Vec<String>,
}

/// Headers added when missing (RFC 5322 requires Date and From; Message-ID is expected
/// everywhere).
pub struct Missing {
    /// The From value for a local submission that has none (Postfix's cleanup adds one too);
    /// None: a message without From is left so (an SMTP client's message is its own).
    pub from: Option<String>,
    pub date: String,
    /// `<id@domain>`, or None when we have no public domain to put in it.
    pub message_id: Option<String>,
}

/// The address of a header mailbox. A bare word (`To: root`, as cron writes it) is parsed by
/// mail-parser as a display name without an address: it is a local user's name.
pub fn mailbox_address<'a>(addr: &'a Addr<'_>) -> Option<&'a str> {
    match (&addr.address, &addr.name) {
        (Some(address), _) => Some(address),
        (None, Some(name)) if !name.trim().is_empty() && !name.contains(char::is_whitespace) => {
            Some(name)
        }
        _ => None,
    }
}

pub fn rewrite(
    message: &[u8],
    rules: &AddressRules,
    strip: &[String],
    missing: &Missing,
) -> Edited {
    // A message that is all header and ends without a line end (`printf 'Subject: x' |
    // sendmail`) gets one: its last header then reads the same now and on any later pass, and
    // what is added after it starts a line of its own. A body is left as it is.
    let terminated;
    let message = if ends_inside_headers(message) {
        terminated = [message, b"\r\n"].concat();
        &terminated[..]
    } else {
        message
    };
    let mut decisions = Vec::new();
    let Some(parsed) = MessageParser::default().parse_headers(message) else {
        return Edited {
            message: message.to_vec(),
            decisions,
        };
    };
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let (mut has_date, mut has_message_id, mut has_from) = (false, false, false);
    let mut headers_end = 0;
    for header in parsed.headers() {
        let range = header.offset_field as usize..header.offset_end as usize;
        headers_end = range.end;
        let name = &message[range.start..header.offset_start as usize];
        let name_text = String::from_utf8_lossy(name);
        let old_value = || {
            String::from_utf8_lossy(&message[header.offset_start as usize..range.end])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rebuilt = match &header.name {
            HeaderName::Date => {
                has_date = true;
                continue;
            }
            HeaderName::MessageId => {
                has_message_id = true;
                continue;
            }
            // The upstream writes its own; one from the client would only mislead.
            HeaderName::ReturnPath => {
                decisions.push(format!(
                    "header {} removed ({})",
                    name_text.trim_end_matches(':'),
                    old_value()
                ));
                edits.push((range, Vec::new()));
                continue;
            }
            HeaderName::From | HeaderName::Sender | HeaderName::ReplyTo => {
                has_from |= header.name == HeaderName::From;
                rebuild(&header.value, name.len(), |a| rules.sender(a))
            }
            HeaderName::To | HeaderName::Cc => {
                rebuild(&header.value, name.len(), |a| rules.header_recipient(a))
            }
            other if strip.iter().any(|s| s.eq_ignore_ascii_case(other.as_str())) => {
                decisions.push(format!("header {} removed", other.as_str()));
                edits.push((range, Vec::new()));
                continue;
            }
            _ => None,
        };
        if let Some(value) = rebuilt {
            decisions.push(format!("header {} {} -> {value}", name_text, old_value()));
            let mut replacement = name.to_vec();
            replacement.push(b' ');
            replacement.extend_from_slice(value.as_bytes());
            replacement.extend_from_slice(b"\r\n");
            edits.push((range, replacement));
        }
    }
    let mut added = Vec::new();
    if let (false, Some(from)) = (has_from, &missing.from) {
        added.extend_from_slice(format!("From: {from}\r\n").as_bytes());
        decisions.push(format!("header From added ({from})"));
    }
    if !has_date {
        added.extend_from_slice(format!("Date: {}\r\n", missing.date).as_bytes());
        decisions.push("header Date added".into());
    }
    if let (false, Some(id)) = (has_message_id, &missing.message_id) {
        added.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
        decisions.push(format!("header Message-ID added ({id})"));
    }
    if !added.is_empty() {
        edits.push((headers_end..headers_end, added));
    }
    Edited {
        message: splice(message, edits),
        decisions,
    }
}

fn ends_inside_headers(message: &[u8]) -> bool {
    let has_body = message.starts_with(b"\n")
        || message.starts_with(b"\r\n")
        || memchr::memmem::find(message, b"\n\n").is_some()
        || memchr::memmem::find(message, b"\n\r\n").is_some();
    !message.is_empty() && !message.ends_with(b"\n") && !has_body
}

/// Applies non-overlapping edits given in message order.
fn splice(message: &[u8], edits: Vec<(Range<usize>, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 256);
    let mut position = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&message[position..range.start]);
        out.extend_from_slice(&replacement);
        position = range.end;
    }
    out.extend_from_slice(&message[position..]);
    out
}

/// The header value with every mailbox `map` changes replaced, or None when nothing changed.
/// A changed mailbox keeps its display name; one without stays without. (Writing the old
/// address as the name, `"root@web-1" <cron@example.com>`, would leak the internal name and
/// put an address-like name before a different address, which spam filters score.)
fn rebuild(
    value: &HeaderValue<'_>,
    name_len: usize,
    map: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let HeaderValue::Address(address) = value else {
        return None;
    };
    // A header with a mailbox that is not an address (mail-parser reads much that is not) is
    // left exactly as it came: rewriting its pieces would mangle it further on every pass
    // (found by the header_rewrite fuzz target: `<: undisclosed:;` became an address).
    let members: Vec<&Addr<'_>> = match address {
        Address::List(list) => list.iter().collect(),
        Address::Group(groups) => groups.iter().flat_map(|g| g.addresses.iter()).collect(),
    };
    let readable = |addr: &&Addr<'_>| {
        mailbox_address(addr).is_some_and(|a| crate::model::Address::parse(a, true).is_ok())
    };
    if !members.iter().all(readable) {
        return None;
    }
    let mut changed = false;
    let mut render = |addr: &Addr<'_>| -> String {
        let Some(old) = mailbox_address(addr) else {
            return addr.name.as_deref().map(phrase).unwrap_or_default();
        };
        let display = addr
            .name
            .as_deref()
            .filter(|n| !n.trim().is_empty() && *n != old);
        match map(old) {
            Some(new) => {
                changed = true;
                match display {
                    Some(name) => format!("{} <{new}>", phrase(name)),
                    None => new,
                }
            }
            None => match display {
                Some(name) => format!("{} <{old}>", phrase(name)),
                None => old.to_string(),
            },
        }
    };
    let parts: Vec<String> = match address {
        Address::List(list) => list.iter().map(&mut render).collect(),
        Address::Group(groups) => groups
            .iter()
            .map(|group| {
                let members: Vec<String> = group.addresses.iter().map(&mut render).collect();
                match &group.name {
                    Some(name) => format!("{}: {};", phrase(name), members.join(", ")),
                    None => members.join(", "),
                }
            })
            .collect(),
    };
    changed.then(|| fold(&parts, name_len))
}

/// A display name as RFC 5322 wants it: a quoted string for ASCII, RFC 2047 encoded words
/// (UTF-8, base64, at most 75 characters each) otherwise.
pub fn phrase(text: &str) -> String {
    if text.is_ascii() {
        return format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in text.chars() {
        if chunk.len() + ch.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Joins mailboxes with commas, folding before one that would take the line (and the comma
/// after it) past 78 characters.
fn fold(parts: &[String], name_len: usize) -> String {
    let mut out = String::new();
    let mut line = name_len + 1;
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            if line + 2 + part.len() + 1 > 78 {
                out.push_str(",\r\n ");
                line = 1;
            } else {
                out.push_str(", ");
                line += 2;
            }
        }
        out.push_str(part);
        line += part.len();
    }
    out
}

#[cfg(test)]
mod tests;
