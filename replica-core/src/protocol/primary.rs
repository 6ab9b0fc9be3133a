//! The primary's side: the write path, replication to secondaries, commit, and the in-sync set.
//!
//! Invariant: an entry is committed — applied, answered, visible to reads — only once it is
//! durable on the primary and acknowledged durable by every member of the in-sync set in force.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::dedup::Lookup;
use super::{config_id, Event, Output, Replica};
use crate::message::{self, Append, AppendReply, Body, Message, WriteError, WriteRequest, Written};
use crate::state_machine::StateMachine;
use crate::types::{ClusterConfig, DedupRecordRef, Entry, Epoch, LogIndex, NodeId, Payload, Role};

/// A full copy unanswered for this many ack timeouts (15 s by default), plus its transfer
/// time at [`COPY_WAIT_BYTES_PER_MS`], is presumed lost.
const COPY_WAIT_ACK_TIMEOUTS: u64 = 10;

/// The rate a copy's transfer time is reckoned at: 10 MB/s, a slow network's, so that a large
/// copy still in progress is not taken for lost (another one would restart its transfer).
const COPY_WAIT_BYTES_PER_MS: u64 = 10_000;

/// Replication progress of one secondary, as the primary tracks it.
#[derive(Clone, Debug)]
pub(super) struct Follower {
    /// Next index to send.
    pub(super) next: LogIndex,
    /// Highest index the secondary acknowledged as durable and equal to ours.
    pub(super) matched: LogIndex,
    /// Appends or snapshots outstanding (at most `appends_in_flight_max`; the next batch forms
    /// meanwhile). `next` runs ahead of `matched` by what is in flight.
    in_flight: u32,
    /// When the oldest outstanding message was sent: a reply proves the secondary heard from us
    /// at or after this time.
    in_flight_since: u64,
    /// The secondary heard from us at or after this time (from its latest acknowledgement), so
    /// it starts no election before this plus the failure timeout: the read lease.
    pub(super) heard_at: u64,
    /// Highest acknowledgement number received from it, echoed in every append.
    acked_seq: u64,
    /// When the outstanding message was sent.
    sent_at: u64,
    /// When anything was last sent (heartbeat pacing); `None`: never, so probe at once.
    last_sent: Option<u64>,
    /// When the secondary last acknowledged successfully.
    pub(super) last_ack: u64,
    /// Its log diverged from ours (or needs what we compacted): send a full copy.
    needs_snapshot: bool,
    /// Do not send before this time (after a refused snapshot or a failed call).
    backoff_until: u64,
    /// When we last sent it a full copy; `None`: never.
    snapshot_sent: Option<u64>,
    /// A full copy on its way, not answered yet: no other copy goes out meanwhile.
    copy: Option<CopyInFlight>,
    /// Where we first probed it (the end of our log then); `None` once it answered an append.
    /// Until it answers we know nothing of its log, and a lost probe is no reason to fall back
    /// to the start of ours — below a compacted base, that meant a full copy, which replaced
    /// committed entries it held (and we held too) with an older state; had we crashed before
    /// resending them, it could win the next election without them (targeted seed 5964386).
    probe: Option<LogIndex>,
    /// How far below the end of its log the next probe goes after a mismatch (doubling each
    /// time), until it first acknowledges; `None` since then. A mismatch then asks for a full
    /// copy; before, the shared prefix is looked for first. A copy of our applied state can
    /// end below entries the follower holds and shares with us (committed, perhaps, where we
    /// have not applied yet): installing it dropped them and, with them, the configuration
    /// that listed who else was in sync, leaving the older one in the copy (targeted seed
    /// 5964386; lossy seed 3266535, where the follower, with that configuration's in-sync set
    /// of itself alone, later won and replaced four committed entries). Once a probe shows
    /// the shared prefix, the follower refuses a copy that ends before it, and we send none
    /// until we have applied that far.
    walk: Option<LogIndex>,
}

