//! The properties the fuzzers check, one function per target, each taking raw bytes and
//! panicking when the property fails. The libFuzzer targets in `fuzz/` call these; so do the
//! stable property tests beside each module (structured random input, in `cargo test`) and
//! the corpus replay below (every committed seed and every crash ever found).
//!
//! Built for tests and with the `fuzzing` feature only: no release binary carries it.

use std::ffi::OsString;
use std::sync::{Arc, OnceLock};

use crate::auth::{Auth, SenderPattern, User, Users, UsersFile, Verdict};
use crate::config::{AuthConfig, Config};
use crate::intake::{Intake, Queue};
use crate::listener::SessionPolicy;
use crate::listener::command::Command;
use crate::listener::data::{DataOutcome, DataReceiver};
use crate::listener::session::{Peer, Session, Step};
use crate::model::{QueueId, TlsSession};
use crate::rewrite::{MissingFrom, Rewriter};

/// A property over raw bytes: returns, or panics with what failed.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("command", command),
    ("session", session),
    ("data_framing", data_framing),
    ("header_rewrite", header_rewrite),
    ("sendmail_args", sendmail_args),
    ("config", config),
];

/// One command line: a command, or a refusal with a 5xx code (RFC 5321 4.2: a line we cannot
/// parse is a permanent syntax error, never a 4xx that invites the client to repeat it).
pub fn command(line: &[u8]) {
    if let Err(reply) = crate::listener::command::parse(line) {
        assert!((500..600).contains(&reply.code), "{reply:?} for {line:?}");
    }
}

/// A session fed a transcript (first byte: the chunk size the bytes arrive in, 1–8): it
/// answers only in well-formed replies (a 2xx–5xx code, `-` or space after it, CRLF ends), and
/// says exactly the same whatever the chunking.
pub fn session(data: &[u8]) {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    let whole = replay_session(wire, wire.len().max(1));
    assert_eq!(whole, replay_session(wire, usize::from(chunk % 8) + 1));
    let text = String::from_utf8_lossy(&whole);
    let text = text.strip_suffix("<closed>").unwrap_or(&text);
    assert!(text.ends_with("\r\n"), "{text:?}");
    for line in text.split_terminator("\r\n") {
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!((200..600).contains(&code), "{line:?} in {text:?}");
        assert!(
            matches!(line.as_bytes().get(3), None | Some(b' ' | b'-')),
            "{line:?}"
        );
    }
}

/// DATA in and out (first byte: chunk size). Whatever the client sends before a real end of
/// data: every chunking gives the same message; the stored body has CRLF line ends only; the
/// relayed framing never holds a line a receiver could take for the end of data, however it
/// splits lines (CR, LF or CRLF) or strips NUL (the SMTP-smuggling class); and our own
/// receiver reads the relayed framing back as exactly the stored body.
pub fn data_framing(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let mut wire = bytes.to_vec();
    wire.extend_from_slice(b"\r\n.\r\n");
    let whole = receive_data(&wire, wire.len());
    let chunked = receive_data(&wire, usize::from(chunk % 8) + 1);
    assert_eq!(format!("{whole:?}"), format!("{chunked:?}"));
    let body = match whole.0 {
        DataOutcome::Complete { body, .. } => body,
        // NUL is refused (554 5.6.0) and a longer message is refused whole: nothing to relay.
        DataOutcome::ContainsNul | DataOutcome::TooBig => return,
    };
    for (at, &byte) in body.iter().enumerate() {
        let crlf = (byte == b'\r' && body.get(at + 1) == Some(&b'\n'))
            || (byte == b'\n' && at > 0 && body[at - 1] == b'\r');
        assert!(
            !matches!(byte, b'\r' | b'\n') || crlf,
            "bare line end in {body:?}"
        );
    }
    let mut framed = Vec::new();
    crate::wire::write_data(&body, &mut framed);
    assert_eq!(crate::wire::lone_dot_before_end(&framed), None);
    let mut again = DataReceiver::new(u64::MAX);
    assert_eq!(again.feed(&framed), Some(framed.len()), "{framed:?}");
    match again.finish() {
        DataOutcome::Complete { body: back, .. } => assert_eq!(back, body),
        other => panic!("{other:?} reading back {framed:?}"),
    }
}

