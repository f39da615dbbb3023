//! Session transcripts: what a client sends, what it must hear back.

use std::time::Instant;

use super::*;
use crate::auth::Verdict;
use crate::config::Config;
use crate::intake::Queue;

fn policy(trusted: &[&str], senders: &[&str]) -> Arc<SessionPolicy> {
    policy_with_errors(trusted, senders, 50)
}

fn policy_with_errors(trusted: &[&str], senders: &[&str], max_errors: u32) -> Arc<SessionPolicy> {
    tuned_policy(trusted, senders, |policy| {
        policy.limits.max_errors = max_errors
    })
}

/// The test policy, with `tune` applied.
fn tuned_policy(
    trusted: &[&str],
    senders: &[&str],
    tune: impl FnOnce(&mut SessionPolicy),
) -> Arc<SessionPolicy> {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = Config::from_toml(&format!(
        "hostname = \"relay.test\"\n[smtp]\nmax_message_size = 100\ntrusted_networks = [{}]\nallowed_sender_domains = [{}]\n[rewrite.aliases]\nroot = \"ops@example.com\"\n",
        list(trusted),
        list(senders)
    ))
    .unwrap();
    let mut limits = config.smtp.limits.clone();
    limits.max_recipients = 3;
    // These transcripts never hand a message on, so the queue is never reached.
    let queue = Queue::Daemon {
        socket: "/nonexistent/sendmail.sock".into(),
    };
    let mut policy = SessionPolicy {
        limits,
        intake: Arc::new(Intake::new(&config, queue)),
        starttls: true,
        require_tls: false,
        auth: Some(Arc::new(crate::fuzzing::no_users_auth())),
        rates: Arc::new(crate::policy::MessageRates::new(0, 0)),
    };
    tune(&mut policy);
    Arc::new(policy)
}

fn tls_session() -> crate::model::TlsSession {
    crate::model::TlsSession {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
}

struct Transcript {
    session: Session,
    messages: Vec<Submission>,
    closed: bool,
    /// What the next AUTH checks answer (the argon2 check is the driver's); Refused after.
    verdicts: std::collections::VecDeque<Verdict>,
    /// The user names AUTH exchanges handed out.
    credentials: Vec<String>,
}

impl Transcript {
    fn new(ip: &str) -> Transcript {
        Transcript::with(policy(&["127.0.0.0/8"], &[]), ip)
    }

    fn with(policy: Arc<SessionPolicy>, ip: &str) -> Transcript {
        Transcript {
            session: Session::new(policy, Peer::Tcp(ip.parse().unwrap())),
            messages: Vec::new(),
            closed: false,
            verdicts: Default::default(),
            credentials: Vec::new(),
        }
    }

    /// Sends raw bytes and returns every reply line they produce, joined by newlines.
    fn send(&mut self, bytes: &str) -> String {
        let mut input = bytes.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            match self.session.step(&mut input) {
                Step::Reply(reply) => reply.write_to(&mut out),
                Step::Message(message) => {
                    self.messages.push(message);
                    let id = QueueId::generate();
                    self.session.queued(&Ok(id)).write_to(&mut out);
                }
                Step::StartTls(reply) => {
                    // The handshake is the driver's; here it succeeds at once.
                    reply.write_to(&mut out);
                    self.session.tls_started(tls_session());
                }
                Step::Authenticate(credentials) => {
                    self.credentials.push(credentials.name.clone());
                    let verdict = self.verdicts.pop_front().unwrap_or(Verdict::Refused);
                    let answer = self.session.authenticated(verdict);
                    answer.reply.write_to(&mut out);
                    if answer.close {
                        self.closed = true;
                        break;
                    }
                }
                Step::NeedInput => break,
                Step::Close(reply) => {
                    reply.write_to(&mut out);
                    self.closed = true;
                    break;
                }
            }
        }
        String::from_utf8(out)
            .unwrap()
            .trim_end()
            .replace("\r\n", "\n")
    }

    /// Asserts that `line` is answered with a reply starting with `expected`.
    fn expect(&mut self, line: &str, expected: &str) {
        let answer = self.send(&format!("{line}\r\n"));
        assert!(
            answer.starts_with(expected),
            "{line:?}: expected {expected:?}, got {answer:?}"
        );
    }
}