/// `Follower::walk` once the walk has probed our base: the next mismatch ends it.
const BASE_PROBED: LogIndex = LogIndex::MAX;

/// A full copy sent to a follower and not answered yet.
///
/// Why it is tracked: a copy takes time to make, encode, carry and install (the runtime
/// encodes it off the replica's task), so the appends sent after it usually reach the
/// secondary first and come back as gaps from its old log. Taken at face value, each would ask
/// for another copy (one per heartbeat interval, each a snapshot of the whole state machine
/// on the primary's task) while the first was still on its way.
#[derive(Debug, Clone, Copy)]
struct CopyInFlight {
    /// The copy's last index: an acknowledgement of it (or beyond) means it was installed.
    last: LogIndex,
    /// Presumed lost from this time on if still unanswered (the transport gives every call
    /// an outcome, but need not do so soon, or at all).
    until: u64,
}

impl Follower {
    pub(super) fn new(last_index: LogIndex, now: u64) -> Self {
        Follower {
            next: last_index + 1,
            matched: 0,
            in_flight: 0,
            in_flight_since: 0,
            heard_at: 0,
            acked_seq: 0,
            sent_at: 0,
            last_sent: None,
            last_ack: now,
            needs_snapshot: false,
            backoff_until: 0,
            snapshot_sent: None,
            copy: None,
            probe: Some(last_index + 1),
            walk: Some(1),
        }
    }

    /// After a mismatch at or below `top` (the end of the follower's log, or of ours if
    /// shorter): before its first acknowledgement, probe further back, at `top` minus a step
    /// that doubles each time, as long as we hold that position (`base` and above), and at
    /// `base` itself last, before a step would take the probe below it. `false`: no probe
    /// left, send a full copy.
    ///
    /// Why the base last: a doubling step can jump over the entries just above our base, and
    /// the follower may share them with us (committed, a configuration among them, while we
    /// have applied only up to the base). Without a match there, the copy goes out unverified
    /// and the follower installs it, dropping those entries (the gap lossy seed 3266535 opened,
    /// narrowed to a walk that misses the shared prefix).
    fn walk_back(&mut self, top: LogIndex, base: LogIndex) -> bool {
        let Some(step) = self.walk else {
            return false;
        };
        let at = match top.checked_sub(step) {
            Some(at) if at >= base => at,
            // The base, probed once: `BASE_PROBED` ends the walk at the next mismatch.
            _ if top > base && step != BASE_PROBED => base,
            _ => {
                self.walk = None;
                return false;
            }
        };
        self.next = at + 1;
        self.probe = Some(at + 1);
        self.walk = Some(if at == base {
            BASE_PROBED
        } else {
            step.saturating_mul(2)
        });
        true
    }

    /// A walk back has begun and not ended (the step has doubled at least once, and no
    /// acknowledgement came since): appends carry no entries until a probe is answered, so
    /// that a mismatch answers the probe's position and nothing after it.
    fn walking(&self) -> bool {
        self.walk.is_some_and(|step| step > 1)
    }

    /// Whether another append may be sent to it now (fewer than `depth_max` outstanding).
    pub(super) fn has_slot(&self, depth_max: u32) -> bool {
        self.in_flight < depth_max
    }

    /// The copy still on its way at `now`, if any.
    fn copy_in_flight(&self, now: u64) -> Option<CopyInFlight> {
        self.copy.filter(|c| now < c.until)
    }

    /// Where appends resume after a loss: past what it acknowledged, and past a copy on its
    /// way (the entries before its end come with it).
    fn resume_from(&self, now: u64) -> LogIndex {
        if let Some(probe) = self.probe {
            return probe;
        }
        let copied = self.copy_in_flight(now).map_or(0, |c| c.last);
        self.matched.max(copied) + 1
    }

