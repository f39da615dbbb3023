//! Identity repair end to end: cron mail written on a VM whose name is
//! `ip-10-0-0-12.eu-central-1.compute.internal` reaches the upstream with a public HELO,
//! a deliverable envelope and qualified headers, and nothing else in it changed.

use std::time::Duration;

use serde_json::json;

use crate::support::*;
use crate::upstream::*;

const INTERNAL_HOST: &str = "ip-10-0-0-12.eu-central-1.compute.internal";
const WAIT: Duration = Duration::from_secs(20);

/// A relay on the internal host, delivering to `upstream`, with `rewrite` as its [rewrite].
fn internal_relay(certs: &Certs, upstream: &Upstream, rewrite: &str) -> Workdir {
    let top = format!("hostname = \"{INTERNAL_HOST}\"\n[rewrite]\n{rewrite}");
    delivering_workdir(certs, upstream.starttls, "starttls", &top, "")
}

const REWRITE: &str = "helo_name = \"relay.example.com\"\ninternal_sender = \"cron+{local}@example.com\"\n[rewrite.aliases]\nroot = \"ops@example.com\"\n";

/// (caller, sendmail flags, the headers that caller writes, the From it must become)
const CRON_FORMS: &[(&str, &str, &str, &str)] = &[
    (
        "cronie",
        "-FCronDaemon -i -odi -oem -oi -t -f root",
        "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@ip-10-0-0-12> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nAuto-Submitted: auto-generated\nPrecedence: bulk\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <AWS_SECRET_ACCESS_KEY=do-not-leak>\n",
        "From: \"Cron Daemon\" <cron+root@example.com>",
    ),
    (
        "Debian cron",
        "-FCronDaemon -i -B8BITMIME -oem root",
        "From: \"(Cron Daemon)\" <root>\nTo: root\nSubject: Cron <root@ip-10-0-0-12> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n",
        "From: \"(Cron Daemon)\" <cron+root@example.com>",
    ),
    (
        "systemd-cron",
        "-i -B 8BITMIME root",
        "From: root@ip-10-0-0-12.eu-central-1.compute.internal\nTo: root\nSubject: [ip-10-0-0-12] job backup.service failed\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n",
        "From: cron+root@example.com",
    ),
];

const CRON_BODY: &str = "backup finished: 3 files, grüße\n.\nline after a lone dot\n";

#[test]
fn cron_mail_from_an_internal_host_arrives_repaired() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = internal_relay(&certs, &upstream, REWRITE);
    let relay = Relay::start(&work);
    for (index, (caller, flags, headers, from)) in CRON_FORMS.iter().enumerate() {
        let input = format!("{headers}\n{CRON_BODY}");
        let args: Vec<&str> = flags.split(' ').collect();
        let output = work.run(&work.link("sendmail"), &args, input.as_bytes());
        assert!(
            output.status.success(),
            "{caller}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let received = upstream.wait_for(index + 1, WAIT);
        let got = &received[index];
        assert_eq!(got["helo"], "relay.example.com", "{caller}: EHLO");
        assert_eq!(
            got["mail_from"], "cron+root@example.com",
            "{caller}: MAIL FROM"
        );
        assert_eq!(
            got["rcpt_tos"],
            json!(["ops@example.com"]),
            "{caller}: RCPT TO"
        );
        let data = String::from_utf8(data(got)).unwrap();
        let (head, body) = data.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("\r\n{from}\r\n")),
            "{caller}: {head}"
        );
        assert!(
            head.contains("\r\nTo: ops@example.com\r\n"),
            "{caller}: {head}"
        );
        assert!(
            !head.contains("X-Cron-Env") && !data.contains("do-not-leak"),
            "{caller}: X-Cron-Env must go"
        );
        assert!(
            !head.contains(".internal>")
                && !head.contains("<root>")
                && !head.contains(".internal\" <"),
            "{caller}: {head}"
        );
        assert!(
            head.contains("\r\nDate: ") && head.contains("\r\nMessage-ID: <"),
            "{caller}: Date and Message-ID added"
        );
        assert_eq!(
            body,
            CRON_BODY.replace('\n', "\r\n"),
            "{caller}: body byte-exact"
        );
    }
    // Each decision is stored with its message (for `queue show`).
    let decisions = rewrites(&work.spool());
    assert_eq!(decisions.len(), CRON_FORMS.len());
    for stored in &decisions {
        let first = stored.lines().next().unwrap();
        assert!(
            first.starts_with("envelope from root") && first.ends_with(" -> cron+root@example.com"),
            "{stored}"
        );
        assert!(
            stored.contains("envelope to root -> ops@example.com"),
            "{stored}"
        );
        assert!(
            stored.contains("header To: root -> ops@example.com"),
            "{stored}"
        );
    }
    assert!(decisions[0].contains("header X-Cron-Env removed"));
    drop(relay);
}

