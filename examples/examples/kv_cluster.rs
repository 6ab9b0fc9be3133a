//! A 3-replica key-value store in one process, over the in-memory transport.
//!
//! It shows, in plain words: replicated writes; a retried write that is not applied twice; a
//! primary crash in the middle of a stream of writes; reads from a secondary that respect the
//! client's read fence.
//!
//! ```sh
//! cargo run --release -p examples --example kv_cluster
//! ```

use std::time::Duration;

use replica_core::testing::{Cluster, KvCommand, KvGet};
use replica_core::{NodeId, Role};
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let st = cluster.statuses().await;
    let primary = cluster.primary().await.unwrap_or_else(|| NodeId::new("?"));
    println!(
        "Started 3 replicas (r0, r1, r2). The primary is {primary}; in-sync set: {:?}.",
        st[0].in_sync
    );

    // 1. Writes.
    let client = cluster.client("frontend");
    for (k, v) in [("apples", "3"), ("pears", "5")] {
        let old: Option<String> = must(client.write(&KvCommand::put(k, v)).await);
        println!("Wrote {k} = {v} (previous value: {old:?}). Every in-sync replica has it on its log before this answer.");
    }

    // 2. A retried write.
    let id = Uuid::new_v4();
    let first: Option<String> = must(
        client
            .write_with_id(id, &KvCommand::append("basket", "apple,"))
            .await,
    );
    let retry: Option<String> = must(
        client
            .write_with_id(id, &KvCommand::append("basket", "apple,"))
            .await,
    );
    println!(
        "Sent the same append twice under request id {id}: first answer {first:?}, retry answer {retry:?} — applied once."
    );

    // 3. A primary crash in the middle of a stream of writes.
    let writer = client.clone();
    let stream = tokio::spawn(async move {
        let mut last = None;
        for i in 0..200 {
            last = must(
                writer
                    .write(&KvCommand::append("stream", format!("{i},")))
                    .await,
            );
        }
        last
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    println!("Crashing the primary {primary} while a client streams 200 appends...");
    let crashed_at = tokio::time::Instant::now();
    cluster.crash(&primary);
    let last: Option<String> = must(stream.await);
    let new_primary = cluster.primary().await.unwrap_or_else(|| NodeId::new("?"));
    let epoch = cluster
        .statuses()
        .await
        .iter()
        .map(|s| s.epoch)
        .max()
        .unwrap_or(0);
    let count = last.as_deref().unwrap_or("").matches(',').count();
    println!(
        "{new_primary} was elected primary for epoch {epoch}; the client held its writes and retried them: all 200 landed, each once ({count} items), {:.1} s after the crash.",
        crashed_at.elapsed().as_secs_f64()
    );

    // 4. Reads that respect the fence.
    let fence = client.fence();
    let v: Option<String> = must(client.read(&KvGet("apples".into())).await);
    let stats = client.stats();
    println!(
        "Read apples = {v:?} with read fence {fence}: served by a replica that had applied at least that write (secondary reads so far: {}, primary reads: {}).",
        stats.reads_secondary.load(std::sync::atomic::Ordering::Relaxed),
        stats.reads_primary.load(std::sync::atomic::Ordering::Relaxed)
    );

    // 5. The crashed replica comes back and catches up.
    cluster.restart(&primary).await;
    cluster.wait_in_sync(3).await;
    let st = cluster.statuses().await;
    let roles: Vec<String> = st.iter().map(|s| format!("{} {}", s.id, s.role)).collect();
    let back = st
        .iter()
        .find(|s| s.id == primary)
        .map(|s| s.role == Role::Secondary)
        .unwrap_or(false);
    println!(
        "Restarted {primary}: it caught up and rejoined as a secondary ({back}). Roles now: {}.",
        roles.join(", ")
    );
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("unexpected failure: {e}");
            std::process::exit(1);
        }
    }
}
