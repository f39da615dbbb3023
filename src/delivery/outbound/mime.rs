//! Making a message fit the wire it is about to cross: no line longer than 998 octets (RFC 5321
//! 4.5.3.1.6) and, for a server without 8BITMIME, no 8-bit octet (RFC 6152 3). A MIME leaf part
//! that breaks either is re-encoded — quoted-printable for raw text, base64 re-wrapped for
//! base64 with overlong lines — so a reader sees the same content (RFC 2045 6.7). What cannot be
//! re-encoded (header lines, multipart preambles, attached messages) has its long lines broken
//! with CRLF SPACE, as Postfix's `smtp_line_length_limit` does. Everything else is copied byte
//! for byte.

use std::borrow::Cow;

use base64::Engine as _;
use mail_parser::{MessageParser, PartType};

/// RFC 5321 4.5.3.1.6: 1,000 octets with the CRLF.
pub const MAX_LINE: usize = 998;

/// The longest line of `bytes` exceeds the limit. On every message's way out, so it runs at
/// memchr's speed: only the distances between line feeds matter (a CR before the LF is
/// allowed one octet more).
pub fn has_long_line(bytes: &[u8]) -> bool {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
        let line = &bytes[start..end];
        if line.len() > MAX_LINE && line.strip_suffix(b"\r").unwrap_or(line).len() > MAX_LINE {
            return true;
        }
        start = end + 1;
    }
    false
}

/// The message after re-encoding, and one note per decision.
pub struct Reencoded {
    pub message: Vec<u8>,
    pub changes: Vec<String>,
}

/// Re-encodes what breaks the limits. `seven_bit`: the server lacks 8BITMIME, so 8-bit body
/// parts become quoted-printable too. 8-bit left over afterwards (in headers, or in a part
/// that cannot be re-encoded) is the caller's to judge.
pub fn reencode(raw: &[u8], seven_bit: bool) -> Reencoded {
    let mut changes = Vec::new();
    let mut message = Vec::with_capacity(raw.len() + raw.len() / 8);
    let mut cursor = 0;
    for leaf in leaves_needing_work(raw, seven_bit) {
        message.extend_from_slice(&raw[cursor..leaf.header_start]);
        let (headers, body, change) = leaf.rewrite(raw);
        message.extend_from_slice(&headers);
        message.extend_from_slice(&body);
        changes.push(change);
        cursor = leaf.end;
    }
    message.extend_from_slice(&raw[cursor..]);
    if has_long_line(&message) {
        message = fold_long_lines(&message);
        changes.push(format!(
            "lines longer than {MAX_LINE} octets that cannot be re-encoded (headers or structure) broken with CRLF SPACE"
        ));
    }
    Reencoded { message, changes }
}

/// A leaf part to re-encode: its header section, body, and how it is encoded now.
struct Leaf {
    header_start: usize,
    body_start: usize,
    end: usize,
    /// The message's own header: MIME-Version and Content-Type may be missing.
    is_root: bool,
    why: &'static str,
}

/// Leaf parts, in order, whose body has a long line or (for `seven_bit`) an 8-bit octet.
fn leaves_needing_work(raw: &[u8], seven_bit: bool) -> Vec<Leaf> {
    let needs = |body: &[u8]| -> Option<&'static str> {
        if has_long_line(body) {
            Some("had lines longer than 998 octets")
        } else if seven_bit && !body.is_ascii() {
            Some("was 8-bit and the upstream does not offer 8BITMIME")
        } else {
            None
        }
    };
    let Some(parsed) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let mut leaves = Vec::new();
    let mut pending = vec![0u32];
    while let Some(id) = pending.pop() {
        let Some(part) = parsed.part(id) else {
            continue;
        };
        match &part.body {
            PartType::Multipart(children) => pending.extend(children.iter().rev()),
            // An attached message's parts are not re-encoded here; its long lines are broken.
            PartType::Message(_) => {}
            _ => {
                let (header_start, body_start, end) = (
                    part.offset_header as usize,
                    part.offset_body as usize,
                    (part.offset_end as usize).min(raw.len()),
                );
                if header_start > body_start || body_start > end {
                    continue;
                }
                if let Some(why) = needs(&raw[body_start..end])
                    && reencodable(transfer_encoding(&raw[header_start..body_start]).as_deref())
                {
                    leaves.push(Leaf {
                        header_start,
                        body_start,
                        end,
                        is_root: id == 0,
                        why,
                    });
                }
            }
        }
    }
    leaves.sort_by_key(|leaf| leaf.header_start);
    leaves
}

