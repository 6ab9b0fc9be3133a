//! Full copies in pieces: the sending runtime cuts an encoded `InstallSnapshot` message larger
//! than `Config::copy_chunk_bytes` into [`CopyChunk`]s, one transport call each; the receiving
//! runtime puts them back together and hands its replica the whole message, as if it had come
//! in one call. The protocol core never sees a piece.
//!
//! Why: a transport bounds its messages and the time a call may take (`replica-http`: 64 MiB and
//! 5 s by default). With a copy in one message, a replica whose snapshot outgrew either could
//! never be brought back by a copy, and every attempt cost the primary a snapshot of its whole
//! state machine. In pieces, each call carries a bounded amount and gets its own timeout.
//!
//! Invariants: a receiver holds at most one transfer per sender, and only bytes that arrived
//! (the declared total reserves nothing), so what a sender can make it hold is what it sent,
//! and not for long once it stops sending ([`STALE_AFTER`]); a
//! piece is taken only if it continues that transfer exactly (same id, same total, at the offset
//! where the bytes held end), and a piece at offset 0 starts a new transfer, dropping the old
//! one; the whole is handed on only if it decodes to a copy from the sender of the pieces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::{self, Body, CopyChunk, CopyChunkReply, Message};
use crate::metrics::NodeMetrics;
use crate::transport::{Transport, TransportError};
use crate::types::NodeId;

/// Transfer ids of this process: they need only differ between consecutive transfers from one
/// sender to one receiver.
static NEXT_TRANSFER: AtomicU64 = AtomicU64::new(1);

/// Send a full copy to `to`: in one call if its encoding (estimated from
/// [`Body::size_hint`], an upper bound) fits in `chunk_bytes`, else in pieces of `chunk_bytes`.
/// The result is the copy's reply either way.
pub(super) async fn send<T: Transport + ?Sized>(
    transport: &T,
    to: &NodeId,
    msg: Message,
    chunk_bytes: usize,
    metrics: &NodeMetrics,
) -> Result<Message, TransportError> {
    let chunk_bytes = chunk_bytes.max(1);
    if msg.body.size_hint() <= chunk_bytes {
        return transport.call(to, msg).await;
    }
    let whole = message::encode(&msg).map_err(|e| TransportError::Codec(to.clone(), e))?;
    let whole = Bytes::from(whole);
    // The encoding is all that is sent from here on: let the decoded copy go.
    let Message {
        from, epoch, clock, ..
    } = msg;
    let total = whole.len() as u64;
    let transfer = NEXT_TRANSFER.fetch_add(1, Ordering::Relaxed);
    let mut offset = 0;
    loop {
        let end = (offset + chunk_bytes).min(whole.len());
        let piece = Message {
            from: from.clone(),
            epoch,
            clock,
            body: Body::CopyChunk(CopyChunk {
                transfer,
                offset: offset as u64,
                total,
                bytes: whole.slice(offset..end),
            }),
        };
        metrics.copy_chunks_sent.fetch_add(1, Ordering::Relaxed);
        let reply = transport.call(to, piece).await?;
        if end == whole.len() {
            return Ok(reply);
        }
        match reply.body {
            Body::CopyChunkReply(CopyChunkReply::Holds(held)) if held == end as u64 => {
                offset = end;
            }
            Body::CopyChunkReply(CopyChunkReply::Refused(why)) => {
                return Err(TransportError::Network(
                    to.clone(),
                    format!("copy piece refused: {why}"),
                ));
            }
            other => {
                return Err(TransportError::Network(
                    to.clone(),
                    format!(
                        "copy piece at {offset} of {total} answered with {}",
                        other.kind()
                    ),
                ));
            }
        }
    }
}

/// A transfer no piece has arrived for in this long is given up, whoever sends next: its sender
/// died or moved on (a sender waits for each piece's answer, and its transport gives up on a
/// call long before this).
pub(super) const STALE_AFTER: Duration = Duration::from_secs(60);

/// One transfer being received.
struct Partial {
    transfer: u64,
    total: u64,
    bytes: Vec<u8>,
    /// When its last piece arrived.
    touched: Instant,
}

