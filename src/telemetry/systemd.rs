//! What the daemon tells systemd (sd_notify(3), `Type=notify`): READY=1 once it listens with
//! the spool open, WATCHDOG=1 at half the unit's `WatchdogSec=` for as long as the runtime
//! runs tasks (a wedged daemon is restarted), STOPPING=1 when shutdown begins. Without
//! NOTIFY_SOCKET (not started by systemd) every call does nothing.

use sd_notify::NotifyState;

pub fn ready() {
    notify(NotifyState::Ready);
}

pub fn stopping() {
    notify(NotifyState::Stopping);
}

fn notify(state: NotifyState) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Pings the watchdog until the task is dropped; returns at once when there is none.
pub async fn watchdog_forever() {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut every = tokio::time::interval(timeout / 2);
    loop {
        every.tick().await;
        notify(NotifyState::Watchdog);
    }
}
