//! The `Received:` header each entry point prepends (RFC 5321 4.4), so that the path a message
//! took can be traced.

use chrono::Utc;

use crate::model::{QueueId, TlsSession};

/// For mail that arrived over SMTP: `from HELO ([IP])` (left out when the client's address is
/// private and hidden), the TLS version and cipher (RFC 8314 7.4), our name, protocol and
/// queue ID, and the recipient when there is only one (more would disclose Bcc recipients).
pub fn smtp_header(
    from: Option<(Option<&str>, &str)>,
    tls: Option<&TlsSession>,
    hostname: &str,
    protocol: &str,
    id: &QueueId,
    single_recipient: Option<&str>,
) -> Vec<u8> {
    let mut header = String::from("Received: ");
    if let Some((helo, client)) = from {
        let helo = helo.map(sanitize).unwrap_or_else(|| "unknown".into());
        header.push_str(&format!("from {helo} ({client})\r\n\t"));
    }
    if let Some(tls) = tls {
        header.push_str(&format!(
            "(using {} with cipher {})\r\n\t",
            tls.version, tls.cipher
        ));
    }
    header.push_str(&format!(
        "by {hostname} (smarthost) with {protocol} id {id}"
    ));
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
            Some((Some("client.test"), "[127.0.0.1]")),
            None,
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
    fn tls_version_and_cipher_are_recorded() {
        let id = QueueId::generate();
        let tls = TlsSession {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        };
        let header = String::from_utf8(smtp_header(
            Some((Some("client.test"), "[10.0.0.5]")),
            Some(&tls),
            "relay.test",
            "ESMTPS",
            &id,
            None,
        ))
        .unwrap();
        assert!(header.starts_with(
            "Received: from client.test ([10.0.0.5])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tby relay.test (smarthost) with ESMTPS id "
        ), "{header}");
    }

    #[test]
    fn hidden_client_leaves_only_our_side() {
        let id = QueueId::generate();
        let header =
            String::from_utf8(smtp_header(None, None, "relay.test", "ESMTP", &id, None)).unwrap();
        assert!(header.starts_with(&format!(
            "Received: by relay.test (smarthost) with ESMTP id {id}; "
        )));
    }

    #[test]
    fn client_text_cannot_break_the_header() {
        let id = QueueId::generate();
        let header = smtp_header(
            Some((Some("evil\r\nX-Injected: 1 (x)"), "[127.0.0.1]")),
            None,
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
