//! `queue retry | hold | release | delete`: change what the daemon will do next. Each prints
//! what it changed, so a script's log shows it too.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use sqlx::SqliteConnection;

use super::{Failure, StateArg, resolve};
use crate::spool::{self, Filter, Selection, now_ms};
use crate::sysexits as exit;

pub async fn retry(
    conn: &mut SqliteConnection,
    ids: Vec<String>,
    all: bool,
    deferred: bool,
) -> Result<(), Failure> {
    let selection = match (all, deferred) {
        (true, _) => Selection::All,
        (false, true) => Selection::State {
            state: "deferred".into(),
            received_before_ms: None,
        },
        (false, false) if ids.is_empty() => {
            return Err(Failure::new(
                exit::USAGE,
                "name message IDs, or use --all or --deferred",
            ));
        }
        (false, false) => Selection::Ids(resolve(&mut *conn, &ids).await?),
    };
    let count = spool::retry(conn, &selection).await?;
    println!(
        "{count} recipient(s) due now; the running daemon picks them up within its poll interval"
    );
    Ok(())
}

pub async fn hold(conn: &mut SqliteConnection, ids: Vec<String>) -> Result<(), Failure> {
    let ids = resolve(&mut *conn, &ids).await?;
    let count = spool::hold(conn, &Selection::Ids(ids.clone())).await?;
    println!("held {count} recipient(s) of {}", ids.join(", "));
    Ok(())
}

pub async fn release(conn: &mut SqliteConnection, ids: Vec<String>) -> Result<(), Failure> {
    let ids = resolve(&mut *conn, &ids).await?;
    let count = spool::release(conn, &Selection::Ids(ids.clone())).await?;
    println!("released {count} recipient(s) of {}", ids.join(", "));
    Ok(())
}

pub async fn delete(
    conn: &mut SqliteConnection,
    ids: Vec<String>,
    state: Option<StateArg>,
    older_than: Option<Duration>,
    yes: bool,
) -> Result<(), Failure> {
    let ids = if !ids.is_empty() {
        resolve(&mut *conn, &ids).await?
    } else if state.is_some() || older_than.is_some() {
        let filter = Filter {
            states: state.unwrap_or(StateArg::All).states(),
            received_before_ms: older_than.map(|d| now_ms() - d.as_millis() as i64),
            ..Filter::default()
        };
        spool::list(&mut *conn, &filter)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect()
    } else {
        return Err(Failure::new(
            exit::USAGE,
            "name message IDs, or use --state or --older-than",
        ));
    };
    if ids.is_empty() {
        println!("nothing to delete");
        return Ok(());
    }
    if !yes && std::io::stdin().is_terminal() && !confirm(ids.len())? {
        println!("nothing deleted");
        return Ok(());
    }
    let deleted = spool::delete(conn, &Selection::Ids(ids)).await?;
    for id in &deleted {
        println!("deleted {id}");
    }
    println!("{} message(s) deleted", deleted.len());
    Ok(())
}

fn confirm(count: usize) -> Result<bool, Failure> {
    print!("Delete {count} message(s)? This cannot be undone. [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
