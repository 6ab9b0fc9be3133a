//! The simulated world: replicas, their disks, the network, the clients and the clock, driven
//! by one event queue in one thread.
//!
//! Every source of nondeterminism goes through here and is drawn from the run's seeded RNG:
//! message delays, loss and duplication, disk latency, fault timing, client think time. The
//! protocol core never sees anything else: it gets `(now, input)` and returns outputs, which the
//! world turns into future events. Same seed ⇒ same event sequence ⇒ same trace hash.
//!
//! Messages cross the network as bytes encoded with the real codec (`message::encode`) and are
//! decoded on delivery, as over HTTP. Calls follow the `Transport` contract: the request may be
//! delivered zero, one or two times, and the caller gets exactly one outcome — the first reply,
//! or a failure at its call timeout (or sooner, "connection refused", when the peer is down).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::rc::Rc;

use replica_core::message::{self, Message, Written};
use replica_core::protocol::{CallKind, Input, Output, Start};
use replica_core::rng::Rng;
use replica_core::storage::StoreOp;
use replica_core::types::{Entry, LogIndex, LogPos, NodeId, Role};
use replica_core::{Replica, StateMachine, Status};
use uuid::Uuid;

use crate::checker::Checker;
use crate::client::{client_index, replica_index, Ctx, Req, SimClient};
use crate::disk::SimDisk;
use crate::history::History;
use crate::params::{FaultMode, NetParams, Params};
use crate::trace::{describe, short, Trace};
use crate::workload::{encode_request, Workload};

/// The reply token the simulator gives the core: the call id.
type Token = u64;

/// A network endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ep {
    /// Replica `i`.
    Replica(usize),
    /// Client `i`.
    Client(usize),
}

impl std::fmt::Display for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ep::Replica(i) => write!(f, "r{i}"),
            Ep::Client(i) => write!(f, "c{i}"),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Tick { r: usize, inc: u64 },
    Sync { r: usize, inc: u64 },
    Request { call: u64, bytes: Rc<[u8]> },
    Response { call: u64, bytes: Vec<u8> },
    Refused { call: u64 },
    Timeout { call: u64 },
    ClientWake { c: usize, at: u64 },
    Nemesis,
    Restart { r: usize },
    CrashIfUp { r: usize, inc: u64 },
    HealPartition { generation: u64 },
    Heal,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, sequence): earliest first, ties in scheduling order.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
enum Origin {
    Replica(CallKind),
    Client,
}

#[derive(Debug)]
struct PendingCall {
    caller: Ep,
    caller_inc: u64,
    to: Ep,
    to_id: NodeId,
    origin: Origin,
    done: bool,
    /// Role of the replica that served the request (first delivery), for read histories.
    served_role: Option<Role>,
}

/// The simulator's copy of one replica's log, rebuilt from the storage operations it emits (the
/// core's in-memory log is exactly that stream). Never compacted, so the checker can look up
/// any entry the replica applies.
#[derive(Debug, Default)]
struct Mirror {
    base: LogIndex,
    entries: VecDeque<Entry>,
}

impl Mirror {
    fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::Append(es) => self.entries.extend(es.iter().cloned()),
            StoreOp::Install(s) => {
                self.entries.clear();
                self.base = s.last.index;
            }
            StoreOp::HardState(_) | StoreOp::Snapshot { .. } => {}
        }
    }

    fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.base + 1)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .filter(|e| e.index == index)
    }

    fn from_recovered(entries: &[Entry], snapshot_last: LogIndex) -> Mirror {
        let base = entries.first().map_or(snapshot_last, |e| e.index - 1);
        Mirror {
            base,
            entries: entries.iter().cloned().collect(),
        }
    }
}

struct Slot<M: replica_core::StateMachine> {
    id: NodeId,
    core: Option<Replica<M, Token>>,
    inc: u64,
    disk: SimDisk,
    sync_scheduled: bool,
    mirror: Mirror,
    paused_until: u64,
    stalled_until: u64,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Messages sent (requests and replies).
    pub messages: u64,
    /// Messages lost.
    pub lost: u64,
    /// Requests duplicated.
    pub duplicated: u64,
    /// Replica crashes.
    pub crashes: u64,
    /// Pauses.
    pub pauses: u64,
    /// Disk stalls.
    pub stalls: u64,
    /// Partitions.
    pub partitions: u64,
    /// Operations completed by clients.
    pub ops_completed: u64,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Highest epoch reached.
    pub max_epoch: u64,
    /// Length of the committed log at the end.
    pub committed: u64,
    /// Simulated time at the end, ms.
    pub end_ms: u64,
}

/// The simulated world.
pub struct World<W: Workload> {
    /// The run's parameters.
    pub params: Params,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    rng: Rng,
    net: NetParams,
    slots: Vec<Slot<W::Machine>>,
    clients: Vec<SimClient>,
    calls: BTreeMap<u64, PendingCall>,
    next_call: u64,
    /// Blocked directed links (partitions).
    blocked: BTreeSet<(Ep, Ep)>,
    partition_generation: u64,
    healing: bool,
    /// The checks.
    pub checker: Checker<W::Machine>,
    /// The client-observed history.
    pub history: History,
    /// The event trace.
    pub trace: Trace,
    workload: W,
    /// Counters.
    pub stats: Stats,
    verified: Vec<(Uuid, Written)>,
    /// Time of each client's pending wake-up (`u64::MAX`: none).
    client_wake_at: Vec<u64>,
    /// Operations started by workload clients.
    ops_started: u64,
}

