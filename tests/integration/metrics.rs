//! The metrics endpoint, scraped over HTTP during a run by Python's urllib and parsed by the
//! Prometheus client's OpenMetrics parser: its numbers agree with what the test did.

use std::time::Duration;

use crate::support::*;
use crate::upstream::*;

/// The value of the sample `name` whose labels include all of `labels`.
#[test]
fn counters_agree_with_what_was_sent() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = delivering_workdir(
        &certs,
        upstream.starttls,
        "starttls",
        "[smtp]\ntrusted_networks = [\"127.0.0.1/32\"]\n[metrics]\nlisten = \"127.0.0.1:0\"",
        "",
    );
    let relay = Relay::start(&work);
    let address = relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();

    for n in 0..3 {
        let message = format!(
            "Subject: m{n}\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <m{n}@example.com>\r\n\r\nx\r\n"
        );
        let result = smtplib_send(
            relay.port(),
            "app@example.com",
            &["ops@example.com"],
            message.as_bytes(),
            &[],
        );
        assert_eq!(result["data"][0], 250);
    }
    let refused = smtplib_send(
        relay.port(),
        "spam@example.net",
        &["victim@example.org"],
        b"x\r\n",
        &["--source", "127.0.0.2"],
    );
    assert_eq!(refused["rcpt"][0][0], 554);
    upstream.wait_for(3, Duration::from_secs(20));
    let scraped = wait_until(Duration::from_secs(20), "three deliveries counted", || {
        let scraped = scrape(&address);
        let delivered = sample(
            &scraped,
            "smarthost_recipient_deliveries_total",
            &[("outcome", "delivered"), ("class", "2xx")],
        );
        (delivered == Some(3.0)).then_some(scraped)
    });

    assert_eq!(scraped["healthz"], "ok\n");
    assert!(
        scraped["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert_eq!(
        sample(&scraped, "smarthost_messages_accepted_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &scraped,
            "smarthost_messages_refused_total",
            &[("reason", "relay")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scraped, "smarthost_smtp_sessions_total", &[]),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &scraped,
            "smarthost_queue_recipients",
            &[("state", "delivered")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &scraped,
            "smarthost_queue_recipients",
            &[("state", "queued")]
        ),
        Some(0.0)
    );
    let upstream_name = format!("127.0.0.1:{}", upstream.starttls);
    assert_eq!(
        sample(
            &scraped,
            "smarthost_upstream_up",
            &[("upstream", &upstream_name)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scraped, "smarthost_acceptance_seconds_count", &[]),
        Some(3.0)
    );
    assert_eq!(
        sample(&scraped, "smarthost_queue_seconds_count", &[]),
        Some(3.0)
    );
}
