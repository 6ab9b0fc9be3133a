//! The vocabulary of the protocol: node ids, log positions, entries, snapshots.
//!
//! Everything here is plain data with a stable postcard encoding; it crosses the wire and lands on
//! disk unchanged, so changing a field is a protocol and format change.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Dense position in the log. The first entry has index 1; 0 means "before the first entry".
pub type LogIndex = u64;

/// Lamport timestamp. Strictly increasing along the log; every message advances the receiver's
/// clock to `max(local, received) + 1`, so a new primary stamps above everything it has seen.
pub type Lamport = u64;

/// Epoch (a.k.a. term or view number): increases by one with every successful election. A replica
/// refuses anything from an older epoch, which is what fences a deposed primary.
pub type Epoch = u64;

/// Identity of a replica or front end: its address as peers reach it (`"127.0.0.1:4600"` over
/// HTTP, any unique name over the in-memory transport).
///
/// Cheap to clone (`Arc<str>`) because it rides on every message; an id fixed at compile time
/// ([`NodeId::from_static`]) has no reference count at all. Equality, hashing and ordering are
/// those of the address, however it is held. Ordering is the byte order of the address; it only
/// breaks ties in elections between equally fresh logs.
#[derive(Clone)]
pub struct NodeId(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl NodeId {
    /// Build an id from an address or name.
    pub fn new(s: impl AsRef<str>) -> Self {
        NodeId(Repr::Shared(Arc::from(s.as_ref())))
    }

    /// An id whose name is fixed at compile time. Cloning and dropping it touch no shared
    /// counter: an id that every request of a busy local client carries would otherwise bounce
    /// one reference count between the cores of the client and of the replica.
    pub const fn from_static(s: &'static str) -> Self {
        NodeId(Repr::Static(s))
    }

    /// The address or name this id stands for.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for NodeId {}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl Serialize for NodeId {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `Arc<str>`, as the `Arc<str>` field this type used to be (same encoding).
        Ok(NodeId(Repr::Shared(<Arc<str>>::deserialize(d)?)))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(Repr::Shared(Arc::from(s)))
    }
}

/// Where an entry sits and which entry it is: enough to tell whether two logs agree at `index`.
///
/// Normally `(index, epoch)` already names one entry (a primary writes each index once per
/// epoch), but a split brain — possible in all-in-sync mode under partitions — can give two
/// primaries the same epoch, and their entries the same index and even the same Lamport stamp.
/// The entry's id (the request UUID, or a random one for configuration entries) tells them
/// apart, so such a divergence is detected and repaired instead of silently kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogPos {
    /// Position in the log; 0 is the empty log.
    pub index: LogIndex,
    /// Epoch of the primary that wrote the entry.
    pub epoch: Epoch,
    /// Lamport stamp of the entry.
    pub lamport: Lamport,
    /// The entry's id.
    pub id: Uuid,
}

impl LogPos {
    /// The position before the first entry.
    pub const ZERO: LogPos = LogPos {
        index: 0,
        epoch: 0,
        lamport: 0,
        id: Uuid::nil(),
    };
}

/// Who may acknowledge writes, and who leads: the replicated cluster configuration.
///
/// It is itself a log entry, so every replica knows who is eligible to become primary. A
/// configuration takes effect on a replica as soon as it is in its log (not when committed), like
/// Raft's single-step membership changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The primary that wrote this configuration.
    pub primary: Option<NodeId>,
    /// Replicas that must hold an entry before it commits; always includes the primary.
    pub in_sync: BTreeSet<NodeId>,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// An application command, postcard-encoded `StateMachine::Command`.
    Command(Bytes),
    /// A configuration change: a new primary's first entry, or the in-sync set shrinking/growing.
    /// Boxed because it is rare: an `Entry` is 72 bytes instead of 88, in every in-memory log,
    /// store and message (the encoding is the same).
    Config(Box<ClusterConfig>),
}

/// One log entry. Immutable once written, except that an uncommitted suffix may be replaced
/// wholesale by a snapshot from a newer primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Dense position, starting at 1.
    pub index: LogIndex,
    /// Lamport stamp assigned by the primary when the entry was appended.
    pub lamport: Lamport,
    /// Epoch of the primary that appended it.
    pub epoch: Epoch,
    /// Request id given by the client; the dedup key. Configuration entries get a fresh id.
    pub id: Uuid,
    /// The command or configuration change.
    pub payload: Payload,
}

