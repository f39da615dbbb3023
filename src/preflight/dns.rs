//! DNS for the audit, through hickory-resolver: the system's resolver, or the nameservers in
//! `[dns] nameservers` (tests point them at a DNS server on loopback). Every lookup has a
//! deadline; an answer is records, "no records", NXDOMAIN, or the reason it failed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Records(Vec<T>),
    /// The name exists but has no records of this type.
    NoRecords,
    /// The name does not exist.
    NxDomain,
    /// Timeout, SERVFAIL, refused: the reason.
    Failed(String),
}

/// The resolver every check asks.
pub struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
}

impl Dns {
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Dns, String> {
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 1;
        options.cache_size = 256;
        let config = if nameservers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?;
            config
        } else {
            let servers = nameservers
                .iter()
                .map(|address| {
                    let mut server = NameServerConfig::udp_and_tcp(address.ip());
                    for connection in &mut server.connections {
                        connection.port = address.port();
                    }
                    server
                })
                .collect();
            ResolverConfig::from_parts(None, vec![], servers)
        };
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| format!("cannot set up DNS: {e}"))?;
        Ok(Dns { resolver, timeout })
    }

    async fn lookup<T>(
        &self,
        name: &str,
        kind: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        // Absolute names: never let a search domain turn example.com into example.com.corp.
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let lookup =
            tokio::time::timeout(self.timeout * 2, self.resolver.lookup(fqdn.as_str(), kind)).await;
        match lookup {
            Err(_) => Answer::Failed(format!("no answer within {:?}", self.timeout * 2)),
            Ok(Err(error)) if error.is_nx_domain() => Answer::NxDomain,
            Ok(Err(error)) if error.is_no_records_found() => Answer::NoRecords,
            Ok(Err(error)) => Answer::Failed(error.to_string()),
            Ok(Ok(found)) => {
                let records: Vec<T> = found
                    .answers()
                    .iter()
                    .filter_map(|r| pick(&r.data))
                    .collect();
                if records.is_empty() {
                    Answer::NoRecords
                } else {
                    Answer::Records(records)
                }
            }
        }
    }

    /// How long the TXT records of `name` may be kept (their TTL, as the resolver counts it).
    pub async fn txt_lifetime(&self, name: &str) -> Option<Duration> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let lookup = tokio::time::timeout(
            self.timeout * 2,
            self.resolver.lookup(fqdn.as_str(), RecordType::TXT),
        )
        .await
        .ok()?
        .ok()?;
        lookup
            .valid_until()
            .checked_duration_since(std::time::Instant::now())
    }

    /// TXT records, each joined from its character-strings.
    pub async fn txt(&self, name: &str) -> Answer<String> {
        self.lookup(name, RecordType::TXT, |data| match data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).to_string())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .await
    }

    /// MX records as (preference, exchange without the final dot).
    pub async fn mx(&self, name: &str) -> Answer<(u16, String)> {
        self.lookup(name, RecordType::MX, |data| match data {
            RData::MX(mx) => Some((
                mx.preference,
                mx.exchange.to_string().trim_end_matches('.').to_string(),
            )),
            _ => None,
        })
        .await
    }

    /// A records.
    pub async fn a(&self, name: &str) -> Answer<IpAddr> {
        self.lookup(name, RecordType::A, |data| match data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .await
    }

    /// AAAA records.
    pub async fn aaaa(&self, name: &str) -> Answer<IpAddr> {
        self.lookup(name, RecordType::AAAA, |data| match data {
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .await
    }

    /// A and AAAA addresses together.
    pub async fn addresses(&self, name: &str) -> Answer<IpAddr> {
        match (self.a(name).await, self.aaaa(name).await) {
            (Answer::Records(mut a), Answer::Records(b)) => {
                a.extend(b);
                Answer::Records(a)
            }
            (Answer::Records(a), _) | (_, Answer::Records(a)) => Answer::Records(a),
            (Answer::NxDomain, _) | (_, Answer::NxDomain) => Answer::NxDomain,
            (Answer::Failed(reason), _) | (_, Answer::Failed(reason)) => Answer::Failed(reason),
            _ => Answer::NoRecords,
        }
    }

    /// PTR names of an address, without the final dot.
    pub async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        let name = reverse_name(ip);
        self.lookup(&name, RecordType::PTR, |data| match data {
            RData::PTR(ptr) => Some(ptr.0.to_string().trim_end_matches('.').to_string()),
            _ => None,
        })
        .await
    }
}

/// `5.0.113.203.in-addr.arpa` / nibble form under `ip6.arpa`.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name + "ip6.arpa"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("203.0.113.5".parse().unwrap()),
            "5.113.0.203.in-addr.arpa"
        );
        assert!(reverse_name("2001:db8::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0"));
        assert!(reverse_name("2001:db8::1".parse().unwrap()).ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}
