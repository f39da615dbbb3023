//! SMTP AUTH from an untrusted address (127.0.0.2, while only 127.0.0.1/32 is trusted), with
//! clients written independently of smarthost: Python's smtplib (PLAIN, then LOGIN), swaks
//! (Perl) and msmtp (C, GnuTLS), PLAIN and LOGIN, over STARTTLS and implicit TLS. Users come from `smarthost user
//! add`, passwords on standard input. Also: relaying is refused without AUTH, AUTH before
//! STARTTLS is refused without looking at the credentials, wrong passwords and foreign
//! senders are refused, a guesser is locked out after 5 tries while others still get in, and
//! the password appears in no log line and no spool file.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;

use crate::support::*;
use crate::upstream::Certs;

const PASSWORD: &str = "correct horse battery staple";

struct AuthRelay {
    certs: Certs,
    work: Workdir,
    relay: Relay,
    implicit: u16,
}

fn start() -> AuthRelay {
    start_with("info", "127.0.0.1/32")
}

/// With the daemon logging at `level` (RUST_LOG) and trusting `trusted` only.
fn start_with(level: &str, trusted: &str) -> AuthRelay {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let users = dir.join("users.toml");
    let work = Workdir::new(&format!(
        "[smtp]\ntrusted_networks = [\"{trusted}\"]\nimplicit_tls_listen = \"127.0.0.1:0\"\n[smtp.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n[smtp.auth]\nusers_file = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        users.display()
    ));
    add_user(
        &work,
        "app1",
        &["app@example.com", "@app1.example"],
        PASSWORD,
    );
    add_user(&work, "app2", &["@app2.example"], "another long password");
    let relay = Relay::try_start_env(&work, &[], &[("RUST_LOG", level)])
        .unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let event = relay.wait_for_log(&["implicit TLS listening"]);
    let implicit: std::net::SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
    AuthRelay {
        certs,
        work,
        relay,
        implicit: implicit.port(),
    }
}

fn add_user(work: &Workdir, name: &str, senders: &[&str], password: &str) {
    let mut args = vec!["user", "add", name];
    for sender in senders {
        args.extend(["--allow-sender", sender]);
    }
    let output = work.run(
        std::path::Path::new(BIN),
        &args,
        format!("{password}\n").as_bytes(),
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains(&format!("added user {name}")), "{said}");
}

impl AuthRelay {
    fn ca(&self) -> String {
        self.certs.ca().to_str().unwrap().to_string()
    }

    fn smtplib(&self, from: &str, login: Option<(&str, &str)>) -> serde_json::Value {
        let ca = self.ca();
        let mut extra = vec!["--source", "127.0.0.2", "--starttls", &ca];
        if let Some((user, password)) = login {
            extra.extend(["--login", user, password]);
        }
        smtplib_send(
            self.relay.port(),
            from,
            &["someone@elsewhere.example"],
            format!("From: {from}\r\nSubject: auth\r\n\r\nhi\r\n").as_bytes(),
            &extra,
        )
    }

    fn swaks(&self, tls: &str, mechanism: &str, password: &str) -> std::process::Output {
        let port = if tls == "--tls" {
            self.relay.port()
        } else {
            self.implicit
        };
        Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &port.to_string(), tls])
            .args([
                "--local-interface",
                "127.0.0.2",
                "--tls-verify",
                "--tls-ca-path",
            ])
            .arg(self.ca())
            .args([
                "--auth",
                mechanism,
                "--auth-user",
                "app1",
                "--auth-password",
                password,
            ])
            .args([
                "--from",
                "app@example.com",
                "--to",
                "someone@elsewhere.example",
            ])
            .args(["--helo", "client.test", "--header", "Subject: swaks auth"])
            .output()
            .expect("swaks")
    }
}

