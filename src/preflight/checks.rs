//! The checks other than SPF and the upstream probe: HELO name (point b), reverse DNS (c),
//! the envelope sender's domain (d), DMARC, and the local setup (spool, open-relay config).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dns::{Answer, Dns};
use super::report::Check;
use super::spf::UpstreamSpf;
use crate::config::Config;
use crate::model::is_private;
use crate::rewrite::AddressRules;

/// Free space below which the spool check fails, and below which it warns.
const DISK_FAIL_BYTES: u64 = 100 * 1024 * 1024;
const DISK_WARN_BYTES: u64 = 1024 * 1024 * 1024;

/// The name we say in EHLO: the configured upstream HELO, else what it would be.
pub fn effective_helo(config: &Config) -> String {
    if !config.upstream_helo.is_empty() {
        return config.upstream_helo.clone();
    }
    config
        .rewrite
        .helo_name
        .clone()
        .or_else(|| {
            config
                .rewrite
                .sender_domain
                .clone()
                .filter(|_| config.rewrite.internal_names.is_internal(&config.hostname))
        })
        .unwrap_or_else(|| config.hostname.clone())
}

/// Point b: the EHLO name is a public FQDN that resolves.
pub async fn helo(config: &Config, dns: &Dns) -> Vec<Check> {
    let name = effective_helo(config);
    let check = "helo";
    if config.rewrite.internal_names.is_internal(&name) || !name.contains('.') {
        return vec![Check::fail(
            check,
            format!("EHLO name '{name}' is internal; receivers reject it"),
            "set rewrite.helo_name to a public name of this relay (or rewrite.sender_domain)",
        )];
    }
    vec![match dns.addresses(&name).await {
        Answer::Records(ips) => Check::pass(check, format!("{name} resolves to {}", join(&ips))),
        Answer::NxDomain | Answer::NoRecords => Check::fail(
            check,
            format!("EHLO name {name} has no A or AAAA record"),
            format!("add an A record for {name} (the relay's public address)"),
        ),
        Answer::Failed(reason) => Check::warn(
            check,
            format!("cannot resolve {name}: {reason}"),
            "check [dns] nameservers",
        ),
    }]
}

/// Point c: the public address has a PTR that resolves back to it and names the EHLO host.
/// Through an upstream relay receivers see the upstream's address, so this is advice only.
pub async fn reverse_dns(config: &Config, dns: &Dns) -> Vec<Check> {
    let check = "rdns";
    let via_upstream = !config.delivery.upstreams.is_empty();
    let ip = match public_ip(config).await {
        Ok(ip) => ip,
        Err(reason) => {
            return vec![Check::warn(
                check,
                reason,
                "set preflight.public_ip (or preflight.metadata_url)",
            )];
        }
    };
    let helo = effective_helo(config);
    let finding = match dns.ptr(ip).await {
        Answer::Records(names) => forward_confirm(dns, ip, &names, &helo).await,
        Answer::NxDomain | Answer::NoRecords => Check::fail(
            check,
            format!("{ip} has no PTR record"),
            format!(
                "ask the address's owner (for EC2: an Elastic IP with a reverse DNS request) for PTR {ip} -> {helo}"
            ),
        ),
        Answer::Failed(reason) => Check::warn(
            check,
            format!("cannot look up the PTR of {ip}: {reason}"),
            "check [dns] nameservers",
        ),
    };
    let finding = if via_upstream {
        finding.at_most_warn(
            "informational: mail leaves through the upstream, whose address receivers check",
        )
    } else {
        finding
    };
    vec![finding]
}

