//! One way in: every entry point (SMTP, `sendmail`, `-bs`, the hand-off of an unprivileged
//! `sendmail`) goes through one intake that judges the *repaired* envelope, adds one Received
//! header, and needs no upstream credentials. Each test here reproduces a defect an operator
//! hit on a VM whose host name is internal.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use crate::upstream::password_file;

const INTERNAL_HOST: &str = "ip-10-0-0-12.eu-central-1.compute.internal";

/// Debian cron's exact sendmail line and message (cron/do_command.c: `-FCronDaemon -i
/// -B8BITMIME -oem USER`, the message with LF line ends).
const DEBIAN_CRON_ARGS: &[&str] = &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"];
const DEBIAN_CRON_MESSAGE: &str = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@ip-10-0-0-12> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\nbackup finished\n";

/// An upstream the relay is configured for but never reaches in these tests: its password is
/// `password` (a `password_env = ...` or `password_file = ...` line).
fn upstream_with(password: &str) -> String {
    format!(
        "[[upstream]]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"starttls\"\nusername = \"AKIAEXAMPLE\"\n{password}\n"
    )
}

fn queue_json(work: &Workdir, args: &[&str]) -> Value {
    let config = work.config();
    let mut full = vec!["--config", config.to_str().unwrap(), "queue"];
    full.extend_from_slice(args);
    let output = Command::new(BIN).args(&full).output().expect("queue");
    assert!(
        output.status.success(),
        "queue {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("queue JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Defect 1: the upstream secret belongs to the daemon. `sendmail`, `mailq` and `queue list`
/// run by cron or a user without it must still work.
#[test]
fn submitting_and_reading_the_queue_need_no_upstream_credentials() {
    let work = Workdir::new(&upstream_with(
        "password_env = \"SMARTHOST_TEST_PASSWORD_ONLY_THE_DAEMON_HAS\"",
    ));
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "ops@example.com"],
        b"Subject: nightly\n\nok\n",
    );
    assert!(output.status.success(), "sendmail: {}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
    assert_eq!(spooled(&work.spool()).len(), 1);

    let mailq = work.run(&work.link("mailq"), &[], b"");
    assert!(mailq.status.success(), "mailq: {}", stderr(&mailq));
    assert!(String::from_utf8_lossy(&mailq.stdout).contains("ops@example.com"));
    let listed = queue_json(
        &work,
        &["list", "--json", "--spool", work.spool().to_str().unwrap()],
    );
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);

    // The daemon, which delivers, does need it, and says which key.
    let refused = Relay::try_start(&work)
        .err()
        .expect("serve without the password");
    assert!(
        refused.contains("upstream[0].password_env")
            && refused.contains("SMARTHOST_TEST_PASSWORD_ONLY_THE_DAEMON_HAS"),
        "{refused}"
    );
}

/// A daemon workdir that other users can reach: the directory traversable, the config
/// readable, the spool and the upstream password file private to root.
fn shared_daemon_workdir(extra: &str) -> Workdir {
    let work = Workdir::new("");
    let password = password_file(work.dir.path(), "s3cret");
    work.write_config(&format!(
        "hostname = \"{INTERNAL_HOST}\"\n{}\n[rewrite]\nsender_domain = \"example.com\"\nhelo_name = \"relay.example.com\"\n{extra}",
        upstream_with(&format!("password_file = \"{}\"", password.display()))
    ));
    std::fs::set_permissions(work.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    work
}

/// The binary as `sendmail` inside the workdir: the build directory may sit below a directory
/// that other users cannot enter (a CI checkout in a private temporary directory), so a
/// symlink to it would not run for nobody. A hard link costs nothing; a copy is the fallback.
fn reachable_sendmail(work: &Workdir) -> std::path::PathBuf {
    let path = work.dir.path().join("bin").join("sendmail");
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        if std::fs::hard_link(BIN, &path).is_err() {
            std::fs::copy(BIN, &path).unwrap();
        }
    }
    path
}

