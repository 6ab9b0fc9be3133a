//! The dedup table: request id → first result, with a count-based retention bound.
//!
//! Invariant: identical on every replica after applying the same entries (insertion and eviction
//! depend only on the apply order), which is why it can be part of snapshots.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use uuid::Uuid;

use crate::types::DedupRecord;

/// Hashes UUIDs: one multiply per word, then the murmur3 64-bit finalizer so that every input
/// bit reaches the low bits hashbrown indexes by. Request ids come from authenticated front ends,
/// so SipHash's flooding resistance buys little here and costs a measurable share of the write
/// path. The finalizer matters: ids need not be random (v7 time-ordered ids, counters), and
/// without it structured ids collide in the same buckets and every lookup turns linear.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

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
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, _: usize) {
        // Length prefixes of the fixed 16-byte id carry no information.
    }
}

/// A `HashMap` keyed by request id.
pub(crate) type IdMap<V> = HashMap<Uuid, V, BuildHasherDefault<IdHasher>>;

/// Remembers the result of the most recent `max` applied writes.
///
/// Records live in a ring in apply order (appended and evicted sequentially, so cache- and
/// page-friendly); the hash map only holds id → sequence number, 24 bytes a slot. With records
/// in the map itself each insert wrote 80 bytes at a random address and every growth rehashed
/// them all: in the replication benchmark that was a quarter of the write path.
#[derive(Debug)]
pub(crate) struct DedupTable {
    /// Id → sequence number of its record (`first_seq` is the front of `records`).
    map: IdMap<u64>,
    /// Records in apply order, oldest first: the eviction order.
    records: VecDeque<DedupRecord>,
    /// Sequence number of `records[0]`.
    first_seq: u64,
    max: usize,
}

impl DedupTable {
    pub(crate) fn new(max: usize) -> Self {
        DedupTable {
            map: IdMap::default(),
            records: VecDeque::new(),
            first_seq: 0,
            max,
        }
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<&DedupRecord> {
        let seq = *self.map.get(id)?;
        let offset = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.records.get(offset)
    }

    /// Remember a result. A second insert of the same id keeps the first result.
    pub(crate) fn insert(&mut self, rec: DedupRecord) {
        if self.max == 0 {
            return;
        }
        let seq = self.first_seq + self.records.len() as u64;
        match self.map.entry(rec.id) {
            Entry::Occupied(_) => return,
            Entry::Vacant(v) => {
                v.insert(seq);
            }
        }
        self.records.push_back(rec);
        while self.records.len() > self.max {
            if let Some(old) = self.records.pop_front() {
                self.map.remove(&old.id);
                self.first_seq += 1;
            }
        }
        debug_assert_eq!(self.map.len(), self.records.len());
    }

    /// The whole table, oldest first, for a snapshot.
    pub(crate) fn to_vec(&self) -> Vec<DedupRecord> {
        self.records.iter().cloned().collect()
    }

    /// Replace the table with a snapshot's.
    pub(crate) fn restore(&mut self, records: Vec<DedupRecord>) {
        self.map.clear();
        self.records.clear();
        self.first_seq = 0;
        for rec in records {
            self.insert(rec);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
        let build = BuildHasherDefault::<IdHasher>::default();
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

    #[test]
    fn keeps_first_result_and_evicts_oldest() {
        let mut t = DedupTable::new(3);
        t.insert(rec(1));
        let mut again = rec(1);
        again.output = Bytes::from_static(b"other");
        t.insert(again);
        assert_eq!(
            t.get(&Uuid::from_u128(1)),
            Some(&rec(1)),
            "first result wins"
        );
        for n in 2..=4 {
            t.insert(rec(n));
        }
        assert_eq!(t.len(), 3);
        assert!(
            t.get(&Uuid::from_u128(1)).is_none(),
            "oldest evicted past the bound"
        );
        assert_eq!(t.to_vec(), vec![rec(2), rec(3), rec(4)]);
        // Lookups still find the survivors once the front of the ring has moved on.
        for n in 5..=9 {
            t.insert(rec(n));
        }
        for n in 7..=9 {
            assert_eq!(t.get(&Uuid::from_u128(n)), Some(&rec(n)));
        }
        assert!(t.get(&Uuid::from_u128(6)).is_none());
        let mut u = DedupTable::new(3);
        u.restore(t.to_vec());
        assert_eq!(u.to_vec(), t.to_vec());
    }
}
