//! The deterministic protocol core: replication, catch-up, election and membership as a state
//! machine with no I/O, no clock reads and no async.
//!
//! Inputs go in through [`Replica::step`] with the current time; outputs come out of
//! [`Replica::take_outputs`]: messages to send, replies to inbound requests, storage operations,
//! and events for logs and metrics. A runtime ([`crate::Node`]) or a simulator executes them. The
//! same inputs in the same order always produce the same outputs, which is what makes failures
//! replayable from a seed.
//!
//! Start reading at [`Replica::step`]; the write path is in `primary.rs`, the secondary side of
//! replication in `secondary.rs`, elections in `election.rs`.

mod dedup;
mod election;
mod id_index;
mod log;
mod membership;
mod primary;
mod secondary;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use uuid::Uuid;

use crate::config::Config;
use crate::message::{
    self, Body, Message, ReadError, ReadOk, ServiceEntry, ServiceKind, WriteError, Written,
};
use crate::rng::Rng;
use crate::state_machine::{SnapshotError, StateMachine};
use crate::storage::{Recovered, StoreOp};
use crate::types::{
    ClusterConfig, DedupRecordRef, Entry, Epoch, HardState, Lamport, LogIndex, LogPos, NodeId,
    Payload, Role, Snapshot,
};

use dedup::DedupTable;
use election::Election;
use log::Log;
use membership::Services;
use primary::Follower;

/// Something that happened to a replica: an inbound message, a reply to one of its calls, a
/// storage completion, or the passage of time.
#[derive(Debug)]
pub enum Input<R> {
    /// An inbound request. The core answers it exactly once with [`Output::Respond`] carrying
    /// the same `reply` token (immediately, or later: appends are answered once durable, writes
    /// once committed).
    Request {
        /// Opaque token the runtime uses to route the answer (a oneshot sender, a request id).
        reply: R,
        /// The message.
        msg: Message,
    },
    /// The reply to one of this replica's [`Output::Call`]s.
    Response {
        /// Who answered.
        from: NodeId,
        /// The answer.
        msg: Message,
    },
    /// One of this replica's calls failed in transport (the peer may or may not have seen it).
    CallFailed {
        /// The peer.
        to: NodeId,
        /// What was being sent.
        kind: CallKind,
    },
    /// Every storage operation up to and including `seq` is durable.
    Persisted {
        /// Sequence number from [`Output::Store`].
        seq: u64,
    },
    /// Time passed (the runtime ticks every `tick_interval_ms`).
    Tick,
}

/// The kind of an outbound call, reported back when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// An append or heartbeat.
    Append,
    /// A full snapshot.
    Snapshot,
    /// An election query.
    ElectionQuery,
    /// A new primary's announcement.
    Announce,
    /// Membership gossip.
    Gossip,
}

impl CallKind {
    fn of(body: &Body) -> CallKind {
        match body {
            Body::Append(_) => CallKind::Append,
            Body::InstallSnapshot(_) => CallKind::Snapshot,
            Body::ElectionQuery(_) => CallKind::ElectionQuery,
            Body::Announce => CallKind::Announce,
            _ => CallKind::Gossip,
        }
    }
}

/// Something the runtime must do.
#[derive(Debug)]
pub enum Output<R> {
    /// Send `msg` to `to` with `Transport::call`; feed the reply back as [`Input::Response`], or a
    /// failure as [`Input::CallFailed`] with the given kind.
    Call {
        /// Destination.
        to: NodeId,
        /// Kind, for [`Input::CallFailed`].
        kind: CallKind,
        /// The message.
        msg: Message,
    },
    /// Answer the inbound request that carried `reply`.
    Respond {
        /// The token from [`Input::Request`].
        reply: R,
        /// The answer.
        msg: Message,
    },
    /// Execute `op` on the log store after every earlier op; report [`Input::Persisted`] once it
    /// (and everything before it) is durable.
    Store {
        /// Increasing sequence number.
        seq: u64,
        /// The operation.
        op: StoreOp,
    },
    /// Something worth logging or counting.
    Event(Event),
}

/// Notable state changes, for logs, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Role, epoch or known primary changed.
    RoleChanged {
        /// New role.
        role: Role,
        /// Current epoch.
        epoch: Epoch,
        /// Known primary.
        primary: Option<NodeId>,
    },
    /// The in-sync set in the log changed.
    InSyncChanged {
        /// New in-sync set.
        in_sync: Vec<NodeId>,
    },
    /// An election round started.
    ElectionStarted {
        /// Our epoch when it started.
        epoch: Epoch,
    },
    /// This replica won an election and leads `epoch`.
    ElectionWon {
        /// The new epoch.
        epoch: Epoch,
    },
    /// A full copy was sent to a secondary.
    SnapshotSent {
        /// The secondary.
        to: NodeId,
        /// Last entry covered.
        last: LogPos,
    },
    /// A full copy from the primary replaced this replica's state.
    SnapshotInstalled {
        /// Last entry covered.
        last: LogPos,
    },
    /// This replica took a snapshot and compacted its log.
    SnapshotTaken {
        /// Last entry covered.
        last: LogPos,
    },
    /// A service joined the list.
    ServiceAdded {
        /// Its address.
        address: NodeId,
    },
    /// A service was removed from the list after the suspicion timeout.
    ServiceRemoved {
        /// Its address.
        address: NodeId,
    },
    /// A received snapshot could not be restored; the state is unchanged.
    SnapshotRejected {
        /// Why.
        reason: String,
    },
}

