//! The SMTP session as a pure state machine: bytes in, steps out (a reply to send, a message to
//! commit, a request for more input). No sockets and no clock here; the connection driver
//! does the I/O, so every protocol rule is testable from a transcript.
//!
//! The session's mode is the parser for what comes next (commands, message data, or the rest
//! of an over-long line to discard).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::{self, Command, MailParams, Mechanism};
use super::data::{DataOutcome, DataReceiver};
use super::reply::{self, Reply};
use crate::auth::sasl::{self, Credentials};
use crate::auth::{Auth, User, Verdict};
use crate::config::SessionLimits;
use crate::intake::{Client, Intake, LocalUser, Refusal, Role, Submission};
use crate::model::{self, Address, BodyType, QueueId, ReversePath, TlsSession};
use crate::policy::{MessageRates, RelayDecision};

/// Everything sessions share: their limits, and the intake that judges and takes their mail.
pub struct SessionPolicy {
    pub limits: SessionLimits,
    pub intake: Arc<Intake>,
    /// A certificate is configured: STARTTLS is offered to TCP clients.
    pub starttls: bool,
    /// MAIL needs TLS from clients other than loopback (`smtp.require_tls`).
    pub require_tls: bool,
    /// SMTP AUTH, offered under TLS; None: not offered.
    pub auth: Option<Arc<Auth>>,
    /// Messages per minute per client address and per user.
    pub rates: Arc<MessageRates>,
}

/// Who is on the other end.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(IpAddr),
    /// `sendmail -bs`: a local user on standard input.
    Local(LocalUser),
}

impl Peer {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(ip) => Some(*ip),
            Peer::Local(_) => None,
        }
    }
}

/// What the session wants done next.
#[derive(Debug)]
pub enum Step {
    Reply(Reply),
    /// A complete message: give it to the intake, then call `Session::queued` for the reply.
    Message(Submission),
    /// Send this reply (220), then start the TLS handshake and call `Session::tls_started`.
    StartTls(Reply),
    /// Check these credentials (`Auth::check`), then call `Session::authenticated`.
    Authenticate(Credentials),
    /// Every complete line has been handled: flush replies and read more.
    NeedInput,
    /// Send this reply and close the connection.
    Close(Reply),
}

#[derive(Debug)]
enum Mode {
    Command,
    Data(DataReceiver),
    /// The rest of an over-long command line is discarded up to its line feed.
    SkipLine,
    /// Inside an AUTH exchange: the next line is a base64 response (or `*` to cancel).
    Auth(Exchange),
}

enum NextLine {
    Line(Vec<u8>),
    NeedInput,
    /// Longer than `max_command_line`: refused (the rest of it is skipped).
    TooLong,
}

#[derive(Debug)]
enum Exchange {
    Plain,
    LoginName,
    LoginPassword { name: String },
}

/// What `Session::authenticated` wants done.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthAnswer {
    pub reply: Reply,
    /// The address has no attempts left: close after the reply.
    pub close: bool,
}

#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<Address>,
}

pub struct Session {
    policy: Arc<SessionPolicy>,
    peer: Peer,
    relay: RelayDecision,
    helo: Option<String>,
    esmtp: bool,
    transaction: Option<Transaction>,
    mode: Mode,
    errors: u32,
    tls: Option<TlsSession>,
    user: Option<Arc<User>>,
    /// Deadlines are counted from these, not from the last byte: a client dribbling a byte
    /// or a NOOP every few seconds does not keep its slot for ever.
    /// Start of the idle period: the session's start, its TLS handshake or AUTH, the end
    /// of its last transaction. NOOP, RSET, EHLO and the like do not move it.
    idle_since: Instant,
    /// MAIL of the open transaction: the whole transaction up to DATA has one deadline.
    transaction_since: Instant,
    data_since: Instant,
    /// Messages queued so far (`sendmail -bs` exits non-zero when its input ends with none).
    queued: u32,
}

