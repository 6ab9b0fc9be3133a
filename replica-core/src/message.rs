//! Protocol messages and their wire codec.
//!
//! Every message is a [`Message`]: a header (sender, epoch, Lamport clock) and a [`Body`]. The
//! transport contract is request/response (`Transport::call` returns the reply), but the protocol
//! does not depend on any reply arriving: every reply is self-describing, so a lost, duplicated or
//! late one is harmless.
//!
//! The wire format is postcard behind a one-byte version tag. Decoding untrusted bytes never
//! panics; it returns [`CodecError`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{Entry, Epoch, Lamport, LogIndex, LogPos, NodeId, Snapshot};

mod append_codec;

/// Version byte in front of every encoded message. Bumped on incompatible changes.
pub const WIRE_VERSION: u8 = 1;

/// One protocol message: who sent it, the sender's epoch and clock, and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's address. Transports do not authenticate it beyond the cluster key.
    pub from: NodeId,
    /// The sender's current epoch. Replicas refuse replication traffic from older epochs.
    pub epoch: Epoch,
    /// The sender's Lamport clock; receivers advance theirs past it.
    pub clock: Lamport,
    /// What the message says.
    pub body: Body,
}

/// The message kinds. Requests and their replies are paired in the comments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Primary → secondary: entries to append (possibly none: a heartbeat). Reply: `AppendReply`.
    Append(Box<Append>),
    /// Secondary → primary: the outcome of an `Append` or `InstallSnapshot`.
    AppendReply(AppendReply),
    /// Primary → secondary: replace your state with this full copy. Reply: `AppendReply`.
    InstallSnapshot(Box<Snapshot>),
    /// Client → primary: execute this command once. Reply: `WriteReply`.
    Write(WriteRequest),
    /// The result of a write, or why it was not taken.
    WriteReply(Result<Written, WriteError>),
    /// Client → primary: several writes at once (a front end's concurrent writes travel
    /// together, one round trip for the lot). Each keeps its own id and its own result.
    /// Reply: `WriteBatchReply`, one result per write, in order.
    WriteBatch(Vec<WriteRequest>),
    /// The results of a `WriteBatch`, in order.
    WriteBatchReply(Vec<Result<Written, WriteError>>),
    /// Client → any replica: answer this query from state at least as new as `fence`.
    /// Reply: `ReadReply`.
    Read(ReadRequest),
    /// The answer to a read, or why it was not served.
    ReadReply(Result<ReadOk, ReadError>),
    /// Candidate → replica (the seed's `GET /election`): "do you outrank me?" Reply:
    /// `ElectionReply`.
    ElectionQuery(Rank),
    /// A replica's rank and eligibility, and the primary it follows if it still hears one.
    ElectionReply(Box<ElectionReply>),
    /// New primary → everyone (the seed's `POST /election`): "I am primary for `epoch`".
    /// Reply: `Ack`.
    Announce,
    /// Replica ↔ replica, and front end → primary (the seed's greet): my service list; merge it.
    /// Reply: `Services` with the receiver's merged list.
    Gossip(Vec<ServiceEntry>),
    /// A service list, in reply to `Gossip`.
    Services(Vec<ServiceEntry>),
    /// Generic empty reply.
    Ack,
    /// Refusal: the sender's epoch is older than the receiver's (whose epoch is in the header).
    StaleEpoch,
    /// Primary → secondary: a piece of an encoded `InstallSnapshot` message too large for one
    /// (`Config::copy_chunk_bytes`). Framing between runtimes: the receiving runtime puts the
    /// pieces together and hands its replica the whole copy, which never sees a piece. Reply:
    /// `CopyChunkReply` for every piece but the last; for the last, the copy's `AppendReply`.
    CopyChunk(CopyChunk),
    /// How much of a chunked copy the receiver holds.
    CopyChunkReply(CopyChunkReply),
}

