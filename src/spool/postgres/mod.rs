//! The PostgreSQL store: one queue shared by a fleet of relays. Every daemon is a node with
//! its own identity; claims are leases with an owner and a token, taken with
//! `FOR UPDATE SKIP LOCKED`, and an outcome is recorded only under the lease it was attempted
//! under. Nodes wake each other with LISTEN/NOTIFY, beat their hearts in `nodes`, and share
//! the upstream account's send rate through `send_rates`.
//!
//! Commits that add mail use PostgreSQL's default `synchronous_commit` (on: the commit is on
//! disk, and on a synchronous standby where one is configured, before we answer 250).

mod commit;
mod delivery;
mod node;
mod open;
mod queue;

pub(super) use commit::PgCommit;
pub use delivery::PgDelivery;
pub(in crate::spool) use node::register;
pub use node::{NodeId, NodeSummary};
pub use open::redacted;
pub(in crate::spool) use open::{Role, pool};
pub use queue::PgQueue;

use super::SpoolError;

/// The channel on which nodes say "mail is due": new mail nobody took yet, `queue retry`,
/// `queue release`.
const DUE_CHANNEL: &str = "smarthost_due";

/// SQLSTATE class 53, "insufficient resources" (53100 is disk_full).
const INSUFFICIENT_RESOURCES: &str = "53";

/// A failed write, as the spool reports it; a store out of reach or out of disk is told apart.
fn write_error(e: sqlx::Error) -> SpoolError {
    if is_unreachable(&e) {
        return SpoolError::Unavailable(e.to_string());
    }
    let full = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with(INSUFFICIENT_RESOURCES));
    if full {
        SpoolError::NoSpace(e.to_string())
    } else {
        SpoolError::Write(e.to_string())
    }
}

fn read_error(e: sqlx::Error) -> SpoolError {
    if is_unreachable(&e) {
        return SpoolError::Unavailable(e.to_string());
    }
    SpoolError::Read(e.to_string())
}

/// The server is not there (refused, reset, timed out waiting for a connection), as opposed
/// to one that answered with an error. SQLSTATE class 57P (operator intervention: the server
/// shutting down) and 08 (connection exception) count as not there.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    }
}
