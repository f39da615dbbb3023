//! `[delivery]` and `[[upstream]]`: where mail goes, how it is retried, and the credentials,
//! which come from the environment or a file and never from the config file itself.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDelivery {
    retry_initial: String,
    retry_max: String,
    queue_lifetime: String,
    bounce_address: Option<String>,
    connect_timeout: String,
    command_timeout: String,
    data_timeout: String,
    upstream_cooldown: String,
    throttle_period: String,
    delivered_retention: String,
    poll_interval: String,
    lease: String,
    connections: usize,
    hold_on: Vec<String>,
}

impl Default for RawDelivery {
    fn default() -> RawDelivery {
        RawDelivery {
            retry_initial: "5m".into(),
            retry_max: "70m".into(),
            queue_lifetime: "5d".into(),
            bounce_address: None,
            connect_timeout: "30s".into(),
            command_timeout: "5m".into(),
            data_timeout: "10m".into(),
            upstream_cooldown: "60s".into(),
            throttle_period: "60s".into(),
            delivered_retention: "1d".into(),
            poll_interval: "1s".into(),
            lease: "15m".into(),
            connections: 20,
            // The known provider replies are built in (delivery/classify.rs); these are the
            // operator's own additions.
            hold_on: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    host: String,
    port: u16,
    tls: String,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// Amazon SES: the SMTP password is derived from this IAM secret for `ses_region`.
    aws_secret_key_env: Option<String>,
    aws_secret_key_file: Option<PathBuf>,
    ses_region: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_max_recipients")]
    max_recipients: usize,
    #[serde(default)]
    max_messages_per_second: f64,
    spf_include: Option<String>,
    #[serde(default)]
    spf_ips: Vec<String>,
    max_message_size: Option<u64>,
    #[serde(default = "default_max_messages_per_connection")]
    max_messages_per_connection: u32,
    #[serde(default = "default_max_connection_age")]
    max_connection_age: String,
}

fn default_max_recipients() -> usize {
    50
}

/// AWS advises new connections to SES now and then: its endpoints sit behind load balancers
/// whose instances come and go. Postfix reuses a connection for at most 300 s by default.
fn default_max_messages_per_connection() -> u32 {
    100
}

fn default_max_connection_age() -> String {
    "5m".into()
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry: RetryPolicy,
    /// Messages older than this bounce instead of being deferred again.
    pub queue_lifetime: Duration,
    /// Where bounces go instead of the envelope sender (cron senders cannot read mail).
    pub bounce_address: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// How long an upstream that failed is skipped before it is tried again.
    pub upstream_cooldown: Duration,
    /// How long a `454` throttling reply halves an upstream's send rate.
    pub throttle_period: Duration,
    /// How long finished messages keep their envelope and history for inspection.
    pub delivered_retention: Duration,
    /// Fallback check for mail written by another process (`sendmail`) or made due by the CLI.
    pub poll_interval: Duration,
    /// How long a delivery claim lasts before another round may take the recipient.
    pub lease: Duration,
    /// Parallel deliveries; each keeps at most one connection open to each upstream.
    pub connections: usize,
    /// Reply codes (three digits) or texts that hold mail as a configuration error.
    pub hold_on: Vec<String>,
    pub upstreams: Vec<Upstream>,
}

impl DeliveryConfig {
    /// Each upstream's configured `max_message_size`, in order.
    pub fn upstream_size_limits(&self) -> Vec<Option<u64>> {
        self.upstreams.iter().map(|u| u.max_message_size).collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Port 587: plain connection, then STARTTLS (never continues without it).
    StartTls,
    /// Port 465: TLS from the first byte.
    Implicit,
    /// No TLS, for an upstream on loopback in tests; never with credentials.
    None,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    /// Trust anchors for the upstream's certificate instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Recipients per transaction (SES accepts 50).
    pub max_recipients: usize,
    /// Messages per second (SES's account sending rate); `None` is unlimited.
    pub max_messages_per_second: Option<f64>,
    /// The domain a sender's SPF must include for this upstream (SES: amazonses.com).
    pub spf_include: Option<String>,
    /// Sample addresses this upstream sends from, for the SPF check.
    pub spf_ips: Vec<std::net::IpAddr>,
    /// The largest message it takes, when known beforehand (its SIZE is learned on connect).
    pub max_message_size: Option<u64>,
    /// A connection is closed after this many messages or this age, not reused.
    pub max_messages_per_connection: u32,
    pub max_connection_age: Duration,
}

impl Upstream {
    /// How logs and the attempt history name this upstream.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    /// Where the password is; read with `load_password` by the processes that need it.
    pub password: PasswordSource,
}

/// Where an upstream's password comes from.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// The SMTP password itself.
    Given(SecretSource),
    /// Amazon SES's SMTP password for `region`, derived from an IAM secret access key.
    SesSmtp {
        secret_key: SecretSource,
        region: String,
    },
}

impl PasswordSource {
    /// Reads (and derives) the password now. Errors name the config key.
    pub fn load(&self) -> Result<Secret, ConfigError> {
        match self {
            PasswordSource::Given(source) => source.load(),
            PasswordSource::SesSmtp { secret_key, region } => {
                let secret = secret_key.load()?;
                Ok(Secret(super::ses_smtp::smtp_password(
                    secret.expose(),
                    region,
                )))
            }
        }
    }
}

/// Where a secret comes from (never the config file itself).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// An environment variable of the delivering process.
    Env { variable: String, key: String },
    /// A file, trailing newline removed; it should be readable by the daemon's user only.
    File { path: PathBuf, key: String },
}

impl SecretSource {
    /// Reads the secret now. A file that group or others may read works, with a warning.
    pub fn load(&self) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::Env { variable, key } => std::env::var(variable)
                .ok()
                .filter(|value| !value.is_empty())
                .map(Secret)
                .ok_or_else(|| invalid(key, format!("environment variable {variable} is not set"))),
            SecretSource::File { path, key } => read_password_file(path, key).map(Secret),
        }
    }
}

