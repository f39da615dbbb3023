//! What strict upstreams enforce, against aiosmtpd with its stock limits (1,000-octet lines)
//! and scripted capabilities: long lines re-encoded, 8-bit converted for a server without
//! 8BITMIME, SMTPUTF8 only where offered, SIZE sent and honoured, recipient limits met with
//! a new transaction at once, and recipients deferred together retried together.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};

use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(20);

/// Lines of `bytes`, without their CRLF.
fn longest_line(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .max()
        .unwrap_or(0)
}

fn text_of(message: &[u8]) -> String {
    let parsed = MessageParser::default().parse(message).expect("parses");
    parsed.body_text(0).expect("a text body").to_string()
}

fn sendmail(work: &Workdir, to: &str, message: &str) {
    let output = work.run(&work.link("sendmail"), &["-i", to], message.as_bytes());
    assert!(
        output.status.success(),
        "sendmail: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn show(work: &Workdir, id: &str) -> Value {
    let output = work.run(
        std::path::Path::new(BIN),
        &[
            "--config",
            work.config().to_str().unwrap(),
            "queue",
            "show",
            id,
            "--json",
        ],
        b"",
    );
    serde_json::from_slice(&output.stdout).expect("queue show --json")
}

/// A relay delivering to `upstream`'s STARTTLS listener; sendmail writes to its spool.
fn relay_for(certs: &Certs, upstream: &Upstream, extra_delivery: &str) -> (Workdir, Relay) {
    relay_with(certs, upstream, extra_delivery, "")
}

/// The same, with more keys for the `[[upstream]]` table.
fn relay_with(
    certs: &Certs,
    upstream: &Upstream,
    extra_delivery: &str,
    extra_upstream: &str,
) -> (Workdir, Relay) {
    let work = Workdir::new("");
    let password = password_file(work.dir.path(), PASSWORD);
    let table = upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca()));
    let delivery = delivery_config(&[format!("{table}{extra_upstream}")], extra_delivery);
    work.write_config(&format!(
        "hostname = \"relay.test\"\n[rewrite]\nsender_domain = \"example.com\"\n{delivery}"
    ));
    let relay = Relay::start(&work);
    (work, relay)
}

/// One message from app@example.com over SMTP (smtplib); every reply it saw.
fn send_as_app(relay: &Relay, to: &[&str], message: &[u8], extra: &[&str]) -> Value {
    smtplib_send(relay.port(), "app@example.com", to, message, extra)
}

fn final_states(work: &Workdir, count: usize) -> Vec<RecipientRow> {
    wait_until(WAIT, "final states", || {
        let rows = recipient_rows(&work.spool());
        (rows.len() >= count
            && rows
                .iter()
                .all(|r| r.state != "queued" && r.state != "deferred"))
        .then_some(rows)
    })
}

#[test]
fn cron_output_with_a_long_line_is_reencoded_and_reads_the_same() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let (work, _relay) = relay_for(&certs, &upstream, "");
    let long: String = (0..300).map(|n| format!("ü{n:08} ")).collect();
    assert!(long.len() > 3000);
    // As Debian's cron writes it: MIME, 8bit, UTF-8.
    let mime = format!(
        "From: root\nSubject: backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\nshort line\n{long}\n.\nend\n"
    );
    // As a script piping into sendmail writes it: no MIME headers at all.
    let plain = format!("Subject: report\n\n{}\nend\n", "x".repeat(3000));
    // Short lines: sent byte for byte.
    let short = "Subject: fine\n\nshort\n";
    for message in [&mime, &plain, &short.to_string()] {
        sendmail(&work, "ops@example.com", message);
    }
    let received = upstream.wait_for(3, WAIT);
    let by_subject = |subject: &str| {
        received
            .iter()
            .map(data)
            .find(|body| MessageParser::default().parse(body).unwrap().subject() == Some(subject))
            .unwrap_or_else(|| panic!("{subject} delivered"))
    };
    for (subject, expected) in [
        ("backup", format!("short line\n{long}\n.\nend\n")),
        ("report", format!("{}\nend\n", "x".repeat(3000))),
    ] {
        let body = by_subject(subject);
        assert!(
            longest_line(&body) <= 998,
            "{subject}: {}",
            longest_line(&body)
        );
        let parsed = MessageParser::default().parse(&body).unwrap();
        assert_eq!(
            parsed.parts[0].content_transfer_encoding(),
            Some("quoted-printable"),
            "{subject}"
        );
        assert_eq!(
            text_of(&body).replace("\r\n", "\n"),
            expected,
            "{subject}: a reader sees the same text"
        );
    }
    let fine = by_subject("fine");
    assert!(
        fine.ends_with(b"\r\n\r\nshort\r\n"),
        "untouched: {}",
        String::from_utf8_lossy(&fine)
    );
    assert!(!String::from_utf8_lossy(&fine).contains("quoted-printable"));
    final_states(&work, 3)
        .iter()
        .for_each(|r| assert_eq!(r.state, "delivered", "{r:?}"));
    let notes = rewrites(&work.spool()).join("\n");
    assert!(
        notes.contains("re-encoded as quoted-printable")
            && notes.contains("longer than 998 octets"),
        "{notes}"
    );
}

