//! Several gateway nodes on one PostgreSQL database: unique order numbers, idempotency across
//! nodes, every order delivered (and not twice in a healthy run), and a node killed with SIGKILL
//! has its deliveries taken over by the survivor once its lease expires.
//!
//! The harness starts a real PostgreSQL server on loopback; without the server binaries these
//! tests fail and say to run `scripts/setup.sh --test`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Gateway, GatewayOptions, PgServer, Receiver, StoreOpt, is_valid_order_id, submit_once,
};

const LEASE_MS: u64 = 2_000;

fn node_options(dir: &Path, node: u8, url: &str, receiver: &Receiver) -> GatewayOptions {
    let mut o = GatewayOptions::new(&dir.join(format!("node{node}")));
    o.node_id = node;
    o.store = StoreOpt::Postgres(url.to_owned());
    o.lease_ms = LEASE_MS;
    o.concurrency = 8;
    // Each node has its own dispatch URL so the receiver can tell (and hold) one node's requests.
    o.dispatch_url = Some(format!("{}?node={node}", receiver.url()));
    o
}

/// Submit with an Idempotency-Key to the first node that answers 202 (trying `bases` in turn).
async fn submit_any(
    client: &reqwest::Client,
    bases: &[String],
    key: &str,
    body: &Value,
) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let bytes = serde_json::to_vec(body).expect("serialize");
    let mut n = 0usize;
    loop {
        assert!(Instant::now() < deadline, "submission {key} never answered");
        let which = n % bases.len();
        n += 1;
        if let Some(v) = submit_once(client, &bases[which], key, &bytes).await {
            return (which, v["order_id"].as_str().expect("order_id").to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_of(id: &str) -> &str {
    &id[6..8]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_the_work_and_survive_a_killed_node() {
    let pg = PgServer::start();
    let url = pg.create_db("gateway").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let n1 = Gateway::start(node_options(dir.path(), 1, &url, &receiver)).await;
    let mut n2 = Gateway::start(node_options(dir.path(), 2, &url, &receiver)).await;
    let bases = [n1.base(), n2.base()];

    // The same Idempotency-Key sent to both nodes at once is one order.
    let shared = json!({"text": "两个节点同时收到的同一件事"});
    let (a, b) = tokio::join!(
        n1.submit(&shared, Some("shared-key")),
        n2.submit(&shared, Some("shared-key"))
    );
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(b.status, 202, "{}", b.text);
    assert_eq!(
        a.body["order_id"], b.body["order_id"],
        "one key, two orders"
    );
    let shared_id = a.body["order_id"].as_str().expect("id").to_owned();

    // Phase 1: both nodes take submissions concurrently.
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let base = vec![bases[c % 2].clone()];
        tasks.push(tokio::spawn(async move {
            let client = support::http_client();
            let mut out = Vec::new();
            for i in 0..25 {
                let key = format!("pg-{c}-{i}");
                let body = json!({"text": format!("积水 {key}")});
                let (_, id) = submit_any(&client, &base, &key, &body).await;
                out.push((c % 2 + 1, id));
            }
            out
        }));
    }
    let mut ids = vec![shared_id.clone()];
    for t in tasks {
        for (node, id) in t.await.expect("client task") {
            assert!(is_valid_order_id(&id), "{id}");
            assert_eq!(
                node_of(&id),
                format!("{node:02}"),
                "order {id} from node {node}"
            );
            ids.push(id);
        }
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "order numbers are not unique across nodes"
    );
    assert!(
        receiver.wait_for_all(&ids, Duration::from_secs(60)).await,
        "not every order was delivered"
    );
    // Let late duplicates (if any) arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = receiver.delivery_counts();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert_eq!(
        duplicates,
        0,
        "healthy nodes delivered orders twice: {:?}",
        counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
    for gw in [&n1, &n2] {
        assert_eq!(
            gw.all_orders(500).await.len(),
            ids.len(),
            "node {} lists",
            gw.opts.node_id
        );
    }

    // Phase 2: node 2's deliveries hang; kill it while it holds leases and submissions are in
    // flight. Clients fall back to node 1 with the same key; node 1 delivers everything.
    receiver.set_hold_marker(Some("node=2"));
    let mut tasks = Vec::new();
    for c in 0..8usize {
        let bases = vec![bases[1].clone(), bases[0].clone()];
        tasks.push(tokio::spawn(async move {
            let client = support::http_client();
            let mut out = Vec::new();
            for i in 0..25 {
                let key = format!("kill-{c}-{i}");
                let body = json!({"text": format!("停电 {key}")});
                // Prefer node 2; after a failure, alternate.
                let (_, id) = submit_any(&client, &bases, &key, &body).await;
                out.push((key, id));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        }));
    }
    let held = support::wait_until(Duration::from_secs(30), || async {
        receiver.with(|s| s.held.len()) >= 3
    })
    .await;
    assert!(held, "node 2 never took a delivery");
    n2.kill9();
    let killed_at = Instant::now();
    let mut by_key: HashMap<String, String> = HashMap::new();
    for t in tasks {
        for (key, id) in t.await.expect("client task") {
            assert!(by_key.insert(key, id).is_none());
        }
    }
    // Resubmitting every key to the survivor gives the same orders (idempotency is shared).
    for (key, id) in by_key.iter().take(20) {
        let body = json!({"text": format!("停电 {key}")});
        let r = n1.submit(&body, Some(key)).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(
            r.body["order_id"],
            id.as_str(),
            "key {key} changed order across nodes"
        );
    }
    let phase2: Vec<String> = by_key.values().cloned().collect();
    let unique: HashSet<&String> = phase2.iter().chain(ids.iter()).collect();
    assert_eq!(
        unique.len(),
        phase2.len() + ids.len(),
        "order numbers reused"
    );
    assert!(
        receiver
            .wait_for_all(&phase2, Duration::from_secs(60))
            .await,
        "the survivor did not deliver every order, killed node's included"
    );
    let (held, delivered) = receiver.with(|s| (s.held.clone(), s.delivered.clone()));
    assert!(!held.is_empty());
    for (id, held_at) in &held {
        let first = delivered
            .iter()
            .filter(|d| &d.order_id == id)
            .map(|d| d.at)
            .min()
            .unwrap_or_else(|| panic!("order {id} held by the killed node was never delivered"));
        // Taken over only after node 2's lease expired (small tolerance for clock granularity).
        assert!(
            first + Duration::from_millis(200) >= *held_at + Duration::from_millis(LEASE_MS),
            "order {id} was delivered {:?} after node 2 took it, inside its {LEASE_MS} ms lease",
            first.saturating_duration_since(*held_at)
        );
    }
    eprintln!(
        "phase 2: {} orders, {} held by node 2 when killed, all delivered {:?} after the kill",
        phase2.len(),
        held.len(),
        killed_at.elapsed()
    );
    let counts = receiver.delivery_counts();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "orders accepted twice by the receiver");
    assert!(receiver.problems().is_empty(), "{:?}", receiver.problems());
    let total = ids.len() + phase2.len();
    let settled = n1.outbox_settled(total, Duration::from_secs(20)).await;
    assert!(settled, "{}", n1.metrics().await);
    assert_eq!(n1.all_orders(500).await.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_together_on_a_fresh_database_both_come_up() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    for round in 0..3 {
        let url = pg.create_db(&format!("fresh{round}")).await;
        let round_dir = dir.path().join(format!("round{round}"));
        let o1 = node_options(&round_dir, 1, &url, &receiver);
        let o2 = node_options(&round_dir, 2, &url, &receiver);
        // Both nodes create the schema at the same moment, as a deployment that starts all
        // nodes together does.
        let mut n1 = Gateway::spawn(o1, support::free_port());
        let mut n2 = Gateway::spawn(o2, support::free_port());
        n1.wait_ready().await;
        n2.wait_ready().await;
        let a = n1
            .submit_ok(&json!({"text": format!("第{round}轮 节点1")}))
            .await;
        let b = n2
            .submit_ok(&json!({"text": format!("第{round}轮 节点2")}))
            .await;
        assert_ne!(a, b);
        assert!(
            receiver
                .wait_for_all(&[a, b], Duration::from_secs(30))
                .await
        );
    }
}