#[test]
fn a_whole_transaction() {
    let mut c = Transcript::new("127.0.0.1");
    let ehlo = c.send("EHLO client.test\r\n");
    for capability in [
        "PIPELINING",
        "SIZE 100",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(capability), "{ehlo}");
    }
    c.expect("MAIL FROM:<app@example.com> BODY=8BITMIME", "250 2.1.0");
    c.expect("RCPT TO:<ops@example.com>", "250 2.1.5");
    c.expect("RCPT TO:<root>", "250 2.1.5");
    c.expect("DATA", "354 ");
    c.expect("Subject: hi\r\n\r\n..dot\r\n.", "250 2.0.0 Ok: queued as ");
    let message = &c.messages[0];
    assert_eq!(message.sender.as_spooled(), "app@example.com");
    let recipients: Vec<String> = message.recipients.iter().map(|r| r.to_string()).collect();
    assert_eq!(recipients, ["ops@example.com", "root"]);
    assert_eq!(message.message, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(message.body_type, BodyType::EightBitMime);
    assert!(
        matches!(&message.client, Client::Smtp { helo: Some(h), esmtp: true, .. } if h == "client.test"),
        "{:?}",
        message.client
    );
    c.expect("QUIT", "221 2.0.0");
    assert!(c.closed);
}

#[test]
fn order_of_commands_is_enforced() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("MAIL FROM:<a@b.example>", "503 5.5.1");
    c.expect("HELO x", "250 relay.test");
    c.expect("RCPT TO:<a@b.example>", "503 5.5.1");
    c.expect("DATA", "503 5.5.1");
    c.expect("MAIL FROM:<>", "250 2.1.0");
    c.expect("MAIL FROM:<>", "503 5.5.1");
    c.expect("DATA", "554 5.5.1");
    c.expect("RSET", "250 2.0.0");
    c.expect("RCPT TO:<a@b.example>", "503 5.5.1");
    c.expect("NOOP", "250 2.0.0");
    c.expect("VRFY root", "252 ");
    c.expect("HELP", "214-");
    c.expect("EXPN root", "502 5.5.1");
    c.expect("BOGUS", "500 5.5.2");
}

#[test]
fn untrusted_client_is_refused_at_rcpt() {
    let mut c = Transcript::with(policy(&["127.0.0.1/32"], &[]), "127.0.0.2");
    c.expect("EHLO spammer", "250-relay.test");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect(
        "RCPT TO:<victim@example.net>",
        "554 5.7.1 Relay access denied",
    );
    c.expect("DATA", "554 5.5.1");
    assert!(c.messages.is_empty());
}

#[test]
fn address_tricks_are_refused() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<@evil.example:a@b.example>", "553 5.1.7");
    c.expect("MAIL FROM:<a%evil@b.example>", "553 5.1.7");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    for (path, code) in [
        ("@a,@b:u@c.example", "553 5.1.3"),
        ("u%other.example@relay.example", "553 5.1.3"),
        ("other!u@relay.example", "553 5.1.3"),
        ("\"u@other.example\"@relay.example", "553 5.1.3"),
        ("u@other@relay.example", "553 5.1.3"),
        ("u@", "501 5.1.3"),
        ("jörg@example.de", "553 5.6.7"),
    ] {
        c.expect(&format!("RCPT TO:<{path}>"), code);
    }
}

#[test]
fn smtputf8_allows_utf8_addresses() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<jörg@bücher.example> SMTPUTF8", "250 2.1.0");
    c.expect("RCPT TO:<ops@bücher.example>", "250 2.1.5");
}

#[test]
fn local_recipient_without_alias_is_refused_at_rcpt() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<a@b.example>", "250");
    c.expect("RCPT TO:<root@localhost>", "250 2.1.5");
    c.expect(
        "RCPT TO:<www-data>",
        "550 5.1.1 <www-data>: local recipient with no alias",
    );
    c.expect("RCPT TO:<www-data@web-1.internal>", "550 5.1.1");
}

#[test]
fn sender_domains_are_checked_at_mail_from() {
    let mut c = Transcript::with(policy(&["127.0.0.0/8"], &["example.com"]), "127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<root@ip-10-0-0-1.ec2.internal>", "553 5.7.1");
    c.expect("MAIL FROM:<cron@example.com>", "250 2.1.0");
}

#[test]
fn size_limits() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<a@b.example> SIZE=101", "552 5.3.4");
    c.expect("MAIL FROM:<a@b.example> SIZE=50", "250 2.1.0");
    c.expect("RCPT TO:<c@d.example>", "250 2.1.5");
    c.expect("DATA", "354");
    let big = "x".repeat(200);
    c.expect(&format!("{big}\r\n."), "552 5.3.4");
    assert!(c.messages.is_empty());
    // The session goes on.
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
}

