//! Delivery end to end: smtplib → smarthost → aiosmtpd upstream (STARTTLS or implicit TLS,
//! AUTH required), with scripted replies deciding each recipient's fate.

use std::process::Command;
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use serde_json::json;

use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(20);

/// A relay whose only upstream is `upstream` over STARTTLS with the test CA.
fn relay_for(certs: &Certs, port: u16, tls: &str, extra_delivery: &str) -> (Workdir, Relay) {
    let work = delivering_workdir(certs, port, tls, "", extra_delivery);
    let relay = Relay::start(&work);
    (work, relay)
}

fn message(subject: &str) -> String {
    format!(
        "From: app@example.com\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\n.first body line starts with a dot\r\nbody of {subject}\r\n"
    )
}

fn submit(relay: &Relay, to: &[&str], subject: &str) -> String {
    let message = message(subject);
    let result = smtplib_send(relay.port(), "app@example.com", to, message.as_bytes(), &[]);
    assert_eq!(result["data"][0], 250, "{result}");
    queue_id(result["data"][1].as_str().unwrap())
}

/// The Subject of each received message, in arrival order.
fn subjects(received: &[serde_json::Value]) -> Vec<String> {
    received
        .iter()
        .map(|m| {
            let body = data(m);
            let parsed = MessageParser::default().parse(&body).unwrap();
            parsed.subject().unwrap().to_string()
        })
        .collect()
}

fn states(work: &Workdir) -> Vec<(String, String)> {
    recipient_rows(&work.spool())
        .into_iter()
        .map(|r| (r.address, r.state))
        .collect()
}

#[test]
fn starttls_and_implicit_tls_deliver_the_spooled_bytes_after_auth() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    for (tls, port, listener) in [
        ("starttls", upstream.starttls, "starttls"),
        ("implicit", upstream.implicit, "implicit"),
    ] {
        let before = upstream.received().len();
        let (work, relay) = relay_for(&certs, port, tls, "");
        submit(&relay, &["ops@example.com"], tls);
        let received = upstream.wait_for(before + 1, WAIT);
        let got = &received[before];
        assert_eq!(got["mail_from"], "app@example.com");
        assert_eq!(got["rcpt_tos"], json!(["ops@example.com"]));
        assert_eq!(got["listener"], listener);
        assert_eq!(got["tls"], true, "{tls}: delivered over TLS");
        assert_eq!(got["auth_user"], USER, "{tls}: after AUTH");
        assert_eq!(got["helo"], "relay.test");
        let body = data(got);
        assert!(body.starts_with(
            b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test (smarthost)"
        ));
        assert!(
            body.ends_with(message(tls).as_bytes()),
            "{tls}: byte-exact, leading dot included"
        );
        wait_until(WAIT, "recipient marked delivered", || {
            (states(&work) == [("ops@example.com".to_string(), "delivered".to_string())])
                .then_some(())
        });
        let attempts = attempt_rows(&work.spool());
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].1.as_deref(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert!(attempts[0].2.starts_with("250 "), "{attempts:?}");
        let logs = relay.all_logs();
        assert!(
            !logs.contains(PASSWORD),
            "the password must never be logged"
        );
    }
}

