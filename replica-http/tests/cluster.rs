//! A 3-replica cluster over real HTTP on 127.0.0.1: replication, and failover when the primary's
//! process goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bind, key, Server};
use replica_core::testing::{KvCommand, KvGet, KvMachine};
use replica_core::{
    Client, ClientConfig, Config, MemLogStore, Node, NodeHandle, NodeId, NodeOptions, Role, Status,
};
use replica_http::{cluster_router, cluster_router_with, HttpTransport, RouterOptions};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a condition may take to become true before the test fails (real time: a failover
/// takes about 2 s with the default configuration; the rest is slack for a loaded machine).
const WAIT_MAX: Duration = Duration::from_secs(30);

/// How often a waiting test re-checks its condition.
const POLL: Duration = Duration::from_millis(20);

struct Replica {
    id: NodeId,
    node: NodeHandle<KvMachine>,
    server: Server,
}

impl Replica {
    /// Bind, start the node with an HTTP transport, and serve its cluster routes.
    async fn start(initial_primary: bool, seeds: Vec<NodeId>, rng_seed: u64) -> Replica {
        let config = Config::default();
        Self::start_with(
            initial_primary,
            seeds,
            rng_seed,
            config,
            RouterOptions::default(),
        )
        .await
    }

    /// [`Replica::start`] with this configuration and these router options.
    async fn start_with(
        initial_primary: bool,
        seeds: Vec<NodeId>,
        rng_seed: u64,
        config: Config,
        router: RouterOptions,
    ) -> Replica {
        let listener = bind().await;
        let id = NodeId::new(listener.local_addr().unwrap().to_string());
        let opts = NodeOptions {
            id: id.clone(),
            config,
            state_machine: KvMachine::default(),
            store: MemLogStore::new(),
            transport: HttpTransport::new(&key()).unwrap(),
            initial_primary,
            seeds,
            rng_seed,
        };
        let node = Node::start(opts).await.unwrap();
        let routes = cluster_router_with(Arc::new(node.clone()), key(), router);
        let server = Server::start_on(listener, routes);
        Replica { id, node, server }
    }

    /// Crash-stop: the node halts and its address stops answering.
    async fn stop(self) {
        self.node.stop();
        self.server.stop().await;
    }
}

async fn statuses(replicas: &[&Replica]) -> Vec<Status> {
    let mut out = Vec::new();
    for r in replicas {
        if let Ok(s) = r.node.status().await {
            out.push(s);
        }
    }
    out
}

/// Poll `cond` on the replicas' statuses until it holds; fail with `what` after [`WAIT_MAX`].
async fn wait_for(
    what: &str,
    replicas: &[&Replica],
    mut cond: impl FnMut(&[Status]) -> bool,
) -> Vec<Status> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let st = statuses(replicas).await;
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\nstatuses: {st:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The value of `key` on every replica, once they have all applied the same entries.
async fn converged_values(replicas: &[&Replica], key: &str, want: &str) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let mut values = Vec::new();
        for r in replicas {
            let k = key.to_string();
            values.push(
                r.node
                    .inspect(move |m: &KvMachine| m.data.get(&k).cloned())
                    .await
                    .unwrap(),
            );
        }
        if values.iter().all(|v| v.as_deref() == Some(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged on {key} = {want:?}: {values:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The expected value of the key after appends `0..n`.
fn appended(n: u64) -> String {
    (0..n).map(|i| format!("{i},")).collect()
}

/// Three replicas and a front end, all talking HTTP on 127.0.0.1 with the cluster key:
/// writes through the front end's `Client` succeed and replicate to every replica; then the
/// primary's node and server are stopped while a writer keeps writing, a secondary is elected,
/// and every write completes exactly once (appends are not idempotent, so each output — the
/// value after the append — proves it ran once and in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_replicate_and_fail_over_over_http() {
    // Phase: start r0 (initial primary), r1 and r2 (greeting r0), and the front end.
    let r0 = Replica::start(true, Vec::new(), 1).await;
    let r1 = Replica::start(false, vec![r0.id.clone()], 2).await;
    let r2 = Replica::start(false, vec![r0.id.clone()], 3).await;
    let ids = vec![r0.id.clone(), r1.id.clone(), r2.id.clone()];

    let fe_listener = bind().await;
    let fe_id = NodeId::new(fe_listener.local_addr().unwrap().to_string());
    let config = ClientConfig {
        request_deadline_ms: WAIT_MAX.as_millis() as u64,
        ..ClientConfig::default()
    };
    let client = Client::new(
        fe_id.clone(),
        HttpTransport::new(&key()).unwrap(),
        ids.clone(),
        config,
    );
    // The front end serves the cluster routes too: announcements and service lists reach it there.
    let fe_server = Server::start_on(fe_listener, cluster_router(Arc::new(client.clone()), key()));
    let membership = tokio::spawn(client.clone().run_membership());

    let all = [&r0, &r1, &r2];
    wait_for("r0 primary with all three in sync", &all, |st| {
        st.iter()
            .any(|s| s.role == Role::Primary && s.id == r0.id && s.in_sync.len() == 3)
            && st.iter().all(|s| s.primary.as_ref() == Some(&r0.id))
    })
    .await;

    // Phase: writes through the front end, each answered with the value after it.
    const BEFORE: u64 = 20;
    for i in 0..BEFORE {
        let out: Option<String> = client
            .write(&KvCommand::append("k", format!("{i},")))
            .await
            .unwrap();
        assert_eq!(out.as_deref(), Some(appended(i + 1).as_str()), "write {i}");
    }
    converged_values(&all, "k", &appended(BEFORE)).await;
    let read: Option<String> = client.read(&KvGet("k".into())).await.unwrap();
    assert_eq!(
        read.as_deref(),
        Some(appended(BEFORE).as_str()),
        "read through the front end"
    );
    let old_epoch = r0.node.status().await.unwrap().epoch;

    // Phase: a writer keeps appending while the primary goes away. Its last writes wait until
    // r0 is gone, so they need the new primary however fast the first ones went (a writer that
    // finished before r0 stopped left the front end still pointing at r0).
    const TOTAL: u64 = 60;
    const AFTER_STOP: u64 = BEFORE + 10;
    let (progress_tx, mut progress) = watch::channel(BEFORE);
    let (stopped_tx, mut stopped) = watch::channel(false);
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in BEFORE..TOTAL {
                if i == AFTER_STOP {
                    stopped.wait_for(|s| *s).await.unwrap();
                }
                let out: Option<String> = client
                    .write(&KvCommand::append("k", format!("{i},")))
                    .await
                    .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
                assert_eq!(
                    out.as_deref(),
                    Some(appended(i + 1).as_str()),
                    "write {i} ran exactly once, in order"
                );
                progress_tx.send_replace(i + 1);
            }
        })
    };
    progress.wait_for(|done| *done >= BEFORE + 5).await.unwrap();
    r0.stop().await;
    stopped_tx.send_replace(true);

    // Phase: a secondary takes over in a newer epoch; the front end learns of it.
    let survivors = [&r1, &r2];
    let st = wait_for("a new primary among r1, r2", &survivors, |st| {
        st.iter()
            .any(|s| s.role == Role::Primary && s.epoch > old_epoch)
    })
    .await;
    let new_primary = st
        .iter()
        .find(|s| s.role == Role::Primary)
        .map(|s| s.id.clone())
        .unwrap();
    writer.await.unwrap();
    assert_eq!(
        client.primary(),
        Some(new_primary.clone()),
        "the front end follows the new primary"
    );

    // Phase: both survivors hold every write exactly once.
    converged_values(&survivors, "k", &appended(TOTAL)).await;
    let read: Option<String> = client.read(&KvGet("k".into())).await.unwrap();
    assert_eq!(read.as_deref(), Some(appended(TOTAL).as_str()));

    membership.abort();
    fe_server.stop().await;
    for r in [r1, r2] {
        r.stop().await;
    }
}

/// A replica whose full copy is larger than the receivers accept in one request (a 256 KiB
/// body limit here, against about 2 MB of state) still joins: the copy goes in 64 KiB pieces,
/// each its own request. In one message it would be refused with 413 at every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_larger_than_a_request_goes_in_pieces() {
    let config = Config {
        snapshot_interval_entries: 50,
        log_retain_entries: 10,
        copy_chunk_bytes: 64 << 10,
        ..Config::default()
    };
    let router = RouterOptions {
        body_bytes_max: 256 << 10,
    };
    let start = |primary: bool, seeds: Vec<NodeId>, seed: u64| {
        Replica::start_with(primary, seeds, seed, config.clone(), router.clone())
    };
    let r0 = start(true, Vec::new(), 1).await;
    let r1 = start(false, vec![r0.id.clone()], 2).await;
    wait_for("r0 primary with r1 in sync", &[&r0, &r1], |st| {
        st.iter()
            .any(|s| s.role == Role::Primary && s.id == r0.id && s.in_sync.len() == 2)
    })
    .await;
    let value = "v".repeat(4096);
    for i in 0..500u64 {
        r0.node
            .write(
                uuid::Uuid::from_u64_pair(7, i),
                &KvCommand::put(format!("k{i}"), value.clone()),
            )
            .await
            .unwrap();
    }
    let state_bytes = r0
        .node
        .inspect(|m: &KvMachine| replica_core::StateMachine::snapshot(m).len())
        .await
        .unwrap();
    assert!(
        state_bytes > 4 * router.body_bytes_max,
        "{state_bytes} bytes of state"
    );

    let r2 = start(false, vec![r0.id.clone()], 3).await;
    let all = [&r0, &r1, &r2];
    wait_for("r2 in sync", &all, |st| {
        st.iter()
            .any(|s| s.role == Role::Primary && s.in_sync.len() == 3)
    })
    .await;
    converged_values(&all, "k499", &value).await;
    let r2_status = r2.node.status().await.unwrap();
    assert_eq!(r2_status.snapshots_installed, 1, "r2 got a full copy");
    let pieces = r0
        .node
        .metrics()
        .copy_chunks_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        pieces as usize >= state_bytes / (64 << 10),
        "{pieces} pieces"
    );
    for r in [r0, r1, r2] {
        r.stop().await;
    }
}
