//! Connecting to the shared store: a pool per use (the writer's one connection, delivery's,
//! an operator's), reconnecting by itself after the server went away, and the schema migrated
//! at start (under sqlx's advisory lock, so two nodes starting at once take turns) or checked.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::spool::{OpenMode, SpoolError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// What a pool is for.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The node's one writer: batches and claims.
    Writer,
    /// Delivery's reads and rare writes, the heartbeat, the shared rate, LISTEN.
    Delivery,
    /// An operator's command or the metrics endpoint.
    Queue,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Delivery => "delivery",
            Role::Queue => "queue",
        }
    }

    /// Whether every query of this role looks rows up by key or through an index. Those
    /// connections run with `enable_seqscan = off`: the spool's tables start empty and
    /// autovacuum analyzes them at most once a minute, so a statement prepared early got a
    /// generic plan that scans the whole table, and kept it while the table grew (measured:
    /// the finishing UPDATE took 9 ms instead of 0.5 ms, and one node delivered 585 messages a
    /// second instead of over 1,300). An operator's listing may rightly scan.
    fn lookups_only(self) -> bool {
        matches!(self, Role::Writer | Role::Delivery)
    }
}

/// A pool of up to `connections` to the store at `url`. A connection is tested before use,
/// so one broken by a server restart is replaced rather than failing a batch; waiting for a
/// connection is bounded by `acquire_timeout` (the session hears 451 after that).
pub(in crate::spool) async fn pool(
    url: &str,
    connections: u32,
    acquire_timeout: Duration,
    mode: OpenMode,
    role: Role,
) -> Result<PgPool, SpoolError> {
    let shown = redacted(url);
    let open_error = |reason: String| SpoolError::Open {
        path: shown.clone(),
        reason,
    };
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| open_error(format!("spool.url is not a PostgreSQL URL: {e}")))?
        .application_name(&format!("smarthost {}", role.name()))
        .disable_statement_logging();
    if role.lookups_only() {
        options = options.options([("enable_seqscan", "off")]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true)
        .connect_with(options)
        .await
        .map_err(|e| open_error(e.to_string()))?;
    match mode {
        OpenMode::Write => migrate(&pool, &shown).await?,
        OpenMode::Existing | OpenMode::Read => check_schema(&pool, &shown).await?,
    }
    Ok(pool)
}

async fn migrate(pool: &PgPool, shown: &str) -> Result<(), SpoolError> {
    refuse_foreign(pool, shown).await?;
    match MIGRATOR.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(SpoolError::NewerSchema {
            path: shown.to_string(),
            found,
            known: latest_known(),
        }),
        Err(error) => Err(SpoolError::Migrate {
            path: shown.to_string(),
            reason: error.to_string(),
        }),
    }
}

/// A database holding other tables but not our migration history is someone else's: never
/// adopted, never read as a spool.
async fn refuse_foreign(pool: &PgPool, shown: &str) -> Result<(), SpoolError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| SpoolError::Open {
        path: shown.to_string(),
        reason: e.to_string(),
    })?;
    if tables.is_empty() || tables.iter().any(|t| t == "_sqlx_migrations") {
        return Ok(());
    }
    Err(SpoolError::Foreign {
        path: shown.to_string(),
        tables: tables.join(", "),
    })
}

async fn check_schema(pool: &PgPool, shown: &str) -> Result<(), SpoolError> {
    refuse_foreign(pool, shown).await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .map_err(|e| SpoolError::Open {
                path: shown.to_string(),
                reason: format!("not a smarthost spool ({e}); run `smarthost serve` once"),
            })?;
    SpoolError::unless_schema_matches(shown, found.unwrap_or(0), latest_known())
}

fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The URL without its password, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redacted("postgresql://relay:s3cret@db.internal:5432/mail"),
            "postgresql://relay@db.internal:5432/mail"
        );
        assert_eq!(
            redacted("postgresql://relay@%2Frun%2Fpostgresql/mail"),
            "postgresql://relay@%2Frun%2Fpostgresql/mail"
        );
        assert_eq!(
            redacted("postgresql:///mail?host=/tmp"),
            "postgresql:///mail?host=/tmp"
        );
    }
}
