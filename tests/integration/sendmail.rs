//! The sendmail entry point as cron, at and mail clients call it: every caller's exact flag
//! line, -t, -bs driven by swaks, hand-off to the daemon, and honest exit codes.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

/// What cronie writes (LF line ends, as every Unix caller does).
const CRON_MESSAGE: &str = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@ip-10-0-0-12> /usr/local/bin/backup\nContent-Type: text/plain; charset=UTF-8\nX-Cron-Env: <SHELL=/bin/sh>\n\nbackup finished\n.\nline after a lone dot\n";

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

fn run_ok(work: &Workdir, args: &[&str], stdin: &str) {
    let output = work.run(&work.link("sendmail"), args, stdin.as_bytes());
    assert!(
        output.status.success(),
        "sendmail {args:?} exited {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "sendmail printed on stdout");
}

#[test]
fn every_callers_flag_line_spools_the_right_envelope() {
    let user = current_user();
    let default_sender = format!("{user}@relay.test");
    // (caller, flags, envelope sender, recipients)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "cronie",
            "-FCronDaemon -i -odi -oem -oi -t -f root",
            "root",
            &["root"],
        ),
        (
            "Debian cron",
            "-FCronDaemon -i -B8BITMIME -oem root",
            &default_sender,
            &["root"],
        ),
        (
            "Vixie cron",
            "-FCronDaemon -odi -oem -or0s -oi -t",
            &default_sender,
            &["root"],
        ),
        ("BusyBox crond", "-ti", &default_sender, &["root"]),
        (
            "systemd-cron",
            "-i -B 8BITMIME root",
            &default_sender,
            &["root"],
        ),
        (
            "at",
            "-i user@example.com",
            &default_sender,
            &["user@example.com"],
        ),
        (
            "GNU mail",
            "-oi -f user@host.example -t",
            "user@host.example",
            &["root"],
        ),
    ];
    for (caller, flags, sender, recipients) in cases {
        let work = Workdir::new("[rewrite.aliases]\nroot = \"ops@example.com\"\n");
        let args: Vec<&str> = flags.split(' ').collect();
        run_ok(&work, &args, CRON_MESSAGE);
        let spooled = spooled(&work.spool());
        assert_eq!(spooled.len(), 1, "{caller}");
        let m = &spooled[0];
        assert_eq!(&m.original_sender, sender, "{caller}: sender");
        assert_eq!(m.original_recipients(), *recipients, "{caller}: recipients");
        let routed = if *recipients == ["root"] {
            "ops@example.com"
        } else {
            recipients[0]
        };
        assert_eq!(
            m.recipient_addresses(),
            [routed],
            "{caller}: routed recipients"
        );
        assert_eq!(
            m.submitter.as_deref(),
            Some(user.as_str()),
            "{caller}: submitter"
        );
        assert_eq!(m.client_addr, None);
        let body = String::from_utf8(m.body.clone()).unwrap();
        assert!(
            body.starts_with("Received: by relay.test (smarthost, from userid "),
            "{caller}"
        );
        // -i (or -oi) keeps the lone dot line; every line end is CRLF.
        assert!(
            body.ends_with("\r\n\r\nbackup finished\r\n.\r\nline after a lone dot\r\n"),
            "{caller}: {body:?}"
        );
    }
}

#[test]
fn without_i_a_lone_dot_ends_the_message() {
    let work = Workdir::new("");
    run_ok(
        &work,
        &["ops@example.com"],
        "Subject: s\n\nbefore\n.\nafter\n",
    );
    let m = &spooled(&work.spool())[0];
    assert!(m.body.ends_with(b"\r\nbefore\r\n"));
}

#[test]
fn t_adds_header_recipients_to_command_line_ones_and_drops_bcc() {
    let message = "From: app@example.com\nTo: One <one@example.com>\nCc: two@example.com\nBcc: secret@example.com\nSubject: s\n\nbody\n";
    let work = Workdir::new("");
    run_ok(&work, &["-t", "-i"], message);
    let m = &spooled(&work.spool())[0];
    assert_eq!(
        m.recipient_addresses(),
        ["one@example.com", "two@example.com", "secret@example.com"]
    );
    let body = String::from_utf8_lossy(&m.body);
    assert!(
        !body.contains("Bcc:") && !body.contains("secret@"),
        "{body}"
    );

    let work = Workdir::new("");
    run_ok(
        &work,
        &["-t", "-i", "extra@example.com,more@example.com"],
        message,
    );
    let m = &spooled(&work.spool())[0];
    assert_eq!(
        m.recipient_addresses(),
        [
            "extra@example.com",
            "more@example.com",
            "one@example.com",
            "two@example.com",
            "secret@example.com"
        ]
    );
}

