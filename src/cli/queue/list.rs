//! `queue list`: one block per message — ID, arrival, age, size, sender — and a line per
//! recipient with its state, attempts, next attempt and the last reply.

use std::time::Duration;

use super::{Failure, StateArg, age, print_json, time};
use crate::spool::{Filter, MessageSummary, QueueAdmin, now_ms};

/// Replies longer than this are cut in the table (`queue show` has them whole).
const REPLY_WIDTH: usize = 70;

pub async fn run(
    queue: &impl QueueAdmin,
    state: StateArg,
    sender: Option<String>,
    recipient: Option<String>,
    older_than: Option<Duration>,
    original: bool,
    json: bool,
) -> Result<(), Failure> {
    let now = now_ms();
    let filter = Filter {
        states: state.states(),
        sender,
        recipient,
        received_before_ms: older_than.map(|d| now - d.as_millis() as i64),
    };
    let messages = queue.list(&filter).await?;
    if json {
        return print_json(&serde_json::json!({ "messages": messages }));
    }
    print!("{}", render(&messages, original, now));
    Ok(())
}

fn render(messages: &[MessageSummary], original: bool, now: i64) -> String {
    if messages.is_empty() {
        return "No messages match.\n".into();
    }
    let mut out = format!(
        "{:<16} {:<19}  {:>6} {:>8}  SENDER\n",
        "ID", "ARRIVED (UTC)", "AGE", "SIZE"
    );
    for message in messages {
        let sender = if original {
            &message.original_sender
        } else {
            &message.sender
        };
        let sender = if sender.is_empty() { "<>" } else { sender };
        out.push_str(&format!(
            "{:<16} {:<19}  {:>6} {:>8}  {sender}\n",
            message.id,
            time(message.received_at_ms),
            age(now - message.received_at_ms),
            message.size
        ));
        for r in &message.recipients {
            let address = if original {
                &r.original_address
            } else {
                &r.address
            };
            let next = match r.state.as_str() {
                "queued" | "deferred" => format!(" next {}", time(r.next_attempt_at_ms)),
                "held" => format!(" (by {})", r.held_by.as_deref().unwrap_or("operator")),
                _ => String::new(),
            };
            let reply: String = r
                .last_reply
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(REPLY_WIDTH)
                .collect();
            out.push_str(&format!(
                "    {:<9} {address}  attempts {}{next}{}\n",
                r.state,
                r.attempts,
                if reply.is_empty() {
                    String::new()
                } else {
                    format!("  {reply}")
                }
            ));
        }
    }
    out.push_str(&format!("-- {} message(s)\n", messages.len()));
    out
}
