//! The event trace of a run: always hashed (to prove that one seed gives one run), written out as
//! readable text only when asked (`--trace`), since formatting every message costs more than
//! simulating it.

use std::fmt::Write as _;

use replica_core::message::{AppendReply, Body};

/// FNV-1a, 64-bit: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`,
/// whose algorithm is unspecified), which a trace hash compared across builds needs.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mix in bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Mix in one number.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of a byte string.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.bytes(bytes);
    h.finish()
}

/// Hash of every event, and optionally the readable text.
#[derive(Debug, Default)]
pub struct Trace {
    hash: Fnv,
    text: Option<String>,
    /// Events recorded.
    pub events: u64,
}

impl Trace {
    /// A trace that keeps text when `text` is true.
    pub fn new(text: bool) -> Self {
        Trace {
            hash: Fnv::default(),
            text: text.then(String::new),
            events: 0,
        }
    }

    /// Whether text is being kept (callers skip building it otherwise).
    pub fn wants_text(&self) -> bool {
        self.text.is_some()
    }

    /// Record one event: `words` and `bytes` go into the hash, `line` (only called when text
    /// is kept) into the text.
    pub fn record(&mut self, now: u64, words: &[u64], bytes: &[u8], line: impl FnOnce() -> String) {
        self.events += 1;
        self.hash.u64(now);
        for w in words {
            self.hash.u64(*w);
        }
        self.hash.bytes(bytes);
        if let Some(t) = self.text.as_mut() {
            let _ = writeln!(t, "{now:>7}ms  {}", line());
        }
    }

    /// A note in the text only (already covered by hashed events).
    pub fn note(&mut self, now: u64, line: impl FnOnce() -> String) {
        if let Some(t) = self.text.as_mut() {
            let _ = writeln!(t, "{now:>7}ms  {}", line());
        }
    }

    /// The hash of everything recorded.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Take the text.
    pub fn take_text(&mut self) -> Option<String> {
        self.text.take()
    }
}

/// A short description of a message body for the trace.
pub fn describe(body: &Body) -> String {
    match body {
        Body::Append(a) if a.entries.is_empty() => {
            format!(
                "heartbeat prev={}/{}/{} commit={}",
                a.prev.index, a.prev.epoch, a.prev.lamport, a.commit
            )
        }
        Body::Append(a) => format!(
            "append prev={}/{}/{} entries={}..={} commit={}",
            a.prev.index,
            a.prev.epoch,
            a.prev.lamport,
            a.entries.first().map_or(0, |e| e.index),
            a.entries.last().map_or(0, |e| e.index),
            a.commit
        ),
        Body::AppendReply(AppendReply::Ok { matched, last, .. }) => {
            format!(
                "append-ok matched={matched} last={}/{}/{}",
                last.index, last.epoch, last.lamport
            )
        }
        Body::AppendReply(r) => format!("{r:?}"),
        Body::InstallSnapshot(s) => {
            format!(
                "install-snapshot last={}/{}/{} in_sync={:?}",
                s.last.index, s.last.epoch, s.last.lamport, s.config.in_sync
            )
        }
        Body::Write(w) => format!("write id={}", short(&w.id)),
        Body::WriteBatch(ws) => format!("write-batch n={}", ws.len()),
        Body::WriteBatchReply(rs) => format!("write-batch-reply n={}", rs.len()),
        Body::WriteReply(Ok(w)) => format!("written index={} lamport={}", w.index, w.lamport),
        Body::WriteReply(Err(e)) => format!("write-refused {e}"),
        Body::Read(r) => format!("read fence={}", r.fence),
        Body::ReadReply(Ok(r)) => format!("read-ok applied={}", r.applied),
        Body::ReadReply(Err(e)) => format!("read-refused {e}"),
        Body::ElectionQuery(r) => format!(
            "election-query rank={}/{}/{}",
            r.last_epoch, r.last_lamport, r.node
        ),
        Body::ElectionReply(r) => format!(
            "election-reply rank={}/{}/{} in_sync={} confirmed={} primary={:?} config={:?}",
            r.rank.last_epoch,
            r.rank.last_lamport,
            r.rank.node,
            r.in_sync,
            r.confirmed,
            r.primary,
            r.config_in_sync
        ),
        Body::Announce => "announce".to_string(),
        Body::Gossip(l) => format!("gossip services={}", l.len()),
        Body::Services(l) => format!("services n={}", l.len()),
        Body::Ack => "ack".to_string(),
        Body::StaleEpoch => "stale-epoch".to_string(),
        Body::CopyChunk(c) => format!(
            "copy-chunk transfer={} {}+{} of {}",
            c.transfer,
            c.offset,
            c.bytes.len(),
            c.total
        ),
        Body::CopyChunkReply(r) => format!("copy-chunk-reply {r:?}"),
    }
}

/// First eight hex digits of a request id.
pub fn short(id: &uuid::Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}
