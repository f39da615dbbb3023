//! Never an open relay: a client outside trusted_networks is refused at RCPT, the refusal is
//! logged with its address, and nothing is spooled.

use crate::support::*;

#[test]
fn untrusted_client_is_refused_at_rcpt_and_nothing_is_spooled() {
    let work = Workdir::new("[smtp]\ntrusted_networks = [\"127.0.0.1/32\"]\n");
    let relay = Relay::start(&work);
    let result = smtplib_send(
        relay.port(),
        "spammer@example.net",
        &["victim@example.org", "other@example.org"],
        b"Subject: spam\r\n\r\nbuy\r\n",
        &["--source", "127.0.0.2"],
    );
    for rcpt in result["rcpt"].as_array().unwrap() {
        assert_eq!(rcpt[0], 554, "{result}");
        assert!(
            rcpt[1]
                .as_str()
                .unwrap()
                .starts_with("5.7.1 Relay access denied")
        );
    }
    assert!(result.get("data").is_none());
    let logged = relay.wait_for_log(&["relay access denied", "127.0.0.2"]);
    assert!(logged.to_string().contains("victim@example.org"));
    assert!(spooled(&work.spool()).is_empty());

    // The trusted address is served by the same relay.
    let result = smtplib_send(
        relay.port(),
        "app@example.com",
        &["ops@example.com"],
        b"Subject: ok\r\n\r\nok\r\n",
        &["--source", "127.0.0.1"],
    );
    assert_eq!(result["data"][0], 250);
    assert_eq!(spooled(&work.spool()).len(), 1);
}

#[test]
fn sender_outside_allowed_domains_is_refused_at_mail_from() {
    let work = Workdir::new("[smtp]\nallowed_sender_domains = [\"example.com\"]\n");
    let relay = Relay::start(&work);
    let result = smtplib_send(
        relay.port(),
        "root@ip-10-0-0-12.ec2.internal",
        &["ops@example.com"],
        b"x\r\n",
        &[],
    );
    assert_eq!(result["mail"][0], 553, "{result}");
    assert!(result["mail"][1].as_str().unwrap().starts_with("5.7.1"));
    assert!(spooled(&work.spool()).is_empty());
}
