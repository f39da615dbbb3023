//! Which envelope and header senders an authenticated user may use (its `--allow-sender`
//! entries): Postfix's `smtpd_sender_login_maps` with `reject_sender_login_mismatch`, so that
//! one tenant of a shared relay cannot send as another tenant's verified identity.

use serde::{Deserialize, Serialize};

/// One entry: an address, or `@domain` for every address at that domain (not subdomains).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SenderPattern {
    Address(String),
    Domain(String),
}

impl TryFrom<String> for SenderPattern {
    type Error = String;

    fn try_from(text: String) -> Result<SenderPattern, String> {
        let text = text.trim();
        if let Some(domain) = text.strip_prefix('@') {
            if domain.is_empty() || domain.contains(['@', ' ']) || !domain.contains('.') {
                return Err(format!("'{text}' is not @DOMAIN such as @example.com"));
            }
            return Ok(SenderPattern::Domain(domain.to_ascii_lowercase()));
        }
        match text.rsplit_once('@') {
            Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !text.contains(' ') =>
            {
                Ok(SenderPattern::Address(text.to_string()))
            }
            _ => Err(format!(
                "'{text}' is neither an address (app@example.com) nor @DOMAIN (@example.com)"
            )),
        }
    }
}

impl From<SenderPattern> for String {
    fn from(pattern: SenderPattern) -> String {
        match pattern {
            SenderPattern::Address(address) => address,
            SenderPattern::Domain(domain) => format!("@{domain}"),
        }
    }
}

impl SenderPattern {
    /// Domains compare without case (RFC 5321 2.4); so do local parts here, as every
    /// provider treats them and as Postfix's table lookups do.
    pub fn allows(&self, address: &str) -> bool {
        match self {
            SenderPattern::Address(allowed) => allowed.eq_ignore_ascii_case(address),
            SenderPattern::Domain(domain) => address
                .rsplit_once('@')
                .is_some_and(|(_, at)| at.eq_ignore_ascii_case(domain)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> SenderPattern {
        SenderPattern::try_from(text.to_string()).unwrap()
    }

    #[test]
    fn addresses_and_domains_match_without_case_and_nothing_more() {
        assert!(pattern("app@example.com").allows("App@Example.COM"));
        assert!(!pattern("app@example.com").allows("app2@example.com"));
        assert!(pattern("@example.org").allows("anyone@EXAMPLE.org"));
        assert!(!pattern("@example.org").allows("a@sub.example.org"));
        assert!(!pattern("@example.org").allows("a@example.org.evil.test"));
        assert!(!pattern("@example.org").allows("example.org"));
    }

    #[test]
    fn malformed_entries_say_what_is_expected() {
        for bad in [
            "app",
            "@",
            "@localhost",
            "a b@example.com",
            "@a@b.com",
            "@x y.com",
        ] {
            let error = SenderPattern::try_from(bad.to_string()).unwrap_err();
            assert!(error.contains("example.com"), "{bad}: {error}");
        }
    }
}
