//! The SQLite store: a WAL database with `synchronous=FULL` for every commit that adds mail,
//! one writer task for all writes (submissions, claims, outcomes), and read connections for
//! delivery's rare queries and for operators.

mod admin;
mod batch;
mod claim;
mod commit;
mod compact;
mod delivery_store;
mod maildrop;
mod open;
mod queries;
mod reserve;
mod steer;
mod watermark;

pub use admin::SqliteQueue;
pub(super) use commit::SqliteCommit;
pub(super) use delivery_store::SqliteDelivery;
pub use open::{OpenMode, writable};

use super::SpoolError;

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: &str = "13";

/// A failed write, as the spool reports it; a full disk is told apart, since the operator's
/// remedy differs.
fn write_error(e: sqlx::Error) -> SpoolError {
    let full = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == SQLITE_FULL);
    if full {
        SpoolError::NoSpace(e.to_string())
    } else {
        SpoolError::Write(e.to_string())
    }
}

/// A failed read, as the spool reports it.
fn read_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}