#[test]
fn authenticated_tenants_relay_from_an_untrusted_address_as_their_own_senders_only() {
    let r = start_with("trace", "127.0.0.1/32");
    // Without AUTH the untrusted address may not relay.
    let anonymous = r.smtplib("app@example.com", None);
    assert_eq!(anonymous["rcpt"][0][0], 554, "{anonymous}");
    assert!(
        anonymous["ehlo_after_tls"]
            .as_str()
            .unwrap()
            .contains("AUTH PLAIN LOGIN")
    );

    let sent = r.smtplib("app@example.com", Some(("app1", PASSWORD)));
    assert_eq!(sent["login"][0], 235, "{sent}");
    assert_eq!(sent["data"][0], 250, "{sent}");

    let wrong = r.smtplib("app@example.com", Some(("app1", "not the password")));
    assert_eq!(wrong["login"][0], 535, "{wrong}");
    assert!(
        wrong["login"][1].as_str().unwrap().starts_with("5.7.8"),
        "{wrong}"
    );

    // app1 may not send as app2's domain, in the envelope or in the From header.
    let foreign = r.smtplib("ceo@app2.example", Some(("app1", PASSWORD)));
    assert_eq!(foreign["mail"][0], 553, "{foreign}");
    assert!(
        foreign["mail"][1]
            .as_str()
            .unwrap()
            .contains("5.7.1 <ceo@app2.example>: Sender address rejected: not owned by user app1"),
        "{foreign}"
    );
    let header = smtplib_send(
        r.relay.port(),
        "app@example.com",
        &["someone@elsewhere.example"],
        b"From: ceo@app2.example\r\nSubject: forged\r\n\r\nhi\r\n",
        &[
            "--source",
            "127.0.0.2",
            "--starttls",
            &r.ca(),
            "--login",
            "app1",
            PASSWORD,
        ],
    );
    assert_eq!(header["data"][0], 553, "{header}");

    for (tls, mechanism) in [("--tls", "PLAIN"), ("--tls-on-connect", "LOGIN")] {
        let output = r.swaks(tls, mechanism, PASSWORD);
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "swaks {tls} {mechanism}: {said}");
        assert!(said.contains("235 2.7.0"), "{said}");
    }

    // msmtp (GnuTLS) with its password from a command, as its users keep it.
    let secret = r.certs.dir.path().join("app1.password");
    std::fs::write(&secret, PASSWORD).unwrap();
    for (port, starttls, mechanism) in [
        (r.relay.port(), "on", "plain"),
        (r.implicit, "off", "login"),
    ] {
        let mut child = Command::new("msmtp")
            .args([
                "--host=127.0.0.1",
                &format!("--port={port}"),
                "--source-ip=127.0.0.2",
            ])
            .args(["--tls=on", &format!("--tls-starttls={starttls}")])
            .arg(format!("--tls-trust-file={}", r.ca()))
            .args([&format!("--auth={mechanism}"), "--user=app1"])
            .arg(format!("--passwordeval=cat {}", secret.display()))
            .args([
                "--domain=client.test",
                "--from=app@example.com",
                "someone@elsewhere.example",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msmtp (apt-get install msmtp)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"From: app@example.com\nSubject: via msmtp\n\nhi\n")
            .unwrap();
        let output = wait_output(child, std::time::Duration::from_secs(30));
        assert!(
            output.status.success(),
            "msmtp {mechanism}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let messages = spooled(&r.work.spool());
    assert_eq!(messages.len(), 5, "smtplib's, swaks' two and msmtp's two");
    for message in &messages {
        assert_eq!(message.submitter.as_deref(), Some("app1"));
        let text = String::from_utf8_lossy(&message.body);
        assert!(text.contains(" with ESMTPSA id "), "{text}");
    }
    let shown = r.work.run(
        std::path::Path::new(BIN),
        &["queue", "show", &messages[0].id],
        b"",
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("authenticated as app1"), "{shown}");

    // No credential anywhere: not in any log line (trace level), not in the spool's files.
    let logs = r.relay.all_logs();
    assert!(
        logs.contains("authenticated") && logs.contains("TRACE"),
        "the trace log was not captured"
    );
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0app1\0{PASSWORD}"));
    for secret in [PASSWORD, plain.as_str()] {
        assert!(!logs.contains(secret), "password in the log");
        for entry in std::fs::read_dir(r.work.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "password in {}", path.display());
            }
        }
    }
}

#[test]
fn auth_before_starttls_is_refused_without_looking_at_the_password() {
    let r = start();
    let mut client = RawClient::connect(r.relay.addr);
    assert!(client.reply().starts_with("220 "));
    let ehlo = client.command("EHLO client.test");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0app1\0{PASSWORD}"));
    let reply = client.command(&format!("AUTH PLAIN {plain}"));
    assert!(reply.starts_with("538 5.7.11"), "{reply}");
    assert!(
        !r.relay.all_logs().contains("authenticated"),
        "credentials sent in clear were checked"
    );
}

