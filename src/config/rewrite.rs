//! `[rewrite]`: the identities smarthost repairs on the way through — the HELO name it gives
//! the upstream, internal envelope and header senders, local recipients, and headers that
//! must not leave the VM.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::model::Address;
use crate::model::{DEFAULT_INTERNAL_SUFFIXES, InternalNames};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRewrite {
    helo_name: Option<String>,
    sender_domain: Option<String>,
    internal_sender: Option<String>,
    internal_suffixes: Vec<String>,
    admin_address: Option<String>,
    strip_headers: Vec<String>,
    hide_internal_received: bool,
    senders: BTreeMap<String, String>,
    aliases: BTreeMap<String, String>,
}

impl Default for RawRewrite {
    fn default() -> RawRewrite {
        RawRewrite {
            helo_name: None,
            sender_domain: None,
            internal_sender: None,
            internal_suffixes: DEFAULT_INTERNAL_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            admin_address: None,
            strip_headers: vec!["X-Cron-Env".into()],
            hide_internal_received: true,
            senders: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }
}

/// The validated `[rewrite]` section.
#[derive(Debug, Clone)]
pub struct RewriteConfig {
    pub helo_name: Option<String>,
    /// Domain for internal senders (`{local}@sender_domain`) and for Message-IDs we add.
    pub sender_domain: Option<String>,
    /// Template for internal senders, e.g. `cron+{local}@example.com`; wins over sender_domain.
    pub internal_sender: Option<String>,
    pub internal_names: InternalNames,
    /// Where local recipients without an alias go (nullmailer's adminaddr).
    pub admin_address: Option<String>,
    /// Headers removed from every message (cronie's X-Cron-Env carries job environments).
    pub strip_headers: Vec<String>,
    /// Leave a private client address out of the Received header we add.
    pub hide_internal_received: bool,
    /// `address -> address` and `@domain -> @domain` for senders (Postfix's smtp_generic_maps).
    pub senders: BTreeMap<String, String>,
    /// `local -> address` (or `address -> address`) for local recipients.
    pub aliases: BTreeMap<String, String>,
}

pub(super) fn validate(raw: RawRewrite) -> Result<RewriteConfig, ConfigError> {
    let internal_names = InternalNames::new(&raw.internal_suffixes);
    if let Some(name) = &raw.helo_name
        && (internal_names.is_internal(name) || !is_domain(name))
    {
        return Err(invalid(
            "rewrite.helo_name",
            format!("'{name}' is not a public host name (receivers reject internal HELO names)"),
        ));
    }
    if let Some(domain) = &raw.sender_domain
        && (internal_names.is_internal(domain) || !is_domain(domain))
    {
        return Err(invalid(
            "rewrite.sender_domain",
            format!("'{domain}' is not a public domain such as example.com"),
        ));
    }
    if let Some(template) = &raw.internal_sender {
        let sample = template.replace("{local}", "root");
        if !is_public_address(&sample, &internal_names) {
            return Err(invalid(
                "rewrite.internal_sender",
                format!(
                    "'{template}' does not make a public address such as cron+{{local}}@example.com"
                ),
            ));
        }
    }
    if let Some(admin) = &raw.admin_address
        && !is_public_address(admin, &internal_names)
    {
        return Err(invalid(
            "rewrite.admin_address",
            format!("'{admin}' is not a public address"),
        ));
    }
    for (from, to) in &raw.senders {
        let valid = match (from.strip_prefix('@'), to.strip_prefix('@')) {
            (Some(from_domain), Some(to_domain)) => {
                Address::parse(&format!("x@{from_domain}"), true).is_ok()
                    && is_domain(to_domain)
                    && !internal_names.is_internal(to_domain)
            }
            (None, None) => {
                Address::parse(from, true).is_ok() && is_public_address(to, &internal_names)
            }
            _ => false,
        };
        if !valid {
            return Err(invalid(
                format!("rewrite.senders.\"{from}\""),
                "use \"user@host\" = \"user@example.com\" or \"@host\" = \"@example.com\"",
            ));
        }
    }
    for (local, target) in &raw.aliases {
        if local.is_empty() || !is_public_address(target, &internal_names) {
            return Err(invalid(
                format!("rewrite.aliases.{local}"),
                format!("'{target}' is not a public address such as ops@example.com"),
            ));
        }
    }
    Ok(RewriteConfig {
        helo_name: raw.helo_name,
        sender_domain: raw.sender_domain,
        internal_sender: raw.internal_sender,
        internal_names,
        admin_address: raw.admin_address,
        strip_headers: raw.strip_headers,
        hide_internal_received: raw.hide_internal_received,
        senders: raw.senders,
        aliases: raw.aliases,
    })
}

fn is_domain(name: &str) -> bool {
    Address::parse(&format!("x@{name}"), true).is_ok() && name.contains('.')
}

fn is_public_address(text: &str, internal: &InternalNames) -> bool {
    Address::parse(text, true)
        .ok()
        .and_then(|a| a.domain().map(|d| !internal.is_internal(d)))
        .unwrap_or(false)
}

/// The name smarthost gives in EHLO to its upstreams: `helo_name`; else our host name when it
/// is public; else `sender_domain`, with a warning; else an error naming both keys.
pub(super) fn upstream_helo(
    rewrite: &RewriteConfig,
    hostname: &str,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    if let Some(name) = &rewrite.helo_name {
        return Ok(name.clone());
    }
    if !rewrite.internal_names.is_internal(hostname) {
        return Ok(hostname.to_string());
    }
    if let Some(domain) = &rewrite.sender_domain {
        warnings.push(format!(
            "host name '{hostname}' is internal; saying EHLO {domain} (rewrite.sender_domain) to upstreams. Set rewrite.helo_name to a public name of this relay"
        ));
        return Ok(domain.clone());
    }
    Err(invalid(
        "rewrite.helo_name",
        format!(
            "host name '{hostname}' is internal and receivers reject it in EHLO; set rewrite.helo_name (a public name such as relay.example.com) or rewrite.sender_domain"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(&format!(
            "hostname = \"web-1.example.com\"\n[rewrite]\n{text}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_strip_cron_env_and_hide_private_clients() {
        let config = load("").unwrap();
        assert_eq!(config.rewrite.strip_headers, ["X-Cron-Env"]);
        assert!(config.rewrite.hide_internal_received);
    }

    #[test]
    fn internal_or_malformed_identities_are_refused_with_the_key() {
        for (text, key) in [
            (
                "helo_name = \"ip-10-0-0-12.ec2.internal\"",
                "rewrite.helo_name",
            ),
            ("sender_domain = \"corp.local\"", "rewrite.sender_domain"),
            (
                "internal_sender = \"cron+{local}@web-1\"",
                "rewrite.internal_sender",
            ),
            ("admin_address = \"root\"", "rewrite.admin_address"),
            (
                "[rewrite.aliases]\nroot = \"root@localhost\"",
                "rewrite.aliases.root",
            ),
            (
                "[rewrite.senders]\n\"@a\" = \"b@example.com\"",
                "rewrite.senders",
            ),
        ] {
            let error = load(text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