    /// Forget what we knew: the process restarted and may have lost unsynced entries.
    pub(super) fn reset(&mut self, last_index: LogIndex, now: u64) {
        let last_ack = self.last_ack;
        *self = Follower::new(last_index, now);
        self.last_ack = last_ack;
    }
}

impl<S: StateMachine, R> Replica<S, R> {
    /// First boot of the configured primary: epoch 1, in-sync set of one.
    pub(super) fn become_primary_initial(&mut self) {
        self.role = Role::Candidate;
        self.bootstrapping = true;
        let epoch = self.hard.epoch + 1;
        self.claim_office(epoch, BTreeSet::new());
    }

    /// Won an election (or bootstrapping): make the new epoch durable first, and take office
    /// only once it is. A replica that crashes before that never was primary of the epoch, so
    /// another may legitimately take it; one that took office had the epoch on disk, and
    /// reports it to every later election.
    pub(super) fn claim_office(&mut self, epoch: Epoch, in_sync: BTreeSet<NodeId>) {
        debug_assert!(epoch > self.hard.epoch, "a new primary needs a new epoch");
        self.hard.epoch = epoch;
        self.epoch_primary = Some(self.id.clone());
        self.election = None;
        self.save_hard_state();
        self.epoch_persist_seq = self.store_seq;
        self.pending_office = Some((epoch, in_sync));
        if self.durable_seq >= self.epoch_persist_seq {
            self.take_pending_office();
        }
    }

    /// Take office if the claimed epoch is durable and still ours — and if we have not
    /// stalled since the decision. Our silence while stalled may have let the others decide we
    /// were dead and elect someone else, in this very epoch (they did not know we claimed it);
    /// then the decision is stale and the election runs again (a bootstrap has no rivals).
    pub(super) fn take_pending_office(&mut self) {
        if self.pending_office.is_some() && !self.bootstrapping && self.stalled() {
            tracing::warn!("stalled while taking office; running the election again");
            self.pending_office = None;
            self.become_secondary(None);
            return;
        }
        if self.durable_seq < self.epoch_persist_seq {
            return;
        }
        let Some((epoch, in_sync)) = self.pending_office.take() else {
            return;
        };
        if epoch == self.hard.epoch && self.role == Role::Candidate {
            self.take_office(epoch, in_sync);
        }
    }

    /// Become primary for `epoch` (already durable) with `in_sync` (plus ourselves) as the
    /// in-sync set.
    fn take_office(&mut self, epoch: Epoch, mut in_sync: BTreeSet<NodeId>) {
        self.bootstrapping = false;
        self.acked_in_epoch = false;
        self.role = super::Role::Primary;
        self.primary = Some(self.id.clone());
        self.epoch_primary = Some(self.id.clone());
        self.confirmed = true;
        self.election = None;
        let last = self.log.last().index;
        let now = self.now;
        self.followers = self
            .known_replicas()
            .into_iter()
            .map(|id| (id, Follower::new(last, now)))
            .collect();
        // From now on every write looks its id up.
        self.dedup.index_all();
        // Entries we hold but have not applied may be retried by their clients: let the retries
        // join them instead of executing twice.
        for e in self.log.iter_after(self.applied.index) {
            if matches!(e.payload, Payload::Command(_)) {
                self.dedup.mark_pending(e.id, e.index);
            }
        }
        in_sync.insert(self.id.clone());
        self.append_config(in_sync);
        self.event(Event::RoleChanged {
            role: Role::Primary,
            epoch,
            primary: self.primary.clone(),
        });
        // The seed's POST /election: tell replicas and front ends who leads now.
        let targets: Vec<NodeId> = self
            .known_replicas()
            .into_iter()
            .chain(self.services.frontends().cloned())
            .collect();
        for to in targets {
            self.call(to, Body::Announce);
        }
    }