/// A point-in-time view of a replica, for `/status`, dashboards and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its epoch.
    pub epoch: Epoch,
    /// The primary it follows (itself when primary).
    pub primary: Option<NodeId>,
    /// Its Lamport clock.
    pub clock: Lamport,
    /// Last entry in its log.
    pub last: LogPos,
    /// Highest committed index it knows.
    pub commit: LogIndex,
    /// Last applied entry.
    pub applied: LogPos,
    /// In-sync set of its latest configuration.
    pub in_sync: Vec<NodeId>,
    /// Whether it may win an election (in sync and caught up since start).
    pub eligible: bool,
    /// Primary only: per secondary, the highest index it acknowledged.
    pub followers: Vec<FollowerStatus>,
    /// The service list.
    pub services: Vec<ServiceEntry>,
    /// Services silent for half the suspicion timeout: suspected, removed at the full timeout.
    pub suspected: Vec<NodeId>,
    /// Entries held in memory.
    pub log_len: usize,
    /// Base of the in-memory log (last compacted or snapshot position).
    pub log_base: LogPos,
    /// Dedup records held.
    pub dedup_len: usize,
    /// Full copies this replica has sent (as primary).
    pub snapshots_sent: u64,
    /// Full copies this replica has installed (as secondary).
    pub snapshots_installed: u64,
    /// Elections this replica has won.
    pub elections_won: u64,
}

/// A secondary as the primary sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FollowerStatus {
    /// The secondary.
    pub id: NodeId,
    /// Highest index it acknowledged durable.
    pub matched: LogIndex,
    /// Whether it is in the in-sync set.
    pub in_sync: bool,
}

/// How a replica starts.
#[derive(Clone, Debug)]
pub struct Start {
    /// This replica's id (its address).
    pub id: NodeId,
    /// Whether it is the configured initial primary. Only matters for an empty log: a replica
    /// with history always starts as a secondary and lets the election decide.
    pub initial_primary: bool,
    /// Addresses to greet at start (the configured primary).
    pub seeds: Vec<NodeId>,
    /// Seed of the RNG for jitter.
    pub rng_seed: u64,
}

/// Recovery failed: the stored state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The stored snapshot was rejected by the state machine.
    #[error("stored snapshot unusable: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One replica's protocol state. Generic over the application `S` and the runtime's reply token
/// `R` (see [`Input::Request`]).
pub struct Replica<S: StateMachine, R> {
    id: NodeId,
    cfg: Config,
    rng: Rng,
    now: u64,

    // --- persisted (log, snapshot, hard state)
    hard: HardState,
    /// Commit point last written to the store.
    hard_saved_commit: LogIndex,
    hard_saved_at: u64,
    log: Log,
    /// Latest configuration in the log (in force as soon as appended).
    config: ClusterConfig,

    // --- applied state
    sm: S,
    dedup: DedupTable,
    applied: LogPos,
    /// Configuration in force at `applied` (goes into snapshots).
    applied_config: ClusterConfig,
    last_snapshot: LogPos,

    // --- role
    role: Role,
    primary: Option<NodeId>,
    clock: Lamport,
    /// Holds everything the current epoch's primary had written (since this process started
    /// and since the epoch was adopted), so its own in-sync membership is known.
    confirmed: bool,
    /// Number of the last acknowledgement sent (`generation << 32 | counter`, so a restarted
    /// process never reuses one).
    ack_seq: u64,
    /// Recent acknowledgements and when they were sent, oldest first (bounded).
    ack_times: VecDeque<(u64, u64)>,
    /// Highest acknowledgement the current primary says it has received.
    echoed_ack: u64,
    /// (epoch, index): our log through `index` is known equal to the log of the primary of
    /// `epoch` (it came in, or was checked by, that primary's appends or copy). Meaningful only
    /// while `epoch` is current; tells a late full copy from a needed one.
    verified: (Epoch, LogIndex),
    /// The latest epoch whose primary showed that its log lacks entries we committed (0:
    /// none): another entry at an index we committed, one there (compacted away here) of a
    /// later epoch than our base or stamped too high to lie below it, or a log ending before
    /// our commit point (`commit_epoch`). Only a
    /// split brain does that (partitions in all-in-sync mode): both sides committed at the
    /// same index. Such a primary's full copy may then take us back past our commit point — the
    /// newer epoch wins — where otherwise a copy older than our commit point is refused as one
    /// from a primary that has not caught up yet. Without this, a
    /// secondary from the losing side refused every copy for good, and, being in the new
    /// primary's in-sync set, blocked every write after the partition healed.
    split_seen: Epoch,
    /// The epoch in which `hard.commit` last advanced (after a restart: the epoch we were in,
    /// which is no earlier). A primary of a later epoch holds every entry committed before it
    /// took office, so its log reaching less far than our commit point is a split brain too.
    commit_epoch: Epoch,
    /// The primary accepted for the current epoch: at most one per epoch, first come. A second
    /// one can only come from a split election, and is refused. After a restart: the primary
    /// the latest configuration names, if the log holds entries of the current epoch (else
    /// none is known yet).
    epoch_primary: Option<NodeId>,
    /// When we last heard from our primary.
    primary_contact: u64,
    /// When any message from `epoch_primary` last arrived (an append, gossip, its answer in an
    /// election): proof that it was alive then. Unlike `primary_contact` it makes nobody our
    /// primary and resets no timer; it only bounds the eligibility lease (`lease_valid`).
    primary_heard: u64,
    /// When a secondary gives up on its primary.
    failure_deadline: u64,

