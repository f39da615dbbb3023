//! SMTP AUTH for the relay's own submitters (RFC 4954): who they are (the users file), their
//! passwords checked with argon2id off the async threads, the senders each may use, and how
//! many failures a client address gets. Kept apart from the session, as relay policy is: the
//! session asks, this answers.

pub mod sasl;
mod senders;
mod users;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub use senders::SenderPattern;
pub use users::{User, UserEntry, Users, UsersFile, hash_password};

use crate::config::AuthConfig;
use crate::policy::EventWindow;

/// What every session shares about AUTH.
pub struct Auth {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    /// Failed attempts per client address.
    failures: EventWindow<IpAddr>,
}

/// How an AUTH exchange ended.
#[derive(Debug)]
pub enum Verdict {
    Authenticated(Arc<User>),
    /// Wrong name or password: `535 5.7.8`.
    Refused,
    /// That was the address's last attempt for now: `421 4.7.0`, and the session closes.
    LockedOut,
}

impl Auth {
    pub fn load(config: &AuthConfig) -> Result<Auth, String> {
        let users = Users::load(&config.users_file)?;
        tracing::info!(users = users.len(), file = %config.users_file.display(), "SMTP AUTH users loaded");
        Ok(Auth::new(config, users))
    }

    pub fn new(config: &AuthConfig, users: Users) -> Auth {
        Auth {
            path: config.users_file.clone(),
            users: RwLock::new(Arc::new(users)),
            failures: EventWindow::new(config.max_failures, config.failure_window),
        }
    }

    /// SIGHUP: the users file again; a file that does not load keeps the running users.
    pub fn reload(&self) {
        match Users::load(&self.path) {
            Ok(users) => {
                tracing::info!(users = users.len(), "SMTP AUTH users reloaded");
                *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
            }
            Err(error) => {
                tracing::error!(%error, "users file not reloaded; keeping the running users")
            }
        }
    }

    /// The address may try (again) now.
    pub fn may_try(&self, ip: IpAddr) -> bool {
        !self.failures.full(&ip, Instant::now())
    }

    /// Checks the credentials on a blocking thread (argon2id takes tens of milliseconds of
    /// CPU), and counts a failure against the address.
    pub async fn check(&self, ip: IpAddr, credentials: sasl::Credentials) -> Verdict {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner()).clone();
        let name = credentials.name.clone();
        let verified = tokio::task::spawn_blocking(move || {
            users.verify(&credentials.name, &credentials.password)
        })
        .await
        .ok()
        .flatten();
        match verified {
            Some(user) => {
                self.failures.clear(&ip);
                tracing::info!(%ip, user = %user.name, "authenticated");
                Verdict::Authenticated(user)
            }
            None => {
                let locked = self.failures.record(&ip, Instant::now());
                tracing::warn!(%ip, user = %name, locked, "authentication failed");
                if locked {
                    Verdict::LockedOut
                } else {
                    Verdict::Refused
                }
            }
        }
    }
}
