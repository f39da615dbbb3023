//! Preflight against a real DNS server (Knot, from Debian) serving test zones on a loopback
//! port, and against the aiosmtpd upstream: the good domain passes everything; each broken
//! case gives exactly its FAIL or WARN line and exit code.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::*;
use crate::upstream::*;

const ZONE: &str = r#"$ORIGIN test.
$TTL 60
@ SOA ns.test. hostmaster.test. 1 3600 600 86400 60
@ NS ns.test.
ns A 127.0.0.1
; The relay and the good sender domain.
relay.good A 203.0.113.10
good MX 10 mx.good.test.
mx.good A 203.0.113.20
good TXT "v=spf1 include:spf.upstream.test -all"
_dmarc.good TXT "v=DMARC1; p=reject; rua=mailto:dmarc@good.test"
spf.upstream TXT "v=spf1 ip4:198.51.100.0/24 -all"
; One broken domain per failure.
nospf MX 10 mx.good.test.
twospf TXT "v=spf1 include:spf.upstream.test -all"
twospf TXT "v=spf1 ~all"
plusall TXT "v=spf1 include:spf.upstream.test +all"
eleven TXT "v=spf1 include:l1.test include:l2.test include:l3.test include:l4.test include:l5.test include:l6.test include:l7.test include:l8.test include:l9.test include:l10.test include:spf.upstream.test -all"
wide TXT "v=spf1 ip4:10.0.0.0/8 include:spf.upstream.test -all"
noinclude TXT "v=spf1 ip4:192.0.2.1 -all"
nullmx MX 0 .
_dmarc.nospf TXT "v=DMARC1; p=none"
_dmarc.twospf TXT "v=DMARC1; p=none"
_dmarc.plusall TXT "v=DMARC1; p=none"
_dmarc.eleven TXT "v=DMARC1; p=none"
_dmarc.wide TXT "v=DMARC1; p=none"
_dmarc.noinclude TXT "v=DMARC1; p=none"
liar A 203.0.113.99
lowerdmarc TXT "v=spf1 include:spf.upstream.test -all"
_dmarc.lowerdmarc TXT "v=dmarc1; p=reject"
"#;

const REVERSE_ZONE: &str = r#"$ORIGIN 113.0.203.in-addr.arpa.
$TTL 60
@ SOA ns.test. hostmaster.test. 1 3600 600 86400 60
@ NS ns.test.
10 PTR relay.good.test.
66 PTR liar.test.
"#;

/// A Knot DNS server on a free loopback port, stopped on drop.
pub struct Knot {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Knot {
    /// The zones of this file's tests.
    pub fn start() -> Knot {
        let mut zone = ZONE.to_string();
        for n in 1..=10 {
            zone.push_str(&format!("l{n} TXT \"v=spf1 -all\"\n"));
        }
        Knot::serving(&[
            ("test.", zone),
            ("113.0.203.in-addr.arpa.", REVERSE_ZONE.to_string()),
        ])
    }

    /// Serves each `(origin, zone text)`. A zone whose text does not load is still
    /// configured, so Knot answers SERVFAIL for names in it.
    pub fn serving(zones: &[(&str, String)]) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let mut zone_list = String::new();
        for (origin, text) in zones {
            std::fs::write(dir.path().join(format!("{origin}zone")), text).unwrap();
            zone_list.push_str(&format!("  - domain: {origin}\n"));
        }
        let port = free_udp_and_tcp_port();
        let d = dir.path().display();
        let config = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\ndatabase:\n    storage: {d}\nlog:\n  - target: stderr\n    any: warning\ntemplate:\n  - id: default\n    storage: {d}\n    file: \"%s.zone\"\nzone:\n{zone_list}"
        );
        std::fs::write(dir.path().join("knot.conf"), config).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("knotd (apt-get install knot)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "knotd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Knot { child, port, dir }
    }