impl Session {
    pub fn new(policy: Arc<SessionPolicy>, peer: Peer) -> Session {
        let relay = policy.intake.relay(peer.ip());
        Session {
            policy,
            peer,
            relay,
            helo: None,
            esmtp: false,
            transaction: None,
            mode: Mode::Command,
            errors: 0,
            tls: None,
            user: None,
            idle_since: Instant::now(),
            transaction_since: Instant::now(),
            data_since: Instant::now(),
            queued: 0,
        }
    }

    /// The TLS handshake finished (after STARTTLS, or at connect on the implicit-TLS
    /// listener). Everything learnt before it is forgotten, as RFC 3207 4.2 requires: the
    /// client must say EHLO again.
    pub fn tls_started(&mut self, tls: TlsSession) {
        self.helo = None;
        self.esmtp = false;
        self.transaction = None;
        self.tls = Some(tls);
        self.idle_since = Instant::now();
    }

    /// The outcome of the credentials `Step::Authenticate` handed out.
    pub fn authenticated(&mut self, verdict: Verdict) -> AuthAnswer {
        let (reply, close) = match verdict {
            Verdict::Authenticated(user) => {
                // Trusted network OR authenticated (the relay decision's second half).
                self.relay = RelayDecision::Allow;
                self.user = Some(user);
                self.idle_since = Instant::now();
                return AuthAnswer {
                    reply: reply::AUTH_OK,
                    close: false,
                };
            }
            Verdict::Refused => (reply::AUTH_FAILED, false),
            Verdict::LockedOut => (reply::AUTH_LOCKED_OUT, true),
        };
        self.errors += 1;
        if self.errors >= self.policy.limits.max_errors {
            return AuthAnswer {
                reply: reply::TOO_MANY_ERRORS,
                close: true,
            };
        }
        AuthAnswer { reply, close }
    }

    fn offers_auth(&self) -> bool {
        self.policy.auth.is_some() && self.tls.is_some() && matches!(self.peer, Peer::Tcp(_))
    }

    fn offers_starttls(&self) -> bool {
        self.policy.starttls && self.tls.is_none() && matches!(self.peer, Peer::Tcp(_))
    }

