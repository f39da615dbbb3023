//! `sendmail`: the entry point cron, at and mail clients call. It builds a raw submission and
//! gives it to the intake — which commits it to the spool when this user may write it, and
//! otherwise hands the raw submission to the running daemon over its local socket. It exits 0
//! only once the message is durably queued, prints nothing when all went well, and exits
//! EX_TEMPFAIL (75) with the reason when neither way works. Never a silent 0.
//!
//! Nothing here needs the upstream credentials: only the process that delivers reads them.

pub(crate) mod args;
mod message;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use args::{Mode, SenderArg, SendmailArgs};

use crate::config::Config;
use crate::intake::{Client, Intake, LocalUser, Queue, Refusal, Role, Submission};
use crate::listener::{self, Peer, SessionContext, SessionPolicy};
use crate::model::{self, Address, BodyType, ReversePath};
use crate::spool::{self, SpoolWriter};
use crate::sysexits as exit;
use crate::telemetry::Metrics;

const USAGE: &str =
    "usage: sendmail [-t] [-i] [-f sender] [-F fullname] [-bm|-bs|-bp|-bi] [recipient ...]
  -t          recipients also from To, Cc and Bcc (Bcc is removed)
  -i, -oi     a line with a single dot does not end the message
  -f ADDR     envelope sender ('' or '<>' for the null sender)
  -F NAME     full name for the From header added when the message has none
  -bs         speak SMTP on standard input and output
  -bp         list the queue (mailq)
  -bi         rebuild aliases: nothing to do, aliases are rewrite.aliases in the config
  -v          say what happened
  --config PATH, --spool PATH   smarthost's configuration and spool";