    /// Replaces a zone's text (with a higher SOA serial) and has Knot load it (SIGHUP).
    pub fn replace_zone(&self, origin: &str, text: &str) {
        std::fs::write(self.dir.path().join(format!("{origin}zone")), text).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (taken, then released).
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for the DNS server");
}

/// Runs `smarthost preflight` with `config` (after `[dns]` pointing at `dns_port`).
pub fn preflight(config: &str, dns_port: u16, args: &[&str]) -> (i32, Value, Duration) {
    let work = Workdir::new("");
    let spool = work.spool();
    let text = format!(
        "{config}\n[dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\ntimeout = \"500ms\"\n[spool]\npath = \"{}\"\n",
        spool.display()
    );
    work.write_config(&text);
    let mut full = vec!["preflight", "--json"];
    full.extend_from_slice(args);
    let started = Instant::now();
    let output = work.run(Path::new(BIN), &full, b"");
    let elapsed = started.elapsed();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "preflight JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.code().unwrap(), report, elapsed)
}

/// The status and finding of the check named `name`.
fn finding(report: &Value, name: &str) -> (String, String) {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"));
    (
        check["status"].as_str().unwrap().into(),
        check["found"].as_str().unwrap().into(),
    )
}

const GOOD: &str = "hostname = \"relay.good.test\"\n[rewrite]\nsender_domain = \"good.test\"\n[preflight]\npublic_ip = \"203.0.113.10\"\n";

fn with_upstream(config: &str) -> String {
    format!(
        "{config}\n[[upstream]]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nspf_include = \"spf.upstream.test\"\n"
    )
}

#[test]
fn good_domain_passes_every_check() {
    let knot = Knot::start();
    let (code, report, _) = preflight(&with_upstream(GOOD), knot.port, &["--no-upstream"]);
    let statuses: Vec<(String, String)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(statuses.iter().all(|(_, s)| s == "PASS"), "{report:#}");
    assert_eq!(code, 0);
    for name in [
        "helo",
        "rdns",
        "envelope sender",
        "spf good.test",
        "spf good.test policy",
        "spf good.test lookups",
        "spf good.test authorizes 127.0.0.1:9",
        "dmarc good.test",
        "local spool",
        "local relay",
    ] {
        assert!(
            statuses.iter().any(|(n, _)| n == name),
            "missing {name}: {statuses:?}"
        );
    }
    assert!(finding(&report, "rdns").1.contains("forward-confirmed"));
    assert_eq!(finding(&report, "dmarc good.test").1, "policy p=reject");
}

#[test]
fn each_broken_case_gives_its_line_and_exit_code() {
    let knot = Knot::start();
    // (case, config, extra args, check, status, text in the finding, exit code)
    type Case<'a> = (
        &'a str,
        String,
        Vec<&'a str>,
        &'a str,
        &'a str,
        &'a str,
        i32,
    );
    let good = with_upstream(GOOD);
    let cases: Vec<Case> = vec![
        (
            "no SPF",
            good.clone(),
            vec!["--sender-domain", "nospf.test"],
            "spf nospf.test",
            "FAIL",
            "no SPF record",
            2,
        ),
        (
            "two SPF records",
            good.clone(),
            vec!["--sender-domain", "twospf.test"],
            "spf twospf.test",
            "FAIL",
            "2 SPF records",
            2,
        ),
        (
            "+all",
            good.clone(),
            vec!["--sender-domain", "plusall.test"],
            "spf plusall.test policy",
            "FAIL",
            "+all authorizes every host",
            2,
        ),
        (
            "11 lookups",
            good.clone(),
            vec!["--sender-domain", "eleven.test"],
            "spf eleven.test lookups",
            "FAIL",
            "include:spf.upstream.test is DNS lookup 11, over the limit of 10",
            2,
        ),
        (
            "/8 in ip4",
            good.clone(),
            vec!["--sender-domain", "wide.test"],
            "spf wide.test policy",
            "WARN",
            "ip4:10.0.0.0/8 is wider than /16",
            1,
        ),
        (
            "missing include",
            good.clone(),
            vec!["--sender-domain", "noinclude.test"],
            "spf noinclude.test authorizes 127.0.0.1:9",
            "FAIL",
            "include:spf.upstream.test is missing",
            2,
        ),
        (
            "DMARC version tag in lower case (RFC 7489 6.4: not a DMARC record)",
            good.clone(),
            vec!["--sender-domain", "lowerdmarc.test"],
            "dmarc lowerdmarc.test",
            "WARN",
            "no DMARC record",
            1,
        ),
        (
            "NXDOMAIN sender",
            with_upstream(&GOOD.replace(
                "sender_domain = \"good.test\"",
                "sender_domain = \"missing.test\"\nhelo_name = \"relay.good.test\"",
            )),
            vec![],
            "envelope sender",
            "FAIL",
            "does not exist (NXDOMAIN)",
            2,
        ),
        (
            "null MX sender",
            with_upstream(&GOOD.replace(
                "sender_domain = \"good.test\"",
                "sender_domain = \"nullmx.test\"\nhelo_name = \"relay.good.test\"",
            )),
            vec![],
            "envelope sender",
            "FAIL",
            "null MX",
            2,
        ),
        (
            "PTR not forward-confirmed",
            GOOD.replace("203.0.113.10", "203.0.113.66"),
            vec![],
            "rdns",
            "FAIL",
            "does not resolve back",
            2,
        ),
        (
            "PTR through an upstream",
            good.replace("203.0.113.10", "203.0.113.66"),
            vec!["--no-upstream"],
            "rdns",
            "WARN",
            "informational",
            1,
        ),
        (
            ".internal HELO",
            "hostname = \"ip-10-0-0-12.ec2.internal\"\n".to_string(),
            vec![],
            "helo",
            "FAIL",
            "is internal",
            2,
        ),
    ];
    for (case, config, args, check, status, text, code) in cases {
        let mut args = args;
        if !args.contains(&"--no-upstream") {
            args.push("--no-upstream");
        }
        let (exit, report, _) = preflight(&config, knot.port, &args);
        let (got_status, found) = finding(&report, check);
        assert_eq!(got_status, status, "{case}: {found}");
        assert!(found.contains(text), "{case}: {found}");
        // An extra sender domain on the good setup: its one problem is the only one, but
        // for a record that is a permerror, which every check_host of it shares.
        if args.contains(&"--sender-domain") {
            let permerror = ["two SPF records", "11 lookups"].contains(&case);
            let same_domain = format!("spf {} ", check.split(' ').nth(1).unwrap());
            let others: Vec<&Value> = report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["check"] != check && c["status"] != "PASS")
                .filter(|c| {
                    let name = format!("{} ", c["check"].as_str().unwrap());
                    !(permerror && name.starts_with(&same_domain))
                })
                .collect();
            assert!(others.is_empty(), "{case}: other problems {others:#?}");
        }
        assert_eq!(exit, code, "{case}");
    }
}

