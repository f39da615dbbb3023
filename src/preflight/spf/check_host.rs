//! `check_host()` of RFC 7208 section 4, as a receiver runs it for one client address, with
//! the counts a receiver keeps: terms that cost a DNS lookup (at most 10) and void lookups
//! (at most 2), both section 4.6.4. Preflight runs it for each of the upstream's egress
//! addresses, and once for an address nobody authorizes, which walks the whole record the
//! way forged mail makes receivers walk it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::macros::{Context, MacroString};
use super::record::{Cidr, Mechanism, Qualifier, Record, is_spf};
use crate::preflight::dns::{Answer, Dns};

/// RFC 7208 4.6.4.
pub const MAX_LOOKUPS: usize = 10;
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 4.6.4: an `mx` or `ptr` term looks at no more than 10 names.
const MAX_NAMES_PER_TERM: usize = 10;
/// The lookup limit ends every chain long before this; it guards against a bug, not DNS.
const MAX_DEPTH: usize = 20;

/// The results of RFC 7208 section 2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    SoftFail,
    TempError,
    PermError,
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        })
    }
}

impl From<Qualifier> for SpfResult {
    fn from(qualifier: Qualifier) -> SpfResult {
        match qualifier {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }
}

/// What `check_host(ip, domain, sender)` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub ip: IpAddr,
    pub result: SpfResult,
    /// Terms that cost a DNS lookup, as counted when evaluation ended.
    pub lookups: usize,
    pub voids: usize,
    /// The term that matched, or why evaluation ended in an error.
    pub reason: String,
    /// For a permerror, what it asks of the record's owner.
    #[serde(skip)]
    pub broken: Option<Broken>,
    /// The include and redirect targets whose records were read.
    #[serde(skip)]
    pub consulted: BTreeSet<String>,
}

/// Why evaluation stopped early: RFC 7208 2.6.6 temperror or 2.6.7 permerror.
enum Stop {
    Temp(String),
    Perm(Broken, String),
}

/// What a permerror asks of the record's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// More than 10 DNS-querying terms (4.6.4).
    TooManyLookups,
    /// Terms naming domains with no records: void lookups over 2 (4.6.4), or an include or
    /// redirect target without SPF (5.2, 6.1).
    EmptyTargets,
    /// The record itself: its grammar, two records, too many MX records, a chain too deep.
    Record,
}

type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, Stop>> + Send + 'a>>;

/// The evaluation's state: who is asking, and the counts so far.
struct Walk<'a> {
    dns: &'a Dns,
    ip: IpAddr,
    sender: String,
    local: String,
    sender_domain: String,
    helo: &'a str,
    lookups: usize,
    voids: usize,
    consulted: BTreeSet<String>,
}

/// Runs check_host for mail from `postmaster@domain` sent by `ip` after `EHLO helo`.
pub async fn check_host(dns: &Dns, ip: IpAddr, domain: &str, helo: &str) -> Evaluation {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut walk = Walk {
        dns,
        ip,
        sender: format!("postmaster@{domain}"),
        local: "postmaster".into(),
        sender_domain: domain.clone(),
        helo,
        lookups: 0,
        voids: 0,
        consulted: BTreeSet::new(),
    };
    let (result, reason, broken) = match walk.check(domain, 0).await {
        Ok((result, reason)) => (result, reason, None),
        Err(Stop::Temp(reason)) => (SpfResult::TempError, reason, None),
        Err(Stop::Perm(broken, reason)) => (SpfResult::PermError, reason, Some(broken)),
    };
    Evaluation {
        ip,
        result,
        lookups: walk.lookups,
        voids: walk.voids,
        reason,
        broken,
        consulted: walk.consulted,
    }
}