#[test]
fn each_recipient_gets_its_own_outcome_and_one_dsn_names_the_failure() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt": {
        "later@example.com": ["451 4.3.0 mailbox busy, try later", "250 2.1.5 OK"],
        "bad@example.com": ["550 5.1.1 <bad@example.com>: no such user"],
    }}));
    let (work, relay) = relay_for(
        &certs,
        upstream.starttls,
        "starttls",
        "bounce_address = \"bounces@example.com\"\n",
    );
    let started = Instant::now();
    let id = submit(
        &relay,
        &["ok@example.com", "later@example.com", "bad@example.com"],
        "mixed",
    );

    // First attempt: ok delivered; bad bounced (DSN to the bounce address); later deferred.
    let received = upstream.wait_for(2, WAIT);
    let original = received
        .iter()
        .find(|m| m["mail_from"] == "app@example.com")
        .unwrap();
    assert_eq!(original["rcpt_tos"], json!(["ok@example.com"]));
    let dsn = received
        .iter()
        .find(|m| m["mail_from"] == "<>")
        .unwrap_or_else(|| panic!("a DSN with the null sender in {received:?}"));
    assert_eq!(dsn["rcpt_tos"], json!(["bounces@example.com"]));
    let dsn_bytes = data(dsn);
    let parsed = MessageParser::default()
        .parse(&dsn_bytes)
        .expect("DSN parses");
    assert_eq!(
        parsed.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    let text = String::from_utf8_lossy(&dsn_bytes);
    assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
    assert!(
        text.contains("Final-Recipient: rfc822; bad@example.com"),
        "{text}"
    );
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 <bad@example.com>: no such user"),
        "{text}"
    );
    assert!(text.contains(&id));
    assert!(
        !text.contains("later@example.com"),
        "the deferred recipient is not in the DSN"
    );

    // Second attempt after the backoff: later delivered, on its own.
    let received = upstream.wait_for(3, WAIT);
    assert_eq!(received[2]["rcpt_tos"], json!(["later@example.com"]));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retried only after the backoff"
    );
    let rows = wait_until(WAIT, "final states", || {
        let rows = recipient_rows(&work.spool());
        rows.iter()
            .filter(|r| {
                r.address.ends_with("@example.com") && r.state != "queued" && r.state != "deferred"
            })
            .count()
            .eq(&4)
            .then_some(rows)
    });
    let by_address = |a: &str| rows.iter().find(|r| r.address == a).unwrap().clone();
    assert_eq!(
        (
            by_address("ok@example.com").state.as_str(),
            by_address("ok@example.com").attempts
        ),
        ("delivered", 1)
    );
    assert_eq!(
        (
            by_address("later@example.com").state.as_str(),
            by_address("later@example.com").attempts
        ),
        ("delivered", 2)
    );
    assert_eq!(by_address("bad@example.com").state, "bounced");
    assert_eq!(by_address("bounces@example.com").state, "delivered");
    assert!(text.contains("Status: 5.1.1\r\n"), "{text}");
    // The history keeps each reply typed: code and enhanced status beside the text.
    let shown = Command::new(BIN)
        .args([
            "--config",
            work.config().to_str().unwrap(),
            "queue",
            "show",
            &id,
            "--json",
        ])
        .args(["--spool", work.spool().to_str().unwrap()])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("show --json");
    let typed: Vec<(String, serde_json::Value, serde_json::Value)> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let recipient = a["recipient"].as_str().unwrap().to_string();
            (
                recipient,
                a["reply_code"].clone(),
                a["reply_enhanced"].clone(),
            )
        })
        .collect();
    for (recipient, code, enhanced) in [
        ("bad@example.com", 550, "5.1.1"),
        ("later@example.com", 451, "4.3.0"),
        ("ok@example.com", 250, "2.0.0"),
    ] {
        assert!(
            typed.contains(&(recipient.to_string(), json!(code), json!(enhanced))),
            "{recipient}: {typed:?}"
        );
    }
    let attempts = attempt_rows(&work.spool());
    let later: Vec<&str> = attempts
        .iter()
        .filter(|a| a.0 == "later@example.com")
        .map(|a| a.3.as_str())
        .collect();
    assert_eq!(later, ["deferred", "delivered"]);
    assert!(
        attempts
            .iter()
            .any(|a| a.2 == "451 4.3.0 mailbox busy, try later")
    );
    assert_eq!(counter(&work.spool(), "bounces_sent"), 1);
}

#[test]
fn upstream_down_at_first_then_started_gets_every_message_once() {
    let certs = Certs::new();
    let port = unused_port();
    let (work, relay) = relay_for(&certs, port, "starttls", "");
    for n in 0..5 {
        submit(&relay, &["ops@example.com"], &format!("queued-{n}"));
    }
    wait_until(WAIT, "first attempts deferred", || {
        recipient_rows(&work.spool())
            .iter()
            .all(|r| r.state == "deferred")
            .then_some(())
    });
    let upstream = Upstream::start_on(&certs, port);
    let received = upstream.wait_for(5, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    let received_after = upstream.received();
    assert_eq!(received_after.len(), 5, "nothing delivered twice");
    let mut subjects = subjects(&received);
    subjects.sort();
    assert_eq!(
        subjects,
        (0..5).map(|n| format!("queued-{n}")).collect::<Vec<_>>()
    );
    let deferred_reason = recipient_rows(&work.spool());
    assert!(deferred_reason.iter().all(|r| r.state == "delivered"));
    let attempts = attempt_rows(&work.spool());
    assert!(
        attempts
            .iter()
            .any(|a| a.3 == "deferred" && a.2.contains("unreachable")),
        "{attempts:?}"
    );
}

#[test]
fn primary_down_secondary_takes_the_message_at_once() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = Workdir::new("");
    let password = password_file(work.dir.path(), PASSWORD);
    let dead = unused_port();
    let config = delivery_config(
        &[
            upstream_table(dead, "starttls", &password, Some(&certs.ca())),
            upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca())),
        ],
        "",
    );
    work.write_config(&format!("hostname = \"relay.test\"\n{config}"));
    let relay = Relay::start(&work);
    let started = Instant::now();
    submit(&relay, &["ops@example.com"], "failover");
    upstream.wait_for(1, WAIT);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failover is immediate, not after a retry"
    );
    // The upstream has the message; the relay records the outcome right after its reply.
    let attempts = wait_until(WAIT, "the attempt recorded", || {
        let attempts = attempt_rows(&work.spool());
        (!attempts.is_empty()).then_some(attempts)
    });
    assert_eq!(attempts.len(), 1, "one attempt, carried by the secondary");
    assert_eq!(
        attempts[0].1.as_deref(),
        Some(format!("127.0.0.1:{}", upstream.starttls).as_str())
    );
    assert_eq!(attempts[0].3, "delivered");
}

