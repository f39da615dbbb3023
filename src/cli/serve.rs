//! `smarthost serve`: open the spool, bind the listener, run until SIGTERM or SIGINT.
//! Startup is all-or-nothing: a spool that cannot be opened or migrated, or an address that
//! cannot be bound, stops the program before any client is answered.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::exit;
use crate::config::Config;
use crate::listener::{self, ConnectionLimits, Intake, SessionPolicy};
use crate::spool::Spool;

pub fn run(config: Config) -> ExitCode {
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
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("smarthost: {error:#}");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (spool, writer) = Spool::start(&config.spool).await?;
    let listener = TcpListener::bind(config.smtp.listen)
        .await
        .with_context(|| format!("cannot listen on {} (smtp.listen)", config.smtp.listen))?;
    let address = listener.local_addr()?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
    };
    tracing::info!(%address, spool = %config.spool.path.display(), hostname = %config.hostname, "listening");
    let intake = Intake {
        policy: Arc::new(SessionPolicy::from_config(&config)),
        spool,
    };
    let limits = ConnectionLimits {
        total: config.smtp.max_connections,
        per_ip: config.smtp.max_connections_per_ip,
        shutdown_grace: config.smtp.shutdown_grace,
    };
    listener::serve(listener, intake, limits, stop).await;
    // Every Spool handle is gone with the sessions: the writer commits what it holds and ends.
    let stats = writer.await.context("spool writer failed")?;
    tracing::info!(
        commits = stats.commits,
        messages = stats.messages,
        failed_batches = stats.failed_batches,
        "stopped"
    );
    Ok(())
}