    pub fn greeting(&self) -> Reply {
        Reply::new(
            220,
            format!("{} ESMTP smarthost", self.policy.intake.hostname()),
        )
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    /// When the client must have sent what the session waits for: the message data, the
    /// rest of the transaction, or a transaction at all.
    pub fn deadline(&self) -> Instant {
        let limits = &self.policy.limits;
        let (since, allowed) = match (&self.mode, &self.transaction) {
            (Mode::Data(receiver), _) => (
                self.data_since,
                limits.data_timeout
                    + Duration::from_secs(receiver.received() / limits.min_data_rate),
            ),
            (_, Some(_)) => (self.transaction_since, limits.command_timeout),
            (_, None) => (self.idle_since, limits.idle_timeout),
        };
        since + allowed.min(self.allowance())
    }

    /// How long any wait may be for who the client is.
    fn allowance(&self) -> Duration {
        let untrusted = matches!(self.peer, Peer::Tcp(_))
            && self.relay == RelayDecision::Deny
            && self.user.is_none();
        if untrusted {
            self.policy.limits.untrusted_timeout
        } else {
            Duration::MAX
        }
    }

    /// Handles the next complete unit of `input` (a command line, or message data) and removes
    /// what it consumed.
    pub fn step(&mut self, input: &mut Vec<u8>) -> Step {
        loop {
            match &mut self.mode {
                Mode::SkipLine => match input.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        input.drain(..=end);
                        self.mode = Mode::Command;
                    }
                    None => {
                        input.clear();
                        return Step::NeedInput;
                    }
                },
                Mode::Data(receiver) => {
                    return match receiver.feed(input) {
                        Some(used) => {
                            input.drain(..used);
                            self.end_of_data()
                        }
                        None => {
                            input.clear();
                            Step::NeedInput
                        }
                    };
                }
                Mode::Command => return self.command_step(input),
                Mode::Auth(_) => return self.auth_step(input),
            }
        }
    }

    /// The reply for a message handed out by `Step::Message`, once the intake has answered.
    pub fn queued(&mut self, outcome: &Result<QueueId, Refusal>) -> Reply {
        match outcome {
            Ok(id) => {
                self.queued += 1;
                let user = self.user.as_ref().map(|user| user.name.as_str());
                self.policy.rates.sent(self.peer.ip(), user);
                Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
            }
            Err(refusal) => refusal.reply(),
        }
    }

    /// Messages queued in this session so far.
    pub fn queued_count(&self) -> u32 {
        self.queued
    }

    /// A transaction is open (MAIL given, message not finished).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// The next complete line of at most `max_command_line` bytes.
    fn next_line(&mut self, input: &mut Vec<u8>) -> NextLine {
        let max = self.policy.limits.max_command_line;
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            if input.len() > max {
                input.clear();
                self.mode = Mode::SkipLine;
                return NextLine::TooLong;
            }
            return NextLine::NeedInput;
        };
        let line: Vec<u8> = input.drain(..=end).collect();
        if line.len() > max {
            return NextLine::TooLong;
        }
        NextLine::Line(line)
    }

    fn command_step(&mut self, input: &mut Vec<u8>) -> Step {
        let line = match self.next_line(input) {
            NextLine::Line(line) => line,
            NextLine::NeedInput => return Step::NeedInput,
            NextLine::TooLong => return self.error(reply::LINE_TOO_LONG),
        };
        if line.contains(&0) {
            return self.error(reply::NUL_IN_COMMAND);
        }
        match command::parse(&line) {
            Ok(Command::StartTls) => self.starttls(!input.is_empty()),
            Ok(command) => self.execute(command),
            Err(reply) => self.error(reply),
        }
    }

    fn execute(&mut self, command: Command) -> Step {
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail { path, params } => self.mail(&path, params),
            Command::Rcpt { path } => self.rcpt(&path),
            Command::Data => self.data(),
            Command::Rset => {
                self.transaction = None;
                Step::Reply(reply::OK)
            }
            Command::Noop => Step::Reply(reply::OK),
            Command::Vrfy => Step::Reply(reply::CANNOT_VRFY),
            Command::Help => Step::Reply(reply::HELP),
            Command::Quit => Step::Close(reply::BYE),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::StartTls | Command::NotImplemented => self.error(reply::NOT_IMPLEMENTED),
        }
    }

    /// RFC 4954, offered only under TLS.
    fn auth(&mut self, mechanism: Mechanism, initial: Option<String>) -> Step {
        let Some(auth) = &self.policy.auth else {
            return self.error(reply::NOT_IMPLEMENTED);
        };
        if !matches!(self.peer, Peer::Tcp(_)) {
            return self.error(reply::NOT_IMPLEMENTED);
        }
        if self.tls.is_none() {
            return self.error(reply::AUTH_NEEDS_TLS);
        }
        if self.helo.is_none() {
            return self.error(reply::NEED_HELO);
        }
        if self.user.is_some() {
            return self.error(reply::AUTH_ALREADY);
        }
        if self.transaction.is_some() {
            return self.error(reply::AUTH_IN_TRANSACTION);
        }
        if let Some(ip) = self.peer.ip()
            && !auth.may_try(ip)
        {
            return Step::Close(reply::AUTH_LOCKED_OUT);
        }
        match (mechanism, initial) {
            (Mechanism::Plain, Some(response)) => self.plain(&response),
            (Mechanism::Plain, None) => {
                self.mode = Mode::Auth(Exchange::Plain);
                Step::Reply(Reply::new(334, String::new()))
            }
            (Mechanism::Login, Some(response)) => self.login_name(&response),
            (Mechanism::Login, None) => {
                self.mode = Mode::Auth(Exchange::LoginName);
                Step::Reply(Reply::fixed(334, sasl::LOGIN_USER_PROMPT))
            }
            (Mechanism::Other, _) => self.error(reply::AUTH_UNKNOWN_MECHANISM),
        }
    }

    /// One response line of an AUTH exchange.
    fn auth_step(&mut self, input: &mut Vec<u8>) -> Step {
        let line = match self.next_line(input) {
            NextLine::Line(line) => line,
            NextLine::NeedInput => return Step::NeedInput,
            // A response too long to be one ends the exchange.
            NextLine::TooLong => {
                if matches!(self.mode, Mode::Auth(_)) {
                    self.mode = Mode::Command;
                }
                return self.error(reply::LINE_TOO_LONG);
            }
        };
        let Mode::Auth(exchange) = std::mem::replace(&mut self.mode, Mode::Command) else {
            unreachable!("auth_step is only reached in an AUTH exchange");
        };
        let Ok(text) = std::str::from_utf8(&line) else {
            return self.error(reply::AUTH_MALFORMED);
        };
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return self.error(reply::AUTH_ABORTED);
        }
        match exchange {
            Exchange::Plain => self.plain(text),
            Exchange::LoginName => self.login_name(text),
            Exchange::LoginPassword { name } => match sasl::decode(text) {
                Ok(password) => Step::Authenticate(Credentials { name, password }),
                Err(_) => self.error(reply::AUTH_MALFORMED),
            },
        }
    }

    fn plain(&mut self, response: &str) -> Step {
        match sasl::plain(response) {
            Ok(credentials) => Step::Authenticate(credentials),
            Err(_) => self.error(reply::AUTH_MALFORMED),
        }
    }

    fn login_name(&mut self, response: &str) -> Step {
        match sasl::login_name(response) {
            Ok(name) => {
                self.mode = Mode::Auth(Exchange::LoginPassword { name });
                Step::Reply(Reply::fixed(334, sasl::LOGIN_PASSWORD_PROMPT))
            }
            Err(_) => self.error(reply::AUTH_MALFORMED),
        }
    }

    /// RFC 3207. `more_input`: the client sent something behind the command without waiting
    /// for its reply.
    fn starttls(&mut self, more_input: bool) -> Step {
        if self.tls.is_some() {
            return self.error(reply::TLS_ACTIVE);
        }
        if !self.offers_starttls() {
            return self.error(reply::NOT_IMPLEMENTED);
        }
        if more_input {
            return Step::Close(reply::PIPELINED_AFTER_STARTTLS);
        }
        if self.transaction.is_some() {
            return self.error(reply::TLS_IN_TRANSACTION);
        }
        Step::StartTls(reply::READY_FOR_TLS)
    }

    /// EHLO/HELO, which also abort any transaction (RFC 5321 4.1.4).
    fn hello(&mut self, name: String, esmtp: bool) -> Step {
        self.transaction = None;
        self.helo = Some(name);
        self.esmtp = esmtp;
        let hostname = self.policy.intake.hostname();
        if !esmtp {
            return Step::Reply(Reply::new(250, hostname.to_string()));
        }
        let starttls = if self.offers_starttls() {
            "\nSTARTTLS"
        } else {
            ""
        };
        let auth = if self.offers_auth() {
            "\nAUTH PLAIN LOGIN"
        } else {
            ""
        };
        Step::Reply(Reply::new(
            250,
            format!(
                "{hostname}\nPIPELINING\nSIZE {}\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8{starttls}{auth}",
                self.policy.intake.max_message_size()
            ),
        ))
    }

    fn mail(&mut self, path: &str, params: MailParams) -> Step {
        if self.helo.is_none() {
            return self.error(reply::NEED_HELO);
        }
        if self.transaction.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        let user = self.user.as_ref().map(|user| user.name.as_str());
        if !self.policy.rates.may_send(self.peer.ip(), user) {
            return Step::Reply(reply::RATE_EXCEEDED);
        }
        let remote = matches!(self.peer, Peer::Tcp(ip) if !ip.is_loopback());
        if self.policy.require_tls && self.tls.is_none() && remote {
            return self.error(reply::TLS_REQUIRED);
        }
        if params
            .size
            .is_some_and(|size| size > self.policy.intake.max_message_size())
        {
            return self.error(reply::MESSAGE_TOO_BIG);
        }
        let sender = match model::parse_reverse_path(path, params.smtputf8) {
            Ok(sender) => sender,
            Err(error) => {
                return self.refuse(Refusal::BadAddress {
                    role: Role::Sender,
                    address: path.to_string(),
                    error,
                });
            }
        };
        if let Err(refusal) = self.policy.intake.check_sender(&sender) {
            return self.refuse(refusal);
        }
        if let Some(user) = &self.user
            && let Err(refusal) = self.policy.intake.check_user_sender(&sender, user)
        {
            return self.refuse(refusal);
        }
        self.transaction = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
        });
        self.transaction_since = Instant::now();
        Step::Reply(reply::SENDER_OK)
    }

    fn rcpt(&mut self, path: &str) -> Step {
        let Some(transaction) = &self.transaction else {
            return self.error(reply::NEED_MAIL);
        };
        let smtputf8 = transaction.params.smtputf8;
        let count = transaction.recipients.len();
        let recipient = match model::parse_forward_path(path, smtputf8) {
            Ok(recipient) => recipient,
            Err(error) => {
                return self.refuse(Refusal::BadAddress {
                    role: Role::Recipient,
                    address: path.to_string(),
                    error,
                });
            }
        };
        if let Err(refusal) = self.policy.intake.check_recipient(self.relay, &recipient) {
            return self.refuse(refusal);
        }
        if count >= self.policy.limits.max_recipients {
            return Step::Reply(reply::TOO_MANY_RECIPIENTS);
        }
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(recipient);
        }
        Step::Reply(reply::RECIPIENT_OK)
    }

    fn data(&mut self) -> Step {
        match &self.transaction {
            None => self.error(reply::NEED_MAIL),
            Some(t) if t.recipients.is_empty() => self.error(reply::NO_VALID_RECIPIENTS),
            Some(_) => {
                self.mode = Mode::Data(DataReceiver::new(self.policy.intake.max_message_size()));
                self.data_since = Instant::now();
                Step::Reply(reply::START_DATA)
            }
        }
    }

    /// The transaction ends here whatever the outcome (RFC 5321 4.1.1.4).
    fn end_of_data(&mut self) -> Step {
        let Mode::Data(receiver) = std::mem::replace(&mut self.mode, Mode::Command) else {
            unreachable!("end_of_data is only reached from data mode");
        };
        let Some(transaction) = self.transaction.take() else {
            unreachable!("data mode is only entered with a transaction");
        };
        self.idle_since = Instant::now();
        match receiver.finish() {
            DataOutcome::TooBig => self.error(reply::MESSAGE_TOO_BIG),
            DataOutcome::ContainsNul => self.error(reply::NUL_IN_MESSAGE),
            DataOutcome::Complete {
                body,
                bare_line_ends,
            } => {
                if bare_line_ends > 0 {
                    tracing::info!(peer = ?self.peer, bare_line_ends, "bare LF or CR in message normalised to CRLF");
                }
                let client = match &self.peer {
                    Peer::Tcp(ip) => Client::Smtp {
                        ip: *ip,
                        helo: self.helo.clone(),
                        esmtp: self.esmtp,
                        tls: self.tls.clone(),
                        user: self.user.clone(),
                    },
                    Peer::Local(user) => Client::Local(user.clone()),
                };
                Step::Message(Submission {
                    sender: transaction.sender,
                    recipients: transaction.recipients,
                    message: body,
                    client,
                    body_type: if transaction.params.eight_bit {
                        BodyType::EightBitMime
                    } else {
                        BodyType::SevenBit
                    },
                    smtputf8: transaction.params.smtputf8,
                })
            }
        }
    }

    /// A refusal of a command, as its cause's reply, logged with who was refused.
    fn refuse(&mut self, refusal: Refusal) -> Step {
        tracing::info!(peer = ?self.peer, %refusal, "refused");
        self.error(refusal.reply())
    }

    /// An error reply that counts towards `max_errors`; past it the session is closed.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors > self.policy.limits.max_errors {
            tracing::warn!(peer = ?self.peer, errors = self.errors, "too many errors; closing session");
            return Step::Close(reply::TOO_MANY_ERRORS);
        }
        Step::Reply(reply)
    }
}

#[cfg(test)]
mod tests;