impl Entry {
    /// This entry's position.
    pub fn pos(&self) -> LogPos {
        LogPos {
            index: self.index,
            epoch: self.epoch,
            lamport: self.lamport,
            id: self.id,
        }
    }

    /// Approximate encoded size, used to bound batches by bytes without encoding twice.
    pub fn size_hint(&self) -> usize {
        const HEADER_BYTES: usize = 48;
        HEADER_BYTES
            + match &self.payload {
                Payload::Command(c) => c.len(),
                Payload::Config(c) => c.in_sync.iter().map(|n| n.as_str().len() + 2).sum(),
            }
    }
}

/// What the dedup table remembers about an applied write, owned: the form a snapshot's table
/// is encoded in, record by record. The table itself keeps records packed in chunks
/// ([`DedupRecords`]) and lends them out as [`DedupRecordRef`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The request id.
    pub id: Uuid,
    /// Where the write sits in the log.
    pub index: LogIndex,
    /// Its Lamport stamp.
    pub lamport: Lamport,
    /// The postcard-encoded `StateMachine::Output` of its first execution.
    pub output: Bytes,
}

impl DedupRecord {
    /// This record, borrowed, as the dedup table takes and lends records.
    pub fn as_ref(&self) -> DedupRecordRef<'_> {
        DedupRecordRef {
            id: self.id,
            index: self.index,
            lamport: self.lamport,
            output: &self.output,
        }
    }
}

/// Records per chunk of a [`DedupRecords`].
const DEDUP_CHUNK: usize = 1024;

/// One record of a [`DedupRecords`], borrowed: its output stays in the chunk that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupRecordRef<'a> {
    /// The request id.
    pub id: Uuid,
    /// Where the write sits in the log.
    pub index: LogIndex,
    /// Its Lamport stamp.
    pub lamport: Lamport,
    /// The postcard-encoded `StateMachine::Output` of its first execution.
    pub output: &'a [u8],
}

impl DedupRecordRef<'_> {
    /// An owned copy (the output copied out).
    pub fn to_record(&self) -> DedupRecord {
        DedupRecord {
            id: self.id,
            index: self.index,
            lamport: self.lamport,
            output: Bytes::copy_from_slice(self.output),
        }
    }
}

impl Serialize for DedupRecordRef<'_> {
    /// Field for field what `DedupRecord`'s derived encoding writes.
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeStruct;
        struct Output<'a>(&'a [u8]);
        impl Serialize for Output<'_> {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let mut st = s.serialize_struct("DedupRecord", 4)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("index", &self.index)?;
        st.serialize_field("lamport", &self.lamport)?;
        st.serialize_field("output", &Output(self.output))?;
        st.end()
    }
}

/// A record's fixed part; its output is `bytes[start..start + len]` of its chunk.
#[derive(Clone, Copy)]
struct Slot {
    id: Uuid,
    index: LogIndex,
    lamport: Lamport,
    start: usize,
    len: usize,
}

/// Up to `DEDUP_CHUNK` records, their outputs back to back in one buffer.
#[derive(Clone, Default)]
struct Chunk {
    slots: Vec<Slot>,
    bytes: Vec<u8>,
}

impl Chunk {
    fn get(&self, i: usize) -> Option<DedupRecordRef<'_>> {
        let s = self.slots.get(i)?;
        Some(DedupRecordRef {
            id: s.id,
            index: s.index,
            lamport: s.lamport,
            output: self.bytes.get(s.start..s.start + s.len)?,
        })
    }
}

/// The dedup table's records, oldest first, in shared chunks of 1,024.
///
/// Why chunks: a snapshot holds the whole table (up to `Config::dedup_entries_max` records,
/// 12 MB at the default with empty outputs). Copying it at every snapshot stalled the replica
/// for milliseconds and held the table twice in memory; a clone of this type shares every full chunk and copies only the
/// records of the chunk being filled (fewer than 1,024).
///
/// Why outputs in a chunk buffer rather than one `Bytes` each: a record then has no drop glue,
/// so evicting it touches no memory (dropping a `Bytes` read the oldest record, a cache miss
/// per eviction per replica in a table larger than the cache), a whole chunk is freed in two
/// deallocations, and a small output costs its length instead of an allocation of its own.
///
/// Encoded exactly as a `Vec<DedupRecord>` (a length, then the records), so the wire and disk
/// formats do not depend on the chunking.
#[derive(Clone, Default)]
pub struct DedupRecords {
    /// Full chunks of exactly `DEDUP_CHUNK` records, shared with clones.
    full: VecDeque<Arc<Chunk>>,
    /// The chunk being filled (fewer than `DEDUP_CHUNK` records), owned: appending to it
    /// touches no reference count.
    tail: Chunk,
    /// Records at the front of the first chunk (full, or the tail if there is none) that were
    /// evicted.
    skip: usize,
    len: usize,
}

