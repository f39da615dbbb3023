//! Opening the spool: SQLite in WAL mode with `synchronous=FULL` (a commit is on disk before
//! we answer 250), a busy timeout for concurrent writers, and the schema migrated or checked.

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::SpoolError;

static MIGRATOR: Migrator = sqlx::migrate!();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// For writers (`serve`, `sendmail`): create the file and its directory when missing and
    /// bring the schema up to date.
    Write,
    /// For commands that steer (`queue hold`, `delete`): the spool must exist and be of our
    /// schema; rows change, nothing is created or migrated.
    Existing,
    /// For commands that only look (`mailq`): the spool must exist and be of our schema;
    /// nothing is created or changed.
    Read,
}

pub async fn open_connection(
    path: &Path,
    busy_timeout: Duration,
    mode: OpenMode,
) -> Result<SqliteConnection, SpoolError> {
    let shown = path.display().to_string();
    let open_error = |reason: String| SpoolError::Open {
        path: shown.clone(),
        reason,
    };
    if mode != OpenMode::Write && !path.exists() {
        return Err(open_error(
            "no such file (is the --spool path right?)".into(),
        ));
    }
    if mode == OpenMode::Write
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    let mut conn = connect_options(path, busy_timeout, mode)
        .connect()
        .await
        .map_err(|e| open_error(e.to_string()))?;
    match mode {
        OpenMode::Write => migrate(&mut conn, &shown).await?,
        OpenMode::Existing | OpenMode::Read => check_schema(&mut conn, &shown).await?,
    }
    Ok(conn)
}

/// WAL with `synchronous=FULL`: a COMMIT has reached the disk when it returns.
pub(super) fn connect_options(
    path: &Path,
    busy_timeout: Duration,
    mode: OpenMode,
) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(mode == OpenMode::Write)
        .read_only(mode == OpenMode::Read)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
        .disable_statement_logging()
}

async fn migrate(conn: &mut SqliteConnection, path: &str) -> Result<(), SpoolError> {
    match MIGRATOR.run(conn).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(SpoolError::NewerSchema {
            path: path.to_string(),
            found,
            known: latest_known(),
        }),
        Err(error) => Err(SpoolError::Migrate {
            path: path.to_string(),
            reason: error.to_string(),
        }),
    }
}

/// Read-only commands cannot migrate; they refuse a spool whose schema they do not match.
async fn check_schema(conn: &mut SqliteConnection, path: &str) -> Result<(), SpoolError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| SpoolError::Open {
                path: path.to_string(),
                reason: format!("not a smarthost spool ({e})"),
            })?;
    let found = found.unwrap_or(0);
    let known = latest_known();
    match found.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(SpoolError::NewerSchema {
            path: path.to_string(),
            found,
            known,
        }),
        std::cmp::Ordering::Less => Err(SpoolError::OlderSchema {
            path: path.to_string(),
            found,
            known,
        }),
    }
}

fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Closes a connection, reporting nothing: used where the work is already done.
pub(super) async fn close_quietly(conn: SqliteConnection) {
    let _ = conn.close().await;
}