    /// Most appends outstanding to one secondary (`Config::appends_in_flight_max`, at least 1).
    pub(super) fn append_depth_max(&self) -> u32 {
        u32::try_from(self.cfg.appends_in_flight_max.max(1)).unwrap_or(u32::MAX)
    }

    /// Leave the primary role: pending clients are told to retry elsewhere (with the same id).
    pub(super) fn step_down(&mut self) {
        let hint = self.primary.clone().filter(|p| *p != self.id);
        let waiting: Vec<R> = self
            .waiters
            .drain(..)
            .map(|(_, r)| r)
            .chain(self.late_waiters.drain(..).map(|(_, r)| r))
            .collect();
        for reply in waiting {
            self.respond(
                reply,
                Body::WriteReply(Err(WriteError::NotPrimary { hint: hint.clone() })),
            );
        }
        self.followers.clear();
        self.dedup.clear_pending();
        // Only a primary replicates; a later term starts its own list.
        self.unsynced_configs.clear();
    }

    /// Append a configuration entry with the given in-sync set.
    fn append_config(&mut self, in_sync: BTreeSet<NodeId>) {
        let config = ClusterConfig {
            primary: Some(self.id.clone()),
            in_sync,
        };
        let entry = Entry {
            index: self.log.last().index + 1,
            lamport: self.stamp(),
            epoch: self.hard.epoch,
            id: config_id(&mut self.rng),
            payload: Payload::Config(Box::new(config)),
        };
        self.unsynced_configs.push_back(entry.index);
        self.append_local(entry);
    }

    // ------------------------------------------------------------------ write path

    pub(super) fn on_write(&mut self, reply: R, w: WriteRequest) {
        if self.role != Role::Primary {
            let hint = self.primary.clone();
            self.respond(
                reply,
                Body::WriteReply(Err(WriteError::NotPrimary { hint })),
            );
            return;
        }
        let index = self.log.last().index + 1;
        // One probe: the first result, the write it joins, or a pending mark at `index`.
        match self.dedup.claim(w.id, index) {
            // Already applied: return the first result.
            Lookup::Applied(rec) => {
                let written = written(rec);
                self.respond(reply, Body::WriteReply(Ok(written)));
                return;
            }
            // In the log, not yet committed: wait for the first attempt.
            Lookup::Pending(index) => {
                self.late_waiters.push((index, reply));
                return;
            }
            Lookup::Unknown => {}
        }
        if self.waiters.len() >= self.cfg.pending_writes_max {
            self.dedup.unclaim(&w.id);
            self.respond(reply, Body::WriteReply(Err(WriteError::Overloaded)));
            return;
        }
        if let Err(e) = message::from_bytes::<S::Command>(&w.command) {
            self.dedup.unclaim(&w.id);
            let err = WriteError::Rejected(format!("undecodable command: {e}"));
            self.respond(reply, Body::WriteReply(Err(err)));
            return;
        }
        let entry = Entry {
            index,
            lamport: self.stamp(),
            epoch: self.hard.epoch,
            id: w.id,
            payload: Payload::Command(w.command),
        };
        self.waiters.push_back((entry.index, reply));
        self.append_local(entry);
    }

