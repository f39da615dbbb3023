//! `queue show ID`: the envelope as it arrived and as it will be sent, what the rewrite stage
//! changed, every recipient's state, the full attempt history, and the headers (or the whole
//! message with --body). No credentials are stored, so none can be shown.

use super::{Failure, age, print_json, resolve, time};
use crate::spool::{MessageDetails, QueueAdmin, now_ms};
use crate::sysexits as exit;

pub async fn run(
    queue: &impl QueueAdmin,
    typed: &str,
    body: bool,
    json: bool,
) -> Result<(), Failure> {
    let id = resolve(queue, &[typed.to_string()]).await?.remove(0);
    let details = queue
        .details(&id)
        .await?
        .ok_or_else(|| Failure::new(exit::DATAERR, format!("no message with ID {id}")))?;
    if json {
        let mut value = serde_json::to_value(&details)
            .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
        if let (true, Some(message)) = (body, &details.body) {
            value["body"] = serde_json::Value::String(String::from_utf8_lossy(message).to_string());
        }
        return print_json(&value);
    }
    print!("{}", render(&details));
    if body {
        match &details.body {
            Some(message) => print!("\n{}", String::from_utf8_lossy(message)),
            None => println!("\n(body removed: nothing is left to deliver)"),
        }
    }
    Ok(())
}

fn render(d: &MessageDetails) -> String {
    let m = &d.summary;
    let null = |s: &str| {
        if s.is_empty() {
            "<>".to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    out.push_str(&format!("Queue ID:   {}\n", m.id));
    out.push_str(&format!(
        "Arrived:    {} UTC ({} ago)\n",
        time(m.received_at_ms),
        age(now_ms() - m.received_at_ms)
    ));
    out.push_str(&format!(
        "Size:       {} bytes, {}{}\n",
        m.size,
        d.body_type,
        if d.smtputf8 { ", SMTPUTF8" } else { "" }
    ));
    match (&d.client_addr, &d.submitter) {
        (Some(client), None) => out.push_str(&format!(
            "From:       {client} (HELO {}), {}\n",
            d.helo.as_deref().unwrap_or("-"),
            d.protocol
        )),
        (Some(client), Some(user)) => out.push_str(&format!(
            "From:       {client} (HELO {}), {}, authenticated as {user}\n",
            d.helo.as_deref().unwrap_or("-"),
            d.protocol
        )),
        (None, Some(user)) => {
            out.push_str(&format!("From:       local user {user} ({})\n", d.protocol))
        }
        (None, None) => out.push_str(&format!("From:       {}\n", d.protocol)),
    }
    out.push_str(&format!("Sender:     {}", null(&m.sender)));
    if m.original_sender != m.sender {
        out.push_str(&format!("  (arrived as {})", null(&m.original_sender)));
    }
    out.push('\n');
    if let Some(finished) = d.finished_at_ms {
        out.push_str(&format!("Finished:   {} UTC\n", time(finished)));
    }
    if !d.rewrites.is_empty() {
        out.push_str("Rewrites:\n");
        for decision in &d.rewrites {
            out.push_str(&format!("  {decision}\n"));
        }
    }
    out.push_str("Recipients:\n");
    for r in &m.recipients {
        let was = if r.original_address != r.address {
            format!(" (arrived as {})", r.original_address)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {}{was}: {}, {} attempt(s)",
            r.address, r.state, r.attempts
        ));
        match r.state.as_str() {
            "queued" | "deferred" => {
                out.push_str(&format!(", next {} UTC", time(r.next_attempt_at_ms)))
            }
            "held" => out.push_str(&format!(
                ", held by {}",
                r.held_by.as_deref().unwrap_or("operator")
            )),
            _ => {}
        }
        out.push('\n');
    }
    if !d.attempts.is_empty() {
        out.push_str("Attempts:\n");
        for a in &d.attempts {
            out.push_str(&format!(
                "  {} UTC  {}  via {}  {} ms  {}: {}\n",
                time(a.started_at_ms),
                a.recipient,
                a.upstream.as_deref().unwrap_or("-"),
                a.duration_ms,
                a.outcome,
                a.reply
            ));
        }
    }
    if !d.headers.is_empty() {
        out.push_str("Headers:\n");
        for line in d.headers.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
