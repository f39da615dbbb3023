//! Hardening against hostile clients: nothing that looks like end-of-data leaves us. A client
//! (raw socket) sends the SMTP-smuggling lookalikes; the upstream (aiosmtpd) must get one
//! message whose lines are CRLF-only, each lookalike dot kept as content; `sendmail` refuses
//! NUL like SMTP does.

use std::process::Output;
use std::time::Duration;

use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn end_of_data_lookalikes_arrive_as_content_of_one_message() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = delivering_workdir(&certs, upstream.starttls, "starttls", "", "");
    let relay = Relay::start(&work);
    let mut client = RawClient::connect(relay.addr);
    client.start_transaction("app@example.com", "ops@example.com");
    assert!(client.command("DATA").starts_with("354"));
    // Bare CR, CR-dot-CR, the CRLF-CR mix, bare LF around a dot, then a real end.
    client.send(
        b"Subject: lookalikes\r\n\r\na\r.\rMAIL FROM:<evil@x.example>\r\nb\r\n\r.\r\nc\n.\nd\r\r.\r\re\r\n.\r\n",
    );
    let reply = client.reply();
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(client.command("QUIT").starts_with("221"));
    let received = upstream.wait_for(1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        upstream.received().len(),
        1,
        "one message, nothing smuggled"
    );
    let body = data(&received[0]);
    let text = String::from_utf8_lossy(&body);
    let content = text.split_once("\r\n\r\n").expect("a body").1;
    assert_eq!(
        content,
        "a\r\n.\r\nMAIL FROM:<evil@x.example>\r\nb\r\n\r\n.\r\nc\r\n.\r\nd\r\n\r\n.\r\n\r\ne\r\n",
        "every bare line end normalised, every dot kept as content"
    );
    for (at, byte) in body.iter().enumerate() {
        if *byte == b'\r' {
            assert_eq!(body.get(at + 1), Some(&b'\n'), "no bare CR: {text:?}");
        }
        if *byte == b'\n' {
            assert_eq!(body[at - 1], b'\r', "no bare LF: {text:?}");
        }
    }
}

#[test]
fn sendmail_refuses_nul_like_smtp_does() {
    let work = Workdir::new("[rewrite.aliases]\nroot = \"ops@example.com\"\n");
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "root"],
        b"Subject: x\n\nhello\n\x00.\nworld\n",
    );
    assert_eq!(output.status.code(), Some(65), "EX_DATAERR");
    assert!(String::from_utf8_lossy(&output.stderr).contains("NUL"));
    assert!(queued_ids(&work.spool()).is_empty());
}

/// A tarpitting upstream (tests/peers/tarpit.py) until dropped.
struct Tarpit {
    child: std::process::Child,
    port: u16,
}

impl Tarpit {
    fn start(mode: &str) -> Tarpit {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(peer("tarpit.py"))
            .arg(mode)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = serde_json::from_str::<serde_json::Value>(&line).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        Tarpit { child, port }
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tarpitting_primary_costs_one_connect_timeout_then_the_secondary_delivers() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    for (mode, tls) in [
        ("silent", "none"),
        ("partial", "none"),
        ("silent", "starttls"),
        ("silent", "implicit"),
        ("partial", "starttls"),
    ] {
        let tarpit = Tarpit::start(mode);
        let before = upstream.received().len();
        let work = Workdir::new("");
        let password = password_file(work.dir.path(), PASSWORD);
        let primary = match tls {
            "none" => format!(
                "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
                tarpit.port
            ),
            _ => upstream_table(tarpit.port, tls, &password, Some(&certs.ca())),
        };
        let delivery = delivery_config(
            &[
                primary,
                upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca())),
            ],
            "connect_timeout = \"2s\"\n",
        );
        work.write_config(&format!("hostname = \"relay.test\"\n{delivery}"));
        let relay = Relay::start(&work);
        let started = std::time::Instant::now();
        let sent = smtplib_send(
            relay.port(),
            "app@example.com",
            &["ops@example.com"],
            b"From: app@example.com\r\nSubject: tarpit\r\n\r\nhi\r\n",
            &[],
        );
        assert_eq!(sent["data"][0], 250);
        upstream.wait_for(before + 1, WAIT);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "{mode}/{tls}: the tarpit held delivery for {took:?}"
        );
        let log = relay.all_logs();
        assert!(
            log.contains("upstream unusable") && log.contains("within 2s"),
            "{mode}/{tls}: the reason is logged: {log}"
        );
    }
}

