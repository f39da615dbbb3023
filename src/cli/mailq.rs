//! `mailq` / `sendmail -bp` / `smarthost mailq`: the queue in Postfix's familiar layout.
//! Reads the spool without creating or changing it.

use std::fmt::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::spool::{Filter, MessageSummary, OpenMode, PENDING_STATES, QueueAdmin, StoreQueue};
use crate::sysexits as exit;

pub fn run(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mailq: cannot start the runtime: {error}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let entries = runtime.block_on(async {
        let queue = StoreQueue::open(&config.spool, OpenMode::Read).await?;
        let pending = Filter {
            states: PENDING_STATES.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        queue.list(&pending).await
    });
    match entries {
        Ok(entries) => {
            print!("{}", render(&entries));
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            eprintln!("mailq: {error}");
            ExitCode::from(exit::NOINPUT)
        }
    }
}

/// Postfix's layout: a header, one block per message (ID with `!` when held, size, arrival,
/// sender; then the last reply in parentheses and each recipient), and a summary line.
pub fn render(entries: &[MessageSummary]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:<20} -Sender/Recipient-------",
        "-Queue ID-", "--Size--", "----Arrival Time----"
    );
    let mut total_bytes: i64 = 0;
    for entry in entries {
        total_bytes += entry.size;
        let held = entry.recipients.iter().all(|r| r.state == "held");
        let marker = if held { "!" } else { " " };
        let arrival = DateTime::<Utc>::from_timestamp_millis(entry.received_at_ms)
            .map(|t| t.format("%a %b %e %H:%M:%S").to_string())
            .unwrap_or_default();
        let sender = if entry.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &entry.sender
        };
        let _ = writeln!(
            out,
            "{:<15}{marker} {:>8} {:<20} {sender}",
            entry.id, entry.size, arrival
        );
        let mut last_reason: Option<&str> = None;
        let pending = entry
            .recipients
            .iter()
            .filter(|r| PENDING_STATES.contains(&r.state.as_str()));
        for recipient in pending {
            if let Some(reason) = recipient.last_reply.as_deref()
                && last_reason != Some(reason)
            {
                let _ = writeln!(out, "{:47}({reason})", "");
                last_reason = Some(reason);
            }
            let _ = writeln!(out, "{:47}{}", "", recipient.address);
        }
        out.push('\n');
    }
    let kbytes = (total_bytes + 1023) / 1024;
    let requests = entries.len();
    let noun = if requests == 1 { "Request" } else { "Requests" };
    let _ = writeln!(out, "-- {kbytes} Kbytes in {requests} {noun}.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::RecipientSummary;

    fn recipient(address: &str, state: &str, last_reply: Option<&str>) -> RecipientSummary {
        RecipientSummary {
            address: address.into(),
            original_address: address.into(),
            state: state.into(),
            attempts: 1,
            next_attempt_at_ms: 0,
            last_reply: last_reply.map(String::from),
            held_by: None,
        }
    }

    #[test]
    fn layout_matches_postfix() {
        assert_eq!(render(&[]), "Mail queue is empty\n");
        let entries = vec![MessageSummary {
            id: "0PQ8ZK3J5N2A7XQ".into(),
            received_at_ms: 1_795_000_000_000,
            size: 2048,
            sender: "root@host.example".into(),
            original_sender: "root@host.example".into(),
            recipients: vec![
                recipient("ops@example.com", "deferred", Some("451 4.3.0 try later")),
                recipient("dev@example.com", "queued", None),
                recipient("done@example.com", "delivered", Some("250 ok")),
            ],
        }];
        let text = render(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("-Queue ID-"));
        assert!(
            lines[1].starts_with("0PQ8ZK3J5N2A7XQ      2048 "),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(" root@host.example"));
        assert_eq!(lines[2].trim(), "(451 4.3.0 try later)");
        assert_eq!(lines[3].trim(), "ops@example.com");
        assert_eq!(lines[4].trim(), "dev@example.com");
        assert_eq!(lines.last().unwrap(), &"-- 2 Kbytes in 1 Request.");
    }
}
