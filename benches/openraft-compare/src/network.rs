//! The in-process network of openraft's cluster benchmark: an RPC is a direct call of the target
//! node's `Raft` method with the request as it is (no serialization, no copy, no channel of our
//! own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft};

use crate::store::{LogStore, NodeId, StateMachineStore, TypeConfig};

/// A node of the benchmark cluster.
pub type BenchRaft = Raft<TypeConfig>;

/// Appends sent to followers that carried entries, and the entries they carried.
#[derive(Default)]
pub struct AppendStats {
    /// Non-empty append-entries calls.
    pub appends: AtomicU64,
    /// Entries in them.
    pub entries: AtomicU64,
}

/// Every node of the cluster by id; the network factory of each node.
#[derive(Clone, Default)]
pub struct Router {
    table: Arc<Mutex<BTreeMap<NodeId, BenchRaft>>>,
    /// Counted on every append-entries call, for the batching figure.
    pub stats: Arc<AppendStats>,
}

/// A started cluster: the router and each node's state machine.
pub struct Cluster {
    /// The nodes.
    pub router: Router,
    /// Each node's state machine, by id.
    pub state_machines: BTreeMap<NodeId, Arc<StateMachineStore>>,
}

impl Router {
    /// The node `id`, if the cluster has it.
    pub fn get(&self, id: NodeId) -> Option<BenchRaft> {
        self.table.lock().ok()?.get(&id).cloned()
    }

    /// Every node.
    pub fn all(&self) -> Vec<BenchRaft> {
        self.table
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Starts one node per id in `voters`, initializes node 0 with all of them as voters (so it is
/// elected leader), and waits until every node has applied the initial membership (log index 1:
/// index 0 is the membership, index 1 the leader's blank entry).
///
/// Node `id` runs on `runtimes[id]` (its core task, and the replication tasks it spawns as
/// leader); with no runtimes given, on the caller's.
pub async fn new_cluster(
    config: Arc<Config>,
    voters: BTreeSet<NodeId>,
    runtimes: &[tokio::runtime::Handle],
) -> Result<Cluster, String> {
    let router = Router::default();
    let mut rafts = BTreeMap::new();
    let mut state_machines = BTreeMap::new();
    for &id in &voters {
        let log_store = Arc::new(LogStore::default());
        let sm = Arc::new(StateMachineStore::default());
        let start = Raft::new(id, config.clone(), router.clone(), log_store, sm.clone());
        let started = match usize::try_from(id).ok().and_then(|i| runtimes.get(i)) {
            // Raft::new spawns the node's tasks on the runtime it runs in.
            Some(rt) => rt
                .spawn(start)
                .await
                .map_err(|e| format!("cannot start node {id}: {e}"))?,
            None => start.await,
        };
        let raft = started.map_err(|e| format!("cannot start node {id}: {e}"))?;
        rafts.insert(id, raft);
        state_machines.insert(id, sm);
    }
    *router
        .table
        .lock()
        .map_err(|_| "router table poisoned".to_string())? = rafts.clone();

    let first = rafts
        .get(&0)
        .ok_or_else(|| "the cluster has no node 0".to_string())?;
    first
        .initialize(voters.clone())
        .await
        .map_err(|e| format!("cannot initialize the cluster: {e}"))?;
    for (id, raft) in &rafts {
        raft.wait(Some(Duration::from_secs(10)))
            .applied_index(Some(1), "initial membership and leader's blank entry")
            .await
            .map_err(|e| format!("node {id} did not apply the initial log: {e}"))?;
    }
    Ok(Cluster {
        router,
        state_machines,
    })
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, _node: &()) -> Self::Network {
        Network {
            target,
            target_raft: self.get(target),
            stats: self.stats.clone(),
        }
    }
}

/// The connection to one node: a clone of its `Raft` handle.
pub struct Network {
    target: NodeId,
    target_raft: Option<BenchRaft>,
    stats: Arc<AppendStats>,
}

#[derive(Debug)]
struct NoSuchNode(NodeId);

impl std::fmt::Display for NoSuchNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} is not in the cluster", self.0)
    }
}

impl std::error::Error for NoSuchNode {}

impl Network {
    // The error type is openraft's, returned as its RaftNetwork methods return it.
    #[allow(clippy::result_large_err)]
    fn target<E: std::error::Error>(&self) -> Result<&BenchRaft, RPCError<NodeId, (), E>> {
        self.target_raft
            .as_ref()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&NoSuchNode(self.target))))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, (), RaftError<NodeId>>> {
        let n = rpc.entries.len() as u64;
        if n > 0 {
            self.stats.appends.fetch_add(1, Ordering::Relaxed);
            self.stats.entries.fetch_add(n, Ordering::Relaxed);
        }
        self.target()?
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, (), RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.target()?
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, (), RaftError<NodeId>>> {
        self.target()?
            .vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}
