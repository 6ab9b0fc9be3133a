//! HTTP end to end: purchases per second through one front end, with 3 replicas and the front
//! end in this process talking HTTP over 127.0.0.1 (HttpTransport, MemLogStore), measured with
//! reqwest clients making `POST /events/{id}/purchase/{user}` like any user would.
//!
//! Each criterion iteration is one purchase answered 200; 32 clients keep that many requests
//! in flight, so the primary's group commit has batches to form.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // benchmark harness code

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::http_cluster::HttpCluster;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};

const USERS: u64 = 64;
const EVENTS: u64 = 8;

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(url).body(body.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn set_up(http: &reqwest::Client, base: &str) {
    for i in 0..USERS {
        post(
            http,
            format!("{base}/users/create"),
            json!({ "username": format!("u{i}") }),
        )
        .await;
    }
    for i in 0..EVENTS {
        let body = json!({ "userid": 1, "eventname": format!("e{i}"), "numtickets": u32::MAX });
        post(http, format!("{base}/events/create"), body).await;
    }
}

async fn purchases(http: &reqwest::Client, base: &str, clients: u64, total: u64) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(total) {
        let (http, next, base) = (http.clone(), next.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let url = format!(
                    "{base}/events/{}/purchase/{}",
                    1 + n % EVENTS,
                    1 + (n * 7) % USERS
                );
                post(&http, url, json!({ "tickets": 1 })).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn http_frontend(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(HttpCluster::start(3)).unwrap();
    let base = cluster.frontend_url.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .unwrap();
    rt.block_on(set_up(&http, &base));

    let mut group = c.benchmark_group("http_frontend");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let clients = 32;
    group.bench_with_input(
        BenchmarkId::new("purchase", format!("{clients}_clients")),
        &clients,
        |b, &clients| b.iter_custom(|iters| rt.block_on(purchases(&http, &base, clients, iters))),
    );
    group.finish();
    rt.block_on(cluster.stop());
}

criterion_group!(benches, http_frontend);
criterion_main!(benches);
