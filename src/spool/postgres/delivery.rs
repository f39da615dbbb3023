//! Delivery's own work on the shared store, beside the writer: releases, purges, counters;
//! the node's heartbeat; waking on other nodes' NOTIFY; and the send rate the fleet shares.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::node::{self, HEARTBEAT_EVERY, NodeId};
use super::{DUE_CHANNEL, read_error, write_error};
use crate::spool::SpoolError;
use crate::spool::batch::Counters;

#[derive(Clone)]
pub struct PgDelivery {
    pool: PgPool,
    node: NodeId,
}

/// How long to wait before listening again after the connection was lost.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

impl PgDelivery {
    pub(in crate::spool) fn new(pool: PgPool, node: NodeId) -> PgDelivery {
        PgDelivery { pool, node }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Recipients held because our configuration was wrong become due again (start, SIGHUP).
    /// In a fleet this releases every node's configuration holds: they share one
    /// configuration, and a node still misconfigured holds them again.
    pub async fn release_config_holds(&self, now_ms: i64) -> Result<u64, SpoolError> {
        let done = sqlx::query(
            "UPDATE recipients SET state = 'queued', held_by = NULL, next_attempt_at = $1, updated_at = $1
             WHERE state = 'held' AND held_by = 'config'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(done.rows_affected())
    }

    /// When the earliest recipient not claimable now becomes claimable: its next attempt, or
    /// the end of the lease it is under (another node's, perhaps, which may never come back).
    pub async fn next_due(&self) -> Result<Option<i64>, SpoolError> {
        sqlx::query_scalar(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until + 1, 0))) FROM recipients
             WHERE state IN ('queued', 'deferred')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)
    }

    pub(in crate::spool) async fn count(&self, counters: &Counters) -> Result<(), SpoolError> {
        sqlx::query(
            "UPDATE counters SET value = counters.value + c.value::bigint
             FROM jsonb_each_text($1::jsonb) AS c WHERE counters.name = c.key",
        )
        .bind(counters.json())
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    pub async fn purge_finished(&self, before_ms: i64) -> Result<u64, SpoolError> {
        let done =
            sqlx::query("DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await
                .map_err(write_error)?;
        Ok(done.rows_affected())
    }

    /// Beats the node's heart until dropped. A missed beat (store unreachable) is logged and
    /// the next one tried.
    pub async fn beat_forever(self) {
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(error) = node::beat(&self.pool, &self.node, false).await {
                tracing::warn!(%error, node = %self.node, "missed a heartbeat");
            }
        }
    }

    /// Wakes `wake` whenever another node (or an operator's command) says mail is due; listens
    /// again after the connection is lost, and wakes once then, since a notice may have been
    /// missed meanwhile.
    pub async fn listen_forever(self, wake: Arc<Notify>) {
        loop {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(DUE_CHANNEL).await {
                    Ok(()) => {
                        wake.notify_one();
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(_)) => wake.notify_one(),
                                // The connection was lost; PgListener reconnects on the next
                                // call, but a notice in between is gone: look once.
                                Ok(None) => wake.notify_one(),
                                Err(error) => {
                                    tracing::warn!(%error, "lost the store's notifications; listening again");
                                    break;
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot listen for due mail"),
                },
                Err(error) => tracing::debug!(%error, "cannot listen for due mail yet"),
            }
            tokio::time::sleep(LISTEN_RETRY).await;
        }
    }

    /// Reserves the next send slot of `upstream`'s shared rate: `interval` apart, twice that
    /// while the upstream has asked the fleet to slow down. Returns how long to wait for it.
    /// The store's clock decides, so nodes whose clocks differ still share one rate.
    pub async fn reserve_send_slot(
        &self,
        upstream: &str,
        interval: Duration,
    ) -> Result<Duration, SpoolError> {
        let wait_ms: i64 = sqlx::query_scalar(
            "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
             INSERT INTO send_rates AS s (upstream, next_slot) SELECT $1, now.ms + $2 FROM now
             ON CONFLICT (upstream) DO UPDATE SET next_slot =
                 GREATEST(s.next_slot, (SELECT ms FROM now))
                 + CASE WHEN s.throttled_until > (SELECT ms FROM now) THEN 2 * $2 ELSE $2 END
             RETURNING GREATEST(s.next_slot - (SELECT ms FROM now)
                 - CASE WHEN s.throttled_until > (SELECT ms FROM now) THEN 2 * $2 ELSE $2 END, 0)",
        )
        .bind(upstream)
        .bind(interval.as_millis() as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(Duration::from_millis(wait_ms as u64))
    }

    /// The upstream said we send too fast: the whole fleet halves its rate for `period`.
    pub async fn throttle(&self, upstream: &str, period: Duration) -> Result<(), SpoolError> {
        sqlx::query(
            "INSERT INTO send_rates (upstream, throttled_until)
             VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)
             ON CONFLICT (upstream) DO UPDATE SET throttled_until = EXCLUDED.throttled_until",
        )
        .bind(upstream)
        .bind(period.as_millis() as i64)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    /// Whether any node was asked to slow down for `upstream`, and for how much longer.
    pub async fn throttled_for(&self, upstream: &str) -> Result<Option<Duration>, SpoolError> {
        let left: Option<i64> = sqlx::query_scalar(
            "SELECT throttled_until - (extract(epoch FROM clock_timestamp()) * 1000)::bigint
             FROM send_rates WHERE upstream = $1",
        )
        .bind(upstream)
        .fetch_optional(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(left
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms as u64)))
    }

    /// Says the node stopped, and closes.
    pub async fn close(&self) {
        if let Err(error) = node::beat(&self.pool, &self.node, true).await {
            tracing::warn!(%error, "cannot record that this node stopped");
        }
        self.pool.close().await;
    }
}
