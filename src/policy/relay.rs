//! Relay access: the one decision that keeps smarthost from being an open relay.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks whose clients may relay (`smtp.trusted_networks`).
#[derive(Debug, Clone)]
pub struct TrustedNetworks {
    networks: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDecision {
    Allow,
    /// The client is neither in a trusted network nor a local submitter: `554 5.7.1`.
    Deny,
}

impl TrustedNetworks {
    pub fn new(networks: Vec<IpNet>) -> TrustedNetworks {
        TrustedNetworks { networks }
    }

    /// The networks in CIDR notation, as an operator reads them.
    pub fn to_strings(&self) -> Vec<String> {
        self.networks.iter().map(|n| n.to_string()).collect()
    }

    /// Relay is allowed for clients in a trusted network, and for local submitters (the
    /// `sendmail` command), whose client address is `None`. An IPv4-mapped IPv6 client
    /// (`::ffff:10.0.0.1`, seen on dual-stack sockets) is judged by its IPv4 address.
    pub fn decide(&self, client: Option<IpAddr>) -> RelayDecision {
        let Some(ip) = client else {
            return RelayDecision::Allow;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        if self.networks.iter().any(|net| net.contains(&ip)) {
            RelayDecision::Allow
        } else {
            RelayDecision::Deny
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> TrustedNetworks {
        TrustedNetworks::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn loopback_default_allows_only_loopback() {
        let trusted = nets(&["127.0.0.0/8", "::1/128"]);
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                trusted.decide(Some(ip.parse().unwrap())),
                RelayDecision::Allow,
                "{ip}"
            );
        }
        for ip in ["10.0.0.1", "192.0.2.7", "::2", "fe80::1", "::ffff:10.0.0.1"] {
            assert_eq!(
                trusted.decide(Some(ip.parse().unwrap())),
                RelayDecision::Deny,
                "{ip}"
            );
        }
    }

    #[test]
    fn narrow_network_refuses_neighbours() {
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(
            trusted.decide(Some("127.0.0.2".parse().unwrap())),
            RelayDecision::Deny
        );
        assert_eq!(trusted.decide(None), RelayDecision::Allow);
    }

    #[test]
    fn empty_list_trusts_only_local_submitters() {
        let trusted = nets(&[]);
        assert_eq!(
            trusted.decide(Some("127.0.0.1".parse().unwrap())),
            RelayDecision::Deny
        );
        assert_eq!(trusted.decide(None), RelayDecision::Allow);
    }
}
