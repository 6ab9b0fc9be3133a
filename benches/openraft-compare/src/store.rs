//! The in-memory log store and the state machine that applies nothing, as in openraft's own
//! cluster benchmark: the log is a `BTreeMap` under a tokio `RwLock`, the state machine keeps only
//! the last applied log id and the last membership, and a snapshot carries no data (the snapshot's
//! meta holds all the state there is).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership, Vote,
};
use tokio::sync::RwLock;

/// Node ids are `u64`, node addresses nothing (the network looks nodes up by id).
pub type NodeId = u64;

/// An empty client request.
#[derive(Debug, Clone)]
pub struct ClientRequest {}

/// An empty response.
#[derive(Debug, Clone)]
pub struct ClientResponse {}

openraft::declare_raft_types!(
    /// The benchmark's type configuration: empty requests and responses, `()` as node data,
    /// everything else openraft's defaults (`Entry`, `Cursor<Vec<u8>>` snapshots, tokio).
    pub TypeConfig:
        D = ClientRequest,
        R = ClientResponse,
        NodeId = NodeId,
        Node = (),
);

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The in-memory log of one node.
#[derive(Default)]
pub struct LogStore {
    vote: RwLock<Option<Vote<NodeId>>>,
    log: RwLock<BTreeMap<u64, Entry<TypeConfig>>>,
    last_purged_log_id: RwLock<Option<LogId<NodeId>>>,
}

impl RaftLogReader<TypeConfig> for Arc<LogStore> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let log = self.log.read().await;
        Ok(log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for Arc<LogStore> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged = *self.last_purged_log_id.read().await;
        let last = self.log.read().await.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        *self.vote.write().await = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(*self.vote.read().await)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut log = self.log.write().await;
            log.extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        }
        // In memory: "flushed" as soon as it is in the map.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.log.write().await.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        *self.last_purged_log_id.write().await = Some(log_id);
        let mut log = self.log.write().await;
        *log = log.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[derive(Default)]
struct Applied {
    last_applied_log: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, ()>,
}

/// The state machine of one node: applies nothing, counts the normal (client) entries it was
/// handed, so the benchmark can check that every write was committed exactly once.
#[derive(Default)]
pub struct StateMachineStore {
    sm: RwLock<Applied>,
    snapshot_idx: AtomicU64,
    current_snapshot: RwLock<Option<SnapshotMeta<NodeId, ()>>>,
    normal_applied: AtomicU64,
}

impl StateMachineStore {
    /// Client entries applied so far.
    pub fn normal_applied(&self) -> u64 {
        self.normal_applied.load(Ordering::Relaxed)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Arc<StateMachineStore> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (last_log_id, last_membership) = {
            let sm = self.sm.read().await;
            (sm.last_applied_log, sm.last_membership.clone())
        };
        let idx = self.snapshot_idx.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{idx}", l.leader_id, l.index),
            None => format!("--{idx}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        *self.current_snapshot.write().await = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Arc<StateMachineStore> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, ()>)> {
        let sm = self.sm.read().await;
        Ok((sm.last_applied_log, sm.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ClientResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = self.sm.write().await;
        let it = entries.into_iter();
        let mut res = Vec::with_capacity(it.size_hint().0);
        let mut normal = 0;
        for entry in it {
            sm.last_applied_log = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(_) => normal += 1,
                EntryPayload::Membership(mem) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), mem);
                }
            }
            res.push(ClientResponse {});
        }
        self.normal_applied.fetch_add(normal, Ordering::Relaxed);
        Ok(res)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ()>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        {
            let mut sm = self.sm.write().await;
            sm.last_applied_log = meta.last_log_id;
            sm.last_membership = meta.last_membership.clone();
        }
        *self.current_snapshot.write().await = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self
            .current_snapshot
            .read()
            .await
            .clone()
            .map(|meta| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }))
    }
}