#[test]
fn unverifiable_certificate_and_wrong_password_hold_until_fixed_and_reloaded() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = Workdir::new("");
    let wrong = "wrong-passw0rd-never-logged";
    let password = password_file(work.dir.path(), wrong);
    let write_config = |ca: Option<&std::path::Path>| {
        let config = delivery_config(
            &[upstream_table(upstream.starttls, "starttls", &password, ca)],
            "bounce_address = \"bounces@example.com\"\n",
        );
        work.write_config(&format!("hostname = \"relay.test\"\n{config}"));
    };
    // No CA: the test CA's certificate cannot be verified against the system roots.
    write_config(None);
    let relay = Relay::start(&work);
    submit(&relay, &["ops@example.com"], "held");
    let row = wait_until(WAIT, "held for the certificate", || {
        recipient_rows(&work.spool())
            .into_iter()
            .find(|r| r.state == "held")
    });
    assert_eq!(row.held_by.as_deref(), Some("config"));
    let reason = row.last_reply.unwrap();
    assert!(
        reason.contains("TLS") && reason.contains("certificate"),
        "{reason}"
    );

    // CA fixed, password still wrong: held again, for AUTH this time.
    write_config(Some(&certs.ca()));
    relay.hup();
    let row = wait_until(WAIT, "held for AUTH", || {
        recipient_rows(&work.spool()).into_iter().find(|r| {
            r.state == "held" && r.last_reply.as_deref().is_some_and(|t| t.contains("AUTH"))
        })
    });
    assert!(row.last_reply.unwrap().contains("535"));

    // Password fixed and reloaded: delivered. Nothing was ever bounced.
    password_file(work.dir.path(), PASSWORD);
    relay.hup();
    upstream.wait_for(1, WAIT);
    wait_until(WAIT, "delivered", || {
        (states(&work) == [("ops@example.com".to_string(), "delivered".to_string())]).then_some(())
    });
    assert_eq!(counter(&work.spool(), "bounces_sent"), 0);
    assert!(counter(&work.spool(), "config_errors") >= 2);
    let logs = relay.all_logs();
    assert!(logs.contains("held"), "the hold is logged");
    for secret in [wrong, PASSWORD] {
        assert!(!logs.contains(secret), "a password appeared in the logs");
        let attempts = attempt_rows(&work.spool());
        assert!(
            !format!("{attempts:?}").contains(secret),
            "a password appeared in the history"
        );
    }
}

on_both_stores!(kill_9_during_a_delivery_batch_loses_nothing_and_duplicates_only_in_flight);

/// On a shared store the restarted daemon is a new node: the killed one's leases run out
/// (`lease`) and are taken over, where a SQLite spool clears them at the restart.
fn kill_9_during_a_delivery_batch_loses_nothing_and_duplicates_only_in_flight(store: Store) {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"delay_ms": 150}));
    let work = delivering_workdir_on(
        store,
        &certs,
        upstream.starttls,
        "starttls",
        "",
        "connections = 2\nlease = \"3s\"\n",
    );
    let relay = Relay::start(&work);
    let total = 20;
    for n in 0..total {
        submit(&relay, &["ops@example.com"], &format!("batch-{n}"));
    }
    wait_until(WAIT, "some deliveries", || {
        (upstream.received().len() >= 3).then_some(())
    });
    relay.kill9();
    let restarted = Relay::start(&work);
    wait_until(Duration::from_secs(40), "every message delivered", || {
        recipient_states(&work)
            .iter()
            .all(|(_, _, state)| state == "delivered")
            .then_some(())
    });
    let mut subjects = subjects(&upstream.received());
    let delivered = subjects.len();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), total, "every message arrived");
    let duplicates = delivered - total;
    eprintln!("kill -9 mid-batch: {duplicates} duplicate(s) of {total}");
    assert!(
        duplicates <= 2,
        "duplicates ({duplicates}) are at most the in-flight messages (2 connections)"
    );
    drop(restarted);
}

