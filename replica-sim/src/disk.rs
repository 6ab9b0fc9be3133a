//! A simulated disk per replica: storage operations run in order, become durable only at a
//! simulated fsync, and a crash loses everything not yet synced.
//!
//! Invariant: [`SimDisk::recover`] returns the result of a prefix of the operations the replica
//! emitted, and that prefix includes every operation covered by a completed sync — exactly the
//! `LogStore` contract (replica-core `storage/mod.rs`), and nothing more generous. A torn crash
//! (optional per seed) keeps a random prefix of the unsynced operations, which the contract also
//! allows.

use replica_core::storage::{Recovered, StoreOp};
use replica_core::types::{Entry, HardState, LogIndex, Snapshot};

/// What survives a crash: the durable image of one replica's store.
#[derive(Clone, Debug, Default)]
struct Image {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// Contiguous entries, oldest first. May start before the snapshot's last index.
    entries: Vec<Entry>,
}

impl Image {
    fn next_index(&self) -> LogIndex {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => e.index + 1,
            (None, Some(s)) => s.last.index + 1,
            (None, None) => 1,
        }
    }

    /// Execute one operation. Contract breaches by the core are reported, not executed.
    fn apply(&mut self, op: StoreOp) -> Result<(), String> {
        match op {
            StoreOp::Append(entries) => {
                let first = self.next_index();
                for (expected, e) in (first..).zip(entries.iter()) {
                    if e.index != expected {
                        return Err(format!(
                            "append of index {} where {expected} was expected",
                            e.index
                        ));
                    }
                }
                self.entries.extend(entries);
            }
            StoreOp::HardState(hs) => self.hard_state = hs,
            StoreOp::Snapshot {
                snapshot,
                compact_through,
            } => {
                if compact_through > snapshot.last.index {
                    return Err(format!(
                        "compaction through {compact_through} beyond snapshot at {}",
                        snapshot.last.index
                    ));
                }
                self.entries.retain(|e| e.index > compact_through);
                self.snapshot = Some(*snapshot);
            }
            StoreOp::Install(snapshot) => {
                self.entries.clear();
                self.snapshot = Some(*snapshot);
            }
        }
        Ok(())
    }
}

