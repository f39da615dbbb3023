//! Delivery: the scheduler claims due recipients from the spool and hands messages to a fixed
//! set of workers, each keeping its own connections to the upstreams. New mail goes to a worker
//! straight from the spool writer when one has room, and is otherwise claimed at once (the
//! writer signals its commit); mail written by other processes or made due by time is found by
//! a short poll.

mod attempt;
mod backoff;
mod classify;
mod dsn;
mod outbound;
mod rate;
mod ses_api;
mod upstream;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, DeliveryConfig, Transport, Upstream};
use crate::model::UpstreamSizes;
use crate::preflight::Audit;
use crate::spool::{DeliveryStore, now_ms};
use crate::telemetry::Metrics;
use rate::{FleetRate, RateLimiter};
pub use ses_api::SesApiClient;
pub use upstream::{Endpoint, Probe, Timeouts};

/// Everything workers share for one configuration generation; replaced whole on reload.
pub struct Shared {
    generation: u64,
    config: DeliveryConfig,
    /// Our host name, which DSNs give as Reporting-MTA (RFC 3464 2.2.2).
    reporting_mta: String,
    /// The domain bounces come from (MAILER-DAEMON@) and their Message-IDs use.
    bounce_domain: String,
    timeouts: Timeouts,
    upstreams: Vec<UpstreamState>,
    /// What each upstream takes, for intake: learned from SIZE on every connection.
    sizes: Arc<UpstreamSizes>,
    store: DeliveryStore,
    /// Wakes the scheduler: signalled by the spool writer after each commit that added mail
    /// (a submission or a bounce) not handed to a worker directly, so that it never waits for
    /// the poll.
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// The daemon's preflight, which may hold mail from a sender domain whose SPF does not
    /// authorize the upstream (`preflight.enforce = "hold"`).
    audit: Option<Arc<Audit>>,
}

struct UpstreamState {
    config: Upstream,
    route: Route,
    rate: RateLimiter,
    /// Set when the upstream failed; it is tried after the others until then.
    down_until: StdMutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

/// How delivery reaches an upstream. (One per upstream, built once: the size difference
/// between the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Route {
    Smtp(Endpoint),
    SesApi(SesApiClient),
}

impl UpstreamState {
    fn mark_down(&self, cooldown: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + cooldown);
        self.metrics.set_upstream_up(&self.config.name(), false);
    }

    fn mark_up(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.metrics.set_upstream_up(&self.config.name(), true);
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| until > now)
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl Shared {
    /// Builds the delivery side of a configuration (TLS settings and the SES API clients are
    /// made here, once).
    pub async fn new(
        config: &Config,
        store: DeliveryStore,
        sizes: Arc<UpstreamSizes>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        audit: Option<Arc<Audit>>,
    ) -> Result<Shared, String> {
        let delivery = config.delivery.clone();
        let timeouts = Timeouts {
            connect: delivery.connect_timeout,
            command: delivery.command_timeout,
            data: delivery.data_timeout,
        };
        let mut upstreams = Vec::with_capacity(delivery.upstreams.len());
        for upstream in &delivery.upstreams {
            let route = match &upstream.transport {
                Transport::Smtp(server) => Route::Smtp(
                    Endpoint::new(server.clone(), config.upstream_helo.clone())
                        .map_err(|e| format!("upstream {}: {e}", upstream.name()))?,
                ),
                Transport::SesApi(api) => Route::SesApi(SesApiClient::new(api, timeouts).await),
            };
            upstreams.push(UpstreamState {
                config: upstream.clone(),
                route,
                rate: RateLimiter::new(
                    upstream.max_messages_per_second,
                    store.fleet().map(|fleet| FleetRate {
                        store: fleet.clone(),
                        upstream: upstream.name(),
                    }),
                ),
                down_until: StdMutex::new(None),
                metrics: metrics.clone(),
            });
        }
        Ok(Shared {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            timeouts,
            config: delivery,
            reporting_mta: config.upstream_helo.clone(),
            // Bounces leave under our public identity, never an internal host name.
            bounce_domain: config
                .rewrite
                .sender_domain
                .clone()
                .unwrap_or_else(|| config.upstream_helo.clone()),
            upstreams,
            sizes,
            store,
            wake,
            metrics,
            audit,
        })
    }

    /// Upstreams that are up in priority order, then those cooling down (still better than
    /// nothing when every upstream has failed lately).
    fn upstream_order(&self) -> Vec<usize> {
        let now = Instant::now();
        let (up, down): (Vec<usize>, Vec<usize>) =
            (0..self.upstreams.len()).partition(|&i| !self.upstreams[i].is_down(now));
        up.into_iter().chain(down).collect()
    }

    /// Recipients per transaction: the smallest limit of any upstream, so that failover never
    /// sends more than the next upstream accepts.
    fn max_recipients_per_transaction(&self) -> usize {
        self.config
            .upstreams
            .iter()
            .map(|u| u.max_recipients)
            .min()
            .unwrap_or(1)
    }
}

