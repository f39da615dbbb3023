//! SPF for a sender domain (the seed's point e), judged the way receivers judge it: exactly
//! one record (RFC 7208 4.5) that follows the grammar strictly (`record`), evaluated with
//! `check_host` (`check_host`, counting lookups and void lookups as 4.6.4 does) for each of the
//! upstream's egress addresses and for an address nobody authorizes, not open to everyone or
//! to a whole cloud, and authorizing our upstream.

mod check_host;
mod macros;
mod record;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::dns::{Answer, Dns};
use super::report::{Check, Status};
use check_host::{Broken, MAX_LOOKUPS, MAX_VOID_LOOKUPS, check_host};
pub use check_host::{Evaluation, SpfResult};
use record::{Mechanism, Qualifier, Record, is_spf};

/// Addresses no sender uses (RFC 5737 TEST-NET-1, RFC 3849): a record that passes them
/// passes anyone, and evaluating from them walks every term, as forged mail makes receivers.
const STRANGERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x254)),
];
/// How many addresses of an `spf_include` record stand for the upstream's egress.
const EGRESS_SAMPLES: usize = 4;

/// Shared compute ranges of the large clouds (a sample of their published lists): an SPF
/// term covering one authorizes every tenant there to send as you.
const CLOUD_RANGES: &[(&str, &str)] = &[
    ("3.0.0.0/9", "Amazon EC2"),
    ("13.48.0.0/13", "Amazon EC2"),
    ("18.128.0.0/9", "Amazon EC2"),
    ("52.0.0.0/10", "Amazon EC2"),
    ("54.64.0.0/11", "Amazon EC2"),
    ("34.64.0.0/10", "Google Compute Engine"),
    ("35.184.0.0/13", "Google Compute Engine"),
    ("20.0.0.0/11", "Microsoft Azure"),
    ("40.64.0.0/10", "Microsoft Azure"),
];

/// What SPF must allow for one upstream.
pub struct UpstreamSpf {
    pub name: String,
    /// The domain its SPF include is (for SES: amazonses.com).
    pub include: Option<String>,
    /// Addresses it sends from, checked with check_host.
    pub ips: Vec<IpAddr>,
}

pub async fn audit(dns: &Dns, domain: &str, upstreams: &[UpstreamSpf], helo: &str) -> Vec<Check> {
    audit_record(dns, domain, upstreams, helo)
        .await
        .into_iter()
        .map(|check| check.about(domain))
        .collect()
}

async fn audit_record(
    dns: &Dns,
    domain: &str,
    upstreams: &[UpstreamSpf],
    helo: &str,
) -> Vec<Check> {
    let name = format!("spf {domain}");
    let texts = match spf_records(dns, domain).await {
        Err(check) => return vec![check.with_name(&name)],
        Ok(records) if records.is_empty() => {
            return vec![Check::fail(
                &name,
                "no SPF record: receivers cannot tell who may send as this domain",
                format!(
                    "add TXT {domain}. \"v=spf1 {} ~all\"",
                    suggested_include(upstreams)
                ),
            )];
        }
        Ok(records) => records,
    };
    // A record receivers cannot use is reported, and still evaluated: check_host then shows
    // the permerror every egress address gets.
    let (first, record) = match texts.as_slice() {
        [text] => match Record::parse(text) {
            Ok(record) => (Check::pass(&name, format!("\"{text}\"")), Some(record)),
            Err(error) => (
                Check::fail(
                    &name,
                    format!("\"{text}\" is a permerror for every receiver: {error}"),
                    "fix the term (RFC 7208 section 12 grammar)",
                ),
                None,
            ),
        },
        many => (
            Check::fail(
                &name,
                format!(
                    "{} SPF records (RFC 7208 4.5: that is a permanent error): {}",
                    many.len(),
                    many.join(" | ")
                ),
                "merge them into one v=spf1 TXT record",
            ),
            None,
        ),
    };
    let mut checks = vec![first];
    let mut strangers = Vec::new();
    for ip in STRANGERS {
        strangers.push(check_host(dns, ip, domain, helo).await);
    }
    if let Some(record) = &record {
        checks.extend(policy(&format!("{name} policy"), record, &strangers));
    }
    checks.push(limits(&format!("{name} lookups"), &strangers[0]));
    for upstream in upstreams {
        checks.push(authorizes(dns, domain, upstream, helo).await);
    }
    checks
}