fn seed_mix(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}

impl<W: Workload> World<W> {
    /// A world for `params`, with `workload`; `trace_text` keeps a readable trace.
    pub fn new(params: Params, workload: W, trace_text: bool) -> Self {
        let n = params.replicas;
        let slots = (0..n)
            .map(|i| Slot {
                id: NodeId::new(format!("r{i}")),
                core: None,
                inc: 0,
                disk: SimDisk::new(),
                sync_scheduled: false,
                mirror: Mirror::default(),
                paused_until: 0,
                stalled_until: 0,
            })
            .collect();
        let clients = (0..params.work.clients)
            .map(|i| {
                SimClient::new(
                    i,
                    NodeId::new(format!("c{i}")),
                    n,
                    params.work.read_from_secondaries,
                    params.work.think_max_ms,
                )
            })
            .collect();
        World {
            rng: Rng::new(seed_mix(params.seed, 1)),
            net: params.net.clone(),
            checker: Checker::new(params.mode, n),
            params,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slots,
            clients,
            calls: BTreeMap::new(),
            next_call: 0,
            blocked: BTreeSet::new(),
            partition_generation: 0,
            healing: false,
            history: History::default(),
            trace: Trace::new(trace_text),
            workload,
            stats: Stats::default(),
            verified: Vec::new(),
            client_wake_at: Vec::new(),
            ops_started: 0,
        }
    }