#[test]
fn too_many_recipients_get_452() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("MAIL FROM:<a@b.example>", "250");
    for n in 0..3 {
        c.expect(&format!("RCPT TO:<r{n}@d.example>"), "250 2.1.5");
    }
    c.expect("RCPT TO:<r4@d.example>", "452 4.5.3");
}

#[test]
fn over_long_line_is_refused_and_discarded() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    // Arrives in pieces: the refusal comes once the limit is passed, the rest is skipped.
    let answer = c.send(&format!("NOOP {}", "a".repeat(1500)));
    assert!(answer.starts_with("500 5.5.2"), "{answer}");
    assert_eq!(c.send(&"b".repeat(3000)), "");
    assert_eq!(c.send("\r\nNOOP\r\n"), "250 2.0.0 Ok");
}

#[test]
fn pipelined_commands_get_replies_in_order() {
    let mut c = Transcript::new("127.0.0.1");
    let answer = c.send(
        "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e%g@f.example>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    let codes: Vec<&str> = answer
        .lines()
        .map(|l| &l[..4])
        .filter(|c| !c.ends_with('-'))
        .collect();
    assert_eq!(
        codes,
        ["250 ", "250 ", "250 ", "553 ", "354 ", "250 ", "221 "]
    );
    assert_eq!(c.messages.len(), 1);
}

#[test]
fn nul_is_refused_in_commands_and_messages() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO x", "250-");
    c.expect("NOOP \0", "500 5.5.2");
    c.expect("MAIL FROM:<a@b.example>", "250");
    c.expect("RCPT TO:<c@d.example>", "250");
    c.expect("DATA", "354");
    c.expect("a\0b\r\n.", "554 5.6.0");
    assert!(c.messages.is_empty());
}

#[test]
fn too_many_errors_close_the_session() {
    let mut c = Transcript::with(policy_with_errors(&["127.0.0.0/8"], &[], 5), "127.0.0.1");
    for _ in 0..5 {
        c.expect("BOGUS", "500");
    }
    c.expect("BOGUS", "421 4.7.0");
    assert!(c.closed);
}

#[test]
fn deadlines_follow_the_mode_and_chatter_does_not_move_them() {
    let mut c = Transcript::new("127.0.0.1");
    let limits = c.session.policy.limits.clone();
    let idle = c.session.deadline();
    let left = idle - Instant::now();
    assert!(left <= limits.idle_timeout && left > limits.idle_timeout / 2);
    // Outside a transaction, NOOP, RSET and EHLO count toward the idle deadline.
    c.expect("EHLO x", "250-");
    c.expect("NOOP", "250");
    c.expect("RSET", "250");
    assert_eq!(c.session.deadline(), idle);
    c.expect("MAIL FROM:<a@b.example>", "250");
    let transaction = c.session.deadline();
    c.expect("RCPT TO:<c@d.example>", "250");
    c.expect("NOOP", "250");
    assert_eq!(
        c.session.deadline(),
        transaction,
        "one deadline for the transaction"
    );
    c.expect("DATA", "354");
    assert!(c.session.in_data());
    let data = c.session.deadline();
    // Data earns time at min_data_rate: 100 bytes at 500 B/s is less than a second.
    c.send(&"x".repeat(99));
    assert_eq!(c.session.deadline(), data);
}

#[test]
fn untrusted_clients_get_short_deadlines_until_they_authenticate() {
    let mut c = untrusted_in_tls();
    let limits = c.session.policy.limits.clone();
    let left = c.session.deadline() - Instant::now();
    assert!(left <= limits.untrusted_timeout, "{left:?}");
    c.expect("EHLO client.test", "250");
    c.verdicts.push_back(tenant());
    c.expect("AUTH PLAIN AGFwcDEAcHc=", "235");
    let left = c.session.deadline() - Instant::now();
    assert!(left > limits.untrusted_timeout, "{left:?}");
}

#[test]
fn storage_failure_is_a_temporary_error() {
    let mut c = Transcript::new("127.0.0.1");
    let reply = c
        .session
        .queued(&Err(Refusal::Storage(crate::spool::SpoolError::Write(
            "disk full".into(),
        ))));
    assert_eq!(reply, reply::STORAGE_FAILURE);
    assert!(reply.text.starts_with("4.3.1"));
}