    /// Answer the clients waiting on a just-applied write. The output moves into the first
    /// attempt's reply (no copy) unless a retry joined it.
    pub(super) fn answer_waiters(&mut self, written: Written) {
        let applied = written.index;
        let retried = self.late_waiters.iter().any(|(i, _)| *i == applied);
        // With retries waiting too, the first attempt gets a copy and they share the rest.
        let (mut first, for_retries) = if retried {
            (Some(written.clone()), Some(written))
        } else {
            (Some(written), None)
        };
        while let Some(&(index, _)) = self.waiters.front() {
            if index > applied {
                break;
            }
            let Some((index, reply)) = self.waiters.pop_front() else {
                break;
            };
            let body = match first.take() {
                Some(w) if index == applied => Body::WriteReply(Ok(w)),
                _ => {
                    // Unreachable: every waiter's index holds a command, applied in order.
                    Body::WriteReply(Err(WriteError::NotPrimary { hint: None }))
                }
            };
            let msg = self.msg(body);
            self.outputs.push(Output::Respond { reply, msg });
        }
        if !self.late_waiters.is_empty() {
            let (now, later): (Vec<_>, Vec<_>) = self
                .late_waiters
                .drain(..)
                .partition(|(i, _)| *i <= applied);
            self.late_waiters = later;
            for (index, reply) in now {
                let body = match &for_retries {
                    Some(w) if index == applied => Body::WriteReply(Ok(w.clone())),
                    // Its entry was applied earlier under another id: cannot happen for ids
                    // marked pending, but never leave a client hanging.
                    _ => match self.dedup_written_at(index) {
                        Some(w) => Body::WriteReply(Ok(w)),
                        None => Body::WriteReply(Err(WriteError::NotPrimary { hint: None })),
                    },
                };
                self.respond(reply, body);
            }
        }
    }

    fn dedup_written_at(&self, index: LogIndex) -> Option<Written> {
        let id = self.log.get(index)?.id;
        self.dedup.get(&id).map(written)
    }

    // ------------------------------------------------------------------ replication

