//! The dedup table: request id → first result, with a count-based retention bound.
//!
//! Invariant: identical on every replica after applying the same entries (insertion and eviction
//! depend only on the apply order), which is why it can be part of snapshots.

use std::hash::Hasher;

use uuid::Uuid;

use super::id_index::{IdIndex, Probe};
use crate::types::{DedupRecordRef, DedupRecords, LogIndex};

/// Hashes UUIDs: one multiply per word, then the murmur3 64-bit finalizer so that every input
/// bit reaches the low bits hashbrown indexes by. Request ids come from authenticated front ends,
/// so SipHash's flooding resistance buys little here and costs a measurable share of the write
/// path. The finalizer matters: ids need not be random (v7 time-ordered ids, counters), and
/// without it structured ids collide in the same buckets and every lookup turns linear.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Whole words through fixed-size loads (a `Uuid` is exactly two): copying each chunk
        // into a buffer cost a `memcpy` call per word, a few percent of the write path.
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            if let Ok(word) = <[u8; 8]>::try_from(word) {
                self.mix(u64::from_le_bytes(word));
            }
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, _: usize) {
        // Length prefixes of the fixed 16-byte id carry no information.
    }
}

/// What a [`DedupTable`] knows of an id.
#[derive(Debug, PartialEq)]
pub(crate) enum Lookup<'a> {
    /// Applied: its first result.
    Applied(DedupRecordRef<'a>),
    /// Appended at this log index, not applied yet.
    Pending(LogIndex),
    /// Neither (or evicted).
    Unknown,
}

/// Remembers the result of the most recent `max` applied writes.
///
/// Records live in a ring in apply order (appended and evicted sequentially, so cache- and
/// page-friendly), in shared chunks ([`DedupRecords`]) so that a snapshot shares them instead of
/// copying the table; the index ([`IdIndex`], open addressing) only holds id → log index, 24
/// bytes a slot. With records in the map itself each insert wrote 80 bytes at a random address
/// and every growth rehashed them all: in the replication benchmark that was a quarter of the
/// write path. The runtime [warms](DedupTable::warm) the index slot of every write of a turn
/// before the first is stepped, so that the probes' cache misses overlap.
///
/// The index maps an id to the log index of the entry that carries it, whether that entry is
/// applied or not: where that index stands against the ring tells which it is (see
/// [`DedupTable::next_index`]). So the pending mark a primary [claims](DedupTable::claim) for a
/// write already names its record once the write is applied, and applying it
/// ([`DedupTable::insert_claimed`]) touches only the ring — no second probe into a table larger
/// than the cache, which had been a tenth of the primary's write path (`replica-bench -m 1`).
///
/// The map is an index, and only the primary looks ids up. A secondary therefore keeps just the
/// ring and indexes it when it takes office ([`DedupTable::index_all`]: one pass over at most
/// `max` records, about 25 ms at the default 250,000) — two random-access inserts fewer per
/// write in a three-replica cluster. Lookups stay correct on an unindexed table (they scan the
/// unindexed part), only slower.
///
/// Evicting a record leaves its index slot behind for a sweep that goes round the index a few
/// slots per insert ([`DedupTable::sweep_evicted`]): removing each at eviction was a random
/// access into a table larger than the cache on every write, the larger part of this table's
/// cost on the primary.
#[derive(Debug)]
pub(crate) struct DedupTable {
    /// Id → log index of the entry that carries it: a record (`evicted_below <= index <
    /// next_index`), a pending mark (`index >= next_index`, on a primary: appended, not yet
    /// applied) or a slot an evicted record left behind (`index < evicted_below`). Holds the
    /// records before `unindexed_from`.
    map: IdIndex,
    /// Records in apply order, oldest first: the eviction order. Their log indices increase.
    records: DedupRecords,
    /// Pending marks in `map`.
    pending: usize,
    /// Where the sweep of evicted slots goes on from (`sweep_evicted`).
    sweep: usize,
    /// The index's slots, and how many the sweep visits per insert: enough to go round the
    /// index every `max` inserts (cached: a division per insert showed in profiles).
    sweep_budget: (usize, usize),
    /// Sequence number of `records[0]`.
    first_seq: u64,
    /// Records from this sequence number on are not in `map`.
    unindexed_from: u64,
    /// One past the log index of the newest record: every index below it that a write holds
    /// was applied (entries apply in order, and each applied write leaves a record), none from
    /// it on was.
    next_index: LogIndex,
    /// One past the log index of the newest evicted record: map values below it are stale.
    evicted_below: LogIndex,
    /// Index every record as it is inserted (set by `index_all`, kept from then on).
    eager: bool,
    max: usize,
}

