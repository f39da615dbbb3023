//! `queue stats`: counts and bytes by state, then Postfix's qshape view — pending recipients
//! by domain and by how long their message has waited.

use std::collections::BTreeMap;

use super::{Failure, print_json};
use crate::spool::{QueueAdmin, QueueStats, now_ms};

/// qshape's buckets, in minutes: 0-5, 5-10, 10-20, 20-40, 40-80, 80-160, 160+.
const BUCKET_LIMITS_MIN: [i64; 6] = [5, 10, 20, 40, 80, 160];
const BUCKET_NAMES: [&str; 7] = [
    "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+",
];

pub async fn run(queue: &impl QueueAdmin, json: bool) -> Result<(), Failure> {
    let stats = queue.stats().await?;
    let shape = shape(&stats, now_ms());
    if json {
        let domains: BTreeMap<&String, BTreeMap<&str, i64>> = shape
            .iter()
            .map(|(domain, counts)| {
                (
                    domain,
                    BUCKET_NAMES
                        .iter()
                        .copied()
                        .zip(counts.iter().copied())
                        .collect(),
                )
            })
            .collect();
        return print_json(&serde_json::json!({ "stats": stats, "shape": domains }));
    }
    print!("{}", render(&stats, &shape));
    Ok(())
}

/// Pending recipients per domain per age bucket; the "TOTAL" row first.
fn shape(stats: &QueueStats, now: i64) -> BTreeMap<String, [i64; 7]> {
    let mut shape: BTreeMap<String, [i64; 7]> = BTreeMap::from([("TOTAL".to_string(), [0; 7])]);
    for (domain, received) in &stats.pending_recipients {
        let minutes = (now - received).max(0) / 60_000;
        let bucket = BUCKET_LIMITS_MIN
            .iter()
            .position(|&limit| minutes < limit)
            .unwrap_or(6);
        shape.entry(domain.clone()).or_insert([0; 7])[bucket] += 1;
        shape.entry("TOTAL".into()).or_insert([0; 7])[bucket] += 1;
    }
    shape
}

fn render(stats: &QueueStats, shape: &BTreeMap<String, [i64; 7]>) -> String {
    let mut out = format!(
        "{:<10} {:>10} {:>10} {:>12}\n",
        "STATE", "MESSAGES", "RECIPIENTS", "BYTES"
    );
    for (state, count) in &stats.states {
        out.push_str(&format!(
            "{state:<10} {:>10} {:>10} {:>12}\n",
            count.messages, count.recipients, count.bytes
        ));
    }
    out.push_str(&format!(
        "pending: {} message(s), {} bytes\n\n",
        stats.pending_messages, stats.pending_bytes
    ));
    out.push_str(&format!("{:<30} {:>6}", "DOMAIN", "T"));
    for name in BUCKET_NAMES {
        out.push_str(&format!(" {name:>7}"));
    }
    out.push('\n');
    let rows = shape
        .get_key_value("TOTAL")
        .into_iter()
        .chain(shape.iter().filter(|(d, _)| *d != "TOTAL"));
    for (domain, counts) in rows {
        out.push_str(&format!("{domain:<30} {:>6}", counts.iter().sum::<i64>()));
        for count in counts {
            out.push_str(&format!(" {count:>7}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_fall_into_qshape_buckets() {
        let now = 10_000_000_000;
        let minutes = |m: i64| now - m * 60_000;
        let stats = QueueStats {
            pending_recipients: vec![
                ("a.example".into(), minutes(1)),
                ("a.example".into(), minutes(7)),
                ("b.example".into(), minutes(30)),
                ("b.example".into(), minutes(500)),
            ],
            ..QueueStats::default()
        };
        let shape = shape(&stats, now);
        assert_eq!(shape["a.example"], [1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(shape["b.example"], [0, 0, 0, 1, 0, 0, 1]);
        assert_eq!(shape["TOTAL"], [1, 1, 0, 1, 0, 0, 1]);
        let text = render(&stats, &shape);
        let total = text.lines().find(|l| l.starts_with("TOTAL")).unwrap();
        assert!(
            total
                .split_whitespace()
                .eq(["TOTAL", "4", "1", "1", "0", "1", "0", "0", "1"]),
            "{total}"
        );
    }
}