/// One replica's disk: a durable image plus the operations issued since the last sync.
#[derive(Debug, Default)]
pub struct SimDisk {
    durable: Image,
    /// Issued, not yet synced: `(seq, op)` in issue order.
    pending: Vec<(u64, StoreOp)>,
    /// Index the next append must start at, counting pending operations (contract check at
    /// issue time, so a breach is reported where it happens).
    next_index: LogIndex,
    /// Completed syncs, for statistics.
    pub syncs: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk {
            next_index: 1,
            ..SimDisk::default()
        }
    }

    /// Accept an operation from the core. It is not durable until [`SimDisk::sync`].
    ///
    /// Returns an error when the core broke the store contract (a non-contiguous append, a
    /// compaction beyond its snapshot); the operation is then dropped, as a real store refuses it.
    pub fn issue(&mut self, seq: u64, op: StoreOp) -> Result<(), String> {
        match &op {
            StoreOp::Append(entries) => {
                let mut next = self.next_index;
                for e in entries {
                    if e.index != next {
                        return Err(format!(
                            "append of index {} where {next} was expected",
                            e.index
                        ));
                    }
                    next += 1;
                }
                self.next_index = next;
            }
            StoreOp::Install(s) => self.next_index = s.last.index + 1,
            StoreOp::Snapshot {
                snapshot,
                compact_through,
            } => {
                if *compact_through > snapshot.last.index {
                    return Err(format!(
                        "compaction through {compact_through} beyond snapshot at {}",
                        snapshot.last.index
                    ));
                }
            }
            StoreOp::HardState(_) => {}
        }
        self.pending.push((seq, op));
        Ok(())
    }

    /// Whether operations wait for a sync.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// fsync: every pending operation becomes durable. Returns the last sequence number covered
    /// (what the core gets as `Input::Persisted`), or `None` when nothing was pending.
    pub fn sync(&mut self) -> Result<Option<u64>, String> {
        let mut last = None;
        for (seq, op) in std::mem::take(&mut self.pending) {
            self.durable.apply(op)?;
            last = Some(seq);
        }
        self.syncs += 1;
        Ok(last)
    }

    /// Power cut: unsynced operations are lost, except the first `keep` of them (a torn crash
    /// keeps some prefix, which the store contract allows).
    pub fn crash(&mut self, keep: usize) -> Result<(), String> {
        let pending = std::mem::take(&mut self.pending);
        for (_, op) in pending.into_iter().take(keep) {
            self.durable.apply(op)?;
        }
        self.next_index = self.durable.next_index();
        Ok(())
    }

    /// Number of unsynced operations (a torn crash keeps a prefix of them).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// What a restarted replica reads back: the durable image only.
    pub fn recover(&self) -> Recovered {
        Recovered {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
        }
    }

    /// The durable hard state (for the epoch-monotonicity check across restarts).
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use replica_core::types::{LogPos, Payload};
    use uuid::Uuid;

    fn e(index: u64) -> Entry {
        Entry {
            index,
            lamport: index,
            epoch: 1,
            id: Uuid::from_u128(u128::from(index)),
            payload: Payload::Command(Bytes::new()),
        }
    }

    /// Unsynced operations vanish on a crash; synced ones survive; a torn crash keeps a prefix.
    #[test]
    fn crash_loses_exactly_the_unsynced_suffix() {
        let mut d = SimDisk::new();
        d.issue(1, StoreOp::Append(vec![e(1), e(2)])).unwrap();
        assert_eq!(d.sync().unwrap(), Some(1));
        d.issue(2, StoreOp::Append(vec![e(3)])).unwrap();
        d.issue(
            3,
            StoreOp::HardState(HardState {
                epoch: 2,
                commit: 3,
                generation: 1,
            }),
        )
        .unwrap();
        d.crash(0).unwrap();
        let r = d.recover();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.hard_state, HardState::default());

        d.issue(4, StoreOp::Append(vec![e(3)])).unwrap();
        d.issue(5, StoreOp::Append(vec![e(4)])).unwrap();
        d.crash(1).unwrap();
        assert_eq!(
            d.recover().entries.last().map(|e| e.index),
            Some(3),
            "torn: prefix of one"
        );
    }

    /// A non-contiguous append is a contract breach, reported at issue time.
    #[test]
    fn non_contiguous_append_is_refused() {
        let mut d = SimDisk::new();
        assert!(d.issue(1, StoreOp::Append(vec![e(2)])).is_err());
        assert!(!d.has_pending());
    }

    /// Install replaces the log; compaction keeps the retained suffix.
    #[test]
    fn install_and_compaction() {
        let mut d = SimDisk::new();
        d.issue(1, StoreOp::Append((1..=5).map(e).collect()))
            .unwrap();
        let snap = |i: u64| Snapshot {
            last: LogPos {
                index: i,
                epoch: 1,
                lamport: i,
                ..LogPos::ZERO
            },
            ..Snapshot::default()
        };
        d.issue(
            2,
            StoreOp::Snapshot {
                snapshot: Box::new(snap(4)),
                compact_through: 2,
            },
        )
        .unwrap();
        d.sync().unwrap();
        let r = d.recover();
        assert_eq!(
            r.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        d.issue(3, StoreOp::Install(Box::new(snap(9)))).unwrap();
        d.issue(4, StoreOp::Append(vec![e(10)])).unwrap();
        d.sync().unwrap();
        let r = d.recover();
        assert_eq!(r.snapshot.map(|s| s.last.index), Some(9));
        assert_eq!(r.entries.iter().map(|e| e.index).collect::<Vec<_>>(), [10]);
    }
}
