//! Point 6: each upstream is reached the way delivery reaches it — connect, banner, EHLO,
//! STARTTLS or implicit TLS with the certificate verified, AUTH with the configured
//! credentials — then it is asked for its SIZE limit, its certificate is checked for expiry
//! within 14 days, and the connection ends with QUIT. Nothing is sent.

use std::time::Duration;

use super::report::Check;
use crate::config::{Config, TlsMode};
use crate::delivery::{Endpoint, Timeouts};

/// A certificate that stops verifying within this time is a warning.
const EXPIRY_LOOKAHEAD: Duration = Duration::from_secs(14 * 24 * 3600);

pub async fn upstreams(config: &Config) -> Vec<Check> {
    let timeouts = Timeouts {
        connect: config.delivery.connect_timeout.min(Duration::from_secs(15)),
        command: Duration::from_secs(15),
        data: Duration::from_secs(15),
    };
    let helo = super::checks::effective_helo(config);
    let mut checks = Vec::new();
    for upstream in &config.delivery.upstreams {
        let check = format!("upstream {}", upstream.name());
        let endpoint = match Endpoint::new(upstream.clone(), helo.clone()) {
            Ok(endpoint) => endpoint,
            Err(reason) => {
                checks.push(Check::fail(
                    check,
                    reason,
                    "fix ca_file in this [[upstream]]",
                ));
                continue;
            }
        };
        let tls = match upstream.tls {
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Implicit => "implicit TLS",
            TlsMode::None => "no TLS (loopback)",
        };
        let auth = match &upstream.credentials {
            Some(credentials) => format!("AUTH as {} accepted", credentials.username),
            None => "no AUTH configured".to_string(),
        };
        // Bounded even if the upstream accepts the connection and then stays silent.
        let limit = timeouts.connect + timeouts.command * 2;
        let probe = tokio::time::timeout(limit, endpoint.probe(timeouts, EXPIRY_LOOKAHEAD)).await;
        checks.push(match probe {
            Err(_) => Check::fail(check, format!("no answer within {limit:?}"), "check host, port and firewall"),
            Ok(Err(unusable)) => Check::fail(check, unusable.to_string(), fix_for(&unusable.to_string())),
            Ok(Ok(probe)) if probe.expires_within_lookahead => Check::warn(
                check,
                format!("{tls}, {auth}; the certificate expires within 14 days"),
                "tell the upstream's operator; delivery stops when it expires",
            ),
            Ok(Ok(probe)) if probe.size > 0 && (probe.size as u64) < config.smtp.limits.max_message_size => Check::warn(
                check,
                format!("{tls}, {auth}; it takes at most {} bytes but we accept {}", probe.size, config.smtp.limits.max_message_size),
                format!("set smtp.max_message_size = {} so that large mail is refused at intake, not bounced later", probe.size),
            ),
            Ok(Ok(probe)) => Check::pass(
                check,
                format!(
                    "{tls}, certificate valid beyond 14 days, {auth}, SIZE {}",
                    if probe.size > 0 { probe.size.to_string() } else { "not advertised".into() }
                ),
            ),
        });
    }
    checks
}

fn fix_for(reason: &str) -> &'static str {
    if reason.contains("AUTH") {
        "check username and password_env / password_file of this [[upstream]]"
    } else if reason.contains("TLS") || reason.contains("certificate") {
        "check the host name, and set ca_file if the upstream uses a private CA"
    } else {
        "check host, port and that the upstream is reachable"
    }
}
