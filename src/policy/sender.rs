//! `allowed_sender_domains`: envelope senders the upstream will accept (for SES, the verified
//! identities). Refusing others at MAIL FROM tells the client while it is still connected,
//! instead of bouncing later.

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

    /// Judges a sender *as it will be sent* (after identity repair; '' is the null sender,
    /// which bounces use and which is always allowed). An address without a domain is not in
    /// any allowed domain.
    pub fn allows(&self, sender: &str) -> bool {
        if self.domains.is_empty() || sender.is_empty() {
            return true;
        }
        match sender.rsplit_once('@') {
            None => false,
            Some((_, domain)) => self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_domains_pass() {
        let policy = SenderDomains::new(vec!["Example.com".into()]);
        let allowed = |s: &str| policy.allows(s);
        assert!(allowed("cron@example.com"));
        assert!(allowed("cron@EXAMPLE.COM"));
        assert!(allowed(""));
        assert!(!allowed("cron@other.example"));
        assert!(!allowed("cron@sub.example.com"));
        assert!(
            !allowed("root"),
            "unqualified after repair: sent as it is, refused upstream"
        );
    }

    #[test]
    fn empty_list_allows_everyone() {
        let policy = SenderDomains::default();
        assert!(policy.allows("a@b.example"));
    }
}
