//! Several relays sharing one queue on a real PostgreSQL (a server of the test's own): a dead
//! or paused relay strands nothing and cannot overwrite another's work, an unreachable store
//! costs clients a 4xx and nothing acknowledged, the send rate is the fleet's, and `sendmail`
//! survives the store and the daemon being down.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};

use crate::postgres::Postgres;
use crate::support::*;
use crate::upstream::*;

const WAIT: Duration = Duration::from_secs(60);

/// A relay's workdir on the shared store `pg`, delivering to `upstream` over STARTTLS.
fn node_workdir(pg: &Postgres, certs: &Certs, upstream: &Upstream, delivery: &str) -> Workdir {
    delivering_workdir_on(
        Store::Postgres(pg),
        certs,
        upstream.starttls,
        "starttls",
        "",
        delivery,
    )
}

/// Two nodes' workdirs on `pg`, alike.
fn two_workdirs(
    pg: &Postgres,
    certs: &Certs,
    upstream: &Upstream,
    delivery: &str,
) -> (Workdir, Workdir) {
    (
        node_workdir(pg, certs, upstream, delivery),
        node_workdir(pg, certs, upstream, delivery),
    )
}

/// Starts relays on every workdir at once (their migrations race, as nodes booting together
/// do), and the node identity each logged.
fn start_nodes(works: &[&Workdir]) -> Vec<(Relay, String)> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = works
            .iter()
            .map(|work| scope.spawn(|| Relay::start(work)))
            .collect();
        starting
            .into_iter()
            .map(|handle| {
                let relay = handle.join().expect("relay start");
                let joined = relay.wait_for_log(&["joined the shared spool"]);
                let node = joined["node"].as_str().expect("node identity").to_string();
                (relay, node)
            })
            .collect()
    })
}

