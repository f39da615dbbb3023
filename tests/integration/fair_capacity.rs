//! Fair capacity: a flood of silent connections from untrusted addresses gets only the
//! untrusted clients' share and the VM's own cron (trusted, on 127.0.0.1) is served as fast as
//! without it; deadlines count from the start of what is awaited, so a client that sends a
//! NOOP or one byte now and then does not keep its slot.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const CRON: &[u8] = b"Subject: cron\r\n\r\noutput\r\n";

fn trusted_only_loopback(extra: &str) -> Workdir {
    Workdir::new(&format!(
        "[rewrite.aliases]\nroot = \"ops@example.com\"\n[smtp]\ntrusted_networks = [\"127.0.0.1/32\"]\n{extra}"
    ))
}

/// Median DATA time (ms) of five messages from the trusted client, each accepted.
fn median_acceptance_ms(port: u16) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let sent = smtplib_send(port, "app@example.com", &["ops@example.com"], CRON, &[]);
            assert_eq!(sent["data"][0], 250, "{sent}");
            sent["data_ms"].as_f64().unwrap()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

#[test]
fn a_thousand_silent_untrusted_connections_do_not_lock_out_the_trusted_client() {
    let work = trusted_only_loopback("");
    let relay = Relay::start(&work);
    let unloaded = median_acceptance_ms(relay.port());

    let mut flood = Command::new("python3")
        .arg(peer("silent_flood.py"))
        .args([&relay.port().to_string(), "1000", "2", "41"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = flood.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the flood connected within two minutes");
    let counts: serde_json::Value = serde_json::from_str(&line).expect(&line);
    // The untrusted share (smtp.max_untrusted_connections = 50); the rest hear 421 at once.
    assert_eq!(counts["sessions"], 50, "{counts}");
    assert_eq!(counts["refused"], 950, "{counts}");

    let loaded = median_acceptance_ms(relay.port());
    eprintln!(
        "acceptance, median of 5: {unloaded:.1} ms unloaded, {loaded:.1} ms beside 1,000 silent connections"
    );
    assert!(
        loaded < unloaded + 100.0,
        "{loaded:.1} ms under the flood vs {unloaded:.1} ms without"
    );
    let _ = flood.stdin.take().unwrap().write_all(b"");
    let _ = flood.kill();
    let _ = flood.wait();
}

#[test]
fn chatter_and_dribbled_bytes_do_not_hold_a_slot_past_the_deadline() {
    let work = trusted_only_loopback("idle_timeout = \"2s\"\ncommand_timeout = \"2s\"\n");
    let relay = Relay::start(&work);

    // A NOOP every 300 ms: each is answered, and the session still ends at the idle deadline.
    let mut client = RawClient::connect(relay.addr);
    let started = Instant::now();
    assert!(client.reply().starts_with("220 "));
    assert!(client.command("EHLO chatty.test").starts_with("250"));
    let mut last = String::new();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        last = client.command("NOOP");
        if !last.starts_with("250") {
            break;
        }
    }
    let held = started.elapsed();
    assert!(last.starts_with("421 4.4.2") || last.is_empty(), "{last:?}");
    assert!(
        held >= Duration::from_millis(1800) && held < Duration::from_secs(4),
        "NOOPs held the slot for {held:?}"
    );

    // One byte of a command line every 300 ms, inside a transaction: the deadline is the
    // transaction's, not the last byte's.
    let mut client = RawClient::connect(relay.addr);
    client.start_transaction("app@example.com", "ops@example.com");
    let started = Instant::now();
    for byte in b"RCPT TO:<ops@example.com>".iter().take(5) {
        std::thread::sleep(Duration::from_millis(300));
        client.send(&[*byte]);
    }
    let reply = client.reply();
    let held = started.elapsed();
    assert!(
        reply.starts_with("421 4.4.2") || reply.is_empty(),
        "{reply:?}"
    );
    assert!(
        held < Duration::from_secs(4),
        "dribbled bytes held the slot for {held:?}"
    );
}
