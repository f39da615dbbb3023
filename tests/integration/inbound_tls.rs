//! Inbound TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with clients written
//! independently of smarthost (Python's smtplib and ssl, swaks with IO::Socket::SSL), each
//! verifying our certificate against the test CA; the Received header's ESMTPS, version and
//! cipher; the STARTTLS-injection refusal over a real socket; certificate rotation on SIGHUP.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use crate::upstream::Certs;

fn tls_workdir(certs: &Certs) -> Workdir {
    let dir = certs.dir.path();
    Workdir::new(&format!(
        "[rewrite.aliases]\nroot = \"ops@example.com\"\n[smtp]\nimplicit_tls_listen = \"127.0.0.1:0\"\n[smtp.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    ))
}

fn implicit_port(relay: &Relay) -> u16 {
    let event = relay.wait_for_log(&["implicit TLS listening"]);
    let address: std::net::SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
    address.port()
}

fn received_header(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    let headers = &text[..end];
    headers
        .split("\r\nReceived: ")
        .next()
        .unwrap()
        .replace("\r\n\t", " ")
}

#[test]
fn starttls_and_implicit_tls_carry_mail_and_the_received_header_says_how() {
    let certs = Certs::new();
    let work = tls_workdir(&certs);
    let relay = Relay::start(&work);
    let implicit = implicit_port(&relay);
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();

    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com"],
        b"Subject: over STARTTLS\r\n\r\nhi\r\n",
        &["--starttls", ca],
    );
    assert!(
        sent["ehlo_text"].as_str().unwrap().contains("STARTTLS"),
        "{sent}"
    );
    assert_eq!(sent["starttls"][0], 220, "{sent}");
    assert!(
        !sent["ehlo_after_tls"]
            .as_str()
            .unwrap()
            .contains("STARTTLS"),
        "offered again inside TLS: {sent}"
    );
    assert_eq!(sent["data"][0], 250, "{sent}");
    let version = sent["tls"]["version"].as_str().unwrap().to_string();
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{sent}");

    let implicit_sent = smtplib_send(
        implicit,
        "app@example.com",
        &["ops@example.com"],
        b"Subject: over implicit TLS\r\n\r\nhi\r\n",
        &["--tls-on-connect", ca],
    );
    assert_eq!(implicit_sent["data"][0], 250, "{implicit_sent}");
    assert!(
        !implicit_sent["ehlo_text"]
            .as_str()
            .unwrap()
            .contains("STARTTLS"),
        "STARTTLS offered inside implicit TLS: {implicit_sent}"
    );

    // swaks (Perl, IO::Socket::SSL), STARTTLS then implicit, verifying against the CA.
    for mode in ["--tls", "--tls-on-connect"] {
        let port = if mode == "--tls" {
            relay.port()
        } else {
            implicit
        };
        let output = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &port.to_string(), mode])
            .args(["--tls-verify", "--tls-ca-path", ca])
            .args(["--from", "app@example.com", "--to", "ops@example.com"])
            .args(["--helo", "client.test", "--header", "Subject: via swaks"])
            .output()
            .expect("swaks");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "swaks {mode}: {said}");
        assert!(said.contains("Ok: queued as"), "swaks {mode}: {said}");
    }

    let messages = spooled(&work.spool());
    assert_eq!(messages.len(), 4);
    for message in &messages {
        let received = received_header(&message.body);
        assert!(received.contains(" with ESMTPS id "), "{received}");
        assert!(
            received.contains("(using TLSv1.3 with cipher TLS13_")
                || received.contains("(using TLSv1.2 with cipher TLS_ECDHE_"),
            "{received}"
        );
    }
}

#[test]
fn commands_pipelined_behind_starttls_are_refused_and_the_connection_closed() {
    let certs = Certs::new();
    let work = tls_workdir(&certs);
    let relay = Relay::start(&work);
    let mut client = RawClient::connect(relay.addr);
    assert!(client.reply().starts_with("220 "));
    assert!(client.command("EHLO client.test").contains("STARTTLS"));
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n");
    let reply = client.reply();
    assert!(
        reply.starts_with("554 5.5.0 Error: commands pipelined after STARTTLS"),
        "{reply}"
    );
    assert_eq!(client.reply(), "", "the connection stays open");
}

