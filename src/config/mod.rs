//! Configuration: `RawConfig` is what the TOML file says (unknown keys refused), `Config` is
//! what it means once validated. Every command validates once, at start, and then works with a
//! `Config` that cannot be invalid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod delivery;
mod rewrite;
mod ses_smtp;
mod smtp;
mod upstream;

pub use delivery::{DeliveryConfig, RetryPolicy};
pub use rewrite::RewriteConfig;
pub use ses_smtp::{is_region, smtp_password as ses_smtp_password};
pub use smtp::{AuthConfig, SessionLimits, SmtpConfig, TlsFiles};
use smtp::{RawSmtp, validate_smtp};
pub use upstream::{
    Credentials, PasswordSource, Secret, SecretSource, SesApi, SmtpServer, TlsMode, Transport,
    Upstream,
};

/// Where `--config` points when it is not given, if the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smarthost/smarthost.toml";
/// A lease longer than this on a shared spool is worth a warning: it is how long a dead
/// node's mail waits.
const FLEET_LEASE_ADVICE: Duration = Duration::from_secs(300);

/// Absolute, so that every caller reaches the same spool from any working directory (cron
/// runs jobs in the user's home directory).
pub const DEFAULT_SPOOL_PATH: &str = "/var/spool/smarthost/spool.db";
pub const DEFAULT_SENDMAIL_SOCKET: &str = "/run/smarthost/sendmail.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    rewrite: rewrite::RawRewrite,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    preflight: RawPreflight,
    #[serde(default)]
    sendmail: RawSendmail,
    /// `[[upstream]]` tables, in priority order.
    #[serde(default)]
    upstream: Vec<upstream::RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDns {
    nameservers: Vec<String>,
    timeout: String,
}