/// Identity repair of any message the intake can hand it — no NUL (refused on every entry
/// point) and CRLF line ends only (bare CR and LF are normalised before): it never fails for
/// a routable envelope, and it converges (repairing the repaired message changes nothing
/// more).
pub fn header_rewrite(message: &[u8]) {
    let crlf_only = message.iter().enumerate().all(|(at, &b)| match b {
        0 => false,
        b'\r' => message.get(at + 1) == Some(&b'\n'),
        b'\n' => at > 0 && message[at - 1] == b'\r',
        _ => true,
    });
    if !crlf_only {
        return;
    }
    static REWRITER: OnceLock<Rewriter> = OnceLock::new();
    let rewriter = REWRITER.get_or_init(|| {
        let config = Config::from_toml(
            "hostname = \"ip-10-0-0-12.eu-central-1.compute.internal\"\n[rewrite]\ninternal_sender = \"cron+{local}@example.com\"\nsender_domain = \"example.com\"\nstrip_headers = [\"X-Cron-Env\"]\n[rewrite.aliases]\nroot = \"ops@example.com\"\n",
        )
        .expect("fuzzing config");
        Rewriter::from_config(&config)
    });
    let id = QueueId::parse("0000000000000AA").expect("queue id");
    let repair = |message: &[u8]| {
        rewriter
            .apply(
                &id,
                "root@ip-10-0-0-12.eu-central-1.compute.internal",
                &["root".to_string()],
                message,
                MissingFrom::Add {
                    full_name: Some("Cron Daemon"),
                },
            )
            .expect("root has an alias")
    };
    let once = repair(message);
    let twice = repair(&once.message);
    assert_eq!(
        String::from_utf8_lossy(&twice.message),
        String::from_utf8_lossy(&once.message),
        "repair did not converge: {:?}",
        twice.decisions
    );
}

/// `sendmail` argv (NUL separates arguments): it parses, or it is refused with a message
/// that says what is wrong.
pub fn sendmail_args(data: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let argv: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|arg| std::ffi::OsStr::from_bytes(arg).to_owned())
        .collect();
    if let Err(message) = crate::cli::sendmail::args::parse(&argv) {
        assert!(!message.trim().is_empty(), "{argv:?}");
    }
}

/// A configuration file: it loads, or the error names what is wrong; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::from_toml(text) {
        assert!(!error.to_string().trim().is_empty(), "{text}");
    }
}