    // --- storage pipeline
    store_seq: u64,
    durable_seq: u64,
    /// Entries appended to `log` not yet handed to the store.
    unpersisted: Vec<Entry>,
    /// `(seq, index)`: once `seq` is durable, the log is durable through `index`.
    durable_marks: VecDeque<(u64, LogIndex)>,
    durable_index: LogIndex,
    /// Store sequence number of the last hard-state save that changed the epoch; calls and
    /// replies are held until it is durable.
    epoch_persist_seq: u64,
    /// Calls and replies held back until `epoch_persist_seq` is durable.
    held: Vec<Output<R>>,
    /// Primary: indices of the configuration entries not yet durable locally, oldest first.
    /// None is replicated until it is, so no secondary ever holds a configuration its primary
    /// could forget. A queue, not one index: a second change can be appended while the first
    /// is still on its way to the disk (a stalled disk), and the first must still wait.
    unsynced_configs: VecDeque<LogIndex>,
    /// Primary: when the last tick ran, to notice our own stalls.
    last_tick: u64,
    /// Secondary: append replies waiting for durability, `(matched, reply, msg)`.
    pending_acks: VecDeque<(LogIndex, R, Message)>,

    // --- primary
    followers: BTreeMap<NodeId, Follower>,
    /// Clients waiting for their entry to commit, in index order.
    waiters: VecDeque<(LogIndex, R)>,
    /// Retries of ids still in flight, waiting on an earlier index.
    late_waiters: Vec<(LogIndex, R)>,

    // --- candidate
    election: Option<Election>,
    /// Epochs up to this one may have been taken by a replica that outranked us in an election
    /// (we deferred to it, or followed a primary someone still heard) and that we never heard
    /// announce itself (it may have taken office and crashed before its announcement reached
    /// us): we take a later one if we win.
    epoch_deferred: Epoch,
    /// Won, waiting for the new epoch to be durable before taking office: (epoch, in-sync).
    pending_office: Option<(Epoch, BTreeSet<NodeId>)>,
    /// The claim in `pending_office` is the initial primary's bootstrap (it has no rivals).
    bootstrapping: bool,
    /// Primary: a secondary has acknowledged something in this epoch (so others know of it).
    acked_in_epoch: bool,

    // --- membership
    services: Services,
    /// Addresses configured at start (`--primary`): always gossiped to.
    seeds: Vec<NodeId>,
    next_gossip: u64,

    outputs: Vec<Output<R>>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    snapshots_sent: u64,
    snapshots_installed: u64,
    elections_won: u64,
}

impl<S: StateMachine, R> Replica<S, R> {
    /// Rebuild a replica from what its store recovered.
    ///
    /// Committed entries after the snapshot are re-applied here. The new generation is emitted
    /// as a hard-state store operation, so take the outputs before anything else.
    pub fn new(
        start: Start,
        cfg: Config,
        mut sm: S,
        recovered: Recovered,
        now: u64,
    ) -> Result<Self, RecoveryError> {
        cfg.validate()?;
        let Recovered {
            mut hard_state,
            snapshot,
            entries,
        } = recovered;
        hard_state.generation += 1;

        let mut dedup = DedupTable::new(cfg.dedup_entries_max);
        let (snap_last, snap_config) = match snapshot {
            Some(snap) => {
                sm.restore(&snap.state)?;
                dedup.restore(snap.dedup);
                (snap.last, snap.config)
            }
            None => (LogPos::ZERO, ClusterConfig::default()),
        };
        // Entries retained behind the snapshot serve catch-up; the first becomes the base, but
        // only if the retained run agrees with the snapshot.
        let (base, rest) = match entries.first() {
            Some(first) if first.index <= snap_last.index => {
                let agrees = snap_last.index == 0
                    || entries
                        .iter()
                        .any(|e| e.index == snap_last.index && e.pos() == snap_last);
                if agrees {
                    let base = first.pos();
                    (base, entries.into_iter().skip(1).collect())
                } else {
                    tracing::warn!("stored log disagrees with the snapshot; discarding the log");
                    (snap_last, Vec::new())
                }
            }
            _ => (snap_last, entries),
        };
        let (log, dropped) = Log::from_parts(base, rest);
        if dropped > 0 {
            tracing::warn!(dropped, "stored log has a gap; entries after it discarded");
        }
        let config = log
            .iter_after(base.index)
            .filter_map(|e| match &e.payload {
                Payload::Config(c) => Some(ClusterConfig::clone(c)),
                Payload::Command(_) => None,
            })
            .last()
            .unwrap_or_else(|| snap_config.clone());
        let generation = hard_state.generation;
        let clock = log.last().lamport.max(snap_last.lamport);
        let mut r = Replica {
            id: start.id.clone(),
            rng: Rng::new(start.rng_seed),
            now,
            hard: hard_state,
            hard_saved_commit: hard_state.commit,
            hard_saved_at: now,
            log,
            config,
            sm,
            dedup,
            applied: snap_last,
            applied_config: snap_config,
            last_snapshot: snap_last,
            role: Role::Secondary,
            primary: None,
            clock,
            confirmed: false,
            ack_seq: hard_state.generation << 32,
            ack_times: VecDeque::new(),
            echoed_ack: 0,
            verified: (0, 0),
            split_seen: 0,
            commit_epoch: 0,
            epoch_persist_seq: 0,
            held: Vec::new(),
            unsynced_configs: VecDeque::new(),
            last_tick: now,
            epoch_primary: None,
            primary_contact: now,
            primary_heard: 0,
            failure_deadline: 0,
            store_seq: 0,
            durable_seq: 0,
            unpersisted: Vec::new(),
            durable_marks: VecDeque::new(),
            durable_index: 0,
            pending_acks: VecDeque::new(),
            followers: BTreeMap::new(),
            waiters: VecDeque::new(),
            late_waiters: Vec::new(),
            election: None,
            pending_office: None,
            epoch_deferred: 0,
            bootstrapping: false,
            acked_in_epoch: false,
            services: Services::new(start.id.clone(), ServiceKind::Replica, generation),
            seeds: start.seeds.clone(),
            next_gossip: now,
            outputs: Vec::new(),
            stats: Stats::default(),
            cfg,
        };
        r.durable_index = r.log.last().index;
        r.hard.commit = r.hard.commit.min(r.log.last().index).max(r.applied.index);
        r.commit_epoch = r.hard.epoch;
        // The primary of our epoch, if our log holds its entries: a primary's first entry in its
        // epoch is its configuration, so the latest one names it. Forgetting it let a second
        // primary of the same epoch (a split election under partitions) take over a restarted
        // replica that had refused it before, and whose own entries of that epoch then passed for
        // the other primary's wherever they were compacted away.
        if r.hard.epoch > 0 && r.log.last().epoch == r.hard.epoch {
            r.epoch_primary = r.config.primary.clone();
        }
        r.apply_committed();
        r.store(StoreOp::HardState(r.hard));
        for seed in start
            .seeds
            .iter()
            .chain(r.config.in_sync.iter())
            .cloned()
            .collect::<Vec<_>>()
        {
            r.services.add_seed(seed, now);
        }
        // Bootstrap only a replica that has never held an epoch: one that crashed before its
        // first entry was durable has its epoch on disk and must not take it (or the next one)
        // unilaterally; it lets the election decide like any restarted replica.
        let fresh = r.log.last().index == 0 && r.hard.epoch == 0 && r.applied.index == 0;
        if start.initial_primary && fresh {
            r.become_primary_initial();
        } else {
            r.reset_failure_deadline();
            r.event(Event::RoleChanged {
                role: Role::Secondary,
                epoch: r.hard.epoch,
                primary: None,
            });
        }
        Ok(r)
    }

