//! The accept loop: connection limits (in total and per client address), one task per
//! session, and a graceful stop on shutdown — the shape of tokio's mini-redis server.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, SessionContext};
use super::reply::{self, Reply};
use super::session::Peer;
use crate::policy::RelayDecision;

/// Limits the accept loop enforces before a session starts.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_ip: usize,
    /// Of `total`, what clients from outside the trusted networks may hold until they
    /// authenticate (a flood from anywhere must not lock out the VM's own cron).
    pub untrusted: usize,
    /// After shutdown is signalled, how long sessions in DATA may take to finish.
    pub shutdown_grace: Duration,
}

/// Counts open connections per client address; a slot is given back when its guard drops.
#[derive(Default)]
struct PerIpCounts(Mutex<HashMap<IpAddr, usize>>);

struct PerIpSlot {
    counts: Arc<PerIpCounts>,
    ip: IpAddr,
}

impl PerIpCounts {
    fn try_take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PerIpSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The sockets sessions arrive on.
pub struct Listeners {
    /// `smtp.listen`: plain SMTP, STARTTLS when a certificate is configured.
    pub smtp: TcpListener,
    /// `smtp.implicit_tls_listen`: TLS from the first byte (RFC 8314).
    pub implicit_tls: Option<TcpListener>,
}

/// Accepts connections until `stop` completes, then tells idle sessions to close, waits up to
/// the grace period for the others, and returns.
pub async fn serve(
    listeners: Listeners,
    context: SessionContext,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let total = Arc::new(Semaphore::new(limits.total));
    let untrusted = Arc::new(Semaphore::new(limits.untrusted));
    let per_ip = Arc::new(PerIpCounts::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let mut accept_errors = 0u32;
    tokio::pin!(stop);
    loop {
        while sessions.try_join_next().is_some() {}
        let (accepted, implicit_tls) = tokio::select! {
            _ = &mut stop => break,
            accepted = listeners.smtp.accept() => (accepted, false),
            accepted = accept_on(listeners.implicit_tls.as_ref()) => (accepted, true),
        };
        let (stream, address) = match accepted {
            Ok(pair) => {
                accept_errors = 0;
                pair
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                accept_errors = (accept_errors + 1).min(6);
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10 << accept_errors)).await;
                continue;
            }
        };
        let ip = address.ip();
        let trusted = context.policy.intake.relay(Some(ip)) == RelayDecision::Allow;
        let share = if trusted {
            Some(None)
        } else {
            Arc::clone(&untrusted).try_acquire_owned().ok().map(Some)
        };
        let permits = share.and_then(|share| {
            let permit = Arc::clone(&total).try_acquire_owned().ok()?;
            Some((permit, share, per_ip.try_take(ip, limits.per_ip)?))
        });
        let Some((permit, share, slot)) = permits else {
            tracing::warn!(%ip, trusted, "connection refused: too many connections");
            context.metrics.refuse("rate");
            // A TLS client would read a plain reply as a broken handshake: it is just closed.
            if !implicit_tls {
                sessions.spawn(refuse(stream, reply::TOO_MANY_CONNECTIONS));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let context = context.clone();
        let shutdown = shutdown_rx.clone();
        sessions.spawn(async move {
            let _held: (OwnedSemaphorePermit, PerIpSlot) = (permit, slot);
            tracing::debug!(%ip, implicit_tls, "session started");
            if implicit_tls {
                connection::run_tls(stream, Peer::Tcp(ip), context, shutdown, share).await;
            } else {
                connection::run(stream, Peer::Tcp(ip), context, shutdown, share).await;
            }
        });
    }
    drop(listeners);
    let _ = shutdown_tx.send(true);
    tracing::info!(
        sessions = sessions.len(),
        "listener stopped; waiting for sessions to finish"
    );
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "grace period over; closing remaining sessions"
        );
        sessions.shutdown().await;
    }
}

/// The next connection on `listener`; never, when there is none.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Tells a client it cannot be served now, without letting a slow one hold anything.
async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
}
