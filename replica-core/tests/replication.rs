//! Replication over the in-memory transport: the write path, group commit, dedup, catch-up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use replica_core::testing::{Cluster, KvCommand, KvGet};
use replica_core::{Config, NodeId};

/// 3 replicas, 1,000 writes from 16 concurrent clients: every write acknowledged exactly once,
/// all replicas end with identical logs and identical state.
#[tokio::test(start_paused = true)]
async fn thousand_writes_sixteen_clients_converge() {
    thousand_writes(Config::default()).await;
}

/// The same with replicas that sleep as soon as they find nothing to do (`Config::idle_polls`
/// 0; the default polls first): the polling changes when the core task runs, never what it does.
#[tokio::test(start_paused = true)]
async fn thousand_writes_without_idle_polling_converge() {
    thousand_writes(Config {
        idle_polls: 0,
        ..Config::default()
    })
    .await;
}

/// Total idle polls of the cluster's replicas so far.
fn idle_polls(cluster: &Cluster) -> u64 {
    cluster
        .ids()
        .iter()
        .map(|id| {
            let node = cluster.node(id).unwrap();
            node.metrics()
                .idle_polls
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum()
}

/// Idle polling follows load only: 32 concurrent writers (above the gate of 16) make the
/// replicas poll, and once the writes stop, five (virtual) seconds of ticks and heartbeats add
/// not one poll more.
#[tokio::test(start_paused = true)]
async fn idle_replicas_do_not_poll() {
    let cluster = Cluster::start_with(3, Config::default(), 9).await;
    cluster.wait_in_sync(3).await;
    concurrent_writes(&cluster, 32, 20).await;
    // Virtual time: each sleep lets that much time's ticks and heartbeats happen.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let settled = idle_polls(&cluster);
    assert!(settled > 0, "the concurrent writes were polled for");
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(idle_polls(&cluster), settled, "no polls while idle");
}

/// A few writers at a time are light load: no replica polls for them (a primary with at most
/// four writes waiting, a secondary fed at most four entries per append, sleep as soon as they
/// are done) — neither for one writer nor for four concurrent ones.
#[tokio::test(start_paused = true)]
async fn light_load_does_not_poll() {
    let cluster = Cluster::start_with(3, Config::default(), 10).await;
    cluster.wait_in_sync(3).await;
    concurrent_writes(&cluster, 1, 50).await;
    assert_eq!(idle_polls(&cluster), 0, "one writer");
    concurrent_writes(&cluster, 4, 50).await;
    assert_eq!(idle_polls(&cluster), 0, "four writers");
}

/// More writers than a worker's own run queue holds (256 tasks) overflow into the runtime's
/// shared queue, which a busy worker looks at only every few dozen polls: replicas that kept
/// polling then starved the writers they wait for (2.7 polls per write in `replica-bench -c 256
/// --threads 1`). They must not poll while tasks wait there.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_crowd_of_writers_is_not_polled_past() {
    let cluster = Cluster::start_with(3, Config::default(), 11).await;
    cluster.wait_in_sync(3).await;
    let (clients, each) = (800, 10);
    concurrent_writes(&cluster, clients, each).await;
    let polls = idle_polls(&cluster);
    // Allowed: once the load ends, each secondary's full budget (they poll for the next append
    // until it is spent), and a poll per eight writes besides. Seen: 81–293 polls; 4,162–4,515
    // when replicas polled regardless of the shared queue.
    let allowed = (clients * each / 8) as u64 + 2 * u64::from(Config::default().idle_polls);
    assert!(
        polls < allowed,
        "{polls} idle polls for {} writes (allowed: {allowed})",
        clients * each
    );
}

/// A turn that takes more writes than `TURN_SEND_INPUTS` (128) sends the first of them while
/// it steps the rest, instead of one batch at the end: 300 writers that all write at once (on
/// one thread, their 300 writes reach the primary before it takes any) go out in appends of at
/// most 128 entries. Seen: 6 appends for 600 entries; 2 of 300 each when a turn sent only at
/// its end.
#[tokio::test(start_paused = true)]
async fn a_long_turn_sends_its_first_writes_early() {
    let cluster = Cluster::start_with(3, Config::default(), 12).await;
    cluster.wait_in_sync(3).await;
    let primary = cluster.primary().await.unwrap();
    let metrics = || {
        let node = cluster.node(&primary).unwrap();
        let h = &node.metrics().append_batch_entries;
        (h.count(), h.sum())
    };
    let (count0, sum0) = metrics();
    concurrent_writes(&cluster, 300, 1).await;
    let (count, sum) = metrics();
    let (appends, entries) = (count - count0, sum - sum0);
    assert!(
        entries >= 600.0,
        "each write went to both secondaries: {entries} entries"
    );
    assert!(
        entries / appends as f64 <= 128.0,
        "{entries} entries in {appends} appends"
    );
}

/// An append that arrives encoded is decoded by the receiving replica's own task
/// (`Handler::handle_encoded`): bytes that claim to be an append but do not decode get a codec
/// error back, change nothing, and the replica goes on replicating.
#[tokio::test(start_paused = true)]
async fn an_undecodable_append_is_refused_and_changes_nothing() {
    use replica_core::message::{encode, Append};
    use replica_core::{Body, HandleError, Handler, LogPos, Message};
    let cluster = Cluster::start_with(3, Config::default(), 13).await;
    cluster.wait_in_sync(3).await;
    concurrent_writes(&cluster, 4, 5).await;
    let primary = cluster.primary().await.unwrap();
    let secondary = cluster.ids().into_iter().find(|id| *id != primary).unwrap();
    let node = cluster.node(&secondary).unwrap();
    let before = node.status().await.unwrap();
    let append = Message {
        from: primary.clone(),
        epoch: before.epoch,
        clock: 0,
        body: Body::Append(Box::new(Append {
            prev: LogPos::ZERO,
            entries: vec![],
            commit: 0,
            last: 0,
            acked: 0,
        })),
    };
    let mut bytes = encode(&append).unwrap();
    assert!(replica_core::message::is_append(&bytes));
    bytes.truncate(bytes.len() - 1);
    assert!(
        replica_core::message::is_append(&bytes),
        "still looks like one"
    );
    match node.handle_encoded(bytes).await {
        Err(HandleError::Codec(_)) => {}
        other => panic!("expected a codec error, got {other:?}"),
    }
    // No write is in flight: only a decoded append could have moved the log.
    let after = node.status().await.unwrap();
    assert_eq!((after.epoch, after.last), (before.epoch, before.last));
    concurrent_writes(&cluster, 4, 5).await;
    let commit = cluster
        .node(&primary)
        .unwrap()
        .status()
        .await
        .unwrap()
        .commit;
    assert!(commit > before.last.index);
    cluster.wait_converged(commit).await;
}

/// `clients` concurrent writers, `each` puts apiece to keys of their own; all succeed.
async fn concurrent_writes(cluster: &Cluster, clients: usize, each: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = cluster.client(&format!("fe{c}"));
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let _: Option<String> = client
                    .write(&KvCommand::put(format!("k{c}-{i}"), "v"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn thousand_writes(config: Config) {
    let cluster = Cluster::start_with(3, config, 7).await;
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

/// A write retried with the same UUID — while in flight, after it committed, and to a different
/// primary after failover — executes once and every attempt returns the first result.
#[tokio::test(start_paused = true)]
async fn retried_write_executes_once_everywhere() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let id = uuid::Uuid::new_v4();
    let cmd = KvCommand::append("k", "a");

    // Phase: two attempts while the entry is in flight (secondaries' traffic held).
    let r1 = NodeId::new("r1");
    cluster.net.hold(&r1);
    let (c1, c2) = (cluster.client("fe1"), cluster.client("fe2"));
    let (cmd1, cmd2) = (cmd.clone(), cmd.clone());
    let first = tokio::spawn(async move { c1.write_with_id::<_, Option<String>>(id, &cmd1).await });
    let second =
        tokio::spawn(async move { c2.write_with_id::<_, Option<String>>(id, &cmd2).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "answered before r1 acknowledged"
    );
    cluster.net.release(&r1);
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert_eq!(a.as_deref(), Some("a"));
    assert_eq!(a, b, "both attempts get the first result");

    // Phase: after commit.
    let c3 = cluster.client("fe3");
    let again: Option<String> = c3.write_with_id(id, &cmd).await.unwrap();
    assert_eq!(again, a);

    // Phase: after failover to a new primary.
    cluster
        .wait_converged(cluster.statuses().await[0].commit)
        .await;
    cluster.crash(&NodeId::new("r0"));
    let after: Option<String> = c3.write_with_id(id, &cmd).await.unwrap();
    assert_eq!(after, a, "the new primary returns the first result");
    let p = cluster.primary().await.unwrap();
    assert_ne!(p, NodeId::new("r0"));
    for (node, m) in cluster.states().await {
        assert_eq!(
            m.data.get("k").map(String::as_str),
            Some("a"),
            "{node} executed it more than once"
        );
    }
}

/// With a small retention the dedup table evicts (and its index sweeps) all the time: the ids it
/// still holds are answered with their first result, by the primary and, after a failover, by
/// its successor (which indexes the table it replicated, snapshots included); an evicted id is
/// new again, the documented bound.
#[tokio::test(start_paused = true)]
async fn a_small_dedup_retention_holds_its_bound_across_failover() {
    let retention = 32;
    let config = Config {
        dedup_entries_max: retention,
        snapshot_interval_entries: 50,
        ..Config::default()
    };
    let cluster = Cluster::start_with(3, config, 12).await;
    cluster.wait_in_sync(3).await;
    let client = cluster.client("fe");
    let ids: Vec<uuid::Uuid> = (0..300).map(|_| uuid::Uuid::new_v4()).collect();
    let cmd = |i: usize| KvCommand::append(format!("k{}", i % 8), format!("{i},"));
    let mut first = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let out: Option<String> = client.write_with_id(*id, &cmd(i)).await.unwrap();
        first.push(out);
    }
    let held = ids.len() - retention..ids.len();
    for i in held.clone() {
        let again: Option<String> = client.write_with_id(ids[i], &cmd(i)).await.unwrap();
        assert_eq!(again, first[i], "write {i}, retried on the primary");
    }

    cluster
        .wait_converged(cluster.statuses().await[0].commit)
        .await;
    cluster.crash(&NodeId::new("r0"));
    for i in held {
        let again: Option<String> = client.write_with_id(ids[i], &cmd(i)).await.unwrap();
        assert_eq!(again, first[i], "write {i}, retried on the new primary");
    }
    // Every write executed once: each key holds its writes' numbers once, in order.
    let states = cluster.states().await;
    for (node, m) in &states {
        for k in 0..8 {
            let want: String = (0..300)
                .filter(|i| i % 8 == k)
                .map(|i| format!("{i},"))
                .collect();
            assert_eq!(m.data.get(&format!("k{k}")), Some(&want), "{node} k{k}");
        }
    }

    // Evicted long ago: the id is new again, and executes.
    let old: Option<String> = client.write_with_id(ids[0], &cmd(0)).await.unwrap();
    assert_ne!(old, first[0]);
    assert!(old.is_some_and(|v| v.ends_with("296,0,")));
}

/// A secondary that missed 100 entries catches up from the suffix (no full copy).
#[tokio::test(start_paused = true)]
async fn lagging_secondary_catches_up_from_the_suffix() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let r2 = NodeId::new("r2");
    cluster.crash(&r2);
    let client = cluster.client("fe");
    for i in 0..100 {
        let _: Option<String> = client
            .write(&KvCommand::put(format!("k{i}"), "v"))
            .await
            .unwrap();
    }
    cluster.restart(&r2).await;
    cluster.wait_in_sync(3).await;
    let st = cluster.statuses().await;
    let commit = st.iter().map(|s| s.commit).max().unwrap();
    cluster.wait_converged(commit).await;
    let st = cluster.statuses().await;
    assert!(
        st.iter()
            .all(|s| s.snapshots_sent == 0 && s.snapshots_installed == 0),
        "no full copy: {st:#?}"
    );
    let states = cluster.states().await;
    assert!(states.iter().all(|(_, m)| m == &states[0].1));
    let logs: Vec<_> = cluster
        .ids()
        .iter()
        .map(|id| cluster.store(id).durable_entries())
        .collect();
    assert_eq!(
        logs[2], logs[0],
        "r2's log equals the primary's, entry for entry"
    );
}

/// No write is acknowledged before every in-sync secondary has it: with one secondary's traffic
/// held, the client waits — until the traffic is released, or until that secondary is dropped
/// from the in-sync set after the ack timeout.
#[tokio::test(start_paused = true)]
async fn no_ack_before_every_in_sync_secondary_has_it() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let r2 = NodeId::new("r2");
    let client = cluster.client("fe");

    // Phase: held, then released before the ack timeout → answered, r2 still in sync.
    cluster.net.hold(&r2);
    let c = client.clone();
    let w = tokio::spawn(async move {
        c.write::<_, Option<String>>(&KvCommand::put("a", "1"))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(
        cluster.config.ack_timeout_ms / 2,
    ))
    .await;
    assert!(!w.is_finished(), "acknowledged while r2 did not have it");
    cluster.net.release(&r2);
    w.await.unwrap().unwrap();
    let p = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == replica_core::Role::Primary)
        .unwrap();
    assert!(p.in_sync.contains(&r2));

    // Phase: held for good → answered only after r2 leaves the in-sync set.
    cluster.net.hold(&r2);
    let started = tokio::time::Instant::now();
    let _: Option<String> = client.write(&KvCommand::put("b", "2")).await.unwrap();
    assert!(
        started.elapsed().as_millis() as u64
            >= cluster.config.ack_timeout_ms - cluster.config.heartbeat_interval_ms
    );
    let p = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == replica_core::Role::Primary)
        .unwrap();
    assert!(
        !p.in_sync.contains(&r2),
        "r2 was dropped before the write was acknowledged"
    );
    cluster.net.release(&r2);
    cluster.wait_in_sync(3).await;
}
