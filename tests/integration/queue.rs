//! The queue CLI against a running daemon whose upstream defers: every subcommand, its table
//! and its JSON, and that the daemon obeys what the operator did.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(20);

fn queue(work: &Workdir, args: &[&str]) -> std::process::Output {
    let mut full = vec!["queue"];
    full.extend_from_slice(args);
    work.run(Path::new(BIN), &full, b"")
}

fn queue_ok(work: &Workdir, args: &[&str]) -> String {
    let output = queue(work, args);
    assert!(
        output.status.success(),
        "queue {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn queue_json(work: &Workdir, args: &[&str]) -> Value {
    serde_json::from_str(&queue_ok(work, args)).expect("queue --json parses")
}

/// The recipient row of message `id` in `queue list --state all --json`.
fn recipient_of(work: &Workdir, id: &str) -> Option<Value> {
    let listed = queue_json(work, &["list", "--state", "all", "--json"]);
    listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["recipients"][0].clone())
}

fn submit(relay: &Relay, to: &str, subject: &str) -> String {
    let message = format!(
        "From: app@example.com\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\r\nbody\r\n"
    );
    let result = smtplib_send(
        relay.port(),
        "app@example.com",
        &[to],
        message.as_bytes(),
        &[],
    );
    queue_id(result["data"][1].as_str().unwrap())
}

on_both_stores!(operator_steers_a_deferring_queue);