on_both_stores!(mail_in_flight_leaves_the_scheduler_idle);

/// A recipient under a lease is not due, even when its attempt time has passed: while a slow
/// upstream holds the only message, the scheduler waits instead of claiming in a loop.
fn mail_in_flight_leaves_the_scheduler_idle(store: Store) {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"delay_ms": 3000}));
    let work = delivering_workdir_on(store, &certs, upstream.starttls, "starttls", "", "");
    let relay =
        Relay::try_start_env(&work, &[], &[("RUST_LOG", "smarthost=debug")]).expect("relay starts");
    submit(&relay, &["ops@example.com"], "slow");
    std::thread::sleep(Duration::from_millis(300));
    let before = relay.count_logs(&["spool commit"]);
    std::thread::sleep(Duration::from_secs(2));
    let during = relay.count_logs(&["spool commit"]) - before;
    eprintln!("spool transactions in 2 s with one message in flight: {during}");
    // One claim per poll (the tests' poll_interval is 200 ms), not a busy loop (which made
    // over a thousand).
    assert!(during <= 15, "{during} transactions");
    upstream.wait_for(1, WAIT);
}

#[test]
fn rate_cap_spaces_messages() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = Workdir::new("");
    let password = password_file(work.dir.path(), PASSWORD);
    let table = upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca()))
        + "max_messages_per_second = 10\n";
    let config = delivery_config(&[table], "");
    work.write_config(&format!("hostname = \"relay.test\"\n{config}"));
    let relay = Relay::start(&work);
    let total = 30;
    // One client sends all 30 in a fraction of a second; only the cap spreads them out.
    let output = std::process::Command::new("python3")
        .args([
            &peer("smtp_load.py"),
            &relay.port().to_string(),
            "1",
            &total.to_string(),
        ])
        .output()
        .expect("python3");
    let load: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(load["ids"].as_array().unwrap().len(), total);
    let received = upstream.wait_for(total, Duration::from_secs(30));
    let times: Vec<f64> = received
        .iter()
        .map(|m| m["received_at"].as_f64().unwrap())
        .collect();
    let elapsed = Duration::from_secs_f64(times[total - 1] - times[0]);
    eprintln!("{total} messages at 10/s: {elapsed:?} from the first to the last");
    // 30 at 10/s: at least 2.9 s from the first slot to the last, whatever the machine.
    assert!(elapsed >= Duration::from_millis(2500), "{elapsed:?}");
}

#[test]
fn new_mail_is_picked_up_at_once_and_one_connection_carries_many() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    // A poll this slow would take 30 s: only the hand-off from the commit (or its signal)
    // can explain fast delivery.
    let (work, relay) = relay_for(
        &certs,
        upstream.starttls,
        "starttls",
        "poll_interval = \"30s\"\nconnections = 1\n",
    );
    let started = Instant::now();
    submit(&relay, &["ops@example.com"], "prompt");
    upstream.wait_for(1, Duration::from_secs(5));
    let latency = started.elapsed();
    eprintln!("submission to upstream: {latency:?}");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    for n in 0..4 {
        submit(&relay, &["ops@example.com"], &format!("reuse-{n}"));
    }
    let received = upstream.wait_for(5, WAIT);
    let ports: std::collections::BTreeSet<u64> = received
        .iter()
        .map(|m| m["peer_port"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "all five over one reused connection: {ports:?}"
    );
    // Delivered mail keeps its headers for `queue show`, but not its body.
    let stored = wait_until(WAIT, "delivered bodies reduced to headers", || {
        let spooled = spooled(&work.spool());
        let done = spooled.len() == 5
            && spooled.iter().all(|m| {
                m.recipients.iter().all(|r| r.1 == "delivered")
                    && !m.body.windows(4).any(|w| w == b"\r\n\r\n")
            });
        done.then_some(spooled)
    });
    for message in stored {
        let text = String::from_utf8_lossy(&message.body).to_string();
        assert!(text.contains("Subject: "), "{text}");
        assert!(!text.contains("body of"), "{text}");
    }
}

