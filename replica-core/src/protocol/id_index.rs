//! The dedup table's index: request id → `u64`, open addressing with linear probing.
//!
//! Why not `std::collections::HashMap`: a primary probes this index once per write, at a
//! random place in a table far larger than the cache (24 MB at the default retention), and the
//! two cache misses of a probe there (the control bytes, then the slot) were more than a
//! third of the whole write path in `replica-bench` (the same run without the index went from
//! 0.70 M to 1.0 M writes/s). Here a slot holds the id and its value side by side, so a probe
//! is one cache line (or two, when it runs over the end of one), and [`IdIndex::warm`] can read
//! that line ahead of time: the runtime warms every write of a turn before it steps the first,
//! so the misses overlap instead of stalling one after another.
//!
//! Invariants: at most half the slots are occupied (so every probe meets a vacant slot and
//! ends); every id sits at or after its home slot with no vacant slot between (linear probing),
//! which removal keeps by shifting the rest of the run back rather than leaving tombstones.

use std::hash::Hasher;

use uuid::Uuid;

use super::dedup::IdHasher;

/// A slot's value when the slot is vacant. Stored values must differ from it: the dedup table
/// stores log indices, below `u64::MAX`.
const VACANT: u64 = u64::MAX;

/// Fewest slots a table has (a power of two).
const SLOTS_MIN: usize = 16;

#[derive(Clone, Copy)]
struct Slot {
    value: u64,
    id: Uuid,
}

const EMPTY: Slot = Slot {
    value: VACANT,
    id: Uuid::nil(),
};

/// Where an id is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The id is at this slot.
    Found(usize),
    /// The id is absent; this vacant slot is where [`IdIndex::insert_at`] puts it.
    Vacant(usize),
}

/// Request id → `u64` (values below `u64::MAX`).
#[derive(Clone)]
pub(crate) struct IdIndex {
    /// A power of two of them, at most half occupied.
    slots: Vec<Slot>,
    len: usize,
    /// A run being swept (`retain_step`), kept for its allocation.
    scratch: Vec<Slot>,
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdIndex")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex {
            slots: vec![EMPTY; SLOTS_MIN],
            len: 0,
            scratch: Vec::new(),
        }
    }
}

fn hash(id: &Uuid) -> u64 {
    let mut h = IdHasher::default();
    h.write(id.as_bytes());
    h.finish()
}

