//! `smarthost queue`: see and steer the queue, like Postfix's mailq, postqueue, postsuper
//! and qshape. Every subcommand works on the same spool as the daemon, while it runs or not,
//! prints a table by default and stable JSON with `--json`.

mod check;
mod list;
mod nodes;
mod show;
mod stats;
mod steer;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use crate::config::Config;
use crate::spool::{self, OpenMode, QueueAdmin, SpoolError, StoreQueue};
use crate::sysexits as exit;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List messages with their recipients' states (default: those not yet delivered).
    List {
        #[arg(long, value_enum, default_value = "pending")]
        state: StateArg,
        /// Only messages whose sender contains this text.
        #[arg(long)]
        sender: Option<String>,
        /// Only messages with a recipient containing this text.
        #[arg(long)]
        recipient: Option<String>,
        /// Only messages older than this (e.g. 1h, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Show the envelope as it arrived, before rewriting.
        #[arg(long)]
        original: bool,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one message: envelope, rewrites, headers, every attempt.
    Show {
        id: String,
        /// Print the whole stored message too.
        #[arg(long)]
        body: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make deferred mail due now (postqueue -f / -i).
    Retry {
        ids: Vec<String>,
        #[arg(long, conflicts_with_all = ["ids", "deferred"])]
        all: bool,
        #[arg(long, conflicts_with = "ids")]
        deferred: bool,
    },
    /// Hold messages: never delivered or expired until released.
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages (held by an operator, a configuration error or a failed bounce).
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete messages. Asks first on a terminal unless --yes.
    Delete {
        ids: Vec<String>,
        #[arg(long, value_enum, conflicts_with = "ids")]
        state: Option<StateArg>,
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "ids")]
        older_than: Option<Duration>,
        #[arg(long)]
        yes: bool,
    },
    /// Counts and bytes by state, and pending recipients by domain and age (qshape).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The relays sharing a PostgreSQL spool: status, last heartbeat, mail in flight, and
    /// leases the others took over from them.
    Nodes {
        /// Nodes heard from within this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        within: Duration,
        #[arg(long)]
        json: bool,
    },
    /// One line and a Nagios/Icinga exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
        warn_age: Duration,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2h")]
        crit_age: Duration,
        #[arg(long, default_value_t = 100)]
        warn_depth: i64,
        #[arg(long, default_value_t = 1000)]
        crit_depth: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// queued, deferred or held
    Pending,
    Queued,
    Deferred,
    Held,
    Delivered,
    Bounced,
    All,
}

impl StateArg {
    fn states(self) -> Vec<String> {
        let names: &[&str] = match self {
            StateArg::Pending => spool::PENDING_STATES,
            StateArg::All => spool::ALL_STATES,
            StateArg::Queued => &["queued"],
            StateArg::Deferred => &["deferred"],
            StateArg::Held => &["held"],
            StateArg::Delivered => &["delivered"],
            StateArg::Bounced => &["bounced"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

/// A failed queue command: what to tell the operator, and the exit code.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<SpoolError> for Failure {
    fn from(error: SpoolError) -> Failure {
        let code = match error {
            SpoolError::Open { .. } => exit::NOINPUT,
            SpoolError::NewerSchema { .. } | SpoolError::OlderSchema { .. } => exit::DATAERR,
            SpoolError::NoSpace(_) => exit::TEMPFAIL,
            _ => exit::SOFTWARE,
        };
        Failure::new(code, error.to_string())
    }
}

pub fn run(config: &Config, command: QueueCommand) -> ExitCode {
    if let QueueCommand::Check {
        warn_age,
        crit_age,
        warn_depth,
        crit_depth,
    } = command
    {
        let thresholds = check::Thresholds {
            warn_age,
            crit_age,
            warn_depth,
            crit_depth,
        };
        return ExitCode::from(block_on(check::run(config, thresholds)));
    }
    let mode = match command {
        QueueCommand::List { .. }
        | QueueCommand::Show { .. }
        | QueueCommand::Stats { .. }
        | QueueCommand::Nodes { .. } => OpenMode::Read,
        _ => OpenMode::Existing,
    };
    let outcome = block_on(async {
        let queue = StoreQueue::open(&config.spool, mode).await?;
        dispatch(&queue, command).await
    });
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("smarthost queue: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn block_on<T>(work: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(work)
}

async fn dispatch(queue: &StoreQueue, command: QueueCommand) -> Result<(), Failure> {
    match command {
        QueueCommand::List {
            state,
            sender,
            recipient,
            older_than,
            original,
            json,
        } => list::run(queue, state, sender, recipient, older_than, original, json).await,
        QueueCommand::Show { id, body, json } => show::run(queue, &id, body, json).await,
        QueueCommand::Retry { ids, all, deferred } => steer::retry(queue, ids, all, deferred).await,
        QueueCommand::Hold { ids } => steer::hold(queue, ids).await,
        QueueCommand::Release { ids } => steer::release(queue, ids).await,
        QueueCommand::Delete {
            ids,
            state,
            older_than,
            yes,
        } => steer::delete(queue, ids, state, older_than, yes).await,
        QueueCommand::Stats { json } => stats::run(queue, json).await,
        QueueCommand::Nodes { within, json } => nodes::run(queue, within, json).await,
        QueueCommand::Check { .. } => unreachable!("handled before the spool is opened"),
    }
}

/// Full IDs for what the operator typed: each a full ID or a unique prefix.
async fn resolve(queue: &impl QueueAdmin, typed: &[String]) -> Result<Vec<String>, Failure> {
    let mut ids = Vec::with_capacity(typed.len());
    for prefix in typed {
        let matches = queue.ids_with_prefix(prefix).await?;
        match matches.as_slice() {
            [] => {
                return Err(Failure::new(
                    exit::DATAERR,
                    format!("no message with ID {prefix}"),
                ));
            }
            [one] => ids.push(one.clone()),
            many => {
                return Err(Failure::new(
                    exit::DATAERR,
                    format!(
                        "ID prefix {prefix} is ambiguous: it matches {} and more; type more of it",
                        many.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(ids)
}

/// A unix-ms time as `2026-11-22 22:01:26` (UTC).
fn time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// An age as the largest unit or two: `45s`, `12m`, `3h5m`, `2d4h`.
fn age(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_an_operator_writes_them() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(12 * 60_000 + 5_000), "12m");
        assert_eq!(age((3 * 3600 + 5 * 60) * 1000), "3h5m");
        assert_eq!(age((2 * 86400 + 4 * 3600) * 1000), "2d4h");
        assert_eq!(time(1_795_000_000_000), "2026-11-18 11:06:40");
    }
}