#[test]
fn a_new_certificate_is_served_after_sighup_and_a_broken_one_keeps_the_old() {
    let certs = Certs::new();
    let work = tls_workdir(&certs);
    let relay = Relay::start(&work);
    let implicit = implicit_port(&relay);
    let fingerprint = |ca: &std::path::Path| {
        let sent = smtplib_send(
            implicit,
            "app@example.com",
            &["ops@example.com"],
            b"Subject: x\r\n\r\nx\r\n",
            &["--tls-on-connect", ca.to_str().unwrap()],
        );
        sent["tls"]["cert_sha256"].as_str().unwrap().to_string()
    };
    let first = fingerprint(&certs.ca());

    // Rotation: a new CA and certificate over the same files, then SIGHUP.
    let rotated = Certs::new();
    for file in ["server.pem", "server.key"] {
        std::fs::copy(rotated.dir.path().join(file), certs.dir.path().join(file)).unwrap();
    }
    relay.hup();
    relay.wait_for_log(&["TLS certificate reloaded"]);
    let second = fingerprint(&rotated.ca());
    assert_ne!(first, second, "still the old certificate after SIGHUP");

    // A broken file: the running certificate stays, and the log says why.
    std::fs::write(certs.dir.path().join("server.pem"), "not a certificate\n").unwrap();
    relay.hup();
    let refused = relay.wait_for_log(&["TLS certificate not reloaded"]);
    assert!(
        refused.to_string().contains("smtp.tls.certificate"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fingerprint(&rotated.ca()), second);
}

/// testssl.sh (Debian; OpenSSL underneath) against the STARTTLS and the implicit-TLS
/// listener at once: no finding rated HIGH or CRITICAL. No DNS lookups (`--nodns none`): the
/// test CA is handed over with `--add-ca`.
///
/// `--openssl-timeout` bounds each of its `openssl s_client` calls. Without it, one probe can
/// wait for the relay's idle timeout (5 min): the client-initiated renegotiation check tries
/// again with no time limit when its first, time-limited try ended quickly. When the 220
/// greeting arrives before the client's "R", OpenSSL sends its renegotiation ClientHello,
/// rustls answers with a no_renegotiation warning (RFC 5246 §7.2.2), and OpenSSL 3.0 then
/// waits for a ServerHello that never comes. Meanwhile the relay waits for an SMTP command,
/// as it should. Killed at the bound, the probe is reported as DEBUG, not as a finding.
#[test]
fn testssl_rates_nothing_high_or_critical_on_either_listener() {
    let certs = Certs::new();
    let work = tls_workdir(&certs);
    let relay = Relay::start(&work);
    let implicit = implicit_port(&relay);
    let ca = certs.ca();
    let runs: Vec<_> = [(relay.port(), true), (implicit, false)]
        .into_iter()
        .map(|(port, starttls)| {
            let json = work.dir.path().join(format!("testssl-{port}.json"));
            let mut command = Command::new("testssl");
            command
                .args(["--quiet", "--color", "0", "--fast", "--warnings", "off"])
                .args(["--openssl-timeout", "20", "--nodns", "none", "--add-ca"])
                .arg(&ca)
                .arg("--jsonfile")
                .arg(&json);
            if starttls {
                command.args(["--starttls", "smtp"]);
            }
            let child = command
                .arg(format!("127.0.0.1:{port}"))
                // It asks questions on a terminal; with no input it takes the defaults.
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("testssl (apt-get install testssl.sh)");
            (json, child)
        })
        .collect();
    for (json, child) in runs {
        let output = wait_output(child, Duration::from_secs(240));
        let findings: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: {}",
                    json.display(),
                    String::from_utf8_lossy(&output.stdout)
                )
            }))
            .unwrap();
        assert!(findings.len() > 50, "testssl checked little: {findings:?}");
        let bad: Vec<String> = findings
            .iter()
            .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
            .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
            .collect();
        assert!(bad.is_empty(), "{}: {bad:#?}", json.display());
    }
}
