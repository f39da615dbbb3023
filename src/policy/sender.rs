//! `allowed_sender_domains`: envelope senders the upstream will accept (for SES, the verified
//! identities). Refusing others at MAIL FROM tells the client while it is still connected,
//! instead of bouncing later.

use crate::envelope::ReversePath;

#[derive(Debug, Clone, Default)]
pub struct SenderDomains {
    /// Lower-cased; empty means every sender domain is allowed.
    domains: Vec<String>,
}

impl SenderDomains {
    /// The configured domains, lower-case.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    pub fn new(domains: Vec<String>) -> SenderDomains {
        SenderDomains {
            domains: domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The null sender (bounces) is always allowed; an unqualified sender is allowed here
    /// because it will be qualified by the rewrite stage, not sent as it is.
    pub fn allows(&self, sender: &ReversePath) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        match sender {
            ReversePath::Null => true,
            ReversePath::Mailbox(address) => match address.domain() {
                None => true,
                Some(domain) => self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse_reverse_path;

    #[test]
    fn only_listed_domains_pass() {
        let policy = SenderDomains::new(vec!["Example.com".into()]);
        let allowed = |s: &str| policy.allows(&parse_reverse_path(s, false).unwrap());
        assert!(allowed("cron@example.com"));
        assert!(allowed("cron@EXAMPLE.COM"));
        assert!(allowed(""));
        assert!(!allowed("cron@other.example"));
        assert!(!allowed("cron@sub.example.com"));
    }

    #[test]
    fn empty_list_allows_everyone() {
        let policy = SenderDomains::default();
        assert!(policy.allows(&parse_reverse_path("a@b.example", false).unwrap()));
    }
}
