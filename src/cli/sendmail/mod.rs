//! `sendmail`: the entry point cron, at and mail clients call. It exits 0 only once the message
//! is durably queued: written straight into the spool when this user may, otherwise handed to
//! the running daemon over SMTP; when neither works it exits EX_TEMPFAIL (75) and says why.
//! Never a silent 0.

mod args;
mod handoff;
mod message;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use args::{Mode, SenderArg, SendmailArgs};

use super::exit;
use crate::config::Config;
use crate::envelope::Address;
use crate::intake::{self, Submission};
use crate::listener::{self, Intake, Peer, SessionPolicy};
use crate::policy::routing_trick;
use crate::received;
use crate::rewrite::Rewriter;
use crate::spool::{BodyType, NewMessage, Origin, QueueId, Spool, SpoolError};
use crate::telemetry::Metrics;

const USAGE: &str =
    "usage: sendmail [-t] [-i] [-f sender] [-F fullname] [-bm|-bs|-bp] [recipient ...]";

pub fn main(raw_args: Vec<OsString>, config_path: Option<PathBuf>) -> ExitCode {
    let args = match args::parse(&raw_args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("sendmail: {error}\n{USAGE}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let spool = args
        .spool
        .clone()
        .or_else(|| std::env::var_os("SMARTHOST_SPOOL").map(PathBuf::from));
    let config = match super::load_config(args.config.clone().or(config_path), spool) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sendmail: {error}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    match args.mode {
        Mode::PrintQueue => super::mailq::run(&config),
        Mode::Smtp => block_on(smtp_on_stdio(config)),
        Mode::Deliver => block_on(deliver(config, args)),
    }
}

fn block_on(work: impl Future<Output = u8>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => ExitCode::from(runtime.block_on(work)),
        Err(error) => {
            eprintln!("sendmail: cannot start the runtime: {error}; message not queued");
            ExitCode::from(exit::TEMPFAIL)
        }
    }
}

/// The user running the command: recorded as the submitter and the default sender's local part.
struct LocalUser {
    name: String,
    uid: u32,
}

fn local_user() -> LocalUser {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|user| user.name)
        .unwrap_or_else(|| uid.to_string());
    LocalUser {
        name,
        uid: uid.as_raw(),
    }
}

async fn deliver(config: Config, args: SendmailArgs) -> u8 {
    let user = local_user();
    let body = match message::read(
        std::io::stdin().lock(),
        args.ignore_dots,
        config.smtp.limits.max_message_size,
    ) {
        Ok(body) => body,
        Err(message::InputError::TooBig(limit)) => {
            eprintln!(
                "sendmail: message is larger than {limit} bytes (smtp.max_message_size); not queued"
            );
            return exit::DATAERR;
        }
        Err(error) => {
            eprintln!("sendmail: {error}; message not queued");
            return exit::TEMPFAIL;
        }
    };
    let (mut recipient_texts, body) = (args.recipients.clone(), body);
    let body = if args.extract_recipients {
        let (from_headers, without_bcc) = message::extract_recipients(&body);
        recipient_texts.extend(from_headers);
        without_bcc
    } else {
        body
    };
    if recipient_texts.is_empty() {
        eprintln!(
            "sendmail: no recipients: name them on the command line, or use -t with To/Cc/Bcc headers\n{USAGE}"
        );
        return exit::USAGE;
    }
    let recipients = match parse_addresses(&recipient_texts) {
        Ok(recipients) => recipients,
        Err(error) => {
            eprintln!("sendmail: {error}; message not queued");
            return exit::DATAERR;
        }
    };
    let sender = match &args.sender {
        None => format!("{}@{}", user.name, config.hostname),
        Some(SenderArg::Null) => String::new(),
        Some(SenderArg::Address(text)) => match parse_addresses(std::slice::from_ref(text)) {
            Ok(_) => text.clone(),
            Err(error) => {
                eprintln!("sendmail: sender {error}; message not queued");
                return exit::DATAERR;
            }
        },
    };
    let rewriter = Rewriter::from_config(&config);
    if let Some(unroutable) = recipients.iter().find(|r| rewriter.route(r).is_err()) {
        eprintln!(
            "sendmail: {unroutable}: local recipient with no alias; set rewrite.aliases or rewrite.admin_address. Message not queued"
        );
        return exit::NOUSER;
    }
    let body = message::ensure_from(body, &sender, args.full_name.as_deref());
    let id = QueueId::generate();
    let submission = Submission {
        id: id.clone(),
        sender,
        recipients,
        message: &body,
        received: received::local_header(&config.hostname, user.uid, &id),
        origin: Origin {
            helo: None,
            client_addr: None,
            submitter: Some(user.name),
            protocol: "LOCAL",
        },
        body_type: if body.is_ascii() {
            BodyType::SevenBit
        } else {
            BodyType::EightBitMime
        },
        smtputf8: false,
    };
    let message = match intake::prepare(&rewriter, submission) {
        Ok(message) => message,
        Err(recipient) => {
            eprintln!("sendmail: {recipient}: no route; message not queued");
            return exit::NOUSER;
        }
    };
    let direct_error = match enqueue_directly(&config, message.clone()).await {
        Ok(()) => {
            if args.verbose {
                eprintln!("sendmail: queued as {id}");
            }
            return exit::OK;
        }
        Err(error) => error,
    };
    match handoff::handoff(config.smtp.listen, &message).await {
        Ok(daemon_id) => {
            if args.verbose {
                eprintln!(
                    "sendmail: spool not writable ({direct_error}); handed to the daemon, queued as {daemon_id}"
                );
            }
            exit::OK
        }
        Err(handoff_error) => {
            eprintln!(
                "sendmail: message not queued: spool {}: {direct_error}; daemon at {}: {handoff_error}. Try again later.",
                config.spool.path.display(),
                config.smtp.listen
            );
            exit::TEMPFAIL
        }
    }
}