impl Check {
    fn with_name(mut self, name: &str) -> Check {
        self.check = name.to_string();
        self
    }
}

fn suggested_include(upstreams: &[UpstreamSpf]) -> String {
    let includes: Vec<String> = upstreams
        .iter()
        .filter_map(|u| u.include.as_ref().map(|i| format!("include:{i}")))
        .collect();
    if includes.is_empty() {
        "include:<your relay's SPF domain>".into()
    } else {
        includes.join(" ")
    }
}

/// The TXT records of `domain` that are SPF records.
async fn spf_records(dns: &Dns, domain: &str) -> Result<Vec<String>, Check> {
    match dns.txt(domain).await {
        Answer::Records(records) => Ok(records.into_iter().filter(|r| is_spf(r)).collect()),
        Answer::NoRecords => Ok(Vec::new()),
        Answer::NxDomain => Err(Check::fail(
            "",
            format!("{domain} does not exist (NXDOMAIN)"),
            "use a sender domain that exists",
        )),
        Answer::Failed(reason) => Err(Check::fail(
            "",
            format!("cannot look up TXT {domain}: {reason}"),
            "check [dns] nameservers and that the DNS server answers",
        )),
    }
}

/// The domain's own terms (`+all`, `?all`, `ptr`, ranges too wide to be ours), and whether
/// an address no sender uses passes: then anyone may send as the domain, however the record
/// says it (an include of a `+all` record, `a/0`, `exists` of a name that always resolves).
fn policy(name: &str, record: &Record, strangers: &[Evaluation]) -> Vec<Check> {
    let mut findings = policy_terms(name, record);
    let open = strangers.iter().find(|e| e.result == SpfResult::Pass);
    if let Some(open) = open
        && !findings.iter().any(|c| c.status == Status::Fail)
    {
        findings.push(Check::fail(
            name,
            format!(
                "check_host passes {}, an address no sender uses ({}): anyone may send as this domain",
                open.ip, open.reason
            ),
            "remove the term that matches every address; end the record with ~all or -all",
        ));
    }
    if findings.is_empty() {
        findings.push(Check::pass(
            name,
            "no +all, ?all, ptr, open or over-wide terms",
        ));
    }
    findings[0].spf = strangers.to_vec();
    findings
}

fn policy_terms(name: &str, record: &Record) -> Vec<Check> {
    let mut checks = Vec::new();
    for directive in &record.directives {
        match (&directive.qualifier, &directive.mechanism) {
            (Qualifier::Pass, Mechanism::All) => checks.push(Check::fail(
                name,
                "+all authorizes every host on the internet to send as this domain",
                "end the record with ~all or -all",
            )),
            (Qualifier::Neutral, Mechanism::All) => checks.push(Check::warn(
                name,
                "?all says nothing about other hosts; receivers treat forged mail as neutral",
                "end the record with ~all or -all",
            )),
            (_, Mechanism::Ptr(_)) => checks.push(Check::warn(
                name,
                "the ptr mechanism is deprecated (RFC 7208 5.5) and many receivers ignore it",
                "replace ptr with ip4:/ip6: terms or an include:",
            )),
            (qualifier, Mechanism::Ip4(net)) => {
                checks.extend(wide_range(name, *qualifier, IpNet::V4(*net), 16, "ip4"));
            }
            (qualifier, Mechanism::Ip6(net)) => {
                checks.extend(wide_range(name, *qualifier, IpNet::V6(*net), 32, "ip6"));
            }
            _ => {}
        }
    }
    checks
}

/// A range that covers a shared cloud range (the more telling finding), or is wider than
/// `narrowest` bits.
fn wide_range(
    name: &str,
    qualifier: Qualifier,
    net: IpNet,
    narrowest: u8,
    kind: &str,
) -> Option<Check> {
    let net = net.trunc();
    if net.prefix_len() == 0 && qualifier == Qualifier::Pass {
        return Some(Check::fail(
            name,
            format!("{kind}:{net} authorizes every address, like +all"),
            "list only the addresses that send your mail, or include: your relay's SPF domain",
        ));
    }
    let fix =
        "authorize your relay instead (include: its SPF domain), or list only addresses you own";
    let cloud = CLOUD_RANGES.iter().find_map(|(range, cloud)| {
        let cloud_net: IpNet = range.parse().ok()?;
        (net.prefix_len() <= cloud_net.prefix_len() && net.contains(&cloud_net.network()))
            .then_some((range, cloud))
    });
    if let Some((range, cloud)) = cloud {
        return Some(Check::warn(
            name,
            format!(
                "{kind}:{net} covers {range}, shared {cloud} compute: every tenant there may send as you"
            ),
            fix,
        ));
    }
    (net.prefix_len() < narrowest).then(|| {
        Check::warn(
            name,
            format!("{kind}:{net} is wider than /{narrowest}: everyone else in that range may send as you"),
            fix,
        )
    })
}