#[test]
fn null_sender_and_full_name() {
    let work = Workdir::new("");
    run_ok(
        &work,
        &["-f", "", "-i", "ops@example.com"],
        "Subject: bounce\n\nx\n",
    );
    run_ok(
        &work,
        &["-f", "<>", "-i", "ops@example.com"],
        "Subject: bounce\n\nx\n",
    );
    run_ok(
        &work,
        &["-F", "Backup Job", "-i", "ops@example.com"],
        "Subject: no from\n\nx\n",
    );
    let spooled = spooled(&work.spool());
    assert_eq!(spooled[0].sender, "");
    assert_eq!(spooled[1].sender, "");
    let body = String::from_utf8_lossy(&spooled[2].body);
    assert!(
        body.contains(&format!(
            "From: \"Backup Job\" <{}@relay.test>\r\n",
            current_user()
        )),
        "{body}"
    );
}

#[test]
fn bad_flags_and_missing_recipients_are_usage_errors() {
    let work = Workdir::new("");
    for args in [
        &["-x", "root"][..],
        &["-bd"],
        &["-f"],
        &["-i"],
        &["-t", "-i"],
    ] {
        let output = work.run(&work.link("sendmail"), args, b"Subject: none\n\nx\n");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} says why");
    }
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "user%evil@example.com"],
        b"x\n",
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("'%' routing"));
    assert!(!work.spool().exists() || spooled(&work.spool()).is_empty());
}

/// A spool path that cannot be created (its parent is a regular file), even for root.
fn unwritable_spool(work: &Workdir) -> PathBuf {
    let blocker = work.dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    blocker.join("spool.db")
}

/// A second workdir whose config points `sendmail` at the running daemon's hand-off socket.
fn client_of(daemon: &Workdir) -> Workdir {
    Workdir::client_of(&daemon.socket(), "")
}

#[test]
fn unwritable_spool_hands_over_to_the_daemon_or_exits_75() {
    let daemon = Workdir::new("");
    let relay = Relay::start(&daemon);
    let client = client_of(&daemon);
    let bad_spool = unwritable_spool(&client);
    let bad = bad_spool.to_str().unwrap();
    let output = client.run(
        &client.link("sendmail"),
        &[
            "--spool",
            bad,
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "ops@example.com",
        ],
        CRON_MESSAGE.as_bytes(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spooled = spooled(&daemon.spool());
    assert_eq!(spooled.len(), 1, "the daemon queued it");
    assert_eq!(spooled[0].recipient_addresses(), ["ops@example.com"]);
    assert_eq!(spooled[0].sender, format!("{}@relay.test", current_user()));
    assert!(
        String::from_utf8_lossy(&spooled[0].body)
            .contains("\r\nbackup finished\r\n.\r\nline after")
    );

    // Daemon down as well: EX_TEMPFAIL and the reason, never a silent 0.
    drop(relay);
    let output = client.run(
        &client.link("sendmail"),
        &["--spool", bad, "-i", "ops@example.com"],
        b"x\n",
    );
    assert_eq!(output.status.code(), Some(75));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("message not queued") && stderr.contains("daemon at"),
        "{stderr}"
    );
}

fn swaks_bs(work: &Workdir, sendmail_command: &str) -> std::process::Output {
    let output = Command::new("swaks")
        .args([
            "--pipe",
            sendmail_command,
            "--from",
            "app@example.com",
            "--to",
            "ops@example.com",
        ])
        .args([
            "--header",
            "Subject: via swaks",
            "--body",
            ".dotted first line\nsecond",
        ])
        .env("SMARTHOST_CONFIG", work.config())
        .env("SMARTHOST_SPOOL", work.spool())
        .output()
        .expect("swaks (apt-get install swaks)");
    assert!(
        output.status.success(),
        "swaks: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

#[test]
fn bs_speaks_smtp_on_a_pipe_with_daemon_down_and_up() {
    // Daemon down: -bs writes the spool itself.
    let work = Workdir::new("");
    let link = work.link("sendmail");
    swaks_bs(&work, &format!("{} -bs", link.display()));
    let spooled_direct = spooled(&work.spool());
    assert_eq!(spooled_direct.len(), 1);
    assert_eq!(spooled_direct[0].sender, "app@example.com");
    assert_eq!(spooled_direct[0].recipient_addresses(), ["ops@example.com"]);
    assert_eq!(
        spooled_direct[0].submitter.as_deref(),
        Some(current_user().as_str())
    );
    assert!(
        String::from_utf8_lossy(&spooled_direct[0].body)
            .contains("\r\n\r\n.dotted first line\r\nsecond\r\n")
    );

    // Daemon up, spool not writable by this caller: the session is relayed to the daemon.
    let daemon = Workdir::new("");
    let _relay = Relay::start(&daemon);
    let client = client_of(&daemon);
    let bad_spool = unwritable_spool(&client);
    swaks_bs(
        &client,
        &format!(
            "{} --spool {} -bs",
            client.link("sendmail").display(),
            bad_spool.display()
        ),
    );
    let via_daemon = spooled(&daemon.spool());
    assert_eq!(via_daemon.len(), 1);
    assert_eq!(via_daemon[0].recipient_addresses(), ["ops@example.com"]);
}