/// Identity encodings carry the raw octets; quoted-printable and base64 can be decoded first.
/// Anything else (x-uuencode, …) is left alone.
fn reencodable(encoding: Option<&str>) -> bool {
    matches!(
        encoding,
        None | Some("7bit" | "8bit" | "binary" | "quoted-printable" | "base64")
    )
}

impl Leaf {
    /// The part's new header section, new body, and the note saying what changed.
    fn rewrite(&self, raw: &[u8]) -> (Vec<u8>, Vec<u8>, String) {
        let header = &raw[self.header_start..self.body_start];
        let body = &raw[self.body_start..self.end];
        let encoding = transfer_encoding(header);
        let (new_encoding, new_body) = match encoding.as_deref() {
            Some("base64") => ("base64", rewrap_base64(body)),
            Some("quoted-printable") => (
                "quoted-printable",
                quoted_printable::encode(
                    quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
                        .unwrap_or_else(|_| body.to_vec()),
                ),
            ),
            _ => ("quoted-printable", quoted_printable::encode(body)),
        };
        let mut fields: Vec<Cow<[u8]>> = header_fields(header)
            .filter(|field| !field_is(field, "content-transfer-encoding"))
            .map(Cow::Borrowed)
            .collect();
        if self.is_root {
            if !header_fields(header).any(|f| field_is(f, "mime-version")) {
                fields.push(Cow::Borrowed(b"MIME-Version: 1.0\r\n"));
            }
            if !header_fields(header).any(|f| field_is(f, "content-type")) {
                let charset = match std::str::from_utf8(body) {
                    Ok(text) if text.is_ascii() => "us-ascii",
                    Ok(_) => "utf-8",
                    // RFC 1428: 8-bit text of an unknown character set.
                    Err(_) => "unknown-8bit",
                };
                fields.push(Cow::Owned(
                    format!("Content-Type: text/plain; charset={charset}\r\n").into_bytes(),
                ));
            }
        }
        fields.push(Cow::Owned(
            format!("Content-Transfer-Encoding: {new_encoding}\r\n").into_bytes(),
        ));
        let mut headers: Vec<u8> = fields.concat();
        headers.extend_from_slice(b"\r\n");
        let mut new_body = new_body;
        // The line end before a boundary belongs to the boundary (RFC 2046 5.1.1): keep it.
        if body.ends_with(b"\r\n") && !new_body.ends_with(b"\r\n") {
            new_body.extend_from_slice(b"\r\n");
        }
        let part = if self.is_root {
            "the message body".to_string()
        } else {
            format!("a MIME part at octet {}", self.header_start)
        };
        let change = format!(
            "{part} {}: re-encoded as {new_encoding} (a reader sees the same content)",
            self.why
        );
        (headers, new_body, change)
    }
}

