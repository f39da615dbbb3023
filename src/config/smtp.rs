//! `[smtp]`: the listener — where it listens, whom it trusts, its limits and timeouts, and its
//! TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{ConfigError, absolute, count_within, duration, invalid};
use crate::policy::{SenderDomains, TrustedNetworks};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSmtp {
    listen: String,
    trusted_networks: Vec<String>,
    allowed_sender_domains: Vec<String>,
    max_message_size: u64,
    max_recipients: usize,
    max_command_line: usize,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_errors: u32,
    idle_timeout: String,
    command_timeout: String,
    data_timeout: String,
    untrusted_timeout: String,
    min_data_rate: u64,
    max_untrusted_connections: usize,
    message_rate_per_client: u64,
    message_rate_per_user: u64,
    shutdown_grace: String,
    implicit_tls_listen: Option<String>,
    require_tls: bool,
    tls: Option<RawTls>,
    auth: Option<RawAuth>,
}

impl Default for RawSmtp {
    fn default() -> RawSmtp {
        RawSmtp {
            listen: "127.0.0.1:2525".into(),
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            allowed_sender_domains: Vec::new(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_command_line: 1000,
            max_connections: 200,
            max_connections_per_ip: 50,
            max_errors: 20,
            idle_timeout: "5m".into(),
            command_timeout: "5m".into(),
            data_timeout: "3m".into(),
            untrusted_timeout: "30s".into(),
            min_data_rate: 500,
            max_untrusted_connections: 50,
            message_rate_per_client: 0,
            message_rate_per_user: 0,
            shutdown_grace: "30s".into(),
            implicit_tls_listen: None,
            require_tls: false,
            tls: None,
            auth: None,
        }
    }
}

/// `[smtp.auth]`: who may authenticate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    users_file: PathBuf,
    #[serde(default = "default_max_failures")]
    max_failures: usize,
    #[serde(default = "default_failure_window")]
    failure_window: String,
}

fn default_max_failures() -> usize {
    5
}

fn default_failure_window() -> String {
    "10m".into()
}

/// `[smtp.tls]`: the listener's certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    pub trusted_networks: TrustedNetworks,
    pub allowed_sender_domains: SenderDomains,
    pub limits: SessionLimits,
    /// Concurrent connections in total; beyond it clients get `421 4.7.0`.
    pub max_connections: usize,
    /// Concurrent connections from one client address.
    pub max_connections_per_ip: usize,
    /// Of `max_connections`, how many clients from outside the trusted networks may hold;
    /// the rest is kept for the trusted ones.
    pub max_untrusted_connections: usize,
    /// Messages per minute from one client address; 0: no limit.
    pub message_rate_per_client: u64,
    /// Messages per minute from one authenticated user; 0: no limit.
    pub message_rate_per_user: u64,
    /// How long SIGTERM waits for sessions still in DATA before exiting anyway.
    pub shutdown_grace: Duration,
    /// The certificate STARTTLS and the implicit-TLS listener present; None: no TLS.
    pub tls: Option<TlsFiles>,
    /// A second listener where TLS starts at connect (RFC 8314, port 465).
    pub implicit_tls_listen: Option<SocketAddr>,
    /// MAIL is refused (`530 5.7.0`) to clients other than loopback that did not start TLS.
    pub require_tls: bool,
    /// SMTP AUTH (offered under TLS only); None: relay for trusted networks only.
    pub auth: Option<AuthConfig>,
}

/// `[smtp.auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Written by `smarthost user`; read at start and on SIGHUP.
    pub users_file: PathBuf,
    /// Failed attempts from one address within `failure_window` before it gets `421 4.7.0`.
    pub max_failures: usize,
    pub failure_window: Duration,
}

/// PEM files: the certificate with its chain, and its private key. Read at start and again on
/// SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// What one SMTP session may do; shared by the TCP listener and `sendmail -bs`.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    /// Protocol errors before the session is closed with `421` (Postfix's hard error limit).
    pub max_errors: u32,
    /// Waiting for a command outside a transaction (RFC 5321 4.5.3.2.7: at least 5 minutes).
    pub idle_timeout: Duration,
    /// Waiting for the next command inside a transaction (MAIL, RCPT: 5 minutes).
    pub command_timeout: Duration,
    /// The message data's deadline at its start (RFC 5321 4.5.3.2.6's 3 minutes), extended
    /// as data arrives by one second per `min_data_rate` bytes (Postfix's deadline model).
    pub data_timeout: Duration,
    /// Bytes per second a message must arrive at, beyond `data_timeout`.
    pub min_data_rate: u64,
    /// Every deadline, for clients from outside the trusted networks that have not
    /// authenticated: they may only authenticate (or be refused), and a silent one must not
    /// hold a slot for minutes.
    pub untrusted_timeout: Duration,
}

