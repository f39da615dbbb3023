//! What changes on the way out, decided per upstream from what its EHLO offered. The rule is
//! byte-exact: a message is sent as spooled unless the upstream could not take it so —
//!
//! - a line longer than 998 octets (RFC 5321 4.5.3.1.6): the part is re-encoded
//!   (quoted-printable) or, where that cannot be done, the line is broken as Postfix does;
//! - 8-bit content for a server without 8BITMIME (RFC 6152 3): 8-bit parts are re-encoded;
//!   8-bit that cannot be (a header, an attached message) holds the mail with the reason;
//! - an address that needs SMTPUTF8 for a server without it (RFC 6531 3.4): not sendable there,
//!   bounced with 5.6.7 when no upstream offers it. Raw UTF-8 in headers is declared SMTPUTF8
//!   where the server offers it;
//! - a message larger than the server's SIZE (RFC 1870 6): not sent there at all.

mod mime;

use std::borrow::Cow;

use crate::model::EnhancedStatus;
use crate::spool::BodyType;

/// What one upstream connection offered in its EHLO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// SIZE, when offered: its limit in octets (0: offered without a limit, RFC 1870 4).
    pub size: Option<usize>,
}

/// The message as spooled, and the envelope facts that matter for the wire.
pub struct Spooled<'a> {
    pub body: &'a [u8],
    pub body_type: BodyType,
    /// The client asked for SMTPUTF8, or an address needs it.
    pub smtputf8: bool,
    /// Some envelope address is not ASCII: only an SMTPUTF8 server can take it.
    pub envelope_needs_utf8: bool,
}

/// What to send to one upstream.
pub struct Outbound<'a> {
    pub body: Cow<'a, [u8]>,
    /// `BODY=8BITMIME` on MAIL (only where offered).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` on MAIL (only where offered).
    pub smtputf8: bool,
    /// What was changed and why, for the message's rewrite notes; empty when sent as spooled.
    pub changes: Vec<String>,
}

impl Outbound<'_> {
    /// The octet count declared with `SIZE=` (RFC 1870 3: the message, without stuffing).
    pub fn size(&self) -> usize {
        self.body.len()
    }
}

/// Why a message cannot go to this upstream as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsendable {
    /// An envelope address is UTF-8 and the upstream does not offer SMTPUTF8.
    NeedsSmtpUtf8,
    /// 8-bit octets that cannot be re-encoded, for an upstream without 8BITMIME.
    NeedsEightBitMime,
    /// Larger than the SIZE the upstream advertised.
    TooBig { size: usize, limit: usize },
}

/// What becomes of the recipients when no upstream can take the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It can never be sent as it is: bounce.
    Bounce,
    /// An upstream with other capabilities would take it: hold until the configuration
    /// changes.
    Hold,
}

impl Unsendable {
    pub fn verdict(&self) -> Verdict {
        match self {
            Unsendable::NeedsSmtpUtf8 | Unsendable::TooBig { .. } => Verdict::Bounce,
            Unsendable::NeedsEightBitMime => Verdict::Hold,
        }
    }

    /// The RFC 3463 status a bounce reports.
    pub fn status(&self) -> EnhancedStatus {
        let (subject, detail) = match self {
            // RFC 6531 3.4 / RFC 6533: 5.6.7 "non-ASCII addresses not permitted".
            Unsendable::NeedsSmtpUtf8 => (6, 7),
            // RFC 3463 X.6.3: conversion required but not supported.
            Unsendable::NeedsEightBitMime => (6, 3),
            // RFC 3463 X.3.4: message too big for system.
            Unsendable::TooBig { .. } => (3, 4),
        };
        EnhancedStatus {
            class: 5,
            subject,
            detail,
        }
    }
}

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsendable::NeedsSmtpUtf8 => f.write_str(
                "an address is not ASCII and the upstream does not offer SMTPUTF8 (RFC 6531)",
            ),
            Unsendable::NeedsEightBitMime => f.write_str(
                "8-bit headers or an attached 8-bit message, and the upstream does not offer 8BITMIME; add an upstream that does",
            ),
            Unsendable::TooBig { size, limit } => write!(
                f,
                "the message is {size} octets and the upstream takes at most {limit} (SIZE)"
            ),
        }
    }
}

