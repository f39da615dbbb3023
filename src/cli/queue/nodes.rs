//! `queue nodes`: the relays sharing a PostgreSQL spool, with their last heartbeat and what
//! each has in flight — which one is live, which stopped cleanly, which went silent (dead,
//! paused or cut off; its leases run out and the others take its mail over).

use std::time::Duration;

use super::{Failure, age, print_json, time};
use crate::spool::{NodeSummary, StoreQueue, now_ms};
use crate::sysexits as exit;

pub async fn run(queue: &StoreQueue, within: Duration, json: bool) -> Result<(), Failure> {
    let Some(nodes) = queue.nodes(within).await? else {
        return Err(Failure::new(
            exit::USAGE,
            "this spool is a SQLite file with one node; `queue nodes` lists the relays sharing a PostgreSQL spool (spool.url)",
        ));
    };
    if json {
        return print_json(&serde_json::json!({ "nodes": nodes }));
    }
    print!("{}", render(&nodes, now_ms()));
    Ok(())
}

fn render(nodes: &[NodeSummary], now: i64) -> String {
    let mut out = format!(
        "{:<32} {:<8} {:<20} {:>10} {:>9} {:>10}\n",
        "NODE", "STATUS", "STARTED", "HEARTBEAT", "IN FLIGHT", "RECLAIMED"
    );
    for node in nodes {
        out.push_str(&format!(
            "{:<32} {:<8} {:<20} {:>10} {:>9} {:>10}\n",
            node.id,
            node.status,
            time(node.started_at_ms),
            format!("{} ago", age(now - node.heartbeat_at_ms)),
            node.in_flight,
            node.leases_reclaimed,
        ));
    }
    if nodes.is_empty() {
        out.push_str("(no node heard from in that time)\n");
    }
    out
}