impl<'a> Walk<'a> {
    /// check_host for `domain`: its record, then its terms (RFC 7208 4.4 to 4.7).
    fn check(&mut self, domain: String, depth: usize) -> Step<'_, (SpfResult, String)> {
        Box::pin(async move {
            match self.record(&domain).await? {
                None => Ok((SpfResult::None, format!("{domain} has no SPF record"))),
                Some(record) => self.evaluate(domain, record, depth).await,
            }
        })
    }

    /// The one SPF record of `domain` (RFC 7208 4.4, 4.5); `None` when there is none.
    async fn record(&mut self, domain: &str) -> Result<Option<Record>, Stop> {
        if !valid_name(domain) {
            // 4.3: a malformed name has no record.
            return Ok(None);
        }
        let texts = match self.dns.txt(domain).await {
            Answer::Records(texts) => texts,
            Answer::NoRecords | Answer::NxDomain => {
                self.void(&format!("TXT {domain}"))?;
                return Ok(None);
            }
            Answer::Failed(reason) => {
                return Err(Stop::Temp(format!("TXT {domain}: {reason}")));
            }
        };
        let mut spf: Vec<String> = texts.into_iter().filter(|t| is_spf(t)).collect();
        match spf.len() {
            0 => Ok(None),
            1 => Record::parse(&spf.remove(0))
                .map(Some)
                .map_err(|e| Stop::Perm(Broken::Record, format!("{domain}: {e}"))),
            n => Err(Stop::Perm(
                Broken::Record,
                format!("{domain} has {n} SPF records (RFC 7208 4.5)"),
            )),
        }
    }

    fn evaluate(
        &mut self,
        domain: String,
        record: Record,
        depth: usize,
    ) -> Step<'_, (SpfResult, String)> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(Stop::Perm(
                    Broken::Record,
                    format!("include and redirect chain deeper than {MAX_DEPTH} at {domain}"),
                ));
            }
            // The redirect costs its lookup when the record is read, as pyspf counts it, even
            // beside an `all` that makes it ignored (6.1): 4.6.4 counts the terms present.
            let redirect = match &record.redirect {
                Some(spec) => {
                    self.count_lookup(&format!("redirect={spec}"))?;
                    Some(self.expand(spec, &domain).await?)
                }
                None => None,
            };
            for directive in &record.directives {
                if self.matches(&directive.mechanism, &domain, depth).await? {
                    return Ok((directive.qualifier.into(), directive.term.clone()));
                }
            }
            // 6.1: no term matched and there is no `all`, so the redirect decides.
            let Some(target) = redirect.filter(|_| record.effective_redirect().is_some()) else {
                return Ok((SpfResult::Neutral, format!("no term of {domain} matched")));
            };
            self.consulted.insert(target.to_ascii_lowercase());
            match self.record(&target).await? {
                None => Err(Stop::Perm(
                    Broken::EmptyTargets,
                    format!("redirect={target}: no SPF record there (RFC 7208 6.1)"),
                )),
                Some(next) => self.evaluate(target, next, depth + 1).await,
            }
        })
    }

    async fn matches(
        &mut self,
        mechanism: &Mechanism,
        domain: &str,
        depth: usize,
    ) -> Result<bool, Stop> {
        if mechanism.costs_a_lookup() {
            self.count_lookup(&term_name(mechanism))?;
        }
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4(net) => Ok(matches!(self.ip, IpAddr::V4(ip) if net.contains(&ip))),
            Mechanism::Ip6(net) => Ok(matches!(self.ip, IpAddr::V6(ip) if net.contains(&ip))),
            Mechanism::Include(spec) => {
                let target = self.expand(spec, domain).await?;
                self.consulted.insert(target.to_ascii_lowercase());
                // 5.2's table: only pass matches; none is a permerror; errors carry up.
                match self.check(target.clone(), depth + 1).await?.0 {
                    SpfResult::Pass => Ok(true),
                    SpfResult::None => Err(Stop::Perm(
                        Broken::EmptyTargets,
                        format!("include:{target}: no SPF record there (RFC 7208 5.2)"),
                    )),
                    _ => Ok(false),
                }
            }
            Mechanism::A { domain: spec, cidr } => {
                let target = self.target(spec.as_ref(), domain).await?;
                let addresses = self.addresses(&target).await?;
                Ok(self.within(&addresses, *cidr))
            }
            Mechanism::Mx { domain: spec, cidr } => {
                let target = self.target(spec.as_ref(), domain).await?;
                let addresses = self.mx_addresses(&target).await?;
                Ok(self.within(&addresses, *cidr))
            }
            Mechanism::Ptr(spec) => {
                let target = self.target(spec.as_ref(), domain).await?;
                let names = self.validated_names().await?;
                Ok(names.iter().any(|name| is_within_domain(name, &target)))
            }
            Mechanism::Exists(spec) => {
                let target = self.expand(spec, domain).await?;
                // 5.7: always an A query, whatever the client's address family.
                match self.dns.a(&target).await {
                    Answer::Records(_) => Ok(true),
                    Answer::NoRecords | Answer::NxDomain => {
                        self.void(&format!("exists:{target}"))?;
                        Ok(false)
                    }
                    Answer::Failed(reason) => Err(Stop::Temp(format!("A {target}: {reason}"))),
                }
            }
        }
    }

    fn count_lookup(&mut self, term: &str) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(Stop::Perm(
                Broken::TooManyLookups,
                format!(
                    "{term} is DNS lookup {}, over the limit of {MAX_LOOKUPS} (RFC 7208 4.6.4)",
                    self.lookups
                ),
            ));
        }
        Ok(())
    }

    fn void(&mut self, query: &str) -> Result<(), Stop> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(Stop::Perm(
                Broken::EmptyTargets,
                format!(
                    "{query} is void lookup {}, over the limit of {MAX_VOID_LOOKUPS} (RFC 7208 4.6.4)",
                    self.voids
                ),
            ));
        }
        Ok(())
    }

    async fn target(&mut self, spec: Option<&MacroString>, domain: &str) -> Result<String, Stop> {
        match spec {
            Some(spec) => self.expand(spec, domain).await,
            None => Ok(domain.to_string()),
        }
    }

    async fn expand(&mut self, spec: &MacroString, domain: &str) -> Result<String, Stop> {
        // %{p} is the client's validated name (7.3), which takes the PTR walk of 5.5.
        let validated = if spec.uses_validated_name() {
            let names = self.validated_names().await?;
            names
                .iter()
                .find(|name| is_within_domain(name, domain))
                .or(names.first())
                .cloned()
        } else {
            None
        };
        Ok(spec.expand_domain(&Context {
            sender: &self.sender,
            local: &self.local,
            sender_domain: &self.sender_domain,
            domain,
            ip: self.ip,
            helo: self.helo,
            validated_name: validated.as_deref(),
        }))
    }

    /// 5.3: A for an IPv4 client, AAAA for an IPv6 one. An empty answer is a void lookup.
    async fn addresses(&mut self, name: &str) -> Result<Vec<IpAddr>, Stop> {
        if !valid_name(name) {
            return Ok(Vec::new());
        }
        let answer = match self.ip {
            IpAddr::V4(_) => self.dns.a(name).await,
            IpAddr::V6(_) => self.dns.aaaa(name).await,
        };
        match answer {
            Answer::Records(addresses) => Ok(addresses),
            Answer::NoRecords | Answer::NxDomain => {
                self.void(&format!("address of {name}"))?;
                Ok(Vec::new())
            }
            Answer::Failed(reason) => Err(Stop::Temp(format!("address of {name}: {reason}"))),
        }
    }

    /// 5.4: the addresses of every exchange; more than 10 MX records is a permerror.
    async fn mx_addresses(&mut self, name: &str) -> Result<Vec<IpAddr>, Stop> {
        let mut exchanges = match self.dns.mx(name).await {
            Answer::Records(exchanges) => exchanges,
            Answer::NoRecords | Answer::NxDomain => {
                self.void(&format!("MX {name}"))?;
                return Ok(Vec::new());
            }
            Answer::Failed(reason) => return Err(Stop::Temp(format!("MX {name}: {reason}"))),
        };
        if exchanges.len() > MAX_NAMES_PER_TERM {
            return Err(Stop::Perm(
                Broken::Record,
                format!(
                    "mx:{name} has {} MX records, more than {MAX_NAMES_PER_TERM} (RFC 7208 4.6.4)",
                    exchanges.len()
                ),
            ));
        }
        exchanges.sort();
        let mut addresses = Vec::new();
        for (_, exchange) in exchanges {
            if !exchange.is_empty() {
                addresses.extend(self.addresses(&exchange).await?);
            }
        }
        Ok(addresses)
    }

    /// 5.5: the client's PTR names that resolve back to it (at most 10 are tried). A DNS
    /// error here makes the mechanism not match rather than fail evaluation.
    async fn validated_names(&mut self) -> Result<Vec<String>, Stop> {
        let names = match self.dns.ptr(self.ip).await {
            Answer::Records(names) => names,
            Answer::NoRecords | Answer::NxDomain => {
                self.void(&format!("PTR of {}", self.ip))?;
                return Ok(Vec::new());
            }
            Answer::Failed(_) => return Ok(Vec::new()),
        };
        let mut validated = Vec::new();
        for name in names.into_iter().take(MAX_NAMES_PER_TERM) {
            match self.addresses(&name).await {
                Ok(addresses) if addresses.contains(&self.ip) => validated.push(name),
                Ok(_) | Err(Stop::Temp(_)) => {}
                Err(stop) => return Err(stop),
            }
        }
        Ok(validated)
    }

    fn within(&self, addresses: &[IpAddr], cidr: Cidr) -> bool {
        addresses.iter().any(|address| match (self.ip, address) {
            (IpAddr::V4(ip), IpAddr::V4(a)) => {
                prefix_match(ip.to_bits().into(), a.to_bits().into(), 32, cidr.v4)
            }
            (IpAddr::V6(ip), IpAddr::V6(a)) => {
                prefix_match(ip.to_bits(), a.to_bits(), 128, cidr.v6)
            }
            _ => false,
        })
    }
}