impl DedupRecords {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th record, oldest first.
    pub fn get(&self, i: usize) -> Option<DedupRecordRef<'_>> {
        if i >= self.len {
            return None;
        }
        let at = self.skip + i;
        match self.full.get(at / DEDUP_CHUNK) {
            Some(chunk) => chunk.get(at % DEDUP_CHUNK),
            None => self.tail.get(at - self.full.len() * DEDUP_CHUNK),
        }
    }

    /// The records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = DedupRecordRef<'_>> + '_ {
        self.iter_from(0)
    }

    /// The records from the `i`-th on (skipping whole chunks, not record by record).
    pub(crate) fn iter_from(&self, i: usize) -> impl Iterator<Item = DedupRecordRef<'_>> + '_ {
        let i = i.min(self.len);
        let at = self.skip + i;
        let first = (at / DEDUP_CHUNK).min(self.full.len());
        self.full
            .range(first..)
            .map(|c| &**c)
            .chain(std::iter::once(&self.tail))
            .flat_map(|c| (0..c.slots.len()).filter_map(move |j| c.get(j)))
            .skip(at - first * DEDUP_CHUNK)
            .take(self.len - i)
    }

    /// Append a record at the end (its output is copied into the chunk).
    pub fn push(&mut self, rec: DedupRecordRef<'_>) {
        let tail = &mut self.tail;
        if tail.slots.capacity() == 0 {
            tail.slots.reserve_exact(DEDUP_CHUNK);
        }
        tail.slots.push(Slot {
            id: rec.id,
            index: rec.index,
            lamport: rec.lamport,
            start: tail.bytes.len(),
            len: rec.output.len(),
        });
        tail.bytes.extend_from_slice(rec.output);
        if tail.slots.len() == DEDUP_CHUNK {
            let chunk = std::mem::take(tail);
            self.full.push_back(Arc::new(chunk));
        }
        self.len += 1;
    }

    /// Forget the oldest record; false if there was none. Its chunk is released once all of
    /// its records are gone (and no clone holds it).
    pub fn pop_front(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        self.len -= 1;
        self.skip += 1;
        if self.len == 0 {
            // Whatever is left is evicted records.
            self.full.clear();
            self.tail = Chunk::default();
            self.skip = 0;
        } else if self.skip == DEDUP_CHUNK && !self.full.is_empty() {
            self.full.pop_front();
            self.skip = 0;
        }
        true
    }
}

impl FromIterator<DedupRecord> for DedupRecords {
    fn from_iter<I: IntoIterator<Item = DedupRecord>>(iter: I) -> Self {
        let mut records = DedupRecords::new();
        for rec in iter {
            records.push(rec.as_ref());
        }
        records
    }
}

impl From<Vec<DedupRecord>> for DedupRecords {
    fn from(records: Vec<DedupRecord>) -> Self {
        records.into_iter().collect()
    }
}

