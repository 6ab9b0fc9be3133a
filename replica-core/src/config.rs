//! Tunables of a replica. Every limit has a name ending in its unit and a default chosen for a
//! loaded two-core machine.

use serde::{Deserialize, Serialize};

/// Timeouts, batch limits and retention bounds of one replica.
///
/// The defaults keep write unavailability after a primary crash under two seconds (failure timeout
/// plus jitter plus one election round) while a loaded machine that delays a few heartbeats does
/// not trigger a false election (the failure timeout spans sixteen heartbeat intervals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How often the primary sends an (empty) append to an idle secondary, carrying the commit
    /// point and proving it is alive. Default 50 ms.
    pub heartbeat_interval_ms: u64,
    /// A secondary that hears nothing from its primary for this long (plus jitter) becomes a
    /// candidate. Default 800 ms: sixteen heartbeats, so a stalled process does not cause a false
    /// election.
    pub failure_timeout_ms: u64,
    /// Upper bound of the random extra added to `failure_timeout_ms` (drawn from the seeded RNG) so
    /// that secondaries do not all start elections at once. Default 400 ms.
    pub failure_jitter_ms: u64,
    /// A secondary that has not acknowledged an outstanding append for this long is dropped from
    /// the in-sync set, and writes proceed without it. Default 1500 ms: longer than failure
    /// detection plus an election, so a primary that is only cut off learns of the new epoch (and
    /// steps down) before it would shrink its in-sync set to itself.
    pub ack_timeout_ms: u64,
    /// How long a candidate waits for answers to its election queries (asking silent replicas
    /// again at every tick), and for the announcement after a higher-ranked replica answered,
    /// before deciding or starting a new round. A replica silent for this long counts as dead.
    /// Default 200 ms (plus up to half again of jitter).
    pub election_wait_ms: u64,
    /// How often replicas gossip their service list, and front ends greet the primary.
    /// Default 200 ms.
    pub gossip_interval_ms: u64,
    /// A service whose heartbeat has not advanced for half this long is suspected (shown as such
    /// in `Status::suspected`); at this long it is removed from the list. Default 2000 ms.
    pub suspicion_timeout_ms: u64,
    /// Most entries in one append message. Default 1024.
    pub batch_entries_max: usize,
    /// Most payload bytes in one append message (a single larger entry still goes alone).
    /// Default 1 MiB.
    pub batch_bytes_max: usize,
    /// Appends outstanding to one secondary at a time. With one, a write that arrives just as a
    /// batch leaves waits for that batch's whole round trip; with two, it goes at once in the
    /// next batch while the first is still in flight. Default 2.
    pub appends_in_flight_max: usize,
    /// Most writes the primary holds that are not yet committed; more are refused with
    /// `Overloaded`. Default 65536.
    pub pending_writes_max: usize,
    /// Retention bound of the dedup table: the ids of the most recent this-many applied writes
    /// are remembered. A retry that arrives after more than this many newer writes have been
    /// applied may execute twice, so `client deadline × peak writes/s` must stay below it: the
    /// default covers a 10 s client deadline up to 25,000 writes/s. Default 250,000: 48 bytes a
    /// record plus its output on every replica (12 MB with empty outputs), and on the primary an
    /// index of 24-byte slots sized at taking office for twice this many ids at most half full
    /// (it keeps evicted ids until a sweep passes them), 2^20 slots = 25 MB, written once when it
    /// takes office, so that it never rehashes on the write path.
    pub dedup_entries_max: usize,
    /// Take a snapshot (and compact the log before it) every this many applied entries, or
    /// every dedup-table-size entries if that is more (a snapshot copies the dedup table, and
    /// this keeps the copy O(1) per write). 0 disables snapshots. Default 10,000.
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind the latest snapshot, so a briefly lagging secondary
    /// catches up from the suffix instead of needing a full copy. Default 10,000.
    pub log_retain_entries: u64,
    /// Granularity of the runtime's timer. Default 10 ms.
    pub tick_interval_ms: u64,
    /// How long the core task keeps looking at its inputs, yielding to the runtime's other
    /// tasks in between, when a turn finds nothing to do, before it lets its thread sleep — a
    /// budget counted in polls of an in-process transport.
    /// Waking a sleeping thread costs microseconds (on a virtual machine, an inter-processor
    /// interrupt through the hypervisor), and a replica under load is idle only for the moment
    /// between one reply and the next request; polling through that moment keeps the thread
    /// awake. With an in-process transport ([`crate::Transport::in_process`]) a poll costs about
    /// a tenth of a microsecond (the task goes back in its worker's queue, no system call); over
    /// sockets each poll must also give the I/O driver a turn (a system call), costs about eight
    /// times as much and counts eight: either way the default spins through gaps of the order of
    /// 100 µs. Only load rearms the polls — at least 16 writes waiting on a primary, an append
    /// of at least 16 entries at a secondary — and a primary whose pipeline drains stops at once:
    /// an idle replica, or one taking a few writes at a time, sleeps as it would without polling.
    /// Nor does a replica poll while tasks wait in the runtime's shared queue: its worker is
    /// busy then, and the polls would hold those tasks back.
    /// `NodeMetrics::idle_polls` counts the polls made. Measured on two vCPUs
    /// (benches/README.md), three replicas in one process: idle, 1.3% of a core either way; at
    /// 1,000 paced writes/s 8% (7% with 0); at 10,000/s 16% (14%); at 50,000/s 38% (22%); flat
    /// out, +40% writes/s in the in-process benchmark at 64 writers, +19% at 256. 0 turns
    /// polling off (a machine where every core is spoken for at moderate load). Default 1,024.
    pub idle_polls: u32,
    /// A full copy (`InstallSnapshot`) that encodes to more than this many bytes travels in
    /// pieces of this size, each its own transport call, and the receiving runtime puts them
    /// back together before its replica sees the copy. So a state machine of any size can be
    /// copied over a transport that bounds its messages and the time each call may take
    /// (`replica-http`: 64 MiB and 5 s by default): with one message per copy, a replica whose
    /// snapshot outgrew either could never be brought back by a copy. Default 4 MiB.
    pub copy_chunk_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval_ms: 50,
            failure_timeout_ms: 800,
            failure_jitter_ms: 400,
            ack_timeout_ms: 1500,
            election_wait_ms: 200,
            gossip_interval_ms: 200,
            suspicion_timeout_ms: 2000,
            batch_entries_max: 1024,
            batch_bytes_max: 1 << 20,
            appends_in_flight_max: 2,
            pending_writes_max: 65_536,
            dedup_entries_max: 250_000,
            snapshot_interval_entries: 10_000,
            log_retain_entries: 10_000,
            tick_interval_ms: 10,
            idle_polls: 1024,
            copy_chunk_bytes: 4 << 20,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Check the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: &str| Err(ConfigError(s.to_string()));
        if self.heartbeat_interval_ms == 0 || self.tick_interval_ms == 0 {
            return err("heartbeat_interval_ms and tick_interval_ms must be positive");
        }
        if self.failure_timeout_ms < 2 * self.heartbeat_interval_ms {
            return err("failure_timeout_ms must be at least two heartbeat intervals");
        }
        if self.ack_timeout_ms <= self.heartbeat_interval_ms {
            return err("ack_timeout_ms must exceed heartbeat_interval_ms");
        }
        if self.batch_entries_max == 0 || self.batch_bytes_max == 0 {
            return err("batch limits must be positive");
        }
        if self.pending_writes_max == 0 || self.election_wait_ms == 0 {
            return err("pending_writes_max and election_wait_ms must be positive");
        }
        if self.copy_chunk_bytes == 0 {
            return err("copy_chunk_bytes must be positive");
        }
        Ok(())
    }
}