/// A password: its Debug and Display never show it, so it cannot leak into logs or errors.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub(super) fn validate(
    raw: RawDelivery,
    upstreams: Vec<RawUpstream>,
) -> Result<DeliveryConfig, ConfigError> {
    let retry = RetryPolicy {
        initial: duration("delivery.retry_initial", &raw.retry_initial)?,
        max: duration("delivery.retry_max", &raw.retry_max)?,
    };
    if retry.max < retry.initial {
        return Err(invalid(
            "delivery.retry_max",
            "must not be shorter than delivery.retry_initial",
        ));
    }
    if let Some(address) = &raw.bounce_address
        && crate::model::Address::parse(address, true)
            .ok()
            .and_then(|a| a.domain().map(str::to_owned))
            .is_none()
    {
        return Err(invalid(
            "delivery.bounce_address",
            format!("'{address}' is not a full address such as ops@example.com"),
        ));
    }
    for (index, pattern) in raw.hold_on.iter().enumerate() {
        if pattern.trim().is_empty() {
            return Err(invalid(
                format!("delivery.hold_on[{index}]"),
                "must not be empty",
            ));
        }
    }
    let upstreams = upstreams
        .into_iter()
        .enumerate()
        .map(|(index, upstream)| validate_upstream(index, upstream))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeliveryConfig {
        retry,
        queue_lifetime: duration("delivery.queue_lifetime", &raw.queue_lifetime)?,
        bounce_address: raw.bounce_address,
        connect_timeout: duration("delivery.connect_timeout", &raw.connect_timeout)?,
        command_timeout: duration("delivery.command_timeout", &raw.command_timeout)?,
        data_timeout: duration("delivery.data_timeout", &raw.data_timeout)?,
        upstream_cooldown: duration("delivery.upstream_cooldown", &raw.upstream_cooldown)?,
        throttle_period: duration("delivery.throttle_period", &raw.throttle_period)?,
        delivered_retention: duration("delivery.delivered_retention", &raw.delivered_retention)?,
        poll_interval: duration("delivery.poll_interval", &raw.poll_interval)?,
        lease: duration("delivery.lease", &raw.lease)?,
        connections: match raw.connections {
            0 => return Err(invalid("delivery.connections", "must be at least 1")),
            n => n,
        },
        hold_on: raw.hold_on,
        upstreams,
    })
}