    /// A hint, with no effect on the replica's state: bring into the cache what stepping
    /// `input` will read. The runtime calls it for every input of a turn before stepping the
    /// first, so the turn's cache misses overlap rather than stall one after another: a
    /// primary's dedup index is far larger than the cache, and each write probes it once.
    pub fn warm(&self, input: &Input<R>) {
        if let Input::Request { msg, .. } = input {
            if let Body::Write(w) = &msg.body {
                if self.role == Role::Primary {
                    self.dedup.warm(&w.id);
                }
            }
        }
    }

    /// Feed one input. Outputs accumulate until [`Replica::take_outputs`]; feeding several
    /// inputs before taking outputs is what batches writes (group commit).
    pub fn step(&mut self, now: u64, input: Input<R>) {
        self.now = self.now.max(now);
        match input {
            Input::Request { reply, msg } => self.on_request(reply, msg),
            Input::Response { from, msg } => self.on_response(from, msg),
            Input::CallFailed { to, kind } => self.on_call_failed(to, kind),
            Input::Persisted { seq } => self.on_persisted(seq),
            Input::Tick => self.on_tick(),
        }
    }

    /// Flush batched work (store appends, replication) and hand back everything to execute.
    pub fn take_outputs(&mut self) -> Vec<Output<R>> {
        self.flush();
        let out = std::mem::take(&mut self.outputs);
        if self.durable_seq < self.epoch_persist_seq || !self.held.is_empty() {
            // No replication traffic leaves this replica under an epoch it could forget in a
            // crash: a restarted replica that forgot it would accept an older primary, or take
            // the same epoch again. Election and membership traffic still flows: a replica whose
            // disk is slow must not look dead to a candidate (it says it is taking office).
            let durable = self.durable_seq >= self.epoch_persist_seq;
            let mut keep = Vec::with_capacity(out.len());
            let mut released = if durable {
                std::mem::take(&mut self.held)
            } else {
                Vec::new()
            };
            for o in out {
                if !durable && holds_epoch(&o) {
                    self.held.push(o);
                } else if durable {
                    released.push(o);
                } else {
                    keep.push(o);
                }
            }
            keep.extend(released);
            return keep;
        }
        out
    }

    /// Writes this primary holds that are not yet answered (0 on any other role): how deep its
    /// pipeline is, the load signal the runtime polls by.
    pub fn writes_waiting(&self) -> usize {
        self.waiters.len() + self.late_waiters.len()
    }

    /// Set the commit point, reached in `epoch` (see `commit_epoch`).
    fn commit_through(&mut self, index: LogIndex, epoch: Epoch) {
        self.hard.commit = index;
        self.commit_epoch = epoch;
    }