#[test]
fn queue_lifetime_bounces_and_a_failed_bounce_is_held_not_bounced() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt": {
        "slow@example.com": ["451 4.3.0 still busy"],
        "gone@example.com": ["550 5.1.1 no such user"],
    }}));
    let (work, relay) = relay_for(
        &certs,
        upstream.starttls,
        "starttls",
        "queue_lifetime = \"2s\"\n",
    );
    // Deferred until its lifetime runs out, then bounced to the sender.
    submit(&relay, &["slow@example.com"], "expires");
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["mail_from"], "<>");
    assert_eq!(received[0]["rcpt_tos"], json!(["app@example.com"]));
    let text = String::from_utf8_lossy(&data(&received[0])).to_string();
    assert!(
        text.contains("Final-Recipient: rfc822; slow@example.com"),
        "{text}"
    );
    assert!(
        text.contains("451 4.3.0 still busy"),
        "the last reply is in the DSN"
    );
    // It says why it failed (RFC 3463 5.4.7) and names both MTAs by host name (RFC 3464).
    assert!(text.contains("Status: 5.4.7\r\n"), "{text}");
    assert!(text.contains("queue lifetime of 2s"), "{text}");
    assert!(
        text.contains("Reporting-MTA: dns; relay.test\r\n"),
        "{text}"
    );
    assert!(text.contains("Remote-MTA: dns; 127.0.0.1\r\n"), "{text}");

    // A bounce (null sender) that fails permanently is held, never bounced again.
    let result = smtplib_send(
        relay.port(),
        "",
        &["gone@example.com"],
        b"Subject: a bounce\r\n\r\nx\r\n",
        &[],
    );
    assert_eq!(result["data"][0], 250);
    let row = wait_until(WAIT, "failed bounce held", || {
        recipient_rows(&work.spool())
            .into_iter()
            .find(|r| r.address == "gone@example.com" && r.state == "held")
    });
    assert_eq!(row.held_by.as_deref(), Some("bounce"));
    assert_eq!(counter(&work.spool(), "bounce_failures"), 1);
    assert_eq!(
        counter(&work.spool(), "bounces_sent"),
        1,
        "no bounce of the bounce"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(upstream.received().len(), 1);
}

#[test]
fn an_upstream_without_pipelining_gets_one_command_at_a_time() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({
        "pipelining": false,
        "rcpt": {"bad@example.com": ["550 5.1.1 no such user"]},
    }));
    let (work, relay) = relay_for(&certs, upstream.starttls, "starttls", "");
    submit(&relay, &["ok@example.com", "bad@example.com"], "serial");
    let received = upstream.wait_for(2, WAIT);
    let original = received
        .iter()
        .find(|m| m["mail_from"] == "app@example.com")
        .unwrap();
    assert_eq!(original["rcpt_tos"], json!(["ok@example.com"]));
    assert!(
        received.iter().any(|m| m["mail_from"] == "<>"),
        "the DSN for bad@ went out too"
    );
    let rows = wait_until(WAIT, "final states", || {
        let rows = recipient_rows(&work.spool());
        rows.iter()
            .all(|r| r.state == "delivered" || r.state == "bounced")
            .then_some(rows)
    });
    let bad = rows
        .iter()
        .find(|r| r.address == "bad@example.com")
        .unwrap();
    assert_eq!(bad.state, "bounced");
}

#[test]
fn delay_warning_sends_one_delayed_dsn_and_keeps_retrying() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt": {
        "slow@example.com": ["451 4.3.0 still busy"],
    }}));
    let (work, relay) = relay_for(
        &certs,
        upstream.starttls,
        "starttls",
        "delay_warning = \"1s\"\nqueue_lifetime = \"1h\"\nretry_initial = \"500ms\"\nretry_max = \"500ms\"\n",
    );
    let id = submit(&relay, &["slow@example.com"], "slow");
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["mail_from"], "<>");
    assert_eq!(received[0]["rcpt_tos"], json!(["app@example.com"]));
    let text = String::from_utf8_lossy(&data(&received[0])).to_string();
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)"),
        "{text}"
    );
    assert!(
        text.contains("Action: delayed\r\nStatus: 4.3.0\r\n"),
        "{text}"
    );
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert!(text.contains(&id));
    // Retried on, and warned about only once.
    wait_until(WAIT, "more attempts", || {
        let rows = recipient_rows(&work.spool());
        (rows[0].attempts >= 4).then_some(())
    });
    assert_eq!(
        upstream.received().len(),
        1,
        "one warning, not one per attempt"
    );
    assert_eq!(recipient_rows(&work.spool())[0].state, "deferred");
    assert_eq!(counter(&work.spool(), "delay_warnings_sent"), 1);
    assert_eq!(counter(&work.spool(), "bounces_sent"), 0);
}