/// What a piece made of its transfer.
#[derive(Debug, PartialEq)]
pub(super) enum Taken {
    /// Held, this many bytes so far: answer with [`CopyChunkReply::Holds`].
    Holds(u64),
    /// The last piece: the whole copy, to hand to the replica.
    Whole(Box<Message>),
    /// Refused: answer with [`CopyChunkReply::Refused`].
    Refused(String),
}

/// The receiving side: transfers in progress, one per sender.
#[derive(Default)]
pub(super) struct Assembler {
    partial: Mutex<HashMap<NodeId, Partial>>,
}

impl Assembler {
    /// Take a piece from `from`, arrived at `now`.
    pub(super) fn take(&self, from: &NodeId, chunk: CopyChunk, now: Instant) -> Taken {
        let mut partial = self.partial.lock().unwrap_or_else(PoisonError::into_inner);
        partial.retain(|_, p| now.saturating_duration_since(p.touched) < STALE_AFTER);
        if chunk.offset == 0 {
            partial.insert(
                from.clone(),
                Partial {
                    transfer: chunk.transfer,
                    total: chunk.total,
                    bytes: Vec::new(),
                    touched: now,
                },
            );
        }
        let Some(p) = partial.get_mut(from) else {
            return Taken::Refused(format!(
                "no transfer from {from} in progress (piece at {})",
                chunk.offset
            ));
        };
        let continues = p.transfer == chunk.transfer
            && p.total == chunk.total
            && p.bytes.len() as u64 == chunk.offset
            && chunk
                .offset
                .checked_add(chunk.bytes.len() as u64)
                .is_some_and(|end| end <= chunk.total)
            && !chunk.bytes.is_empty();
        if !continues {
            let why = format!(
                "piece {}@{}+{} of {} does not continue transfer {} ({} of {} bytes held)",
                chunk.transfer,
                chunk.offset,
                chunk.bytes.len(),
                chunk.total,
                p.transfer,
                p.bytes.len(),
                p.total
            );
            partial.remove(from);
            return Taken::Refused(why);
        }
        p.bytes.extend_from_slice(&chunk.bytes);
        p.touched = now;
        let held = p.bytes.len() as u64;
        if held < p.total {
            return Taken::Holds(held);
        }
        let Some(done) = partial.remove(from) else {
            return Taken::Refused("transfer vanished".into());
        };
        drop(partial);
        match message::decode(&done.bytes) {
            Ok(msg) if msg.from == *from && matches!(msg.body, Body::InstallSnapshot(_)) => {
                Taken::Whole(Box::new(msg))
            }
            Ok(msg) => Taken::Refused(format!(
                "the pieces made a {} from {}, not a copy from {from}",
                msg.body.kind(),
                msg.from
            )),
            Err(e) => Taken::Refused(format!("the pieces did not decode: {e}")),
        }
    }

    /// Transfers in progress (for tests).
    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.partial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::types::{ClusterConfig, DedupRecords, LogPos, Snapshot};

    fn now() -> Instant {
        Instant::now()
    }

    fn copy_from(from: &str, state_bytes: usize) -> Message {
        Message {
            from: NodeId::new(from),
            epoch: 3,
            clock: 9,
            body: Body::InstallSnapshot(Box::new(Snapshot {
                last: LogPos::ZERO,
                config: ClusterConfig::default(),
                state: Bytes::from(vec![7u8; state_bytes]),
                dedup: DedupRecords::new(),
            })),
        }
    }

    fn pieces(msg: &Message, size: usize, transfer: u64) -> Vec<CopyChunk> {
        let whole = Bytes::from(message::encode(msg).unwrap());
        (0..whole.len())
            .step_by(size)
            .map(|offset| CopyChunk {
                transfer,
                offset: offset as u64,
                total: whole.len() as u64,
                bytes: whole.slice(offset..(offset + size).min(whole.len())),
            })
            .collect()
    }

    #[test]
    fn pieces_in_order_make_the_copy() {
        let a = Assembler::default();
        let msg = copy_from("p", 10_000);
        let ps = pieces(&msg, 1000, 1);
        let n = ps.len();
        let p = NodeId::new("p");
        for (i, c) in ps.into_iter().enumerate() {
            let end = c.offset + c.bytes.len() as u64;
            match a.take(&p, c, now()) {
                Taken::Holds(held) => assert!(i < n - 1 && held == end),
                Taken::Whole(whole) => {
                    assert_eq!(i, n - 1);
                    assert_eq!(*whole, msg);
                }
                Taken::Refused(why) => panic!("piece {i} refused: {why}"),
            }
        }
        assert_eq!(a.in_progress(), 0, "nothing held once handed on");
    }

