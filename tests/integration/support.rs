//! Helpers for the integration tests: run the real binary in a temporary directory, talk to it
//! with real clients (Python's smtplib, swaks) or raw bytes, and look into its spool the way an
//! operator does (`smarthost queue ... --json`); only the counters, which no command shows,
//! are read with SQL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_smarthost");
/// The lean binary the package links `sendmail`, `mailq` and `newaliases` to.
pub const SENDMAIL_BIN: &str = env!("CARGO_BIN_EXE_smarthost-sendmail");
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// Which store a test's relay keeps its queue in.
#[derive(Clone, Copy)]
pub enum Store<'a> {
    /// The SQLite file at `Workdir::spool`.
    Sqlite,
    /// A PostgreSQL server of the test's own; the SQLite file is then the node's maildrop.
    Postgres(&'a crate::postgres::Postgres),
}

impl Store<'_> {
    fn url(&self) -> Option<String> {
        match self {
            Store::Sqlite => None,
            Store::Postgres(pg) => Some(pg.url()),
        }
    }
}

/// A temporary directory with a config file and a spool path in it.
pub struct Workdir {
    pub dir: TempDir,
    /// `spool.url`, written into every config of this workdir.
    store_url: Option<String>,
}

impl Workdir {
    /// `extra` is appended to a config that names the host `relay.test` and puts the local
    /// hand-off socket in this directory.
    pub fn new(extra: &str) -> Workdir {
        Workdir::on(Store::Sqlite, extra)
    }

    /// As `new`, with the queue in `store`.
    pub fn on(store: Store, extra: &str) -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("sendmail.sock");
        Workdir::with_socket(dir, &socket, extra, store.url())
    }

    /// A workdir whose `sendmail` hands off to the daemon listening on `socket`.
    pub fn client_of(socket: &Path, extra: &str) -> Workdir {
        Workdir::with_socket(tempfile::tempdir().expect("tempdir"), socket, extra, None)
    }

    fn with_socket(dir: TempDir, socket: &Path, extra: &str, store_url: Option<String>) -> Workdir {
        let work = Workdir { dir, store_url };
        work.write_config_with_socket(&format!("hostname = \"relay.test\"\n{extra}"), socket);
        work
    }

    /// Replaces the config file with `text`, plus this workdir's hand-off socket (so that no
    /// test's daemon ever binds the system's default socket).
    pub fn write_config(&self, text: &str) {
        self.write_config_with_socket(text, &self.socket());
    }

    fn write_config_with_socket(&self, text: &str, socket: &Path) {
        let mut config = format!("{text}\n[sendmail]\nsocket = \"{}\"\n", socket.display());
        // The daemon's preflight would ask the machine's own resolver: only tests that
        // configure it (with their own DNS server) have it.
        if !text.contains("[preflight]") {
            config.push_str("[preflight]\ninterval = \"0s\"\n");
        }
        if let Some(url) = &self.store_url {
            config.push_str(&format!("[spool]\nurl = \"{url}\"\n"));
        }
        std::fs::write(self.config(), config).expect("write config");
    }

    /// The local hand-off socket a relay started from this workdir listens on.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sendmail.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("smarthost.toml")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool.db")
    }

    /// A link named `name` (sendmail, mailq) to the binary the package links it to, as an
    /// operator would have it installed.
    pub fn link(&self, name: &str) -> PathBuf {
        let link = self.dir.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(SENDMAIL_BIN, &link).expect("symlink");
        }
        link
    }

    /// Runs `program args` with this workdir's config and spool in the environment.
    pub fn run(&self, program: &Path, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(program)
            .args(args)
            .env("SMARTHOST_CONFIG", self.config())
            .env("SMARTHOST_SPOOL", self.spool())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let output = wait_output(child, Duration::from_secs(60));
        let _ = writer.join();
        output
    }
}