/// The 10-lookup and 2-void limits (RFC 7208 4.6.4), on the walk forged mail makes
/// receivers take: from an address no term authorizes, every term is evaluated.
fn limits(name: &str, evaluation: &Evaluation) -> Check {
    let counts = format!(
        "{} DNS lookups, {} void (limits {MAX_LOOKUPS} and {MAX_VOID_LOOKUPS})",
        evaluation.lookups, evaluation.voids
    );
    let check = match evaluation.result {
        SpfResult::PermError => Check::fail(
            name,
            format!(
                "check_host({}) = permerror: {}; receivers fail SPF for all mail",
                evaluation.ip, evaluation.reason
            ),
            permerror_fix(evaluation.broken),
        ),
        SpfResult::TempError => Check::warn(
            name,
            format!(
                "check_host({}) = temperror: {}",
                evaluation.ip, evaluation.reason
            ),
            "receivers defer or accept unauthenticated mail while this lasts; fix the DNS server",
        ),
        _ => Check::pass(name, counts),
    };
    check.with_evaluations(vec![evaluation.clone()])
}

fn permerror_fix(broken: Option<Broken>) -> &'static str {
    match broken {
        Some(Broken::TooManyLookups) => {
            "flatten includes into ip4:/ip6: terms or drop unused ones (at most 10 lookups)"
        }
        Some(Broken::EmptyTargets) => "remove terms naming domains that have no records",
        Some(Broken::Record) | None => {
            "fix the record the reason names (RFC 7208 section 12 grammar)"
        }
    }
}

