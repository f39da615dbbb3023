//! The `Received:` header each entry point prepends (RFC 5321 4.4), so that the path a message
//! took can be traced.

use chrono::Utc;

use crate::spool::QueueId;

/// For mail that arrived over SMTP: `from HELO ([IP])`, our name, protocol and queue ID, and
/// the recipient when there is only one (more would disclose Bcc recipients).
pub fn smtp_header(
    helo: Option<&str>,
    client: &str,
    hostname: &str,
    protocol: &str,
    id: &QueueId,
    single_recipient: Option<&str>,
) -> Vec<u8> {
    let helo = helo.map(sanitize).unwrap_or_else(|| "unknown".into());
    let mut header = format!(
        "Received: from {helo} ({client})\r\n\tby {hostname} (smarthost) with {protocol} id {id}"
    );
    if let Some(recipient) = single_recipient {
        header.push_str(&format!("\r\n\tfor <{}>", sanitize(recipient)));
    }
    header.push_str(&format!("; {}\r\n", Utc::now().to_rfc2822()));
    header.into_bytes()
}

/// For mail submitted with the `sendmail` command by a local user.
pub fn local_header(hostname: &str, uid: u32, id: &QueueId) -> Vec<u8> {
    format!(
        "Received: by {hostname} (smarthost, from userid {uid})\r\n\tid {id}; {}\r\n",
        Utc::now().to_rfc2822()
    )
    .into_bytes()
}

/// Client-chosen text goes into a header: keep it printable and free of comment delimiters.
fn sanitize(text: &str) -> String {
    text.chars()
        .take(255)
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_header_is_folded_and_names_the_path() {
        let id = QueueId::generate();
        let header = String::from_utf8(smtp_header(
            Some("client.test"),
            "[127.0.0.1]",
            "relay.test",
            "ESMTP",
            &id,
            Some("a@b.example"),
        ))
        .unwrap();
        assert!(header.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost) with ESMTP id "
        ));
        assert!(header.contains(&format!("id {id}\r\n\tfor <a@b.example>; ")));
        assert!(header.ends_with(" +0000\r\n"));
    }

    #[test]
    fn client_text_cannot_break_the_header() {
        let id = QueueId::generate();
        let header = smtp_header(
            Some("evil\r\nX-Injected: 1 (x)"),
            "[127.0.0.1]",
            "r.test",
            "SMTP",
            &id,
            None,
        );
        let header = String::from_utf8(header).unwrap();
        assert!(!header.contains("\r\nX-Injected"));
        assert!(header.contains("evil??X-Injected: 1 ?x?"));
    }
}
