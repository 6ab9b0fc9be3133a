//! Building blocks for tests of replicated applications: a key-value state machine and an
//! in-process cluster with crash, restart and partition controls.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use replica_core::testing::{Cluster, KvCommand};
//! let cluster = Cluster::start(3).await;
//! cluster.wait_in_sync(3).await;
//! let client = cluster.client("fe");
//! let old: Option<String> = client.write(&KvCommand::put("k", "v")).await.unwrap();
//! assert_eq!(old, None);
//! # });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientConfig};
use crate::config::Config;
use crate::node::{Node, NodeHandle, NodeOptions};
use crate::protocol::Status;
use crate::state_machine::{SnapshotError, StateMachine};
use crate::storage::MemLogStore;
use crate::transport::{MemNetwork, MemTransport};
use crate::types::{NodeId, Role};

/// A write to [`KvMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set `key` to `value`; the output is the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Append `suffix` to the value of `key`; the output is the new value. Not idempotent, which
    /// is what makes it useful for catching double execution.
    Append {
        /// The key.
        key: String,
        /// What to append.
        suffix: String,
    },
}

impl KvCommand {
    /// A `Put`.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// An `Append`.
    pub fn append(key: impl Into<String>, suffix: impl Into<String>) -> Self {
        KvCommand::Append {
            key: key.into(),
            suffix: suffix.into(),
        }
    }
}

/// A read from [`KvMachine`]: the value of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvGet(pub String);

/// A deterministic key-value store: the smallest useful [`StateMachine`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMachine {
    /// The data (a `BTreeMap`, so snapshots are byte-for-byte deterministic).
    pub data: BTreeMap<String, String>,
    /// Commands applied, for tests that count executions.
    pub applied: u64,
}

impl StateMachine for KvMachine {
    type Command = KvCommand;
    type Output = Option<String>;
    type Query = KvGet;
    type Answer = Option<String>;

    fn apply(&mut self, cmd: &KvCommand) -> Option<String> {
        self.applied += 1;
        match cmd {
            KvCommand::Put { key, value } => self.data.insert(key.clone(), value.clone()),
            KvCommand::Append { key, suffix } => {
                let v = self.data.entry(key.clone()).or_default();
                v.push_str(suffix);
                Some(v.clone())
            }
        }
    }

    fn query(&self, q: &KvGet) -> Option<String> {
        self.data.get(&q.0).cloned()
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        *self = postcard::from_bytes(snapshot).map_err(|e| SnapshotError(e.to_string()))?;
        Ok(())
    }
}

/// One replica slot of a [`Cluster`].
struct Slot {
    id: NodeId,
    store: MemLogStore,
    handle: Option<NodeHandle<KvMachine>>,
}

/// An in-process cluster of [`KvMachine`] replicas over a [`MemNetwork`], each with a
/// [`MemLogStore`] that survives crashes of its replica.
///
/// Replica `i` is named `r{i}`; `r0` is the initial primary. Use it under
/// `#[tokio::test(start_paused = true)]`: time then advances only when every task waits, so
/// timeouts are deterministic and tests run fast.
pub struct Cluster {
    /// The network; use it to cut links, hold messages or inject faults.
    pub net: MemNetwork,
    /// The configuration every replica gets.
    pub config: Config,
    slots: Mutex<Vec<Slot>>,
}

/// How long [`Cluster`] waits for a condition before failing the test (simulated time).
pub const WAIT_MAX: Duration = Duration::from_secs(60);

