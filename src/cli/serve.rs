//! `smarthost serve`: open the spool, bind the listener, run until SIGTERM or SIGINT.
//! Startup is all-or-nothing: a spool that cannot be opened or migrated, or an address that
//! cannot be bound, stops the program before any client is answered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use tokio::sync::{Notify, watch};

use crate::auth::Auth;
use crate::config::Config;
use crate::delivery::{self, Shared};
use crate::intake::{Intake, Queue};
use crate::listener::{self, ConnectionLimits, SessionContext, SessionPolicy};
use crate::model::UpstreamSizes;
use crate::policy::MessageRates;
use crate::preflight::Audit;
use crate::spool::{self, DaemonSpool, DeliveryStore, OpenMode, StoreQueue};
use crate::sysexits as exit;
use crate::telemetry::{self, Metrics};

/// `config_path` is read again on SIGHUP (delivery settings: upstreams, credentials, retry).
pub fn run(config: Config, config_path: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("smarthost: cannot start the runtime: {error}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    match runtime.block_on(serve(config, config_path)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("smarthost: {error:#}");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}

/// Message bodies arrive in buffers of up to `smtp.max_message_size`, and glibc keeps what
/// they freed: after 50 sessions sending 2 MB bodies the daemon stayed at 54 MiB when idle
/// again (80 MiB with fewer arenas, so not the arenas: its dynamic mmap threshold rises to
/// 32 MiB and serves big buffers from a heap it does not shrink). Fixing the threshold gave
/// the memory back but cost every 100 KiB message +25% CPU in mmap/munmap and page faults;
/// trimming the heap every few seconds gives it back for free while busy.
const TRIM_EVERY: Duration = Duration::from_secs(10);

async fn give_freed_memory_back() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the system; any thread may call it.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::new());
    let DaemonSpool {
        writer: spool,
        task: writer,
        delivery: store,
    } = DaemonSpool::open(&config.spool, metrics.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let trimmer = tokio::spawn(give_freed_memory_back());
    let wake = spool.commit_signal();
    let fleet = match store.fleet() {
        Some(fleet) => {
            metrics.set_node(fleet.node().as_str());
            let maildrop = spool::Maildrop::open(&config.spool).await?;
            Some(Fleet::join(fleet, &wake, maildrop, &spool, &stop_rx))
        }
        None => None,
    };
    // The sessions' handle on the spool writer: moved in, so that the writer ends with them.
    let intake = Arc::new(Intake::new(&config, Queue::Spool(spool)));
    let audit = Audit::new(&config, metrics.clone()).map_err(anyhow::Error::msg)?;
    let auditor = audit
        .clone()
        .map(|audit| tokio::spawn(audit.run_forever(stop_rx.clone())));
    let reloader = Reloader {
        path: config_path,
        store: store.clone(),
        sizes: intake.upstream_sizes(),
        wake,
        metrics: metrics.clone(),
        audit,
    };
    let shared = reloader.shared(&config).await.map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(config.smtp.listen)
        .await
        .with_context(|| format!("cannot listen on {} (smtp.listen)", config.smtp.listen))?;
    let address = listener.local_addr()?;
    let tls = match &config.smtp.tls {
        Some(files) => Some(Arc::new(
            listener::ServerTls::load(files).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let auth = match &config.smtp.auth {
        Some(auth) => Some(Arc::new(Auth::load(auth).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let implicit_tls = match config.smtp.implicit_tls_listen {
        Some(implicit) => {
            let listener = TcpListener::bind(implicit).await.with_context(|| {
                format!("cannot listen on {implicit} (smtp.implicit_tls_listen)")
            })?;
            tracing::info!(address = %listener.local_addr()?, "implicit TLS listening");
            Some(listener)
        }
        None => None,
    };
    if let Some(metrics_address) = config.metrics_listen {
        let metrics_listener = TcpListener::bind(metrics_address)
            .await
            .with_context(|| format!("cannot listen on {metrics_address} (metrics.listen)"))?;
        let bound = metrics_listener.local_addr()?;
        tracing::info!(address = %bound, "metrics listening on /metrics and /healthz");
        // Its own read connection: readers never wait for the writer or for delivery.
        let queue = StoreQueue::open(&config.spool, OpenMode::Read).await?;
        tokio::spawn(telemetry::serve_metrics(
            metrics_listener,
            metrics.clone(),
            Arc::new(queue),
            stop_rx.clone(),
        ));
    }
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let (shared_tx, shared_rx) = watch::channel(Arc::new(shared));

    let delivery = if config.delivery.upstreams.is_empty() {
        tracing::warn!("no [[upstream]] configured: mail is accepted and queued, not delivered");
        // Its spool handle must not outlive the sessions, or the writer never ends.
        drop(shared_rx);
        None
    } else {
        Some(tokio::spawn(delivery::run(shared_rx, stop_rx.clone())))
    };
    let reload_tls = tls.clone();
    let reload_auth = auth.clone();
    let stop = async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hangup.recv() => {
                    reloader.reload(&shared_tx).await;
                    if let Some(tls) = &reload_tls {
                        tls.reload();
                    }
                    if let Some(auth) = &reload_auth {
                        auth.reload();
                    }
                }
            }
        }
        tracing::info!("shutdown requested");
        telemetry::systemd::stopping();
        let _ = stop_tx.send(true);
    };
    let maildrop = start_maildrop(&config, &intake, &metrics, &stop_rx);
    tracing::info!(%address, spool = %config.spool.path.display(), hostname = %config.hostname,
        upstreams = config.delivery.upstreams.len(), "listening");
    // Bound and open: clients are answered from here on.
    telemetry::systemd::ready();
    let watchdog = tokio::spawn(telemetry::systemd::watchdog_forever());
    let context = SessionContext {
        policy: Arc::new(SessionPolicy {
            limits: config.smtp.limits.clone(),
            intake,
            starttls: tls.is_some(),
            require_tls: config.smtp.require_tls,
            auth,
            rates: Arc::new(MessageRates::new(
                config.smtp.message_rate_per_client,
                config.smtp.message_rate_per_user,
            )),
        }),
        metrics,
        tls,
    };
    let limits = ConnectionLimits {
        total: config.smtp.max_connections,
        per_ip: config.smtp.max_connections_per_ip,
        untrusted: config.smtp.max_untrusted_connections,
        shutdown_grace: config.smtp.shutdown_grace,
    };
    let listeners = listener::Listeners {
        smtp: listener,
        implicit_tls,
    };
    listener::serve(listeners, context, limits, stop).await;
    if let Some(maildrop) = maildrop
        && tokio::time::timeout(config.smtp.shutdown_grace, maildrop)
            .await
            .is_err()
    {
        tracing::warn!("local hand-offs did not finish within the grace period");
    }
    if let Some(delivery) = delivery {
        // Deliveries in flight finish within the grace period; the rest keep their leases,
        // which the next start clears.
        let abort = delivery.abort_handle();
        if tokio::time::timeout(config.smtp.shutdown_grace, delivery)
            .await
            .is_err()
        {
            tracing::warn!("delivery did not finish within the grace period; stopping it");
            abort.abort();
        }
    }
    if let Some(fleet) = fleet {
        fleet.leave(config.smtp.shutdown_grace).await;
    }
    // Every SpoolWriter handle is gone with the sessions, delivery and this last store: the writer
    // commits what it holds and ends. Bounded, so that a forgotten handle cannot keep the
    // process alive.
    store.close().await;
    drop(store);
    let stats = match tokio::time::timeout(config.smtp.shutdown_grace, writer).await {
        Ok(stats) => stats.context("spool writer failed")?,
        Err(_) => {
            tracing::warn!("spool writer still had a user at shutdown; stopping anyway");
            return Ok(());
        }
    };
    tracing::info!(
        commits = stats.commits,
        messages = stats.messages,
        failed_batches = stats.failed_batches,
        "stopped"
    );
    trimmer.abort();
    watchdog.abort();
    if let Some(auditor) = auditor {
        auditor.abort();
    }
    Ok(())
}

/// The local hand-off socket for `sendmail` callers who may not write the spool. Without it
/// (say, a relay run by an unprivileged user that cannot create /run/smarthost) mail still
/// arrives over SMTP and from callers who may write the spool; the warning says what to fix.
fn start_maildrop(
    config: &Config,
    intake: &Arc<Intake>,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = &config.sendmail.socket;
    match listener::bind_maildrop(path) {
        Ok(socket) => {
            tracing::info!(socket = %path.display(), "local hand-off listening");
            Some(tokio::spawn(listener::serve_maildrop(
                socket,
                intake.clone(),
                metrics.clone(),
                stop.clone(),
                config.smtp.limits.max_message_size,
            )))
        }
        Err(error) => {
            tracing::warn!(socket = %path.display(), %error,
                "local hand-off disabled: sendmail callers who cannot write the spool will get exit 75; fix sendmail.socket");
            None
        }
    }
}

/// A node's part in a fleet sharing one store: its heartbeat, waking on other nodes'
/// notices, and moving its local maildrop (what `sendmail` committed) into the shared store.
struct Fleet {
    heartbeat: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
    maildrop: tokio::task::JoinHandle<()>,
}

impl Fleet {
    fn join(
        store: &spool::PgDelivery,
        wake: &Arc<Notify>,
        maildrop: spool::Maildrop,
        spool: &spool::SpoolWriter,
        stop: &watch::Receiver<bool>,
    ) -> Fleet {
        Fleet {
            heartbeat: tokio::spawn(store.clone().beat_forever()),
            listener: tokio::spawn(store.clone().listen_forever(wake.clone())),
            maildrop: tokio::spawn(maildrop.move_forever(spool.clone(), stop.clone())),
        }
    }

    /// Stops beating and listening; lets the maildrop finish its round (it holds a writer
    /// handle, which the writer waits for).
    async fn leave(self, grace: Duration) {
        self.heartbeat.abort();
        self.listener.abort();
        let abort = self.maildrop.abort_handle();
        if tokio::time::timeout(grace, self.maildrop).await.is_err() {
            abort.abort();
        }
    }
}

/// What delivery needs besides the configuration, kept for SIGHUP.
struct Reloader {
    path: Option<PathBuf>,
    store: DeliveryStore,
    sizes: Arc<UpstreamSizes>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    audit: Option<Arc<Audit>>,
}

impl Reloader {
    async fn shared(&self, config: &Config) -> Result<Shared, String> {
        Shared::new(
            config,
            self.store.clone(),
            self.sizes.clone(),
            self.wake.clone(),
            self.metrics.clone(),
            self.audit.clone(),
        )
        .await
    }

    /// SIGHUP: read the configuration again and hand delivery its new settings. An invalid
    /// file is reported and the running configuration kept.
    async fn reload(&self, shared: &watch::Sender<Arc<Shared>>) {
        let config = match Config::load(self.path.as_deref()) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "reload refused; keeping the running configuration");
                return;
            }
        };
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        match self.shared(&config).await {
            Ok(new) => {
                self.sizes
                    .reconfigure(&config.delivery.upstream_size_limits());
                let _ = shared.send(Arc::new(new));
                if let Some(audit) = &self.audit {
                    audit.reconfigure(&config);
                }
                tracing::info!(
                    upstreams = config.delivery.upstreams.len(),
                    "configuration reloaded"
                );
            }
            Err(error) => {
                tracing::error!(%error, "reload refused; keeping the running configuration")
            }
        }
    }
}
