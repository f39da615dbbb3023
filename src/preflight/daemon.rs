//! Preflight inside `serve`: the DNS checks run before sending, not only when an operator
//! remembers to type `smarthost preflight` — at start, on SIGHUP and every
//! `preflight.interval`; each WARN and FAIL is logged with its fix, every check is a metric,
//! and the last run is kept beside the spool for `queue check`. A sender domain nobody has
//! audited yet (a new rewrite target, or any domain when senders are open) is audited before
//! its first delivery and the verdict kept for its SPF record's TTL. Under
//! `preflight.enforce = "hold"` mail from a domain whose SPF does not authorize the upstream
//! is held as a configuration error, never bounced, and released when a check passes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell, watch};
use tokio::time::Instant;

use super::dns::Dns;
use super::report::{Check, Status};
use super::spf::{self, UpstreamSpf};
use super::{Options, checks, run_with};
use crate::config::{Config, Enforce};
use crate::telemetry::Metrics;

/// A sender domain's audit is kept at least this long, whatever its record's TTL says.
const MIN_VERDICT_LIFE: Duration = Duration::from_secs(1);

/// The last run as `queue check` reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LastRun {
    pub ran_at_unix: i64,
    /// `preflight.interval` then, so that a reader can tell a run that stopped happening.
    pub interval_secs: u64,
    pub checks: Vec<Check>,
}

impl LastRun {
    /// `preflight.json` beside the spool file.
    pub fn path(config: &Config) -> PathBuf {
        config.spool.path.with_file_name("preflight.json")
    }