/// `smtp_load.py`: `clients` connections × `messages` each; the acknowledged queue IDs.
fn load(port: u16, clients: usize, messages: usize) -> Vec<String> {
    let child = Command::new("python3")
        .args([
            &peer("smtp_load.py"),
            &port.to_string(),
            &clients.to_string(),
            &messages.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let output = wait_output(child, Duration::from_secs(300));
    let result: Value = serde_json::from_slice(&output.stdout).expect("smtp_load.py JSON");
    assert_eq!(result["failures"], json!([]), "every message accepted");
    ids(&result["ids"])
}

fn ids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// The queue ID in our Received header of each message the upstream received.
fn received_ids(upstream: &Upstream) -> Vec<String> {
    upstream
        .received()
        .iter()
        .map(|message| {
            let body = String::from_utf8_lossy(&data(message)).to_string();
            let after = body.split_once(" id ").expect("our Received header").1;
            after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .collect()
}

/// Recipients in the shared store in `state`.
fn count_in(pg: &Postgres, state: &str) -> usize {
    pg.psql(&format!(
        "SELECT count(*) FROM recipients WHERE state = '{state}'"
    ))
    .parse()
    .unwrap()
}

fn counter(pg: &Postgres, name: &str) -> i64 {
    pg.psql(&format!("SELECT value FROM counters WHERE name = '{name}'"))
        .parse()
        .unwrap()
}

#[test]
fn a_killed_relay_strands_nothing_and_its_leases_are_taken_over() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    // Slow enough that each node has mail in flight when one dies.
    upstream.script(json!({"delay_ms": 20}));
    let delivery = "connections = 4\nlease = \"4s\"\n";
    let (work_a, work_b) = two_workdirs(&pg, &certs, &upstream, delivery);
    let mut nodes = start_nodes(&[&work_a, &work_b]);
    let (relay_b, _) = nodes.pop().unwrap();
    let (relay_a, node_a) = nodes.pop().unwrap();

    let (port_a, port_b) = (relay_a.port(), relay_b.port());
    let (acked_a, acked_b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| load(port_a, 10, 100));
        let b = scope.spawn(|| load(port_b, 10, 100));
        (a.join().unwrap(), b.join().unwrap())
    });
    let acked: HashSet<String> = acked_a.into_iter().chain(acked_b).collect();
    assert_eq!(acked.len(), 2000);
    wait_until(WAIT, "deliveries under way", || {
        (upstream.received().len() >= 200).then_some(())
    });
    let now_ms = chrono::Utc::now().timestamp_millis();
    let in_flight: usize = pg
        .psql(&format!(
            "SELECT count(*) FROM recipients WHERE lease_owner = '{node_a}' AND lease_until >= {now_ms}"
        ))
        .parse()
        .unwrap();
    let killed_at = Instant::now();
    relay_a.kill9();

    wait_until(WAIT, "every acknowledged message delivered", || {
        (count_in(&pg, "delivered") == 2000).then_some(())
    });
    let drained = killed_at.elapsed();
    let received = received_ids(&upstream);
    let unique: HashSet<&String> = received.iter().collect();
    let duplicates = received.len() - unique.len();
    eprintln!(
        "kill -9 of one of two nodes: A had {in_flight} in flight; all 2000 delivered {drained:?} after; {duplicates} duplicate(s)"
    );
    assert!(acked.iter().all(|id| unique.contains(id)), "none lost");
    assert!(
        duplicates <= in_flight,
        "duplicates ({duplicates}) at most the dead node's in-flight count ({in_flight})"
    );

    // The operator's view: the dead node went silent, and its leases were taken over.
    let listed = queue_json_of(&work_b, &["nodes"]);
    let dead = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node_a.as_str())
        .expect("the dead node is listed")
        .clone();
    assert_eq!(dead["in_flight"], 0, "{dead}");
    if in_flight > 0 {
        assert!(dead["leases_reclaimed"].as_i64().unwrap() > 0, "{dead}");
    }
    let table = String::from_utf8(
        work_b
            .run(std::path::Path::new(BIN), &["queue", "nodes"], b"")
            .stdout,
    )
    .unwrap();
    assert!(
        table.contains(&node_a) && table.contains("RECLAIMED"),
        "{table}"
    );
    drop(relay_b);
}