fn validate_upstream(index: usize, raw: RawUpstream) -> Result<Upstream, ConfigError> {
    let key = |field: &str| format!("upstream[{index}].{field}");
    if raw.host.is_empty() || raw.host.contains(char::is_whitespace) {
        return Err(invalid(
            key("host"),
            format!("'{}' is not a host name", raw.host),
        ));
    }
    if raw.port == 0 {
        return Err(invalid(key("port"), "must be a port number such as 587"));
    }
    let tls = match raw.tls.as_str() {
        "starttls" => TlsMode::StartTls,
        "implicit" => TlsMode::Implicit,
        "none" if is_loopback(&raw.host) => TlsMode::None,
        "none" => {
            return Err(invalid(
                key("tls"),
                "\"none\" is only allowed for an upstream on loopback; use starttls (587) or implicit (465)",
            ));
        }
        other => {
            return Err(invalid(
                key("tls"),
                format!("'{other}' is not one of starttls, implicit, none"),
            ));
        }
    };
    // Only the source is checked here; the secret itself is read by the process that
    // delivers (and by preflight's probe), so that submitting and reading the queue never
    // need it (a cron job's user cannot read the daemon's password file or environment).
    let given = secret_source(&key, "password", raw.password_env, raw.password_file)?;
    let aws_secret = secret_source(
        &key,
        "aws_secret_key",
        raw.aws_secret_key_env,
        raw.aws_secret_key_file,
    )?;
    let password = match (given, aws_secret, raw.ses_region) {
        (Some(_), Some(_), _) => {
            return Err(invalid(
                key("aws_secret_key_env"),
                "give password_env/password_file or aws_secret_key_env/aws_secret_key_file, not both",
            ));
        }
        (Some(_), None, Some(_)) => {
            return Err(invalid(
                key("ses_region"),
                "derives the password from aws_secret_key_env/aws_secret_key_file; with a password given, leave it out",
            ));
        }
        (None, Some(_), None) => {
            return Err(invalid(
                key("ses_region"),
                "is needed with aws_secret_key_env/aws_secret_key_file: SES derives the SMTP password per region",
            ));
        }
        (None, None, Some(_)) => {
            return Err(invalid(
                key("ses_region"),
                "needs aws_secret_key_env or aws_secret_key_file to derive the password from",
            ));
        }
        (None, Some(_), Some(region)) if !super::ses_smtp::is_region(&region) => {
            return Err(invalid(
                key("ses_region"),
                format!("'{region}' is not an AWS region such as eu-west-1"),
            ));
        }
        (None, Some(secret_key), Some(region)) => {
            Some(PasswordSource::SesSmtp { secret_key, region })
        }
        (Some(source), None, None) => Some(PasswordSource::Given(source)),
        (None, None, None) => None,
    };
    let credentials = match (raw.username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                key("username"),
                "needs password_env or password_file (or, for SES, aws_secret_key_env or aws_secret_key_file with ses_region)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                key("username"),
                "is missing for the password given",
            ));
        }
    };
    if credentials.is_some() && tls == TlsMode::None {
        return Err(invalid(
            key("tls"),
            "credentials are never sent without TLS",
        ));
    }
    if let Some(ca_file) = &raw.ca_file
        && !ca_file.is_file()
    {
        return Err(invalid(
            key("ca_file"),
            format!("{} is not a readable file", ca_file.display()),
        ));
    }
    if raw.max_recipients == 0 {
        return Err(invalid(key("max_recipients"), "must be at least 1"));
    }
    if !(raw.max_messages_per_second >= 0.0 && raw.max_messages_per_second.is_finite()) {
        return Err(invalid(
            key("max_messages_per_second"),
            "must be 0 (unlimited) or a positive rate",
        ));
    }
    if raw.max_message_size == Some(0) {
        return Err(invalid(
            key("max_message_size"),
            "must be a size in octets such as 10485760 (leave it out for no limit)",
        ));
    }
    if raw.max_messages_per_connection == 0 {
        return Err(invalid(
            key("max_messages_per_connection"),
            "must be at least 1",
        ));
    }
    Ok(Upstream {
        max_message_size: raw.max_message_size,
        max_messages_per_connection: raw.max_messages_per_connection,
        max_connection_age: duration(&key("max_connection_age"), &raw.max_connection_age)?,
        host: raw.host,
        port: raw.port,
        tls,
        credentials,
        ca_file: raw.ca_file,
        max_recipients: raw.max_recipients,
        spf_ips: raw
            .spf_ips
            .iter()
            .map(|ip| {
                ip.parse()
                    .map_err(|_| invalid(key("spf_ips"), format!("'{ip}' is not an IP address")))
            })
            .collect::<Result<_, _>>()?,
        spf_include: raw.spf_include,
        max_messages_per_second: (raw.max_messages_per_second > 0.0)
            .then_some(raw.max_messages_per_second),
    })
}