impl IdIndex {
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, id: &Uuid) -> usize {
        // Truncation is the point: the low bits pick the slot.
        hash(id) as usize & self.mask()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids the index holds before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() / 2
    }

    /// Where `id` is, or the vacant slot it would take.
    pub(crate) fn probe(&self, id: &Uuid) -> Probe {
        let mask = self.mask();
        let mut i = self.home(id);
        loop {
            let slot = &self.slots[i];
            if slot.value == VACANT {
                return Probe::Vacant(i);
            }
            if slot.id == *id {
                return Probe::Found(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<u64> {
        match self.probe(id) {
            Probe::Found(i) => Some(self.slots[i].value),
            Probe::Vacant(_) => None,
        }
    }

    /// The value at a slot [`IdIndex::probe`] found.
    pub(crate) fn value(&self, at: usize) -> u64 {
        self.slots[at].value
    }

    /// Replace the value at a slot [`IdIndex::probe`] found; returns the old one.
    pub(crate) fn set(&mut self, at: usize, value: u64) -> u64 {
        debug_assert!(value != VACANT && self.slots[at].value != VACANT);
        std::mem::replace(&mut self.slots[at].value, value)
    }

    /// Put `id` at the vacant slot [`IdIndex::probe`] just returned for it (no other change
    /// in between).
    pub(crate) fn insert_at(&mut self, at: usize, id: Uuid, value: u64) {
        debug_assert!(value != VACANT && self.slots[at].value == VACANT);
        self.slots[at] = Slot { value, id };
        self.len += 1;
        if self.len > self.capacity() {
            self.resize(self.slots.len() * 2);
        }
    }

    /// Remove `id`; returns its value.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, id: &Uuid) -> Option<u64> {
        match self.probe(id) {
            Probe::Found(at) => Some(self.remove_at(at)),
            Probe::Vacant(_) => None,
        }
    }

    /// Remove the id at a slot [`IdIndex::probe`] found; returns its value. The ids after it
    /// in its run move back into the gap where their probes allow, so no probe ever stops
    /// short of an id it should reach.
    pub(crate) fn remove_at(&mut self, at: usize) -> u64 {
        let mask = self.mask();
        let value = self.slots[at].value;
        let mut hole = at;
        let mut next = at;
        loop {
            next = (next + 1) & mask;
            let slot = self.slots[next];
            if slot.value == VACANT {
                break;
            }
            // `slot` may fill the hole if its home is not after the hole: cyclically, its
            // distance from home is at least the hole's distance back.
            let home = self.home(&slot.id);
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        value
    }

    /// Keep only the ids for which `keep` says so, in place: one pass over the slots, a run of
    /// occupied slots at a time (see [`IdIndex::retain_step`]).
    pub(crate) fn retain(&mut self, keep: impl FnMut(u64) -> bool) {
        if self.len == 0 {
            return;
        }
        // Start just after a vacant slot, so that the pass ends on it, having split no run.
        // One exists: at most half the slots are occupied.
        let Some(vacant) = self.slots.iter().position(|s| s.value == VACANT) else {
            return;
        };
        self.retain_step(vacant + 1, self.slots.len(), keep);
    }

    /// Keep only the ids for which `keep` says so, in the stretch of slots from `from` on: at
    /// least `budget` slots, then to the end of the run it is in. Returns where the next step
    /// starts. Stepping on from each return visits every slot, so a sweep can be spread over
    /// many calls, with any other change between them: each step empties a stretch that ends
    /// at a vacant slot and puts its survivors back by probing, which only moves them towards
    /// their home slots, within the stretch (the slots before it stay as they were).
    pub(crate) fn retain_step(
        &mut self,
        from: usize,
        budget: usize,
        mut keep: impl FnMut(u64) -> bool,
    ) -> usize {
        let mask = self.mask();
        let mut i = from & mask;
        let mut scanned = 0;
        let mut run = std::mem::take(&mut self.scratch);
        while scanned < budget {
            if self.slots[i].value == VACANT {
                i = (i + 1) & mask;
                scanned += 1;
                continue;
            }
            while self.slots[i].value != VACANT {
                run.push(self.slots[i]);
                self.slots[i] = EMPTY;
                i = (i + 1) & mask;
                scanned += 1;
            }
            self.len -= run.len();
            for slot in run.drain(..) {
                if keep(slot.value) {
                    self.place(slot);
                    self.len += 1;
                }
            }
        }
        self.scratch = run;
        i
    }

    /// Slots in the table: a sweep that visits `slots() / n` of them per step covers the
    /// whole table in `n` steps.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Make room for `additional` more ids without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self
            .len
            .saturating_add(additional)
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .max(SLOTS_MIN);
        if need > self.slots.len() {
            self.resize(need);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
    }

    /// Read the slot `id` hashes to, so that a probe soon after finds it in the cache. Changes
    /// nothing.
    pub(crate) fn warm(&self, id: &Uuid) {
        std::hint::black_box(self.slots[self.home(id)].value);
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        for slot in old.into_iter().filter(|s| s.value != VACANT) {
            self.place(slot);
        }
    }

    /// Put an occupied slot taken out of the table (which never holds its id) back at the first
    /// vacant slot from its home. Does not count it.
    fn place(&mut self, slot: Slot) {
        if let Probe::Vacant(at) = self.probe(&slot.id) {
            self.slots[at] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Every id the model holds is found with its value, and the index holds nothing else.
    fn check(index: &IdIndex, model: &HashMap<Uuid, u64>) {
        assert_eq!(index.len(), model.len());
        for (id, v) in model {
            assert_eq!(index.get(id), Some(*v), "{id}");
        }
        let occupied = index.slots.iter().filter(|s| s.value != VACANT).count();
        assert_eq!(occupied, model.len());
        assert!(index.len() <= index.capacity());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u64),
        Remove(u8),
        Retain(u64),
        RetainStep(u16, u8, u64),
        Reserve(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), 0..1000u64).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => any::<u8>().prop_map(Op::Remove),
            1 => (0..1000u64).prop_map(Op::Retain),
            2 => (any::<u16>(), any::<u8>(), 0..1000u64)
                .prop_map(|(from, budget, min)| Op::RetainStep(from, budget, min)),
            1 => any::<u16>().prop_map(|n| Op::Reserve(n % 600)),
        ]
    }

    fn id(k: u8) -> Uuid {
        Uuid::from_u64_pair(u64::from(k % 4), u64::from(k))
    }

    proptest! {
        /// Against a `HashMap`: inserts (or overwrites), removals, retains and reserves in
        /// any order leave the index holding exactly what the map holds. (Up to 256 ids in a
        /// table kept at most half full: runs of several slots, and growth, are common.)
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut index = IdIndex::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let id = id(k);
                        match index.probe(&id) {
                            Probe::Found(at) => {
                                let old = index.set(at, v);
                                prop_assert_eq!(model.insert(id, v), Some(old));
                            }
                            Probe::Vacant(at) => {
                                index.insert_at(at, id, v);
                                prop_assert_eq!(model.insert(id, v), None);
                            }
                        }
                    }
                    Op::Remove(k) => {
                        let id = id(k);
                        prop_assert_eq!(index.remove(&id), model.remove(&id));
                    }
                    Op::Retain(min) => {
                        index.retain(|v| v >= min);
                        model.retain(|_, v| *v >= min);
                    }
                    Op::RetainStep(from, budget, min) => {
                        // Sweeping only part of the table: the ids it passed over that fail
                        // the test are gone, the rest untouched. Which were passed over is the
                        // index's business, so the model learns it from the index.
                        index.retain_step(usize::from(from), usize::from(budget), |v| v >= min);
                        model.retain(|id, v| *v >= min || index.get(id).is_some());
                    }
                    Op::Reserve(n) => {
                        index.reserve(usize::from(n));
                        prop_assert!(index.capacity() >= index.len() + usize::from(n));
                    }
                }
                check(&index, &model);
            }
        }
    }

    /// Steps of a sweep, each starting where the last one ended, cover the whole table: once
    /// they have passed `slots()` slots, every id that fails the test is gone.
    #[test]
    fn a_sweep_in_steps_covers_the_table() {
        let mut index = IdIndex::default();
        for v in 0..100u64 {
            let id = Uuid::from_u64_pair(v, v);
            if let Probe::Vacant(at) = index.probe(&id) {
                index.insert_at(at, id, v);
            }
        }
        let (mut at, mut passed) = (5, 0);
        while passed < index.slots() {
            let next = index.retain_step(at, 3, |v| v >= 50);
            passed += (next.wrapping_sub(at) & index.mask()).max(1);
            at = next;
        }
        assert_eq!(index.len(), 50);
        for v in 0..100u64 {
            let want = (v >= 50).then_some(v);
            assert_eq!(index.get(&Uuid::from_u64_pair(v, v)), want, "{v}");
        }
    }

    /// Runs that wrap around the end of the table survive removal and retain.
    #[test]
    fn runs_across_the_end_of_the_table() {
        let mut index = IdIndex::default();
        let mask = index.mask();
        // Ids whose home is the last slot, so that their run wraps to the first ones.
        let ids: Vec<Uuid> = (0..u64::MAX)
            .map(|n| Uuid::from_u64_pair(n, 7))
            .filter(|id| index.home(id) == mask)
            .take(5)
            .collect();
        for (v, id) in ids.iter().enumerate() {
            let Probe::Vacant(at) = index.probe(id) else {
                panic!("fresh id found")
            };
            index.insert_at(at, *id, v as u64);
        }
        assert_eq!(index.slots.len(), SLOTS_MIN, "no growth: 5 of 16 slots");
        assert_eq!(index.remove(&ids[0]), Some(0));
        for (v, id) in ids.iter().enumerate().skip(1) {
            assert_eq!(index.get(id), Some(v as u64));
        }
        index.retain(|v| v % 2 == 0);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(&ids[2]), Some(2));
        assert_eq!(index.get(&ids[4]), Some(4));
        assert_eq!(index.get(&ids[3]), None);
    }
}