fn operator_steers_a_deferring_queue(store: Store) {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt": {
        "ops@example.com": ["451 4.3.0 mailbox busy"],
        "other@example.com": ["451 4.3.0 mailbox busy"],
    }}));
    // Retries an hour apart: only the operator's `retry` makes the daemon try again.
    let work = delivering_workdir_on(
        store,
        &certs,
        upstream.starttls,
        "starttls",
        "",
        "retry_initial = \"1h\"\nretry_max = \"2h\"\n",
    );
    let relay = Relay::start(&work);
    let a = submit(&relay, "ops@example.com", "first");
    let b = submit(&relay, "other@example.com", "second");
    wait_until(WAIT, "both deferred", || {
        let a = recipient_of(&work, &a)?;
        let b = recipient_of(&work, &b)?;
        (a["state"] == "deferred" && b["state"] == "deferred").then_some(())
    });

    // list: the deferred message with the upstream's reply, as JSON and as a table.
    let listed = queue_json(&work, &["list", "--json"]);
    let first = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == a)
        .unwrap();
    assert_eq!(first["sender"], "app@example.com");
    assert_eq!(first["recipients"][0]["attempts"], 1);
    assert!(
        first["recipients"][0]["last_reply"]
            .as_str()
            .unwrap()
            .starts_with("451 4.3.0 mailbox busy")
    );
    let table = queue_ok(&work, &["list"]);
    let a_line = table
        .lines()
        .position(|l| l.starts_with(&a))
        .expect("a row per message");
    assert!(
        table
            .lines()
            .nth(a_line + 1)
            .unwrap()
            .contains("deferred  ops@example.com  attempts 1"),
        "{table}"
    );
    assert!(table.contains("451 4.3.0 mailbox busy"));
    let filtered = queue_json(&work, &["list", "--recipient", "other@", "--json"]);
    assert_eq!(filtered["messages"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["messages"][0]["id"], b);

    // retry (by unique prefix): the daemon tries again within a second.
    let started = Instant::now();
    queue_ok(&work, &["retry", &a[..12]]);
    wait_until(Duration::from_secs(5), "a second attempt", || {
        (recipient_of(&work, &a)?["attempts"] == 2).then_some(())
    });
    let reacted = started.elapsed();
    eprintln!("retry to second attempt: {reacted:?}");
    assert!(reacted < Duration::from_secs(2), "{reacted:?}");

    // delete B while its upstream still defers it.
    let deleted = queue_ok(&work, &["delete", &b, "--yes"]);
    assert!(deleted.contains(&format!("deleted {b}")), "{deleted}");

    // hold: even with the upstream back, nothing is sent.
    let held = queue_ok(&work, &["hold", &a]);
    assert!(held.starts_with("held 1 recipient(s)"), "{held}");
    upstream.script(json!({}));
    queue_ok(&work, &["retry", "--all"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(recipient_of(&work, &a).unwrap()["state"], "held");
    assert_eq!(recipient_of(&work, &a).unwrap()["held_by"], "operator");

    // release A: it arrives; B, deleted, never does.
    queue_ok(&work, &["release", &a]);
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["rcpt_tos"], json!(["ops@example.com"]));
    queue_ok(&work, &["retry", "--all"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        upstream.received().len(),
        1,
        "the deleted message is not resurrected"
    );
    assert!(recipient_of(&work, &b).is_none());

    // show: the whole history, as text and JSON.
    wait_until(WAIT, "a delivered", || {
        (recipient_of(&work, &a)?["state"] == "delivered").then_some(())
    });
    let shown = queue_json(&work, &["show", &a, "--json"]);
    let outcomes: Vec<&str> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["deferred", "deferred", "delivered"]);
    assert!(
        shown["attempts"][0]["upstream"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        shown["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: first")
    );
    let text = queue_ok(&work, &["show", &a]);
    for expected in [
        "Queue ID:   ",
        "Sender:     app@example.com",
        "Attempts:",
        "451 4.3.0 mailbox busy",
        "Headers:",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    assert!(!text.contains(PASSWORD), "no credentials in queue show");

    // stats and check.
    let stats = queue_json(&work, &["stats", "--json"]);
    assert_eq!(stats["stats"]["states"]["delivered"]["messages"], 1);
    assert!(queue_ok(&work, &["stats"]).contains("TOTAL"));
    let check = queue(&work, &["check"]);
    assert_eq!(check.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&check.stdout).starts_with("SMARTHOST OK - 0 message(s) queued")
    );
    drop(relay);
}

#[test]
fn check_exit_codes_follow_the_thresholds() {
    let work = Workdir::new("");
    let sendmail = work.link("sendmail");
    let missing = queue(&work, &["check"]);
    assert_eq!(missing.status.code(), Some(3), "UNKNOWN without a spool");
    assert!(
        String::from_utf8_lossy(&missing.stdout)
            .starts_with("SMARTHOST UNKNOWN - cannot read the queue")
    );
    for n in 0..3 {
        let output = work.run(
            &sendmail,
            &["-i", &format!("user{n}@example.com")],
            b"Subject: q\n\nx\n",
        );
        assert!(output.status.success());
    }
    let cases: [(&[&str], i32, &str); 4] = [
        (&[], 0, "SMARTHOST OK - 3 message(s)"),
        (&["--warn-depth", "3"], 1, "SMARTHOST WARNING"),
        (
            &["--warn-depth", "2", "--crit-depth", "3"],
            2,
            "SMARTHOST CRITICAL",
        ),
        (
            &["--warn-age", "1ms", "--crit-age", "1h"],
            1,
            "SMARTHOST WARNING",
        ),
    ];
    for (args, code, start) in cases {
        let mut full = vec!["check"];
        full.extend_from_slice(args);
        let output = queue(&work, &full);
        let line = String::from_utf8_lossy(&output.stdout).to_string();
        assert_eq!(output.status.code(), Some(code), "{args:?}: {line}");
        assert!(line.starts_with(start), "{line}");
        assert!(line.contains("| depth=3;"), "perfdata: {line}");
    }
}

#[test]
fn bad_ids_and_missing_spools_get_clear_errors() {
    let work = Workdir::new("");
    let missing = queue(&work, &["list"]);
    assert_eq!(missing.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such file"));
    let hold = queue(&work, &["hold", "ABC"]);
    assert_ne!(hold.status.code(), Some(0));
    assert!(!work.spool().exists(), "no command creates an empty spool");

    let sendmail = work.link("sendmail");
    for _ in 0..2 {
        assert!(
            work.run(&sendmail, &["-i", "a@example.com"], b"x\n")
                .status
                .success()
        );
    }
    let unknown = queue(&work, &["show", "ZZZZ"]);
    assert_eq!(unknown.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no message with ID ZZZZ"));
    // Both IDs start with the same time digits: the first character alone is ambiguous.
    let ambiguous = queue(&work, &["show", "1"]);
    assert_eq!(ambiguous.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("ambiguous"));
    let ids: Vec<String> = queue_json(&work, &["list", "--json"])["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_lowercase())
        .collect();
    let shown = queue_ok(&work, &["show", &ids[0]]);
    assert!(
        shown.contains("local user"),
        "lower-case IDs work too: {shown}"
    );
}
