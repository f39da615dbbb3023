//! The message a `sendmail` caller writes on standard input: Unix line ends turned into the
//! CRLF the spool and SMTP use, the old "line with a single dot ends input" rule unless `-i`,
//! recipients taken from the header with `-t`, and Bcc removed.

use std::io::Read;

use mail_parser::{HeaderName, MessageParser};

use crate::rewrite::mailbox_address;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the message from standard input: {0}")]
    Read(#[from] std::io::Error),
    #[error("message is larger than smtp.max_message_size ({0} bytes)")]
    TooBig(u64),
}

/// Reads the message, converting bare LF and bare CR line ends to CRLF (the same policy as
/// SMTP intake, so no receiver that splits lines on CR alone sees a line we did not mean) and
/// ending it with a line end. Without `ignore_dots`, a line holding a single `.` ends the
/// message (sendmail's classic behaviour; cron passes -i so that such a line stays in the
/// mail).
pub fn read(input: impl Read, ignore_dots: bool, max_size: u64) -> Result<Vec<u8>, InputError> {
    let mut raw = Vec::new();
    input
        .take(max_size.saturating_mul(2) + 2)
        .read_to_end(&mut raw)?;
    let mut message = Vec::with_capacity(raw.len() + raw.len() / 32);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if !ignore_dots && content == b"." {
            break;
        }
        for piece in content.split(|&b| b == b'\r') {
            message.extend_from_slice(piece);
            message.extend_from_slice(b"\r\n");
        }
        if message.len() as u64 > max_size {
            return Err(InputError::TooBig(max_size));
        }
    }
    Ok(message)
}

/// `-t`: the addresses in To, Cc and Bcc, and the message with every Bcc header removed (it
/// must not reach the recipients).
pub fn extract_recipients(message: &[u8]) -> (Vec<String>, Vec<u8>) {
    let Some(parsed) = MessageParser::default().parse_headers(message) else {
        return (Vec::new(), message.to_vec());
    };
    let mut recipients = Vec::new();
    let mut bcc_ranges = Vec::new();
    for header in parsed.headers() {
        let is_bcc = matches!(header.name, HeaderName::Bcc);
        if !matches!(
            header.name,
            HeaderName::To | HeaderName::Cc | HeaderName::Bcc
        ) {
            continue;
        }
        if let Some(addresses) = header.value.as_address() {
            recipients.extend(
                addresses
                    .iter()
                    .filter_map(mailbox_address)
                    .map(String::from),
            );
        }
        if is_bcc {
            bcc_ranges.push(header.offset_field as usize..header.offset_end as usize);
        }
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut position = 0;
    for range in bcc_ranges {
        kept.extend_from_slice(&message[position..range.start]);
        position = range.end;
    }
    kept.extend_from_slice(&message[position..]);
    (recipients, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str, ignore_dots: bool) -> String {
        String::from_utf8(read(text.as_bytes(), ignore_dots, 1 << 20).unwrap()).unwrap()
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(read_str("a\nb\r\nc", true), "a\r\nb\r\nc\r\n");
        assert_eq!(read_str("", true), "");
        assert_eq!(read_str("bare\rcr\n", true), "bare\r\ncr\r\n");
        assert_eq!(read_str("a\r.\rb\n", true), "a\r\n.\r\nb\r\n");
    }

    #[test]
    fn single_dot_ends_input_unless_ignored() {
        assert_eq!(read_str("a\n.\nb\n", false), "a\r\n");
        assert_eq!(read_str("a\n.\nb\n", true), "a\r\n.\r\nb\r\n");
        // No dot-stuffing on this interface: a leading dot is content.
        assert_eq!(read_str("..x\n", false), "..x\r\n");
    }

    #[test]
    fn oversize_input_is_refused() {
        let big = "x".repeat(100) + "\n";
        assert!(matches!(
            read(big.as_bytes(), true, 50),
            Err(InputError::TooBig(50))
        ));
    }

    #[test]
    fn t_collects_to_cc_bcc_and_removes_bcc() {
        let message = b"From: a@b.example\r\nTo: One <one@x.example>, two@x.example\r\nBcc: hidden@x.example,\r\n  also@x.example\r\nCc: root\r\nSubject: s\r\n\r\nTo: not@header.example\r\n";
        let (recipients, kept) = extract_recipients(message);
        assert_eq!(
            recipients,
            [
                "one@x.example",
                "two@x.example",
                "hidden@x.example",
                "also@x.example",
                "root"
            ]
        );
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "From: a@b.example\r\nTo: One <one@x.example>, two@x.example\r\nCc: root\r\nSubject: s\r\n\r\nTo: not@header.example\r\n"
        );
    }
}
