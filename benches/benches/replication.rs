//! Replication throughput over the in-memory transport (every message still goes through the
//! postcard codec), in entries committed per second, for 1, 3 and 5 replicas and append batches
//! of at most 1, 16 and 256 entries (`Config::batch_entries_max`).
//!
//! Writers: enough concurrent ones to fill the batches (twice the batch size, at least 32), each
//! writing sequentially to the primary with `NodeHandle::write`; the state machine is empty, so
//! what is measured is the replication path: the core, the store task, the transport and the
//! codec. Each criterion iteration is one committed entry.
//!
//! Snapshots are off (`snapshot_interval_entries: 0`), as in `replica-bench` and openraft's
//! benchmark: a snapshot includes the dedup table, and with the default interval (every 10,000
//! entries) and retention (1,000,000 ids) serializing it dominates the run. One extra case,
//! `3_replicas/batch_256_default_config`, keeps the default configuration to show that cost.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // benchmark harness code

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::Noop;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use replica_core::{Config, NodeHandle};
use uuid::Uuid;

async fn start(members: usize, config: Config) -> Vec<NodeHandle<Noop>> {
    benches::start_noop_cluster(members, config).await.unwrap()
}

/// Commit `total` writes with `writers` concurrent writers; the time it took.
async fn write_all(
    primary: &NodeHandle<Noop>,
    writers: u64,
    total: u64,
    ids: &AtomicU64,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let base = ids.fetch_add(total, Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers.min(total) {
        let (node, next) = (primary.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                node.write(Uuid::from_u64_pair(1, base + n), &())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn replication(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("replication");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut cases = Vec::new();
    for members in [1usize, 3, 5] {
        for batch in [1usize, 16, 256] {
            let config = Config {
                batch_entries_max: batch,
                snapshot_interval_entries: 0,
                ..Config::default()
            };
            cases.push((members, batch, config, format!("batch_{batch}")));
        }
    }
    let config = Config {
        batch_entries_max: 256,
        ..Config::default()
    };
    cases.push((3, 256, config, "batch_256_default_config".to_string()));
    for (members, batch, config, name) in cases {
        {
            let nodes = rt.block_on(start(members, config));
            let writers = (2 * batch as u64).max(32);
            let ids = AtomicU64::new(0);
            group.bench_with_input(
                BenchmarkId::new(format!("{members}_replicas"), name),
                &batch,
                |b, _| {
                    b.iter_custom(|iters| rt.block_on(write_all(&nodes[0], writers, iters, &ids)))
                },
            );
            for n in &nodes {
                n.stop();
            }
        }
    }
    group.finish();
}

criterion_group!(benches, replication);
criterion_main!(benches);
