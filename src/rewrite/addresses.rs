//! Address rules: which sender becomes which (explicit maps first, then the catch-all for
//! internal senders), and where local recipients go (aliases, then the admin address).

use std::collections::HashMap;

use crate::config::RewriteConfig;
use crate::model::InternalNames;

#[derive(Debug, Clone)]
pub struct AddressRules {
    internal: InternalNames,
    /// Our own host name, lower-case: `root@<it>` is a local sender like `root@localhost`.
    own_hostname: String,
    sender_domain: Option<String>,
    internal_sender: Option<String>,
    /// Lower-case keys.
    exact_senders: HashMap<String, String>,
    domain_senders: HashMap<String, String>,
    aliases: HashMap<String, String>,
    admin_address: Option<String>,
}

/// A local recipient nobody can receive for: no alias matches and no admin address is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute;

impl AddressRules {
    pub fn new(config: &RewriteConfig, hostname: &str) -> AddressRules {
        let mut exact_senders = HashMap::new();
        let mut domain_senders = HashMap::new();
        for (from, to) in &config.senders {
            match (from.strip_prefix('@'), to.strip_prefix('@')) {
                (Some(from), Some(to)) => {
                    domain_senders.insert(from.to_lowercase(), to.to_string());
                }
                _ => {
                    exact_senders.insert(from.to_lowercase(), to.clone());
                }
            }
        }
        AddressRules {
            internal: config.internal_names.clone(),
            own_hostname: hostname.to_lowercase(),
            sender_domain: config.sender_domain.clone(),
            internal_sender: config.internal_sender.clone(),
            exact_senders,
            domain_senders,
            aliases: config
                .aliases
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            admin_address: config.admin_address.clone(),
        }
    }

    /// Unqualified (`root`), in an internal domain, or at our own host name.
    pub fn is_local(&self, address: &str) -> bool {
        match split(address) {
            (_, None) => true,
            (_, Some(domain)) => {
                let domain = domain.to_lowercase();
                domain == self.own_hostname || self.internal.is_internal(&domain)
            }
        }
    }

    /// The sender an address becomes, or None when it stays as it is. The null sender (empty)
    /// always stays.
    pub fn sender(&self, address: &str) -> Option<String> {
        if address.is_empty() {
            return None;
        }
        if let Some(target) = self.exact_senders.get(&address.to_lowercase()) {
            return Some(target.clone());
        }
        let (local, domain) = split(address);
        if let Some(target) = domain.and_then(|d| self.domain_senders.get(&d.to_lowercase())) {
            return Some(format!("{local}@{target}"));
        }
        if !self.is_local(address) {
            return None;
        }
        match (&self.internal_sender, &self.sender_domain) {
            (Some(template), _) => Some(template.replace("{local}", local)),
            (None, Some(domain)) => Some(format!("{local}@{domain}")),
            (None, None) => None,
        }
    }

    /// Where a recipient's mail goes: public addresses stay; local ones go to their alias, or
    /// to the admin address, or nowhere.
    pub fn recipient(&self, address: &str) -> Result<Option<String>, NoRoute> {
        if let Some(target) = self.aliases.get(&address.to_lowercase()) {
            return Ok(Some(target.clone()));
        }
        if !self.is_local(address) {
            return Ok(None);
        }
        let (local, _) = split(address);
        self.aliases
            .get(&local.to_lowercase())
            .or(self.admin_address.as_ref())
            .cloned()
            .map(Some)
            .ok_or(NoRoute)
    }

    /// A recipient in a To/Cc header: routed like an envelope recipient; one that has no route
    /// is at least qualified with the sender domain, so the header never shows a bare name.
    pub fn header_recipient(&self, address: &str) -> Option<String> {
        match self.recipient(address) {
            Ok(target) => target,
            Err(NoRoute) => {
                let (local, _) = split(address);
                self.sender_domain.as_ref().map(|d| format!("{local}@{d}"))
            }
        }
    }
}

/// Local part and domain; the domain is after the last `@` (a quoted local part may hold one).
fn split(address: &str) -> (&str, Option<&str>) {
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.contains('"') => {
            (local, Some(domain))
        }
        _ => (address, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(rewrite: &str) -> AddressRules {
        let config = Config::from_toml(&format!(
            "hostname = \"ip-10-0-0-12.eu-central-1.compute.internal\"\n[rewrite]\n{rewrite}"
        ))
        .unwrap();
        AddressRules::new(&config.rewrite, &config.hostname)
    }

    #[test]
    fn sender_forms() {
        let r = rules(
            "sender_domain = \"example.com\"\n[rewrite.senders]\n\"backup@db.example.net\" = \"backups@example.com\"\n\"@old.example.com\" = \"@example.com\"\n",
        );
        let cases = [
            (
                "root@ip-10-0-0-12.eu-central-1.compute.internal",
                Some("root@example.com"),
            ),
            ("root@ip-10-0-0-12.ec2.internal", Some("root@example.com")),
            ("www-data@localhost", Some("www-data@example.com")),
            ("root", Some("root@example.com")),
            ("app@web-1", Some("app@example.com")),
            ("jörg@box.local", Some("jörg@example.com")),
            ("backup@DB.example.net", Some("backups@example.com")),
            ("alice@old.example.com", Some("alice@example.com")),
            ("alice@example.org", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(r.sender(input).as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn internal_sender_template_wins_over_sender_domain() {
        let r = rules(
            "sender_domain = \"example.com\"\ninternal_sender = \"cron+{local}@example.com\"\n",
        );
        assert_eq!(
            r.sender("root@ip-10-0-0-12.ec2.internal").as_deref(),
            Some("cron+root@example.com")
        );
        assert_eq!(r.sender("root").as_deref(), Some("cron+root@example.com"));
    }

    #[test]
    fn without_a_target_internal_senders_stay() {
        let r = rules("");
        assert_eq!(r.sender("root@web-1"), None);
    }

    #[test]
    fn local_recipients_go_to_aliases_then_admin() {
        let r = rules(
            "admin_address = \"admin@example.com\"\n[rewrite.aliases]\nroot = \"ops@example.com\"\n\"backup@example.org\" = \"dba@example.com\"\n",
        );
        assert_eq!(r.recipient("root"), Ok(Some("ops@example.com".into())));
        assert_eq!(
            r.recipient("ROOT@localhost"),
            Ok(Some("ops@example.com".into()))
        );
        assert_eq!(
            r.recipient("root@ip-10-0-0-12.eu-central-1.compute.internal"),
            Ok(Some("ops@example.com".into()))
        );
        assert_eq!(
            r.recipient("www-data@web-1"),
            Ok(Some("admin@example.com".into()))
        );
        assert_eq!(r.recipient("user@example.org"), Ok(None));
        assert_eq!(
            r.recipient("backup@example.org"),
            Ok(Some("dba@example.com".into()))
        );
        let strict = rules("");
        assert_eq!(strict.recipient("root"), Err(NoRoute));
        assert_eq!(strict.recipient("user@example.org"), Ok(None));
    }

    #[test]
    fn header_recipients_without_route_are_qualified() {
        let r = rules("sender_domain = \"example.com\"\n");
        assert_eq!(
            r.header_recipient("root").as_deref(),
            Some("root@example.com")
        );
        assert_eq!(r.header_recipient("a@example.org"), None);
    }
}
