//! The last step both entry points share (the SMTP listener and `sendmail`): repair the
//! identities, put our Received header first, and make the spool record — original and
//! rewritten envelope side by side.

use crate::rewrite::Rewriter;
use crate::spool::{BodyType, NewMessage, Origin, QueueId, now_ms};

/// A message as it was handed to us, before repair.
pub struct Submission<'a> {
    pub id: QueueId,
    /// '' is the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    /// The client's bytes (CRLF lines, unstuffed), without our Received header.
    pub message: &'a [u8],
    /// Our Received header for this message.
    pub received: Vec<u8>,
    pub origin: Origin,
    pub body_type: BodyType,
    pub smtputf8: bool,
}

/// Rewrites and assembles the spool record. Fails with the recipient that has no route
/// (callers check routes first, so this is a last guard).
pub fn prepare(rewriter: &Rewriter, submission: Submission<'_>) -> Result<NewMessage, String> {
    let rewritten = rewriter.apply(
        &submission.id,
        &submission.sender,
        &submission.recipients,
        submission.message,
    )?;
    let mut body = submission.received;
    body.extend_from_slice(&rewritten.message);
    // A rewritten IDN address needs SMTPUTF8, and 8-bit header text 8BITMIME, even when the
    // client's own message needed neither.
    let smtputf8 = submission.smtputf8
        || !rewritten.sender.is_ascii()
        || rewritten.recipients.iter().any(|r| !r.address.is_ascii());
    let body_type = if submission.body_type == BodyType::EightBitMime || !body.is_ascii() {
        BodyType::EightBitMime
    } else {
        BodyType::SevenBit
    };
    Ok(NewMessage {
        id: submission.id,
        received_at_ms: now_ms(),
        sender: rewritten.sender,
        original_sender: submission.sender,
        recipients: rewritten.recipients,
        origin: submission.origin,
        body_type,
        smtputf8,
        body,
        rewrites: rewritten.decisions,
    })
}
