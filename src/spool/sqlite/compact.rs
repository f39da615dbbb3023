//! Handing the pages freed by a delete back to the file system. SQLite keeps freed pages in
//! the file for reuse; on a full disk an operator deletes mail to get space back, so after
//! `queue delete` the spool is shrunk — a few pages at a time, each step checkpointed and the
//! WAL truncated, so the WAL never needs more room than the spool's reserve holds.

use sqlx::SqliteConnection;

/// Pages released per step (1 MiB at the default page size).
const STEP_PAGES: i64 = 256;
/// `PRAGMA auto_vacuum` value for incremental mode.
const INCREMENTAL: i64 = 2;

pub(super) async fn give_freed_pages_back(conn: &mut SqliteConnection) {
    let Ok(mode) = pragma(conn, "PRAGMA auto_vacuum").await else {
        return;
    };
    if mode != INCREMENTAL {
        // A spool made before incremental auto-vacuum: its freed pages hold new mail instead.
        return;
    }
    let Ok(free) = pragma(conn, "PRAGMA freelist_count").await else {
        return;
    };
    // Bounded: each step frees STEP_PAGES, or there is nothing left to free.
    for _ in 0..free / STEP_PAGES + 2 {
        if let Err(error) = step(conn).await {
            tracing::warn!(%error, "could not hand all freed spool pages back to the file system; new mail will reuse them");
            return;
        }
        if pragma(conn, "PRAGMA freelist_count").await.unwrap_or(0) == 0 {
            return;
        }
    }
}

async fn step(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA incremental_vacuum({STEP_PAGES})"
    )))
    .execute(&mut *conn)
    .await?;
    // TRUNCATE: copy the step into the file, cut the file to its new size, and empty the WAL.
    // With other connections reading (a running `serve`), the checkpoint may stop short;
    // their next checkpoint finishes it.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn pragma(conn: &mut SqliteConnection, sql: &'static str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).fetch_one(conn).await
}