impl Default for RawDns {
    fn default() -> RawDns {
        RawDns {
            nameservers: Vec::new(),
            timeout: "3s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPreflight {
    public_ip: Option<String>,
    metadata_url: Option<String>,
    interval: String,
    enforce: String,
    probe_upstreams: bool,
}

impl Default for RawPreflight {
    fn default() -> RawPreflight {
        RawPreflight {
            public_ip: None,
            metadata_url: None,
            interval: "1h".into(),
            enforce: "warn".into(),
            probe_upstreams: false,
        }
    }
}

/// `[dns]`: which servers the preflight audit asks.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// `[preflight]`: what the audit cannot find out by itself, and how `serve` runs it.
#[derive(Debug, Clone)]
pub struct PreflightConfig {
    /// The address receivers see this VM send from, for the reverse DNS check.
    pub public_ip: Option<std::net::IpAddr>,
    /// An http:// URL that answers with that address (a cloud metadata service). Never
    /// contacted unless set.
    pub metadata_url: Option<String>,
    /// How often `serve` runs the DNS checks (also at start and on SIGHUP); `None` ("0s")
    /// when the daemon never runs them.
    pub interval: Option<Duration>,
    pub enforce: Enforce,
    /// Whether the daemon's runs connect to the upstreams (AUTH included) too.
    pub probe_upstreams: bool,
}

/// `preflight.enforce`: what a sender domain whose SPF does not authorize the upstream means
/// for its mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforce {
    /// Deliver it, log and count the failure.
    Warn,
    /// Hold it as a configuration error until a check passes (never bounce it).
    Hold,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSendmail {
    socket: PathBuf,
}

impl Default for RawSendmail {
    fn default() -> RawSendmail {
        RawSendmail {
            socket: PathBuf::from(DEFAULT_SENDMAIL_SOCKET),
        }
    }
}

/// `[sendmail]`: how a `sendmail` caller who may not write the spool reaches the daemon.
#[derive(Debug, Clone)]
pub struct SendmailConfig {
    /// The daemon's local hand-off socket (it learns the submitting user from the kernel).
    pub socket: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSpool {
    path: PathBuf,
    url: Option<String>,
    busy_timeout: String,
}

impl Default for RawSpool {
    fn default() -> RawSpool {
        RawSpool {
            path: PathBuf::from(DEFAULT_SPOOL_PATH),
            url: None,
            busy_timeout: "5s".into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our own name: in the greeting, in Received headers, and the domain of local senders.
    pub hostname: String,
    pub smtp: SmtpConfig,
    pub spool: SpoolConfig,
    pub delivery: DeliveryConfig,
    pub rewrite: RewriteConfig,
    /// The name given in EHLO to upstreams (never an internal one); empty when there are no
    /// upstreams to greet.
    pub upstream_helo: String,
    /// Where `/metrics` and `/healthz` are served; None: not served.
    pub metrics_listen: Option<SocketAddr>,
    pub dns: DnsConfig,
    pub preflight: PreflightConfig,
    pub sendmail: SendmailConfig,
    /// Things that work but deserve the operator's attention, logged at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The SQLite spool; with `url` set, the node's maildrop (what `sendmail` commits to).
    pub path: PathBuf,
    /// A PostgreSQL store shared by a fleet of relays (sqlx URL forms, a Unix socket
    /// directory included); None: the SQLite file at `path` is the queue.
    pub url: Option<String>,
    /// How long a writer waits for a lock held by another process (SQLite), or for a
    /// connection to the shared store, before giving up (`451`/`452`).
    pub busy_timeout: Duration,
}

impl Config {
    /// Loads `path`, or the default path when it exists, or the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default = Path::new(DEFAULT_CONFIG_PATH);
        let chosen = match path {
            Some(path) => Some(path),
            None if default.exists() => Some(default),
            None => None,
        };
        match chosen {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|error| match error {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_path_buf(),
                        message,
                    },
                    other => other,
                })
            }
            None => Config::from_raw(RawConfig::default()),
        }
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: PathBuf::new(),
            message: error.to_string(),
        })?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let hostname = match raw.hostname {
            Some(name) => name,
            None => system_hostname()?,
        };
        validate_hostname(&hostname)?;
        let mut warnings = Vec::new();
        let delivery = delivery::validate(raw.delivery, raw.upstream)?;
        let rewrite = rewrite::validate(raw.rewrite)?;
        let upstream_helo = if delivery.upstreams.is_empty() {
            String::new()
        } else {
            rewrite::upstream_helo(&rewrite, &hostname, &mut warnings)?
        };
        if rewrite.internal_names.is_internal(&hostname)
            && rewrite.sender_domain.is_none()
            && rewrite.internal_sender.is_none()
        {
            warnings.push(format!(
                "host name '{hostname}' is internal and neither rewrite.sender_domain nor rewrite.internal_sender is set: local senders such as root@{hostname} are sent as they are, and upstreams will refuse them"
            ));
        }
        if raw.spool.url.is_some() && delivery.lease > FLEET_LEASE_ADVICE {
            warnings.push(format!(
                "spool.url is set and delivery.lease is {}: mail a dead or cut-off relay had in flight waits that long before another takes it over; set delivery.lease a little above the longest attempt you expect, and delivery.command_timeout and data_timeout below it (an attempt that outlives its lease may be sent twice, never lost)",
                humantime::format_duration(delivery.lease)
            ));
        }
        Ok(Config {
            hostname,
            smtp: validate_smtp(raw.smtp)?,
            spool: SpoolConfig {
                path: absolute("spool.path", raw.spool.path)?,
                url: match raw.spool.url {
                    Some(url)
                        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") =>
                    {
                        return Err(invalid(
                            "spool.url",
                            "must be a PostgreSQL URL (postgresql://USER@HOST/DATABASE); leave it out to use the SQLite file at spool.path",
                        ));
                    }
                    url => url,
                },
                // SQLite takes it in milliseconds as a C int; a writer waiting longer than a
                // few minutes is a stuck spool, not a busy one.
                busy_timeout: duration_at_most(
                    "spool.busy_timeout",
                    &raw.spool.busy_timeout,
                    Duration::from_secs(600),
                )?,
            },
            delivery,
            rewrite,
            upstream_helo,
            metrics_listen: raw
                .metrics
                .listen
                .map(|text| {
                    text.parse().map_err(|_| {
                        invalid(
                            "metrics.listen",
                            format!("'{text}' is not an ADDRESS:PORT such as 127.0.0.1:9925"),
                        )
                    })
                })
                .transpose()?,
            dns: DnsConfig {
                nameservers: raw
                    .dns
                    .nameservers
                    .iter()
                    .enumerate()
                    .map(|(index, text)| {
                        text.parse().map_err(|_| {
                            invalid(
                                format!("dns.nameservers[{index}]"),
                                format!("'{text}' is not an ADDRESS:PORT such as 127.0.0.1:53"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                timeout: duration("dns.timeout", &raw.dns.timeout)?,
            },
            preflight: PreflightConfig {
                public_ip: raw
                    .preflight
                    .public_ip
                    .map(|text| {
                        text.parse().map_err(|_| {
                            invalid(
                                "preflight.public_ip",
                                format!("'{text}' is not an IP address"),
                            )
                        })
                    })
                    .transpose()?,
                metadata_url: match raw.preflight.metadata_url {
                    Some(url) if !url.starts_with("http://") => {
                        return Err(invalid(
                            "preflight.metadata_url",
                            format!("'{url}' is not an http:// URL"),
                        ));
                    }
                    other => other,
                },
                interval: match raw.preflight.interval.trim() {
                    "0" | "0s" => None,
                    text => Some(duration("preflight.interval", text)?),
                },
                enforce: match raw.preflight.enforce.as_str() {
                    "warn" => Enforce::Warn,
                    "hold" => Enforce::Hold,
                    other => {
                        return Err(invalid(
                            "preflight.enforce",
                            format!("'{other}' is neither \"warn\" nor \"hold\""),
                        ));
                    }
                },
                probe_upstreams: raw.preflight.probe_upstreams,
            },
            sendmail: SendmailConfig {
                socket: absolute("sendmail.socket", raw.sendmail.socket)?,
            },
            warnings,
        })
    }
}

/// Paths in the file must be absolute: a relative one would mean a different file for every
/// caller's working directory.
pub(crate) fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(invalid(
            key,
            format!(
                "'{}' is relative; give an absolute path such as {}",
                path.display(),
                match key {
                    "spool.path" => DEFAULT_SPOOL_PATH,
                    _ => DEFAULT_SENDMAIL_SOCKET,
                }
            ),
        ))
    }
}

/// The longest any duration may be: a year is past every sensible timeout, lifetime or
/// retention, and far from the overflows of the clocks and timers they feed.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

pub(crate) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    duration_at_most(key, text, MAX_DURATION)
}

/// A duration above zero and at most `max`.
pub(crate) fn duration_at_most(
    key: &str,
    text: &str,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let value = humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("'{text}' is not a duration such as 30s or 5m: {e}"),
        )
    })?;
    if value.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    if value > max {
        return Err(invalid(
            key,
            format!("must be at most {}", humantime::format_duration(max)),
        ));
    }
    Ok(value)
}