/// Runs `sendmail ARGS` as the user nobody, the way a PHP application running as www-data
/// or a user's crontab would: through su, with only the config path in its environment.
fn sendmail_as_nobody(work: &Workdir, args: &[&str], message: &str) -> Output {
    let line = format!(
        "SMARTHOST_CONFIG={} exec {} {}",
        work.config().display(),
        reachable_sendmail(work).display(),
        args.join(" ")
    );
    let mut child = Command::new("su")
        .args(["-s", "/bin/sh", "nobody", "-c", &line])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("su");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), message.as_bytes()).unwrap();
    drop(child.stdin.take());
    wait_output(child, Duration::from_secs(60))
}

/// Defects 1 and 3: a user who can read neither the spool nor the upstream's mode-600
/// password file hands the raw message to the daemon, which prepares it once: one Received
/// header, one queue ID, the original sender and the submitter recorded, and nothing on the
/// caller's stderr.
#[test]
fn unprivileged_sendmail_hands_the_raw_message_to_the_daemon_once() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: switching to the user nobody needs root (CI runs as root)");
        return;
    }
    let work = shared_daemon_workdir("[rewrite.aliases]\nroot = \"ops@example.com\"\n");
    // The daemon has the password in its file; delivery is not the point here.
    let relay = Relay::start(&work);
    let output = sendmail_as_nobody(&work, DEBIAN_CRON_ARGS, DEBIAN_CRON_MESSAGE);
    assert!(
        output.status.success(),
        "sendmail as nobody: {}",
        stderr(&output)
    );
    assert!(
        output.stderr.is_empty(),
        "a queued message prints nothing: {:?}",
        stderr(&output)
    );
    let spooled = spooled(&work.spool());
    assert_eq!(spooled.len(), 1, "exactly one queue ID");
    let m = &spooled[0];
    assert_eq!(m.original_sender, format!("nobody@{INTERNAL_HOST}"));
    assert_eq!(m.sender, "nobody@example.com");
    assert_eq!(m.submitter.as_deref(), Some("nobody"));
    assert_eq!(m.recipient_addresses(), ["ops@example.com"]);
    assert_eq!(m.original_recipients(), ["root"]);
    let body = String::from_utf8_lossy(&m.body);
    assert_eq!(body.matches("Received: ").count(), 1, "{body}");
    assert!(
        body.starts_with(&format!(
            "Received: by {INTERNAL_HOST} (smarthost, from userid 65534)"
        )),
        "{body}"
    );
    let rewrites = &rewrites(&work.spool())[0];
    assert!(
        rewrites.contains(&format!(
            "envelope from nobody@{INTERNAL_HOST} -> nobody@example.com"
        )),
        "{rewrites}"
    );
    drop(relay);

    // Daemon down and spool not writable: EX_TEMPFAIL and the reason, never a silent 0.
    let output = sendmail_as_nobody(&work, DEBIAN_CRON_ARGS, DEBIAN_CRON_MESSAGE);
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("message not queued") && text.contains("daemon at"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no terminal colour codes: {text:?}");
}

/// Defect 2, SMTP side: the `.internal` sender that identity repair makes
/// `root@example.com` is judged as `root@example.com` (the SES setup).
#[test]
fn internal_smtp_sender_is_judged_after_repair() {
    let work = Workdir::new(
        "[smtp]\nallowed_sender_domains = [\"example.com\"]\n[rewrite]\nsender_domain = \"example.com\"\n",
    );
    let relay = Relay::start(&work);
    let internal = format!("root@{INTERNAL_HOST}");
    let result = smtplib_send(relay.port(), &internal, &["ops@example.com"], b"x\r\n", &[]);
    assert_eq!(result["mail"][0], 250, "{result}");
    assert_eq!(result["data"][0], 250, "{result}");
    let m = &spooled(&work.spool())[0];
    assert_eq!(m.sender, "root@example.com");
    assert_eq!(m.original_sender, internal);
    // What repair leaves outside the allowed domains is still refused at MAIL.
    let result = smtplib_send(
        relay.port(),
        "app@evil.example",
        &["ops@example.com"],
        b"x\r\n",
        &[],
    );
    assert_eq!(result["mail"][0], 553, "{result}");
    assert!(result["mail"][1].as_str().unwrap().starts_with("5.7.1"));
    assert_eq!(spooled(&work.spool()).len(), 1);
}

