//! The append message's encoding, written out by hand: byte for byte what postcard makes of the
//! derived serde impls, without serde's per-field calls.
//!
//! Appends carry nearly every byte of replication, and serde's generic path spent about 400
//! instructions per entry to encode and 300 to decode (a call and a `Result` per field, a
//! visitor per value, a vector per command): the in-memory transport's round trips were 23% of
//! the replication benchmark's instructions (callgrind, `replica-bench -m 3 -c 64 --threads 1`).
//! Written out here they are 16%, most of it the replies, which stay with postcard; 9% fewer
//! instructions in all.
//!
//! Invariant: [`encode`] produces exactly postcard's bytes for the same message, and [`decode`]
//! returns `Some` only for input postcard decodes to the same message. Anything it does not
//! handle — a configuration entry, a varint written in more bytes than needed, trailing bytes,
//! another message kind — yields `None`, and the caller hands the bytes to postcard, which
//! decides. The tests in `message.rs` check both directions against postcard itself, on random
//! messages and on mangled bytes.

use bytes::Bytes;
use uuid::Uuid;

use super::{Append, Body, Message};
use crate::types::{Entry, LogPos, NodeId, Payload};

/// `Body::Append`'s variant index (its position in the enum).
const APPEND_VARIANT: u64 = 0;
/// `Payload::Command`'s variant index.
const COMMAND_VARIANT: u64 = 0;
/// A `Uuid` goes out as a byte string: its length (16, one varint byte), then the bytes.
const ID_BYTES: usize = 16;
/// The fewest bytes an entry takes (three one-byte varints, the id, a variant byte and an empty
/// command's length byte): bounds the entries a length prefix can claim.
const ENTRY_BYTES_MIN: usize = 3 + 1 + ID_BYTES + 2;

/// Append the encoding of `msg` to `out`, after the version byte. Returns false, having written
/// nothing, if `msg` is not an append or carries a configuration entry (left to postcard: rare
/// and not worth a second encoder).
pub(super) fn encode(out: &mut Vec<u8>, msg: &Message) -> bool {
    let Body::Append(a) = &msg.body else {
        return false;
    };
    if a.entries
        .iter()
        .any(|e| !matches!(e.payload, Payload::Command(_)))
    {
        return false;
    }
    put_bytes(out, msg.from.as_str().as_bytes());
    put_varint(out, msg.epoch);
    put_varint(out, msg.clock);
    put_varint(out, APPEND_VARIANT);
    put_pos(out, &a.prev);
    put_varint(out, a.entries.len() as u64);
    for e in &a.entries {
        put_varint(out, e.index);
        put_varint(out, e.lamport);
        put_varint(out, e.epoch);
        put_bytes(out, e.id.as_bytes());
        if let Payload::Command(c) = &e.payload {
            put_varint(out, COMMAND_VARIANT);
            put_bytes(out, c);
        }
    }
    put_varint(out, a.commit);
    put_varint(out, a.last);
    put_varint(out, a.acked);
    true
}

/// Whether the bytes after the version byte are an append's: reads only the header (sender,
/// epoch, clock, the body's variant). Says nothing of whether the rest decodes.
pub(super) fn is_append(bytes: &[u8]) -> bool {
    let mut r = Reader { rest: bytes };
    let header = r.bytes().and_then(|_| r.varint()).and_then(|_| r.varint());
    header.is_some() && r.varint() == Some(APPEND_VARIANT)
}

/// Decode an append (the bytes after the version byte), or `None` to leave the bytes to
/// postcard: they are another message, or not in the canonical shape [`encode`] writes.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    let mut r = Reader { rest: bytes };
    let from = std::str::from_utf8(r.bytes()?).ok()?;
    let epoch = r.varint()?;
    let clock = r.varint()?;
    if r.varint()? != APPEND_VARIANT {
        return None;
    }
    let prev = r.pos()?;
    let count = usize::try_from(r.varint()?).ok()?;
    if count > r.rest.len() / ENTRY_BYTES_MIN {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let index = r.varint()?;
        let lamport = r.varint()?;
        let epoch = r.varint()?;
        let id = r.id()?;
        if r.varint()? != COMMAND_VARIANT {
            return None;
        }
        let command = match r.bytes()? {
            [] => Bytes::new(),
            b => Bytes::copy_from_slice(b),
        };
        entries.push(Entry {
            index,
            lamport,
            epoch,
            id,
            payload: Payload::Command(command),
        });
    }
    let commit = r.varint()?;
    let last = r.varint()?;
    let acked = r.varint()?;
    if !r.rest.is_empty() {
        return None;
    }
    Some(Message {
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
    })
}

/// postcard's varint: seven bits a byte, least significant first, the high bit set on every
/// byte but the last.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A byte or UTF-8 string: its length as a varint, then the bytes.
#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_pos(out: &mut Vec<u8>, p: &LogPos) {
    put_varint(out, p.index);
    put_varint(out, p.epoch);
    put_varint(out, p.lamport);
    put_bytes(out, p.id.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A canonical varint (no byte more than needed, at most 64 bits); `None` otherwise.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        // Most varints here are one byte (epochs, variants, lengths): that case inline.
        let (&first, after) = self.rest.split_first()?;
        if first < 0x80 {
            self.rest = after;
            return Some(u64::from(first));
        }
        self.varint_long(first, after)
    }

    /// The rest of a varint whose first byte is `first`.
    fn varint_long(&mut self, first: u8, after: &'a [u8]) -> Option<u64> {
        let mut v = u64::from(first & 0x7f);
        let mut shift = 7;
        for (i, &b) in after.iter().take(9).enumerate() {
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                // A zero last byte is overlong; the tenth byte holds only the 64th bit.
                if b == 0 || (shift == 63 && b > 1) {
                    return None;
                }
                self.rest = &after[i + 1..];
                return Some(v);
            }
            shift += 7;
        }
        None
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (b, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(b)
    }

    /// A `Uuid`: the length byte (16), then the bytes.
    #[inline]
    fn id(&mut self) -> Option<Uuid> {
        let (&len, after) = self.rest.split_first()?;
        if usize::from(len) != ID_BYTES {
            return None;
        }
        let bytes: [u8; ID_BYTES] = after.get(..ID_BYTES)?.try_into().ok()?;
        self.rest = after.get(ID_BYTES..)?;
        Some(Uuid::from_bytes(bytes))
    }

    fn pos(&mut self) -> Option<LogPos> {
        Some(LogPos {
            index: self.varint()?,
            epoch: self.varint()?,
            lamport: self.varint()?,
            id: self.id()?,
        })
    }
}