    #[test]
    fn a_piece_that_does_not_continue_is_refused_and_drops_the_transfer() {
        let p = NodeId::new("p");
        let ps = pieces(&copy_from("p", 5_000), 1000, 1);
        // Skipped, repeated, from another transfer, or with another total.
        let wrong = [
            ps[2].clone(),
            ps[0].clone(),
            CopyChunk {
                transfer: 2,
                ..ps[1].clone()
            },
            CopyChunk {
                total: ps[1].total + 1,
                ..ps[1].clone()
            },
        ];
        for (k, w) in wrong.into_iter().enumerate() {
            let a = Assembler::default();
            assert_eq!(a.take(&p, ps[0].clone(), now()), Taken::Holds(1000));
            if k == 1 {
                // A repeated first piece restarts the transfer rather than failing it.
                assert_eq!(a.take(&p, w, now()), Taken::Holds(1000));
                continue;
            }
            assert!(
                matches!(a.take(&p, w, now()), Taken::Refused(_)),
                "case {k}"
            );
            assert_eq!(a.in_progress(), 0, "case {k}: dropped");
            assert!(
                matches!(a.take(&p, ps[1].clone(), now()), Taken::Refused(_)),
                "case {k}: nothing to continue"
            );
        }
    }

    #[test]
    fn pieces_that_are_not_a_copy_from_their_sender_are_refused() {
        let a = Assembler::default();
        // A copy claiming another sender.
        let ps = pieces(&copy_from("q", 3_000), 1000, 1);
        let p = NodeId::new("p");
        let mut last = None;
        for c in ps {
            last = Some(a.take(&p, c, now()));
        }
        assert!(matches!(last, Some(Taken::Refused(_))), "{last:?}");
        // Bytes that do not decode at all.
        let junk = CopyChunk {
            transfer: 5,
            offset: 0,
            total: 4,
            bytes: Bytes::from_static(&[1, 2, 3, 4]),
        };
        assert!(matches!(a.take(&p, junk, now()), Taken::Refused(_)));
        // Transfers from different senders do not mix.
        let (q, r) = (NodeId::new("q"), NodeId::new("r"));
        let qs = pieces(&copy_from("q", 2_500), 1000, 1);
        let rs = pieces(&copy_from("r", 2_500), 1000, 1);
        assert!(matches!(a.take(&q, qs[0].clone(), now()), Taken::Holds(_)));
        assert!(matches!(a.take(&r, rs[0].clone(), now()), Taken::Holds(_)));
        assert!(matches!(a.take(&q, qs[1].clone(), now()), Taken::Holds(_)));
        assert!(matches!(a.take(&r, rs[1].clone(), now()), Taken::Holds(_)));
        assert!(matches!(a.take(&q, qs[2].clone(), now()), Taken::Whole(_)));
        assert!(matches!(a.take(&r, rs[2].clone(), now()), Taken::Whole(_)));
    }

    #[test]
    fn a_transfer_left_for_long_is_given_up() {
        let a = Assembler::default();
        let (p, q) = (NodeId::new("p"), NodeId::new("q"));
        let ps = pieces(&copy_from("p", 3_000), 1000, 1);
        let qs = pieces(&copy_from("q", 3_000), 1000, 1);
        let t0 = now();
        assert!(matches!(a.take(&p, ps[0].clone(), t0), Taken::Holds(_)));
        // A piece from q a while later keeps p's transfer while it may still go on...
        let soon = t0 + STALE_AFTER / 2;
        assert!(matches!(a.take(&q, qs[0].clone(), soon), Taken::Holds(_)));
        assert_eq!(a.in_progress(), 2);
        // ...and gives it up once no piece came for `STALE_AFTER`.
        let late = t0 + STALE_AFTER;
        assert!(matches!(a.take(&q, qs[1].clone(), late), Taken::Holds(_)));
        assert_eq!(a.in_progress(), 1, "p's transfer dropped, q's kept");
        assert!(matches!(a.take(&p, ps[1].clone(), late), Taken::Refused(_)));
    }
}
