//! Logging: human-readable lines by default, JSON lines with `--log-format json`; always on
//! standard error, because `sendmail -bs` speaks SMTP on standard output. `RUST_LOG` overrides
//! the level.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// `default_level` is what a command logs without RUST_LOG: `info` for the daemon, `warn`
/// for commands whose callers (cron) treat any output as something to mail.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour codes only for a person at a terminal: cron mails stderr, PHP logs it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

mod http;
mod metrics;
pub mod systemd;

pub use http::serve_metrics;
pub use metrics::{Metrics, QueueGauges};
