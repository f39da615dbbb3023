//! What the Debian package installs, checked by the programs that read it: the daemon under
//! systemd's protocols (NOTIFY_SOCKET, the watchdog, CREDENTIALS_DIRECTORY) as the unit starts
//! it; the man pages through man(1); the bash completion in bash; the unit through
//! systemd-analyze; the alert rules through promtool, and the build named on a live /metrics. (The package itself, lintian, and an install into
//! a clean Debian root: contrib/package-test.sh.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::upstream::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn under_systemd_serve_is_ready_only_when_listening_pings_the_watchdog_and_reads_its_credential() {
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = Workdir::new("");
    let credentials = work.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    // What systemd's LoadCredential= leaves there: the file, readable by the service only.
    let credential = credentials.join("upstream-password");
    std::fs::write(&credential, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(
        &credential,
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    let port = unused_port();
    work.write_config(&format!(
        "hostname = \"relay.test\"\n[smtp]\nlisten = \"127.0.0.1:{port}\"\n[[upstream]]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nusername = \"{USER}\"\npassword_credential = \"upstream-password\"\nca_file = \"{}\"\n",
        upstream.starttls,
        certs.ca().display()
    ));
    let notify_path = work.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = Command::new(BIN)
        .args(["--config", work.config().to_str().unwrap(), "serve"])
        .env("SMARTHOST_SPOOL", work.spool())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Every datagram until READY=1, and whether the port took a connection at that moment.
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut accepted_at_ready = None;
    while Instant::now() < deadline && accepted_at_ready.is_none() {
        if let Ok(n) = notify.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).to_string();
            if text.contains("READY=1") {
                accepted_at_ready = Some(TcpStream::connect(("127.0.0.1", port)).is_ok());
            }
            seen.push(text);
        }
    }
    assert_eq!(
        accepted_at_ready,
        Some(true),
        "READY=1 before listening: {seen:?}"
    );
    assert!(
        !seen[..seen.len() - 1].iter().any(|m| m.contains("READY")),
        "{seen:?}"
    );

    // The watchdog: WATCHDOG=1 at about half of WATCHDOG_USEC.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pings < 3 {
        if let Ok(n) = notify.recv(&mut buffer)
            && String::from_utf8_lossy(&buffer[..n]).contains("WATCHDOG=1")
        {
            pings += 1;
        }
    }
    assert_eq!(pings, 3, "three watchdog pings within 5 s");

    // The password came from the credential: AUTH succeeds and the message is delivered.
    let sent = smtplib_send(
        port,
        "app@example.com",
        &["ops@example.com"],
        b"Subject: credential\r\n\r\nhi\r\n",
        &[],
    );
    assert_eq!(sent["data"][0], 250, "{sent}");
    let received = upstream.wait_for(1, Duration::from_secs(20));
    assert_eq!(received[0]["auth_user"], USER);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut stopping = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = notify.recv(&mut buffer) {
            stopping = String::from_utf8_lossy(&buffer[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn a_credential_without_credentials_directory_is_a_clear_error() {
    let work = Workdir::new(
        "[[upstream]]\nhost = \"127.0.0.1\"\nport = 2\ntls = \"starttls\"\nusername = \"u\"\npassword_credential = \"upstream-password\"\n",
    );
    let error = Relay::try_start(&work).err().expect("must not start");
    assert!(
        error.contains("upstream-password") && error.contains("CREDENTIALS_DIRECTORY"),
        "{error}"
    );
}

#[test]
fn every_man_page_renders_and_the_bash_completion_loads() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = Command::new(BIN)
        .args(["generate", "man"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.push(repo("contrib/man/sendmail.8"));
    pages.sort();
    assert!(pages.len() >= 20, "{pages:?}");
    for page in &pages {
        let out = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "80")
            .output()
            .expect("man (apt-get install man-db)");
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {warnings}", page.display());
        assert!(warnings.trim().is_empty(), "{}: {warnings}", page.display());
        assert!(text.contains("NAME"), "{}: {text}", page.display());
    }
    let config_page = String::from_utf8_lossy(
        &Command::new("man")
            .arg("-l")
            .arg(man.join("smarthost.toml.5"))
            .env("MANWIDTH", "200")
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    for key in [
        "trusted_networks",
        "password_credential",
        "enforce",
        "lease",
    ] {
        assert!(config_page.contains(key), "smarthost.toml(5) lacks {key}");
    }

    let completions = dir.path().join("completions");
    let out = Command::new(BIN)
        .args(["generate", "completions"])
        .arg(&completions)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; complete -p smarthost",
            completions.join("smarthost.bash").display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("smarthost"));
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_2() {
    let unit = repo("contrib/systemd/smarthost.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for smarthost.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in {text}"));
    eprintln!("systemd-analyze security --offline=yes: {exposure}");
    assert!(exposure <= 2.0, "{exposure}\n{text}");

    // verify, with the binary and the man pages where the unit expects them: a copy of the
    // unit whose ExecStart is this build, and MANPATH holding the generated pages.
    let dir = tempfile::tempdir().unwrap();
    let man8 = dir.path().join("man/man8");
    let man5 = dir.path().join("man/man5");
    Command::new(BIN)
        .args(["generate", "man"])
        .arg(&man8)
        .output()
        .unwrap();
    std::fs::create_dir_all(&man5).unwrap();
    std::fs::rename(man8.join("smarthost.toml.5"), man5.join("smarthost.toml.5")).unwrap();
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("/usr/bin/smarthost", BIN);
    let copy = dir.path().join("smarthost.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let problems = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{problems}");
    let ours: Vec<&str> = problems
        .lines()
        .filter(|l| l.contains("smarthost.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn alert_rules_pass_promtool_and_metrics_name_the_build() {
    let rules = repo("contrib/monitoring/smarthost-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let work = Workdir::new("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let relay = Relay::start(&work);
    let address = relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut exposition = String::new();
    stream.read_to_string(&mut exposition).unwrap();
    assert!(
        exposition.contains(&format!(
            "smarthost_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{exposition}"
    );
    // The names the rules and the dashboard use are checked against every family the
    // daemon registers in src/telemetry/metrics.rs's tests (most have no sample until used).
}