/// Waits for a child with a deadline; kills it if the deadline passes.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A running `smarthost serve`, on a port the OS picked.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Relay {
    pub fn start(work: &Workdir) -> Relay {
        Relay::try_start(work).unwrap_or_else(|error| panic!("relay did not start: {error}"))
    }

    /// Starts the relay and waits for its "listening" log line; on failure returns its stderr.
    pub fn try_start(work: &Workdir) -> Result<Relay, String> {
        Relay::try_start_with(work, &[])
    }

    /// As `try_start`, with more `serve` arguments.
    pub fn try_start_with(work: &Workdir, serve_args: &[&str]) -> Result<Relay, String> {
        Relay::try_start_env(work, serve_args, &[])
    }

    /// As `try_start_with`, with more environment variables for the daemon.
    pub fn try_start_env(
        work: &Workdir,
        serve_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Relay, String> {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(work.config())
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--spool",
            ])
            .arg(work.spool())
            .args(serve_args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    let _ = address_tx.send(Err(line));
                    continue;
                };
                if event["message"] == "listening" {
                    let _ =
                        address_tx.send(Ok(event["address"].as_str().unwrap_or("").to_string()));
                }
                sink.lock().unwrap().push(event);
            }
        });
        let deadline = Instant::now() + STARTUP_LIMIT;
        let mut other = Vec::new();
        while Instant::now() < deadline {
            match address_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(address)) => {
                    return Ok(Relay {
                        child,
                        addr: address.parse().expect("listening address"),
                        logs,
                    });
                }
                Ok(Err(line)) => other.push(line),
                Err(_) => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        std::thread::sleep(Duration::from_millis(100));
                        while let Ok(Err(line)) = address_rx.try_recv() {
                            other.push(line);
                        }
                        return Err(format!("exited with {status}: {}", other.join("\n")));
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("no listening line within the startup limit".into())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGHUP: reload the configuration.
    pub fn hup(&self) {
        kill(self.pid(), Signal::SIGHUP).expect("SIGHUP");
    }

    /// Every log event so far, as JSON text (to check that secrets never appear).
    pub fn all_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|event| event.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// kill -9: no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for a log event whose message and fields contain every `needle`.
    /// How many log events so far have every one of `needles`.
    pub fn count_logs(&self, needles: &[&str]) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|event| needles.iter().all(|n| event.to_string().contains(n)))
            .count()
    }

    pub fn wait_for_log(&self, needles: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|event| needles.iter().all(|n| event.to_string().contains(n)))
            {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `message` with Python's smtplib; returns the JSON of every reply it saw.
pub fn smtplib_send(port: u16, from: &str, to: &[&str], message: &[u8], extra: &[&str]) -> Value {
    let mut args = vec![
        peer("smtp_send.py"),
        port.to_string(),
        "--from".into(),
        from.into(),
    ];
    for recipient in to {
        args.push("--to".into());
        args.push(recipient.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new("python3")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut child = child;
    child.stdin.take().unwrap().write_all(message).unwrap();
    let output = wait_output(child, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "smtp_send.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("smtp_send.py JSON")
}

/// One sample of a scrape: the value of `name` with `labels`.
pub fn sample(scrape: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape["samples"].as_array().unwrap().iter().find_map(|s| {
        let matches = s[0] == name && labels.iter().all(|(k, v)| s[1][k] == *v);
        matches.then(|| s[2].as_f64().unwrap())
    })
}

/// The metrics at `address`, as the Prometheus client's OpenMetrics parser reads them
/// (tests/peers/scrape.py).
pub fn scrape(address: &str) -> Value {
    let output = Command::new("python3")
        .args([&peer("scrape.py"), address])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "scrape.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn peer(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The queue ID in a `250 2.0.0 Ok: queued as ID` reply.
pub fn queue_id(reply: &str) -> String {
    reply
        .rsplit("queued as ")
        .next()
        .expect("queued as")
        .trim()
        .to_string()
}

/// A raw SMTP connection, for the protocol abuse a polite client library will not commit.
pub struct RawClient {
    reader: BufReader<TcpStream>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        RawClient {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// One complete reply (all its lines), or "" when the server closed the connection.
    pub fn reply(&mut self) -> String {
        let mut reply = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return reply,
                Ok(_) => {}
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        reply
    }

    /// Sends one command line and returns the reply.
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Greeting, EHLO, MAIL, RCPT: ready for DATA.
    pub fn start_transaction(&mut self, from: &str, to: &str) {
        assert!(self.reply().starts_with("220 "));
        assert!(self.command("EHLO raw.test").starts_with("250"));
        assert!(
            self.command(&format!("MAIL FROM:<{from}>"))
                .starts_with("250")
        );
        assert!(self.command(&format!("RCPT TO:<{to}>")).starts_with("250"));
    }
}

/// What the spool holds for one message.
#[derive(Debug)]
pub struct Spooled {
    pub id: String,
    pub sender: String,
    pub original_sender: String,
    pub submitter: Option<String>,
    pub client_addr: Option<String>,
    pub body_type: String,
    pub body: Vec<u8>,
    /// (address, state, attempts, next_attempt_at, original address)
    pub recipients: Vec<(String, String, i64, i64, String)>,
}

impl Spooled {
    pub fn recipient_addresses(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.0.clone()).collect()
    }

    /// The recipients as the client gave them, before aliases.
    pub fn original_recipients(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.4.clone()).collect()
    }

    /// The body after our Received header: what the client sent.
    pub fn body_after_received(&self) -> &[u8] {
        let text = &self.body;
        assert!(text.starts_with(b"Received: "), "no Received header first");
        let mut index = 0;
        // The header ends at the first CRLF not followed by folding white space.
        while let Some(pos) = text[index..].windows(2).position(|w| w == b"\r\n") {
            let end = index + pos + 2;
            if !matches!(text.get(end), Some(b' ' | b'\t')) {
                return &text[end..];
            }
            index = end;
        }
        panic!("unterminated Received header");
    }
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

async fn open_spool(spool: &Path) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(spool)
        .read_only(true)
        .connect()
        .await
        .expect("open spool")
}

/// Where `smarthost queue` looks: a SQLite spool file (`--spool PATH`), or a workdir's
/// configured store (its config, which names a PostgreSQL store when it has one).
pub trait QueueSource {
    fn queue_args(&self) -> Vec<std::ffi::OsString>;
}

impl QueueSource for Path {
    fn queue_args(&self) -> Vec<std::ffi::OsString> {
        vec!["--spool".into(), self.into()]
    }
}

impl QueueSource for PathBuf {
    fn queue_args(&self) -> Vec<std::ffi::OsString> {
        self.as_path().queue_args()
    }
}

impl QueueSource for Workdir {
    fn queue_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = self.spool().queue_args();
        args.extend(["--config".into(), self.config().into()]);
        args
    }
}

/// Runs `smarthost queue ARGS --json` on `spool` (the operator's view, not our own SQL).
pub fn queue_json_of(spool: &(impl QueueSource + ?Sized), args: &[&str]) -> Value {
    let output = Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--json")
        .args(spool.queue_args())
        .output()
        .expect("smarthost queue");
    assert!(
        output.status.success(),
        "queue {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("queue --json")
}

/// Every message in the spool, oldest first, as `queue list --state all --json` lists it.
fn listed(spool: &(impl QueueSource + ?Sized)) -> Vec<Value> {
    match queue_json_of(spool, &["list", "--state", "all"])["messages"].as_array() {
        Some(messages) => messages.clone(),
        None => Vec::new(),
    }
}

/// `queue show ID --json --body`.
fn shown(spool: &(impl QueueSource + ?Sized), id: &str) -> Value {
    queue_json_of(spool, &["show", id, "--body"])
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// (message ID, recipient, state) of every recipient in the spool, as `queue list` shows them.
pub fn recipient_states(spool: &(impl QueueSource + ?Sized)) -> Vec<(String, String, String)> {
    listed(spool)
        .iter()
        .flat_map(|m| {
            let id = text(&m["id"]);
            m["recipients"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (id.clone(), text(&r["address"]), text(&r["state"])))
        })
        .collect()
}

/// The IDs of every message in the spool, oldest first.
pub fn queued_ids(spool: &(impl QueueSource + ?Sized)) -> Vec<String> {
    listed(spool).iter().map(|m| text(&m["id"])).collect()
}

/// Every message in the spool, oldest first. The body is the whole stored message while
/// something is left to deliver, and its header section afterwards.
pub fn spooled(spool: &(impl QueueSource + ?Sized)) -> Vec<Spooled> {
    listed(spool)
        .iter()
        .map(|m| {
            let id = text(&m["id"]);
            let details = shown(spool, &id);
            let body = match details["body"].as_str() {
                Some(body) => body,
                None => details["headers"].as_str().unwrap_or_default(),
            };
            Spooled {
                sender: text(&m["sender"]),
                original_sender: text(&m["original_sender"]),
                submitter: details["submitter"].as_str().map(String::from),
                client_addr: details["client_addr"].as_str().map(String::from),
                body_type: text(&details["body_type"]),
                body: body.as_bytes().to_vec(),
                recipients: m["recipients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            text(&r["address"]),
                            text(&r["state"]),
                            r["attempts"].as_i64().unwrap(),
                            r["next_attempt_at_ms"].as_i64().unwrap(),
                            text(&r["original_address"]),
                        )
                    })
                    .collect(),
                id,
            }
        })
        .collect()
}

/// The stored rewrite decisions of each message, oldest first, one per line.
pub fn rewrites(spool: &(impl QueueSource + ?Sized)) -> Vec<String> {
    queued_ids(spool)
        .iter()
        .map(|id| {
            shown(spool, id)["rewrites"]
                .as_array()
                .unwrap()
                .iter()
                .map(text)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// A counter from the spool's `counters` table.
pub fn counter(spool: &Path, name: &str) -> i64 {
    block_on(async {
        let mut conn = open_spool(spool).await;
        sqlx::query_scalar("SELECT value FROM counters WHERE name = ?")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("counter")
    })
}

/// One recipient's delivery state.
#[derive(Debug, Clone)]
pub struct RecipientRow {
    pub address: String,
    pub state: String,
    pub attempts: i64,
    pub last_reply: Option<String>,
    pub held_by: Option<String>,
}

/// Every recipient in the spool, in arrival order.
pub fn recipient_rows(spool: &Path) -> Vec<RecipientRow> {
    listed(spool)
        .iter()
        .flat_map(|m| m["recipients"].as_array().unwrap().clone())
        .map(|r| RecipientRow {
            address: text(&r["address"]),
            state: text(&r["state"]),
            attempts: r["attempts"].as_i64().unwrap(),
            last_reply: r["last_reply"].as_str().map(String::from),
            held_by: r["held_by"].as_str().map(String::from),
        })
        .collect()
}

/// One delivery attempt: (recipient address, upstream, reply, outcome).
pub type AttemptRow = (String, Option<String>, String, String);

/// Every delivery attempt, oldest first.
pub fn attempt_rows(spool: &Path) -> Vec<AttemptRow> {
    let mut attempts: Vec<(i64, AttemptRow)> = queued_ids(spool)
        .iter()
        .flat_map(|id| shown(spool, id)["attempts"].as_array().unwrap().clone())
        .map(|a| {
            (
                a["started_at_ms"].as_i64().unwrap(),
                (
                    text(&a["recipient"]),
                    a["upstream"].as_str().map(String::from),
                    text(&a["reply"]),
                    text(&a["outcome"]),
                ),
            )
        })
        .collect();
    // Each message's attempts come in order; across messages, by when they started.
    attempts.sort_by_key(|(started, _)| *started);
    attempts.into_iter().map(|(_, attempt)| attempt).collect()
}

/// Polls `check` until it returns Some, for at most `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
