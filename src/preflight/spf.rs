//! SPF for a sender domain (the seed's point e): exactly one record, that parses (mail-auth's
//! RFC 7208 parser), within the 10-lookup and 2-void-lookup limits (RFC 7208 4.6.4), that does
//! not authorize the whole internet or a whole cloud, and that authorizes our upstream — by
//! its `include:` or by evaluating `check_host` (mail-auth) for its egress addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf, verify::SpfParameters};

use super::dns::{Answer, Dns};
use super::report::Check;

/// RFC 7208 4.6.4.
const MAX_LOOKUPS: usize = 10;
const MAX_VOID_LOOKUPS: usize = 2;
/// Include chains deeper than this are not followed (and count as over the limit anyway).
const MAX_DEPTH: usize = 12;

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

/// The SPF record of `domain`, and the lookups it costs.
struct Walk {
    lookups: usize,
    voids: usize,
    includes: BTreeSet<String>,
    /// Problems while following includes (unparseable or missing included records).
    problems: Vec<String>,
}

pub async fn audit(dns: &Dns, domain: &str, upstreams: &[UpstreamSpf], helo: &str) -> Vec<Check> {
    let name = format!("spf {domain}");
    let record = match spf_records(dns, domain).await {
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
        Ok(records) if records.len() > 1 => {
            return vec![Check::fail(
                &name,
                format!(
                    "{} SPF records (RFC 7208 4.5: that is a permanent error): {}",
                    records.len(),
                    records.join(" | ")
                ),
                "merge them into one v=spf1 TXT record",
            )];
        }
        Ok(mut records) => records.remove(0),
    };
    let spf = match Spf::parse(record.as_bytes()) {
        Ok(spf) => spf,
        Err(error) => {
            return vec![Check::fail(
                &name,
                format!("\"{record}\" does not parse: {error}"),
                "fix the record's syntax (RFC 7208 section 12)",
            )];
        }
    };
    let mut checks = vec![Check::pass(&name, format!("\"{record}\""))];
    let policy_name = format!("{name} policy");
    let policy = policy_terms(&policy_name, &spf);
    if policy.is_empty() {
        checks.push(Check::pass(
            policy_name,
            "no +all, ?all, ptr or over-wide ranges",
        ));
    }
    checks.extend(policy);
    let mut walk = Walk {
        lookups: 0,
        voids: 0,
        includes: BTreeSet::new(),
        problems: Vec::new(),
    };
    follow(dns, &spf, &mut walk, 0).await;
    checks.push(limits(domain, &walk));
    for upstream in upstreams {
        checks.push(authorizes(dns, domain, upstream, &walk, helo).await);
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

/// `v=spf1` followed by a space or nothing (RFC 7208 4.5), in any case.
fn is_spf(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

/// The domain's own terms: `+all`, `?all`, `ptr`, and address ranges too wide to be ours.
fn policy_terms(name: &str, spf: &Spf) -> Vec<Check> {
    let mut checks = Vec::new();
    for directive in spf.directives.iter() {
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
            (_, Mechanism::Ptr { .. }) => checks.push(Check::warn(
                name,
                "the ptr mechanism is deprecated (RFC 7208 5.5) and many receivers ignore it",
                "replace ptr with ip4:/ip6: terms or an include:",
            )),
            (_, Mechanism::Ip4 { addr, mask }) => {
                let prefix = mask.count_ones() as u8;
                let net = IpNet::new(IpAddr::V4(*addr), prefix).ok();
                checks.extend(wide_range(name, net, 16, "ip4"));
            }
            (_, Mechanism::Ip6 { addr, mask }) => {
                let prefix = mask.count_ones() as u8;
                let net = IpNet::new(IpAddr::V6(*addr), prefix).ok();
                checks.extend(wide_range(name, net, 32, "ip6"));
            }
            _ => {}
        }
    }
    checks
}

/// A range that covers a shared cloud range (the more telling finding), or is wider than
/// `narrowest` bits.
fn wide_range(name: &str, net: Option<IpNet>, narrowest: u8, kind: &str) -> Option<Check> {
    let net = net?.trunc();
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

/// Follows includes and redirects, counting the terms that cost a DNS lookup.
fn follow<'a>(
    dns: &'a Dns,
    spf: &'a Spf,
    walk: &'a mut Walk,
    depth: usize,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let mut targets = Vec::new();
        for directive in spf.directives.iter() {
            match &directive.mechanism {
                Mechanism::Include { macro_string } => {
                    walk.lookups += 1;
                    targets.push(literal(macro_string));
                }
                Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr { .. }
                | Mechanism::Exists { .. } => {
                    walk.lookups += 1;
                }
                _ => {}
            }
        }
        if let Some(redirect) = &spf.redirect {
            walk.lookups += 1;
            targets.push(literal(redirect));
        }
        if depth >= MAX_DEPTH {
            return;
        }
        for target in targets.into_iter().flatten() {
            walk.includes.insert(target.to_ascii_lowercase());
            match spf_records(dns, &target).await {
                Ok(records) if records.is_empty() => {
                    walk.voids += 1;
                    walk.problems.push(format!("{target} has no SPF record"));
                }
                Ok(records) => match Spf::parse(records[0].as_bytes()) {
                    Ok(included) => follow(dns, &included, walk, depth + 1).await,
                    Err(error) => walk
                        .problems
                        .push(format!("{target}'s record does not parse: {error}")),
                },
                Err(check) => {
                    if check.found.contains("NXDOMAIN") {
                        walk.voids += 1;
                    }
                    walk.problems.push(check.found);
                }
            }
        }
    })
}