async fn forward_confirm(dns: &Dns, ip: IpAddr, names: &[String], helo: &str) -> Check {
    let check = "rdns";
    for name in names {
        if let Answer::Records(addresses) = dns.addresses(name).await
            && addresses.contains(&ip)
        {
            return if name.eq_ignore_ascii_case(helo) {
                Check::pass(
                    check,
                    format!("{ip} -> {name} -> {ip} (forward-confirmed, matches EHLO)"),
                )
            } else {
                Check::warn(
                    check,
                    format!(
                        "{ip} -> {name} is forward-confirmed but differs from the EHLO name {helo}"
                    ),
                    format!("set rewrite.helo_name = \"{name}\", or change the PTR to {helo}"),
                )
            };
        }
    }
    Check::fail(
        check,
        format!(
            "{ip} -> {} does not resolve back to {ip} (not forward-confirmed)",
            names.join(", ")
        ),
        format!("add an A record {} -> {ip}, or change the PTR", names[0]),
    )
}

/// `preflight.public_ip`, or the metadata URL's answer.
async fn public_ip(config: &Config) -> Result<IpAddr, String> {
    if let Some(ip) = config.preflight.public_ip {
        return Ok(ip);
    }
    let Some(url) = &config.preflight.metadata_url else {
        return Err("the public address is unknown, so its PTR cannot be checked".into());
    };
    let body = tokio::time::timeout(Duration::from_secs(3), http_get(url))
        .await
        .map_err(|_| format!("{url} did not answer within 3 s"))??;
    body.trim()
        .parse()
        .map_err(|_| format!("{url} answered '{}', not an IP address", body.trim()))
}

