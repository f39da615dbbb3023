//! Point 6: each upstream is reached the way delivery reaches it. An SMTP upstream: connect,
//! banner, EHLO, STARTTLS or implicit TLS with the certificate verified, AUTH with the
//! configured credentials — then it is asked for its SIZE limit, its certificate is checked for
//! expiry within 14 days, and the connection ends with QUIT. The SES API: credentials resolve
//! from the AWS chain, each sender domain is a verified identity, and the quota is readable.
//! Nothing is sent.

use std::time::Duration;

use super::report::Check;
use crate::config::{Config, SesApi, SmtpServer, TlsMode, Transport};
use crate::delivery::{Endpoint, SesApiClient, Timeouts};

/// A certificate that stops verifying within this time is a warning.
const EXPIRY_LOOKAHEAD: Duration = Duration::from_secs(14 * 24 * 3600);

pub async fn upstreams(config: &Config, sender_domains: &[String]) -> Vec<Check> {
    let timeouts = Timeouts {
        connect: config.delivery.connect_timeout.min(Duration::from_secs(15)),
        command: Duration::from_secs(15),
        data: Duration::from_secs(15),
    };
    let mut checks = Vec::new();
    for upstream in &config.delivery.upstreams {
        let check = format!("upstream {}", upstream.name());
        match &upstream.transport {
            Transport::Smtp(server) => checks.push(smtp(config, server, check, timeouts).await),
            Transport::SesApi(api) => {
                checks.extend(ses_api(api, check, timeouts, sender_domains).await)
            }
        }
    }
    checks
}

async fn smtp(config: &Config, server: &SmtpServer, check: String, timeouts: Timeouts) -> Check {
    let helo = super::checks::effective_helo(config);
    let endpoint = match Endpoint::new(server.clone(), helo) {
        Ok(endpoint) => endpoint,
        Err(reason) => {
            return Check::fail(check, reason, "fix ca_file in this [[upstream]]");
        }
    };
    {
        let upstream = server;
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
        match probe {
            Err(_) => Check::fail(
                check,
                format!("no answer within {limit:?}"),
                "check host, port and firewall",
            ),
            Ok(Err(unusable)) => {
                Check::fail(check, unusable.to_string(), fix_for(&unusable.to_string()))
            }
            Ok(Ok(probe)) if probe.expires_within_lookahead => Check::warn(
                check,
                format!("{tls}, {auth}; the certificate expires within 14 days"),
                "tell the upstream's operator; delivery stops when it expires",
            ),
            Ok(Ok(probe))
                if probe.size > 0 && (probe.size as u64) < config.smtp.limits.max_message_size =>
            {
                Check::warn(
                    check,
                    format!(
                        "{tls}, {auth}; it takes at most {} bytes but we accept {}",
                        probe.size, config.smtp.limits.max_message_size
                    ),
                    format!(
                        "set smtp.max_message_size = {} so that large mail is refused at intake, not bounced later",
                        probe.size
                    ),
                )
            }
            Ok(Ok(probe)) => Check::pass(
                check,
                format!(
                    "{tls}, certificate valid beyond 14 days, {auth}, SIZE {}",
                    if probe.size > 0 {
                        probe.size.to_string()
                    } else {
                        "not advertised".into()
                    }
                ),
            ),
        }
    }
}

/// The SES API: credentials, each sender domain's identity, the quota. Each call is bounded.
async fn ses_api(
    api: &SesApi,
    check: String,
    timeouts: Timeouts,
    sender_domains: &[String],
) -> Vec<Check> {
    let client = SesApiClient::new(api, timeouts).await;
    let limit = timeouts.connect + timeouts.command;
    let mut checks = Vec::new();
    for domain in sender_domains {
        let name = format!("{check} identity {domain}");
        checks.push(match tokio::time::timeout(limit, client.identity_verified(domain)).await {
            Err(_) => Check::fail(name, format!("no answer within {limit:?}"), "check endpoint_url and the network path to SES"),
            Ok(Err(reason)) if reason.contains("NotFound") => Check::fail(
                name,
                format!("{domain} is not an SES identity in {}", api.region),
                "verify the domain in SES (CreateEmailIdentity) in this region; SES refuses unverified senders",
            ),
            Ok(Err(reason)) => Check::fail(name, reason, "check the instance role or AWS credentials: they must allow ses:GetEmailIdentity and ses:SendEmail"),
            Ok(Ok(false)) => Check::fail(name, format!("{domain} is not verified yet"), "publish the DKIM records SES gave for it and wait for verification"),
            Ok(Ok(true)) => Check::pass(name, format!("verified for sending in {}", api.region)),
        });
    }
    let name = format!("{check} quota");
    checks.push(match tokio::time::timeout(limit, client.quota()).await {
        Err(_) => Check::fail(
            name,
            format!("no answer within {limit:?}"),
            "check endpoint_url and the network path to SES",
        ),
        Ok(Err(reason)) => Check::warn(
            name,
            format!("not readable: {reason}"),
            "allow ses:GetAccount to see the sending quota",
        ),
        Ok(Ok((max, sent))) if max >= 0.0 && sent >= max => Check::warn(
            name,
            format!("{sent} of {max} messages sent in the last 24 hours"),
            "mail is deferred until the quota frees up; ask AWS for a higher quota",
        ),
        Ok(Ok((max, sent))) => Check::pass(
            name,
            format!("{sent} of {max} messages in the last 24 hours"),
        ),
    });
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
