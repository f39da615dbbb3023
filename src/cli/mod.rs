//! The command line: one file per subcommand; `main` only dispatches here.

mod check_config;
mod generate;
mod mailq;
mod preflight;
mod queue;
pub(crate) mod sendmail;
mod serve;
mod ses_password;
mod user;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::sysexits as exit;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "smarthost",
    version,
    about = "A hardened outbound mail relay for cloud VMs",
    after_long_help = "The configuration file is described in smarthost.toml(5); the sendmail, mailq and newaliases interface in sendmail(8)."
)]
pub struct Cli {
    /// Configuration file (default: /etc/smarthost/smarthost.toml when it exists, else
    /// built-in defaults).
    #[arg(long, global = true, env = "SMARTHOST_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Spool database, overriding spool.path (a relative path is taken from the current
    /// directory).
    #[arg(long, global = true, env = "SMARTHOST_SPOOL", value_name = "PATH")]
    spool: Option<PathBuf>,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay: SMTP listener and spool.
    Serve {
        /// Listen address, overriding smtp.listen (port 0 picks a free port and logs it).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Metrics address, overriding metrics.listen, so that instances side by side each
        /// serve their own (port 0 picks a free port and logs it).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<SocketAddr>,
    },
    /// sendmail-compatible submission (also when invoked as `sendmail`). Takes sendmail's own
    /// flags; `--spool PATH` may come first.
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// List the queue, like Postfix's mailq (also when invoked as `mailq`).
    Mailq,
    /// See and steer the queue: list, show, retry, hold, release, delete, stats, check.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Audit DNS (HELO, reverse DNS, sender domains, SPF, DMARC), the upstreams (TLS, AUTH)
    /// and the local setup; exit 0 all passed, 1 warnings, 2 failures.
    Preflight {
        /// Audit this sender domain too (repeatable).
        #[arg(long = "sender-domain", value_name = "DOMAIN")]
        sender_domains: Vec<String>,
        /// Do not connect to the upstreams.
        #[arg(long)]
        no_upstream: bool,
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and exit.
    CheckConfig,
    /// Manage the SMTP AUTH users (smtp.auth.users_file): add, remove, list.
    User {
        /// The users file, overriding smtp.auth.users_file.
        #[arg(long, value_name = "PATH")]
        users_file: Option<PathBuf>,
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Print the Amazon SES SMTP password for the IAM secret access key on standard input.
    SesPassword {
        /// The SES region the password is for, such as eu-west-1.
        #[arg(long, value_name = "REGION")]
        region: String,
    },
    /// Write the man pages or the shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        artifact: generate::Artifact,
        dir: PathBuf,
    },
}

/// Entry point after argv[0] dispatch: `smarthost <command>`.
pub fn run(cli: Cli) -> ExitCode {
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    telemetry::init(cli.log_format, default_level);
    let (config_path, spool) = (cli.config, cli.spool);
    match cli.command {
        Command::Serve {
            listen,
            metrics_listen,
        } => with_config(config_path.clone(), spool, |mut config| {
            if let Some(listen) = listen {
                config.smtp.listen = listen;
            }
            if let Some(metrics_listen) = metrics_listen {
                config.metrics_listen = Some(metrics_listen);
            }
            serve::run(config, config_path)
        }),
        Command::Sendmail { mut args } => {
            // The global --spool was taken by clap; sendmail's own parser reads it from here.
            if let Some(spool) = spool {
                args.insert(0, spool.into_os_string());
                args.insert(0, "--spool".into());
            }
            sendmail::main(args, config_path)
        }
        Command::Mailq => with_config(config_path, spool, |c| mailq::run(&c)),
        Command::Preflight {
            sender_domains,
            no_upstream,
            json,
        } => with_config(config_path, spool, |c| {
            let options = crate::preflight::Options {
                sender_domains,
                probe_upstreams: !no_upstream,
            };
            preflight::run(&c, options, json)
        }),
        Command::Queue { command } => with_config(config_path, spool, |c| queue::run(&c, command)),
        Command::CheckConfig => check_config::run(config_path, spool),
        Command::SesPassword { region } => ses_password::run(&region),
        Command::Generate { artifact, dir } => match generate::run(artifact, &dir) {
            Ok(written) => {
                println!("{}", written.join("\n"));
                ExitCode::from(exit::OK)
            }
            Err(error) => {
                eprintln!("smarthost: cannot write into {}: {error}", dir.display());
                ExitCode::from(exit::CANTCREAT)
            }
        },
        Command::User {
            users_file,
            command,
        } => with_config(config_path, spool, |c| user::run(&c, users_file, command)),
    }
}

/// The names a program answers to besides `smarthost`: argv[0]'s file name decides, as it
/// does for every MTA's sendmail. Both binaries (`smarthost` and the package's lean
/// `smarthost-sendmail`) dispatch here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Sendmail,
    Mailq,
    Newaliases,
}

impl Personality {
    /// The personality argv[0] names, if any.
    pub fn of(argv0: Option<&OsString>) -> Option<Personality> {
        let name = argv0
            .and_then(|arg0| std::path::Path::new(arg0).file_name())
            .and_then(|name| name.to_str())?;
        match name {
            "sendmail" => Some(Personality::Sendmail),
            "mailq" => Some(Personality::Mailq),
            "newaliases" => Some(Personality::Newaliases),
            _ => None,
        }
    }

    /// Runs it with the arguments after argv[0].
    pub fn run(self, args: Vec<OsString>) -> ExitCode {
        match self {
            // The whole command line is sendmail's. It reports its own outcome (exit status,
            // one line on stderr when something is wrong); log lines would land in cron mail
            // and PHP error logs, so only errors are logged.
            Personality::Sendmail => {
                telemetry::init(LogFormat::Human, "error");
                sendmail::main(
                    args,
                    std::env::var_os("SMARTHOST_CONFIG").map(PathBuf::from),
                )
            }
            Personality::Mailq => {
                telemetry::init(LogFormat::Human, "warn");
                let config = std::env::var_os("SMARTHOST_CONFIG").map(PathBuf::from);
                let spool = std::env::var_os("SMARTHOST_SPOOL").map(PathBuf::from);
                with_config(config, spool, |c| mailq::run(&c))
            }
            // Debian links newaliases to the MTA's sendmail, and package scripts call it:
            // aliases are `rewrite.aliases` in the configuration, so there is nothing to
            // rebuild.
            Personality::Newaliases => ExitCode::from(exit::OK),
        }
    }
}

/// Loads and validates the configuration (applying a `--spool` override), or explains why not.
fn with_config(
    path: Option<PathBuf>,
    spool: Option<PathBuf>,
    command: impl FnOnce(Config) -> ExitCode,
) -> ExitCode {
    match load_config(path, spool) {
        Ok(config) => command(config),
        Err(error) => {
            eprintln!("smarthost: {error}");
            ExitCode::from(exit::CONFIG)
        }
    }
}

fn load_config(
    path: Option<PathBuf>,
    spool: Option<PathBuf>,
) -> Result<Config, crate::config::ConfigError> {
    let mut config = Config::load(path.as_deref())?;
    if let Some(spool) = spool {
        // Made absolute once, here: the daemon and delivery never depend on where they run.
        config.spool.path = std::path::absolute(&spool).unwrap_or(spool);
    }
    Ok(config)
}
