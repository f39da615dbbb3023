//! `[[upstream]]`: where mail goes — an SMTP relay (SES's SMTP interface or any provider) or
//! the SESv2 HTTPS API — with its limits. Credentials come from the environment, a file, or
//! (for the SES API) the standard AWS chain, never from the config file itself.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ses_smtp::{is_region, smtp_password};
use super::{ConfigError, count_within, duration, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default = "default_kind")]
    kind: String,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// A systemd credential (`LoadCredential=`): `$CREDENTIALS_DIRECTORY/NAME`.
    password_credential: Option<String>,
    /// Amazon SES: the SMTP password is derived from this IAM secret for `ses_region`.
    aws_secret_key_env: Option<String>,
    aws_secret_key_file: Option<PathBuf>,
    aws_secret_key_credential: Option<String>,
    ses_region: Option<String>,
    /// The SES API endpoint instead of AWS's public one (a VPC endpoint, or a test server).
    endpoint_url: Option<String>,
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

fn default_kind() -> String {
    "smtp".into()
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

/// Send rates: slower than one message in 1000 s is a typo, and faster than a million per
/// second is no limit at all (and the slot arithmetic must stay finite).
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;

/// SESv2 `SendEmail` takes raw messages up to 40 MB (AWS, "Amazon SES quotas").
const SES_API_MAX_MESSAGE: u64 = 40 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Upstream {
    pub transport: Transport,
    /// Recipients per transaction or API call (SES accepts 50).
    pub max_recipients: usize,
    /// Messages per second (SES's account sending rate); `None` is unlimited.
    pub max_messages_per_second: Option<f64>,
    /// The domain a sender's SPF must include for this upstream (SES: amazonses.com).
    pub spf_include: Option<String>,
    /// Sample addresses this upstream sends from, for the SPF check.
    pub spf_ips: Vec<std::net::IpAddr>,
    /// The largest message it takes, when known beforehand (an SMTP upstream's SIZE is
    /// learned on connect).
    pub max_message_size: Option<u64>,
    /// An SMTP connection is closed after this many messages or this age, not reused.
    pub max_messages_per_connection: u32,
    pub max_connection_age: Duration,
}

/// How mail reaches the upstream.
#[derive(Debug, Clone)]
pub enum Transport {
    Smtp(SmtpServer),
    /// SESv2 `SendEmail` with the raw message, credentials from the AWS chain (environment,
    /// profile, IMDSv2 instance role, ECS, web identity): no long-lived secret on the VM.
    SesApi(SesApi),
}

#[derive(Debug, Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    /// Trust anchors for the upstream's certificate instead of the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SesApi {
    pub region: String,
    pub endpoint_url: Option<String>,
}

impl Upstream {
    /// How logs, metrics and the attempt history name this upstream.
    pub fn name(&self) -> String {
        match &self.transport {
            Transport::Smtp(server) => format!("{}:{}", server.host, server.port),
            Transport::SesApi(api) => format!("ses-api:{}", api.region),
        }
    }

    /// The host that answers, as a DSN's Remote-MTA names it (RFC 3464 2.3.5).
    pub fn host(&self) -> String {
        match &self.transport {
            Transport::Smtp(server) => server.host.clone(),
            Transport::SesApi(api) => format!("email.{}.amazonaws.com", api.region),
        }
    }
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
pub struct Credentials {
    pub username: String,
    /// Where the password is; read with `load` by the processes that need it.
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
                Ok(Secret(smtp_password(secret.expose(), region)))
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
    /// A systemd service credential: the file `name` in `$CREDENTIALS_DIRECTORY`, which
    /// systemd fills from `LoadCredential=` for the service alone (never in the environment
    /// or the unit), on a file system only the service can read.
    Credential { name: String, key: String },
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
            SecretSource::Credential { name, key } => {
                let directory = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    invalid(
                        key,
                        format!(
                            "names the credential '{name}', but CREDENTIALS_DIRECTORY is not set: run under systemd with LoadCredential={name}:PATH, or use a _file key"
                        ),
                    )
                })?;
                read_password_file(&PathBuf::from(directory).join(name), key).map(Secret)
            }
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

