//! SES SMTP credentials from the IAM secret: `smarthost ses-password` against AWS's documented
//! vector and an independent implementation (tests/peers/ses_smtp_password.py), and an
//! upstream configured with `ses_region` + `aws_secret_key_file` authenticating with the
//! derived password.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use crate::upstream::*;

/// AWS's example secret access key (SES developer guide).
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

fn ours(region: &str, secret: &str) -> std::process::Output {
    let work = Workdir::new("");
    work.run(
        Path::new(BIN),
        &["ses-password", "--region", region],
        secret.as_bytes(),
    )
}

fn independent(region: &str) -> String {
    let mut child = Command::new("python3")
        .arg(peer("ses_smtp_password.py"))
        .arg(region)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(SECRET.as_bytes())
        .unwrap();
    let output = wait_output(child, Duration::from_secs(30));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn ses_password_matches_the_documented_vector_and_an_independent_implementation() {
    let output = ours("us-east-1", &format!("{SECRET}\n"));
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"
    );
    for region in ["us-west-2", "eu-west-1", "ap-southeast-2"] {
        let output = ours(region, SECRET);
        let expected = independent(region);
        assert_eq!(expected.len(), 44, "{expected}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected,
            "{region}"
        );
    }
    let output = ours("Frankfurt", SECRET);
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an AWS region"));
    let output = ours("eu-west-1", "");
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("standard input"));
}

#[test]
fn an_upstream_authenticates_with_the_password_derived_for_its_region() {
    let certs = Certs::new();
    let upstream = Upstream::start_as(&certs, 0, ACCESS_KEY_ID, &independent("eu-west-1"));
    let work = Workdir::new("");
    let secret = work.dir.path().join("aws-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let delivery = delivery_config(
        &[format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nusername = \"{ACCESS_KEY_ID}\"\nses_region = \"eu-west-1\"\naws_secret_key_file = \"{}\"\n",
            upstream.starttls,
            certs.ca().display(),
            secret.display()
        )],
        "",
    );
    work.write_config(&format!("hostname = \"relay.test\"\n{delivery}"));
    let relay = Relay::start(&work);
    let sent = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com"],
        b"From: app@example.com\r\nSubject: ses\r\n\r\nhi\r\n",
        &[],
    );
    assert_eq!(sent["data"][0], 250);
    let received = upstream.wait_for(1, Duration::from_secs(20));
    assert_eq!(received[0]["auth_user"], ACCESS_KEY_ID);
    let logs = relay.all_logs();
    assert!(!logs.contains(SECRET), "the secret is never logged");

    // Half a setting is refused with the key that is missing.
    let broken = Workdir::new("");
    broken.write_config(&format!(
        "hostname = \"relay.test\"\n[[upstream]]\nhost = \"email-smtp.eu-west-1.amazonaws.com\"\nport = 587\ntls = \"starttls\"\nusername = \"{ACCESS_KEY_ID}\"\naws_secret_key_file = \"{}\"\n",
        secret.display()
    ));
    let output = broken.run(
        Path::new(BIN),
        &[
            "--config",
            broken.config().to_str().unwrap(),
            "check-config",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("upstream[0].ses_region"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