    pub fn read(path: &Path) -> Result<LastRun, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What one audit of a sender domain decided for its mail.
#[derive(Debug, Clone)]
struct Verdict {
    /// The preflight line, when its SPF does not authorize the upstream.
    failing: Option<String>,
    until: Instant,
}

/// The configuration an audit runs with; replaced whole on SIGHUP.
struct Setup {
    config: Config,
    dns: Dns,
    upstreams: Vec<UpstreamSpf>,
    helo: String,
    interval: Duration,
}

/// The daemon's preflight: shared by the scheduler loop, the delivery workers and SIGHUP.
pub struct Audit {
    setup: RwLock<Arc<Setup>>,
    /// Per sender domain: the verdict, computed once by whichever worker asks first.
    verdicts: Mutex<HashMap<String, Arc<OnceCell<Verdict>>>>,
    /// Domains whose last verdict held their mail.
    failing: Mutex<HashSet<String>>,
    /// A domain that failed no longer does: mail held for it may go.
    cleared: Notify,
    /// SIGHUP: run again now.
    rerun: Notify,
    metrics: Arc<Metrics>,
}

impl Audit {
    /// `None` when `preflight.interval` is 0: the daemon never runs the checks.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Arc<Audit>>, String> {
        let Some(setup) = Setup::new(config)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Audit {
            setup: RwLock::new(Arc::new(setup)),
            verdicts: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashSet::new()),
            cleared: Notify::new(),
            rerun: Notify::new(),
            metrics,
        })))
    }

    fn setup(&self) -> Arc<Setup> {
        self.setup.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGHUP: the new configuration's checks, run at once. Verdicts made under the old one
    /// (other upstreams, other includes) are forgotten.
    pub fn reconfigure(&self, config: &Config) {
        match Setup::new(config) {
            Ok(Some(setup)) => {
                *self.setup.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(setup);
                self.verdicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.rerun.notify_one();
            }
            Ok(None) => tracing::warn!(
                "preflight.interval is now 0, which takes a restart; the checks keep running"
            ),
            Err(error) => tracing::error!(%error, "preflight keeps its old DNS settings"),
        }
    }

    /// Resolves when a sender domain that failed passes again.
    pub async fn cleared(&self) {
        self.cleared.notified().await
    }

    /// Runs the checks now, then every interval and on each SIGHUP, until `stop`.
    pub async fn run_forever(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.run_all().await;
            let interval = self.setup().interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.rerun.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One full run: every check but the upstream probe (unless `probe_upstreams`).
    async fn run_all(&self) {
        let setup = self.setup();
        // Domains that hold mail are audited again with the configured ones, whether or not
        // the configuration names them (senders may be open), so that a fix releases it.
        let failing: Vec<String> = self
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let options = Options {
            sender_domains: failing,
            probe_upstreams: setup.config.preflight.probe_upstreams,
        };
        let report = run_with(&setup.config, Some(&setup.dns), &options).await;
        let until = Instant::now() + setup.interval;
        let mut by_domain: HashMap<String, Vec<Check>> = HashMap::new();
        for check in &report.checks {
            self.publish(check);
            if let Some(domain) = &check.domain {
                by_domain
                    .entry(domain.clone())
                    .or_default()
                    .push(check.clone());
            }
        }
        for (domain, checks) in by_domain {
            self.remember(&domain, verdict(&domain, &checks, until));
        }
        let ran_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.metrics.set_preflight_run(ran_at_unix);
        tracing::info!(
            passed = report.passed,
            warnings = report.warnings,
            failures = report.failures,
            "preflight checks run"
        );
        let last = LastRun {
            ran_at_unix,
            interval_secs: setup.interval.as_secs(),
            checks: report.checks,
        };
        let path = LastRun::path(&setup.config);
        let written = crate::atomic_file::write(&path, |file| {
            serde_json::to_writer(file, &last).map_err(std::io::Error::other)
        });
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot keep the preflight result for queue check");
        }
    }

    /// Whether mail from `sender` must wait (the preflight line saying why). Under `warn`
    /// never, but an unaudited domain is audited in the background, for logs and metrics.
    pub async fn hold_reason(self: &Arc<Self>, sender: &str) -> Option<String> {
        let domain = sender.rsplit_once('@')?.1.to_ascii_lowercase();
        let (cell, new) = self.cell(&domain)?;
        if self.setup().config.preflight.enforce == Enforce::Warn {
            // Once per verdict: every message until the audit ends would otherwise spawn a
            // task that only waits for it.
            if new {
                let audit = self.clone();
                tokio::spawn(async move {
                    cell.get_or_init(|| audit.audit_domain(domain)).await;
                });
            }
            return None;
        }
        cell.get_or_init(|| self.audit_domain(domain))
            .await
            .failing
            .clone()
    }

    /// The domain's verdict cell, and whether it was just made (in place of none or of an
    /// expired one). `None` for a verdict that is fresh and passing (the common case).
    fn cell(&self, domain: &str) -> Option<(Arc<OnceCell<Verdict>>, bool)> {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = verdicts.get(domain) {
            match cell.get() {
                Some(v) if v.until > Instant::now() && v.failing.is_none() => return None,
                Some(v) if v.until > Instant::now() => return Some((cell.clone(), false)),
                Some(_) => {}
                None => return Some((cell.clone(), false)),
            }
        }
        let cell = Arc::new(OnceCell::new());
        verdicts.insert(domain.to_string(), cell.clone());
        Some((cell, true))
    }

    /// SPF and DMARC of one sender domain, kept for its SPF record's TTL.
    async fn audit_domain(&self, domain: String) -> Verdict {
        let setup = self.setup();
        let mut found = spf::audit(&setup.dns, &domain, &setup.upstreams, &setup.helo).await;
        found.push(checks::dmarc(&setup.dns, &domain).await);
        for check in &found {
            self.publish(check);
        }
        let life = setup
            .dns
            .txt_lifetime(&domain)
            .await
            .unwrap_or(setup.interval)
            .clamp(MIN_VERDICT_LIFE, setup.interval);
        let verdict = verdict(&domain, &found, Instant::now() + life);
        tracing::info!(%domain, failing = verdict.failing.is_some(), "sender domain audited");
        self.settle(&domain, &verdict);
        verdict
    }

    /// Stores a full run's verdict for `domain`.
    fn remember(&self, domain: &str, verdict: Verdict) {
        self.settle(domain, &verdict);
        self.verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                domain.to_string(),
                Arc::new(OnceCell::new_with(Some(verdict))),
            );
    }

    /// Keeps track of failing domains; one that failed and passes now releases held mail.
    fn settle(&self, domain: &str, verdict: &Verdict) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let was_failing = if verdict.failing.is_some() {
            !failing.insert(domain.to_string())
        } else {
            failing.remove(domain)
        };
        if was_failing && verdict.failing.is_none() {
            tracing::info!(%domain, "sender domain passes preflight again; releasing its held mail");
            self.cleared.notify_one();
        }
    }

    /// Logs a WARN or FAIL with its fix, and sets the check's metric.
    fn publish(&self, check: &Check) {
        let domain = check.domain.as_deref().unwrap_or("");
        let kind = if domain.is_empty() {
            check.check.clone()
        } else {
            check.check.replacen(&format!(" {domain}"), "", 1)
        };
        let level = match check.status {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        };
        self.metrics.set_preflight(&kind, domain, level);
        let fix = check.fix.as_deref().unwrap_or("");
        match check.status {
            Status::Pass => {}
            Status::Warn => {
                tracing::warn!(check = %check.check, found = %check.found, %fix, "preflight WARN")
            }
            Status::Fail => {
                tracing::error!(check = %check.check, found = %check.found, %fix, "preflight FAIL")
            }
        }
    }
}