impl DedupTable {
    pub(crate) fn new(max: usize) -> Self {
        DedupTable {
            map: IdIndex::default(),
            records: DedupRecords::new(),
            pending: 0,
            sweep: 0,
            sweep_budget: (0, 1),
            first_seq: 0,
            unindexed_from: 0,
            next_index: 0,
            evicted_below: 0,
            eager: false,
            max,
        }
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    /// Whether a map value names a record still held (not a pending mark, not evicted).
    fn holds(&self, index: LogIndex) -> bool {
        index >= self.evicted_below && index < self.next_index
    }

    /// The record of the write at log `index`, if held. Indices increase along the ring and
    /// only configuration entries (which leave no record) skip one, so the record sits at or
    /// just before the offset it would have without them: one read in the common case, a
    /// binary search otherwise.
    fn record_at(&self, index: LogIndex) -> Option<DedupRecordRef<'_>> {
        if !self.holds(index) {
            return None;
        }
        let len = self.records.len();
        let back = usize::try_from(self.next_index - 1 - index).ok()?;
        let at_index = |o: usize| self.records.get(o).map(|r| r.index);
        if let Some(guess) = len.checked_sub(1 + back) {
            let before = guess.checked_sub(1).and_then(at_index);
            if at_index(guess) == Some(index) && before.is_none_or(|b| b < index) {
                return self.records.get(guess);
            }
        }
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at_index(mid).is_some_and(|i| i < index) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.records.get(lo).filter(|r| r.index == index)
    }