impl Cluster {
    /// Start `n` replicas with the default configuration.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Config::default(), 7).await
    }

    /// Start `n` replicas with `config`; `seed` drives the network's faults and the jitter.
    pub async fn start_with(n: usize, config: Config, seed: u64) -> Self {
        let cluster = Cluster {
            net: MemNetwork::new(seed),
            config,
            slots: Mutex::new(Vec::new()),
        };
        for i in 0..n {
            cluster.add_replica_named(&format!("r{i}")).await;
        }
        cluster
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of all replica slots (running or not).
    pub fn ids(&self) -> Vec<NodeId> {
        self.slots().iter().map(|s| s.id.clone()).collect()
    }

    /// Add and start a new, empty replica that greets `r0`.
    pub async fn add_replica_named(&self, name: &str) -> NodeId {
        let id = NodeId::new(name);
        let store = MemLogStore::new();
        self.slots().push(Slot {
            id: id.clone(),
            store,
            handle: None,
        });
        self.boot(&id).await;
        id
    }

    async fn boot(&self, id: &NodeId) {
        let (store, index) = {
            let slots = self.slots();
            let index = slots.iter().position(|s| s.id == *id).unwrap_or(0);
            (slots[index].store.clone(), index)
        };
        let seeds = if index == 0 {
            Vec::new()
        } else {
            vec![NodeId::new("r0")]
        };
        let opts = NodeOptions {
            id: id.clone(),
            config: self.config.clone(),
            state_machine: KvMachine::default(),
            store,
            transport: self.net.transport(id.clone()),
            initial_primary: index == 0,
            seeds,
            rng_seed: 1000 + index as u64,
        };
        let handle = match Node::start(opts).await {
            Ok(h) => h,
            Err(e) => panic!("replica {id} failed to start: {e}"),
        };
        self.net.register(id.clone(), Arc::new(handle.clone()));
        if let Some(slot) = self.slots().iter_mut().find(|s| s.id == *id) {
            slot.handle = Some(handle);
        }
    }

    /// The handle of a running replica.
    pub fn node(&self, id: &NodeId) -> Option<NodeHandle<KvMachine>> {
        self.slots()
            .iter()
            .find(|s| s.id == *id)
            .and_then(|s| s.handle.clone())
    }

    /// The store of a replica (running or not).
    pub fn store(&self, id: &NodeId) -> MemLogStore {
        self.slots()
            .iter()
            .find(|s| s.id == *id)
            .map(|s| s.store.clone())
            .unwrap_or_default()
    }

    /// Kill a replica like `kill -9`: its tasks stop mid-flight and whatever its store had not
    /// synced is lost.
    pub fn crash(&self, id: &NodeId) {
        self.net.unregister(id);
        let mut slots = self.slots();
        if let Some(slot) = slots.iter_mut().find(|s| s.id == *id) {
            if let Some(h) = slot.handle.take() {
                h.stop();
            }
            slot.store.crash();
        }
    }

    /// Start a crashed replica again from its store.
    pub async fn restart(&self, id: &NodeId) {
        self.boot(id).await;
    }

    /// Status of every running replica.
    pub async fn statuses(&self) -> Vec<Status> {
        let handles: Vec<_> = self
            .slots()
            .iter()
            .filter_map(|s| s.handle.clone())
            .collect();
        let mut out = Vec::new();
        for h in handles {
            if let Ok(s) = h.status().await {
                out.push(s);
            }
        }
        out
    }

    /// The running primary with the highest epoch, if any.
    pub async fn primary(&self) -> Option<NodeId> {
        self.statuses()
            .await
            .into_iter()
            .filter(|s| s.role == Role::Primary)
            .max_by_key(|s| s.epoch)
            .map(|s| s.id)
    }

    /// A front-end client named `name`, registered on the network so announcements reach it.
    pub fn client(&self, name: &str) -> Client<MemTransport> {
        self.client_with(
            name,
            ClientConfig {
                generation: 1,
                ..ClientConfig::default()
            },
        )
    }

    /// A client with a custom configuration.
    pub fn client_with(&self, name: &str, cfg: ClientConfig) -> Client<MemTransport> {
        let id = NodeId::new(name);
        let client = Client::new(id.clone(), self.net.transport(id.clone()), self.ids(), cfg);
        self.net.register(id, Arc::new(client.clone()));
        client
    }

    /// Wait (in simulated time, at most [`WAIT_MAX`]) until `cond` holds on the statuses of the
    /// running replicas; panics with `what` if it never does.
    pub async fn wait_for(&self, what: &str, mut cond: impl FnMut(&[Status]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            let st = self.statuses().await;
            if cond(&st) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for: {what}\nstatuses: {st:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until a primary's in-sync set has `n` members and every running replica has
    /// applied everything the primary committed.
    pub async fn wait_in_sync(&self, n: usize) {
        self.wait_for(&format!("{n} replicas in sync"), |st| {
            let Some(p) = st
                .iter()
                .filter(|s| s.role == Role::Primary)
                .max_by_key(|s| s.epoch)
            else {
                return false;
            };
            p.in_sync.len() == n
                && st
                    .iter()
                    .all(|s| s.applied.index >= p.commit && s.epoch == p.epoch)
        })
        .await;
    }

    /// Wait until every running replica has applied exactly the same entries (same last applied
    /// position) and that position is at least `min_index`.
    pub async fn wait_converged(&self, min_index: u64) {
        self.wait_for("replicas converged", |st| {
            !st.is_empty()
                && st
                    .iter()
                    .all(|s| s.applied == st[0].applied && s.applied.index >= min_index)
        })
        .await;
    }

    /// The applied state of every running replica.
    pub async fn states(&self) -> Vec<(NodeId, KvMachine)> {
        let handles: Vec<_> = self
            .slots()
            .iter()
            .filter_map(|s| s.handle.clone())
            .collect();
        let mut out = Vec::new();
        for h in handles {
            if let Ok(m) = h.inspect(|m: &KvMachine| m.clone()).await {
                out.push((h.id().clone(), m));
            }
        }
        out
    }
}

/// Run `fut` to completion on a current-thread runtime with paused time (for doctests and
/// examples that are not themselves async).
pub fn block_on_paused<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    }
}
