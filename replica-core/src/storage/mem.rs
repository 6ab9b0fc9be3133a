//! An in-memory [`LogStore`] for tests, examples and benchmarks.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{LogStore, Recovered, StorageError, StoreOp};
use crate::types::{Entry, HardState, LogIndex, Snapshot};

/// A [`LogStore`] that keeps everything in memory.
///
/// Clones share the same contents, so a test can keep a handle, drop the replica that used the
/// store, and start a new replica on it: that is a process restart with the disk intact.
/// Appends only become "durable" at `sync`; [`MemLogStore::crash`] throws away what was not
/// synced, which is what a power cut does to a real disk.
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// Every entry held, contiguous: the first `durable` were synced, the rest were appended
    /// since. (One vector and a mark rather than two vectors: a sync then copies nothing.)
    entries: Vec<Entry>,
    /// How many of `entries` were synced.
    durable: usize,
    /// Index the next append must start at.
    next_index: LogIndex,
    syncs: u64,
}

impl Inner {
    fn make_durable(&mut self) {
        self.durable = self.entries.len();
    }

    /// Throw away what was appended since the last sync.
    fn drop_volatile(&mut self) {
        self.entries.truncate(self.durable);
    }

    /// The index after `entries` if they continue the log exactly; nothing changes otherwise.
    fn check_contiguous(&self, entries: &[Entry]) -> Result<LogIndex, StorageError> {
        let mut next = self.next_index;
        for e in entries {
            if e.index != next {
                return Err(StorageError::Invalid(format!(
                    "append of index {} where {} was expected",
                    e.index, next
                )));
            }
            next += 1;
        }
        Ok(next)
    }

    fn recompute_next(&mut self) {
        let after_snapshot = self.snapshot.as_ref().map_or(1, |s| s.last.index + 1);
        self.next_index = self.entries.last().map_or(after_snapshot, |e| e.index + 1);
    }
}

impl MemLogStore {
    /// An empty store.
    pub fn new() -> Self {
        let store = MemLogStore::default();
        store.lock().next_index = 1;
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test thread panicked mid-operation; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget everything appended since the last sync, as a crash would.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.drop_volatile();
        inner.recompute_next();
    }

    /// The durable entries (after the last sync), oldest first.
    pub fn durable_entries(&self) -> Vec<Entry> {
        let inner = self.lock();
        inner.entries[..inner.durable].to_vec()
    }

    /// The last saved snapshot.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.lock().snapshot.clone()
    }

    /// The last saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// How many times `sync` was called: with group commit, far fewer than entries appended.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// `save_snapshot` with the snapshot handed over.
    fn keep_snapshot(
        &mut self,
        snapshot: Snapshot,
        compact_through: LogIndex,
    ) -> Result<(), StorageError> {
        if compact_through > snapshot.last.index {
            return Err(StorageError::Invalid(format!(
                "compaction through {compact_through} beyond snapshot at {}",
                snapshot.last.index
            )));
        }
        let mut inner = self.lock();
        inner.snapshot = Some(snapshot);
        // Sorted by index: cut the covered prefix instead of testing each entry.
        let covered = inner
            .entries
            .partition_point(|e| e.index <= compact_through);
        inner.entries.drain(..covered);
        // Like any save, this one makes the appends before it durable.
        inner.make_durable();
        inner.recompute_next();
        Ok(())
    }
}

#[async_trait]
impl LogStore for MemLogStore {
    fn completes_immediately(&self) -> bool {
        true
    }

    async fn load(&mut self) -> Result<Recovered, StorageError> {
        let mut inner = self.lock();
        inner.drop_volatile();
        inner.recompute_next();
        Ok(Recovered {
            hard_state: inner.hard_state,
            snapshot: inner.snapshot.clone(),
            entries: inner.entries.clone(),
        })
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.next_index = inner.check_contiguous(entries)?;
        inner.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Keeps appended entries and saved snapshots as given, without copying them.
    async fn execute_owned(&mut self, op: StoreOp) -> Result<(), StorageError> {
        match op {
            StoreOp::Append(entries) => {
                let mut inner = self.lock();
                inner.next_index = inner.check_contiguous(&entries)?;
                inner.entries.extend(entries);
                Ok(())
            }
            StoreOp::Snapshot {
                snapshot,
                compact_through,
            } => self.keep_snapshot(*snapshot, compact_through),
            other => self.execute(&other).await,
        }
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.make_durable();
        inner.syncs += 1;
        Ok(())
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        // Like the file store: what survives a crash is a prefix of the operations, so the
        // appends before this save become durable with it.
        let mut inner = self.lock();
        inner.make_durable();
        inner.hard_state = *hs;
        Ok(())
    }

    async fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_through: LogIndex,
    ) -> Result<(), StorageError> {
        self.keep_snapshot(snapshot.clone(), compact_through)
    }

    async fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.snapshot = Some(snapshot.clone());
        inner.entries.clear();
        inner.durable = 0;
        inner.next_index = snapshot.last.index + 1;
        Ok(())
    }
}