#[test]
fn a_paused_relay_cannot_record_outcomes_for_mail_another_took_over() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    // Each DATA takes 1.5 s to answer: node A is waiting for its replies when it is paused.
    upstream.script(json!({"delay_ms": 1500}));
    let delivery = "connections = 5\nlease = \"3s\"\n";
    let (work_a, work_b) = two_workdirs(&pg, &certs, &upstream, delivery);
    let mut nodes = start_nodes(&[&work_a, &work_b]);
    let (relay_b, _) = nodes.pop().unwrap();
    let (relay_a, _) = nodes.pop().unwrap();
    let acked = load(relay_a.port(), 5, 1);
    std::thread::sleep(Duration::from_millis(500));
    kill(relay_a.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    // Past A's lease, B takes the mail over and delivers it.
    wait_until(Duration::from_secs(30), "B delivered everything", || {
        (count_in(&pg, "delivered") == 5).then_some(())
    });
    kill(relay_a.pid(), Signal::SIGCONT).expect("SIGCONT");
    // A wakes to its upstream's late 250s and tries to record them.
    wait_until(Duration::from_secs(20), "A's late outcomes refused", || {
        (counter(&pg, "stale_outcomes") >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let twice = pg.psql(
        "SELECT count(*) FROM (SELECT recipient_id FROM attempts WHERE outcome = 'delivered'
         GROUP BY recipient_id HAVING count(*) > 1) AS twice",
    );
    assert_eq!(twice, "0", "no recipient is marked delivered twice");
    assert_eq!(count_in(&pg, "delivered"), 5);
    let received = received_ids(&upstream);
    let unique: HashSet<&String> = received.iter().collect();
    eprintln!(
        "paused node: upstream received {} message(s) for 5 acknowledged ({} stale outcome(s) refused)",
        received.len(),
        counter(&pg, "stale_outcomes")
    );
    assert!(acked.iter().all(|id| unique.contains(id)));
    assert!(received.len() <= 10, "at most A's 5 in flight twice");
    drop((relay_a, relay_b));
}

#[test]
fn store_down_for_ten_seconds_costs_4xx_and_nothing_acknowledged() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let delivery = "lease = \"5s\"\n";
    let (work_a, work_b) = two_workdirs(&pg, &certs, &upstream, delivery);
    let nodes = start_nodes(&[&work_a, &work_b]);
    let pids: Vec<_> = nodes.iter().map(|(relay, _)| relay.pid()).collect();
    let steady = |port: u16| {
        Command::new("python3")
            .args([&peer("smtp_steady.py"), &port.to_string(), "3", "16"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3")
    };
    let clients: Vec<_> = nodes
        .iter()
        .map(|(relay, _)| steady(relay.port()))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    pg.stop();
    std::thread::sleep(Duration::from_secs(10));
    pg.start_server();
    let results: Vec<Value> = clients
        .into_iter()
        .map(|child| {
            let output = wait_output(child, Duration::from_secs(120));
            serde_json::from_slice(&output.stdout).expect("smtp_steady.py JSON")
        })
        .collect();
    let acked: Vec<String> = results.iter().flat_map(|r| ids(&r["ids"])).collect();
    let refusals: Vec<i64> = results
        .iter()
        .flat_map(|r| r["refusals"].as_array().unwrap().clone())
        .map(|code| code.as_i64().unwrap())
        .collect();
    eprintln!(
        "store down 10 s: {} acknowledged, {} refused ({:?}), connection errors {:?}",
        acked.len(),
        refusals.len(),
        refusals.iter().collect::<HashSet<_>>(),
        results
            .iter()
            .map(|r| r["errors"].clone())
            .collect::<Vec<_>>()
    );
    assert!(!refusals.is_empty(), "clients heard the outage");
    assert!(
        refusals.iter().all(|code| (400..500).contains(code)),
        "only temporary refusals: {refusals:?}"
    );
    for pid in &pids {
        assert!(
            kill(*pid, None).is_ok(),
            "the relays ran on without a restart"
        );
    }
    wait_until(WAIT, "every acknowledged message delivered", || {
        let received: HashSet<String> = received_ids(&upstream).into_iter().collect();
        acked.iter().all(|id| received.contains(id)).then_some(())
    });
    // And they accept again.
    assert_eq!(load(nodes[0].0.port(), 1, 3).len(), 3);
}

#[test]
fn two_nodes_keep_to_one_send_rate() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let works: Vec<Workdir> = (0..2)
        .map(|_| {
            let work = Workdir::on(Store::Postgres(&pg), "");
            let password = password_file(work.dir.path(), PASSWORD);
            let table = upstream_table(upstream.starttls, "starttls", &password, Some(&certs.ca()))
                + "max_messages_per_second = 10\n";
            work.write_config(&format!(
                "hostname = \"relay.test\"\n{}",
                delivery_config(&[table], "")
            ));
            work
        })
        .collect();
    let nodes = start_nodes(&[&works[0], &works[1]]);
    std::thread::scope(|scope| {
        for (relay, _) in &nodes {
            scope.spawn(|| load(relay.port(), 1, 50));
        }
    });
    let received = upstream.wait_for(100, Duration::from_secs(40));
    let mut times: Vec<f64> = received
        .iter()
        .map(|m| m["received_at"].as_f64().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    let spread = Duration::from_secs_f64(times[99] - times[0]);
    eprintln!("100 messages from two nodes capped at 10/s together: {spread:?} first to last");
    // 100 at 10/s: 9.9 s from the first slot to the last; each node alone would take 4.9 s.
    assert!(spread >= Duration::from_secs(9), "{spread:?}");
}

#[test]
fn retry_on_one_node_wakes_the_fleet_within_a_second() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    upstream.script(json!({"rcpt": {"ops@example.com": ["451 4.3.0 mailbox busy"]}}));
    // Without the store's notification the nodes would look again in 30 s.
    let delivery = "poll_interval = \"30s\"\nretry_initial = \"1h\"\nretry_max = \"2h\"\n";
    let (work_a, work_b) = two_workdirs(&pg, &certs, &upstream, delivery);
    let nodes = start_nodes(&[&work_a, &work_b]);
    let result = smtplib_send(
        nodes[0].0.port(),
        "app@example.com",
        &["ops@example.com"],
        b"Subject: retry me\r\n\r\nbody\r\n",
        &[],
    );
    let id = queue_id(result["data"][1].as_str().unwrap());
    let attempts = |work: &Workdir| {
        queue_json_of(work, &["show", &id])["attempts"]
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_until(Duration::from_secs(20), "first attempt deferred", || {
        (attempts(&work_b) == 1).then_some(())
    });
    upstream.script(json!({}));
    let started = Instant::now();
    let retried = work_b.run(std::path::Path::new(BIN), &["queue", "retry", &id], b"");
    assert!(retried.status.success());
    wait_until(Duration::from_secs(10), "delivered after the retry", || {
        (upstream.received().len() == 1).then_some(())
    });
    let reacted = started.elapsed();
    eprintln!("queue retry on the shared store to delivery: {reacted:?}");
    assert!(reacted < Duration::from_millis(1500), "{reacted:?}");
    drop(nodes);
}

#[test]
fn sendmail_with_daemon_and_store_down_exits_0_and_is_delivered_once() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = node_workdir(&pg, &certs, &upstream, "");
    // A first start creates the schema (and the maildrop), then everything goes down.
    let relay = Relay::start(&work);
    assert!(relay.terminate(Duration::from_secs(20)).success());
    pg.stop();

    let sendmail = work.link("sendmail");
    let sent = work.run(
        &sendmail,
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "ops@example.com",
        ],
        b"Subject: cron while everything is down\r\n\r\nbody\r\n",
    );
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    pg.start_server();
    let relay = Relay::start(&work);
    upstream.wait_for(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(upstream.received().len(), 1, "delivered exactly once");
    assert_eq!(count_in(&pg, "delivered"), 1);
    assert!(
        queued_ids(&work.spool()).is_empty(),
        "the maildrop handed it over"
    );
    drop(relay);
}

#[test]
fn metrics_name_the_node_and_healthz_follows_the_store() {
    let pg = Postgres::start();
    let certs = Certs::new();
    let upstream = Upstream::start(&certs);
    let work = delivering_workdir_on(
        Store::Postgres(&pg),
        &certs,
        upstream.starttls,
        "starttls",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let (relay, node) = start_nodes(&[&work]).pop().unwrap();
    let address = relay.wait_for_log(&["metrics listening"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    load(relay.port(), 1, 3);
    upstream.wait_for(3, WAIT);
    let scraped = wait_until(WAIT, "the shared queue's gauge", || {
        let scraped = scrape(&address);
        (sample(
            &scraped,
            "smarthost_queue_recipients",
            &[("state", "delivered")],
        ) == Some(3.0))
        .then_some(scraped)
    });
    assert_eq!(
        sample(&scraped, "smarthost_node_info", &[("node", &node)]),
        Some(1.0)
    );
    assert_eq!(scraped["healthz_status"], 200);

    // A load balancer's health check turns this relay away while its store is gone.
    pg.stop();
    let down = scrape(&address);
    assert_eq!(down["healthz_status"], 503, "{}", down["healthz"]);
    assert!(down["healthz"].as_str().unwrap().contains("unreachable"));
    pg.start_server();
    wait_until(WAIT, "healthy again", || {
        (scrape(&address)["healthz_status"] == 200).then_some(())
    });
}
