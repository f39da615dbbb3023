//! Opening the spool: SQLite in WAL mode with `synchronous=FULL` (a commit is on disk before
//! we answer 250), a busy timeout for concurrent writers, and the schema migrated or checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::spool::SpoolError;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

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
    if mode == OpenMode::Write {
        create_private(path).map_err(open_error)?;
    }
    let options = connect_options(path, busy_timeout, mode);
    // Incremental auto-vacuum lets `queue delete` hand freed pages back to the file system
    // (see `compact`). Setting it writes the database header in a transaction of its own,
    // synced, even when the mode is already set: a fsync of the WAL and one of its directory
    // at every `sendmail`. It takes effect only before the first table exists, so only a
    // file with no database in it yet is given it (an older spool reuses its freed pages).
    let options = if mode == OpenMode::Write && std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
    {
        options.auto_vacuum(SqliteAutoVacuum::Incremental)
    } else {
        options
    };
    let mut conn = options
        .connect()
        .await
        .map_err(|e| open_error(e.to_string()))?;
    match mode {
        OpenMode::Write => migrate(&mut conn, &shown).await?,
        OpenMode::Existing | OpenMode::Read => check_schema(&mut conn, &shown).await?,
    }
    Ok(conn)
}

/// Creates the spool's directory (mode 0700) and file (mode 0600) when missing, and takes
/// group and other permissions away from an existing spool file and its WAL files: queued
/// bodies are cron output and application mail that other local users must not read. SQLite
/// gives its WAL files the database file's mode.
fn create_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    // Only a file that does not exist yet is opened here. Closing any descriptor of a file
    // drops every POSIX lock this process holds on it, SQLite's included (see "How To Corrupt
    // An SQLite Database File", 2.2.1): opening the spool again while a connection of ours has
    // it open would let another process checkpoint and remove the WAL under us.
    if !path.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => give_to_directory_owner(path)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(file = %file.display(), "spool file was readable by other users; made it 0600")
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "spool file is readable by other users; chmod 600 it")
                }
            }
        }
    }
    Ok(())
}

/// Root's `sendmail` may be the first to create the spool, in a directory the daemon's user
/// owns (the package's /var/spool/smarthost): the file goes to that user, or the daemon could
/// not open it. (SQLite itself gives the -wal and -shm files the database file's owner when it
/// runs as root.)
fn give_to_directory_owner(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owner = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if owner.uid() == 0 {
        return Ok(());
    }
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(owner.uid())),
        Some(nix::unistd::Gid::from_raw(owner.gid())),
    )
    .map_err(|e| {
        format!(
            "cannot give {} to the spool directory's owner: {e}",
            path.display()
        )
    })
}

/// Whether this process may write the spool at `path` (creating it when missing), decided
/// without trying: SQLite opens a file it may not write read-only and fails only at the first
/// write, and the failure would be logged as a spool error.
pub fn writable(path: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    let may_write = |p: &Path| access(p, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.exists() {
        if access(path, AccessFlags::W_OK).is_err() || !may_write(dir) {
            return Err(format!("{} is not writable by this user", path.display()));
        }
        return Ok(());
    }
    // A missing spool is created in its nearest existing ancestor.
    match dir.ancestors().find(|a| a.exists()) {
        Some(existing) if existing.is_dir() && may_write(existing) => Ok(()),
        Some(existing) => Err(format!(
            "{} cannot be created here ({} is not a writable directory)",
            path.display(),
            existing.display()
        )),
        None => Err(format!("{} cannot be created", path.display())),
    }
}

/// WAL with `synchronous=FULL`: a COMMIT has reached the disk when it returns.
pub(super) fn connect_options(
    path: &Path,
    busy_timeout: Duration,
    mode: OpenMode,
) -> SqliteConnectOptions {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(mode == OpenMode::Write)
        .read_only(mode == OpenMode::Read)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
        .disable_statement_logging();
    // WAL is a property of the file once set by a writer. A reader asking for it would write
    // to a file not in WAL mode and fail with "attempt to write a readonly database" instead
    // of saying what the file is.
    match mode {
        OpenMode::Read => options,
        OpenMode::Existing | OpenMode::Write => options.journal_mode(SqliteJournalMode::Wal),
    }
}

async fn migrate(conn: &mut SqliteConnection, path: &str) -> Result<(), SpoolError> {
    refuse_foreign(conn, path).await?;
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

/// Someone else's database at the spool path is never adopted (tables would be added beside
/// its own, and its data taken for nothing) nor read as a spool: a file with tables but
/// without our migration history is refused, naming what it holds.
async fn refuse_foreign(conn: &mut SqliteConnection, path: &str) -> Result<(), SpoolError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| SpoolError::Open {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    if tables.is_empty() || tables.iter().any(|t| t == "_sqlx_migrations") {
        return Ok(());
    }
    Err(SpoolError::Foreign {
        path: path.to_string(),
        tables: tables.join(", "),
    })
}

/// Read-only commands cannot migrate; they refuse a spool whose schema they do not match.
async fn check_schema(conn: &mut SqliteConnection, path: &str) -> Result<(), SpoolError> {
    refuse_foreign(conn, path).await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| SpoolError::Open {
                path: path.to_string(),
                reason: format!("not a smarthost spool ({e})"),
            })?;
    SpoolError::unless_schema_matches(path, found.unwrap_or(0), latest_known())
}

fn latest_known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Closes a connection, reporting nothing: used where the work is already done.
pub(super) async fn close_quietly(conn: SqliteConnection) {
    let _ = conn.close().await;
}
