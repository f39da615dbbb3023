//! Preflight inside `serve`, against the tests' own Knot and the aiosmtpd upstream: a sender
//! domain whose SPF lacks the upstream's include is held under `enforce = "hold"` (never
//! bounced), named by `queue show` and `queue check`, and delivered once the zone is fixed
//! and the next periodic check runs; under `warn` it is delivered and the metric says FAIL.

use std::time::Duration;

use serde_json::Value;

use crate::preflight::Knot;
use crate::support::*;
use crate::upstream::*;

const TTL_ONE_ZONE: &str = "$ORIGIN daemon.test.\n$TTL 1\n@ SOA ns.daemon.test. hostmaster.daemon.test. SERIAL 3600 600 86400 1\n@ NS ns.daemon.test.\nns A 127.0.0.1\nrelay A 198.51.100.10\n@ MX 10 mx.daemon.test.\nmx A 198.51.100.20\n@ TXT \"v=spf1 include:ses.daemon.test -all\"\n_dmarc TXT \"v=DMARC1; p=none\"\nses TXT \"v=spf1 ip4:198.51.100.0/24 -all\"\n";

fn zone(serial: u32, held_record: &str) -> String {
    TTL_ONE_ZONE.replace("SERIAL", &serial.to_string())
        + &format!("held TXT \"{held_record}\"\nwarned TXT \"v=spf1 ip4:192.0.2.1 -all\"\n")
}

/// A relay delivering to `upstream` whose daemon runs preflight every 2 s under `enforce`.
fn relay_config(work: &Workdir, certs: &Certs, upstream: &Upstream, dns: u16, enforce: &str) {
    let password = password_file(work.dir.path(), PASSWORD);
    let table = upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca()))
        + "spf_include = \"ses.daemon.test\"\n";
    work.write_config(&format!(
        "hostname = \"relay.daemon.test\"\n[rewrite]\nsender_domain = \"daemon.test\"\n[smtp]\ntrusted_networks = [\"127.0.0.1/32\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n[dns]\nnameservers = [\"127.0.0.1:{dns}\"]\ntimeout = \"500ms\"\n[preflight]\ninterval = \"2s\"\nenforce = \"{enforce}\"\n{}",
        delivery_config(&[table], "")
    ));
}

fn send(relay: &Relay, from: &str) -> String {
    let message = "Subject: cron\r\nDate: Thu, 03 Dec 2026 06:00:00 +0000\r\nMessage-ID: <p@daemon.test>\r\n\r\nbackup done\r\n";
    let result = smtplib_send(
        relay.port(),
        from,
        &["ops@example.com"],
        message.as_bytes(),
        &[],
    );
    assert_eq!(result["data"][0], 250, "{result}");
    queue_id(result["data"][1].as_str().unwrap())
}

fn queue_text(work: &Workdir, args: &[&str]) -> (i32, String) {
    let output = work.run(std::path::Path::new(BIN), &[&["queue"], args].concat(), b"");
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn hold_waits_for_the_zone_to_be_fixed_and_warn_delivers_with_a_failing_metric() {
    let knot = Knot::serving(&[("daemon.test.", zone(1, "v=spf1 ip4:192.0.2.1 -all"))]);
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);

    // hold: the sender domain is open (not configured), so it is audited before its first
    // delivery; its SPF lacks include:ses.daemon.test.
    let work = Workdir::new("");
    relay_config(&work, &certs, &upstream, knot.port, "hold");
    let relay = Relay::start(&work);
    let id = send(&relay, "cron@held.daemon.test");
    let held = wait_until(Duration::from_secs(20), "the message held", || {
        let states = recipient_states(&work);
        states
            .iter()
            .any(|(i, _, state)| *i == id && state == "held")
            .then_some(states)
    });
    assert_eq!(held.len(), 1, "{held:?}");
    let (_, show) = queue_text(&work, &["show", &id]);
    assert!(
        show.contains("held by config")
            && show.contains("preflight: spf held.daemon.test authorizes")
            && show.contains("include:ses.daemon.test is missing"),
        "{show}"
    );
    // The next full run includes the failing domain: queue check turns CRITICAL.
    let check = wait_until(Duration::from_secs(20), "queue check CRITICAL", || {
        let (code, line) = queue_text(&work, &["check"]);
        (code == 2 && line.contains("held.daemon.test")).then_some(line)
    });
    assert!(
        check.contains("preflight: 1 FAIL (first: spf held.daemon.test authorizes"),
        "{check}"
    );
    assert!(upstream.received().is_empty(), "nothing sent while held");

    // Fixed: the next periodic check passes and the message goes, once.
    knot.replace_zone(
        "daemon.test.",
        &zone(2, "v=spf1 include:ses.daemon.test -all"),
    );
    let delivered = upstream.wait_for(1, Duration::from_secs(30));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["mail_from"], "cron@held.daemon.test");
    assert!(
        relay.count_logs(&["sender domain passes preflight again"]) >= 1,
        "{}",
        relay.all_logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(upstream.received().len(), 1, "delivered exactly once");
    drop(relay);

    // warn: delivered at once; the metric shows the FAIL.
    let work = Workdir::new("");
    relay_config(&work, &certs, &upstream, knot.port, "warn");
    let relay = Relay::start(&work);
    let address = relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    send(&relay, "cron@warned.daemon.test");
    assert_eq!(upstream.wait_for(2, Duration::from_secs(20)).len(), 2);
    let check = format!("spf authorizes 127.0.0.1:{}", upstream.starttls);
    let scraped: Value = wait_until(Duration::from_secs(20), "the preflight metric", || {
        let scraped = scrape(&address);
        let value = sample(
            &scraped,
            "smarthost_preflight_check",
            &[("check", &check), ("domain", "warned.daemon.test")],
        );
        (value == Some(2.0)).then_some(scraped)
    });
    let last_run = sample(
        &scraped,
        "smarthost_preflight_last_run_timestamp_seconds",
        &[],
    );
    assert!(last_run.is_some_and(|t| t > 1.7e9), "{last_run:?}");
    assert!(
        relay.count_logs(&["preflight FAIL"]) >= 1,
        "each FAIL is logged with its fix: {}",
        relay.all_logs()
    );
}
