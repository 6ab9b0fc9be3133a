//! Where the log, the snapshots and the hard state live.
//!
//! The protocol core never touches storage itself: it emits [`StoreOp`]s in order, the runtime
//! executes them against a [`LogStore`] on its own task, and reports back when they are durable.
//! Only then does a secondary acknowledge an append, or the primary count its own copy.

use async_trait::async_trait;

use crate::types::{Entry, HardState, LogIndex, Snapshot};

pub mod file;
#[cfg(feature = "testing")]
mod mem;
pub use file::{FileLogStore, FileStoreOptions};
#[cfg(feature = "testing")]
pub use mem::MemLogStore;

/// Everything a store hands back at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last saved hard state (zeroes for a new store).
    pub hard_state: HardState,
    /// The newest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The durable log: contiguous indices, oldest first. It may start before the snapshot's last
    /// index (entries retained for catch-up) but never after `snapshot.last.index + 1`.
    pub entries: Vec<Entry>,
}

/// One storage operation, as the core emits it. Executed strictly in emission order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Append entries after the current last entry. Durable after the next `sync`.
    Append(Vec<Entry>),
    /// Save the hard state (atomic, durable on return).
    HardState(HardState),
    /// Save a snapshot taken by this replica, then drop log entries up to `compact_through`.
    Snapshot {
        /// The snapshot to save (atomic, durable on return).
        snapshot: Box<Snapshot>,
        /// Entries with index ≤ this may be discarded (≤ `snapshot.last.index`).
        compact_through: LogIndex,
    },
    /// Replace the whole log with a snapshot received from the primary.
    Install(Box<Snapshot>),
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation.
    #[error("i/o error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed validation somewhere other than a torn tail. The replica must not serve
    /// from it; it needs a full copy from the primary.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file that holds the bad record.
        file: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The caller broke the contract (for example a non-contiguous append).
    #[error("invalid storage operation: {0}")]
    Invalid(String),
}

/// Durable home of a replica's log, snapshots and hard state.
///
/// # Correctness requirements
///
/// - **Order.** Operations take effect in call order. After a crash, what `load` returns is the
///   result of some prefix of the operations, and includes at least every operation before the
///   last successful `sync` (and every `save_hard_state`, `save_snapshot` and `install_snapshot`
///   that returned `Ok`).
/// - **Contiguity.** `append` receives entries whose indices continue the log exactly (the first
///   is `last_index + 1`, or `snapshot.last.index + 1` right after an install); anything else is
///   `StorageError::Invalid` and changes nothing.
/// - **Atomicity.** Hard state and snapshots are replaced atomically: a crash leaves the old or
///   the new one, never a mix.
/// - **Install is total.** After `install_snapshot` returns, no `load` — even after a crash at any
///   later point — returns entries that were in the log before the install.
/// - **Honest errors.** Corruption is reported as [`StorageError::Corrupt`]; a torn tail (a
///   partial or checksum-failing last record, as a crash mid-write leaves) is cut off at the last
///   good record with a warning, since it was never acknowledged.
#[async_trait]
pub trait LogStore: Send + 'static {
    /// Read back everything durable. Called once, before any other operation.
    async fn load(&mut self) -> Result<Recovered, StorageError>;

    /// Append entries (see the contiguity requirement). Durable once `sync` returns.
    async fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Make every earlier `append` durable. One sync covers a whole batch: group commit.
    async fn sync(&mut self) -> Result<(), StorageError>;

    /// Replace the hard state; durable on return.
    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError>;

    /// Save a snapshot of this replica's own applied state; durable on return. Then entries with
    /// index ≤ `compact_through` may be discarded (they are covered by the snapshot).
    async fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_through: LogIndex,
    ) -> Result<(), StorageError>;

    /// Replace everything with a snapshot from the primary; durable on return. The next append
    /// starts at `snapshot.last.index + 1`.
    async fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// Whether every operation completes at once, without waiting on I/O (an in-memory store).
    /// The runtime then executes operations on the replica's own task, right after the turn
    /// that emitted them, instead of on a store task: two task hand-offs fewer per batch. A
    /// store that waits on a disk must leave this `false`: on the replica's task, a slow sync
    /// would also hold up heartbeats and elections.
    fn completes_immediately(&self) -> bool {
        false
    }

    /// Execute one [`StoreOp`]. Appends are not synced here; the runtime calls `sync` once after a
    /// run of operations.
    async fn execute(&mut self, op: &StoreOp) -> Result<(), StorageError> {
        match op {
            StoreOp::Append(entries) => self.append(entries).await,
            StoreOp::HardState(hs) => self.save_hard_state(hs).await,
            StoreOp::Snapshot {
                snapshot,
                compact_through,
            } => self.save_snapshot(snapshot, *compact_through).await,
            StoreOp::Install(snapshot) => self.install_snapshot(snapshot).await,
        }
    }

    /// [`LogStore::execute`], handing the operation over: the runtime calls this one. The
    /// default borrows it and drops it. A store that keeps what it is given (in memory)
    /// overrides it to keep the entries and snapshots themselves instead of copies — in the
    /// replication benchmark those copies were a twentieth of the write path. An override must
    /// do exactly what `execute` does, refusals included (the conformance suite checks it).
    async fn execute_owned(&mut self, op: StoreOp) -> Result<(), StorageError> {
        self.execute(&op).await
    }
}