/// Whether SPF lets the upstream send as `domain`: check_host from each egress address
/// (`spf_ips`, or addresses of the `spf_include` record) must be pass.
async fn authorizes(dns: &Dns, domain: &str, upstream: &UpstreamSpf, helo: &str) -> Check {
    let name = format!("spf {domain} authorizes {}", upstream.name);
    let egress = if upstream.ips.is_empty() {
        match &upstream.include {
            Some(include) => match egress_of(dns, include).await {
                Ok(addresses) => addresses,
                Err(problem) => {
                    return Check::fail(
                        name,
                        problem,
                        format!("check spf_include = \"{include}\" on the [[upstream]]"),
                    );
                }
            },
            None => {
                return Check::warn(
                    name,
                    "cannot tell: the upstream has neither spf_include nor spf_ips configured",
                    "set spf_include (e.g. \"amazonses.com\") or spf_ips on the [[upstream]]",
                );
            }
        }
    } else {
        upstream.ips.clone()
    };
    let mut evaluations = Vec::new();
    for ip in egress {
        evaluations.push(check_host(dns, ip, domain, helo).await);
    }
    let worst = evaluations
        .iter()
        .max_by_key(|e| verdict(e.result))
        .expect("at least one egress address");
    let ips = evaluations
        .iter()
        .map(|e| e.ip.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let include_missing = upstream
        .include
        .as_ref()
        .filter(|include| !worst.consulted.contains(&include.to_ascii_lowercase()));
    let found = match (worst.result, include_missing) {
        (SpfResult::Pass, _) => format!("check_host = pass for {ips}"),
        (SpfResult::PermError | SpfResult::TempError, _) => format!(
            "check_host({}) = {}: {}",
            worst.ip, worst.result, worst.reason
        ),
        (result, Some(include)) => format!(
            "include:{include} is missing: check_host({}) = {result}, so receivers will not accept mail relayed by {}",
            worst.ip, upstream.name
        ),
        (result, None) => format!(
            "check_host({}) = {result} ({}): the upstream's address is not authorized",
            worst.ip, worst.reason
        ),
    };
    let fix = match (&upstream.include, worst.result) {
        (_, SpfResult::PermError) => permerror_fix(worst.broken).to_string(),
        (Some(include), _) => format!("add include:{include} to the SPF record of {domain}"),
        (None, _) => format!(
            "add ip4:/ip6: terms for {ips} (or the upstream's include) to the record of {domain}"
        ),
    };
    let check = match verdict(worst.result) {
        Status::Pass => Check::pass(name, found),
        Status::Warn => Check::warn(name, found, fix),
        Status::Fail => Check::fail(name, found, fix),
    };
    check.with_evaluations(evaluations)
}

/// What a receiver's result means for our mail: pass is delivered as authenticated; fail,
/// permerror and none fail SPF (DMARC then rests on DKIM alone); softfail, neutral and
/// temperror are not a pass, and many receivers file such mail as spam.
fn verdict(result: SpfResult) -> Status {
    match result {
        SpfResult::Pass => Status::Pass,
        SpfResult::SoftFail | SpfResult::Neutral | SpfResult::TempError => Status::Warn,
        SpfResult::Fail | SpfResult::PermError | SpfResult::None => Status::Fail,
    }
}

/// Addresses the upstream sends from, read off its SPF include's own record: the first
/// address of each of its first ip4:/ip6: ranges (SES publishes its ranges that way).
async fn egress_of(dns: &Dns, include: &str) -> Result<Vec<IpAddr>, String> {
    let texts = match spf_records(dns, include).await {
        Ok(texts) => texts,
        Err(check) => return Err(format!("spf_include {include}: {}", check.found)),
    };
    let [text] = texts.as_slice() else {
        return Err(format!(
            "spf_include {include} has {} SPF records, not one",
            texts.len()
        ));
    };
    let record = Record::parse(text).map_err(|e| format!("spf_include {include}: {e}"))?;
    let addresses: Vec<IpAddr> = record
        .directives
        .iter()
        .filter(|d| d.qualifier == Qualifier::Pass)
        .filter_map(|d| match &d.mechanism {
            Mechanism::Ip4(net) => Some(IpAddr::V4(net.network())),
            Mechanism::Ip6(net) => Some(IpAddr::V6(net.network())),
            _ => None,
        })
        .take(EGRESS_SAMPLES)
        .collect();
    if addresses.is_empty() {
        return Err(format!(
            "spf_include {include} lists no ip4:/ip6: ranges to check from; set spf_ips"
        ));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(record: &str) -> Vec<(Status, String)> {
        let record = Record::parse(record).unwrap();
        policy_terms("spf t", &record)
            .into_iter()
            .map(|c| (c.status, c.found))
            .collect()
    }

    #[test]
    fn policy_terms_table() {
        use Status::*;
        assert!(terms("v=spf1 include:amazonses.com -all").is_empty());
        assert!(terms("v=spf1 ip4:203.0.113.5 ip4:198.51.100.0/24 ~all").is_empty());
        assert_eq!(terms("v=spf1 +all")[0].0, Fail);
        assert_eq!(terms("v=spf1 ?all")[0].0, Warn);
        assert_eq!(terms("v=spf1 ptr -all")[0].0, Warn);
        let wide = terms("v=spf1 ip4:10.0.0.0/8 -all");
        assert!(wide[0].1.contains("wider than /16"), "{wide:?}");
        let cloud = terms("v=spf1 ip4:52.0.0.0/10 -all");
        assert!(cloud[0].1.contains("Amazon EC2"), "{cloud:?}");
        assert!(
            terms("v=spf1 ip4:52.1.2.3/32 -all").is_empty(),
            "an elastic IP of your own is fine"
        );
        assert_eq!(terms("v=spf1 ip6:2001:db8::/16 -all")[0].0, Warn);
        assert!(terms("v=spf1 ip6:2001:db8::/48 -all").is_empty());
        assert_eq!(terms("v=spf1 ip4:0.0.0.0/0 -all")[0].0, Fail);
        assert_eq!(terms("v=spf1 ip6:::/0 -all")[0].0, Fail);
        assert_eq!(
            terms("v=spf1 -ip4:0.0.0.0/0")[0].0,
            Warn,
            "a range that refuses everyone opens nothing"
        );
    }

    #[test]
    fn receivers_results_map_to_verdicts() {
        assert_eq!(verdict(SpfResult::Pass), Status::Pass);
        assert_eq!(verdict(SpfResult::PermError), Status::Fail);
        assert_eq!(verdict(SpfResult::None), Status::Fail);
        assert_eq!(verdict(SpfResult::SoftFail), Status::Warn);
        assert_eq!(verdict(SpfResult::Neutral), Status::Warn);
    }
}
