//! The aiosmtpd upstream (tests/peers/upstream.py) as the tests drive it: certificates from a
//! test CA, STARTTLS and implicit TLS listeners with AUTH, scripted replies, and a record of
//! every message it accepted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{Store, Workdir, peer, wait_output};

pub const USER: &str = "relay";
pub const PASSWORD: &str = "upstream-s3cret-passw0rd";

/// Certificates shared by an upstream and the relay's config (ca_file).
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("python3")
            .arg(peer("make_certs.py"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let output = wait_output(output, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "make_certs.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Certs { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

pub struct Upstream {
    child: Child,
    pub dir: PathBuf,
    pub starttls: u16,
    pub implicit: u16,
}

impl Upstream {
    pub fn start(certs: &Certs) -> Upstream {
        Upstream::start_on(certs, 0)
    }

    /// With a fixed STARTTLS port (one the relay was told about before this started).
    pub fn start_on(certs: &Certs, starttls_port: u16) -> Upstream {
        Upstream::start_as(certs, starttls_port, USER, PASSWORD)
    }

    /// Taking AUTH from `user` with `password` only.
    pub fn start_as(certs: &Certs, starttls_port: u16, user: &str, password: &str) -> Upstream {
        let dir = certs.dir.path().to_path_buf();
        let mut child = Command::new("python3")
            .arg(peer("upstream.py"))
            .arg(&dir)
            .args(["--user", user, "--password", password])
            .args(["--starttls-port", &starttls_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 upstream.py (pip install aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("upstream ports");
        let ports: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("upstream.py did not start: {line:?}"));
        Upstream {
            child,
            dir,
            starttls: ports["starttls"].as_u64().unwrap() as u16,
            implicit: ports["implicit"].as_u64().unwrap() as u16,
        }
    }

    pub fn script(&self, script: Value) {
        std::fs::write(self.dir.join("script.json"), script.to_string()).unwrap();
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Waits (bounded) until at least `count` messages arrived.
    pub fn wait_for(&self, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "upstream got {} of {count} messages within {limit:?}",
                received.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a received message.
pub fn data(message: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(message["data"].as_str().unwrap())
        .unwrap()
}

/// A password file (mode 600) in `dir`.
pub fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("upstream-password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `[delivery]` with test-sized timings (keys in `extra_delivery` win) and one `[[upstream]]`
/// table per entry.
pub fn delivery_config(upstreams: &[String], extra_delivery: &str) -> String {
    let defaults = [
        ("retry_initial", "\"1s\""),
        ("retry_max", "\"2s\""),
        ("poll_interval", "\"200ms\""),
        ("upstream_cooldown", "\"1s\""),
        ("connect_timeout", "\"5s\""),
        ("command_timeout", "\"10s\""),
        ("data_timeout", "\"10s\""),
    ];
    let mut config = format!("[delivery]\n{extra_delivery}\n");
    for (key, value) in defaults {
        if !extra_delivery.contains(&format!("{key} =")) {
            config.push_str(&format!("{key} = {value}\n"));
        }
    }
    for upstream in upstreams {
        config.push_str("[[upstream]]\n");
        config.push_str(upstream);
        config.push('\n');
    }
    config
}

/// An upstream table for 127.0.0.1:`port`.
pub fn upstream_table(port: u16, tls: &str, password_file: &Path, ca: Option<&Path>) -> String {
    let mut table = format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
        password_file.display()
    );
    if let Some(ca) = ca {
        table.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
    }
    table
}

/// A workdir whose config has `top` (top-level keys and sections; `hostname = "relay.test"`
/// unless it names one) and delivers to 127.0.0.1:`port` with the test CA and password.
pub fn delivering_workdir(
    certs: &Certs,
    port: u16,
    tls: &str,
    top: &str,
    extra_delivery: &str,
) -> Workdir {
    delivering_workdir_on(Store::Sqlite, certs, port, tls, top, extra_delivery)
}

/// As `delivering_workdir`, with the queue in `store`.
pub fn delivering_workdir_on(
    store: Store,
    certs: &Certs,
    port: u16,
    tls: &str,
    top: &str,
    extra_delivery: &str,
) -> Workdir {
    let work = Workdir::on(store, "");
    let password = password_file(work.dir.path(), PASSWORD);
    let delivery = delivery_config(
        &[upstream_table(port, tls, &password, Some(&certs.ca()))],
        extra_delivery,
    );
    let hostname = if top.contains("hostname =") {
        ""
    } else {
        "hostname = \"relay.test\"\n"
    };
    work.write_config(&format!("{hostname}{top}\n{delivery}"));
    work
}

/// A port nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