#[test]
fn a_guesser_is_locked_out_after_five_tries_and_others_still_get_in() {
    let r = start();
    let cpu_before = cpu_seconds(&r.relay);
    let guesses = Command::new("python3")
        .arg(peer("auth_attempts.py"))
        .args([&r.relay.port().to_string(), &r.ca()])
        .args([
            "--source",
            "127.0.0.2",
            "--user",
            "app1",
            "--password",
            "guess",
        ])
        .args(["--count", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let output = wait_output(guesses, std::time::Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let codes: Vec<u16> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(&codes[..4], &[535; 4], "{codes:?}");
    assert!(codes[4..].iter().all(|&c| c == 421 || c == 0), "{codes:?}");
    eprintln!(
        "relay CPU for 100 guesses (5 checked, 95 locked out, each a TLS handshake): {:.2} s",
        cpu_seconds(&r.relay) - cpu_before
    );
    // Only the five were worth a password check.
    let logs = r.relay.all_logs();
    assert_eq!(logs.matches("authentication failed").count(), 5, "{logs}");

    // The right password from another address still works.
    let mut extra = vec!["--source", "127.0.0.3"];
    let ca = r.ca();
    extra.extend(["--starttls", &ca, "--login", "app1", PASSWORD]);
    let sent = smtplib_send(
        r.relay.port(),
        "app@example.com",
        &["someone@elsewhere.example"],
        b"Subject: x\r\n\r\nx\r\n",
        &extra,
    );
    assert_eq!(sent["data"][0], 250, "{sent}");
    let metrics = r.relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = sample(
        &scrape(&metrics),
        "smarthost_messages_refused_total",
        &[("reason", "auth")],
    );
    assert!(
        refused >= Some(100.0),
        "every refused attempt counted: {refused:?}"
    );
}

fn nmap_open_relay(port: u16, source: &str) -> String {
    let output = Command::new("nmap")
        .args([
            "-Pn",
            "-n",
            "-sT",
            "-S",
            source,
            "-e",
            "lo",
            "-p",
            &port.to_string(),
        ])
        .args(["--script", "+smtp-open-relay", "--script-args"])
        .arg("smtp-open-relay.domain=elsewhere.example,smtp-open-relay.ip=127.0.0.1")
        .arg("127.0.0.1")
        .output()
        .expect("nmap (apt-get install nmap)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn nmap_finds_no_open_relay_from_an_untrusted_address_with_auth_offered() {
    let r = start();
    let untrusted = nmap_open_relay(r.relay.port(), "127.0.0.2");
    assert!(
        untrusted.contains("Server doesn't seem to be an open relay"),
        "{untrusted}"
    );
    assert!(
        r.relay.all_logs().contains("127.0.0.2"),
        "nmap did not come from 127.0.0.2"
    );
    // The control: the trusted address may relay anywhere, and nmap says so.
    let trusted = nmap_open_relay(r.relay.port(), "127.0.0.1");
    assert!(trusted.contains("Server is an open relay"), "{trusted}");
}

/// lettre, an SMTP client library in Rust (rustls on aws-lc-rs), from 127.0.0.1 while only
/// 10.0.0.0/8 is trusted: STARTTLS with PLAIN and implicit TLS with LOGIN are delivered; a
/// wrong password is refused with 535.
#[test]
fn lettre_authenticates_over_starttls_and_implicit_tls() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{Message, SmtpTransport, Transport};

    let r = start_with("info", "10.0.0.0/8");
    let ca = std::fs::read(r.certs.ca()).unwrap();
    let tls = || {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&ca).unwrap())
            .build_rustls()
            .unwrap()
    };
    let message = Message::builder()
        .from("app@example.com".parse().unwrap())
        .to("someone@elsewhere.example".parse().unwrap())
        .subject("via lettre")
        .body(String::from("hi"))
        .unwrap();
    let mailer = |port: u16, tls: Tls, mechanism: Mechanism, password: &str| {
        SmtpTransport::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(tls)
            .hello_name(ClientId::Domain("client.test".into()))
            .credentials(Credentials::new("app1".into(), password.into()))
            .authentication(vec![mechanism])
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build()
    };
    let starttls = mailer(
        r.relay.port(),
        Tls::Required(tls()),
        Mechanism::Plain,
        PASSWORD,
    );
    let reply = starttls.send(&message).expect("lettre over STARTTLS");
    assert!(reply.is_positive(), "{reply:?}");
    let implicit = mailer(r.implicit, Tls::Wrapper(tls()), Mechanism::Login, PASSWORD);
    implicit.send(&message).expect("lettre over implicit TLS");
    let wrong = mailer(
        r.relay.port(),
        Tls::Required(tls()),
        Mechanism::Plain,
        "wrong password!",
    );
    let error = wrong
        .send(&message)
        .expect_err("a wrong password is refused");
    assert_eq!(
        error.status().map(|code| code.to_string()),
        Some("535".into()),
        "{error}"
    );
    let messages = spooled(&r.work.spool());
    assert_eq!(messages.len(), 2);
    assert!(
        messages
            .iter()
            .all(|m| m.submitter.as_deref() == Some("app1"))
    );
}

/// User plus system CPU the relay has used so far (/proc/PID/stat, clock ticks of 1/100 s).
fn cpu_seconds(relay: &Relay) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", relay.pid())).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn user_list_shows_names_and_senders_never_hashes_and_remove_takes_a_user_out() {
    let r = start();
    let bin = std::path::Path::new(BIN);
    let listed = r.work.run(bin, &["user", "list", "--json"], b"");
    let users: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(users[0]["name"], "app1");
    assert_eq!(users[0]["allow_senders"][1], "@app1.example");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("argon2"));
    let removed = r.work.run(bin, &["user", "remove", "app2"], b"");
    assert!(removed.status.success(), "{removed:?}");
    let again = r.work.run(bin, &["user", "remove", "app2"], b"");
    assert_eq!(again.status.code(), Some(67), "no such user: EX_NOUSER");
    let short = r.work.run(
        bin,
        &["user", "add", "app3", "--allow-sender", "@x.example"],
        b"short\n",
    );
    assert_eq!(short.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    let listed = r.work.run(bin, &["user", "list"], b"");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("app1") && !text.contains("app2") && !text.contains("app3"),
        "{text}"
    );
}
