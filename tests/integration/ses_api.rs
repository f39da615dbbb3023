//! The SES API upstream against moto (an independent implementation of the SESv2 API): mail
//! arrives with the envelope's recipients as destinations, an unverified sender is held (not
//! bounced) and goes out once verified and reloaded, and preflight checks the identity.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;
use crate::upstream::delivery_config;

const WAIT: Duration = Duration::from_secs(20);

/// Credentials from the environment, the first link of the AWS chain; nothing else in the
/// chain is consulted (no profile files, no instance metadata: the test never leaves loopback).
fn aws_env(work: &Workdir) -> Vec<(&'static str, String)> {
    let nowhere = work.dir.path().join("no-aws-files");
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", nowhere.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", nowhere.display().to_string()),
    ]
}

struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server (pip install 'moto[server]')");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .expect("moto_server's port");
        Moto { child, port }
    }

    fn helper(&self, args: &[&str]) -> String {
        let child = Command::new("python3")
            .arg(peer("moto_ses.py"))
            .arg(args[0])
            .arg(self.port.to_string())
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = wait_output(child, Duration::from_secs(30));
        assert!(
            output.status.success(),
            "moto_ses.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn sent(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.helper(&["sent"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ses_api_workdir(moto: &Moto) -> Workdir {
    let work = Workdir::new("");
    let delivery = delivery_config(
        &[format!(
            "kind = \"ses-api\"\nses_region = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n",
            moto.port
        )],
        "",
    );
    work.write_config(&format!(
        "hostname = \"relay.test\"\n[rewrite]\nsender_domain = \"example.com\"\n{delivery}"
    ));
    work
}

#[test]
fn ses_api_delivers_to_the_envelope_and_holds_an_unverified_sender() {
    let moto = Moto::start();
    let work = ses_api_workdir(&moto);
    let env = aws_env(&work);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let relay = Relay::try_start_env(&work, &[], &env).unwrap();
    // No To header: moto adds header recipients to the destinations, SES does not.
    let message = b"From: app@example.com\r\nSubject: via the API\r\n\r\nhello\r\n";
    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com", "dev@example.org"],
        message,
        &[],
    );
    assert_eq!(sent["data"][0], 250);
    let id = queue_id(sent["data"][1].as_str().unwrap());

    // Not verified yet: held as our configuration, never bounced.
    let rows = wait_until(WAIT, "held", || {
        let rows = recipient_rows(&work.spool());
        rows.iter().all(|r| r.state == "held").then_some(rows)
    });
    for row in &rows {
        assert_eq!(row.held_by.as_deref(), Some("config"), "{row:?}");
        let reason = row.last_reply.as_deref().unwrap_or_default();
        assert!(reason.contains("MessageRejected"), "{reason}");
        assert!(reason.contains("Did not have authority"), "{reason}");
    }
    assert!(moto.sent().is_empty());
    assert_eq!(counter(&work.spool(), "bounces_sent"), 0);

    // Verified, then reloaded: what was held goes out, to the envelope's recipients.
    moto.helper(&["verify", "example.com"]);
    relay.hup();
    let started = Instant::now();
    let messages = loop {
        let messages = moto.sent();
        if !messages.is_empty() || started.elapsed() > WAIT {
            break messages;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(messages.len(), 1, "{messages:?}");
    let mut destinations: Vec<&str> = messages[0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    destinations.sort();
    assert_eq!(destinations, ["dev@example.org", "ops@example.com"]);
    assert_eq!(messages[0]["source"], "app@example.com");
    let raw = messages[0]["raw_data"].as_str().unwrap();
    assert!(raw.starts_with("Received: from client.test"), "{raw}");
    assert!(raw.contains("\r\nSubject: via the API\r\n"), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\nhello\r\n"),
        "the spooled bytes: {raw}"
    );
    wait_until(WAIT, "delivered", || {
        recipient_rows(&work.spool())
            .iter()
            .all(|r| r.state == "delivered")
            .then_some(())
    });
    let attempts = attempt_rows(&work.spool());
    assert!(
        attempts
            .iter()
            .any(|a| a.1.as_deref() == Some("ses-api:eu-west-1") && a.2.contains("accepted as")),
        "{attempts:?} for {id}"
    );

    // Preflight asks the API about the sender identity; DNS goes to the tests' own Knot (its
    // zones do not hold example.com: those checks fail, the upstream's are what this reads).
    let knot = crate::preflight::Knot::start();
    let config = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(
        work.config(),
        format!(
            "{config}\n[dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = \"1s\"\n",
            knot.port
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args([
            "--config",
            work.config().to_str().unwrap(),
            "preflight",
            "--json",
        ])
        .args(["--sender-domain", "unverified.example"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, Duration::from_secs(60));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "preflight JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let checks = report["checks"].as_array().expect("checks");
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("{name} in {checks:?}"))
            .clone()
    };
    let identity = find("upstream ses-api:eu-west-1 identity example.com");
    assert_eq!(identity["status"], "PASS", "{identity}");
    let unknown = find("upstream ses-api:eu-west-1 identity unverified.example");
    assert_eq!(unknown["status"], "FAIL", "{unknown}");
    assert!(
        unknown["found"]
            .as_str()
            .unwrap()
            .contains("not an SES identity"),
        "{unknown}"
    );
    // moto has no GetAccount: the quota is reported unreadable, a warning.
    let quota = find("upstream ses-api:eu-west-1 quota");
    assert_eq!(quota["status"], "WARN", "{quota}");
    assert_eq!(output.status.code(), Some(2), "failures make exit 2");
}

#[test]
fn ses_api_without_credentials_holds_the_mail_and_says_why() {
    let moto = Moto::start();
    let work = ses_api_workdir(&moto);
    // The chain has nothing to offer: no keys, no files, instance metadata off.
    let env: Vec<(String, String)> = aws_env(&work)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Relay::try_start_env(&work, &[], &env).unwrap();
    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com"],
        b"From: app@example.com\r\nSubject: no creds\r\n\r\nhello\r\n",
        &[],
    );
    assert_eq!(sent["data"][0], 250);
    let row = wait_until(WAIT, "a final state", || {
        recipient_rows(&work.spool())
            .into_iter()
            .find(|r| r.state != "queued")
    });
    assert_eq!(
        (row.state.as_str(), row.held_by.as_deref()),
        ("held", Some("config")),
        "{row:?}"
    );
    let reason = row.last_reply.unwrap_or_default();
    assert!(reason.to_lowercase().contains("credentials"), "{reason}");
    assert!(moto.sent().is_empty());
}