impl PartialEq for DedupRecords {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for DedupRecords {}

impl fmt::Debug for DedupRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for DedupRecords {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for rec in self.iter() {
            seq.serialize_element(&rec)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for DedupRecords {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Records;
        impl<'de> serde::de::Visitor<'de> for Records {
            type Value = DedupRecords;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of dedup records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<DedupRecords, A::Error> {
                // No allocation from the announced length: it comes from outside. Chunks grow
                // as records actually arrive.
                let mut records = DedupRecords::new();
                while let Some(rec) = seq.next_element::<DedupRecord>()? {
                    records.push(rec.as_ref());
                }
                Ok(records)
            }
        }
        d.deserialize_seq(Records)
    }
}

/// A point-in-time image of a replica's applied state: the state machine, the dedup table and the
/// configuration, as of `last`.
///
/// Used for compaction (the log before `last` can go) and for full copies to new or divergent
/// secondaries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last entry this snapshot includes.
    pub last: LogPos,
    /// The configuration in force at `last`.
    pub config: ClusterConfig,
    /// `StateMachine::snapshot()` output.
    pub state: Bytes,
    /// The dedup table, oldest first.
    pub dedup: DedupRecords,
}

impl Snapshot {
    /// About how many bytes this copy takes encoded (its state and its dedup records): decides
    /// whether a copy goes in pieces, and how long it may take to arrive.
    pub(crate) fn size_hint(&self) -> usize {
        const RECORD_BYTES: usize = 40;
        self.state.len()
            + self
                .dedup
                .iter()
                .map(|d| RECORD_BYTES + d.output.len())
                .sum::<usize>()
    }
}

/// The small piece of replica state that must survive restarts besides the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Highest epoch this replica has seen. Never decreases.
    pub epoch: Epoch,
    /// Highest index known committed. Never decreases.
    pub commit: LogIndex,
    /// Incremented at every start, so gossip tells a restarted process from its old self.
    pub generation: u64,
}

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Accepts writes, replicates them, decides commits.
    Primary,
    /// Follows the primary, applies committed entries.
    Secondary,
    /// Lost its primary and is running an election.
    Candidate,
}

impl Role {
    /// Lowercase name, as shown in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Candidate => "candidate",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::rng::Rng;

    fn rec(n: u64) -> DedupRecord {
        DedupRecord {
            id: Uuid::from_u64_pair(7, n),
            index: n,
            lamport: n + 1,
            // Outputs of 0 to 8 bytes: empty ones too.
            output: Bytes::from(n.to_le_bytes()[..(n % 9) as usize].to_vec()),
        }
    }

    fn owned(records: &DedupRecords) -> Vec<DedupRecord> {
        records.iter().map(|r| r.to_record()).collect()
    }

    /// Pushes, evictions and clones across chunk boundaries, against a `VecDeque` model: every
    /// clone keeps exactly what the records held when it was taken (appends after a clone never
    /// show through the shared chunks), and encodes to the bytes of the equivalent `Vec`.
    #[test]
    fn records_match_a_model_and_clones_stay_frozen() {
        let mut rng = Rng::new(11);
        let mut records = DedupRecords::new();
        let mut model: VecDeque<DedupRecord> = VecDeque::new();
        let mut frozen: Vec<(DedupRecords, Vec<DedupRecord>)> = Vec::new();
        let mut next = 0;
        for step in 0..12_000u64 {
            match rng.below(10) {
                0..=5 => {
                    let r = rec(next);
                    records.push(r.as_ref());
                    model.push_back(rec(next));
                    next += 1;
                }
                6..=8 => {
                    assert_eq!(records.pop_front(), model.pop_front().is_some());
                }
                _ => {
                    if step % 7 == 0 {
                        frozen.push((records.clone(), model.iter().cloned().collect()));
                    }
                }
            }
            assert_eq!(records.len(), model.len());
            let probe = rng.below(model.len() as u64 + 2) as usize;
            assert_eq!(
                records.get(probe).map(|r| r.to_record()).as_ref(),
                model.get(probe),
                "step {step}"
            );
            assert!(records
                .iter_from(probe)
                .map(|r| r.to_record())
                .eq(model.iter().skip(probe).cloned()));
        }
        assert!(frozen.len() > 50, "the run took clones");
        for (clone, want) in &frozen {
            assert_eq!(&owned(clone), want);
            let bytes = postcard::to_allocvec(clone).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(want).unwrap());
            let back: DedupRecords = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(&back, clone);
        }
    }

    /// A snapshot's dedup table crosses the wire and the disk as a plain sequence.
    #[test]
    fn records_decode_from_a_vec_encoding() {
        let want: Vec<DedupRecord> = (0..2500).map(rec).collect();
        let bytes = postcard::to_allocvec(&want).unwrap();
        let got: DedupRecords = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(owned(&got), want);
        assert_eq!(got, DedupRecords::from(want));
        // A length that promises more than the input holds is an error, not an allocation.
        let mut lying = bytes.clone();
        lying[..3].copy_from_slice(&[0xff, 0xff, 0x7f]);
        assert!(postcard::from_bytes::<DedupRecords>(&lying).is_err());
    }
}