/// A domain's mail must wait when its SPF does not let it out: no usable record (`spf D`
/// FAIL), or no upstream it authorizes (every `spf D authorizes U` FAIL; with one upstream
/// authorized, mail goes there and passes). Other findings (too many lookups for forged mail,
/// +all, a temperror) are logged, not held for.
fn verdict(domain: &str, checks: &[Check], until: Instant) -> Verdict {
    let record = format!("spf {domain}");
    let authorizes = format!("spf {domain} authorizes ");
    let upstreams: Vec<&Check> = checks
        .iter()
        .filter(|c| c.check.starts_with(&authorizes))
        .collect();
    let blocking = checks
        .iter()
        .find(|c| c.check == record && c.status == Status::Fail)
        .or_else(|| {
            let none_authorized =
                !upstreams.is_empty() && upstreams.iter().all(|c| c.status == Status::Fail);
            none_authorized.then(|| upstreams[0])
        });
    let failing = blocking.map(|c| {
        format!(
            "preflight: {} FAIL: {} (fix: {})",
            c.check,
            c.found,
            c.fix.as_deref().unwrap_or("-")
        )
    });
    Verdict { failing, until }
}

impl Setup {
    fn new(config: &Config) -> Result<Option<Setup>, String> {
        let Some(interval) = config.preflight.interval else {
            return Ok(None);
        };
        Ok(Some(Setup {
            config: config.clone(),
            dns: Dns::new(&config.dns.nameservers, config.dns.timeout)?,
            upstreams: checks::upstream_spf(config),
            helo: checks::effective_helo(config),
            interval,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unauthorized_upstream_holds_mail() {
        let until = Instant::now();
        let check = |name: &str, status| Check {
            status,
            ..Check::pass(name, "found")
        };
        let holds = |checks: &[Check]| verdict("d.example", checks, until).failing;
        assert!(holds(&[check("spf d.example", Status::Fail)]).is_some());
        let line = holds(&[check("spf d.example authorizes up:587", Status::Fail)]).unwrap();
        assert!(
            line.starts_with("preflight: spf d.example authorizes up:587 FAIL"),
            "{line}"
        );
        assert!(holds(&[check("spf d.example lookups", Status::Fail)]).is_none());
        assert!(holds(&[check("spf d.example policy", Status::Fail)]).is_none());
        assert!(holds(&[check("spf d.example authorizes up:587", Status::Warn)]).is_none());
        assert!(holds(&[check("spf other.example", Status::Fail)]).is_none());
        let one_of_two = [
            check("spf d.example authorizes backup:587", Status::Fail),
            check("spf d.example authorizes primary:587", Status::Pass),
        ];
        assert!(
            holds(&one_of_two).is_none(),
            "mail can leave through the primary"
        );
    }
}