#[test]
fn eight_bit_mail_is_converted_for_a_server_without_8bitmime_and_declared_where_offered() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let (work, _relay) = relay_for(&certs, &upstream, "");
    let message = "Subject: umlauts\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus München\n";

    sendmail(&work, "ops@example.com", message);
    let offered = upstream.wait_for(1, WAIT);
    assert!(
        offered[0]["mail_options"]
            .as_array()
            .unwrap()
            .contains(&json!("BODY=8BITMIME")),
        "{}",
        offered[0]
    );
    assert!(data(&offered[0]).ends_with("Grüße aus München\r\n".as_bytes()));

    upstream.script(json!({"ehlo_drop": ["8BITMIME", "SMTPUTF8"]}));
    // A new configuration generation: new connections, which see the new EHLO.
    _relay.hup();
    std::thread::sleep(Duration::from_millis(300));
    sendmail(&work, "ops@example.com", message);
    let converted = upstream.wait_for(2, WAIT);
    let body = data(&converted[1]);
    assert!(body.is_ascii(), "{}", String::from_utf8_lossy(&body));
    assert!(
        !converted[1]["mail_options"]
            .as_array()
            .unwrap()
            .contains(&json!("BODY=8BITMIME"))
    );
    assert_eq!(text_of(&body), "Grüße aus München\r\n");

    // 8-bit in a header cannot be made 7-bit safely: held, with the reason.
    sendmail(
        &work,
        "ops@example.com",
        "Subject: Grüße\n\nplain ascii body\n",
    );
    let rows = final_states(&work, 3);
    let held = rows.iter().find(|r| r.state == "held").expect("one held");
    assert!(
        held.last_reply
            .as_deref()
            .unwrap_or_default()
            .contains("8BITMIME"),
        "{held:?}"
    );
    assert_eq!(upstream.received().len(), 2);
}

#[test]
fn a_utf8_address_is_bounced_by_an_upstream_without_smtputf8_and_declared_where_offered() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let (work, relay) = relay_for(
        &certs,
        &upstream,
        "bounce_address = \"bounces@example.com\"\n",
    );
    let message = "From: app@example.com\r\nSubject: utf8\r\n\r\nhello\r\n";
    let sent = send_as_app(
        &relay,
        &["jörg@example.com"],
        message.as_bytes(),
        &["--mail-option", "SMTPUTF8"],
    );
    assert_eq!(sent["data"][0], 250, "{sent}");
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["rcpt_tos"], json!(["jörg@example.com"]));
    assert!(
        received[0]["mail_options"]
            .as_array()
            .unwrap()
            .contains(&json!("SMTPUTF8"))
    );

    upstream.script(json!({"ehlo_drop": ["SMTPUTF8"]}));
    relay.hup();
    std::thread::sleep(Duration::from_millis(300));
    let sent = send_as_app(
        &relay,
        &["jörg@example.com"],
        message.as_bytes(),
        &["--mail-option", "SMTPUTF8"],
    );
    let id = queue_id(sent["data"][1].as_str().unwrap());
    let dsn = upstream.wait_for(2, WAIT);
    assert_eq!(
        dsn[1]["mail_from"], "<>",
        "a DSN, not the message: {}",
        dsn[1]
    );
    let text = String::from_utf8_lossy(&data(&dsn[1])).to_string();
    assert!(text.contains("Status: 5.6.7"), "{text}");
    assert!(text.contains("SMTPUTF8"), "{text}");
    let shown = show(&work, &id);
    let recipient = &shown["recipients"][0];
    assert_eq!(recipient["state"], "bounced", "{shown}");
    assert!(
        recipient["last_reply"]
            .as_str()
            .unwrap()
            .contains("does not offer SMTPUTF8"),
        "{shown}"
    );
}