/// A recipient without a route is the client's problem (550 5.1.1), never "insufficient
/// storage": the cause decides the reply.
#[test]
fn unroutable_recipient_is_refused_as_such_at_rcpt() {
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO client.test", "250");
    c.expect("MAIL FROM:<app@example.com>", "250 2.1.0");
    c.expect(
        "RCPT TO:<nobody@localhost>",
        "550 5.1.1 <nobody@localhost>: local recipient with no alias",
    );
}

use proptest::strategy::Strategy;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1500))]

    /// The session fed random transcripts — SMTP words, addresses, parameters, DATA bodies and
    /// raw bytes — in any chunking.
    #[test]
    fn random_transcripts_get_well_formed_replies_whatever_the_chunking(
        pieces in proptest::collection::vec(proptest::prop_oneof![
            proptest::sample::select(vec![
                "EHLO client.test\r\n", "HELO x\r\n", "MAIL FROM:<a@example.com>\r\n",
                "MAIL FROM:<> SIZE=50 BODY=8BITMIME SMTPUTF8\r\n", "RCPT TO:<root>\r\n",
                "RCPT TO:<ops@example.com>\r\n", "RCPT TO:<@a,@b:c@d>\r\n", "RCPT TO:<x%y@z>\r\n",
                "DATA\r\n", "hello\r\n.\r\n", ".\r\n", "\r\n.\r\n", "RSET\r\n", "NOOP\r\n",
                "VRFY root\r\n", "HELP\r\n", "QUIT\r\n", "STARTTLS\r\n", "AUTH PLAIN AAAA\r\n",
                "BDAT 5 LAST\r\n", "mail from:<A@B.EXAMPLE>\r\n", "\n.\n", "\r.\r", "\0",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ], 0..25),
        chunk in 0u8..8,
    ) {
        // See `fuzzing::session` for what must hold.
        let mut data = vec![chunk];
        data.extend(pieces.concat());
        crate::fuzzing::session(&data);
    }
}

#[test]
fn starttls_is_offered_once_and_forgets_the_session_before_it() {
    let mut c = Transcript::new("10.0.0.9");
    let ehlo = c.send("EHLO client.test\r\n");
    assert!(
        ehlo.contains("\n250-STARTTLS") || ehlo.ends_with("250 STARTTLS"),
        "{ehlo}"
    );
    c.expect("STARTTLS", "220 2.0.0");
    // RFC 3207 4.2: the EHLO before the handshake counts for nothing.
    c.expect(
        "MAIL FROM:<a@b.example>",
        "503 5.5.1 Error: send HELO/EHLO first",
    );
    let ehlo = c.send("EHLO client.test\r\n");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", "503 5.5.1 Error: TLS already active");
}

#[test]
fn commands_pipelined_behind_starttls_close_the_session() {
    let mut c = Transcript::new("10.0.0.9");
    c.expect("EHLO client.test", "250");
    let answer = c.send("STARTTLS\r\nRSET\r\n");
    assert_eq!(answer, "554 5.5.0 Error: commands pipelined after STARTTLS");
    assert!(c.closed);
}

#[test]
fn starttls_is_not_for_local_users_nor_inside_a_transaction() {
    let mut local = Transcript {
        session: Session::new(
            policy(&["127.0.0.0/8"], &[]),
            Peer::Local(crate::intake::LocalUser::current()),
        ),
        messages: Vec::new(),
        closed: false,
        verdicts: Default::default(),
        credentials: Vec::new(),
    };
    let ehlo = local.send("EHLO x\r\n");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    local.expect("STARTTLS", "502 5.5.1");
    let mut c = Transcript::new("127.0.0.1");
    c.expect("EHLO client.test", "250");
    c.expect("MAIL FROM:<a@b.example>", "250");
    c.expect(
        "STARTTLS",
        "503 5.5.1 Error: STARTTLS inside a mail transaction",
    );
}

fn tenant() -> Verdict {
    Verdict::Authenticated(Arc::new(crate::auth::User {
        name: "app1".into(),
        allow_senders: vec![crate::auth::SenderPattern::Domain("example.com".into())],
    }))
}

/// From an address outside the trusted networks, inside TLS.
fn untrusted_in_tls() -> Transcript {
    let mut c = Transcript::with(policy(&["127.0.0.1/32"], &[]), "192.0.2.10");
    c.session.tls_started(tls_session());
    c
}

#[test]
fn auth_is_offered_and_taken_only_under_tls() {
    let mut c = Transcript::with(policy(&["127.0.0.1/32"], &[]), "192.0.2.10");
    let ehlo = c.send("EHLO client.test\r\n");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    c.expect(
        "AUTH PLAIN AGFwcDEAcHc=",
        "538 5.7.11 Encryption required for requested authentication mechanism",
    );
    assert!(
        c.credentials.is_empty(),
        "credentials in clear were looked at"
    );
    let mut c = untrusted_in_tls();
    let ehlo = c.send("EHLO client.test\r\n");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
}

#[test]
fn an_authenticated_tenant_relays_but_only_as_its_own_senders() {
    let mut c = untrusted_in_tls();
    c.expect("EHLO client.test", "250");
    c.expect("MAIL FROM:<app@example.com>", "250");
    c.expect("RCPT TO:<x@elsewhere.example>", "554 5.7.1");
    c.expect("RSET", "250");
    c.verdicts.push_back(tenant());
    // "\0app1\0pw"
    c.expect(
        "AUTH PLAIN AGFwcDEAcHc=",
        "235 2.7.0 Authentication successful",
    );
    assert_eq!(c.credentials, ["app1"]);
    c.expect(
        "AUTH PLAIN AGFwcDEAcHc=",
        "503 5.5.1 Error: already authenticated",
    );
    c.expect(
        "MAIL FROM:<ceo@other-tenant.example>",
        "553 5.7.1 <ceo@other-tenant.example>: Sender address rejected: not owned by user app1",
    );
    c.expect("MAIL FROM:<App@Example.com>", "250");
    c.expect("RCPT TO:<x@elsewhere.example>", "250");
}

#[test]
fn login_exchange_cancel_and_malformed_responses() {
    let mut c = untrusted_in_tls();
    c.expect("EHLO client.test", "250");
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.expect("YXBwMQ==", "334 UGFzc3dvcmQ6");
    c.expect("d3Jvbmc=", "535 5.7.8 Authentication credentials invalid");
    assert_eq!(c.credentials, ["app1"]);
    c.expect("AUTH LOGIN", "334");
    c.expect("*", "501 5.7.0 Authentication aborted");
    c.expect("AUTH PLAIN", "334");
    c.expect("%%%not base64", "501 5.5.2");
    c.expect("AUTH CRAM-MD5", "504 5.5.4");
    c.expect("MAIL FROM:<app@example.com>", "250");
    c.expect(
        "AUTH PLAIN AGFwcDEAcHc=",
        "503 5.5.1 Error: AUTH not allowed in a mail transaction",
    );
    assert_eq!(c.credentials, ["app1"], "nothing else was checked");
}

#[test]
fn the_last_allowed_failure_closes_the_session() {
    let mut c = untrusted_in_tls();
    c.expect("EHLO client.test", "250");
    c.verdicts.push_back(Verdict::LockedOut);
    c.expect(
        "AUTH PLAIN AGFwcDEAcHc=",
        "421 4.7.0 Error: too many failed authentications",
    );
    assert!(c.closed);
}

#[test]
fn require_tls_refuses_mail_in_clear_except_from_loopback() {
    let strict = || {
        tuned_policy(&["0.0.0.0/1", "128.0.0.0/1"], &[], |policy| {
            policy.require_tls = true
        })
    };
    let mut c = Transcript::with(strict(), "10.0.0.9");
    c.expect("EHLO client.test", "250");
    c.expect(
        "MAIL FROM:<app@example.com>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.expect("STARTTLS", "220");
    c.expect("EHLO client.test", "250");
    c.expect("MAIL FROM:<app@example.com>", "250");
    let mut local = Transcript::with(strict(), "127.0.0.1");
    local.expect("EHLO cron.test", "250");
    local.expect("MAIL FROM:<root@example.com>", "250");
}

#[test]
fn beyond_the_message_rate_mail_is_deferred_with_450() {
    let mut c = Transcript::with(
        tuned_policy(&["127.0.0.0/8"], &[], |policy| {
            policy.rates = Arc::new(crate::policy::MessageRates::new(2, 0))
        }),
        "127.0.0.1",
    );
    c.expect("EHLO client.test", "250");
    for _ in 0..2 {
        c.expect("MAIL FROM:<a@b.example>", "250");
        c.expect("RCPT TO:<c@d.example>", "250");
        c.expect("DATA", "354");
        c.expect("hi\r\n.", "250 2.0.0 Ok: queued");
    }
    c.expect(
        "MAIL FROM:<a@b.example>",
        "450 4.7.1 Error: too many messages, slow down",
    );
}
