//! Membership over the in-memory transport: greeting, gossip, suspicion and
//! removal, generations, and front ends in the primary's list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use replica_core::message::ServiceKind;
use replica_core::testing::{Cluster, KvCommand};
use replica_core::{Config, NodeId, Role, Status};

fn r(i: usize) -> NodeId {
    NodeId::new(format!("r{i}"))
}

fn lists(st: &[Status], who: &NodeId) -> usize {
    st.iter()
        .filter(|s| s.services.iter().any(|e| e.address == *who))
        .count()
}

/// A new replica greets the primary, appears in every list, receives a full copy (the log it
/// needs was compacted away), and joins the in-sync set.
#[tokio::test(start_paused = true)]
async fn new_replica_greets_gets_a_full_copy_and_joins() {
    let config = Config {
        snapshot_interval_entries: 50,
        log_retain_entries: 10,
        ..Config::default()
    };
    let cluster = Cluster::start_with(3, config, 3).await;
    cluster.wait_in_sync(3).await;
    let client = cluster.client("fe");
    for i in 0..200 {
        let _: Option<String> = client
            .write(&KvCommand::put(format!("k{i}"), "v"))
            .await
            .unwrap();
    }
    let primary = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == Role::Primary)
        .unwrap();
    assert!(primary.log_base.index > 1, "the primary compacted its log");

    let r3 = cluster.add_replica_named("r3").await;
    cluster.wait_in_sync(4).await;
    cluster
        .wait_for("r3 in every list", |st| lists(st, &r3) == 4)
        .await;
    let st = cluster.statuses().await;
    let new = st.iter().find(|s| s.id == r3).unwrap();
    assert_eq!(
        new.snapshots_installed, 1,
        "a full copy, since the suffix it needed is gone"
    );
    let commit = st.iter().map(|s| s.commit).max().unwrap();
    cluster.wait_converged(commit).await;
    let states = cluster.states().await;
    assert!(states.iter().all(|(_, m)| m.data == states[0].1.data));
    // It takes part in commits now: a write needs its acknowledgement.
    let _: Option<String> = client
        .write(&KvCommand::put("after", "join"))
        .await
        .unwrap();
    let p = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == Role::Primary)
        .unwrap();
    assert!(p.in_sync.contains(&r3));
}

/// A dead replica disappears from every list within the suspicion timeout (plus one gossip
/// round), after first being suspected.
#[tokio::test(start_paused = true)]
async fn dead_replica_leaves_every_list_within_the_suspicion_timeout() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    cluster
        .wait_for("full lists", |st| st.iter().all(|s| s.services.len() == 3))
        .await;
    let cfg = cluster.config.clone();
    cluster.crash(&r(2));
    let crashed = tokio::time::Instant::now();
    let mut suspected_seen = false;
    loop {
        let st = cluster.statuses().await;
        suspected_seen |= st.iter().any(|s| s.suspected.contains(&r(2)));
        if lists(&st, &r(2)) == 0 {
            break;
        }
        assert!(
            crashed.elapsed()
                <= Duration::from_millis(cfg.suspicion_timeout_ms + 2 * cfg.gossip_interval_ms),
            "r2 still listed {:?} after the crash: {st:#?}",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(suspected_seen, "r2 was suspected before it was removed");
    // It was also dropped from the in-sync set (ack timeout < suspicion timeout).
    let p = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == Role::Primary)
        .unwrap();
    assert!(!p.in_sync.contains(&r(2)));
}

/// A restarted replica comes back with a higher generation and is listed again, not confused
/// with its dead self.
#[tokio::test(start_paused = true)]
async fn restarted_replica_comes_back_with_a_higher_generation() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    cluster
        .wait_for("full lists", |st| st.iter().all(|s| s.services.len() == 3))
        .await;
    let gen_before = cluster.statuses().await[0]
        .services
        .iter()
        .find(|e| e.address == r(1))
        .map(|e| e.generation)
        .unwrap();
    cluster.crash(&r(1));
    cluster
        .wait_for("r1 removed", |st| lists(st, &r(1)) == 0)
        .await;
    cluster.restart(&r(1)).await;
    cluster.wait_in_sync(3).await;
    cluster
        .wait_for("r1 listed again with a new generation", |st| {
            st.iter().all(|s| {
                s.services
                    .iter()
                    .any(|e| e.address == r(1) && e.generation > gen_before)
            })
        })
        .await;
}

