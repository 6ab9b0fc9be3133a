//! The in-memory tail of the log that the core reads from: for catch-up and for applying.
//!
//! Invariant: `entries` are contiguous and start right after `base`; `base` is the position of the
//! last entry covered by a snapshot or compacted away (or `LogPos::ZERO`).

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, LogPos};

/// Contiguous entries after a known base position.
#[derive(Debug, Default)]
pub(crate) struct Log {
    base: LogPos,
    entries: VecDeque<Entry>,
    /// Position of the last entry, or `base` when empty: read several times per write, so kept
    /// rather than recomputed from the back of the ring.
    last: LogPos,
}

impl Log {
    /// A log that starts after `base` and holds `entries`, which should continue it. Entries
    /// from the first one that does not continue the log on are dropped; the count is returned
    /// (a non-zero count after recovery means the store broke its contiguity contract).
    pub(crate) fn from_parts(base: LogPos, entries: Vec<Entry>) -> (Log, usize) {
        let mut log = Log {
            base,
            entries: VecDeque::with_capacity(entries.len()),
            last: base,
        };
        let total = entries.len();
        for e in entries {
            if e.index != log.last.index + 1 {
                break;
            }
            log.last = e.pos();
            log.entries.push_back(e);
        }
        let dropped = total - log.entries.len();
        (log, dropped)
    }

    /// Position of the last entry (the base when empty).
    pub(crate) fn last(&self) -> LogPos {
        self.last
    }

    /// Position of the entry before the first one held.
    pub(crate) fn base(&self) -> LogPos {
        self.base
    }

    /// Position at `index`, if known: the base, or a held entry.
    pub(crate) fn pos_at(&self, index: LogIndex) -> Option<LogPos> {
        if index == self.base.index {
            return Some(self.base);
        }
        self.get(index).map(Entry::pos)
    }

    /// The entry at `index`, if held.
    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.base.index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Append one entry. Panics if it does not continue the log: the core only appends entries
    /// it has checked, so a gap here is a bug, not bad input.
    pub(crate) fn push(&mut self, entry: Entry) {
        let last = self.last;
        assert_eq!(entry.index, last.index + 1, "log append must be contiguous");
        assert!(
            entry.lamport > last.lamport || last.index == 0,
            "lamport must increase"
        );
        self.last = entry.pos();
        self.entries.push_back(entry);
    }

    /// Up to `max_entries` entries from `from` on, stopping before `max_bytes` is exceeded (but
    /// always at least one entry if any exists).
    pub(crate) fn slice(&self, from: LogIndex, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut bytes = 0;
        let Some(offset) = from.checked_sub(self.base.index + 1) else {
            return Vec::new();
        };
        let Ok(offset) = usize::try_from(offset) else {
            return Vec::new();
        };
        let mut out =
            Vec::with_capacity(max_entries.min(self.entries.len().saturating_sub(offset)));
        for e in self.entries.iter().skip(offset).take(max_entries) {
            let size = e.size_hint();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(e.clone());
        }
        out
    }

    /// Drop entries up to and including `index` (which must be held); it becomes the base.
    pub(crate) fn compact_through(&mut self, index: LogIndex) {
        // Indices are dense: the entries to drop are the first `index - base` ones.
        let count = usize::try_from(index.saturating_sub(self.base.index))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        if let Some(new_base) = count.checked_sub(1).and_then(|i| self.entries.get(i)) {
            self.base = new_base.pos();
            self.entries.drain(..count);
        }
    }

    /// Forget everything and start after `base` (a snapshot was installed).
    pub(crate) fn reset(&mut self, base: LogPos) {
        self.entries.clear();
        self.base = base;
        self.last = base;
    }

    /// Entries after `index` (exclusive), oldest first.
    pub(crate) fn iter_after(&self, index: LogIndex) -> impl Iterator<Item = &Entry> {
        let skip = index.saturating_sub(self.base.index) as usize;
        self.entries.iter().skip(skip)
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;
    use bytes::Bytes;
    use uuid::Uuid;

    fn e(index: u64, epoch: u64) -> Entry {
        Entry {
            index,
            lamport: index * 10,
            epoch,
            id: Uuid::from_u128(u128::from(index)),
            payload: Payload::Command(Bytes::from(vec![0; 10])),
        }
    }

    #[test]
    fn positions_slices_and_compaction() {
        let (mut log, dropped) = Log::from_parts(LogPos::ZERO, (1..=5).map(|i| e(i, 1)).collect());
        assert_eq!(dropped, 0);
        assert_eq!(log.last(), e(5, 1).pos());
        assert_eq!(log.pos_at(0), Some(LogPos::ZERO));
        assert_eq!(log.pos_at(3), Some(e(3, 1).pos()));
        assert_eq!(log.pos_at(6), None);
        assert_eq!(
            log.slice(2, 2, usize::MAX)
                .iter()
                .map(|e| e.index)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        // Byte bound: each entry is 58 bytes by size_hint; 100 bytes fit one, but never zero.
        assert_eq!(log.slice(2, 10, 100).len(), 1);
        assert_eq!(log.slice(2, 10, 1).len(), 1);
        log.compact_through(3);
        assert_eq!(log.base(), e(3, 1).pos());
        assert_eq!(log.pos_at(2), None);
        assert_eq!(log.pos_at(3), Some(e(3, 1).pos()));
        assert_eq!(
            log.slice(2, 10, usize::MAX).len(),
            0,
            "compacted range cannot be sliced"
        );
        assert_eq!(
            log.iter_after(3).map(|e| e.index).collect::<Vec<_>>(),
            [4, 5]
        );
        log.push(e(6, 2));
        assert_eq!(log.last().index, 6);
        // Compacting beyond what is held stops at the last entry; it becomes the base.
        log.compact_through(9);
        assert_eq!(log.len(), 0);
        assert_eq!(log.base(), e(6, 2).pos());
        assert_eq!(log.last(), e(6, 2).pos());
        log.compact_through(2);
        assert_eq!(
            log.base(),
            e(6, 2).pos(),
            "compacting an older index changes nothing"
        );
        log.push(e(7, 2));
        log.reset(e(20, 3).pos());
        assert_eq!((log.len(), log.last()), (0, e(20, 3).pos()));
    }

    #[test]
    fn from_parts_stops_at_a_gap() {
        let entries = vec![e(4, 1), e(5, 1), e(7, 1), e(8, 1)];
        let (log, dropped) = Log::from_parts(e(3, 1).pos(), entries);
        assert_eq!(log.last().index, 5);
        assert_eq!(dropped, 2, "7 follows a gap; 8 follows it");
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn non_contiguous_push_is_a_bug() {
        let (mut log, _) = Log::from_parts(LogPos::ZERO, vec![e(1, 1)]);
        log.push(e(3, 1));
    }
}