/// `NAME_env` or `NAME_file`, validated; neither is `None`.
fn secret_source(
    key: &impl Fn(&str) -> String,
    name: &str,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SecretSource>, ConfigError> {
    let (env_key, file_key) = (key(&format!("{name}_env")), key(&format!("{name}_file")));
    match (env, file) {
        (Some(_), Some(_)) => Err(invalid(
            env_key,
            format!("give {name}_env or {name}_file, not both"),
        )),
        (Some(variable), None) if variable.is_empty() || variable.contains('=') => Err(invalid(
            env_key,
            format!("'{variable}' is not an environment variable name"),
        )),
        (Some(variable), None) => Ok(Some(SecretSource::Env {
            variable,
            key: env_key,
        })),
        (None, Some(path)) => Ok(Some(SecretSource::File {
            path,
            key: file_key,
        })),
        (None, None) => Ok(None),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a password file (trailing newline removed) and warns when others may read it.
fn read_password_file(path: &PathBuf, key: &str) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{key}: {} is readable by group or others; chmod 600 it",
            path.display()
        );
    }
    let password = text.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(&format!("hostname = \"h.example\"\n{text}")).map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_with_password_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let config = load(&format!(
            "[[upstream]]\nhost = \"smtp.example.com\"\nport = 587\ntls = \"starttls\"\nusername = \"AKIA\"\npassword_file = \"{}\"\n",
            secret.display()
        ))
        .unwrap();
        let upstream = &config.delivery.upstreams[0];
        assert_eq!(upstream.name(), "smtp.example.com:587");
        assert_eq!(
            upstream
                .credentials
                .as_ref()
                .unwrap()
                .password
                .load()
                .unwrap()
                .expose(),
            "s3cret"
        );
        assert_eq!(
            (config.delivery.connections, upstream.max_recipients),
            (20, 50)
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "Debug must not show the password"
        );
        assert_eq!(config.delivery.retry.initial.as_secs(), 300);
        assert_eq!(config.delivery.retry.max.as_secs(), 4200);
    }

    #[test]
    fn unsafe_upstreams_are_refused_with_the_key() {
        let cases = [
            (
                "host = \"smtp.example.com\"\nport = 25\ntls = \"none\"",
                "upstream[0].tls",
            ),
            (
                "host = \"127.0.0.1\"\nport = 25\ntls = \"none\"\nusername = \"u\"\npassword_env = \"PATH\"",
                "never sent without TLS",
            ),
            ("host = \"h\"\nport = 587\ntls = \"ssl\"", "upstream[0].tls"),
            (
                "host = \"h\"\nport = 587\ntls = \"starttls\"\nusername = \"u\"",
                "upstream[0].username",
            ),
            (
                "host = \"h\"\nport = 587\ntls = \"starttls\"\npassword = \"inline\"",
                "unknown field `password`",
            ),
        ];
        for (upstream, expected) in cases {
            let error = load(&format!("[[upstream]]\n{upstream}\n")).unwrap_err();
            assert!(error.contains(expected), "{upstream}: {error}");
        }
    }

    /// Submitting and reading the queue load the configuration too: a password only the
    /// daemon has must not stop them. It is read, and its absence reported with the key, when
    /// delivery (or preflight) asks for it.
    #[test]
    fn password_sources_are_read_only_when_asked_for() {
        let config = load(
            "[[upstream]]\nhost = \"h\"\nport = 587\ntls = \"starttls\"\nusername = \"u\"\npassword_env = \"SMARTHOST_SURELY_UNSET_VARIABLE\"\n[[upstream]]\nhost = \"h2\"\nport = 587\ntls = \"starttls\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n",
        )
        .unwrap();
        let errors: Vec<String> = config
            .delivery
            .upstreams
            .iter()
            .map(|u| {
                u.credentials
                    .as_ref()
                    .unwrap()
                    .password
                    .load()
                    .unwrap_err()
                    .to_string()
            })
            .collect();
        assert!(
            errors[0].contains("upstream[0].password_env"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("SMARTHOST_SURELY_UNSET_VARIABLE is not set"));
        assert!(
            errors[1].contains("upstream[1].password_file"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn loopback_upstream_may_skip_tls() {
        let config =
            load("[[upstream]]\nhost = \"127.0.0.1\"\nport = 2526\ntls = \"none\"\n").unwrap();
        assert_eq!(config.delivery.upstreams[0].tls, super::TlsMode::None);
    }
}