impl Body {
    /// Upper estimate of the encoded size, to size buffers once.
    pub fn size_hint(&self) -> usize {
        const FIXED_BYTES: usize = 96;
        FIXED_BYTES
            + match self {
                Body::Append(a) => a.entries.iter().map(Entry::size_hint).sum(),
                Body::InstallSnapshot(s) => s.size_hint(),
                Body::Write(w) => w.command.len(),
                Body::WriteBatch(ws) => ws.iter().map(|w| 24 + w.command.len()).sum(),
                Body::WriteBatchReply(rs) => rs
                    .iter()
                    .map(|r| 24 + r.as_ref().map_or(16, |w| w.output.len()))
                    .sum(),
                Body::WriteReply(Ok(w)) => w.output.len(),
                Body::Read(r) => r.query.len(),
                Body::ReadReply(Ok(r)) => r.answer.len(),
                Body::Gossip(l) | Body::Services(l) => l.len() * 48,
                Body::CopyChunk(c) => c.bytes.len(),
                _ => 0,
            }
    }

    /// Short name of the message kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Append(a) if a.entries.is_empty() => "heartbeat",
            Body::Append(_) => "append",
            Body::AppendReply(_) => "append_reply",
            Body::InstallSnapshot(_) => "install_snapshot",
            Body::Write(_) => "write",
            Body::WriteBatch(_) => "write_batch",
            Body::WriteBatchReply(_) => "write_batch_reply",
            Body::WriteReply(_) => "write_reply",
            Body::Read(_) => "read",
            Body::ReadReply(_) => "read_reply",
            Body::ElectionQuery(_) => "election_query",
            Body::ElectionReply(_) => "election_reply",
            Body::Announce => "announce",
            Body::Gossip(_) => "gossip",
            Body::Services(_) => "services",
            Body::Ack => "ack",
            Body::StaleEpoch => "stale_epoch",
            Body::CopyChunk(_) => "copy_chunk",
            Body::CopyChunkReply(_) => "copy_chunk_reply",
        }
    }
}

/// Entries for a secondary, with the position they follow and the primary's commit point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    /// The entry just before `entries[0]` (or before the next entry, for a heartbeat). The
    /// secondary accepts only if its log holds exactly this entry at `prev.index`.
    pub prev: LogPos,
    /// Contiguous entries starting at `prev.index + 1`.
    pub entries: Vec<Entry>,
    /// The primary's commit point: the secondary may apply up to `min(commit, matched)`.
    pub commit: LogIndex,
    /// The primary's last index when it sent this. A secondary that holds everything up to it
    /// has every configuration entry the primary had written, so it knows whether it is still
    /// in the in-sync set (matching only the commit point does not tell it).
    pub last: LogIndex,
    /// The highest acknowledgement number the primary has received from this secondary: the
    /// secondary's eligibility lease starts from when it sent that one (acknowledgements sent
    /// later may never have arrived).
    pub acked: u64,
}

/// A secondary's answer to `Append` / `InstallSnapshot`. Sent only once what it acknowledges is
/// durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendReply {
    /// My log matches yours through `matched`, durably. `last` is my last entry.
    Ok {
        /// Highest index known equal to the primary's log, and durable.
        matched: LogIndex,
        /// The secondary's last entry (normally at `matched`).
        last: LogPos,
        /// This acknowledgement's number (increasing per secondary process), echoed back by the
        /// primary in `Append::acked`.
        seq: u64,
    },
    /// I do not hold `prev`: my log ends at `last`. Send me what follows it.
    Gap {
        /// The secondary's last entry.
        last: LogPos,
    },
    /// My log holds a different entry where yours has one: I need a full copy.
    Diverged {
        /// The secondary's last entry.
        last: LogPos,
    },
    /// Your snapshot is older than what I know is committed; try again later.
    SnapshotBehind {
        /// The secondary's commit point.
        commit: LogIndex,
    },
}

/// A piece of a full copy: bytes `offset..offset + bytes.len()` of the encoded
/// `InstallSnapshot` message, `total` bytes in all.
///
/// Pieces go one at a time, in order, each after the previous one was taken; a piece at offset
/// 0 starts a transfer (and drops whatever the receiver held of an earlier one from the same
/// sender), and the receiver refuses a piece that does not continue the transfer it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyChunk {
    /// Tells one transfer from another between the same two replicas.
    pub transfer: u64,
    /// Where these bytes go in the whole.
    pub offset: u64,
    /// Size of the whole encoded message.
    pub total: u64,
    /// The piece.
    pub bytes: Bytes,
}