/// Recipient (or sender) addresses as typed: unqualified names like `root` are allowed (the
/// rewrite stage qualifies them); routing tricks and malformed addresses are not.
fn parse_addresses(texts: &[String]) -> Result<Vec<String>, String> {
    texts
        .iter()
        .map(|text| {
            let inner = text
                .trim()
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(text.trim());
            let address =
                Address::parse(inner, true).map_err(|e| format!("address '{text}': {e}"))?;
            if let Some(trick) = routing_trick(&address) {
                return Err(format!("address '{text}': {}", trick.describe()));
            }
            Ok(address.to_string())
        })
        .collect()
}

async fn enqueue_directly(config: &Config, message: NewMessage) -> Result<(), SpoolError> {
    let (spool, writer) = Spool::start(&config.spool).await?;
    let result = spool.enqueue(message).await;
    drop(spool);
    let _ = writer.await;
    result
}

/// `-bs`: an SMTP session on standard input and output, through the same state machine as the
/// listener. If this user cannot write the spool, the session is relayed to the daemon.
async fn smtp_on_stdio(config: Config) -> u8 {
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    match Spool::start(&config.spool).await {
        Ok((spool, writer)) => {
            let user = local_user();
            let intake = Intake {
                policy: Arc::new(SessionPolicy::from_config(&config)),
                spool,
                // A one-session process has nobody to report to; the counts are dropped.
                metrics: Arc::new(Metrics::new()),
            };
            // Nothing asks a -bs session to stop early; the sender is kept alive till the end.
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            listener::run_connection(
                stdio,
                Peer::Local {
                    user: user.name,
                    uid: user.uid,
                },
                intake,
                shutdown,
            )
            .await;
            let _ = writer.await;
            exit::OK
        }
        Err(spool_error) => relay_to_daemon(&config, stdio, spool_error).await,
    }
}

async fn relay_to_daemon(
    config: &Config,
    mut stdio: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    spool_error: SpoolError,
) -> u8 {
    match tokio::net::TcpStream::connect(config.smtp.listen).await {
        Ok(mut daemon) => {
            let _ = tokio::io::copy_bidirectional(&mut stdio, &mut daemon).await;
            exit::OK
        }
        Err(error) => {
            let reason = format!(
                "spool {}: {spool_error}; daemon at {}: {error}",
                config.spool.path.display(),
                config.smtp.listen
            );
            eprintln!("sendmail: cannot take mail: {reason}");
            // The SMTP client on the other end hears it too, in its own protocol.
            let reply = format!(
                "421 4.3.0 {} cannot take mail now, try again later\r\n",
                config.hostname
            );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdio, reply.as_bytes()).await;
            exit::TEMPFAIL
        }
    }
}