/// The domain an include or redirect names, when it is literal (no macros).
fn literal(macro_string: &Macro) -> Option<String> {
    match macro_string {
        Macro::Literal(bytes) => Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('.')
                .to_string(),
        ),
        _ => None,
    }
}

fn limits(domain: &str, walk: &Walk) -> Check {
    let name = format!("spf {domain} lookups");
    if walk.lookups > MAX_LOOKUPS {
        return Check::fail(
            name,
            format!(
                "needs {} DNS lookups, more than the {MAX_LOOKUPS} RFC 7208 4.6.4 allows: receivers answer PermError",
                walk.lookups
            ),
            "flatten includes into ip4:/ip6: terms or drop unused ones",
        );
    }
    if walk.voids > MAX_VOID_LOOKUPS {
        return Check::fail(
            name,
            format!(
                "{} void lookups (more than {MAX_VOID_LOOKUPS}): {}",
                walk.voids,
                walk.problems.join("; ")
            ),
            "remove includes of domains without SPF records",
        );
    }
    if !walk.problems.is_empty() {
        return Check::warn(
            name,
            walk.problems.join("; "),
            "fix or remove the broken include",
        );
    }
    Check::pass(
        name,
        format!(
            "{} DNS lookups, {} void (limits {MAX_LOOKUPS} and {MAX_VOID_LOOKUPS})",
            walk.lookups, walk.voids
        ),
    )
}

/// Whether SPF lets the upstream send as `domain`.
async fn authorizes(
    dns: &Dns,
    domain: &str,
    upstream: &UpstreamSpf,
    walk: &Walk,
    helo: &str,
) -> Check {
    let name = format!("spf {domain} authorizes {}", upstream.name);
    if let Some(include) = &upstream.include {
        return if walk.includes.contains(&include.to_ascii_lowercase()) {
            Check::pass(name, format!("include:{include} is in the record"))
        } else {
            Check::fail(
                name,
                format!(
                    "include:{include} is missing: receivers will not accept mail relayed by {}",
                    upstream.name
                ),
                format!("add include:{include} to the SPF record of {domain}"),
            )
        };
    }
    if upstream.ips.is_empty() {
        return Check::warn(
            name,
            "cannot tell: the upstream has neither spf_include nor spf_ips configured",
            "set spf_include (e.g. \"amazonses.com\") or spf_ips on the [[upstream]]",
        );
    }
    let sender = format!("postmaster@{domain}");
    for ip in &upstream.ips {
        let output = dns
            .authenticator
            .check_host(SpfParameters::verify_mail_from(*ip, helo, helo, &sender).into())
            .await;
        if output.result() != SpfResult::Pass {
            return Check::fail(
                name,
                format!(
                    "check_host({ip}, {domain}) = {:?}: the upstream's address is not authorized",
                    output.result()
                ),
                format!("add the upstream's SPF include or ip4:{ip} to the record of {domain}"),
            );
        }
    }
    Check::pass(
        name,
        format!(
            "check_host passes for {}",
            upstream
                .ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(record: &str) -> Vec<(super::super::report::Status, String)> {
        let spf = Spf::parse(record.as_bytes()).unwrap();
        policy_terms("spf t", &spf)
            .into_iter()
            .map(|c| (c.status, c.found))
            .collect()
    }

    #[test]
    fn policy_terms_table() {
        use super::super::report::Status::*;
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
    }

    #[test]
    fn spf_records_are_recognised_exactly() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=abc"));
    }
}
