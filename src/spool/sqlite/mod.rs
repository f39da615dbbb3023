//! The SQLite store: a WAL database with `synchronous=FULL` for every commit that adds mail,
//! one writer task for all writes (submissions, claims, outcomes), and read connections for
//! delivery's rare queries and for operators.

mod admin;
mod batch;
mod claim;
mod delivery_store;
mod jobs;
mod open;
mod queries;
mod steer;
mod watermark;
mod writer;

pub use admin::SqliteQueue;
pub use delivery_store::DeliveryStore;
pub use open::{OpenMode, writable};
pub use writer::{SpoolWriter, WriterStats};

use super::SpoolError;

/// A failed write, as the spool reports it.
fn write_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Write(e.to_string())
}

/// A failed read, as the spool reports it.
fn read_error(e: sqlx::Error) -> SpoolError {
    SpoolError::Read(e.to_string())
}