#[test]
fn a_stall_after_the_final_dot_is_outcome_unknown_and_not_retried_at_once() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = delivering_workdir(
        &certs,
        upstream.starttls,
        "starttls",
        "[metrics]\nlisten = \"127.0.0.1:0\"",
        "data_timeout = \"1s\"\nretry_initial = \"4s\"\nretry_max = \"4s\"\nconnections = 1\n",
    );
    let relay = Relay::start(&work);
    let send = |subject: &str| {
        let message = format!("From: app@example.com\r\nSubject: {subject}\r\n\r\nhi\r\n");
        let sent = smtplib_send(
            relay.port(),
            "app@example.com",
            &["ops@example.com"],
            message.as_bytes(),
            &[],
        );
        assert_eq!(sent["data"][0], 250);
        queue_id(sent["data"][1].as_str().unwrap())
    };
    // A first message leaves a pooled connection behind: the stall comes on a reused one,
    // which used to be retried on a fresh connection at once.
    send("first");
    upstream.wait_for(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    upstream.script(serde_json::json!({"stall_final_reply": true}));
    let id = send("stalled");
    upstream.wait_for(2, WAIT);
    let first_copy = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        upstream.received().len(),
        2,
        "no second copy within retry_initial"
    );
    let attempts = attempt_rows(&work.spool());
    let unknown = attempts
        .iter()
        .find(|a| a.2.starts_with("outcome unknown"))
        .unwrap_or_else(|| panic!("{attempts:?} for {id}"));
    assert!(unknown.2.contains("final dot"), "{unknown:?}");
    assert_eq!(unknown.3, "deferred");
    // The retry comes, after retry_initial: a duplicate is possible (RFC 1047), a flood is not.
    upstream.wait_for(3, WAIT);
    assert!(first_copy.elapsed() >= Duration::from_millis(3500));
    let address = relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let samples = scrape(&address);
    let counted = samples["samples"].as_array().unwrap().iter().any(|s| {
        s[0].as_str()
            .unwrap()
            .starts_with("smarthost_delivery_outcome_unknown")
            && s[2].as_f64() >= Some(1.0)
    });
    assert!(counted, "{samples}");
}

#[test]
fn a_spool_that_lost_acknowledged_mail_says_so_and_a_foreign_database_is_refused() {
    let work = Workdir::new("");
    let relay = Relay::start(&work);
    for n in 0..20 {
        let sent = smtplib_send(
            relay.port(),
            "app@example.com",
            &["ops@example.com"],
            format!("Subject: m{n}\r\n\r\nx\r\n").as_bytes(),
            &[],
        );
        assert_eq!(sent["data"][0], 250);
    }
    // The mark follows the commits within a second; then the crash, and the -wal is deleted.
    std::thread::sleep(Duration::from_millis(1500));
    relay.kill9();
    let spool = work.spool();
    for suffix in ["-wal", "-shm"] {
        let mut path = spool.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    let relay = Relay::start(&work);
    let logs = relay.all_logs();
    assert!(
        logs.contains("the spool is missing") && logs.contains("commits of mail it acknowledged"),
        "{logs}"
    );
    drop(relay);

    // Someone else's database at the spool path: refused, untouched, with what it holds.
    let foreign = Workdir::new("");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); c.execute('CREATE TABLE customers (id INTEGER)'); c.commit()",
            foreign.spool().display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let error = Relay::try_start(&foreign).err().expect("serve refuses it");
    assert!(error.contains("exited with exit status: 70"), "{error}");
    assert!(
        error.contains("not a smarthost spool") && error.contains("customers"),
        "{error}"
    );
    let output = foreign.run(
        std::path::Path::new(BIN),
        &["--spool", foreign.spool().to_str().unwrap(), "mailq"],
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a smarthost spool"),
        "no readonly-database riddle: {stderr}"
    );
}

