//! Shared pieces of the benchmarks.

pub mod http_cluster;

use replica_core::{SnapshotError, StateMachine};

/// The empty state machine of the openraft-style benchmark: applies nothing, answers nothing.
/// What remains to measure is the replication itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Noop;

impl StateMachine for Noop {
    type Command = ();
    type Output = ();
    type Query = ();
    type Answer = ();

    fn apply(&mut self, _: &()) {}

    fn query(&self, _: &()) {}

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// Start `members` replicas of [`Noop`] in one process over a [`replica_core::MemNetwork`] (with
/// [`replica_core::MemLogStore`]s), `n0` the initial primary, and wait until all of them are in
/// its in-sync set (at most 30 s). The setup of the openraft-style benchmarks.
pub async fn start_noop_cluster(
    members: usize,
    config: replica_core::Config,
) -> Result<Vec<replica_core::NodeHandle<Noop>>, String> {
    start_noop_cluster_on(members, config, &[tokio::runtime::Handle::current()]).await
}

/// [`start_noop_cluster`], with replica `i` started on `runtimes[i % runtimes.len()]` (its tasks
/// run there): one runtime per replica gives each its own thread, as separate machines would.
pub async fn start_noop_cluster_on(
    members: usize,
    config: replica_core::Config,
    runtimes: &[tokio::runtime::Handle],
) -> Result<Vec<replica_core::NodeHandle<Noop>>, String> {
    use replica_core::{MemLogStore, MemNetwork, Node, NodeId, NodeOptions, Role};
    if runtimes.is_empty() {
        return Err("no runtime to start replicas on".into());
    }
    let net = MemNetwork::new(1);
    let mut nodes = Vec::new();
    for i in 0..members {
        let id = NodeId::new(format!("n{i}"));
        let opts = NodeOptions {
            id: id.clone(),
            config: config.clone(),
            state_machine: Noop,
            store: MemLogStore::new(),
            transport: net.transport(id.clone()),
            initial_primary: i == 0,
            seeds: if i == 0 {
                vec![]
            } else {
                vec![NodeId::new("n0")]
            },
            rng_seed: i as u64,
        };
        let node = runtimes[i % runtimes.len()]
            .spawn(Node::start(opts))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        net.register(id, std::sync::Arc::new(node.clone()));
        nodes.push(node);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = nodes[0].status().await.map_err(|e| e.to_string())?;
        if st.role == Role::Primary && st.in_sync.len() == members {
            return Ok(nodes);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("cluster did not form: {st:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