pub(super) fn validate_smtp(raw: RawSmtp) -> Result<SmtpConfig, ConfigError> {
    let listen = raw.listen.parse().map_err(|_| {
        invalid(
            "smtp.listen",
            format!(
                "'{}' is not an ADDRESS:PORT such as 127.0.0.1:2525",
                raw.listen
            ),
        )
    })?;
    let networks = raw
        .trusted_networks
        .iter()
        .enumerate()
        .map(|(index, text)| {
            parse_network(text).map_err(|m| invalid(format!("smtp.trusted_networks[{index}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (index, domain) in raw.allowed_sender_domains.iter().enumerate() {
        if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
            return Err(invalid(
                format!("smtp.allowed_sender_domains[{index}]"),
                format!("'{domain}' is not a domain name"),
            ));
        }
    }
    for (index, network) in networks.iter().enumerate() {
        if network.prefix_len() == 0 {
            return Err(invalid(
                format!("smtp.trusted_networks[{index}]"),
                format!(
                    "{network} trusts every address: that is an open relay; list the networks of your own clients (e.g. the VPC's CIDR)"
                ),
            ));
        }
    }
    let tls = match raw.tls {
        Some(tls) => Some(TlsFiles {
            certificate: absolute("smtp.tls.certificate", tls.certificate)?,
            key: absolute("smtp.tls.key", tls.key)?,
        }),
        None => None,
    };
    let implicit_tls_listen = match &raw.implicit_tls_listen {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(invalid(
                "smtp.implicit_tls_listen",
                "needs a certificate: set smtp.tls.certificate and smtp.tls.key",
            ));
        }
        Some(text) => Some(text.parse().map_err(|_| {
            invalid(
                "smtp.implicit_tls_listen",
                format!("'{text}' is not an ADDRESS:PORT such as 0.0.0.0:465"),
            )
        })?),
    };
    let auth = match raw.auth {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(invalid(
                "smtp.auth",
                "AUTH is offered only under TLS (RFC 4954 and common sense: passwords in clear): set smtp.tls.certificate and smtp.tls.key",
            ));
        }
        Some(auth) => Some(AuthConfig {
            users_file: absolute("smtp.auth.users_file", auth.users_file)?,
            max_failures: count_within("smtp.auth.max_failures", auth.max_failures as u64, 1000)?
                as usize,
            failure_window: duration("smtp.auth.failure_window", &auth.failure_window)?,
        }),
    };
    if raw.require_tls && tls.is_none() {
        return Err(invalid(
            "smtp.require_tls",
            "needs a certificate to offer STARTTLS: set smtp.tls.certificate and smtp.tls.key",
        ));
    }
    let count = |key: &str, value: usize, max: u64| count_within(key, value as u64, max);
    // 0 is "no limit"; the window holds one timestamp per message, so it is bounded.
    let rate = |key: &str, value: u64| match value {
        0 => Ok(0),
        n => count_within(key, n, 100_000),
    };
    let max_connections = count("smtp.max_connections", raw.max_connections, 1_000_000)? as usize;
    let max_untrusted_connections = count(
        "smtp.max_untrusted_connections",
        raw.max_untrusted_connections,
        max_connections as u64,
    )? as usize;
    if raw.max_command_line < 512 {
        return Err(invalid(
            "smtp.max_command_line",
            "must be at least 512 (RFC 5321 4.5.3.1.4)",
        ));
    }
    Ok(SmtpConfig {
        listen,
        trusted_networks: TrustedNetworks::new(networks),
        allowed_sender_domains: SenderDomains::new(raw.allowed_sender_domains),
        limits: SessionLimits {
            // Messages are held in memory while they arrive.
            max_message_size: count(
                "smtp.max_message_size",
                raw.max_message_size as usize,
                1 << 30,
            )?,
            max_recipients: count("smtp.max_recipients", raw.max_recipients, 100_000)? as usize,
            max_command_line: raw.max_command_line,
            max_errors: count("smtp.max_errors", raw.max_errors as usize, 1_000_000)? as u32,
            idle_timeout: duration("smtp.idle_timeout", &raw.idle_timeout)?,
            command_timeout: duration("smtp.command_timeout", &raw.command_timeout)?,
            data_timeout: duration("smtp.data_timeout", &raw.data_timeout)?,
            min_data_rate: count_within("smtp.min_data_rate", raw.min_data_rate, 1 << 30)?,
            untrusted_timeout: duration("smtp.untrusted_timeout", &raw.untrusted_timeout)?,
        },
        max_connections,
        max_connections_per_ip: count(
            "smtp.max_connections_per_ip",
            raw.max_connections_per_ip,
            1_000_000,
        )? as usize,
        max_untrusted_connections,
        message_rate_per_client: rate("smtp.message_rate_per_client", raw.message_rate_per_client)?,
        message_rate_per_user: rate("smtp.message_rate_per_user", raw.message_rate_per_user)?,
        shutdown_grace: duration("smtp.shutdown_grace", &raw.shutdown_grace)?,
        implicit_tls_listen,
        require_tls: raw.require_tls,
        tls,
        auth,
    })
}

/// A CIDR (`10.0.0.0/16`) or a single address (`10.0.0.5`, taken as /32 or /128). Host bits
/// set below the prefix are refused: `10.0.0.1/8` is almost always a typo for something else.
fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("'{text}' is not a CIDR such as 10.0.0.0/16 or an IP address"))?;
    if net.trunc() != net {
        return Err(format!(
            "'{text}' has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}
