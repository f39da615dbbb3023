//! "250 means durable": acknowledged messages survive kill -9, SIGTERM lets a message in
//! flight finish, and concurrent sessions share commits.

use std::time::Duration;

use crate::support::*;

on_both_stores!(message_acknowledged_before_kill_9_is_in_the_spool_after_restart);

fn message_acknowledged_before_kill_9_is_in_the_spool_after_restart(store: Store) {
    let work = Workdir::on(store, "");
    let relay = Relay::start(&work);
    let mut c = RawClient::connect(relay.addr);
    c.start_transaction("cron@example.com", "ops@example.com");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: survive\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\nplease\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0"));
    // No QUIT, no goodbye: the process dies right after the 250.
    relay.kill9();
    let id = queue_id(&reply);

    let restarted = Relay::start(&work);
    let spooled = spooled(&work);
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].id, id);
    assert_eq!(
        spooled[0].body_after_received(),
        b"Subject: survive\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\nplease\r\n"
    );
    // The restarted relay keeps accepting on the same spool.
    let result = smtplib_send(
        restarted.port(),
        "a@example.com",
        &["b@example.com"],
        b"x\r\n",
        &[],
    );
    assert_eq!(result["data"][0], 250);
}

#[test]
fn sigterm_lets_data_finish_and_refuses_idle_sessions() {
    let work = Workdir::new("");
    let relay = Relay::start(&work);
    let mut idle = RawClient::connect(relay.addr);
    assert!(idle.reply().starts_with("220"));
    let mut sending = RawClient::connect(relay.addr);
    sending.start_transaction("a@example.com", "b@example.com");
    assert!(sending.command("DATA").starts_with("354"));
    sending.send(b"Subject: in flight\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\nfirst half\r\n");
    nix::sys::signal::kill(relay.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        idle.reply().starts_with("421 4.3.2"),
        "idle session is told we are stopping"
    );
    sending.send(b"second half\r\n.\r\n");
    assert!(
        sending.reply().starts_with("250 2.0.0"),
        "DATA in progress completes"
    );
    assert!(sending.command("NOOP").starts_with("421 4.3.2"));
    let status = relay.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    let spooled = spooled(&work);
    assert_eq!(spooled.len(), 1);
    assert_eq!(
        spooled[0].body_after_received(),
        b"Subject: in flight\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

#[test]
fn fifty_clients_times_twenty_messages_share_commits() {
    let work = Workdir::new("");
    let relay = Relay::start(&work);
    let output = std::process::Command::new("python3")
        .args([&peer("smtp_load.py"), &relay.port().to_string(), "50", "20"])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["failures"].as_array().unwrap().len(),
        0,
        "{}",
        result["failures"]
    );
    let mut acknowledged: Vec<String> = result["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(acknowledged.len(), 1000);
    acknowledged.sort();
    let stored = queued_ids(&work.spool());
    assert_eq!(
        stored, acknowledged,
        "every acknowledged message is in the spool"
    );
    let commits = counter(&work.spool(), "enqueue_commits");
    assert_eq!(counter(&work.spool(), "messages_enqueued"), 1000);
    eprintln!("1000 messages from 50 clients in {commits} commits");
    assert!(
        commits <= 600,
        "group commit: {commits} commits for 1000 messages"
    );
}
