//! Which store a command works on: the shared PostgreSQL store when `spool.url` is set, else
//! the SQLite file at `spool.path`. `sendmail` always commits to the SQLite file (with a
//! shared store it is the node's maildrop, see `maildrop`).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::delivery_store::Direct;
use super::postgres::{NodeId, NodeSummary, PgCommit, PgDelivery, PgQueue, Role};
use super::sqlite::{SqliteCommit, SqliteDelivery, SqliteQueue};
use super::{
    CommitObserver, DeliveryStore, Filter, MessageDetails, MessageSummary, OpenMode, QueueAdmin,
    QueueStats, Selection, SpoolError, SpoolWriter, WriterStats,
};
use crate::config::SpoolConfig;

/// Connections delivery keeps to a shared store: reads, releases, the heartbeat, the shared
/// send rate, and the notification listener.
const DELIVERY_CONNECTIONS: u32 = 4;

/// The daemon's spool: the writer every session and delivery commit through, its task, and
/// delivery's handle on the same store.
pub struct DaemonSpool {
    pub writer: SpoolWriter,
    pub task: JoinHandle<WriterStats>,
    pub delivery: DeliveryStore,
}

impl DaemonSpool {
    /// Opens the configured store, creating and migrating it as needed. On a shared store
    /// this node registers under a new identity.
    pub async fn open(
        config: &SpoolConfig,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<DaemonSpool, SpoolError> {
        match &config.url {
            None => {
                let (writer, task) =
                    SpoolWriter::spawn(SqliteCommit::open(config).await?, observer);
                let direct = Direct::Sqlite(SqliteDelivery::open(config).await?);
                Ok(DaemonSpool {
                    delivery: DeliveryStore::new(direct, writer.clone()),
                    writer,
                    task,
                })
            }
            Some(url) => {
                let pool = |connections, mode, role| {
                    super::postgres::pool(url, connections, config.busy_timeout, mode, role)
                };
                let writer_pool = pool(1, OpenMode::Write, Role::Writer).await?;
                let delivery_pool =
                    pool(DELIVERY_CONNECTIONS, OpenMode::Existing, Role::Delivery).await?;
                let node = NodeId::generate();
                super::postgres::register(&delivery_pool, &node).await?;
                tracing::info!(%node, store = %super::postgres::redacted(url), "joined the shared spool");
                let (writer, task) =
                    SpoolWriter::spawn(PgCommit::new(writer_pool, node.clone()), observer);
                let direct = Direct::Postgres(PgDelivery::new(delivery_pool, node));
                Ok(DaemonSpool {
                    delivery: DeliveryStore::new(direct, writer.clone()),
                    writer,
                    task,
                })
            }
        }
    }
}

impl SpoolWriter {
    /// The writer `sendmail` commits through: always the SQLite file at `spool.path`.
    pub async fn start_local(
        config: &SpoolConfig,
    ) -> Result<(SpoolWriter, JoinHandle<WriterStats>), SpoolError> {
        Ok(SpoolWriter::spawn(
            SqliteCommit::open(config).await?,
            Arc::new(()),
        ))
    }
}

/// The queue as operators see it, on whichever store is configured.
pub enum StoreQueue {
    Sqlite(SqliteQueue),
    Postgres(PgQueue),
}

impl StoreQueue {
    /// Opens an existing spool (never created here); `mode` says whether rows may change.
    pub async fn open(config: &SpoolConfig, mode: OpenMode) -> Result<StoreQueue, SpoolError> {
        match &config.url {
            None => Ok(StoreQueue::Sqlite(SqliteQueue::open(config, mode).await?)),
            Some(url) => Ok(StoreQueue::Postgres(
                PgQueue::open(config, url, mode).await?,
            )),
        }
    }

    /// The fleet's nodes heard from within `within`, or None for a SQLite spool (one node).
    pub async fn nodes(&self, within: Duration) -> Result<Option<Vec<NodeSummary>>, SpoolError> {
        match self {
            StoreQueue::Sqlite(_) => Ok(None),
            StoreQueue::Postgres(queue) => {
                let since = super::now_ms() - within.as_millis() as i64;
                Ok(Some(queue.nodes(since).await?))
            }
        }
    }
}

impl QueueAdmin for StoreQueue {
    async fn list(&self, filter: &Filter) -> Result<Vec<MessageSummary>, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.list(filter).await,
            StoreQueue::Postgres(queue) => queue.list(filter).await,
        }
    }

    async fn details(&self, id: &str) -> Result<Option<MessageDetails>, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.details(id).await,
            StoreQueue::Postgres(queue) => queue.details(id).await,
        }
    }

    async fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.ids_with_prefix(prefix).await,
            StoreQueue::Postgres(queue) => queue.ids_with_prefix(prefix).await,
        }
    }

    async fn stats(&self) -> Result<QueueStats, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.stats().await,
            StoreQueue::Postgres(queue) => queue.stats().await,
        }
    }

    async fn retry(&self, selection: &Selection) -> Result<u64, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.retry(selection).await,
            StoreQueue::Postgres(queue) => queue.retry(selection).await,
        }
    }

    async fn hold(&self, selection: &Selection) -> Result<u64, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.hold(selection).await,
            StoreQueue::Postgres(queue) => queue.hold(selection).await,
        }
    }

    async fn release(&self, selection: &Selection) -> Result<u64, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.release(selection).await,
            StoreQueue::Postgres(queue) => queue.release(selection).await,
        }
    }

    async fn reachable(&self) -> Result<(), SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.reachable().await,
            StoreQueue::Postgres(queue) => queue.reachable().await,
        }
    }

    async fn delete(&self, selection: &Selection) -> Result<Vec<String>, SpoolError> {
        match self {
            StoreQueue::Sqlite(queue) => queue.delete(selection).await,
            StoreQueue::Postgres(queue) => queue.delete(selection).await,
        }
    }
}