/// The header fields of a header section, each with its folded lines and CRLF, stopping at the
/// blank line.
fn header_fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() || rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].iter().position(|&b| b == b'\n') {
                Some(at) => {
                    end += at + 1;
                    if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

fn field_is(field: &[u8], name: &str) -> bool {
    field.len() > name.len()
        && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && field[name.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            == Some(&b':')
}

/// The Content-Transfer-Encoding a header section declares, lowercased.
fn transfer_encoding(header: &[u8]) -> Option<String> {
    let field = header_fields(header).find(|f| field_is(f, "content-transfer-encoding"))?;
    let colon = field.iter().position(|&b| b == b':')?;
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let value = value.split(';').next().unwrap_or_default();
    Some(value.trim().to_ascii_lowercase())
}

/// Base64 with 76-character lines (RFC 2045 6.8); unreadable base64 is kept and broken later.
fn rewrap_base64(body: &[u8]) -> Vec<u8> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let Ok(decoded) = engine.decode(&compact) else {
        return body.to_vec();
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(decoded);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Breaks every line longer than the limit: in a header section before the last space or tab
/// that fits (ordinary folding, RFC 5322 2.2.3), elsewhere — and where no such place exists —
/// with CRLF SPACE after 997 octets, as Postfix does.
pub fn fold_long_lines(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut in_header = true;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        let ending = &line[content.len()..];
        if content.is_empty() {
            in_header = false;
        }
        let mut rest = content;
        while rest.len() > MAX_LINE {
            let fold_at = if in_header {
                rest[1..MAX_LINE]
                    .iter()
                    .rposition(|&b| b == b' ' || b == b'\t')
                    .map(|at| at + 1)
            } else {
                None
            };
            match fold_at {
                Some(at) => {
                    out.extend_from_slice(&rest[..at]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[at..];
                }
                None => {
                    out.extend_from_slice(&rest[..MAX_LINE - 1]);
                    out.extend_from_slice(b"\r\n ");
                    rest = &rest[MAX_LINE - 1..];
                }
            }
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(ending);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;

    fn longest(bytes: &[u8]) -> usize {
        bytes
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
            .max()
            .unwrap()
    }

    #[test]
    fn long_lines_are_found_at_the_limit_exactly() {
        let line = |n: usize| "a".repeat(n);
        assert!(!has_long_line(
            format!("{}\r\n{}\r\n", line(998), line(10)).as_bytes()
        ));
        assert!(has_long_line(
            format!("x\r\n{}\r\nend\r\n", line(999)).as_bytes()
        ));
        assert!(
            has_long_line(line(999).as_bytes()),
            "a last line without CRLF"
        );
        assert!(!has_long_line(format!("{}\n", line(998)).as_bytes()));
        assert!(!has_long_line(b""));
    }

    #[test]
    fn a_long_text_part_becomes_quoted_printable_and_decodes_to_the_same_text() {
        let line = "wörd ".repeat(700);
        let raw = format!(
            "Received: by relay\r\nSubject: cron\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nfirst\r\n{line}\r\nlast\r\n"
        );
        let out = reencode(raw.as_bytes(), false);
        assert!(longest(&out.message) <= MAX_LINE);
        let parsed = MessageParser::default().parse(&out.message).unwrap();
        assert_eq!(
            parsed.body_text(0).unwrap(),
            format!("first\r\n{line}\r\nlast\r\n")
        );
        assert_eq!(parsed.content_transfer_encoding(), Some("quoted-printable"));
        let text = String::from_utf8(out.message.clone()).unwrap();
        assert_eq!(text.matches("Content-Transfer-Encoding").count(), 1);
        assert!(text.starts_with("Received: by relay\r\nSubject: cron\r\n"));
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
    }

    #[test]
    fn only_the_part_that_needs_it_changes_in_a_multipart_message() {
        let long = "a".repeat(1500);
        let raw = format!(
            "Subject: two\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nshort part\r\n--b\r\nContent-Type: text/plain\r\n\r\n{long}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n",
            b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1200])
        );
        let out = reencode(raw.as_bytes(), false);
        let text = String::from_utf8(out.message.clone()).unwrap();
        assert!(longest(&out.message) <= MAX_LINE);
        assert!(text.contains("--b\r\nContent-Type: text/plain\r\n\r\nshort part\r\n--b\r\n"));
        let parsed = MessageParser::default().parse(&out.message).unwrap();
        assert_eq!(parsed.body_text(1).unwrap(), long);
        let attachment = parsed.attachment(0).unwrap();
        assert_eq!(attachment.contents(), vec![7u8; 1200]);
        assert_eq!(out.changes.len(), 2, "{:?}", out.changes);
        assert!(text.ends_with("\r\n--b--\r\n"));
    }

    #[test]
    fn without_8bitmime_8bit_parts_become_7bit_and_a_message_without_mime_gets_its_headers() {
        let raw = "Subject: plain\r\n\r\nGrüße\r\n".as_bytes();
        let out = reencode(raw, true);
        assert!(out.message.is_ascii());
        let text = String::from_utf8(out.message.clone()).unwrap();
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        let parsed = MessageParser::default().parse(&out.message).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), "Grüße\r\n");
        let unchanged = reencode(raw, false);
        assert_eq!(
            unchanged.message, raw,
            "with 8BITMIME nothing needs changing"
        );
        assert!(unchanged.changes.is_empty());
    }

    #[test]
    fn header_lines_fold_at_whitespace_and_unbreakable_lines_break_like_postfix() {
        let words = "word ".repeat(400);
        let raw = format!(
            "Subject: {words}\r\nX-Token: {}\r\n\r\nbody\r\n",
            "t".repeat(2000)
        );
        let out = reencode(raw.as_bytes(), false);
        assert!(longest(&out.message) <= MAX_LINE);
        let parsed = MessageParser::default().parse(&out.message).unwrap();
        assert_eq!(parsed.subject().unwrap().trim(), words.trim());
        // No whitespace to fold at: broken with CRLF SPACE; unfolded, only spaces were added.
        let token = parsed.header_raw("X-Token").unwrap();
        assert_eq!(token.replace(['\r', '\n', ' '], ""), "t".repeat(2000));
        let text = String::from_utf8(out.message.clone()).unwrap();
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
    }
}
