//! `queue retry | hold | release | delete`: change what the daemon will do next. Each prints
//! what it changed, so a script's log shows it too.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use super::{Failure, StateArg, resolve};
use crate::spool::{Filter, QueueAdmin, Selection, now_ms};
use crate::sysexits as exit;

pub async fn retry(
    queue: &impl QueueAdmin,
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
        (false, false) => Selection::Ids(resolve(queue, &ids).await?),
    };
    let count = queue.retry(&selection).await?;
    println!(
        "{count} recipient(s) due now; the running daemon picks them up within its poll interval"
    );
    Ok(())
}

pub async fn hold(queue: &impl QueueAdmin, ids: Vec<String>) -> Result<(), Failure> {
    let ids = resolve(queue, &ids).await?;
    let count = queue.hold(&Selection::Ids(ids.clone())).await?;
    println!("held {count} recipient(s) of {}", ids.join(", "));
    Ok(())
}

pub async fn release(queue: &impl QueueAdmin, ids: Vec<String>) -> Result<(), Failure> {
    let ids = resolve(queue, &ids).await?;
    let count = queue.release(&Selection::Ids(ids.clone())).await?;
    println!("released {count} recipient(s) of {}", ids.join(", "));
    Ok(())
}

pub async fn delete(
    queue: &impl QueueAdmin,
    ids: Vec<String>,
    state: Option<StateArg>,
    older_than: Option<Duration>,
    yes: bool,
) -> Result<(), Failure> {
    let ids = if !ids.is_empty() {
        resolve(queue, &ids).await?
    } else if state.is_some() || older_than.is_some() {
        let filter = Filter {
            states: state.unwrap_or(StateArg::All).states(),
            received_before_ms: older_than.map(|d| now_ms() - d.as_millis() as i64),
            ..Filter::default()
        };
        queue
            .list(&filter)
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
    let deleted = queue.delete(&Selection::Ids(ids)).await?;
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
