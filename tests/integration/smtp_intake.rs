//! SMTP intake end to end: a real client's message lands in the spool byte-exact, and abusive
//! input gets its documented reply without disturbing other sessions.

use std::time::{Duration, Instant};

use crate::support::*;

on_both_stores!(smtplib_message_is_spooled_byte_exact_with_envelope);

fn smtplib_message_is_spooled_byte_exact_with_envelope(store: Store) {
    let work = Workdir::on(store, "");
    let relay = Relay::start(&work);
    let message = "From: App <app@example.com>\r\nTo: ops@example.com\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\n.leading dot on a body line\r\n..two dots\r\n8-bit: gr\u{fc}\u{df}e\r\n\r\nlast line\r\n";
    let result = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com", "dev@example.org"],
        message.as_bytes(),
        &["--mail-option", "BODY=8BITMIME"],
    );
    assert_eq!(result["data"][0], 250, "{result}");
    let reply = result["data"][1].as_str().unwrap();
    assert!(reply.starts_with("2.0.0 Ok: queued as "), "{reply}");
    let id = queue_id(reply);

    let spooled = spooled(&work);
    assert_eq!(spooled.len(), 1);
    let m = &spooled[0];
    assert_eq!(m.id, id);
    assert_eq!(m.body_after_received(), message.as_bytes());
    assert_eq!(m.sender, "app@example.com");
    assert_eq!(m.original_sender, "app@example.com");
    assert_eq!(m.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.body_type, "8BITMIME");
    assert_eq!(
        m.recipient_addresses(),
        ["ops@example.com", "dev@example.org"]
    );
    for (_, state, attempts, next_attempt_at, _) in &m.recipients {
        assert_eq!((state.as_str(), *attempts), ("queued", 0));
        assert!(*next_attempt_at > 0);
    }
    let received = String::from_utf8_lossy(&m.body[..m.body.len() - message.len()]).to_string();
    assert!(
        received.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost) with ESMTP id "
        ),
        "{received}"
    );
    assert!(received.contains(&id));
    relay.wait_for_log(&["queued", &id]);
}

#[test]
fn empty_message_and_first_line_dot_survive_raw_framing() {
    let work = Workdir::new("");
    let relay = Relay::start(&work);
    let mut client = RawClient::connect(relay.addr);
    client.start_transaction("a@example.com", "b@example.com");
    assert!(client.command("DATA").starts_with("354 "));
    client.send(b".\r\n");
    assert!(client.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert!(
        client
            .command("MAIL FROM:<a@example.com>")
            .starts_with("250")
    );
    assert!(client.command("RCPT TO:<b@example.com>").starts_with("250"));
    assert!(client.command("DATA").starts_with("354 "));
    client.send(b"..first line\r\nbare\nlf\r\n.\r\n");
    assert!(client.reply().starts_with("250 2.0.0"));
    let spooled = spooled(&work.spool());
    assert_eq!(spooled[0].body_after_received(), b"");
    // Bare LF is normalised to CRLF (documented policy).
    assert_eq!(
        spooled[1].body_after_received(),
        b".first line\r\nbare\r\nlf\r\n"
    );
}

#[test]
fn abusive_input_gets_documented_replies_and_nothing_is_spooled() {
    let work = Workdir::new("[smtp]\nmax_message_size = 1000\nmax_recipients = 2\n");
    let relay = Relay::start(&work);
    let mut c = RawClient::connect(relay.addr);
    assert!(c.reply().starts_with("220 relay.test ESMTP"));
    assert!(c.command("EHLO raw.test").contains("250 SMTPUTF8"));
    assert!(
        c.command("MAIL FROM:<a@example.com>")
            .starts_with("250 2.1.0")
    );
    let tricks = [
        ("<@hop1,@hop2:user@example.com>", "553 5.1.3"),
        ("<user%other.example@example.com>", "553 5.1.3"),
        ("<other!user@example.com>", "553 5.1.3"),
        ("<\"user@other.example\"@example.com>", "553 5.1.3"),
        ("<user@other.example@example.com>", "553 5.1.3"),
    ];
    for (path, expected) in tricks {
        let reply = c.command(&format!("RCPT TO:{path}"));
        assert!(reply.starts_with(expected), "{path}: {reply}");
    }
    assert!(c.command("RCPT TO:<r1@example.com>").starts_with("250"));
    assert!(c.command("RCPT TO:<r2@example.com>").starts_with("250"));
    assert!(
        c.command("RCPT TO:<r3@example.com>")
            .starts_with("452 4.5.3")
    );
    let long = format!("NOOP {}", "x".repeat(5000));
    assert!(c.command(&long).starts_with("500 5.5.2"));
    assert!(
        c.command("NOOP").starts_with("250"),
        "session goes on after a long line"
    );
    assert!(c.command("DATA").starts_with("354"));
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(2000)).as_bytes());
    assert!(c.reply().starts_with("552 5.3.4"));
    assert!(
        c.command("MAIL FROM:<a@example.com> SIZE=5000")
            .starts_with("552 5.3.4")
    );
    assert!(c.command("QUIT").starts_with("221"));
    assert!(spooled(&work.spool()).is_empty());
}