/// Feeds `wire` to a fresh session `chunk` bytes at a time; every reply written out, with
/// queue IDs fixed (they are random) and a note when the session closed. A STARTTLS line
/// always ends a write, as a client waiting for its 220 would send it: whether anything came
/// behind it in the same write is the one thing that depends on chunking, and is tested on
/// its own (`commands_pipelined_behind_starttls_close_the_session`).
pub(crate) fn replay_session(wire: &[u8], chunk: usize) -> Vec<u8> {
    let mut session = Session::new(session_policy(), Peer::Tcp([127, 0, 0, 1].into()));
    let mut out = Vec::new();
    session.greeting().write_to(&mut out);
    let mut input = Vec::new();
    let writes = wire.split_inclusive(|&b| b == b'\n').fold(
        vec![Vec::new()],
        |mut writes: Vec<Vec<u8>>, line| {
            let last = writes.last_mut().expect("one write at least");
            last.extend_from_slice(line);
            // The session's own reading of the line, so that no spelling of STARTTLS it
            // accepts is missed (splitting a write anywhere else changes nothing).
            if matches!(crate::listener::command::parse(line), Ok(Command::StartTls)) {
                writes.push(Vec::new());
            }
            writes
        },
    );
    let pieces = writes.iter().flat_map(|write| write.chunks(chunk.max(1)));
    for piece in pieces {
        input.extend_from_slice(piece);
        // Bounded: each round consumes input or asks for more.
        for _ in 0..10_000 {
            match session.step(&mut input) {
                Step::Reply(reply) => reply.write_to(&mut out),
                Step::Message(_) => session
                    .queued(&Ok(QueueId::parse("0000000000000AA").expect("queue id")))
                    .write_to(&mut out),
                Step::StartTls(reply) => {
                    // The handshake is the driver's; here it succeeds at once, so that what
                    // follows is explored inside TLS.
                    reply.write_to(&mut out);
                    session.tls_started(TlsSession {
                        version: "TLSv1.3".into(),
                        cipher: "TLS13_AES_128_GCM_SHA256".into(),
                    });
                }
                Step::Authenticate(credentials) => {
                    // No argon2 in the loop: user "fuzz" with password "fuzz" passes.
                    let verdict = if credentials.name == "fuzz" && credentials.password == b"fuzz" {
                        Verdict::Authenticated(Arc::new(User {
                            name: "fuzz".into(),
                            allow_senders: vec![SenderPattern::Domain("example.com".into())],
                        }))
                    } else {
                        Verdict::Refused
                    };
                    let answer = session.authenticated(verdict);
                    answer.reply.write_to(&mut out);
                    if answer.close {
                        out.extend_from_slice(b"<closed>");
                        return out;
                    }
                }
                Step::NeedInput => break,
                Step::Close(reply) => {
                    reply.write_to(&mut out);
                    out.extend_from_slice(b"<closed>");
                    return out;
                }
            }
        }
    }
    out
}

/// A relay trusting loopback, with a small message size limit (so "too big" is reachable)
/// and a few recipients at most. The transcripts never hand a message on: the queue is never
/// reached.
fn session_policy() -> Arc<SessionPolicy> {
    static POLICY: OnceLock<Arc<SessionPolicy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let config = Config::from_toml(
                "hostname = \"relay.test\"\n[smtp]\nmax_message_size = 100\nmax_recipients = 3\nmax_errors = 50\ntrusted_networks = [\"127.0.0.0/8\"]\n[rewrite.aliases]\nroot = \"ops@example.com\"\n",
            )
            .expect("fuzzing config");
            let queue = Queue::Daemon {
                socket: "/nonexistent/sendmail.sock".into(),
            };
            Arc::new(SessionPolicy {
                limits: config.smtp.limits.clone(),
                intake: Arc::new(Intake::new(&config, queue)),
                starttls: true,
                require_tls: false,
                auth: Some(Arc::new(no_users_auth())),
                rates: Arc::new(crate::policy::MessageRates::new(0, 0)),
            })
        })
        .clone()
}

/// AUTH offered, with nobody in the users file (the replay decides verdicts itself).
pub(crate) fn no_users_auth() -> Auth {
    let config = AuthConfig {
        users_file: "/nonexistent/users.toml".into(),
        max_failures: 5,
        failure_window: std::time::Duration::from_secs(600),
    };
    Auth::new(&config, Users::new(UsersFile::default()).expect("no users"))
}

/// The DATA receiver over `wire` in pieces of `chunk`: the outcome, and how many bytes the
/// message took (what follows is the next command). A wire without an end of data is a
/// failure: the callers' wires all end in a real one.
pub(crate) fn receive_data(wire: &[u8], chunk: usize) -> (DataOutcome, usize) {
    let mut receiver = DataReceiver::new(1 << 20);
    let mut offset = 0;
    for piece in wire.chunks(chunk.max(1)) {
        if let Some(used) = receiver.feed(piece) {
            return (receiver.finish(), offset + used);
        }
        offset += piece.len();
    }
    panic!(
        "end of data not found in {:?}",
        String::from_utf8_lossy(wire)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed and every crash found so far, through its target.
    #[test]
    fn every_corpus_file_holds_its_property() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut files = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} fails on {}", path.display());
                files += 1;
            }
            assert!(files > 0, "no seeds for {name}");
            replayed += files;
        }
        assert!(replayed >= TARGETS.len());
    }
}