pub(super) fn validate_upstream(index: usize, raw: RawUpstream) -> Result<Upstream, ConfigError> {
    let key = |field: &str| format!("upstream[{index}].{field}");
    let transport = match raw.kind.as_str() {
        "smtp" => Transport::Smtp(validate_smtp(&key, &raw)?),
        "ses-api" => Transport::SesApi(validate_ses_api(&key, &raw)?),
        other => {
            return Err(invalid(
                key("kind"),
                format!("'{other}' is not one of smtp, ses-api"),
            ));
        }
    };
    count_within(&key("max_recipients"), raw.max_recipients as u64, 100_000)?;
    let rate = raw.max_messages_per_second;
    if !(rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&rate)) {
        return Err(invalid(
            key("max_messages_per_second"),
            format!("must be 0 (unlimited) or a rate from {MIN_RATE} to {MAX_RATE}"),
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
    let max_message_size = match &transport {
        Transport::SesApi(_) => Some(
            raw.max_message_size
                .unwrap_or(SES_API_MAX_MESSAGE)
                .min(SES_API_MAX_MESSAGE),
        ),
        Transport::Smtp(_) => raw.max_message_size,
    };
    Ok(Upstream {
        transport,
        max_message_size,
        max_messages_per_connection: raw.max_messages_per_connection,
        max_connection_age: duration(&key("max_connection_age"), &raw.max_connection_age)?,
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

fn validate_smtp(
    key: &impl Fn(&str) -> String,
    raw: &RawUpstream,
) -> Result<SmtpServer, ConfigError> {
    if raw.endpoint_url.is_some() {
        return Err(invalid(
            key("endpoint_url"),
            "is for kind = \"ses-api\"; an SMTP upstream has host and port",
        ));
    }
    let host = match &raw.host {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => host.clone(),
        Some(host) => return Err(invalid(key("host"), format!("'{host}' is not a host name"))),
        None => {
            return Err(invalid(
                key("host"),
                "is missing (the SMTP relay's host name)",
            ));
        }
    };
    let port = match raw.port {
        Some(0) | None => return Err(invalid(key("port"), "must be a port number such as 587")),
        Some(port) => port,
    };
    let tls = match raw.tls.as_deref() {
        Some("starttls") => TlsMode::StartTls,
        Some("implicit") => TlsMode::Implicit,
        Some("none") if is_loopback(&host) => TlsMode::None,
        Some("none") => {
            return Err(invalid(
                key("tls"),
                "\"none\" is only allowed for an upstream on loopback; use starttls (587) or implicit (465)",
            ));
        }
        Some(other) => {
            return Err(invalid(
                key("tls"),
                format!("'{other}' is not one of starttls, implicit, none"),
            ));
        }
        None => {
            return Err(invalid(
                key("tls"),
                "is missing: starttls (587) or implicit (465)",
            ));
        }
    };
    // Only the source is checked here; the secret itself is read by the process that
    // delivers (and by preflight's probe), so that submitting and reading the queue never
    // need it (a cron job's user cannot read the daemon's password file or environment).
    let given = secret_source(
        key,
        "password",
        &raw.password_env,
        &raw.password_file,
        &raw.password_credential,
    )?;
    let aws_secret = secret_source(
        key,
        "aws_secret_key",
        &raw.aws_secret_key_env,
        &raw.aws_secret_key_file,
        &raw.aws_secret_key_credential,
    )?;
    let password = match (given, aws_secret, raw.ses_region.clone()) {
        (Some(_), Some(_), _) => {
            return Err(invalid(
                key("aws_secret_key_env"),
                "give a password_* key or an aws_secret_key_* key, not both",
            ));
        }
        (Some(_), None, Some(_)) => {
            return Err(invalid(
                key("ses_region"),
                "derives the password from an aws_secret_key_* key; with a password given, leave it out",
            ));
        }
        (None, Some(_), None) => {
            return Err(invalid(
                key("ses_region"),
                "is needed with an aws_secret_key_* key: SES derives the SMTP password per region",
            ));
        }
        (None, None, Some(_)) => {
            return Err(invalid(
                key("ses_region"),
                "needs aws_secret_key_env or aws_secret_key_file to derive the password from (or kind = \"ses-api\")",
            ));
        }
        (None, Some(_), Some(region)) if !is_region(&region) => {
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
    let credentials = match (raw.username.clone(), password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                key("username"),
                "needs password_env, password_file or password_credential (or, for SES, an aws_secret_key_* key with ses_region)",
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
    Ok(SmtpServer {
        host,
        port,
        tls,
        credentials,
        ca_file: raw.ca_file.clone(),
    })
}

fn validate_ses_api(
    key: &impl Fn(&str) -> String,
    raw: &RawUpstream,
) -> Result<SesApi, ConfigError> {
    let smtp_only = [
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("tls", raw.tls.is_some()),
        ("ca_file", raw.ca_file.is_some()),
        ("username", raw.username.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("password_credential", raw.password_credential.is_some()),
        ("aws_secret_key_env", raw.aws_secret_key_env.is_some()),
        ("aws_secret_key_file", raw.aws_secret_key_file.is_some()),
        (
            "aws_secret_key_credential",
            raw.aws_secret_key_credential.is_some(),
        ),
    ];
    if let Some((field, _)) = smtp_only.iter().find(|(_, given)| *given) {
        return Err(invalid(
            key(field),
            "is not used by kind = \"ses-api\": it sends over HTTPS with credentials from the AWS chain (instance role, environment, profile)",
        ));
    }
    let region = match &raw.ses_region {
        Some(region) if is_region(region) => region.clone(),
        Some(region) => {
            return Err(invalid(
                key("ses_region"),
                format!("'{region}' is not an AWS region such as eu-west-1"),
            ));
        }
        None => {
            return Err(invalid(
                key("ses_region"),
                "is needed for kind = \"ses-api\"",
            ));
        }
    };
    if let Some(url) = &raw.endpoint_url {
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?']).next().unwrap_or_default())
            .unwrap_or_default();
        let host_only = host
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(host, |(host, _)| host)
            .trim_matches(['[', ']']);
        if host.is_empty() || (url.starts_with("http://") && !is_loopback(host_only)) {
            return Err(invalid(
                key("endpoint_url"),
                format!("'{url}' must be an https:// URL (http:// only on loopback, for tests)"),
            ));
        }
    }
    Ok(SesApi {
        region,
        endpoint_url: raw.endpoint_url.clone(),
    })
}

/// `NAME_env`, `NAME_file` or `NAME_credential`, validated; none of them is `None`.
fn secret_source(
    key: &impl Fn(&str) -> String,
    name: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    credential: &Option<String>,
) -> Result<Option<SecretSource>, ConfigError> {
    let env_key = key(&format!("{name}_env"));
    let given = [env.is_some(), file.is_some(), credential.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(invalid(
            env_key,
            format!("give one of {name}_env, {name}_file and {name}_credential"),
        ));
    }
    if let Some(variable) = env {
        if variable.is_empty() || variable.contains('=') {
            return Err(invalid(
                env_key,
                format!("'{variable}' is not an environment variable name"),
            ));
        }
        return Ok(Some(SecretSource::Env {
            variable: variable.clone(),
            key: env_key,
        }));
    }
    if let Some(path) = file {
        return Ok(Some(SecretSource::File {
            path: path.clone(),
            key: key(&format!("{name}_file")),
        }));
    }
    match credential {
        // systemd credential names are file names (no slash, not . or ..).
        Some(credential)
            if credential.is_empty()
                || credential.contains('/')
                || credential == "."
                || credential == ".." =>
        {
            Err(invalid(
                key(&format!("{name}_credential")),
                format!("'{credential}' is not a credential name"),
            ))
        }
        Some(credential) => Ok(Some(SecretSource::Credential {
            name: credential.clone(),
            key: key(&format!("{name}_credential")),
        })),
        None => Ok(None),
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
    use super::{SmtpServer, TlsMode, Transport, Upstream};
    use crate::config::Config;

    fn smtp(upstream: &Upstream) -> &SmtpServer {
        match &upstream.transport {
            Transport::Smtp(server) => server,
            Transport::SesApi(_) => panic!("an SMTP upstream"),
        }
    }

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
            smtp(upstream)
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
                smtp(u)
                    .credentials
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
        assert_eq!(smtp(&config.delivery.upstreams[0]).tls, TlsMode::None);
    }

    #[test]
    fn ses_api_upstreams_need_a_region_and_refuse_smtp_settings() {
        let config = load(
            "[[upstream]]\nkind = \"ses-api\"\nses_region = \"eu-west-1\"\n[[upstream]]\nkind = \"ses-api\"\nses_region = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:4566\"\n",
        )
        .unwrap();
        let upstream = &config.delivery.upstreams[0];
        assert_eq!(upstream.name(), "ses-api:eu-west-1");
        assert_eq!(upstream.host(), "email.eu-west-1.amazonaws.com");
        assert_eq!(upstream.max_message_size, Some(40 * 1024 * 1024));
        match &config.delivery.upstreams[1].transport {
            Transport::SesApi(api) => {
                assert_eq!(api.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"))
            }
            Transport::Smtp(_) => panic!("ses-api"),
        }
        let cases = [
            ("kind = \"ses-api\"", "upstream[0].ses_region"),
            (
                "kind = \"ses-api\"\nses_region = \"Ireland\"",
                "not an AWS region",
            ),
            (
                "kind = \"ses-api\"\nses_region = \"eu-west-1\"\nhost = \"h\"",
                "`upstream[0].host`: is not used by kind",
            ),
            (
                "kind = \"ses-api\"\nses_region = \"eu-west-1\"\nendpoint_url = \"http://ses.example.com\"",
                "upstream[0].endpoint_url",
            ),
            ("kind = \"pigeon\"", "upstream[0].kind"),
            (
                "host = \"h\"\nport = 587\ntls = \"starttls\"\nendpoint_url = \"https://x\"",
                "upstream[0].endpoint_url",
            ),
            (
                "host = \"h\"\nport = 587\ntls = \"starttls\"\nusername = \"AKIA\"\naws_secret_key_env = \"S\"",
                "upstream[0].ses_region",
            ),
            (
                "host = \"h\"\nport = 587\ntls = \"starttls\"\nusername = \"AKIA\"\npassword_env = \"P\"\nses_region = \"eu-west-1\"",
                "upstream[0].ses_region",
            ),
        ];
        for (upstream, expected) in cases {
            let error = load(&format!("[[upstream]]\n{upstream}\n")).unwrap_err();
            assert!(error.contains(expected), "{upstream}: {error}");
        }
    }

    #[test]
    fn an_ses_smtp_password_is_derived_from_the_iam_secret_when_read() {
        let config = load(
            "[[upstream]]\nhost = \"email-smtp.us-east-1.amazonaws.com\"\nport = 587\ntls = \"starttls\"\nusername = \"AKIAIOSFODNN7EXAMPLE\"\nses_region = \"us-east-1\"\naws_secret_key_env = \"SMARTHOST_TEST_AWS_SECRET_FOR_DERIVATION\"\n",
        )
        .unwrap();
        let password = &smtp(&config.delivery.upstreams[0])
            .credentials
            .as_ref()
            .unwrap()
            .password;
        let error = password.load().unwrap_err().to_string();
        assert!(error.contains("upstream[0].aws_secret_key_env"), "{error}");
    }
}