#[test]
fn public_sender_passes_through_byte_exact() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = internal_relay(&certs, &upstream, REWRITE);
    let relay = Relay::start(&work);
    let message = "From: =?utf-8?q?App_M=C3=BCller?= <app@example.com>\r\nTo: Ops <ops@example.org>,\r\n  dev@example.org\r\nSubject: report\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <r1@example.com>\r\nX-Custom: kept\r\n\r\n\u{fc}ber 8-bit body\r\n";
    let result = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.org"],
        message.as_bytes(),
        &["--mail-option", "BODY=8BITMIME"],
    );
    assert_eq!(result["data"][0], 250);
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["mail_from"], "app@example.com");
    let data = data(&received[0]);
    assert!(
        data.ends_with(message.as_bytes()),
        "untouched: {}",
        String::from_utf8_lossy(&data)
    );
    assert!(data.starts_with(b"Received: from client.test ([127.0.0.1])"));
}

#[test]
fn internal_host_without_helo_name_uses_sender_domain_and_warns() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = internal_relay(
        &certs,
        &upstream,
        "sender_domain = \"example.com\"\n[rewrite.aliases]\nroot = \"ops@example.com\"\n",
    );
    let relay = Relay::start(&work);
    relay.wait_for_log(&["rewrite.helo_name", "is internal"]);
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "root"],
        b"Subject: hi\n\nx\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = upstream.wait_for(1, WAIT);
    assert_eq!(received[0]["helo"], "example.com");
    assert_eq!(received[0]["mail_from"], "root@example.com");
}

#[test]
fn internal_host_without_helo_name_or_sender_domain_does_not_start_delivery() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = internal_relay(&certs, &upstream, "");
    let error = Relay::try_start(&work)
        .err()
        .expect("delivery must not start");
    assert!(
        error.contains("rewrite.helo_name") && error.contains("rewrite.sender_domain"),
        "{error}"
    );
    assert!(upstream.received().is_empty());
}

#[test]
fn local_recipient_without_alias_is_refused_over_smtp_and_by_sendmail() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = internal_relay(
        &certs,
        &upstream,
        "helo_name = \"relay.example.com\"\nsender_domain = \"example.com\"\n",
    );
    let relay = Relay::start(&work);
    let result = smtplib_send(
        relay.port(),
        "app@example.com",
        &["www-data"],
        b"Subject: s\r\n\r\nx\r\n",
        &[],
    );
    assert_eq!(result["rcpt"][0][0], 550, "{result}");
    assert!(
        result["rcpt"][0][1]
            .as_str()
            .unwrap()
            .starts_with("5.1.1 <www-data>: local recipient with no alias")
    );
    let output = work.run(
        &work.link("sendmail"),
        &["-i", "root"],
        b"Subject: s\n\nx\n",
    );
    assert_eq!(output.status.code(), Some(67));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rewrite.admin_address"));
    assert!(
        spooled(&work.spool()).is_empty(),
        "nothing queued, nothing sent onward"
    );
}