/// A private mount namespace (util-linux `unshare`), held open by a sleeping process, where a
/// test mounts a small tmpfs: a full disk without touching the machine's own file systems.
/// The mount disappears with the namespace when the holder is killed.
struct MountNamespace {
    holder: std::process::Child,
}

impl MountNamespace {
    fn new() -> MountNamespace {
        let holder = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "600"])
            .spawn()
            .expect("unshare (util-linux)");
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = format!("/proc/{}/ns/mnt", holder.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&theirs).ok().as_ref() == Some(&ours) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        MountNamespace { holder }
    }

    /// Runs `program args` inside the namespace, with the workdir's environment.
    fn run(&self, work: &Workdir, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let pid = self.holder.id().to_string();
        let mut all = vec!["-t", &pid, "-m", "--", program];
        all.extend_from_slice(args);
        work.run(std::path::Path::new("nsenter"), &all, stdin)
    }

    /// Bytes free to an unprivileged writer on the file system holding `dir`.
    fn free_bytes(&self, work: &Workdir, dir: &str) -> u64 {
        let output = self.run(work, "stat", &["-f", "-c", "%a %S", dir], b"");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        numbers.next().unwrap() * numbers.next().unwrap()
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn queue_delete_frees_a_full_disk_and_mail_is_accepted_again() {
    let work = Workdir::new("[rewrite.aliases]\nroot = \"ops@example.com\"\n");
    let disk = work.dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let disk = disk.to_str().unwrap().to_string();
    let namespace = MountNamespace::new();
    let mounted = namespace.run(
        &work,
        "mount",
        &["-t", "tmpfs", "-o", "size=16m", "tmpfs", &disk],
        b"",
    );
    assert!(mounted.status.success(), "{mounted:?}");
    let spool = format!("{disk}/spool.db");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let message = format!("Subject: filler\n\n{}", line.repeat(300)).into_bytes();
    let sendmail = |message: &[u8]| {
        namespace.run(
            &work,
            BIN,
            &["sendmail", "--spool", &spool, "-i", "root"],
            message,
        )
    };

    // Cron keeps sending until the disk is full; then something else takes what is left.
    let mut accepted = 0;
    let refused = loop {
        let output = sendmail(&message);
        if !output.status.success() {
            break output;
        }
        accepted += 1;
        assert!(accepted < 2000, "a 16 MiB disk never filled up");
    };
    assert_eq!(refused.status.code(), Some(75), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is full"), "{said}");
    assert!(accepted > 20, "only {accepted} messages fit");
    let filler = format!("cat /dev/zero > {disk}/filler");
    namespace.run(&work, "sh", &["-c", &filler], b"");
    assert!(namespace.free_bytes(&work, &disk) < 64 * 1024);

    let deleted = namespace.run(
        &work,
        BIN,
        &[
            "queue", "delete", "--spool", &spool, "--state", "all", "--yes",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&deleted.stdout);
    let stderr = String::from_utf8_lossy(&deleted.stderr);
    assert!(deleted.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{accepted} message(s) deleted")),
        "{stdout}"
    );
    assert!(stderr.contains("gave up the spool's reserve"), "{stderr}");
    // The space came back to the file system (the spool shrank), and the reserve was taken
    // again from it for next time.
    let free = namespace.free_bytes(&work, &disk);
    assert!(
        free > 4 * 1024 * 1024,
        "only {free} bytes free after the delete"
    );
    let sizes = namespace.run(
        &work,
        "stat",
        &["-c", "%n %s", &spool, &format!("{spool}.reserve")],
        b"",
    );
    let sizes = String::from_utf8_lossy(&sizes.stdout).to_string();
    let sizes: Vec<u64> = sizes
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(sizes[0] < 1024 * 1024, "spool still {} bytes", sizes[0]);
    assert_eq!(sizes[1], 8 * 1024 * 1024, "reserve taken again");

    let again = sendmail(&message);
    assert!(again.status.success(), "{again:?}");
    let listed = namespace.run(&work, BIN, &["mailq", "--spool", &spool], b"");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("in 1 Request"), "{listed}");
}