    /// Simulated time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.below(hi.saturating_sub(lo) + 1)
    }

    // ------------------------------------------------------------------ lifecycle

    /// Boot every replica and client at time 0 and schedule the fault phase (nemesis actions
    /// when `nemesis` is set, then the healing phase at the end of the fault phase).
    pub fn start(&mut self, nemesis: bool) {
        for r in 0..self.slots.len() {
            self.boot(r);
        }
        for c in 0..self.clients.len() {
            let at = self.rng.below(50);
            self.schedule_wake(c, at);
        }
        if nemesis {
            let gap = self.range(self.params.faults.gap_min_ms, self.params.faults.gap_max_ms);
            self.schedule(gap, Ev::Nemesis);
            let end = self.params.fault_phase_ms;
            self.schedule(end, Ev::Heal);
        }
    }

    fn boot(&mut self, r: usize) {
        let now = self.now;
        let n = self.slots.len();
        let slot = &mut self.slots[r];
        slot.inc += 1;
        let recovered = slot.disk.recover();
        let snapshot_last = recovered.snapshot.as_ref().map_or(0, |s| s.last.index);
        slot.mirror = Mirror::from_recovered(&recovered.entries, snapshot_last);
        let start = Start {
            id: slot.id.clone(),
            initial_primary: r == 0,
            seeds: if self.params.full_mesh_seeds {
                (0..n)
                    .filter(|&i| i != r)
                    .map(|i| NodeId::new(format!("r{i}")))
                    .collect()
            } else if r == 0 {
                Vec::new()
            } else {
                vec![NodeId::new("r0")]
            },
            rng_seed: seed_mix(self.params.seed, 1000 + 64 * slot.inc + r as u64),
        };
        let inc = slot.inc;
        match Replica::new(
            start,
            self.params.config.clone(),
            W::Machine::default(),
            recovered,
            now,
        ) {
            Ok(core) => {
                let st = core.status();
                self.slots[r].core = Some(core);
                self.checker.restarted(r, inc, st.epoch, st.applied);
                self.trace.record(now, &[1, r as u64, inc], &[], || {
                    format!(
                        "r{r} boots (incarnation {inc}): epoch {} last {:?} applied {:?}",
                        st.epoch, st.last, st.applied
                    )
                });
                self.drain(r);
                let phase = self.rng.below(self.params.config.tick_interval_ms);
                self.schedule(now + phase, Ev::Tick { r, inc });
            }
            Err(e) => {
                self.checker
                    .fail("recovery failed", now, format!("r{r}: {e}"));
            }
        }
    }

    fn crash(&mut self, r: usize) {
        let now = self.now;
        let torn = self.params.disk.torn_crash;
        let pending = self.slots[r].disk.pending_len();
        let keep = if torn && pending > 0 {
            self.rng.below(pending as u64 + 1) as usize
        } else {
            0
        };
        let slot = &mut self.slots[r];
        if slot.core.take().is_none() {
            return;
        }
        slot.inc += 1;
        slot.sync_scheduled = false;
        slot.paused_until = 0;
        slot.stalled_until = 0;
        if let Err(e) = slot.disk.crash(keep) {
            self.checker
                .fail("store contract broken", now, format!("r{r} at crash: {e}"));
        }
        self.stats.crashes += 1;
        self.trace
            .record(now, &[2, r as u64, keep as u64], &[], || {
                format!("r{r} CRASHES: {pending} unsynced storage ops, {keep} survive")
            });
    }

    fn is_up(&self, r: usize) -> bool {
        self.slots[r].core.is_some()
    }

    fn is_healthy(&self, r: usize) -> bool {
        self.is_up(r) && self.slots[r].paused_until <= self.now
    }

    /// Crash a replica now (for scripted scenarios). No-op if it is down, or if it is the last
    /// replica up.
    pub fn crash_replica(&mut self, r: usize) {
        let up = (0..self.slots.len()).filter(|&i| self.is_up(i)).count();
        if r < self.slots.len() && self.is_up(r) && up > 1 {
            self.crash(r);
        }
    }

    /// Restart a crashed replica now (for scripted scenarios). No-op if it is up.
    pub fn restart_replica(&mut self, r: usize) {
        if r < self.slots.len() && !self.is_up(r) {
            self.boot(r);
        }
    }

    /// Pause a replica for `ms` (for scripted scenarios). No-op if it would leave no replica
    /// healthy.
    pub fn pause_replica(&mut self, r: usize, ms: u64) {
        let healthy = (0..self.slots.len())
            .filter(|&i| self.is_healthy(i) && i != r)
            .count();
        if r < self.slots.len() && self.is_up(r) && healthy > 0 {
            self.pause(r, ms);
        }
    }

    /// Stall a replica's disk for `ms` (for scripted scenarios).
    pub fn stall_disk(&mut self, r: usize, ms: u64) {
        if r < self.slots.len() && self.is_up(r) {
            self.stall(r, ms);
        }
    }

    /// Replace the network's fault rates (for scripted scenarios).
    pub fn set_network(&mut self, net: NetParams) {
        self.net = net;
    }

    fn pause(&mut self, r: usize, ms: u64) {
        let until = self.now + ms;
        self.slots[r].paused_until = self.slots[r].paused_until.max(until);
        self.stats.pauses += 1;
        self.trace.record(self.now, &[3, r as u64, ms], &[], || {
            format!("r{r} PAUSED for {ms}ms")
        });
    }

    fn stall(&mut self, r: usize, ms: u64) {
        let until = self.now + ms;
        self.slots[r].stalled_until = self.slots[r].stalled_until.max(until);
        self.stats.stalls += 1;
        self.trace.record(self.now, &[4, r as u64, ms], &[], || {
            format!("r{r} disk STALLS for {ms}ms")
        });
    }

    // ------------------------------------------------------------------ event loop

    /// Process events up to and including time `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(top) = self.queue.peek() {
            if top.at > t {
                break;
            }
            let Some(s) = self.queue.pop() else { break };
            self.now = s.at;
            self.stats.events += 1;
            self.dispatch(s.ev);
        }
        self.now = self.now.max(t);
    }

    /// The replica whose pause delays this event, if any.
    fn owner(&self, ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Tick { r, .. } | Ev::Sync { r, .. } => Some(*r),
            Ev::Request { call, .. } => match self.calls.get(call).map(|c| c.to) {
                Some(Ep::Replica(r)) => Some(r),
                _ => None,
            },
            Ev::Response { call, .. } | Ev::Refused { call } | Ev::Timeout { call } => {
                match self.calls.get(call).map(|c| c.caller) {
                    Some(Ep::Replica(r)) => Some(r),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(r) = self.owner(&ev) {
            let until = self.slots[r].paused_until;
            if self.is_up(r) && until > self.now {
                // A paused process handles nothing; everything waits for it (in order).
                self.schedule(until, ev);
                return;
            }
        }
        match ev {
            Ev::Tick { r, inc } => {
                if self.slots[r].inc != inc || !self.is_up(r) {
                    return;
                }
                self.step(r, Input::Tick);
                let next = self.now + self.params.config.tick_interval_ms;
                self.schedule(next, Ev::Tick { r, inc });
            }
            Ev::Sync { r, inc } => self.on_sync(r, inc),
            Ev::Request { call, bytes } => self.on_request(call, &bytes),
            Ev::Response { call, bytes } => self.on_response(call, &bytes),
            Ev::Refused { call } | Ev::Timeout { call } => self.on_call_failed(call),
            Ev::ClientWake { c, at } => {
                if self.client_wake_at.get(c) == Some(&at) {
                    self.client_wake_at[c] = u64::MAX;
                    self.wake_client(c);
                }
            }
            Ev::Nemesis => self.nemesis(),
            Ev::Restart { r } => {
                if !self.is_up(r) {
                    self.boot(r);
                }
            }
            Ev::CrashIfUp { r, inc } => {
                let up = (0..self.slots.len()).filter(|&i| self.is_up(i)).count();
                if !self.healing && self.slots[r].inc == inc && self.is_up(r) && up > 1 {
                    self.crash(r);
                    let min = self.params.faults.stall_then_crash_down_min_ms;
                    let down = self.range(min, min + self.params.faults.down_max_ms);
                    self.schedule(self.now + down, Ev::Restart { r });
                }
            }
            Ev::HealPartition { generation } => {
                if generation == self.partition_generation && !self.blocked.is_empty() {
                    self.blocked.clear();
                    self.trace
                        .record(self.now, &[5], &[], || "partition healed".to_string());
                }
            }
            Ev::Heal => self.heal(),
        }
    }

    // ------------------------------------------------------------------ replicas

    fn step(&mut self, r: usize, input: Input<Token>) {
        let now = self.now;
        let Some(core) = self.slots[r].core.as_mut() else {
            return;
        };
        core.step(now, input);
        self.drain(r);
    }

    /// Execute everything the replica asked for, then check it.
    fn drain(&mut self, r: usize) {
        let outputs = match self.slots[r].core.as_mut() {
            Some(core) => core.take_outputs(),
            None => return,
        };
        for out in outputs {
            match out {
                Output::Call { to, kind, msg } => {
                    self.send_call(Ep::Replica(r), to, Origin::Replica(kind), &msg)
                }
                Output::Respond { reply, msg } => self.send_reply(reply, &msg),
                Output::Store { seq, op } => self.store(r, seq, op),
                Output::Event(ev) => {
                    let now = self.now;
                    self.trace.note(now, || format!("r{r} event {ev:?}"));
                }
            }
        }
        self.observe(r);
    }

    fn observe(&mut self, r: usize) {
        let now = self.now;
        let slot = &self.slots[r];
        let Some(core) = slot.core.as_ref() else {
            return;
        };
        let st = core.status();
        self.stats.max_epoch = self.stats.max_epoch.max(st.epoch);
        let mirror = &slot.mirror;
        self.checker.observe(
            now,
            r,
            slot.inc,
            st.role,
            st.epoch,
            st.applied,
            |i| mirror.get(i).cloned(),
            core.state_machine(),
        );
    }

    fn store(&mut self, r: usize, seq: u64, op: StoreOp) {
        let now = self.now;
        if self.trace.wants_text() {
            let what = match &op {
                StoreOp::Append(es) => format!(
                    "append {}..={}",
                    es.first().map_or(0, |e| e.index),
                    es.last().map_or(0, |e| e.index)
                ),
                StoreOp::HardState(h) => {
                    format!("hard-state epoch={} commit={}", h.epoch, h.commit)
                }
                StoreOp::Snapshot {
                    snapshot,
                    compact_through,
                } => {
                    format!(
                        "snapshot last={} compact-through={compact_through}",
                        snapshot.last.index
                    )
                }
                StoreOp::Install(s) => format!("install last={}", s.last.index),
            };
            self.trace.note(now, || format!("r{r} store #{seq} {what}"));
        }
        let slot = &mut self.slots[r];
        slot.mirror.apply(&op);
        if let Err(e) = slot.disk.issue(seq, op) {
            self.checker
                .fail("store contract broken", now, format!("r{r} op #{seq}: {e}"));
            return;
        }
        if !slot.sync_scheduled {
            slot.sync_scheduled = true;
            let inc = slot.inc;
            let (lo, hi) = (self.params.disk.sync_min_ms, self.params.disk.sync_max_ms);
            let at = now + self.range(lo, hi);
            self.schedule(at, Ev::Sync { r, inc });
        }
    }

    fn on_sync(&mut self, r: usize, inc: u64) {
        if self.slots[r].inc != inc || !self.is_up(r) {
            return;
        }
        let stalled = self.slots[r].stalled_until;
        if stalled > self.now {
            self.schedule(stalled, Ev::Sync { r, inc });
            return;
        }
        self.slots[r].sync_scheduled = false;
        match self.slots[r].disk.sync() {
            Ok(Some(seq)) => {
                self.trace.record(self.now, &[6, r as u64, seq], &[], || {
                    format!("r{r} fsync through #{seq}")
                });
                self.step(r, Input::Persisted { seq });
            }
            Ok(None) => {}
            Err(e) => {
                let now = self.now;
                self.checker
                    .fail("store contract broken", now, format!("r{r} at sync: {e}"));
            }
        }
    }

    // ------------------------------------------------------------------ network

    fn ep_of(&self, id: &NodeId) -> Option<Ep> {
        if let Some(r) = replica_index(id).filter(|&r| r < self.slots.len()) {
            return Some(Ep::Replica(r));
        }
        client_index(id)
            .filter(|&c| c < self.clients.len())
            .map(Ep::Client)
    }

    fn delay(&mut self) -> u64 {
        if self.net.spike > 0.0 && self.rng.chance(self.net.spike) {
            return self.range(
                self.net.delay_max_ms,
                self.net.spike_max_ms.max(self.net.delay_max_ms),
            );
        }
        self.range(self.net.delay_min_ms, self.net.delay_max_ms)
    }

    /// Whether a message on `from → to` gets through the partition and the loss dice.
    fn passes(&mut self, from: Ep, to: Ep) -> bool {
        if self.blocked.contains(&(from, to)) {
            self.stats.lost += 1;
            return false;
        }
        if self.net.loss > 0.0 && self.rng.chance(self.net.loss) {
            self.stats.lost += 1;
            return false;
        }
        true
    }

    fn send_call(&mut self, from: Ep, to_id: NodeId, origin: Origin, msg: &Message) {
        let now = self.now;
        let bytes = match message::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                self.checker.fail(
                    "codec",
                    now,
                    format!("{from} cannot encode {}: {e}", msg.body.kind()),
                );
                return;
            }
        };
        self.next_call += 1;
        let call = self.next_call;
        let caller_inc = match from {
            Ep::Replica(r) => self.slots[r].inc,
            Ep::Client(_) => 0,
        };
        let to = self.ep_of(&to_id);
        self.trace.record(now, &[7, call], &bytes, || {
            format!("{from} -> {to_id} #{call} {}", describe(&msg.body))
        });
        self.stats.messages += 1;
        let Some(to) = to else {
            // Unknown address: connection refused.
            self.calls.insert(
                call,
                PendingCall {
                    caller: from,
                    caller_inc,
                    to: from,
                    to_id,
                    origin,
                    done: false,
                    served_role: None,
                },
            );
            let d = self.delay();
            self.schedule(now + d, Ev::Refused { call });
            return;
        };
        self.calls.insert(
            call,
            PendingCall {
                caller: from,
                caller_inc,
                to,
                to_id,
                origin,
                done: false,
                served_role: None,
            },
        );
        let timeout = now + self.net.call_timeout_ms;
        self.schedule(timeout, Ev::Timeout { call });
        let bytes: Rc<[u8]> = Rc::from(bytes);
        if self.passes(from, to) {
            let d = self.delay();
            self.schedule(
                now + d,
                Ev::Request {
                    call,
                    bytes: bytes.clone(),
                },
            );
        }
        if self.net.duplicate > 0.0 && self.rng.chance(self.net.duplicate) && self.passes(from, to)
        {
            self.stats.duplicated += 1;
            let d = self.delay();
            self.schedule(now + d, Ev::Request { call, bytes });
        }
    }

    fn send_reply(&mut self, call: u64, msg: &Message) {
        let now = self.now;
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (from, to) = (c.to, c.caller);
        let bytes = match message::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                self.checker.fail(
                    "codec",
                    now,
                    format!("{from} cannot encode {}: {e}", msg.body.kind()),
                );
                return;
            }
        };
        self.trace.record(now, &[8, call], &bytes, || {
            format!("{from} => {to} #{call} {}", describe(&msg.body))
        });
        self.stats.messages += 1;
        if self.passes(from, to) {
            let d = self.delay();
            self.schedule(now + d, Ev::Response { call, bytes });
        }
    }

    fn decode(&mut self, bytes: &[u8], what: &str) -> Option<Message> {
        match message::decode(bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                let now = self.now;
                self.checker.fail("codec", now, format!("{what}: {e}"));
                None
            }
        }
    }

    fn on_request(&mut self, call: u64, bytes: &[u8]) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let to = c.to;
        match to {
            Ep::Replica(r) => {
                if !self.is_up(r) {
                    // Connection refused, reported quickly.
                    let d = self.delay();
                    self.schedule(self.now + d, Ev::Refused { call });
                    return;
                }
                let Some(msg) = self.decode(bytes, "request") else {
                    return;
                };
                let role = self.slots[r].core.as_ref().map(|c| c.status().role);
                if let Some(c) = self.calls.get_mut(&call) {
                    if c.served_role.is_none() {
                        c.served_role = role;
                    }
                }
                self.step(r, Input::Request { reply: call, msg });
            }
            Ep::Client(ci) => {
                let Some(msg) = self.decode(bytes, "request to a client") else {
                    return;
                };
                let reply = self.clients[ci].on_request(msg);
                self.send_reply(call, &reply);
            }
        }
    }

    fn take_call(&mut self, call: u64) -> Option<PendingCall> {
        let c = self.calls.get_mut(&call)?;
        if c.done {
            return None;
        }
        c.done = true;
        self.calls.remove(&call)
    }

    fn on_response(&mut self, call: u64, bytes: &[u8]) {
        let Some(c) = self.take_call(call) else {
            return;
        };
        let Some(msg) = self.decode(bytes, "response") else {
            return;
        };
        match c.caller {
            Ep::Replica(r) => {
                if self.slots[r].inc != c.caller_inc || !self.is_up(r) {
                    return;
                }
                self.step(r, Input::Response { from: c.to_id, msg });
            }
            Ep::Client(ci) => {
                self.client_event(ci, |cl, ctx| cl.on_reply(ctx, call, msg, c.served_role))
            }
        }
    }

    fn on_call_failed(&mut self, call: u64) {
        let Some(c) = self.take_call(call) else {
            return;
        };
        self.trace.record(self.now, &[9, call], &[], || {
            format!("{} call #{call} to {} failed", c.caller, c.to_id)
        });
        match c.caller {
            Ep::Replica(r) => {
                if self.slots[r].inc != c.caller_inc || !self.is_up(r) {
                    return;
                }
                let Origin::Replica(kind) = c.origin else {
                    return;
                };
                self.step(r, Input::CallFailed { to: c.to_id, kind });
            }
            Ep::Client(ci) => self.client_event(ci, |cl, ctx| cl.on_failure(ctx, call)),
        }
    }

    // ------------------------------------------------------------------ clients

    fn client_event(&mut self, ci: usize, f: impl FnOnce(&mut SimClient, &mut Ctx<'_>)) {
        let mut out = Vec::new();
        let verified_before = self.verified.len();
        {
            let mut ctx = Ctx {
                now: self.now,
                rng: &mut self.rng,
                history: &mut self.history,
                out: &mut out,
                next_call: &mut self.next_call,
                verified: &mut self.verified,
            };
            f(&mut self.clients[ci], &mut ctx);
        }
        self.after_client(ci, out, verified_before);
    }

    fn after_client(&mut self, ci: usize, out: Vec<(u64, usize, Message)>, verified_before: usize) {
        let now = self.now;
        // Acknowledgements completed in this event: check them now.
        for i in verified_before..self.verified.len() {
            let (id, w) = self.verified[i].clone();
            self.checker.acked(now, id, &w);
        }
        self.note_completions(ci);
        for (call, to, msg) in out {
            // The client allocated the call id; register and send it.
            self.next_call = self.next_call.max(call);
            self.send_client_call(ci, call, to, &msg);
        }
        // Let the client act on what happened (retry, next operation).
        self.schedule_wake(ci, now);
    }

    fn note_completions(&mut self, ci: usize) {
        // Completed operations are visible in the history; acknowledge new writes to the
        // checker. (A client completes at most one operation per event.)
        let now = self.now;
        if self.clients[ci].verifier {
            return;
        }
        // A completion in this event carries the history's latest clock value.
        let Some(op) = self.history.ops.iter().rev().find(|o| o.client == ci) else {
            return;
        };
        if let (Some(done), Some(crate::history::Outcome::Written(w))) = (op.complete, &op.outcome)
        {
            if done == self.history.clock {
                let (id, w) = (op.id, w.clone());
                self.stats.writes_acked += 1;
                self.stats.ops_completed += 1;
                self.trace.record(now, &[10, ci as u64, w.index], &[], || {
                    format!(
                        "c{ci} write {} acknowledged at index {} lamport {}",
                        short(&id),
                        w.index,
                        w.lamport
                    )
                });
                self.checker.acked(now, id, &w);
            }
        } else if let (Some(done), Some(out)) = (op.complete, &op.outcome) {
            if done == self.history.clock {
                self.stats.ops_completed += 1;
                if let crate::history::Outcome::Rejected(reason) = out {
                    self.checker
                        .fail("valid request rejected", now, format!("c{ci}: {reason}"));
                }
                if let crate::history::Outcome::Read { answer, .. } = out {
                    if let Some(v) = self.workload.check_read(&op.payload, answer) {
                        self.checker.fail("application invariant", now, v);
                    }
                }
            }
        }
    }

    fn send_client_call(&mut self, ci: usize, call: u64, to: usize, msg: &Message) {
        let now = self.now;
        let bytes = match message::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                self.checker.fail("codec", now, format!("c{ci}: {e}"));
                return;
            }
        };
        let to_ep = Ep::Replica(to);
        let to_id = self.slots[to].id.clone();
        self.trace.record(now, &[11, call], &bytes, || {
            format!("c{ci} -> {to_id} #{call} {}", describe(&msg.body))
        });
        self.stats.messages += 1;
        self.calls.insert(
            call,
            PendingCall {
                caller: Ep::Client(ci),
                caller_inc: 0,
                to: to_ep,
                to_id,
                origin: Origin::Client,
                done: false,
                served_role: None,
            },
        );
        let timeout = now + self.net.call_timeout_ms;
        self.schedule(timeout, Ev::Timeout { call });
        let bytes: Rc<[u8]> = Rc::from(bytes);
        if self.passes(Ep::Client(ci), to_ep) {
            let d = self.delay();
            self.schedule(
                now + d,
                Ev::Request {
                    call,
                    bytes: bytes.clone(),
                },
            );
        }
        if self.net.duplicate > 0.0
            && self.rng.chance(self.net.duplicate)
            && self.passes(Ep::Client(ci), to_ep)
        {
            self.stats.duplicated += 1;
            let d = self.delay();
            self.schedule(now + d, Ev::Request { call, bytes });
        }
    }

    fn wake_client(&mut self, ci: usize) {
        let now = self.now;
        if self.clients[ci].wants_op(now) && self.ops_started < self.params.work.ops_max {
            self.ops_started += 1;
            let req = self.workload.next(ci, &mut self.rng);
            match encode_request(&req) {
                Ok((true, command)) => {
                    let id = Uuid::from_u128(self.rng.next_u128());
                    self.trace.record(now, &[12, ci as u64], &command, || {
                        format!("c{ci} invokes write {}", short(&id))
                    });
                    self.client_event(ci, |cl, ctx| cl.start(ctx, Req::Write { id, command }));
                }
                Ok((false, query)) => {
                    self.trace.record(now, &[13, ci as u64], &query, || {
                        format!("c{ci} invokes read")
                    });
                    self.client_event(ci, |cl, ctx| cl.start(ctx, Req::Read { query }));
                }
                Err(e) => self
                    .checker
                    .fail("codec", now, format!("workload request: {e}")),
            }
        }
        let mut out = Vec::new();
        let verified_before = self.verified.len();
        let next = {
            let mut ctx = Ctx {
                now,
                rng: &mut self.rng,
                history: &mut self.history,
                out: &mut out,
                next_call: &mut self.next_call,
                verified: &mut self.verified,
            };
            self.clients[ci].wake(&mut ctx)
        };
        for i in verified_before..self.verified.len() {
            let (id, w) = self.verified[i].clone();
            self.checker.acked(now, id, &w);
        }
        for (call, to, msg) in out {
            self.send_client_call(ci, call, to, &msg);
        }
        let cl = &self.clients[ci];
        if cl.busy() || cl.issuing || !cl.script.is_empty() {
            self.schedule_wake(ci, next.max(now + 1));
        }
    }

    /// One pending wake-up per client: keep the earliest.
    fn schedule_wake(&mut self, ci: usize, at: u64) {
        let at = at.max(self.now);
        if self.client_wake_at.len() <= ci {
            self.client_wake_at.resize(ci + 1, u64::MAX);
        }
        if at < self.client_wake_at[ci] {
            self.client_wake_at[ci] = at;
            self.schedule(at, Ev::ClientWake { c: ci, at });
        }
    }

    // ------------------------------------------------------------------ faults

    fn nemesis(&mut self) {
        if self.healing {
            return;
        }
        let f = self.params.faults.clone();
        let n = self.slots.len();
        let weights = [f.crash, f.pause, f.stall, f.stall_then_crash, f.partition];
        let total: u32 = weights.iter().sum();
        if total > 0 {
            let mut pick = self.rng.below(u64::from(total)) as u32;
            let mut kind = 0;
            for (i, w) in weights.iter().enumerate() {
                if pick < *w {
                    kind = i;
                    break;
                }
                pick -= w;
            }
            let up: Vec<usize> = (0..n).filter(|&r| self.is_up(r)).collect();
            let healthy: Vec<usize> = (0..n).filter(|&r| self.is_healthy(r)).collect();
            let primary = self.primary();
            match kind {
                0 if up.len() > 1 => {
                    let target = match primary {
                        Some(p) if self.rng.chance(f.primary_bias) => p,
                        _ => up[self.rng.below(up.len() as u64) as usize],
                    };
                    self.crash(target);
                    let down = self.range(0, f.down_max_ms);
                    self.schedule(self.now + down, Ev::Restart { r: target });
                }
                1 if healthy.len() > 1 => {
                    let target = healthy[self.rng.below(healthy.len() as u64) as usize];
                    let ms = self.range(1, f.pause_max_ms.max(1));
                    self.pause(target, ms);
                }
                2 if !up.is_empty() => {
                    let target = up[self.rng.below(up.len() as u64) as usize];
                    let ms = self.range(1, f.stall_max_ms.max(1));
                    self.stall(target, ms);
                }
                3 => {
                    // Stall a secondary's disk past the ack timeout, then crash the primary
                    // around the time it drops that secondary from the in-sync set.
                    if let Some(p) = primary {
                        let secondaries: Vec<usize> =
                            up.iter().copied().filter(|&r| r != p).collect();
                        if !secondaries.is_empty() {
                            let s = secondaries[self.rng.below(secondaries.len() as u64) as usize];
                            let ack = self.params.config.ack_timeout_ms;
                            let stall = ack + self.range(200, 1000);
                            self.stall(s, stall);
                            let at = self.now + ack + self.range(0, 400);
                            let inc = self.slots[p].inc;
                            self.schedule(at, Ev::CrashIfUp { r: p, inc });
                            self.trace
                                .note(self.now, || format!("nemesis: r{p} will crash near {at}ms"));
                        }
                    }
                }
                4 if n > 1 => self.partition(f.partition_max_ms),
                _ => {}
            }
        }
        let gap = self.range(f.gap_min_ms, f.gap_max_ms);
        self.schedule(self.now + gap, Ev::Nemesis);
    }

    fn partition(&mut self, max_ms: u64) {
        let n = self.slots.len();
        // A random non-trivial split of the replicas; clients each land on one side.
        let mut side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
        if side.iter().all(|s| *s) || side.iter().all(|s| !*s) {
            let flip = self.rng.below(n as u64) as usize;
            side[flip] = !side[flip];
        }
        let mut eps: Vec<(Ep, bool)> = (0..n).map(|r| (Ep::Replica(r), side[r])).collect();
        for c in 0..self.clients.len() {
            eps.push((Ep::Client(c), self.rng.chance(0.5)));
        }
        self.blocked.clear();
        for &(a, sa) in &eps {
            for &(b, sb) in &eps {
                if sa != sb {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.partition_generation += 1;
        self.stats.partitions += 1;
        let ms = self.range(100, max_ms.max(100));
        let generation = self.partition_generation;
        self.schedule(self.now + ms, Ev::HealPartition { generation });
        self.trace.record(self.now, &[14, ms], &[], || {
            let a: Vec<String> = (0..n)
                .filter(|&r| side[r])
                .map(|r| format!("r{r}"))
                .collect();
            let b: Vec<String> = (0..n)
                .filter(|&r| !side[r])
                .map(|r| format!("r{r}"))
                .collect();
            format!("PARTITION {a:?} | {b:?} for {ms}ms")
        });
    }

    /// End of the fault phase: restart every replica, heal the network, stop new operations.
    pub fn heal(&mut self) {
        if self.healing {
            return;
        }
        self.healing = true;
        self.net = NetParams::reliable(self.params.net.call_timeout_ms.max(100));
        self.blocked.clear();
        for c in &mut self.clients {
            c.issuing = false;
        }
        self.trace.record(self.now, &[15], &[], || {
            "HEAL: faults stop, network reliable, every replica restarts".to_string()
        });
        for r in 0..self.slots.len() {
            if !self.is_up(r) {
                self.boot(r);
            }
        }
    }

    // ------------------------------------------------------------------ observation

    /// Status of every replica that is up.
    pub fn statuses(&self) -> Vec<Status> {
        self.slots
            .iter()
            .filter_map(|s| s.core.as_ref().map(|c| c.status()))
            .collect()
    }

    /// The primary with the highest epoch among live replicas.
    pub fn primary(&self) -> Option<usize> {
        (0..self.slots.len())
            .filter_map(|r| self.slots[r].core.as_ref().map(|c| (r, c.status())))
            .filter(|(_, s)| s.role == Role::Primary)
            .max_by_key(|(_, s)| s.epoch)
            .map(|(r, _)| r)
    }

    /// Whether the cluster has converged: every replica up and healthy, one primary whose
    /// in-sync set is everyone, everything committed and applied everywhere, no client waiting.
    pub fn converged(&self) -> bool {
        let n = self.slots.len();
        if (0..n).any(|r| !self.is_healthy(r)) || self.clients.iter().any(|c| c.busy()) {
            return false;
        }
        let st = self.statuses();
        let Some(p) = st.iter().find(|s| s.role == Role::Primary) else {
            return false;
        };
        p.in_sync.len() == n
            && p.commit == p.last.index
            && st.iter().all(|s| {
                s.epoch == p.epoch
                    && s.applied == p.applied
                    && (s.role == Role::Primary && s.id == p.id
                        || s.role == Role::Secondary && s.primary.as_ref() == Some(&p.id))
            })
    }

    /// Why the cluster has not converged, for the report.
    pub fn describe_state(&self) -> String {
        let mut s = String::new();
        for (r, slot) in self.slots.iter().enumerate() {
            match &slot.core {
                None => s.push_str(&format!("\n  r{r}: down")),
                Some(c) => {
                    let st = c.status();
                    s.push_str(&format!(
                        "\n  r{r}: {} epoch {} primary {:?} last {}/{}/{} commit {} applied {} in_sync {:?} eligible {}{}",
                        st.role,
                        st.epoch,
                        st.primary,
                        st.last.index,
                        st.last.epoch,
                        st.last.lamport,
                        st.commit,
                        st.applied.index,
                        st.in_sync,
                        st.eligible,
                        if slot.paused_until > self.now { " (paused)" } else { "" }
                    ));
                }
            }
        }
        for c in &self.clients {
            if c.busy() {
                s.push_str(&format!(
                    "\n  {}: operation in progress ({} attempts)",
                    c.id,
                    c.attempts()
                ));
            }
        }
        s
    }

    /// Compare every replica's state with the committed log (end of run).
    pub fn final_state_checks(&mut self) {
        let now = self.now;
        let committed = self.checker.committed_len();
        let want = self.checker.reference_digest();
        let mut digests = Vec::new();
        for r in 0..self.slots.len() {
            let Some(core) = self.slots[r].core.as_ref() else {
                continue;
            };
            let st = core.status();
            let d = crate::trace::digest(&core.state_machine().snapshot());
            digests.push((r, st.applied, d));
            for v in self.workload.check_state(core.state_machine()) {
                self.checker
                    .fail("application invariant", now, format!("r{r}: {v}"));
            }
        }
        if let Some(&(r0, a0, d0)) = digests.first() {
            for &(r, a, d) in &digests {
                if a != a0 || d != d0 {
                    self.checker.fail(
                        "replicas disagree after healing",
                        now,
                        format!("r{r0} applied {a0:?} digest {d0:016x}; r{r} applied {a:?} digest {d:016x}"),
                    );
                }
            }
        }
        if self.params.mode != FaultMode::Partitions {
            for &(r, a, d) in &digests {
                if a.index != committed || d != want {
                    self.checker.fail(
                        "replica differs from the committed log",
                        now,
                        format!("r{r} applied {} digest {d:016x}; committed log has {committed} entries, digest {want:016x}", a.index),
                    );
                }
            }
        }
    }

    /// Start the verifier: a client that re-sends every acknowledged write with its id and
    /// command; each answer must equal the first acknowledgement.
    pub fn start_verifier(&mut self) {
        let acked = self.checker.acknowledged();
        let payloads: BTreeMap<Uuid, bytes::Bytes> = self
            .history
            .ops
            .iter()
            .filter(|o| o.write)
            .map(|o| (o.id, o.payload.clone()))
            .collect();
        let index = self.clients.len();
        let mut v = SimClient::new(
            index,
            NodeId::new(format!("c{index}")),
            self.slots.len(),
            false,
            0,
        );
        v.verifier = true;
        v.issuing = false;
        if let Some(p) = self.primary() {
            v.set_primary(p);
        }
        for (id, _) in acked {
            if let Some(command) = payloads.get(&id) {
                v.script.push_back(Req::Write {
                    id,
                    command: command.clone(),
                });
            }
        }
        self.clients.push(v);
        self.schedule_wake(index, self.now + 1);
    }

    /// Whether the verifier finished its script.
    pub fn verifier_done(&self) -> bool {
        self.clients
            .last()
            .is_some_and(|c| c.verifier && !c.busy() && c.script.is_empty())
    }

    /// Whether any client still has an operation in progress.
    pub fn clients_busy(&self) -> bool {
        self.clients.iter().any(|c| c.busy())
    }

    /// Check the client history with the workload's checks.
    pub fn check_history(&mut self) {
        let now = self.now;
        let committed = self.checker.committed();
        for v in self.workload.check_history(&self.history, &committed) {
            self.checker.fail("client history", now, v);
        }
    }

    /// The last applied position of each live replica.
    pub fn applied(&self) -> Vec<LogPos> {
        self.slots
            .iter()
            .filter_map(|s| s.core.as_ref().map(|c| c.status().applied))
            .collect()
    }
}
