//! `smarthost preflight`: the checks that decide whether cloud mail lands — the seed's points
//! b to e — run before the first message and whenever asked (cron, CI, monitoring).

mod checks;
mod daemon;
mod dns;
mod probe;
mod report;
mod spf;

pub use daemon::{Audit, LastRun};
pub use report::{Check, Report, Status};

use crate::config::Config;
use dns::Dns;

/// What the operator asked for besides the configuration.
pub struct Options {
    /// More sender domains to audit (`--sender-domain`).
    pub sender_domains: Vec<String>,
    /// Skip connecting to the upstreams (`--no-upstream`).
    pub probe_upstreams: bool,
}

/// Runs every check. Each has its own deadline, so a silent DNS server or upstream gives a
/// finding with that reason, never a hang.
pub async fn run(config: &Config, options: &Options) -> Report {
    match Dns::new(&config.dns.nameservers, config.dns.timeout) {
        Ok(dns) => run_with(config, Some(&dns), options).await,
        Err(error) => {
            let unresolved = Check::fail(
                "dns",
                error,
                "fix /etc/resolv.conf or set [dns] nameservers",
            );
            let rest = run_with(config, None, options).await.checks;
            Report::new(std::iter::once(unresolved).chain(rest).collect())
        }
    }
}

/// Every check; those that need DNS only with a resolver.
async fn run_with(config: &Config, dns: Option<&Dns>, options: &Options) -> Report {
    let mut found = Vec::new();
    let domains = checks::sender_domains(config, &options.sender_domains);
    if let Some(dns) = dns {
        found.extend(checks::helo(config, dns).await);
        found.extend(checks::reverse_dns(config, dns).await);
        found.extend(checks::envelope_sender(config, dns).await);
        let helo = checks::effective_helo(config);
        let upstreams = checks::upstream_spf(config);
        for domain in &domains {
            found.extend(spf::audit(dns, domain, &upstreams, &helo).await);
            found.push(checks::dmarc(dns, domain).await);
        }
    }
    if options.probe_upstreams {
        found.extend(probe::upstreams(config, &domains).await);
    }
    found.extend(checks::local(config));
    Report::new(found)
}