pub fn main(raw_args: Vec<OsString>, config_path: Option<PathBuf>) -> ExitCode {
    let args = match args::parse(&raw_args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("sendmail: {error}\n{USAGE}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match args.mode {
        Mode::Help => {
            println!("{USAGE}");
            return ExitCode::from(exit::OK);
        }
        Mode::InitAliases => return ExitCode::from(exit::OK),
        _ => {}
    }
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
        Mode::Deliver | Mode::Help | Mode::InitAliases => block_on(deliver(config, args)),
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

/// Where this caller's mail goes: the spool when this user may write it, else the daemon.
struct Route {
    queue: Queue,
    /// The spool's writer task, when there is one: awaited after the last message.
    writer: Option<tokio::task::JoinHandle<spool::WriterStats>>,
    /// Why the spool is not used, for the message when the daemon cannot take it either.
    spool_unusable: Option<String>,
}

async fn route(config: &Config) -> Route {
    let daemon = |why: String| Route {
        queue: Queue::Daemon {
            socket: config.sendmail.socket.clone(),
        },
        writer: None,
        spool_unusable: Some(why),
    };
    if let Err(why) = spool::writable(&config.spool.path) {
        return daemon(why);
    }
    match SpoolWriter::start_local(&config.spool).await {
        Ok((spool, writer)) => Route {
            queue: Queue::Spool(spool),
            writer: Some(writer),
            spool_unusable: None,
        },
        Err(error) => daemon(error.to_string()),
    }
}

async fn deliver(config: Config, args: SendmailArgs) -> u8 {
    let mut user = LocalUser::current();
    if let Some(name) = args.full_name.as_deref().filter(|n| !n.trim().is_empty()) {
        user.full_name = Some(name.to_string());
    }
    let body = match message::read(
        std::io::stdin().lock(),
        args.ignore_dots,
        config.smtp.limits.max_message_size,
    ) {
        Ok(body) => body,
        Err(message::InputError::TooBig(limit)) => {
            return refused(&Refusal::TooBig { limit });
        }
        Err(error) => {
            eprintln!("sendmail: {error}; message not queued");
            return exit::TEMPFAIL;
        }
    };
    let mut recipient_texts = args.recipients.clone();
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
    let submission = match envelope(&config, &user, &args, &recipient_texts) {
        Ok((sender, recipients)) => Submission {
            sender,
            recipients,
            body_type: if body.is_ascii() {
                BodyType::SevenBit
            } else {
                BodyType::EightBitMime
            },
            message: body,
            client: Client::Local(user),
            smtputf8: false,
        },
        Err(refusal) => return refused(&refusal),
    };
    let Route {
        queue,
        writer,
        mut spool_unusable,
    } = route(&config).await;
    let intake = Intake::new(&config, queue);
    let mut outcome = intake.accept(submission.clone()).await;
    drop(intake);
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    // A spool that could be opened but not written (locked, full): the daemon may still
    // take it.
    if let Err(Refusal::Storage(error)) = &outcome {
        spool_unusable = Some(error.to_string());
        let daemon = Intake::new(
            &config,
            Queue::Daemon {
                socket: config.sendmail.socket.clone(),
            },
        );
        outcome = daemon.accept(submission).await;
    }
    match outcome {
        Ok(id) => {
            if args.verbose {
                eprintln!("sendmail: queued as {id}");
            }
            exit::OK
        }
        Err(Refusal::DaemonUnavailable(why)) => {
            eprintln!(
                "sendmail: message not queued: spool {}: {}; {why}. Try again later.",
                config.spool.path.display(),
                spool_unusable.unwrap_or_default()
            );
            exit::TEMPFAIL
        }
        Err(refusal) => refused(&refusal),
    }
}

/// Tells the caller why, and returns the exit status for it.
fn refused(refusal: &Refusal) -> u8 {
    eprintln!("sendmail: {refusal}; message not queued");
    refusal.exit_code()
}

/// The envelope as typed: the sender from `-f` or the calling user at our host name, and the
/// recipients. Unqualified names like `root` are allowed (identity repair routes them);
/// malformed addresses are not.
fn envelope(
    config: &Config,
    user: &LocalUser,
    args: &SendmailArgs,
    recipients: &[String],
) -> Result<(ReversePath, Vec<Address>), Refusal> {
    let sender = match &args.sender {
        None => ReversePath::Mailbox(parse(
            &format!("{}@{}", user.name, config.hostname),
            Role::Sender,
        )?),
        Some(SenderArg::Null) => ReversePath::Null,
        Some(SenderArg::Address(text)) => ReversePath::Mailbox(parse(text, Role::Sender)?),
    };
    let recipients = recipients
        .iter()
        .map(|text| parse(text, Role::Recipient))
        .collect::<Result<_, _>>()?;
    Ok((sender, recipients))
}

fn parse(text: &str, role: Role) -> Result<Address, Refusal> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(trimmed);
    model::parse_forward_path(inner, true).map_err(|error| Refusal::BadAddress {
        role,
        address: text.to_string(),
        error,
    })
}

/// `-bs`: an SMTP session on standard input and output, through the same state machine and
/// intake as the listener; the intake hands each message to the daemon when this user may not
/// write the spool. Exits non-zero when the input ends inside a transaction, or without QUIT
/// and without any message queued (the caller's message is then not queued).
async fn smtp_on_stdio(config: Config) -> u8 {
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let Route { queue, writer, .. } = route(&config).await;
    let context = SessionContext {
        policy: Arc::new(SessionPolicy {
            limits: config.smtp.limits.clone(),
            intake: Arc::new(Intake::new(&config, queue)),
            // A local user on a pipe: nothing to encrypt, nobody to require it from.
            starttls: false,
            require_tls: false,
            auth: None,
            rates: Arc::new(crate::policy::MessageRates::new(0, 0)),
        }),
        // A one-session process has nobody to report to; the counts are dropped.
        metrics: Arc::new(Metrics::new()),
        tls: None,
    };
    // Nothing asks a -bs session to stop early; the sender is kept alive till the end.
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    let end = listener::run_connection(
        stdio,
        Peer::Local(LocalUser::current()),
        context,
        shutdown,
        None,
    )
    .await;
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    if end.open_transaction || (!end.quit && end.queued == 0) {
        exit::TEMPFAIL
    } else {
        exit::OK
    }
}
