//! The spool: the durable queue that holds every accepted message until it is delivered or
//! bounced. This module is the seam: what the queue *does*, in types and the `QueueAdmin`
//! interface, with no SQL. Two stores sit behind it: a SQLite file (`sqlite/`, one node) and a
//! PostgreSQL database a fleet of relays shares (`postgres/`); `store` picks one from the
//! configuration. Nothing outside a store knows its SQL or its driver.
//!
//! - Submissions: `SpoolWriter::enqueue` returns once the message is committed; many sessions
//!   share one commit (group commit), so "250 means durable" costs one fsync per batch.
//! - Delivery: `DeliveryStore` claims due recipients under a lease (an expired lease is due
//!   again, so another round reclaims it while running) and records typed outcomes.
//! - Operators and metrics: `QueueAdmin` lists, shows, counts and steers.

mod batch;
mod delivery;
mod delivery_store;
mod error;
mod group_commit;
mod jobs;
mod maildrop;
mod message;
mod postgres;
mod report;
mod rows;
mod sqlite;
mod store;

use std::future::Future;

pub use crate::model::{BodyType, QueueId};
pub use delivery::{
    AttemptRecord, AttemptReply, ClaimedMessage, ClaimedRecipient, HeldBy, RecipientState,
};
pub use delivery_store::DeliveryStore;
pub use error::SpoolError;
pub use group_commit::{CommitObserver, SpoolWriter, WriterStats};
pub use maildrop::Maildrop;
pub use message::{NewMessage, NewRecipient, Origin};
pub use postgres::{NodeId, NodeSummary, PgDelivery, redacted as redacted_url};
pub use report::{
    ALL_STATES, AttemptSummary, Filter, MessageDetails, MessageSummary, PENDING_STATES, QueueStats,
    RecipientSummary, Selection, StateCount,
};
pub use sqlite::{OpenMode, SqliteQueue, writable};
pub use store::{DaemonSpool, StoreQueue};

/// What operators ask of the queue and how they steer it: `smarthost queue`, `mailq`, the
/// monitoring check and the metrics endpoint all go through this, never through a store's SQL.
/// IDs are full queue IDs (see `ids_with_prefix` for what an operator types).
pub trait QueueAdmin {
    /// Messages with at least one recipient matching the filter, oldest first.
    fn list(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<MessageSummary>, SpoolError>> + Send;
    /// Everything about one message, or None.
    fn details(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<MessageDetails>, SpoolError>> + Send;
    /// The full IDs starting with `prefix` (any case), at most a few.
    fn ids_with_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, SpoolError>> + Send;
    /// Counts by state, pending bytes, the oldest pending message, pending recipients.
    fn stats(&self) -> impl Future<Output = Result<QueueStats, SpoolError>> + Send;
    /// Queued and deferred recipients become due now; returns how many.
    fn retry(&self, selection: &Selection) -> impl Future<Output = Result<u64, SpoolError>> + Send;
    /// Queued and deferred recipients are held by the operator; returns how many.
    fn hold(&self, selection: &Selection) -> impl Future<Output = Result<u64, SpoolError>> + Send;
    /// Held recipients (by anyone) are queued and due now; returns how many.
    fn release(
        &self,
        selection: &Selection,
    ) -> impl Future<Output = Result<u64, SpoolError>> + Send;
    /// Whether the store answers at all (for `/healthz`: a load balancer steers clients away
    /// from a relay that cannot reach its store).
    fn reachable(&self) -> impl Future<Output = Result<(), SpoolError>> + Send;
    /// Deletes the selected messages with their history; returns their IDs.
    fn delete(
        &self,
        selection: &Selection,
    ) -> impl Future<Output = Result<Vec<String>, SpoolError>> + Send;
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