    /// Send appends, heartbeats and snapshots to secondaries that are ready for them.
    pub(super) fn replicate(&mut self) {
        let now = self.now;
        let resend_after = (self.cfg.ack_timeout_ms / 4).max(2 * self.cfg.heartbeat_interval_ms);
        let depth_max = self.append_depth_max();
        // A configuration entry goes out only once it is durable here (a crash must not leave
        // secondaries with a configuration their primary forgot); entries after it wait too.
        while self
            .unsynced_configs
            .front()
            .is_some_and(|&c| c <= self.durable_index)
        {
            self.unsynced_configs.pop_front();
        }
        let send_limit = match self.unsynced_configs.front() {
            Some(&c) => c - 1,
            None => self.log.last().index,
        };
        let last = self.log.last();
        let base = self.log.base();
        let mut snapshot_for: Vec<NodeId> = Vec::new();
        let Replica {
            followers,
            log,
            outputs,
            cfg,
            id,
            hard,
            clock,
            config,
            applied,
            ..
        } = self;
        // One append (or heartbeat, with no entries) to one secondary.
        let append_call = |to: &NodeId, f: &Follower, prev, entries| {
            let append = Append {
                prev,
                entries,
                commit: hard.commit,
                last: last.index,
                // Echoing an acknowledgement vouches for the secondary's eligibility lease; a
                // secondary we dropped from the in-sync set gets no such word from us, however
                // fresh its acknowledgements (they may have been stuck behind its stalled disk
                // when we dropped it, and it may not know yet that it was).
                acked: if config.in_sync.contains(to) {
                    f.acked_seq
                } else {
                    0
                },
            };
            let msg = Message {
                from: id.clone(),
                epoch: hard.epoch,
                clock: *clock,
                body: Body::Append(Box::new(append)),
            };
            Output::Call {
                to: to.clone(),
                kind: super::CallKind::Append,
                msg,
            }
        };
        for (to, f) in followers.iter_mut() {
            let heartbeat_due = f
                .last_sent
                .is_none_or(|t| now.saturating_sub(t) >= cfg.heartbeat_interval_ms);
            if f.copy.is_some() && f.copy_in_flight(now).is_none() {
                // Unanswered for too long: presume the copy lost.
                f.copy = None;
            }
            if f.in_flight > 0 && now.saturating_sub(f.in_flight_since) >= resend_after {
                // Nothing back for a while: assume what is outstanding lost and resend it.
                f.in_flight = 0;
                f.next = f.resume_from(now);
            }
            let backing_off = f.backoff_until > now;
            // At most one full copy per heartbeat interval: a secondary ahead of what we have
            // applied acknowledges the prefix it shares with us instead of taking an older
            // copy, and still needs one; without a pause, copy and acknowledgement would chase
            // each other at network speed until we applied further.
            // And none while one is on its way.
            let copy_paced = (f.needs_snapshot || f.next <= base.index)
                && (f.copy_in_flight(now).is_some()
                    || f.snapshot_sent
                        .is_some_and(|t| now.saturating_sub(t) < cfg.heartbeat_interval_ms)
                    // It shares our log further than we have applied: a copy now would end
                    // before entries it holds, and it refuses such a copy. Wait until we
                    // have applied that far (it acknowledged that far, so in sync or not it
                    // holds no commit back).
                    || applied.index < f.matched
                    // Nor, to a follower outside the in-sync set, before we have applied
                    // our own epoch's first entry: a copy of an older state carries an
                    // older configuration, perhaps one listing that follower alone in sync,
                    // and with it, once every other replica was down, it could win alone
                    // (lossy seed 3266535, where the copy ended just below the entry that
                    // had added its primary). An in-sync follower gets its copy regardless:
                    // an old suffix of its own may be what holds that entry's commit back.
                    || (applied.epoch < hard.epoch && !config.in_sync.contains(to)));
            // One walk-back probe at a time: each answer decides where the next one goes.
            let probing = f.walking() && f.in_flight > 0;
            if backing_off || !f.has_slot(depth_max) || copy_paced || probing {
                // A batch is outstanding, calls failed lately, or a copy just went out: keep
                // heartbeating anyway. A secondary's eligibility lease relies on our silence
                // meaning our death, so we never go quiet for longer than a heartbeat interval
                // while we live.
                if heartbeat_due {
                    if let Some(prev) = log.pos_at(f.next - 1) {
                        outputs.push(append_call(to, f, prev, Vec::new()));
                        f.last_sent = Some(now);
                    }
                }
                continue;
            }
            let has_entries = f.next <= send_limit;
            if !has_entries && !heartbeat_due && !f.needs_snapshot {
                continue;
            }
            if f.needs_snapshot || f.next <= base.index {
                snapshot_for.push(to.clone());
                continue;
            }
            let Some(prev) = log.pos_at(f.next - 1) else {
                // `next` beyond our log + 1: we lost track; probe from our end.
                f.next = last.index + 1;
                continue;
            };
            let sendable =
                usize::try_from(send_limit + 1 - f.next.min(send_limit + 1)).unwrap_or(usize::MAX);
            let entries = if f.walking() {
                Vec::new()
            } else {
                log.slice(
                    f.next,
                    cfg.batch_entries_max.min(sendable),
                    cfg.batch_bytes_max,
                )
            };
            if let Some(e) = entries.last() {
                f.next = e.index + 1;
            }
            outputs.push(append_call(to, f, prev, entries));
            if f.in_flight == 0 {
                f.in_flight_since = now;
            }
            f.in_flight += 1;
            f.sent_at = now;
            f.last_sent = Some(now);
        }
        if !snapshot_for.is_empty() {
            let snapshot = Box::new(self.make_snapshot());
            let copy_wait = self.copy_wait(snapshot.size_hint());
            for to in snapshot_for {
                if let Some(f) = self.followers.get_mut(&to) {
                    f.in_flight_since = now;
                    f.in_flight = 1;
                    f.sent_at = now;
                    f.last_sent = Some(now);
                    f.needs_snapshot = false;
                    f.snapshot_sent = Some(now);
                    f.copy = Some(CopyInFlight {
                        last: snapshot.last.index,
                        until: now.saturating_add(copy_wait),
                    });
                    f.next = snapshot.last.index + 1;
                }
                self.stats.snapshots_sent += 1;
                self.event(Event::SnapshotSent {
                    to: to.clone(),
                    last: snapshot.last,
                });
                self.call(to, Body::InstallSnapshot(snapshot.clone()));
            }
        }
    }

