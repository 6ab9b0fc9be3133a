//! Replication over the in-memory transport: the write path, group commit, dedup, catch-up.

use replica_core::testing::{Cluster, KvCommand, KvGet};
use replica_core::NodeId;

/// 3 replicas, 1,000 writes from 16 concurrent clients: every write acknowledged exactly once,
/// all replicas end with identical logs and identical state.
#[tokio::test(start_paused = true)]
async fn thousand_writes_sixteen_clients_converge() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;

    // Phase: 16 clients × 62/63 appends each to their own key (1,000 in all).
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = cluster.client(&format!("fe{c}"));
        let n = if c < 8 { 63 } else { 62 };
        tasks.push(tokio::spawn(async move {
            let mut last = String::new();
            for i in 0..n {
                let out: Option<String> = client
                    .write(&KvCommand::append(format!("k{c}"), format!("{i},")))
                    .await
                    .unwrap();
                last = out.unwrap();
            }
            (c, n, last)
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        let (c, n, last) = t.await.unwrap();
        // Each append's output is the value after it: the last one shows every append exactly once.
        let want: String = (0..n).map(|i| format!("{i},")).collect();
        assert_eq!(last, want, "client {c}");
        expected.push((format!("k{c}"), want));
    }

    // Phase: all replicas converge on the same log and state.
    let primary_commit = cluster
        .statuses()
        .await
        .iter()
        .map(|s| s.commit)
        .max()
        .unwrap();
    cluster.wait_converged(primary_commit).await;
    let states = cluster.states().await;
    assert_eq!(states.len(), 3);
    for (id, m) in &states {
        assert_eq!(m.applied, 1000, "{id} applied every write exactly once");
        for (k, v) in &expected {
            assert_eq!(m.data.get(k), Some(v), "{id} {k}");
        }
        assert_eq!(m, &states[0].1, "{id} state differs");
    }
    let logs: Vec<_> = cluster
        .ids()
        .iter()
        .map(|id| cluster.store(id).durable_entries())
        .collect();
    assert!(logs.iter().all(|l| *l == logs[0]), "durable logs identical");
    // Group commit: far fewer syncs than entries on the primary.
    let syncs = cluster.store(&NodeId::new("r0")).sync_count();
    assert!(
        syncs < 1000,
        "expected batching, got {syncs} syncs for 1000 writes"
    );

    // Phase: reads through a client see the writes.
    let reader = cluster.client("reader");
    let v: Option<String> = reader.read(&KvGet("k3".into())).await.unwrap();
    assert_eq!(v.as_deref(), Some(expected[3].1.as_str()));
}