/// The answer to a [`CopyChunk`] that is not the last piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyChunkReply {
    /// Taken: the receiver holds this many bytes of the transfer.
    Holds(u64),
    /// Refused (it does not continue the transfer the receiver holds, or the whole did not
    /// decode to a copy): start over.
    Refused(String),
}

/// A client's write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// Request id: retries carry the same id and execute at most once.
    pub id: Uuid,
    /// postcard-encoded `StateMachine::Command`.
    pub command: Bytes,
}

/// A committed write's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Where the write sits in the log.
    pub index: LogIndex,
    /// Its Lamport stamp; clients raise their read fence to it.
    pub lamport: Lamport,
    /// postcard-encoded `StateMachine::Output` of its first (and only) execution.
    pub output: Bytes,
}

/// Why a write was not taken. None of these mean the write executed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// This replica is not the primary; try `hint` if known. Safe to retry with the same id.
    #[error("not the primary (hint: {hint:?})")]
    NotPrimary {
        /// The primary this replica believes in, if any.
        hint: Option<NodeId>,
    },
    /// The command could not be decoded or exceeds limits: retrying will not help.
    #[error("write rejected: {0}")]
    Rejected(String),
    /// The primary's queue of pending writes is full. Back off and retry with the same id.
    #[error("primary overloaded")]
    Overloaded,
}

/// A client's read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// postcard-encoded `StateMachine::Query`.
    pub query: Bytes,
    /// The replica must have applied at least this Lamport stamp (the client's read fence).
    pub fence: Lamport,
}

/// A served read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOk {
    /// postcard-encoded `StateMachine::Answer`.
    pub answer: Bytes,
    /// Lamport stamp of the last entry applied on the replica that answered.
    pub applied: Lamport,
}

/// Why a read was not served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReadError {
    /// This replica has not reached the fence; ask the primary (or wait).
    #[error("replica behind the read fence (applied {applied})")]
    Behind {
        /// What the replica has applied.
        applied: Lamport,
    },
    /// The query could not be decoded.
    #[error("read rejected: {0}")]
    Rejected(String),
}

/// Election rank: the freshest log wins; the node id only breaks ties.
///
/// Field order is comparison order (derived `Ord`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rank {
    /// Epoch of the last entry in the log.
    pub last_epoch: Epoch,
    /// Lamport stamp of the last entry in the log.
    pub last_lamport: Lamport,
    /// The replica; the tie-break.
    pub node: NodeId,
}

/// A replica's answer to `ElectionQuery`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionReply {
    /// The replier's rank.
    pub rank: Rank,
    /// The replier is in the in-sync set of its latest configuration.
    pub in_sync: bool,
    /// The replier could take office on its own: it caught up with a primary since it started,
    /// and acknowledged an append recently enough that it cannot have been dropped from the
    /// in-sync set without knowing.
    pub confirmed: bool,
    /// The primary the replier still hears from, if any: the candidate should follow it instead.
    pub primary: Option<NodeId>,
    /// Members of the in-sync set in the replier's latest configuration.
    pub config_in_sync: Vec<NodeId>,
    /// The replier's last log entry (the new primary keeps in sync only replicas whose log is a
    /// prefix of its own).
    pub last: LogPos,
}

/// What kind of service a membership entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceKind {
    /// A replica (the seed's event service).
    Replica,
    /// A front end.
    Frontend,
}

/// One row of the gossiped service list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Replica or front end.
    pub kind: ServiceKind,
    /// Where it is reached.
    pub address: NodeId,
    /// Whether it is (as far as the sender knows) the primary.
    pub primary: bool,
    /// Process incarnation; a restart comes back with a higher one.
    pub generation: u64,
    /// Increases while the process is alive. Merge keeps the higher `(generation, heartbeat)`.
    pub heartbeat: u64,
}

/// Encoding or decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes were empty.
    #[error("empty message")]
    Empty,
    /// The version byte is not one this build speaks.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    /// postcard rejected the bytes (or, when encoding, the value).
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encode a message: the version byte, then postcard. Appends are written by a hand-made
/// encoder of the same bytes (`append_codec`).
pub fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
    // Sized up front: growing the buffer while serializing a batch reallocates and copies it
    // several times, which showed up as a tenth of the replication path's instructions.
    let mut out = Vec::with_capacity(msg.body.size_hint());
    out.push(WIRE_VERSION);
    if append_codec::encode(&mut out, msg) {
        return Ok(out);
    }
    encode_serde(msg, out)
}