    pub(super) fn on_append_reply(&mut self, from: NodeId, epoch: Epoch, reply: AppendReply) {
        if self.role != Role::Primary || epoch != self.hard.epoch {
            return;
        }
        let now = self.now;
        let last_index = self.log.last().index;
        let base_index = self.log.base().index;
        let Some(f) = self.followers.get_mut(&from) else {
            return;
        };
        f.probe = None;
        match reply {
            AppendReply::Ok { matched, last, seq } => {
                self.acked_in_epoch = true;
                if f.copy.is_some_and(|c| matched >= c.last) {
                    // The copy arrived (this answers it, or an append built on it): whatever
                    // the replies from its old log asked for meanwhile, it has now.
                    f.copy = None;
                    f.needs_snapshot = false;
                    f.backoff_until = 0;
                }
                f.in_flight = f.in_flight.saturating_sub(1);
                f.walk = None;
                f.last_ack = now;
                f.acked_seq = f.acked_seq.max(seq);
                f.heard_at = f.heard_at.max(f.in_flight_since);
                f.matched = f.matched.max(matched.min(last_index));
                f.next = f.next.max(f.matched + 1);
                if last.index > last_index && f.matched >= last_index {
                    // It holds entries we never wrote (an old primary's): only a full copy
                    // fixes that. Not before it has matched all of ours, though: what it holds
                    // between its match and our end may be ours (a walk-back probe can match
                    // well below where our logs part), and a copy ending before them would
                    // drop them; the appends that follow show it, or meet the divergence.
                    f.needs_snapshot = true;
                }
            }
            AppendReply::Gap { .. } | AppendReply::Diverged { .. }
                if f.copy_in_flight(now).is_some() =>
            {
                // An append that overtook the copy on its way, answered from the old log. The
                // copy will settle it: pause appends (heartbeats go on) until it is answered or
                // a heartbeat interval has passed, then resume after it.
                f.in_flight = 0;
                f.next = f.resume_from(now);
                f.backoff_until = now + self.cfg.heartbeat_interval_ms;
            }
            AppendReply::Gap { last } => {
                // Whatever else is in flight was built on the wrong assumption: start over.
                f.in_flight = 0;
                if last.index >= base_index && self.log.pos_at(last.index) == Some(last) {
                    f.next = last.index + 1;
                    f.matched = f.matched.min(last.index);
                } else if !f.walk_back(last.index.min(last_index), base_index) {
                    f.needs_snapshot = true;
                }
            }
            AppendReply::Diverged { last } => {
                f.in_flight = 0;
                if !f.walk_back(last.index.min(last_index), base_index) {
                    f.needs_snapshot = true;
                }
            }
            AppendReply::SnapshotBehind { .. } => {
                // Only a copy is answered so: it was refused, send another later.
                f.copy = None;
                f.in_flight = 0;
                f.next = f.matched + 1;
                f.backoff_until = now + self.cfg.heartbeat_interval_ms;
            }
        }
        let caught_up = f.matched >= last_index && !f.needs_snapshot;
        if caught_up && !self.config.in_sync.contains(&from) {
            // A returning or new replica re-enters the in-sync set once it holds everything.
            let mut in_sync = self.config.in_sync.clone();
            in_sync.insert(from);
            self.append_config(in_sync);
        }
        self.advance_commit();
    }

    /// An append (`copy` false) or a full copy (`copy` true) to `to` failed.
    pub(super) fn on_append_failed(&mut self, to: &NodeId, copy: bool) {
        let now = self.now;
        let backoff = now + self.cfg.heartbeat_interval_ms;
        if let Some(f) = self.followers.get_mut(to) {
            if copy {
                f.copy = None;
            }
            // Resend from what it acknowledged (or after a copy still on its way) once the
            // backoff is over.
            f.in_flight = 0;
            f.next = f.resume_from(now);
            f.backoff_until = backoff;
        }
    }