/// How often finished messages past their retention are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Runs delivery until `shutdown` turns true. `shared` changes on reload.
pub async fn run(mut shared: watch::Receiver<Arc<Shared>>, mut shutdown: watch::Receiver<bool>) {
    let store = shared.borrow().store.clone();
    let wake = shared.borrow().wake.clone();
    match store.clear_stale_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            recipients = n,
            "leases from an earlier run returned to the queue"
        ),
        Err(error) => tracing::error!(%error, "cannot clear stale leases"),
    }
    release_config_holds(&store).await;
    let workers_count = shared.borrow().config.connections;
    let (jobs_tx, jobs_rx) = mpsc::channel(workers_count);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let mut workers = JoinSet::new();
    for _ in 0..workers_count {
        workers.spawn(worker::run(jobs_rx.clone(), shared.clone()));
    }
    store.hand_new_mail_to(&jobs_tx, shared.borrow().config.lease);
    let mut last_purge = Instant::now() - PURGE_INTERVAL;
    'schedule: loop {
        let stopping = *shutdown.borrow();
        if stopping {
            break;
        }
        let current = shared.borrow().clone();
        let claim_limit = workers_count * current.max_recipients_per_transaction() * 2;
        match store
            .claim(now_ms(), current.config.lease, claim_limit)
            .await
        {
            Ok(claimed) if !claimed.is_empty() => {
                for message in claimed {
                    tokio::select! {
                        sent = jobs_tx.send(message) => if sent.is_err() { break 'schedule },
                        _ = shutdown.changed() => break 'schedule,
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot claim due mail"),
        }
        if last_purge.elapsed() >= PURGE_INTERVAL {
            last_purge = Instant::now();
            let before = now_ms() - current.config.delivered_retention.as_millis() as i64;
            match store.purge_finished(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(messages = n, "finished messages past retention removed"),
                Err(error) => tracing::error!(%error, "cannot purge finished messages"),
            }
        }
        let wait = match store.next_due().await {
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).max(0) as u64),
            _ => current.config.poll_interval,
        }
        .min(current.config.poll_interval);
        let preflight_cleared = async {
            match &current.audit {
                Some(audit) => audit.cleared().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = preflight_cleared => release_config_holds(&store).await,
            changed = shared.changed() => {
                if changed.is_err() { break }
                tracing::info!("configuration reloaded; releasing mail held for configuration errors");
                release_config_holds(&store).await;
                store.hand_new_mail_to(&jobs_tx, shared.borrow_and_update().config.lease);
            }
            _ = shutdown.changed() => {}
        }
    }
    drop(jobs_tx);
    while workers.join_next().await.is_some() {}
}

async fn release_config_holds(store: &DeliveryStore) {
    match store.release_config_holds(now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            recipients = n,
            "mail held for configuration errors is due again"
        ),
        Err(error) => tracing::error!(%error, "cannot release held mail"),
    }
}