/// The postcard half of [`encode`]: `out` holds the version byte.
fn encode_serde(msg: &Message, out: Vec<u8>) -> Result<Vec<u8>, CodecError> {
    postcard::serialize_with_flavor(msg, VecFlavor(out))
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// The longest varint postcard writes (a `u64`/`u128` is at most 10/19 bytes).
const VARINT_BYTES_MAX: usize = 19;

/// Serializes into a caller-sized `Vec`. postcard's own `Vec` flavor cannot start from a
/// pre-sized buffer, and its `io::Write` flavor pays a call per varint.
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // postcard writes every varint through here (1–10 bytes): a byte loop beats a
        // `memcpy` call of unknown length, which was most of the encoder's time on a batch.
        if bytes.len() <= VARINT_BYTES_MAX {
            for &b in bytes {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decode a message produced by [`encode`]. Never panics on arbitrary input.
pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CodecError::Version(version));
    }
    if let Some(msg) = append_codec::decode(rest) {
        return Ok(msg);
    }
    decode_serde(rest)
}

/// Whether `bytes` (as [`encode`] makes them) hold an append, from the header alone: the
/// runtime hands appends to the receiving replica undecoded (`Handler::handle_encoded`).
/// False for anything else, including bytes that are not a message at all.
pub fn is_append(bytes: &[u8]) -> bool {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => append_codec::is_append(rest),
        _ => false,
    }
}

