//! A private Postfix as the upstream (tests/peers/postfix_upstream.py: STARTTLS, SASL AUTH,
//! SIZE 102400, smtpd_recipient_limit = 50), relaying on to an smtp-sink: what a strict real
//! MTA sees from smarthost — SIZE on MAIL, no oversized upload, the recipient limit met with a
//! second transaction at once, cron's long lines re-encoded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(30);

struct Postfix {
    dir: TempDir,
    port: u16,
    sink: Child,
}

impl Postfix {
    fn start(certs: &Certs) -> Postfix {
        let dir = tempfile::tempdir().unwrap();
        // Postfix's daemons run as the postfix user and must reach their queue below it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sink_port = unused_port();
        let dump = dir.path().join("sink");
        std::fs::create_dir(&dump).unwrap();
        let sink = Command::new("smtp-sink")
            .args(["-u", "postfix", "-d"])
            .arg(format!("{}/%H%M%S.", dump.display()))
            .arg(format!("127.0.0.1:{sink_port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (Debian postfix)");
        std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = unused_port();
        let child = Command::new("python3")
            .arg(peer("postfix_upstream.py"))
            .arg("start")
            .arg(dir.path().join("postfix"))
            .arg("--cert")
            .arg(certs.dir.path().join("server.pem"))
            .arg("--key")
            .arg(certs.dir.path().join("server.key"))
            .args([
                "--listen",
                &port.to_string(),
                "--sink",
                &sink_port.to_string(),
            ])
            .args(["--user", USER, "--password", PASSWORD])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_output(child, Duration::from_secs(90));
        let postfix = Postfix { dir, port, sink };
        assert!(
            output.status.success(),
            "postfix_upstream.py: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            postfix.log()
        );
        postfix
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix/maillog")).unwrap_or_default()
    }

    /// Postfix's `nrcpt=` of each message it queued from `sender`: one per transaction.
    fn transactions_from(&self, sender: &str) -> Vec<usize> {
        let needle = format!("from=<{sender}>");
        self.log()
            .lines()
            .filter(|l| l.contains("qmgr") && l.contains(&needle))
            .filter_map(|l| l.split("nrcpt=").nth(1))
            .filter_map(|n| n.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// The messages the sink got, as smtp-sink dumped them.
    fn dumped(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("sink"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(peer("postfix_upstream.py"))
            .arg("stop")
            .arg(self.dir.path().join("postfix"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(|child| wait_output(child, Duration::from_secs(60)));
        let _ = self.sink.kill();
        let _ = self.sink.wait();
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    wait_until(WAIT, what, &mut check)
}

#[test]
fn a_strict_postfix_gets_size_no_oversized_upload_and_the_recipient_limit_met() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: a private Postfix needs root to start (CI runs as root)");
        return;
    }
    let certs = Certs::new();
    let postfix = Postfix::start(&certs);
    let work = Workdir::new("");
    let password = password_file(work.dir.path(), PASSWORD);
    let table = upstream_table(postfix.port, "starttls", &password, Some(&certs.ca()));
    let delivery = delivery_config(
        &[format!("{table}max_recipients = 100\n")],
        "bounce_address = \"bounces@example.com\"\n",
    );
    work.write_config(&format!(
        "hostname = \"relay.test\"\n[rewrite]\nsender_domain = \"example.com\"\n{delivery}"
    ));
    let relay = Relay::start(&work);

    // 60 recipients against smtpd_recipient_limit = 50: two transactions, one attempt each.
    let recipients: Vec<String> = (0..60).map(|n| format!("r{n:02}@example.org")).collect();
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let long = "x".repeat(3000);
    let message = format!("From: app@example.com\r\nSubject: many\r\n\r\n{long}\r\n");
    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &to,
        message.as_bytes(),
        &[],
    );
    assert_eq!(sent["data"][0], 250, "{sent}");
    let transactions = wait_for("two queue files at Postfix", || {
        let found = postfix.transactions_from("app@example.com");
        (found.iter().sum::<usize>() >= 60).then_some(found)
    });
    assert_eq!(transactions, [50, 10], "{}", postfix.log());
    let rows = wait_for("all delivered", || {
        let rows = recipient_rows(&work.spool());
        rows.iter().all(|r| r.state == "delivered").then_some(rows)
    });
    assert!(rows.iter().all(|r| r.attempts == 1), "{rows:?}");
    assert!(
        postfix.log().contains("sasl_method=PLAIN") || postfix.log().contains("sasl_method=LOGIN")
    );
    let dumped = wait_for("the sink got the message", || {
        let dumped = postfix.dumped();
        (!dumped.is_empty()).then_some(dumped)
    });
    assert!(
        dumped[0].contains("quoted-printable") && !dumped[0].contains(&long),
        "the 3,000-octet line went out re-encoded: {}",
        &dumped[0][..dumped[0].len().min(2000)]
    );

    // Postfix advertised SIZE 102400: smarthost declared SIZE= and now refuses 156 kB at DATA.
    let big = format!(
        "From: app@example.com\r\nSubject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(2400)
    );
    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.org"],
        big.as_bytes(),
        &[],
    );
    assert_eq!(sent["data"][0], 552, "{sent}");
    // Written to the spool by sendmail (which cannot know the learned limit): bounced with
    // 5.3.4, never uploaded.
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "ops@example.org"],
        big.replace("\r\n", "\n").as_bytes(),
    );
    assert!(output.status.success());
    wait_for("the DSN at Postfix", || {
        postfix
            .log()
            .lines()
            .any(|l| l.contains("qmgr") && l.contains("from=<>"))
            .then_some(())
    });
    let log = postfix.log();
    assert!(
        !log.contains("exceeds fixed limit") && !log.contains("message size"),
        "no oversized upload: {log}"
    );
    let attempts = attempt_rows(&work.spool());
    assert!(
        attempts
            .iter()
            .any(|a| a.3 == "bounced" && a.2.contains("takes at most 102400")),
        "{attempts:?}"
    );
}