/// A plain HTTP/1.0 GET, enough for a metadata service on the local network.
async fn http_get(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let address = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed response"))?;
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !ok {
        return Err(format!("{url}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

/// Point d: cron's sender after rewriting is in a domain that exists and takes mail.
pub async fn envelope_sender(config: &Config, dns: &Dns) -> Vec<Check> {
    let original = format!("root@{}", config.hostname);
    let rules = AddressRules::new(&config.rewrite, &config.hostname);
    let sender = rules.sender(&original).unwrap_or(original);
    let check = "envelope sender";
    let Some((_, domain)) = sender.rsplit_once('@') else {
        return vec![Check::fail(
            check,
            format!("{sender} has no domain"),
            "set rewrite.sender_domain",
        )];
    };
    if config.rewrite.internal_names.is_internal(domain)
        || domain.eq_ignore_ascii_case(&config.hostname)
    {
        return vec![Check::fail(
            check,
            format!("cron mail would be sent as {sender}, an internal address receivers refuse"),
            "set rewrite.sender_domain or rewrite.internal_sender",
        )];
    }
    vec![match dns.mx(domain).await {
        Answer::Records(mx) if mx.iter().any(|(_, exchange)| exchange.is_empty()) => Check::fail(
            check,
            format!(
                "{domain} has a null MX (RFC 7505): it accepts no mail, so bounces to {sender} are lost"
            ),
            "use a sender domain that receives mail",
        ),
        Answer::Records(mx) => Check::pass(
            check,
            format!(
                "{sender}: {domain} has MX {}",
                mx.iter()
                    .map(|(p, e)| format!("{p} {e}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Answer::NxDomain => Check::fail(
            check,
            format!("{sender}: {domain} does not exist (NXDOMAIN); receivers refuse such senders"),
            "use an existing domain in rewrite.sender_domain / rewrite.internal_sender",
        ),
        Answer::NoRecords => match dns.addresses(domain).await {
            Answer::Records(ips) => Check::pass(
                check,
                format!(
                    "{sender}: {domain} has no MX, but A/AAAA {} (implicit MX)",
                    join(&ips)
                ),
            ),
            _ => Check::fail(
                check,
                format!("{sender}: {domain} has no MX, A or AAAA record"),
                format!("add an MX record for {domain}"),
            ),
        },
        Answer::Failed(reason) => Check::warn(
            check,
            format!("cannot look up MX {domain}: {reason}"),
            "check [dns] nameservers",
        ),
    }]
}

/// Every domain mail is sent from: rewrite targets, allowed sender domains, and extra ones.
pub fn sender_domains(config: &Config, extra: &[String]) -> Vec<String> {
    let rewrite = &config.rewrite;
    let domain_of = |address: &str| address.rsplit_once('@').map(|(_, d)| d.to_string());
    let mut domains: Vec<String> = rewrite
        .sender_domain
        .iter()
        .cloned()
        .chain(rewrite.internal_sender.as_deref().and_then(domain_of))
        .chain(rewrite.senders.values().filter_map(|to| {
            to.strip_prefix('@')
                .map(String::from)
                .or_else(|| domain_of(to))
        }))
        .chain(config.smtp.allowed_sender_domains.domains().iter().cloned())
        .chain(extra.iter().cloned())
        .map(|d| d.to_ascii_lowercase())
        .collect();
    domains.sort();
    domains.dedup();
    domains
}

/// What SPF must allow, per upstream.
pub fn upstream_spf(config: &Config) -> Vec<UpstreamSpf> {
    config
        .delivery
        .upstreams
        .iter()
        .map(|u| UpstreamSpf {
            name: u.name(),
            include: u.spf_include.clone(),
            ips: u.spf_ips.clone(),
        })
        .collect()
}

/// `_dmarc.domain`: one valid record, and its policy.
pub async fn dmarc(dns: &Dns, domain: &str) -> Check {
    dmarc_record(dns, domain).await.about(domain)
}

async fn dmarc_record(dns: &Dns, domain: &str) -> Check {
    let check = format!("dmarc {domain}");
    let name = format!("_dmarc.{domain}");
    let fix = format!(
        "add TXT {name}. \"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\" and tighten p= later"
    );
    let records: Vec<String> = match dns.txt(&name).await {
        Answer::Records(records) => records.into_iter().filter(|r| is_dmarc(r)).collect(),
        Answer::NoRecords | Answer::NxDomain => Vec::new(),
        Answer::Failed(reason) => {
            return Check::warn(
                check,
                format!("cannot look up TXT {name}: {reason}"),
                "check [dns] nameservers",
            );
        }
    };
    match records.as_slice() {
        [] => Check::warn(
            check,
            "no DMARC record: receivers apply their own policy to mail from this domain",
            fix,
        ),
        [record] => match Dmarc::parse(record.as_bytes()) {
            Ok(parsed) => Check::pass(check, format!("policy p={}", policy_name(&parsed, record))),
            Err(error) => Check::fail(check, format!("\"{record}\" does not parse: {error}"), fix),
        },
        many => Check::fail(
            check,
            format!("{} DMARC records; receivers ignore them all", many.len()),
            "keep exactly one",
        ),
    }
}

/// RFC 7489 6.4: `dmarc-version = "v" *WSP "=" *WSP %x44.4d.41.52.43.31`, the first tag:
/// the value is case-sensitive, so `v=dmarc1` is not a DMARC record (and receivers skip it).
fn is_dmarc(text: &str) -> bool {
    let wsp = |c: char| c == ' ' || c == '\t';
    let Some(rest) = text.strip_prefix(['v', 'V']) else {
        return false;
    };
    let Some(rest) = rest.trim_start_matches(wsp).strip_prefix('=') else {
        return false;
    };
    let Some(rest) = rest.trim_start_matches(wsp).strip_prefix("DMARC1") else {
        return false;
    };
    let rest = rest.trim_start_matches(wsp);
    rest.is_empty() || rest.starts_with(';')
}

/// The p= tag as written (mail-auth's parsed policy has no Display).
fn policy_name(_parsed: &Dmarc, record: &str) -> String {
    record
        .split(';')
        .filter_map(|tag| tag.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("p"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_else(|| "none".into())
}

/// The spool is writable with room to grow; the listener is not an open relay by config.
pub fn local(config: &Config) -> Vec<Check> {
    vec![spool(config), relay(config)]
}

fn spool(config: &Config) -> Check {
    let check = "local spool";
    let path = &config.spool.path;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.exists() {
        return Check::warn(
            check,
            format!("{} does not exist yet", dir.display()),
            "run `smarthost serve` once, or create it",
        );
    }
    let probe = dir.join(format!(".smarthost-preflight-{}", std::process::id()));
    if let Err(error) = std::fs::write(&probe, b"") {
        return Check::fail(
            check,
            format!("{} is not writable: {error}", dir.display()),
            "fix the directory's owner or mode",
        );
    }
    let _ = std::fs::remove_file(&probe);
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stats) => {
            let free = stats.blocks_available() * stats.fragment_size();
            let mib = free / (1024 * 1024);
            if free < DISK_FAIL_BYTES {
                Check::fail(
                    check,
                    format!("only {mib} MiB free for {}", path.display()),
                    "free disk space: a full disk makes the relay answer 452",
                )
            } else if free < DISK_WARN_BYTES {
                Check::warn(
                    check,
                    format!("{mib} MiB free for {}", path.display()),
                    "free disk space",
                )
            } else {
                Check::pass(check, format!("{} writable, {mib} MiB free", dir.display()))
            }
        }
        Err(error) => Check::warn(
            check,
            format!("cannot read free space: {error}"),
            "check the file system",
        ),
    }
}

fn relay(config: &Config) -> Check {
    let check = "local relay";
    let networks = config.smtp.trusted_networks.to_strings();
    // 0.0.0.0/0 and ::/0 never get this far: the configuration refuses them.
    let listen = config.smtp.listen.ip();
    let public_listener = listen.is_unspecified() || !(listen.is_loopback() || is_private(listen));
    let wide: Vec<&String> = networks
        .iter()
        .filter(|n| {
            n.parse::<IpNet>().is_ok_and(|net| {
                !(net.addr().is_loopback() || is_private(net.addr())) || net.prefix_len() < 8
            })
        })
        .collect();
    if public_listener && !wide.is_empty() {
        return Check::fail(
            check,
            format!(
                "listening on {} and trusting {}: hosts outside the VPC may relay",
                config.smtp.listen,
                wide.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "narrow smtp.trusted_networks to the VPC CIDR, or listen on a private address",
        );
    }
    Check::pass(
        check,
        format!(
            "relays only for {} (listening on {})",
            networks.join(", "),
            config.smtp.listen
        ),
    )
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Status;

    fn config(text: &str) -> Config {
        Config::from_toml(&format!("hostname = \"relay.example.com\"\n{text}")).unwrap()
    }

    #[test]
    fn open_relay_configurations_fail() {
        assert_eq!(relay(&config("")).status, Status::Pass);
        // 0.0.0.0/0 itself is refused by the configuration; half the Internet still fails here.
        let open = config("[smtp]\nlisten = \"0.0.0.0:25\"\ntrusted_networks = [\"0.0.0.0/1\"]");
        assert_eq!(relay(&open).status, Status::Fail);
        let public =
            config("[smtp]\nlisten = \"0.0.0.0:25\"\ntrusted_networks = [\"198.51.100.0/24\"]");
        assert_eq!(relay(&public).status, Status::Fail);
        let vpc = config("[smtp]\nlisten = \"0.0.0.0:25\"\ntrusted_networks = [\"10.0.0.0/16\"]");
        assert_eq!(relay(&vpc).status, Status::Pass);
    }

    #[test]
    fn dmarc_version_is_exact_and_first() {
        assert!(is_dmarc("v=DMARC1; p=reject"));
        assert!(is_dmarc("v = DMARC1;p=none"));
        assert!(is_dmarc("V=DMARC1"));
        assert!(
            !is_dmarc("v=dmarc1; p=reject"),
            "the value is case-sensitive"
        );
        assert!(!is_dmarc("p=reject; v=DMARC1"), "v= must come first");
        assert!(!is_dmarc("v=DMARC10; p=none"));
        assert!(!is_dmarc(" v=DMARC1; p=none"));
    }

    #[test]
    fn sender_domains_come_from_every_rewrite_target() {
        let c = config(
            "[smtp]\nallowed_sender_domains = [\"b.example\"]\n[rewrite]\nsender_domain = \"a.example\"\ninternal_sender = \"cron+{local}@c.example\"\n[rewrite.senders]\n\"x@y\" = \"z@d.example\"\n",
        );
        assert_eq!(
            sender_domains(&c, &["E.example".into()]),
            [
                "a.example",
                "b.example",
                "c.example",
                "d.example",
                "e.example"
            ]
        );
    }
}