/// A front end that greets appears in the primary's list, as a front end.
#[tokio::test(start_paused = true)]
async fn front_end_greeting_lands_in_the_primary_list() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let fe = cluster.client("frontend-1");
    fe.discover().await;
    let p = cluster
        .statuses()
        .await
        .into_iter()
        .find(|s| s.role == Role::Primary)
        .unwrap();
    let entry = p
        .services
        .iter()
        .find(|e| e.address == NodeId::new("frontend-1"));
    assert_eq!(
        entry.map(|e| e.kind),
        Some(ServiceKind::Frontend),
        "{:#?}",
        p.services
    );
    assert_eq!(fe.primary(), Some(r(0)));
    assert_eq!(
        fe.services().len(),
        4,
        "the front end learned the list back"
    );
}

/// Front ends learn of a new primary through its announcement.
#[tokio::test(start_paused = true)]
async fn front_end_learns_the_new_primary_from_the_announcement() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let fe = cluster.client("frontend-1");
    fe.discover().await;
    // The primary gossips the front end's entry to the secondaries.
    let fe_id = NodeId::new("frontend-1");
    cluster
        .wait_for("front end known to all", |st| lists(st, &fe_id) == 3)
        .await;
    cluster.crash(&r(0));
    cluster
        .wait_for("new primary", |st| {
            st.iter().any(|s| s.role == Role::Primary)
        })
        .await;
    let p = cluster.primary().await.unwrap();
    // No request from the front end in between: only the announcement can have told it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fe.primary() != Some(p.clone()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "front end still believes in {:?}",
            fe.primary()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start three replicas with `config` (snapshots every 50 entries, 10 kept behind), write a
/// state of about 2 MB, then add `r3` while a writer keeps writing, and wait until it is in
/// sync and every replica holds the same state. Returns the primary's metrics: copies sent,
/// and pieces.
async fn join_under_writes(config: Config) -> (u64, u64) {
    let config = Config {
        snapshot_interval_entries: 50,
        log_retain_entries: 10,
        ..config
    };
    let cluster = Cluster::start_with(3, config, 5).await;
    cluster.wait_in_sync(3).await;
    let client = cluster.client("fe");
    // A state of a few megabytes, so that a copy takes real time to encode and install.
    let value = "v".repeat(4096);
    for i in 0..500 {
        let _: Option<String> = client
            .write(&KvCommand::put(format!("k{i}"), value.clone()))
            .await
            .unwrap();
    }
    let primary = cluster.node(&r(0)).unwrap();
    let sent_before = primary.metrics().snapshots_sent.load(Ordering::Relaxed);

    // Writes go on while r3 joins.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (client, writing) = (client.clone(), writing.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let _: Option<String> = client
                    .write(&KvCommand::put(format!("w{}", n % 100), "x"))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let r3 = cluster.add_replica_named("r3").await;
    cluster.wait_in_sync(4).await;
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "writes went on during the join");

    let st = cluster.statuses().await;
    assert_eq!(st[0].role, Role::Primary, "r0 stayed primary: {st:#?}");
    let new = st.iter().find(|s| s.id == r3).unwrap();
    assert_eq!(new.snapshots_installed, 1, "one copy installed: {st:#?}");
    let commit = st.iter().map(|s| s.commit).max().unwrap();
    cluster.wait_converged(commit).await;
    let states = cluster.states().await;
    assert!(states.iter().all(|(_, m)| m.data == states[0].1.data));
    let m = primary.metrics();
    (
        m.snapshots_sent.load(Ordering::Relaxed) - sent_before,
        m.copy_chunks_sent.load(Ordering::Relaxed),
    )
}

/// A replica that joins while writes go on gets one full copy, not one per heartbeat: the
/// appends sent after the copy reach it first (the copy is still being encoded) and come back
/// as gaps, which must not count as a new need for a copy while one is on its way. With a
/// large state, each extra copy costs the primary a snapshot of the whole state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_under_writes_gets_one_copy() {
    let (copies, pieces) = join_under_writes(Config::default()).await;
    assert_eq!((copies, pieces), (1, 0), "one copy, in one message");
}

/// A copy larger than `copy_chunk_bytes` goes in pieces, and the joining replica gets the
/// same state as in one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_goes_in_pieces() {
    let config = Config {
        copy_chunk_bytes: 64 << 10,
        ..Config::default()
    };
    let (copies, pieces) = join_under_writes(config).await;
    assert_eq!(copies, 1);
    // About 2 MB of state in 64 KiB pieces.
    assert!(pieces >= 30, "{pieces} pieces");
}