/// What to send to an upstream with `capabilities`, or why it cannot take the message.
pub fn prepare<'a>(
    message: &Spooled<'a>,
    capabilities: Capabilities,
) -> Result<Outbound<'a>, Unsendable> {
    if message.envelope_needs_utf8 && !capabilities.smtputf8 {
        return Err(Unsendable::NeedsSmtpUtf8);
    }
    let eight_bit = !message.body.is_ascii();
    let seven_bit_only = eight_bit && !capabilities.eight_bit_mime;
    let mut outbound = Outbound {
        body: Cow::Borrowed(message.body),
        eight_bit_mime: capabilities.eight_bit_mime
            && (eight_bit || message.body_type == BodyType::EightBitMime),
        // Raw UTF-8 in headers (from sendmail, which cannot say SMTPUTF8) is declared too.
        smtputf8: capabilities.smtputf8
            && (message.smtputf8 || (eight_bit && !headers_of(message.body).is_ascii())),
        changes: Vec::new(),
    };
    if seven_bit_only || mime::has_long_line(message.body) {
        let reencoded = mime::reencode(message.body, seven_bit_only);
        if seven_bit_only && !reencoded.message.is_ascii() {
            return Err(Unsendable::NeedsEightBitMime);
        }
        outbound.eight_bit_mime &= !seven_bit_only;
        outbound.body = Cow::Owned(reencoded.message);
        outbound.changes = reencoded.changes;
    }
    if let Some(limit) = capabilities.size
        && limit > 0
        && outbound.size() > limit
    {
        return Err(Unsendable::TooBig {
            size: outbound.size(),
            limit,
        });
    }
    Ok(outbound)
}

/// The header section: everything before the first blank line.
fn headers_of(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &message[..end],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(body: &[u8], envelope_needs_utf8: bool) -> Spooled<'_> {
        Spooled {
            body,
            body_type: if body.is_ascii() {
                BodyType::SevenBit
            } else {
                BodyType::EightBitMime
            },
            smtputf8: envelope_needs_utf8,
            envelope_needs_utf8,
        }
    }

    const FULL: Capabilities = Capabilities {
        eight_bit_mime: true,
        smtputf8: true,
        size: None,
    };

    #[test]
    fn a_message_that_fits_goes_byte_for_byte() {
        let body = "Subject: ok\r\n\r\nGrüße\r\n".as_bytes();
        let out = prepare(&spooled(body, false), FULL).unwrap();
        assert!(matches!(out.body, Cow::Borrowed(b) if b == body));
        assert!(out.eight_bit_mime && !out.smtputf8 && out.changes.is_empty());
    }

    #[test]
    fn utf8_headers_are_declared_where_offered() {
        let body = "Subject: Grüße\r\n\r\nx\r\n".as_bytes();
        assert!(prepare(&spooled(body, false), FULL).unwrap().smtputf8);
        let no_utf8 = Capabilities {
            smtputf8: false,
            ..FULL
        };
        let out = prepare(&spooled(body, false), no_utf8).unwrap();
        assert!(!out.smtputf8 && out.eight_bit_mime);
        let seven_bit = Capabilities::default();
        assert_eq!(
            prepare(&spooled(body, false), seven_bit).err(),
            Some(Unsendable::NeedsEightBitMime)
        );
    }

    #[test]
    fn utf8_addresses_need_smtputf8_and_size_is_honoured_after_reencoding() {
        let body = b"Subject: x\r\n\r\nx\r\n";
        let no_utf8 = Capabilities {
            smtputf8: false,
            ..FULL
        };
        assert_eq!(
            prepare(&spooled(body, true), no_utf8).err(),
            Some(Unsendable::NeedsSmtpUtf8)
        );
        let small = Capabilities {
            size: Some(10),
            ..FULL
        };
        let error = prepare(&spooled(body, false), small).err().unwrap();
        assert_eq!(
            error,
            Unsendable::TooBig {
                size: 17,
                limit: 10
            }
        );
        assert_eq!(error.status().to_string(), "5.3.4");
        assert_eq!(Unsendable::NeedsSmtpUtf8.status().to_string(), "5.6.7");
    }

    #[test]
    fn eight_bit_bodies_become_seven_bit_without_8bitmime() {
        let body = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n".as_bytes();
        let out = prepare(&spooled(body, false), Capabilities::default()).unwrap();
        assert!(out.body.is_ascii() && !out.eight_bit_mime);
        assert_eq!(out.changes.len(), 1);
        assert!(out.changes[0].contains("8BITMIME"), "{:?}", out.changes);
    }
}