#[test]
fn a_dns_server_that_drops_queries_gives_a_timeout_within_the_limit() {
    // UDP and TCP sockets that take queries and never answer.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = TcpListener::bind(("127.0.0.1", port)).ok();
    let (code, report, elapsed) = preflight(GOOD, port, &["--no-upstream"]);
    eprintln!("preflight against a silent DNS server took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let (status, found) = finding(&report, "helo");
    assert_eq!(status, "WARN", "{found}");
    assert!(
        found.contains("no answer") || found.contains("timed out") || found.contains("timeout"),
        "{found}"
    );
    assert_eq!(code, 2, "the SPF record cannot be read either: {report:#}");
    drop(udp);
}

#[test]
fn upstream_probe_passes_good_credentials_and_names_each_failure() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = Workdir::new("");
    let good = password_file(work.dir.path(), PASSWORD);
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = password_file(wrong_dir.path(), "not-the-password");
    let dead = unused_port();
    let upstreams = [
        upstream_table(upstream.starttls, "starttls", &good, Some(&certs.ca())),
        upstream_table(upstream.implicit, "implicit", &good, Some(&certs.ca())),
        upstream_table(upstream.implicit, "implicit", &wrong, Some(&certs.ca())),
        upstream_table(upstream.starttls, "starttls", &good, None),
        upstream_table(dead, "starttls", &good, Some(&certs.ca())),
    ];
    let config = format!(
        "hostname = \"relay.test\"\n{}",
        upstreams
            .iter()
            .map(|t| format!("[[upstream]]\n{t}"))
            .collect::<String>()
    );
    let knot = Knot::start();
    let (_, report, _) = preflight(&config, knot.port, &[]);
    let probes: Vec<(String, String)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"].as_str().unwrap().starts_with("upstream "))
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_string(),
                c["found"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(probes.len(), 5, "{report:#}");
    assert_eq!(probes[0].0, "PASS", "{:?}", probes[0]);
    assert!(
        probes[0].1.contains("STARTTLS") && probes[0].1.contains("AUTH as relay accepted"),
        "{:?}",
        probes[0]
    );
    assert_eq!(probes[1].0, "PASS", "{:?}", probes[1]);
    assert!(probes[1].1.contains("implicit TLS"));
    assert_eq!(probes[2].0, "FAIL");
    assert!(
        probes[2].1.contains("AUTH refused") && probes[2].1.contains("535"),
        "{:?}",
        probes[2]
    );
    assert_eq!(probes[3].0, "FAIL");
    assert!(
        probes[3].1.contains("TLS") && probes[3].1.contains("certificate"),
        "{:?}",
        probes[3]
    );
    assert_eq!(probes[4].0, "FAIL");
    assert!(probes[4].1.contains("unreachable"), "{:?}", probes[4]);
    assert!(upstream.received().is_empty(), "a probe sends nothing");
    let text = report.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains("not-the-password"),
        "no password in the report"
    );
}