/// Defect 2, sendmail side: `-f` outside `allowed_sender_domains` is refused (65) and nothing
/// is queued; the default sender of an internal host passes because it is repaired.
#[test]
fn sendmail_sender_is_judged_after_repair_too() {
    let work = Workdir::new("");
    work.write_config(&format!(
        "hostname = \"{INTERNAL_HOST}\"\n[smtp]\nallowed_sender_domains = [\"example.com\"]\n[rewrite]\nsender_domain = \"example.com\"\n"
    ));
    let output = work.run(
        &work.link("sendmail"),
        &["-f", "app@evil.example", "-i", "ops@example.com"],
        b"Subject: s\n\nx\n",
    );
    assert_eq!(output.status.code(), Some(65), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("allowed_sender_domains"),
        "{}",
        stderr(&output)
    );
    assert!(!work.spool().exists() || spooled(&work.spool()).is_empty());

    let output = work.run(
        &work.link("sendmail"),
        &["-i", "ops@example.com"],
        b"Subject: s\n\nx\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let m = &spooled(&work.spool())[0];
    assert!(m.sender.ends_with("@example.com"), "{}", m.sender);
}

/// Defect 5: the spool and the directory created for it are private to the daemon's user
/// (queued bodies are cron output), and a relative spool path in the config is refused.
#[test]
fn spool_is_private_and_its_path_absolute() {
    let work = Workdir::new("");
    let spool = work.dir.path().join("queue").join("spool.db");
    let output = Command::new(work.link("sendmail"))
        .args(["--spool", spool.to_str().unwrap(), "-i", "ops@example.com"])
        .env("SMARTHOST_CONFIG", work.config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"Subject: s\n\nsecret\n")?;
            drop(child.stdin.take());
            child.wait_with_output()
        })
        .expect("sendmail");
    assert!(output.status.success(), "{}", stderr(&output));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(spool.parent().unwrap()), 0o700, "spool directory");
    for file in ["spool.db", "spool.db-wal", "spool.db-shm"] {
        let path = spool.with_file_name(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{file} is readable by others");
        }
    }

    let relative = Workdir::new("[spool]\npath = \"var/spool.db\"\n");
    let output = Command::new(BIN)
        .args([
            "--config",
            relative.config().to_str().unwrap(),
            "check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("spool.path"),
        "{}",
        stderr(&output)
    );
}

/// The smaller promises of the issue: `--spool` after any subcommand, sendmail's `--help`,
/// `newaliases` / `-bi` as a no-op, and `-bs` failing when its input ends mid-transaction.
#[test]
fn sendmail_and_cli_compatibility() {
    let work = Workdir::new("");
    let output = work.run(&work.link("sendmail"), &["-i", "ops@example.com"], b"x\n");
    assert!(output.status.success());
    let spool = work.spool();
    let listed = queue_json(
        &work,
        &["list", "--json", "--spool", spool.to_str().unwrap()],
    );
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);

    let help = work.run(&work.link("sendmail"), &["--help"], b"");
    assert!(help.status.success(), "{}", stderr(&help));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: sendmail"));

    for (program, args) in [("newaliases", &[][..]), ("sendmail", &["-bi"][..])] {
        let output = work.run(&work.link(program), args, b"");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            stderr(&output)
        );
    }

    let bs = |input: &[u8]| work.run(&work.link("sendmail"), &["-bs"], input);
    let cut = bs(b"EHLO local\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\nSubject: cut\r\n");
    assert!(!cut.status.success(), "input ended inside DATA");
    let nothing = bs(b"EHLO local\r\n");
    assert!(!nothing.status.success(), "input ended without any message");
    let whole = bs(b"EHLO local\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\nSubject: whole\r\n\r\nx\r\n.\r\nQUIT\r\n");
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stdout)
    );
    assert_eq!(spooled(&spool).len(), 2);
}

/// Two relays side by side with one config file: the second names its own metrics port
/// instead of failing on the first's.
#[test]
fn metrics_listen_can_be_given_per_instance() {
    let port = crate::upstream::unused_port();
    let work = Workdir::new(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let first = Relay::start(&work);
    let same_config = Workdir::new(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let second = Relay::try_start_with(&same_config, &["--metrics-listen", "127.0.0.1:0"])
        .expect("second relay starts with its own metrics port");
    let logged = second.wait_for_log(&["metrics listening"]);
    assert_ne!(
        logged["address"].as_str(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    drop((first, second));
}
