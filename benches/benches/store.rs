//! Group commit of the SQLite store: N submissions from M concurrent tokio tasks, each waiting
//! for its own durable commit (`synchronous=FULL`, WAL), as the HTTP handlers do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::Submission;
use adapters::normalize::normalize;
use chrono::{FixedOffset, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gateway::store::OrderStore;
use gateway::store::sqlite::SqliteStore;
use gateway::store::{IdempotencyClaim, NewOrder, Numbering, SubmitOutcome};

/// Orders per measured iteration: one task waits out one fsync per order, so it gets fewer.
fn orders_for(tasks: usize) -> usize {
    if tasks == 1 { 256 } else { 4096 }
}

const BODY: &str = r#"{"text":"解放大道268号小区楼下烧烤摊每天营业到凌晨两点，油烟和噪音严重扰民，多次劝说无效，请相关部门处理。","citizen":{"name":"张先生","phone":"13800138000"},"location":{"address":"江汉区解放大道268号","district":"江汉区","lat":30.58,"lng":114.27},"external_id":"app-1"}"#;

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = FixedOffset::east_opt(8 * 3600).expect("offset");
    let store = SqliteStore::open(
        &dir.path().join("bench.db"),
        Numbering::new(1, offset),
        1024,
        4,
    )
    .expect("open store");
    let store = Arc::new(store);
    let submission = Submission::from_app_json(BODY.as_bytes()).expect("valid body");
    let normalized = normalize(&submission);
    let mut key = 0u64;

    let mut g = c.benchmark_group("sqlite_group_commit");
    g.sample_size(10);
    for tasks in [1usize, 64, 512] {
        let n = orders_for(tasks);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("tasks", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let orders: Vec<Vec<NewOrder>> = (0..tasks)
                        .map(|t| {
                            (t..n)
                                .step_by(tasks)
                                .map(|_| {
                                    key += 1;
                                    NewOrder {
                                        submission: submission.clone(),
                                        normalized: normalized.clone(),
                                        received_at: Utc::now(),
                                        idempotency: Some(IdempotencyClaim {
                                            client: "bench".into(),
                                            key: format!("k-{key}"),
                                            body_sha256: [7; 32],
                                        }),
                                    }
                                })
                                .collect()
                        })
                        .collect();
                    let started = Instant::now();
                    runtime.block_on(async {
                        let handles: Vec<_> = orders
                            .into_iter()
                            .map(|mine| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    for order in mine {
                                        let outcome = store.submit(order).await.expect("submit");
                                        assert!(matches!(outcome, SubmitOutcome::Created(_)));
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.expect("task");
                        }
                    });
                    total += started.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