    /// The first result of `id`, if it is held (a write only pending has none yet).
    pub(crate) fn get(&self, id: &Uuid) -> Option<DedupRecordRef<'_>> {
        match self.lookup(id) {
            Lookup::Applied(rec) => Some(rec),
            Lookup::Pending(_) | Lookup::Unknown => None,
        }
    }

    /// What the table knows of `id`: its first result, the log index it is pending at, or
    /// nothing. One probe of the map on an indexed table.
    pub(crate) fn lookup(&self, id: &Uuid) -> Lookup<'_> {
        if let Some(v) = self.map.get(id) {
            if v >= self.next_index {
                return Lookup::Pending(v);
            }
            // An evicted record's slot may linger in the index (see `sweep_evicted`).
            if let Some(rec) = self.record_at(v) {
                return Lookup::Applied(rec);
            }
        }
        // Not indexed yet (a table that was never primary's): the slow path.
        let Ok(skip) = usize::try_from(self.unindexed_from.saturating_sub(self.first_seq)) else {
            return Lookup::Unknown;
        };
        match self.records.iter_from(skip).find(|r| r.id == *id) {
            Some(rec) => Lookup::Applied(rec),
            None => Lookup::Unknown,
        }
    }

    /// Mark `id` as appended at `index` and not yet applied, so that a retry joins it instead
    /// of executing again; applying its record replaces the mark. An id whose result is still
    /// held keeps it (the first result wins). Only an indexed table (a primary's) keeps marks.
    pub(crate) fn mark_pending(&mut self, id: Uuid, index: LogIndex) {
        match self.map.probe(&id) {
            Probe::Found(at) if self.holds(self.map.value(at)) => {}
            Probe::Found(at) => {
                if self.map.set(at, index) < self.next_index {
                    self.pending += 1;
                }
            }
            Probe::Vacant(at) => {
                self.map.insert_at(at, id, index);
                self.pending += 1;
            }
        }
    }

    /// What the table knows of `id` (as [`DedupTable::lookup`]), and if nothing, mark it
    /// pending at `index` in the same probe: the write path's one hash operation. A caller
    /// that then does not append takes the mark back with [`DedupTable::unclaim`]; one that
    /// does applies the write with [`DedupTable::insert_claimed`].
    pub(crate) fn claim(&mut self, id: Uuid, index: LogIndex) -> Lookup<'_> {
        if !self.eager {
            // Only a primary claims, and taking office indexed its table already.
            self.index_all();
        }
        let held = match self.map.probe(&id) {
            Probe::Found(at) => {
                let value = self.map.value(at);
                if value >= self.next_index {
                    return Lookup::Pending(value);
                }
                if self.record_at(value).is_some() {
                    Some(value)
                } else {
                    // A slot an evicted record left behind: the id is new again.
                    self.map.set(at, index);
                    None
                }
            }
            Probe::Vacant(at) => {
                self.map.insert_at(at, id, index);
                None
            }
        };
        let Some(value) = held else {
            self.pending += 1;
            return Lookup::Unknown;
        };
        // Found just above; nothing changed since.
        self.record_at(value)
            .map_or(Lookup::Unknown, Lookup::Applied)
    }

    /// Read the index where `id` would be, so that a probe soon after finds it in the cache.
    pub(crate) fn warm(&self, id: &Uuid) {
        if self.eager {
            self.map.warm(id);
        }
    }

    /// Drop `id`'s pending mark, if it has one: a [`DedupTable::claim`] whose write was not
    /// appended after all, or a write applied by a table that remembers nothing.
    pub(crate) fn unclaim(&mut self, id: &Uuid) {
        if let Probe::Found(at) = self.map.probe(id) {
            if self.map.value(at) >= self.next_index {
                self.map.remove_at(at);
                self.pending -= 1;
            }
        }
    }

    /// Forget every pending mark (this replica is leaving office: what it appended may be
    /// replaced, and the next primary tracks its own).
    pub(crate) fn clear_pending(&mut self) {
        let next = self.next_index;
        self.map.retain(|v| v < next);
        self.pending = 0;
    }

    /// Remember a result (the output is copied into the table). A second insert of an id
    /// still held keeps the first result.
    pub(crate) fn insert(&mut self, rec: DedupRecordRef<'_>) {
        if self.max == 0 {
            // Nothing is remembered; only a pending mark to take back.
            self.unclaim(&rec.id);
            return;
        }
        // Unindexed, a duplicate is kept: the primary never appends an id it still remembers,
        // so one here means a broken log, and `index_all` keeps the first record for it, like
        // the indexed path.
        if self.eager && !self.index(rec.id, rec.index) {
            return;
        }
        self.push(rec);
    }

    /// Remember the result of a write this table [claimed](DedupTable::claim) at `rec.index`
    /// (the claim returned `Unknown` and the write was appended there): its pending mark
    /// already names the record, so the index is not touched.
    ///
    /// The caller vouches for the claim (the primary knows it by the client waiting at that
    /// index); a write appended otherwise goes through [`DedupTable::insert`].
    pub(crate) fn insert_claimed(&mut self, rec: DedupRecordRef<'_>) {
        if self.max == 0 {
            self.unclaim(&rec.id);
            return;
        }
        debug_assert_eq!(self.map.get(&rec.id), Some(rec.index), "not claimed here");
        self.pending = self.pending.saturating_sub(1);
        self.push(rec);
    }

    /// Append a record the index already agrees with, evict past the bound, sweep.
    fn push(&mut self, rec: DedupRecordRef<'_>) {
        self.next_index = self.next_index.max(rec.index + 1);
        self.records.push(rec);
        if self.eager {
            self.unindexed_from = self.end_seq();
        }
        while self.records.len() > self.max {
            // The map keeps the evicted id's slot for now: removing it here would cost a
            // random access into a table larger than the cache on every write. Reading the
            // oldest record's index is a sequential read (the ring is evicted in order).
            if let Some(oldest) = self.records.get(0).map(|r| r.index) {
                self.evicted_below = self.evicted_below.max(oldest + 1);
            }
            if self.records.pop_front() {
                self.first_seq += 1;
            }
        }
        self.unindexed_from = self.unindexed_from.max(self.first_seq);
        self.sweep_evicted();
    }

    /// Point `id` at the record at log `index` unless it already names a record still held
    /// (the first one wins). A slot left by an evicted record counts as free: its id is new
    /// again, and a pending mark gives way to the record. Returns whether `id` now points at
    /// `index`.
    fn index(&mut self, id: Uuid, index: LogIndex) -> bool {
        match self.map.probe(&id) {
            Probe::Found(at) if self.holds(self.map.value(at)) => false,
            Probe::Found(at) => {
                if self.map.set(at, index) >= self.next_index {
                    self.pending -= 1;
                }
                true
            }
            Probe::Vacant(at) => {
                self.map.insert_at(at, id, index);
                true
            }
        }
    }

    /// Drop evicted records' slots from the index a few at a time: each insert sweeps on
    /// through enough slots (`slots / max`, and the rest of a run) that the sweep goes round
    /// the whole table every `max` inserts, so a slot left by an eviction is gone within `max`
    /// more and the index holds at most `2 * max` ids beside the pending marks. Evicted slots
    /// are harmless meanwhile — one whose index is below `evicted_below` answers nothing and
    /// is overwritten when its id comes back. Removing each at eviction instead was a random
    /// access into a table larger than the cache on every write (read ahead, still 10% slower
    /// in `replica-bench`); sweeping the whole table once stale slots were half of it stopped
    /// the primary for 10 ms every `max` writes at the default retention.
    fn sweep_evicted(&mut self) {
        // Nothing is stale while the index holds no more ids than the records it indexes.
        let indexed = self.unindexed_from.saturating_sub(self.first_seq);
        let held = self.map.len().saturating_sub(self.pending);
        if held as u64 <= indexed {
            return;
        }
        if self.sweep_budget.0 != self.map.slots() {
            // The index grew (pending marks beyond what taking office sized it for).
            self.sweep_budget = (self.map.slots(), self.map.slots() / self.max.max(1) + 1);
        }
        let first = self.evicted_below;
        // Pending marks are above every record: they stay.
        self.sweep = self
            .map
            .retain_step(self.sweep, self.sweep_budget.1, |v| v >= first);
    }

    /// Index every record, and every later one as it comes: this replica is taking office
    /// and will look ids up on each write.
    ///
    /// The map is sized once, here, for the most it holds (`2 * max` ids, see `sweep_evicted`):
    /// growing it on the write path rehashed every id at each doubling — at the default
    /// retention the last doubling moved 460,000 ids at random addresses, a stall of 17–19 ms
    /// on the benchmark machine during which the primary took no write.
    pub(crate) fn index_all(&mut self) {
        let capacity = self.max.saturating_mul(2);
        self.map.reserve(capacity.saturating_sub(self.map.len()));
        let mut seq = self.unindexed_from.max(self.first_seq);
        while let Some((id, index)) = self.at(seq).map(|r| (r.id, r.index)) {
            self.index(id, index);
            seq += 1;
        }
        self.unindexed_from = seq;
        self.eager = true;
    }

    fn at(&self, seq: u64) -> Option<DedupRecordRef<'_>> {
        let offset = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.records.get(offset)
    }

    /// The whole table, oldest first, for a snapshot: shares the records' chunks (a pointer
    /// per 1,024 records), copies none.
    pub(crate) fn share(&self) -> DedupRecords {
        self.records.clone()
    }

    /// Replace the table with a snapshot's (indexed if this table was), sharing its chunks.
    pub(crate) fn restore(&mut self, mut records: DedupRecords) {
        while records.len() > self.max {
            records.pop_front();
        }
        self.map.clear();
        self.pending = 0;
        self.first_seq = 0;
        self.unindexed_from = 0;
        self.evicted_below = records.get(0).map_or(0, |r| r.index);
        self.next_index = match records.len().checked_sub(1) {
            Some(last) => records.get(last).map_or(0, |r| r.index + 1),
            None => 0,
        };
        self.records = records;
        if self.eager {
            self.index_all();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::types::DedupRecord;
    use bytes::Bytes;

    impl DedupTable {
        fn put(&mut self, rec: DedupRecord) {
            self.insert(rec.as_ref());
        }

        fn find(&self, id: &Uuid) -> Option<DedupRecord> {
            self.get(id).map(|r| r.to_record())
        }
    }

    fn rec(n: u128) -> DedupRecord {
        DedupRecord {
            id: Uuid::from_u128(n),
            index: n as u64,
            lamport: n as u64,
            output: Bytes::from(n.to_le_bytes().to_vec()),
        }
    }

    /// Sequential and time-ordered ids must spread over the low bits (what hashbrown indexes by);
    /// a hasher that only propagates bits upward puts them all in one bucket.
    #[test]
    fn structured_ids_spread_over_buckets() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        for make in [
            |n: u64| Uuid::from_u64_pair(1, n),
            |n: u64| Uuid::from_u64_pair(n, 0),
        ] {
            let buckets: HashSet<u64> =
                (0..4096).map(|n| build.hash_one(make(n)) & 0xfff).collect();
            assert!(
                buckets.len() > 2000,
                "only {} of 4096 low-bit buckets used",
                buckets.len()
            );
        }
    }

    /// Both modes — indexed from the start (a primary) and indexed late (a secondary taking
    /// office) — keep the first result, evict the oldest and find exactly what they hold.
    #[test]
    fn keeps_first_result_and_evicts_oldest() {
        for index_at in [0, 1, 3, 6, 100] {
            let mut t = DedupTable::new(3);
            let mut step = 0;
            let maybe_index = |t: &mut DedupTable, step: &mut usize| {
                if *step == index_at {
                    t.index_all();
                }
                *step += 1;
            };
            maybe_index(&mut t, &mut step);
            t.put(rec(1));
            maybe_index(&mut t, &mut step);
            let mut again = rec(1);
            again.output = Bytes::from_static(b"other");
            t.put(again);
            assert_eq!(
                t.find(&Uuid::from_u128(1)),
                Some(rec(1)),
                "first result wins (indexed at step {index_at})"
            );
            for n in 2..=4 {
                maybe_index(&mut t, &mut step);
                t.put(rec(n));
            }
            assert_eq!(t.len(), 3);
            assert!(
                t.find(&Uuid::from_u128(1)).is_none(),
                "oldest evicted past the bound"
            );
            assert_eq!(t.share(), DedupRecords::from(vec![rec(2), rec(3), rec(4)]));
            // Lookups still find the survivors once the front of the ring has moved on.
            for n in 5..=9 {
                maybe_index(&mut t, &mut step);
                t.put(rec(n));
            }
            for n in 7..=9 {
                assert_eq!(t.find(&Uuid::from_u128(n)), Some(rec(n)), "step {index_at}");
            }
            assert!(t.find(&Uuid::from_u128(6)).is_none());
            t.index_all();
            for n in 7..=9 {
                assert_eq!(t.find(&Uuid::from_u128(n)), Some(rec(n)), "step {index_at}");
            }
            assert!(
                t.map.len() <= 6,
                "the index holds at most twice what the ring holds"
            );
            // An evicted id is new again: its stale slot gives way to the new record.
            let mut back = rec(2);
            back.index = 99;
            t.put(back.clone());
            assert_eq!(t.find(&Uuid::from_u128(2)), Some(back), "step {index_at}");
            let mut u = DedupTable::new(3);
            u.restore(t.share());
            assert_eq!(u.share(), t.share());
        }
    }

    /// Against a model (the last `max` first-inserted records, in order), through thousands of
    /// inserts that repeat held ids (once indexed), bring evicted ids back and index the table
    /// midway: the table answers exactly what the model holds, and its map never exceeds twice
    /// `max`.
    #[test]
    fn matches_a_model_through_eviction_and_sweeps() {
        use crate::rng::Rng;
        for (max, index_at) in [(1, 0), (7, 0), (7, 500), (64, 3000), (64, usize::MAX)] {
            let mut rng = Rng::new(max as u64);
            let mut t = DedupTable::new(max);
            let mut model: VecDeque<DedupRecord> = VecDeque::new();
            for step in 0..6000usize {
                if step == index_at {
                    t.index_all();
                }
                // Ids from a small range: many repeats, of held and of evicted ids.
                let id = rng.below(3 * max as u64 + 5) as u128;
                let mut r = rec(id);
                r.index = step as u64;
                let held = model.iter().any(|m| m.id == r.id);
                if held && !t.eager {
                    // Never asked of an unindexed table: a log never repeats an id it holds.
                    continue;
                }
                let mut claimed = false;
                if t.eager {
                    // The write path's probe: the held record, or a pending mark that the
                    // record then fills (or that is taken back first, as for a refusal, and
                    // the record inserted as one that was not claimed).
                    let first = model.iter().find(|m| m.id == r.id).cloned();
                    match t.claim(r.id, step as u64) {
                        Lookup::Applied(rec) => assert_eq!(Some(rec.to_record()), first),
                        Lookup::Unknown => {
                            assert_eq!(first, None, "max {max} step {step}");
                            claimed = true;
                        }
                        Lookup::Pending(i) => panic!("a mark left behind at {i}"),
                    }
                    if step % 3 == 0 && claimed {
                        t.unclaim(&r.id);
                        claimed = false;
                    }
                }
                if !held {
                    model.push_back(r.clone());
                    if model.len() > max {
                        model.pop_front();
                    }
                }
                if claimed {
                    assert_eq!(t.lookup(&r.id), Lookup::Pending(step as u64));
                    t.insert_claimed(r.as_ref());
                } else {
                    t.put(r);
                }
                assert!(t.map.len() <= 2 * max + t.pending, "max {max} step {step}");
                assert_eq!(t.len(), model.len());
                for probe in 0..(3 * max as u128 + 5) {
                    let want = model.iter().find(|m| m.id == Uuid::from_u128(probe));
                    assert_eq!(
                        t.find(&Uuid::from_u128(probe)),
                        want.cloned(),
                        "max {max} step {step} id {probe}"
                    );
                }
            }
        }
    }

    /// Pending marks: a retry finds the index it waits on; applying replaces the mark with the
    /// record; a held result is never replaced by a mark; leaving office drops only marks;
    /// marks neither trigger nor suffer the sweep of evicted slots; a table that remembers
    /// nothing takes its marks back.
    #[test]
    fn pending_marks_give_way_to_records() {
        let mut t = DedupTable::new(4);
        t.index_all();
        t.mark_pending(Uuid::from_u128(1), 10);
        assert_eq!(t.lookup(&Uuid::from_u128(1)), Lookup::Pending(10));
        assert_eq!(
            t.find(&Uuid::from_u128(1)),
            None,
            "pending has no result yet"
        );
        t.put(rec(1));
        assert_eq!(t.find(&Uuid::from_u128(1)), Some(rec(1)));
        assert_eq!(t.pending, 0);
        // A held result wins over a mark (a duplicate id in a new primary's unapplied suffix).
        t.mark_pending(Uuid::from_u128(1), 11);
        assert_eq!(t.find(&Uuid::from_u128(1)), Some(rec(1)));
        // Many marks on a small table: no sweep takes them, none is lost.
        for n in 100..200 {
            t.mark_pending(Uuid::from_u128(n), n as u64);
        }
        for n in 2..=9 {
            t.put(rec(n));
        }
        assert_eq!(t.pending, 100);
        for n in 100..200 {
            assert_eq!(t.lookup(&Uuid::from_u128(n)), Lookup::Pending(n as u64));
        }
        assert!(t.map.len() <= 100 + 2 * 4);
        t.clear_pending();
        assert_eq!(t.pending, 0);
        assert_eq!(t.lookup(&Uuid::from_u128(150)), Lookup::Unknown);
        assert_eq!(t.find(&Uuid::from_u128(9)), Some(rec(9)), "records stay");

        let mut none = DedupTable::new(0);
        none.index_all();
        none.mark_pending(Uuid::from_u128(5), 1);
        none.put(rec(5));
        assert!(none.map.is_empty() && none.pending == 0);
    }

    /// Configuration entries leave holes in the records' log indices: every record is still
    /// found by the index its id maps to, before and after evictions, and a claimed write's
    /// mark turns into its record without the index being touched.
    #[test]
    fn records_are_found_across_gaps_in_the_log() {
        let mut t = DedupTable::new(50);
        t.index_all();
        let mut held = VecDeque::new();
        let mut index = 0;
        for n in 1..=200u128 {
            // A configuration entry now and then: one or several indices without a record.
            index += 1 + (n % 7 == 0) as u64 + 3 * (n % 31 == 0) as u64;
            let mut r = rec(n);
            r.index = index;
            assert_eq!(t.claim(r.id, index), Lookup::Unknown);
            assert_eq!(t.lookup(&r.id), Lookup::Pending(index));
            t.insert_claimed(r.as_ref());
            held.push_back(r);
            if held.len() > 50 {
                held.pop_front();
            }
            for h in &held {
                assert_eq!(t.find(&h.id), Some(h.clone()), "write {n}");
            }
            assert_eq!(t.find(&Uuid::from_u128(n.saturating_sub(50))), None);
        }
        assert_eq!(t.pending, 0);
        assert!(t.map.len() <= 100);
    }

    /// Sized at taking office, the index never grows while the table runs at its retention.
    #[test]
    fn an_indexed_table_never_grows_its_map() {
        let mut t = DedupTable::new(1_000);
        t.index_all();
        let capacity = t.map.capacity();
        assert!(
            capacity >= 2_000,
            "sized for 2 * max at taking office: {capacity}"
        );
        // Three times the retention: evictions, lingering slots, sweeps, pending marks. The
        // capacity must never rise, which is what a rehash into a larger table does.
        for n in 0..3_000u128 {
            t.mark_pending(Uuid::from_u128(n + 1), n as u64 + 1);
            t.insert(rec(n + 1).as_ref());
            assert!(t.map.capacity() <= capacity, "the map grew at write {n}");
        }
        assert_eq!(t.len(), 1_000);
    }

    /// A secondary that takes office with a full, never-indexed table finds every id in it.
    #[test]
    fn late_index_finds_everything_held() {
        let mut t = DedupTable::new(1000);
        for n in 0..2500 {
            t.put(rec(n));
        }
        t.index_all();
        assert!(t.map.len() >= 1000 && t.map.len() <= 2000);
        for n in 1500..2500 {
            assert_eq!(t.find(&Uuid::from_u128(n)), Some(rec(n)));
        }
        assert!(t.find(&Uuid::from_u128(1499)).is_none());
        for n in 2500..3000 {
            t.put(rec(n));
        }
        assert!(t.map.len() <= 2000, "evicted slots are swept");
        assert!(t.find(&Uuid::from_u128(1999)).is_none());
        assert_eq!(t.find(&Uuid::from_u128(2999)), Some(rec(2999)));
    }
}
