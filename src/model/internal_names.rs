//! Which names are internal: names that only mean something inside the VPC or the VM, which
//! receivers reject or distrust (the seed's points b and d). `ip-10-0-0-12.ec2.internal`,
//! `web-1`, `localhost`, `host.local`, `[10.0.0.5]` are; `mail.example.com` is not.

use std::net::IpAddr;

/// Suffixes that never resolve on the public internet (configurable as
/// `rewrite.internal_suffixes`).
pub const DEFAULT_INTERNAL_SUFFIXES: &[&str] = &[
    ".internal",
    ".local",
    ".localdomain",
    ".lan",
    ".home.arpa",
    ".corp",
];

#[derive(Debug, Clone)]
pub struct InternalNames {
    /// Lower-case, each starting with a dot.
    suffixes: Vec<String>,
}

impl InternalNames {
    pub fn new(suffixes: &[String]) -> InternalNames {
        InternalNames {
            suffixes: suffixes
                .iter()
                .map(|s| {
                    let s = s.to_ascii_lowercase();
                    if s.starts_with('.') {
                        s
                    } else {
                        format!(".{s}")
                    }
                })
                .collect(),
        }
    }

    /// True for a name with no dot, an internal suffix, or a private, loopback or link-local
    /// address literal (bracketed or bare).
    pub fn is_internal(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ip) = ip_literal(&name) {
            return is_private(ip);
        }
        !name.contains('.')
            || self
                .suffixes
                .iter()
                .any(|suffix| name.ends_with(suffix.as_str()) || name == suffix[1..])
    }
}

fn ip_literal(name: &str) -> Option<IpAddr> {
    let inner = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let inner = inner.strip_prefix("ipv6:").unwrap_or(inner);
    inner.parse().ok()
}

/// Addresses that identify nothing outside this network: RFC 1918, shared (100.64/10),
/// loopback, link-local, unique-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_table() {
        let names = InternalNames::new(
            &DEFAULT_INTERNAL_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
        let internal = [
            "ip-10-0-0-12.eu-central-1.compute.internal",
            "ip-10-0-0-12.ec2.internal",
            "IP-10-0-0-12.EC2.INTERNAL.",
            "web-1",
            "localhost",
            "printer.local",
            "nas.localdomain",
            "box.lan",
            "router.home.arpa",
            "dc1.corp",
            "[10.0.0.5]",
            "[192.168.1.1]",
            "[172.16.0.1]",
            "[100.64.0.1]",
            "[127.0.0.1]",
            "[IPv6:fd00::1]",
            "[IPv6:fe80::1]",
            "10.1.2.3",
        ];
        let public = [
            "mail.example.com",
            "example.com",
            "relay.example.co.uk",
            "internal.example.com",
            "corporate.example",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "bücher.example",
        ];
        for name in internal {
            assert!(names.is_internal(name), "{name} should be internal");
        }
        for name in public {
            assert!(!names.is_internal(name), "{name} should be public");
        }
    }

    #[test]
    fn suffixes_are_configurable() {
        let names = InternalNames::new(&["vpc".to_string()]);
        assert!(names.is_internal("db.vpc"));
        assert!(!names.is_internal("db.internal.example"));
        assert!(!names.is_internal("host.local.example"));
    }
}