fn prefix_match(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix);
    prefix == 0 || (a ^ b) >> (width - prefix) == 0
}

fn term_name(mechanism: &Mechanism) -> String {
    match mechanism {
        Mechanism::Include(spec) => format!("include:{spec}"),
        Mechanism::Exists(spec) => format!("exists:{spec}"),
        Mechanism::A { domain, .. } => named("a", domain.as_ref()),
        Mechanism::Mx { domain, .. } => named("mx", domain.as_ref()),
        Mechanism::Ptr(domain) => named("ptr", domain.as_ref()),
        _ => String::new(),
    }
}

fn named(name: &str, domain: Option<&MacroString>) -> String {
    match domain {
        Some(spec) => format!("{name}:{spec}"),
        None => name.to_string(),
    }
}

/// `name` is `domain` or below it (5.5), ignoring case.
fn is_within_domain(name: &str, domain: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}

/// Labels of 1 to 63 characters (RFC 7208 4.3): anything else is never looked up.
fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.split('.').all(|label| (1..=63).contains(&label.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_compare_the_leading_bits_only() {
        let v4 = |s: &str| u128::from(s.parse::<std::net::Ipv4Addr>().unwrap().to_bits());
        assert!(prefix_match(v4("192.0.2.77"), v4("192.0.2.1"), 32, 24));
        assert!(!prefix_match(v4("192.0.3.77"), v4("192.0.2.1"), 32, 24));
        assert!(prefix_match(v4("10.1.2.3"), v4("192.0.2.1"), 32, 0));
        assert!(!prefix_match(v4("192.0.2.2"), v4("192.0.2.1"), 32, 32));
    }

    #[test]
    fn names_are_matched_on_label_boundaries() {
        assert!(is_within_domain("mail.Example.com", "example.com"));
        assert!(is_within_domain("example.com", "EXAMPLE.com"));
        assert!(!is_within_domain("badexample.com", "example.com"));
        assert!(!valid_name("a..b"));
        assert!(!valid_name(&format!("{}.com", "x".repeat(64))));
        assert!(valid_name("example.com."));
    }
}