#[test]
fn size_is_declared_and_mail_no_upstream_takes_is_refused_while_the_client_waits() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"size": 102400}));
    let (work, relay) = relay_for(
        &certs,
        &upstream,
        "bounce_address = \"bounces@example.com\"\n",
    );
    let small = "From: app@example.com\r\nSubject: small\r\n\r\nhello\r\n";
    let sent = send_as_app(&relay, &["ops@example.com"], small.as_bytes(), &[]);
    assert_eq!(sent["data"][0], 250);
    let received = upstream.wait_for(1, WAIT);
    let options = received[0]["mail_options"].as_array().unwrap();
    assert!(
        options
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("SIZE=")),
        "{options:?}"
    );

    // 156 kB: the relay now knows the upstream's limit and refuses it at once.
    let big = format!(
        "From: app@example.com\r\nSubject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(2400)
    );
    let sent = send_as_app(&relay, &["ops@example.com"], big.as_bytes(), &[]);
    assert_eq!(sent["data"][0], 552, "{sent}");
    assert!(
        sent["data"][1].as_str().unwrap().starts_with("5.3.4"),
        "{sent}"
    );

    // sendmail (root, straight to the spool) does not ask the daemon: the message is
    // bounced with the reason, without uploading it.
    sendmail(&work, "ops@example.com", &big.replace("\r\n", "\n"));
    let dsn = upstream.wait_for(2, WAIT);
    assert_eq!(dsn[1]["mail_from"], "<>");
    let text = String::from_utf8_lossy(&data(&dsn[1])).to_string();
    assert!(text.contains("Status: 5.3.4"), "{text}");
    assert_eq!(upstream.received().len(), 2, "the big one never went out");
}

#[test]
fn a_recipient_limit_is_met_by_a_new_transaction_at_once() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt_limit": 50}));
    // More per transaction than the upstream takes, as in Postfix's smtpd_recipient_limit.
    let (work, relay) = relay_with(&certs, &upstream, "", "max_recipients = 100\n");
    let recipients: Vec<String> = (0..60).map(|n| format!("r{n:02}@example.com")).collect();
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let sent = send_as_app(
        &relay,
        &to,
        b"From: app@example.com\r\nSubject: many\r\n\r\nhi\r\n",
        &[],
    );
    assert_eq!(sent["data"][0], 250);
    let received = upstream.wait_for(2, WAIT);
    let sizes: Vec<usize> = received
        .iter()
        .map(|m| m["rcpt_tos"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [50, 10], "two transactions");
    let rows = final_states(&work, 60);
    assert!(
        rows.iter()
            .all(|r| r.state == "delivered" && r.attempts == 1)
    );
}

#[test]
fn recipients_deferred_together_are_retried_in_one_transaction() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let later: Vec<String> = (0..5).map(|n| format!("later{n}@example.com")).collect();
    let mut rcpt = serde_json::Map::new();
    for address in &later {
        rcpt.insert(
            address.clone(),
            json!(["451 4.3.0 mailbox busy, try later", "250 2.1.5 OK"]),
        );
    }
    upstream.script(json!({ "rcpt": rcpt }));
    let (work, relay) = relay_for(&certs, &upstream, "");
    let mut to: Vec<&str> = later.iter().map(String::as_str).collect();
    to.push("now@example.com");
    let sent = send_as_app(
        &relay,
        &to,
        b"From: app@example.com\r\nSubject: retry\r\n\r\nhi\r\n",
        &[],
    );
    assert_eq!(sent["data"][0], 250);
    let received = upstream.wait_for(2, WAIT);
    final_states(&work, 6);
    std::thread::sleep(Duration::from_millis(500));
    let received_after = upstream.received();
    assert_eq!(received_after.len(), 2, "{received_after:?}");
    assert_eq!(received[0]["rcpt_tos"], json!(["now@example.com"]));
    assert_eq!(received[1]["rcpt_tos"], json!(later));
}

#[test]
fn connections_are_recycled_after_max_messages_per_connection() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    // One delivery worker, so that every message could share one connection.
    let (work, relay) = relay_with(
        &certs,
        &upstream,
        "connections = 1\n",
        "max_messages_per_connection = 2\n",
    );
    for n in 0..6 {
        let message = format!("From: app@example.com\r\nSubject: m{n}\r\n\r\nhi\r\n");
        let sent = send_as_app(&relay, &["ops@example.com"], message.as_bytes(), &[]);
        assert_eq!(sent["data"][0], 250);
        // One at a time, so that the connection (not a parallel worker) carries each.
        upstream.wait_for(n + 1, WAIT);
    }
    let received = upstream.received();
    let mut ports: Vec<u64> = received
        .iter()
        .map(|m| m["peer_port"].as_u64().unwrap())
        .collect();
    ports.dedup();
    assert_eq!(ports.len(), 3, "two messages per connection: {ports:?}");
    // Each connection said EHLO once before STARTTLS and once after (RFC 3207), no more.
    let ehlos = std::fs::read_to_string(upstream.dir.join("ehlo.jsonl")).unwrap();
    for port in &ports {
        let count = ehlos
            .lines()
            .filter(|l| l.contains(&format!("\"peer_port\": {port},")))
            .count();
        assert_eq!(count, 2, "EHLOs on connection {port}: {ehlos}");
    }
    final_states(&work, 6);
}
