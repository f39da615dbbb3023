//! The daemon's end of the local hand-off (Postfix's pickup): a Unix socket that `sendmail`
//! callers who may not write the spool connect to. The submitting user comes from the socket's
//! peer credentials; the raw submission goes through the same intake as SMTP mail.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::intake::{Intake, LocalUser, maildrop};
use crate::telemetry::Metrics;

/// Hand-offs served at once; more wait for a slot (they are local and short).
const MAX_CONCURRENT: usize = 64;
/// Reading one request: a local client has no reason to be slow.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds the socket: its directory is created if missing, a stale socket from an earlier run
/// is replaced (anything else at that path is left alone, and binding fails), and every local
/// user may connect — as every local user may run `sendmail`.
pub fn bind_maildrop(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves hand-offs until `stop` turns true; requests already being read are finished.
pub async fn serve_maildrop(
    listener: UnixListener,
    intake: Arc<Intake>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    max_size: u64,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "hand-off accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (intake, metrics) = (intake.clone(), metrics.clone());
        running.spawn(async move {
            let _slot = slot;
            pick_up(stream, &intake, &metrics, max_size).await;
        });
    }
    while running.join_next().await.is_some() {}
}

/// One hand-off: who it is from, the submission, the intake's answer.
async fn pick_up(stream: UnixStream, intake: &Intake, metrics: &Metrics, max_size: u64) {
    let uid = match stream.peer_cred() {
        Ok(credentials) => credentials.uid(),
        Err(error) => {
            tracing::warn!(%error, "hand-off refused: no peer credentials");
            return;
        }
    };
    let user = LocalUser::from_uid(uid);
    let mut stream = BufReader::new(stream);
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        maildrop::read_submission(&mut stream, user.clone(), max_size),
    )
    .await;
    let submission = match read {
        Ok(Ok(submission)) => submission,
        Ok(Err(reason)) => {
            tracing::warn!(user = %user.name, %reason, "hand-off refused");
            return;
        }
        Err(_) => {
            tracing::warn!(user = %user.name, "hand-off refused: request not read in time");
            return;
        }
    };
    let started = std::time::Instant::now();
    let outcome = intake.accept(submission).await;
    match &outcome {
        Ok(id) => {
            metrics.accepted.inc();
            metrics
                .acceptance_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(user = %user.name, queue_id = %id, "handed off");
        }
        Err(refusal) => tracing::info!(user = %user.name, %refusal, "hand-off refused"),
    }
    if let Err(error) = maildrop::answer(stream.get_mut(), &outcome).await {
        tracing::warn!(user = %user.name, %error, "hand-off answer not delivered");
    }
}