#[test]
fn pipelined_commands_in_one_write_are_answered_in_order() {
    let work = Workdir::new("");
    let relay = Relay::start(&work);
    let mut c = RawClient::connect(relay.addr);
    assert!(c.reply().starts_with("220"));
    c.send(b"EHLO pipe.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<bad%x@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n");
    let expected = [
        "250-",
        "250 2.1.0",
        "250 2.1.5",
        "553 5.1.3",
        "250 2.1.5",
        "354 ",
    ];
    for prefix in expected {
        let reply = c.reply();
        assert!(reply.starts_with(prefix), "expected {prefix}, got {reply}");
    }
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<d@example.com>\r\nRCPT TO:<e@example.com>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n");
    for prefix in [
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "354 ",
        "250 2.0.0",
        "221 ",
    ] {
        let reply = c.reply();
        assert!(reply.starts_with(prefix), "expected {prefix}, got {reply}");
    }
    let spooled = spooled(&work.spool());
    assert_eq!(spooled.len(), 2);
    assert_eq!(
        spooled[0].recipient_addresses(),
        ["b@example.com", "c@example.com"]
    );
    assert_eq!(spooled[1].body_after_received(), b"second\r\n");
}

#[test]
fn a_stalled_client_times_out_without_blocking_others() {
    let work = Workdir::new(
        "[smtp]\nidle_timeout = \"1s\"\ncommand_timeout = \"1s\"\ndata_timeout = \"1s\"\n",
    );
    let relay = Relay::start(&work);
    let mut staller = RawClient::connect(relay.addr);
    staller.start_transaction("a@example.com", "b@example.com");
    assert!(staller.command("DATA").starts_with("354"));
    staller.send(b"Subject: half a message\r\n");
    let started = Instant::now();
    // Meanwhile another client is served normally.
    let result = smtplib_send(
        relay.port(),
        "x@example.com",
        &["y@example.com"],
        b"Subject: ok\r\n\r\nok\r\n",
        &[],
    );
    assert_eq!(result["data"][0], 250);
    let reply = staller.reply();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "timeout took {waited:?}");
    assert_eq!(staller.reply(), "", "connection closed after 421");
    assert_eq!(
        spooled(&work.spool()).len(),
        1,
        "only the complete message is spooled"
    );
}

#[test]
fn connection_limit_per_client_address() {
    let work = Workdir::new("[smtp]\nmax_connections_per_ip = 2\n");
    let relay = Relay::start(&work);
    let mut first = RawClient::connect(relay.addr);
    let mut second = RawClient::connect(relay.addr);
    assert!(first.reply().starts_with("220"));
    assert!(second.reply().starts_with("220"));
    let mut third = RawClient::connect(relay.addr);
    assert!(third.reply().starts_with("421 4.7.0"));
    drop(first);
    // The slot is given back once the first session ends (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = RawClient::connect(relay.addr);
        if again.reply().starts_with("220") {
            break;
        }
        assert!(Instant::now() < deadline, "slot was never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(second.command("NOOP").starts_with("250"));
}

#[test]
fn busy_spool_answers_452_and_the_session_goes_on() {
    let work = Workdir::new("[spool]\nbusy_timeout = \"200ms\"\n");
    let relay = Relay::start(&work);
    let mut locker = std::process::Command::new("python3")
        .arg(peer("hold_lock.py"))
        .arg(work.spool())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut locker_out = std::io::BufReader::new(locker.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut locker_out, &mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    let mut c = RawClient::connect(relay.addr);
    c.start_transaction("a@example.com", "b@example.com");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: while locked\r\n\r\nx\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("452 4.3.1"), "{reply}");

    std::io::Write::write_all(locker.stdin.as_mut().unwrap(), b"release\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut locker_out, &mut line).unwrap();
    assert_eq!(line.trim(), "released");
    let _ = locker.wait();

    assert!(c.command("MAIL FROM:<a@example.com>").starts_with("250"));
    assert!(c.command("RCPT TO:<b@example.com>").starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: after\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\ny\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    let spooled = spooled(&work.spool());
    assert_eq!(spooled.len(), 1);
    assert_eq!(
        spooled[0].body_after_received(),
        b"Subject: after\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\ny\r\n"
    );
}