    /// Whether an append could leave now: this replica is the primary and some secondary has
    /// an append slot free. The runtime sends a long turn's batch as soon as it is large
    /// enough when this holds, so the secondaries work on it while the primary takes the rest
    /// of the turn (`node.rs`, `TURN_SEND_INPUTS`).
    pub fn can_send_append(&self) -> bool {
        let depth_max = self.append_depth_max();
        self.role == Role::Primary && self.followers.values().any(|f| f.has_slot(depth_max))
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current view of this replica.
    pub fn status(&self) -> Status {
        Status {
            id: self.id.clone(),
            role: self.role,
            epoch: self.hard.epoch,
            primary: self.primary.clone(),
            clock: self.clock,
            last: self.log.last(),
            commit: self.hard.commit,
            applied: self.applied,
            in_sync: self.config.in_sync.iter().cloned().collect(),
            eligible: self.eligible(),
            followers: self
                .followers
                .iter()
                .map(|(id, f)| FollowerStatus {
                    id: id.clone(),
                    matched: f.matched,
                    in_sync: self.config.in_sync.contains(id),
                })
                .collect(),
            services: self.services.to_vec(self.primary.as_ref()),
            suspected: self
                .services
                .suspected(self.now, self.cfg.suspicion_timeout_ms / 2),
            log_len: self.log.len(),
            log_base: self.log.base(),
            dedup_len: self.dedup.len(),
            snapshots_sent: self.stats.snapshots_sent,
            snapshots_installed: self.stats.snapshots_installed,
            elections_won: self.stats.elections_won,
        }
    }

    /// The application state, for local reads by an embedding program. Reflects exactly the
    /// committed entries through `status().applied`.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// This replica's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    // ------------------------------------------------------------------ dispatch

    fn on_request(&mut self, reply: R, msg: Message) {
        let from_replica = !matches!(
            msg.body,
            Body::Write(_) | Body::WriteBatch(_) | Body::Read(_)
        );
        if from_replica {
            self.observe_clock(msg.clock);
            self.heard_from(&msg.from);
        }
        match msg.body {
            Body::Write(w) => self.on_write(reply, w),
            // The runtime splits batches into single writes (so each waits for its own commit);
            // one that reaches the core directly is refused as a whole, without effect.
            Body::WriteBatch(ws) => {
                let refused =
                    WriteError::Rejected("write batches must be split by the runtime".into());
                let results = ws.iter().map(|_| Err(refused.clone())).collect();
                self.respond(reply, Body::WriteBatchReply(results));
            }
            Body::Read(r) => {
                let answer = self.on_read(&r);
                self.respond(reply, Body::ReadReply(answer));
            }
            Body::Append(a) => self.on_append(reply, msg.from, msg.epoch, *a),
            Body::InstallSnapshot(s) => self.on_install(reply, msg.from, msg.epoch, *s),
            Body::ElectionQuery(rank) => self.on_election_query(reply, msg.from, msg.epoch, rank),
            Body::Announce => self.on_announce(reply, msg.from, msg.epoch),
            Body::Gossip(list) => {
                self.merge_services(&list);
                let list = self.services.to_vec(self.primary.as_ref());
                self.respond(reply, Body::Services(list));
            }
            // Replies arriving as requests are protocol misuse; answer without acting.
            _ => self.respond(reply, Body::Ack),
        }
    }

    fn on_response(&mut self, from: NodeId, msg: Message) {
        self.observe_clock(msg.clock);
        self.heard_from(&from);
        if msg.epoch > self.hard.epoch {
            // Whoever answered knows a newer epoch: we are out of date (and, if primary, deposed).
            let hint = None;
            self.adopt_epoch(msg.epoch, hint);
        }
        match msg.body {
            Body::AppendReply(r) => self.on_append_reply(from, msg.epoch, r),
            Body::ElectionReply(r) => self.on_election_reply(from, msg.epoch, *r),
            Body::Services(list) => self.merge_services(&list),
            Body::StaleEpoch if msg.epoch == self.hard.epoch && self.role == Role::Primary => {
                // Refused at our own epoch: someone accepted another primary for it (a split
                // election). Stand down; the other primary's appends or a new round settle it.
                tracing::error!(peer = %from, epoch = msg.epoch, "another primary holds our epoch; stepping down");
                self.become_secondary(None);
            }
            Body::StaleEpoch | Body::Ack => {}
            _ => {}
        }
    }

    fn on_call_failed(&mut self, to: NodeId, kind: CallKind) {
        match kind {
            CallKind::Append => self.on_append_failed(&to, false),
            CallKind::Snapshot => self.on_append_failed(&to, true),
            CallKind::ElectionQuery => self.on_election_query_failed(&to),
            CallKind::Announce | CallKind::Gossip => {}
        }
    }

    fn on_persisted(&mut self, seq: u64) {
        if seq <= self.durable_seq {
            return;
        }
        self.durable_seq = seq;
        while let Some(&(s, index)) = self.durable_marks.front() {
            if s > seq {
                break;
            }
            self.durable_index = index;
            self.durable_marks.pop_front();
        }
        // Secondary: acknowledge appends that are now durable.
        while let Some((matched, _, _)) = self.pending_acks.front() {
            if *matched > self.durable_index {
                break;
            }
            if let Some((_, reply, msg)) = self.pending_acks.pop_front() {
                self.send_ack(reply, msg);
            }
        }
        if self.role == Role::Primary {
            self.advance_commit();
        }
        if self.pending_office.is_some() {
            self.take_pending_office();
        }
    }

    fn on_tick(&mut self) {
        let now = self.now;
        if self.pending_office.is_some() {
            // Checks for a stall of ours before `last_tick` moves on.
            self.take_pending_office();
        }
        let stalled = self.stalled();
        let stalled_ms = now.saturating_sub(self.last_tick);
        self.last_tick = now;
        let others_in_sync = self.config.in_sync.iter().any(|m| *m != self.id);
        if self.role == Role::Primary && !self.acked_in_epoch && others_in_sync && stalled {
            // We took office and stalled before any secondary acknowledged us: nobody may know
            // of our epoch, and the others may have elected someone else in it meanwhile.
            tracing::warn!(
                stalled_ms,
                "stalled before our first acknowledgement; stepping down"
            );
            self.become_secondary(None);
        }
        if stalled_ms > 2 * self.cfg.tick_interval_ms {
            // Silence from peers measured while we were not running proves nothing: an open
            // election round gives them a full wait again, counted from now.
            let wait = self.cfg.election_wait_ms;
            if let Some(el) = self.election.as_mut() {
                el.restart_after_stall(now + wait);
            }
        }
        if stalled_ms > self.cfg.ack_timeout_ms / 4 && self.role != Role::Primary {
            // We did not run for a while: the primary may have dropped us meanwhile, and
            // silence from it says nothing. Until an acknowledgement sent from now on is
            // echoed back, we may not take office on our own word.
            self.ack_times.clear();
        }
        if self.role == Role::Primary && stalled_ms > self.cfg.ack_timeout_ms / 4 {
            // We did not run for a while (a pause, an overloaded machine). Silence from the
            // secondaries over that time says nothing about them: give each a fresh ack
            // timeout rather than dropping them all on this tick and committing alone.
            tracing::warn!(
                stalled_ms,
                "primary stalled; restarting the secondaries' ack timers"
            );
            for f in self.followers.values_mut() {
                f.last_ack = now;
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval_ms;
            self.gossip();
        }
        match self.role {
            Role::Primary => self.primary_tick(),
            Role::Secondary => {
                if now >= self.failure_deadline {
                    self.start_election();
                }
            }
            // A won election waits for its epoch to be durable, not for a new round.
            Role::Candidate if self.pending_office.is_some() => {}
            Role::Candidate => self.election_tick(),
        }
        // Persist the commit point now and then: it only saves re-applying on restart, so it is
        // not worth a sync per batch.
        if self.hard.commit > self.hard_saved_commit
            && now.saturating_sub(self.hard_saved_at) >= 1000
        {
            self.save_hard_state();
        }
    }

    // ------------------------------------------------------------------ reads

    fn on_read(&self, r: &message::ReadRequest) -> Result<ReadOk, ReadError> {
        // A primary answers only under its read lease (then the answer is linearizable); a
        // secondary answers from whatever it has applied, if that reaches the client's fence,
        // and only once it holds the current primary's log and has applied an entry of the
        // primary's epoch. A just-restarted replica knows only the commit point it last saved,
        // which may be well behind — and so does a just-elected primary, whose first appends
        // carry that stale point until its own first entry commits; before then a secondary
        // would answer from state older than writes acknowledged before the restart.
        let unsure = match self.role {
            Role::Primary => !self.read_lease_valid(),
            Role::Secondary | Role::Candidate => {
                !self.confirmed || self.applied.epoch < self.hard.epoch
            }
        };
        if self.applied.lamport < r.fence || unsure {
            return Err(ReadError::Behind {
                applied: self.applied.lamport,
            });
        }
        let query: S::Query =
            message::from_bytes(&r.query).map_err(|e| ReadError::Rejected(e.to_string()))?;
        let answer = self.sm.query(&query);
        let answer = message::to_bytes(&answer).map_err(|e| ReadError::Rejected(e.to_string()))?;
        Ok(ReadOk {
            answer,
            applied: self.applied.lamport,
        })
    }

    // ------------------------------------------------------------------ membership

    fn merge_services(&mut self, list: &[ServiceEntry]) {
        let outcome = self.services.merge(self.now, list);
        for id in outcome.added {
            self.event(Event::ServiceAdded { address: id });
        }
        for id in outcome.restarted {
            // A restarted secondary may have lost unsynced entries: probe it from scratch.
            if let Some(f) = self.followers.get_mut(&id) {
                f.reset(self.log.last().index, self.now);
            }
        }
    }

    fn gossip(&mut self) {
        self.services.beat();
        let removed = self
            .services
            .expire(self.now, self.cfg.suspicion_timeout_ms);
        for e in removed {
            self.event(Event::ServiceRemoved { address: e.address });
        }
        let list = self.services.to_vec(self.primary.as_ref());
        // Seeds and configuration members are gossiped to even after membership removed them:
        // a restarted process that knows nobody else learns the cluster from them.
        let targets: Vec<NodeId> = self
            .known_replicas()
            .into_iter()
            .chain(self.seeds.iter().filter(|s| **s != self.id).cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for to in targets {
            self.call(to, Body::Gossip(list.clone()));
        }
    }

    /// Replicas we know of, besides ourselves: the service list and the in-sync set.
    fn known_replicas(&self) -> BTreeSet<NodeId> {
        self.services
            .replicas()
            .chain(self.config.in_sync.iter())
            .filter(|id| **id != self.id)
            .cloned()
            .collect()
    }

    // ------------------------------------------------------------------ epochs and roles

    /// Move to a newer epoch. A primary or candidate steps down.
    fn adopt_epoch(&mut self, epoch: Epoch, primary: Option<NodeId>) {
        if epoch <= self.hard.epoch {
            return;
        }
        self.hard.epoch = epoch;
        self.epoch_primary = primary.clone();
        // Caught up with the old epoch's primary says nothing about the new one's log (it may
        // hold a configuration that dropped us): confirm again, and let the new primary echo
        // our acknowledgements afresh.
        self.confirmed = false;
        self.echoed_ack = 0;
        self.save_hard_state();
        self.epoch_persist_seq = self.store_seq;
        self.become_secondary(primary);
    }

    fn become_secondary(&mut self, primary: Option<NodeId>) {
        let was = self.role;
        self.pending_office = None;
        if was == Role::Primary {
            self.step_down();
        }
        self.election = None;
        let changed = was != Role::Secondary || self.primary != primary;
        self.role = Role::Secondary;
        self.primary = primary;
        // Not `primary_contact`: only a message from the primary itself is contact. Following a
        // primary that someone else vouched for must not let us vouch for it in turn, or
        // replicas keep a dead primary "alive" for each other forever.
        self.reset_failure_deadline();
        if changed {
            self.event(Event::RoleChanged {
                role: Role::Secondary,
                epoch: self.hard.epoch,
                primary: self.primary.clone(),
            });
        }
    }

    fn reset_failure_deadline(&mut self) {
        let jitter = self.rng.below(self.cfg.failure_jitter_ms + 1);
        self.failure_deadline = self.now + self.cfg.failure_timeout_ms + jitter;
    }

    /// Eligible to win an election: in the in-sync set of the latest configuration, and caught
    /// up with a primary since this process started.
    fn eligible(&self) -> bool {
        self.confirmed && self.config.in_sync.contains(&self.id) && self.lease_valid()
    }

    /// Whether this replica did not run for long enough that the others, asking it during an
    /// election, may have found it silent for a whole round (half an election wait without a
    /// tick; a round lasts at least a whole one).
    pub(super) fn stalled(&self) -> bool {
        self.now.saturating_sub(self.last_tick)
            > (self.cfg.election_wait_ms / 2).max(2 * self.cfg.tick_interval_ms)
    }

    /// Note that a message from `from` arrived now: if it is our epoch's primary, it was alive.
    fn heard_from(&mut self, from: &NodeId) {
        if self.epoch_primary.as_ref() == Some(from) {
            self.primary_heard = self.now;
        }
    }

    /// Whether the primary cannot have dropped us from the in-sync set without our knowing.
    ///
    /// The primary drops a secondary only after `ack_timeout_ms` without an acknowledgement
    /// from it. Up to the primary's last message to us, our acknowledgements kept flowing (the
    /// last one less than the ack timeout — less a tenth for clock-rate differences and two
    /// heartbeat intervals, since a live primary is never silent longer than one — before that
    /// message), so up to then we were in. After it the primary was silent: dead, under the
    /// crash-stop model — unless *we* were the silent one (a pause: see `on_tick`, which
    /// voids the lease), or our acknowledgements were stuck behind a stalled disk while its
    /// messages still arrived (then this check fails). Such a replica may have been dropped and
    /// must not take office on its own word.
    ///
    /// "Its last message" means any message: its gossip or its answer to our election query
    /// proves it alive as well as an append does. Counting appends alone, a secondary whose
    /// disk stalled while the primary's heartbeats to it were lost took the primary for dead,
    /// though the primary had just answered its election query and gossiped with it, and had
    /// then dropped it, committed alone and crashed (targeted seed 5038142: the secondary won
    /// and replaced two committed entries).
    fn lease_valid(&self) -> bool {
        // The primary heartbeats at least every heartbeat interval while it lives, so it died
        // within about one interval of its last message (two, for scheduling slack).
        let lease = self
            .cfg
            .ack_timeout_ms
            .saturating_sub(self.cfg.ack_timeout_ms / 10 + 2 * self.cfg.heartbeat_interval_ms);
        // The primary's ack timer for us was last reset no earlier than when we sent the
        // acknowledgement it echoed to us; later ones may never have reached it.
        let echoed = self
            .ack_times
            .iter()
            .find(|(seq, _)| *seq == self.echoed_ack);
        let alive = self.primary_contact.max(self.primary_heard);
        echoed.is_some_and(|(_, sent)| alive.saturating_sub(*sent) < lease)
    }

    /// Send an `Ok` acknowledgement, numbered.
    fn send_ack(&mut self, reply: R, mut msg: Message) {
        const ACK_TIMES_MAX: usize = 4096;
        self.ack_seq += 1;
        if let Body::AppendReply(message::AppendReply::Ok { seq, .. }) = &mut msg.body {
            *seq = self.ack_seq;
        }
        self.ack_times.push_back((self.ack_seq, self.now));
        if self.ack_times.len() > ACK_TIMES_MAX {
            self.ack_times.pop_front();
        }
        self.outputs.push(Output::Respond { reply, msg });
    }

    fn rank(&self) -> message::Rank {
        #[cfg(feature = "bug-injection")]
        if crate::bug_injection::active(crate::bug_injection::Bug::ElectByIdOnly) {
            let node = self.id.clone();
            return message::Rank {
                last_epoch: 0,
                last_lamport: 0,
                node,
            };
        }
        let last = self.log.last();
        message::Rank {
            last_epoch: last.epoch,
            last_lamport: last.lamport,
            node: self.id.clone(),
        }
    }

    // ------------------------------------------------------------------ clock

    fn observe_clock(&mut self, clock: Lamport) {
        self.clock = self.clock.max(clock).saturating_add(1);
    }

    /// Next Lamport stamp for an entry: above everything seen.
    fn stamp(&mut self) -> Lamport {
        self.clock = self.clock.max(self.log.last().lamport).saturating_add(1);
        self.clock
    }

    // ------------------------------------------------------------------ output helpers

    fn msg(&self, body: Body) -> Message {
        Message {
            from: self.id.clone(),
            epoch: self.hard.epoch,
            clock: self.clock,
            body,
        }
    }

    fn call(&mut self, to: NodeId, body: Body) {
        let kind = CallKind::of(&body);
        let msg = self.msg(body);
        self.outputs.push(Output::Call { to, kind, msg });
    }

    fn respond(&mut self, reply: R, body: Body) {
        let msg = self.msg(body);
        self.outputs.push(Output::Respond { reply, msg });
    }

    fn event(&mut self, ev: Event) {
        self.outputs.push(Output::Event(ev));
    }

    /// Emit a storage operation, after any entries still waiting to be persisted (order!).
    fn store(&mut self, op: StoreOp) -> u64 {
        self.flush_entries();
        self.store_seq += 1;
        self.outputs.push(Output::Store {
            seq: self.store_seq,
            op,
        });
        self.store_seq
    }

    fn save_hard_state(&mut self) {
        self.hard_saved_commit = self.hard.commit;
        self.hard_saved_at = self.now;
        self.store(StoreOp::HardState(self.hard));
    }

    /// Append an entry to the in-memory log and queue it for the store.
    fn append_local(&mut self, entry: Entry) {
        if let Payload::Config(c) = &entry.payload {
            self.set_config(ClusterConfig::clone(c));
        }
        self.unpersisted.push(entry.clone());
        self.log.push(entry);
    }

    fn set_config(&mut self, c: ClusterConfig) {
        let changed = c.in_sync != self.config.in_sync;
        self.config = c;
        if changed {
            let in_sync = self.config.in_sync.iter().cloned().collect();
            self.event(Event::InSyncChanged { in_sync });
        }
    }

    fn flush_entries(&mut self) {
        if self.unpersisted.is_empty() {
            return;
        }
        // Keep the buffer's capacity for the next batch instead of regrowing it from empty.
        let capacity = self.unpersisted.capacity();
        let entries = std::mem::replace(&mut self.unpersisted, Vec::with_capacity(capacity));
        let last = entries.last().map_or(0, |e| e.index);
        self.store_seq += 1;
        self.durable_marks.push_back((self.store_seq, last));
        self.outputs.push(Output::Store {
            seq: self.store_seq,
            op: StoreOp::Append(entries),
        });
    }

    fn flush(&mut self) {
        self.flush_entries();
        if self.role == Role::Primary {
            self.replicate();
        }
    }

    // ------------------------------------------------------------------ applying

    /// Apply committed entries in order; answer waiting clients; snapshot when due.
    fn apply_committed(&mut self) {
        let commit = self.hard.commit.min(self.log.last().index);
        while self.applied.index < commit {
            let Some(entry) = self.log.get(self.applied.index + 1) else {
                // Unreachable by construction: compaction never passes `applied`.
                break;
            };
            let (pos, id) = (entry.pos(), entry.id);
            let output = match &entry.payload {
                Payload::Command(cmd) => Some(apply_command(&mut self.sm, cmd)),
                Payload::Config(c) => {
                    self.applied_config = ClusterConfig::clone(c);
                    None
                }
            };
            self.applied = pos;
            if let Some(output) = output {
                let rec = DedupRecordRef {
                    id,
                    index: pos.index,
                    lamport: pos.lamport,
                    output: &output,
                };
                // A client waiting at this index means this primary claimed the id there
                // (`on_write`): the index already points at the record.
                let claimed = self.role == Role::Primary
                    && self.waiters.front().is_some_and(|(i, _)| *i == pos.index);
                if claimed {
                    self.dedup.insert_claimed(rec);
                } else {
                    self.dedup.insert(rec);
                }
                if self.role == Role::Primary {
                    self.answer_waiters(Written {
                        index: pos.index,
                        lamport: pos.lamport,
                        output,
                    });
                }
            }
        }
        self.maybe_snapshot();
    }

    fn maybe_snapshot(&mut self) {
        if self.cfg.snapshot_interval_entries == 0 {
            return;
        }
        // A snapshot copies the whole dedup table: taking one at least every table-size entries
        // keeps that copy O(1) per applied entry, whatever the interval says.
        let every = self
            .cfg
            .snapshot_interval_entries
            .max(self.dedup.len() as u64);
        if self.applied.index < self.last_snapshot.index + every {
            return;
        }
        let snapshot = self.make_snapshot();
        let compact_through = self
            .applied
            .index
            .saturating_sub(self.cfg.log_retain_entries);
        let compact_through = compact_through.max(self.log.base().index);
        self.last_snapshot = snapshot.last;
        self.log.compact_through(compact_through);
        self.event(Event::SnapshotTaken {
            last: snapshot.last,
        });
        self.store(StoreOp::Snapshot {
            snapshot: Box::new(snapshot),
            compact_through,
        });
    }

    fn make_snapshot(&self) -> Snapshot {
        Snapshot {
            last: self.applied,
            config: self.applied_config.clone(),
            state: Bytes::from(self.sm.snapshot()),
            dedup: self.dedup.share(),
        }
    }
}

/// Whether an output speaks for the replica's epoch in replication (appends, full copies,
/// announcements, acknowledgements): those wait until the epoch is durable.
fn holds_epoch<R>(o: &Output<R>) -> bool {
    match o {
        Output::Call { msg, .. } | Output::Respond { msg, .. } => matches!(
            msg.body,
            Body::Append(_) | Body::InstallSnapshot(_) | Body::Announce | Body::AppendReply(_)
        ),
        Output::Store { .. } | Output::Event(_) => false,
    }
}

/// Decode and apply one command. Commands are validated before they enter the log, so a decode
/// failure here means a peer sent garbage; every replica sees the same bytes and skips it the
/// same way, with an empty output.
fn apply_command<S: StateMachine>(sm: &mut S, cmd: &[u8]) -> Bytes {
    match message::from_bytes::<S::Command>(cmd) {
        Ok(cmd) => {
            let out = sm.apply(&cmd);
            message::to_bytes(&out).unwrap_or_default()
        }
        Err(e) => {
            tracing::error!(error = %e, "undecodable command in the log; skipped");
            Bytes::new()
        }
    }
}

/// A fresh request id, from the core's RNG (deterministic) for configuration entries.
fn config_id(rng: &mut Rng) -> Uuid {
    Uuid::from_u128(rng.next_u128())
}

#[cfg(test)]
mod tests;