    /// How long a full copy of `bytes` may go unanswered before it is presumed lost and another
    /// may be sent. Generous: a large state takes a while to encode, carry (in pieces, perhaps:
    /// `Config::copy_chunk_bytes`) and install, and a second copy to the same secondary would
    /// restart the transfer; a transport that gives up on a call says so sooner
    /// ([`super::Input::CallFailed`] ends the wait).
    pub(super) fn copy_wait(&self, bytes: usize) -> u64 {
        let transfer_ms = u64::try_from(bytes).unwrap_or(u64::MAX) / COPY_WAIT_BYTES_PER_MS;
        self.cfg
            .ack_timeout_ms
            .saturating_mul(COPY_WAIT_ACK_TIMEOUTS)
            .saturating_add(transfer_ms)
    }

    /// Whether this primary may serve a linearizable read now.
    ///
    /// Two conditions. It has applied its own epoch's first entry, so everything committed
    /// before it took office is applied. And no other replica can have taken office yet: every
    /// in-sync secondary (only they can win an election on their own) acknowledged a message
    /// of ours sent less than the failure timeout ago — less a tenth for clock-rate
    /// differences — so none of them has started an election since.
    pub(super) fn read_lease_valid(&self) -> bool {
        if self.role != Role::Primary || self.applied.epoch < self.hard.epoch {
            return false;
        }
        let lease = self.cfg.failure_timeout_ms - self.cfg.failure_timeout_ms / 10;
        self.config
            .in_sync
            .iter()
            .filter(|m| **m != self.id)
            .all(|m| {
                self.followers
                    .get(m)
                    .is_some_and(|f| self.now < f.heard_at + lease)
            })
    }

    /// Commit what the primary and every in-sync secondary hold durably.
    pub(super) fn advance_commit(&mut self) {
        if self.role != Role::Primary {
            return;
        }
        let mut commit = self.durable_index.min(self.log.last().index);
        for m in self.config.in_sync.iter().filter(|m| **m != self.id) {
            #[cfg(feature = "bug-injection")]
            if crate::bug_injection::active(crate::bug_injection::Bug::AckBeforeReplication) {
                break;
            }
            commit = commit.min(self.followers.get(m).map_or(0, |f| f.matched));
        }
        if commit > self.hard.commit {
            self.commit_through(commit, self.hard.epoch);
            self.apply_committed();
        }
    }

    pub(super) fn primary_tick(&mut self) {
        let now = self.now;
        // Track every replica we know of; forget those membership removed.
        let known = self.known_replicas();
        let last = self.log.last().index;
        for id in &known {
            self.followers
                .entry(id.clone())
                .or_insert_with(|| Follower::new(last, now));
        }
        self.followers.retain(|id, _| known.contains(id));
        // Drop in-sync secondaries that stopped acknowledging.
        let ack_timeout = self.cfg.ack_timeout_ms;
        let dropped: Vec<NodeId> = self
            .config
            .in_sync
            .iter()
            .filter(|m| **m != self.id)
            .filter(|m| {
                self.followers
                    .get(*m)
                    .is_none_or(|f| now.saturating_sub(f.last_ack) >= ack_timeout)
            })
            .cloned()
            .collect();
        if !dropped.is_empty() {
            tracing::warn!(
                ?dropped,
                "secondaries missed the ack timeout; dropped from the in-sync set"
            );
            let in_sync = self
                .config
                .in_sync
                .iter()
                .filter(|m| !dropped.contains(m))
                .cloned()
                .collect();
            self.append_config(in_sync);
            self.advance_commit();
        }
    }
}

/// A remembered result, as a reply carries it (the output copied out of the table).
fn written(rec: DedupRecordRef<'_>) -> Written {
    Written {
        index: rec.index,
        lamport: rec.lamport,
        output: Bytes::copy_from_slice(rec.output),
    }
}