/// The postcard half of [`decode`]: the bytes after the version byte.
fn decode_serde(rest: &[u8]) -> Result<Message, CodecError> {
    postcard::from_bytes(rest).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encode any serde value with postcard (commands, outputs, queries, answers, snapshots).
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    postcard::to_stdvec(value)
        .map(Bytes::from)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decode a postcard value encoded by [`to_bytes`]. Never panics on arbitrary input.
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn sample() -> Message {
        Message {
            from: NodeId::new("r1"),
            epoch: 3,
            clock: 99,
            body: Body::Append(Box::new(Append {
                prev: LogPos {
                    index: 4,
                    epoch: 2,
                    lamport: 50,
                    ..LogPos::ZERO
                },
                entries: vec![Entry {
                    index: 5,
                    lamport: 98,
                    epoch: 3,
                    id: Uuid::from_u128(7),
                    payload: Payload::Command(Bytes::from_static(b"cmd")),
                }],
                commit: 4,
                last: 4,
                acked: 9,
            })),
        }
    }

    #[test]
    fn round_trip() {
        let msg = sample();
        let bytes = encode(&msg).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(&bytes).unwrap(), msg);
    }

    /// postcard's own encoding of `msg`, version byte first: the reference for the hand-made
    /// append codec.
    fn postcard_bytes(msg: &Message) -> Vec<u8> {
        encode_serde(msg, vec![WIRE_VERSION]).unwrap()
    }

    /// postcard's own decoding of `bytes`.
    fn postcard_decode(bytes: &[u8]) -> Option<Message> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, rest)) => decode_serde(rest).ok(),
            _ => None,
        }
    }

    mod append_codec_matches_postcard {
        use super::*;
        use proptest::prelude::*;

        fn any_u64() -> impl Strategy<Value = u64> {
            // Every varint length, and the edges.
            prop_oneof![
                0u64..300,
                any::<u64>(),
                Just(u64::MAX),
                (0u32..64).prop_map(|s| 1u64 << s)
            ]
        }

        fn any_pos() -> impl Strategy<Value = LogPos> {
            (any_u64(), any_u64(), any_u64(), any::<u128>()).prop_map(
                |(index, epoch, lamport, id)| LogPos {
                    index,
                    epoch,
                    lamport,
                    id: Uuid::from_u128(id),
                },
            )
        }

        fn any_entry() -> impl Strategy<Value = Entry> {
            let command = proptest::collection::vec(any::<u8>(), 0..200)
                .prop_map(|c| Payload::Command(Bytes::from(c)));
            let config = proptest::collection::btree_set("[a-z0-9:.]{1,12}", 0..4).prop_map(|s| {
                Payload::Config(Box::new(crate::types::ClusterConfig {
                    primary: s.iter().next().map(NodeId::new),
                    in_sync: s.into_iter().map(NodeId::new).collect(),
                }))
            });
            let payload = prop_oneof![10 => command, 1 => config];
            (any_u64(), any_u64(), any_u64(), any::<u128>(), payload).prop_map(
                |(index, lamport, epoch, id, payload)| Entry {
                    index,
                    lamport,
                    epoch,
                    id: Uuid::from_u128(id),
                    payload,
                },
            )
        }

        fn any_append() -> impl Strategy<Value = Message> {
            (
                "\\PC{0,20}",
                any_u64(),
                any_u64(),
                any_pos(),
                proptest::collection::vec(any_entry(), 0..20),
                (any_u64(), any_u64(), any_u64()),
            )
                .prop_map(
                    |(from, epoch, clock, prev, entries, (commit, last, acked))| Message {
                        from: NodeId::new(from),
                        epoch,
                        clock,
                        body: Body::Append(Box::new(Append {
                            prev,
                            entries,
                            commit,
                            last,
                            acked,
                        })),
                    },
                )
        }

        proptest! {
            /// The same bytes as postcard, and back to the same message.
            #[test]
            fn encodes_and_decodes_like_postcard(msg in any_append()) {
                let bytes = encode(&msg).unwrap();
                prop_assert_eq!(&bytes, &postcard_bytes(&msg));
                prop_assert_eq!(decode(&bytes).unwrap(), msg);
            }

            /// Mangled bytes (a byte changed, bytes cut or added) decode exactly as postcard
            /// decodes them: the same message, or an error for both.
            #[test]
            fn mangled_bytes_decode_like_postcard(
                msg in any_append(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                how in 0u8..4,
            ) {
                let mut bytes = encode(&msg).unwrap();
                let i = 1 + at.index(bytes.len() - 1);
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, byte),
                    _ => bytes.push(byte),
                }
                prop_assert_eq!(decode(&bytes).ok(), postcard_decode(&bytes));
                // Bytes routed as an append (`is_append`) decode to an append or not at all:
                // the runtime takes any other message, a write batch above all, another way.
                if is_append(&bytes) {
                    let decoded = decode(&bytes);
                    prop_assert!(
                        matches!(&decoded, Err(_) | Ok(Message { body: Body::Append(_), .. })),
                        "routed as an append: {:?}", decoded
                    );
                }
            }

            /// Every append is recognised from its header.
            #[test]
            fn appends_are_recognised_by_their_header(msg in any_append()) {
                prop_assert!(is_append(&encode(&msg).unwrap()));
            }
        }

        /// A varint written longer than it needs to be decodes as postcard decodes it (the
        /// hand-made decoder leaves it to postcard).
        #[test]
        fn overlong_varints_are_left_to_postcard() {
            let msg = sample();
            let mut bytes = encode(&msg).unwrap();
            // `from` is "r1": its length byte (2) is at 1; write it as 0x82 0x00.
            assert_eq!(bytes[1], 2);
            bytes[1] = 0x82;
            bytes.insert(2, 0);
            assert_eq!(decode(&bytes).ok(), postcard_decode(&bytes));
        }
    }

    /// Other messages, and bytes that are no message, are not taken for appends.
    #[test]
    fn only_appends_are_recognised_as_appends() {
        let mut msg = sample();
        for body in [
            Body::Write(WriteRequest {
                id: Uuid::from_u128(1),
                command: Bytes::from_static(b"w"),
            }),
            Body::WriteBatch(vec![]),
            Body::Announce,
        ] {
            msg.body = body;
            assert!(!is_append(&encode(&msg).unwrap()), "{}", msg.body.kind());
        }
        assert!(!is_append(&[]));
        assert!(!is_append(&[WIRE_VERSION]));
        let mut bytes = encode(&sample()).unwrap();
        assert!(is_append(&bytes));
        bytes[0] = WIRE_VERSION + 1;
        assert!(!is_append(&bytes), "another wire version");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[]), Err(CodecError::Empty));
        assert_eq!(decode(&[9, 1, 2]), Err(CodecError::Version(9)));
        let bytes = encode(&sample()).unwrap();
        // Every truncation of a valid message is rejected.
        for len in 1..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        // Flipping bytes never panics (it may or may not decode).
        for i in 1..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode(&b);
        }
    }
}