/// A count from 1 to `max`.
pub(crate) fn count_within(key: &str, value: u64, max: u64) -> Result<u64, ConfigError> {
    match value {
        0 => Err(invalid(key, "must be at least 1")),
        n if n > max => Err(invalid(key, format!("must be at most {max}"))),
        n => Ok(n),
    }
}

fn system_hostname() -> Result<String, ConfigError> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid("hostname", "the system host name cannot be read; set it"))
}

fn validate_hostname(name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "hostname",
            format!("'{name}' is not a valid host name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_and_trust_only_it() {
        let config = Config::from_toml("hostname = \"relay.example.com\"").unwrap();
        assert_eq!(config.smtp.listen.to_string(), "127.0.0.1:2525");
        assert_eq!(config.spool.path, PathBuf::from(DEFAULT_SPOOL_PATH));
        assert_eq!(
            config.sendmail.socket,
            PathBuf::from(DEFAULT_SENDMAIL_SOCKET)
        );
        let nets = config.smtp.trusted_networks.to_strings();
        assert_eq!(nets, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(config.smtp.limits.data_timeout, Duration::from_secs(180));
    }

    #[test]
    fn the_annotated_example_is_valid() {
        let text = include_str!("../../config/smarthost.toml");
        Config::from_toml(text).unwrap();
    }

    /// Values that parse but would panic or misbehave at run time are refused here, with the
    /// key, so that check-config's "OK" means the daemon can run with it.
    #[test]
    fn out_of_range_values_are_refused_with_the_key() {
        let cases = [
            ("[spool]\nbusy_timeout = \"25d\"", "spool.busy_timeout"),
            ("[smtp]\nidle_timeout = \"1000000d\"", "smtp.idle_timeout"),
            (
                "[smtp]\nmax_connections = 4294967296000",
                "smtp.max_connections",
            ),
            (
                "[smtp]\nmax_connections_per_ip = 4294967296000",
                "smtp.max_connections_per_ip",
            ),
            ("[smtp]\nmax_recipients = 100000000", "smtp.max_recipients"),
            (
                "[smtp]\nmax_message_size = 100000000000",
                "smtp.max_message_size",
            ),
            ("[smtp]\ntrusted_networks = [\"0.0.0.0/0\"]", "open relay"),
            (
                "[smtp]\ntrusted_networks = [\"127.0.0.1\", \"::/0\"]",
                "smtp.trusted_networks[1]",
            ),
            ("[delivery]\nconnections = 1000000", "delivery.connections"),
            (
                "[[upstream]]\nhost = \"h\"\nport = 587\ntls = \"starttls\"\nmax_messages_per_second = 1e-20",
                "upstream[0].max_messages_per_second",
            ),
            (
                "[[upstream]]\nhost = \"h\"\nport = 587\ntls = \"starttls\"\nmax_recipients = 100000000",
                "upstream[0].max_recipients",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::from_toml(&format!("hostname = \"h.example\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        // The edges that are fine.
        Config::from_toml(
            "hostname = \"h.example\"\n[[upstream]]\nhost = \"h\"\nport = 587\ntls = \"starttls\"\nmax_messages_per_second = 0.01\n",
        )
        .unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1500))]

        /// The loader fed random files made of real keys with random values: see
        /// `fuzzing::config`.
        #[test]
        fn any_config_loads_or_names_what_is_wrong(
            lines in proptest::collection::vec((
                proptest::sample::select(vec![
                    "[smtp]", "[spool]", "[delivery]", "[[upstream]]", "[rewrite]", "[dns]",
                    "listen", "trusted_networks", "max_message_size", "max_connections",
                    "busy_timeout", "retry_initial", "queue_lifetime", "connections", "host",
                    "port", "tls", "kind", "ses_region", "max_messages_per_second", "hostname",
                    "sender_domain", "delay_warning", "nameservers", "timeout",
                ]),
                proptest::sample::select(vec![
                    "\"5s\"", "\"25d\"", "0", "-1", "1e-20", "4294967296000", "\"0.0.0.0/0\"",
                    "[\"10.0.0.0/8\"]", "\"starttls\"", "\"none\"", "\"ses-api\"", "\"eu-west-1\"",
                    "\"\"", "true", "\"h.example\"", "587", "[]", "\"127.0.0.1:0\"", "1.5",
                ]),
            ), 0..10),
        ) {
            let text: String = lines
                .iter()
                .map(|(key, value)| if key.starts_with('[') { format!("{key}\n") } else { format!("{key} = {value}\n") })
                .collect();
            crate::fuzzing::config(format!("hostname = \"h.example\"\n{text}").as_bytes());
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[smtp]\nlisten = \"localhost\"", "smtp.listen"),
            (
                "[smtp]\ntrusted_networks = [\"127.0.0.1/32\", \"10.0.0.0/33\"]",
                "smtp.trusted_networks[1]",
            ),
            (
                "[smtp]\ntrusted_networks = [\"10.0.0.1/8\"]",
                "did you mean 10.0.0.0/8",
            ),
            ("[smtp]\ndata_timeout = \"soon\"", "smtp.data_timeout"),
            ("[smtp]\nmax_recipients = 0", "smtp.max_recipients"),
            ("[smtp]\nlisten_port = 25", "unknown field `listen_port`"),
            ("[spol]\npath = \"x\"", "unknown field `spol`"),
            ("[spool]\npath = \"var/spool.db\"", "spool.path"),
            (
                "[spool]\nurl = \"mysql://db/mail\"",
                "spool.url`: must be a PostgreSQL URL",
            ),
            ("[sendmail]\nsocket = \"s.sock\"", "sendmail.socket"),
            ("hostname = \"bad name\"", "hostname"),
            (
                "[smtp]\nallowed_sender_domains = [\"a@b\"]",
                "smtp.allowed_sender_domains[0]",
            ),
            (
                "[smtp]\nimplicit_tls_listen = \"127.0.0.1:465\"",
                "smtp.implicit_tls_listen`: needs a certificate",
            ),
            (
                "[smtp]\nrequire_tls = true",
                "smtp.require_tls`: needs a certificate",
            ),
            (
                "[smtp.tls]\ncertificate = \"cert.pem\"\nkey = \"/k.pem\"",
                "smtp.tls.certificate",
            ),
            (
                "[smtp.tls]\ncertificate = \"/c.pem\"\nkey = \"/k.pem\"\n[smtp]\nimplicit_tls_listen = \"465\"",
                "smtp.implicit_tls_listen",
            ),
        ];
        for (text, expected) in cases {
            let full = if text.starts_with("hostname") {
                text.to_string()
            } else {
                format!("hostname = \"h.example\"\n{text}")
            };
            let error = Config::from_toml(&full).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn bare_addresses_are_single_hosts() {
        let config = Config::from_toml(
            "hostname = \"h.example\"\n[smtp]\ntrusted_networks = [\"10.1.2.3\", \"fd00::1\"]",
        )
        .unwrap();
        let nets = config.smtp.trusted_networks.to_strings();
        assert_eq!(nets, ["10.1.2.3/32", "fd00::1/128"]);
    }

    #[test]
    fn a_shared_spool_with_the_default_lease_is_warned_about() {
        let shared = "hostname = \"h.example\"\n[spool]\nurl = \"postgresql://relay@db/mail\"\n";
        let warned = |text: &str| {
            Config::from_toml(text)
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.contains("delivery.lease"))
        };
        assert!(warned(shared));
        assert!(!warned(&format!("{shared}[delivery]\nlease = \"2m\"\n")));
        assert!(!warned("hostname = \"h.example\"\n"));
    }
}
