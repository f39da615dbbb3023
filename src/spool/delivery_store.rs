//! The delivery side of the spool, for either store: claim due recipients under a lease,
//! record each attempt's outcome per recipient (with the bounce it produced, in the same
//! transaction), release what our own configuration held, and forget finished messages after
//! their retention. Claims and outcomes go through the spool's one writer, which commits them
//! together with new messages; the rest goes to the store directly.

use std::time::Duration;

use super::batch::Counters;
use super::jobs::{ClaimRequest, Outcome};
use super::postgres::PgDelivery;
use super::sqlite::SqliteDelivery;
use crate::spool::{AttemptRecord, ClaimedMessage, NewMessage, SpoolError, SpoolWriter};

#[derive(Clone)]
pub struct DeliveryStore {
    direct: Direct,
    spool: SpoolWriter,
}

/// The store, for what does not go through the writer.
#[derive(Clone)]
pub(super) enum Direct {
    Sqlite(SqliteDelivery),
    Postgres(PgDelivery),
}

impl DeliveryStore {
    pub(super) fn new(direct: Direct, spool: SpoolWriter) -> DeliveryStore {
        DeliveryStore { direct, spool }
    }

    /// At start, leases no live process can hold go back to the queue. A SQLite spool has one
    /// daemon, so every lease is stale; on a shared store other nodes may be delivering, so
    /// none is cleared (expired ones are reclaimed by any node's claims).
    pub async fn clear_stale_leases(&self) -> Result<u64, SpoolError> {
        match &self.direct {
            Direct::Sqlite(store) => store.clear_leases().await,
            Direct::Postgres(_) => Ok(0),
        }
    }

    /// Recipients held because our configuration was wrong become due again (start, SIGHUP).
    pub async fn release_config_holds(&self, now_ms: i64) -> Result<u64, SpoolError> {
        match &self.direct {
            Direct::Sqlite(store) => store.release_config_holds(now_ms).await,
            Direct::Postgres(store) => store.release_config_holds(now_ms).await,
        }
    }

    /// Claims up to `limit` due recipients (oldest due first) for `lease`, grouped by message
    /// with each message's envelope and body.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMessage>, SpoolError> {
        self.spool
            .claim(ClaimRequest {
                now_ms,
                lease,
                limit,
            })
            .await
    }

    /// Has the spool writer give new messages to `workers` right after their commit, leased
    /// for `lease`, whenever the queue has room; the rest are claimed as usual.
    pub fn hand_new_mail_to(
        &self,
        workers: &tokio::sync::mpsc::Sender<ClaimedMessage>,
        lease: Duration,
    ) {
        self.spool.hand_off(workers, lease);
    }

    /// When the earliest recipient not claimable now becomes claimable (unix ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>, SpoolError> {
        match &self.direct {
            Direct::Sqlite(store) => store.next_due().await,
            Direct::Postgres(store) => store.next_due().await,
        }
    }

    /// Records one attempt's outcomes for a message's recipients, and the bounce they caused,
    /// atomically: a bounce is queued exactly when its recipients are marked bounced. What
    /// delivery changed in the message on the way out (`changes`) joins its rewrite notes,
    /// once. Returns once the spool writer has them; it commits them with the next batch
    /// (group commit with parallel deliveries and new mail), so the worker goes on without
    /// waiting for the disk.
    pub async fn record(
        &self,
        message_id: &str,
        records: Vec<AttemptRecord>,
        bounce: Option<NewMessage>,
        changes: Vec<String>,
        now_ms: i64,
    ) -> Result<(), SpoolError> {
        let outcome = Outcome {
            message_id: message_id.to_string(),
            records,
            bounce,
            notes: (!changes.is_empty()).then(|| changes.join("\n")),
            now_ms,
        };
        self.spool.record(outcome).await
    }

    /// Adds to a counter outside an attempt (for example a configuration error).
    pub async fn count(&self, name: &'static str, by: i64) -> Result<(), SpoolError> {
        let mut counters = Counters::default();
        counters.add(name, by);
        match &self.direct {
            Direct::Sqlite(store) => store.count(&counters).await,
            Direct::Postgres(store) => store.count(&counters).await,
        }
    }

    /// Deletes messages finished before `before_ms` (their recipients and attempts follow).
    pub async fn purge_finished(&self, before_ms: i64) -> Result<u64, SpoolError> {
        match &self.direct {
            Direct::Sqlite(store) => store.purge_finished(before_ms).await,
            Direct::Postgres(store) => store.purge_finished(before_ms).await,
        }
    }

    /// The shared store's handle, when delivery runs in a fleet.
    pub fn fleet(&self) -> Option<&PgDelivery> {
        match &self.direct {
            Direct::Sqlite(_) => None,
            Direct::Postgres(store) => Some(store),
        }
    }

    pub async fn close(&self) {
        match &self.direct {
            Direct::Sqlite(store) => store.close().await,
            Direct::Postgres(store) => store.close().await,
        }
    }
}
