//! The secondary's side of replication: accepting appends, detecting gaps and divergence,
//! installing full copies, acknowledging only what is durable.
//!
//! Invariants: a secondary applies only committed entries (so it never has to undo one); it
//! acknowledges an index only once its log is durable through it; a full copy replaces its state
//! only if the copy is at least as new as what it knows is committed, and never if the log
//! holds the copy's last entry and nothing this primary has not sent (a late copy: older news
//! than the log), nor if it ends before the prefix this primary's appends showed the log
//! shares with its own (it would drop entries the primary holds too, and perhaps the
//! configuration among them).

use super::{Event, Replica};
use crate::message::{Append, AppendReply, Body, Message};
use crate::state_machine::StateMachine;
use crate::storage::StoreOp;
use crate::types::{Epoch, LogIndex, LogPos, NodeId, Role, Snapshot};

impl<S: StateMachine, R> Replica<S, R> {
    /// Common checks for replication traffic from a primary. Returns the reply token back if the
    /// message is from our (possibly new) primary and should be processed.
    fn accept_primary(&mut self, reply: R, from: &NodeId, epoch: Epoch) -> Option<R> {
        if epoch < self.hard.epoch {
            self.respond(reply, Body::StaleEpoch);
            return None;
        }
        if epoch > self.hard.epoch {
            self.adopt_epoch(epoch, Some(from.clone()));
        } else if self.yield_pending_claim(from) {
            // Our claim to this epoch never left us; the other's did.
        } else if self.role == Role::Primary
            || self.epoch_primary.as_ref().is_some_and(|p| p != from)
        {
            // Two primaries in one epoch can only come from a split election: the first one
            // accepted keeps it; refuse the other, loudly (it steps down on this answer).
            tracing::error!(other = %from, epoch, "a second primary for our epoch; refusing it");
            self.respond(reply, Body::StaleEpoch);
            return None;
        }
        self.epoch_primary = Some(from.clone());
        if self.role != Role::Secondary || self.primary.as_ref() != Some(from) {
            self.become_secondary(Some(from.clone()));
        }
        self.primary_contact = self.now;
        self.reset_failure_deadline();
        Some(reply)
    }

    pub(super) fn on_append(&mut self, reply: R, from: NodeId, epoch: Epoch, a: Append) {
        let Some(reply) = self.accept_primary(reply, &from, epoch) else {
            return;
        };
        if a.last < self.hard.commit && self.commit_epoch < epoch {
            // This primary's log ends before our commit point, and it took office after that
            // point was reached: it lacks entries we committed.
            self.note_split(epoch, a.last + 1);
        }
        self.check_committed(epoch, a.prev);
        let last = self.log.last();
        // Does our log hold the entry the batch follows? Compare positions wherever we still
        // hold them: even committed entries, because a split brain (possible in all-in-sync mode
        // under partitions) can commit different entries at the same index.
        match self.log.pos_at(a.prev.index) {
            Some(p) if p == a.prev => {}
            Some(_) => {
                self.respond(reply, Body::AppendReply(AppendReply::Diverged { last }));
                return;
            }
            // Compacted: below our snapshot, so committed; nothing left to compare, which is
            // fine unless this primary showed a split brain (its committed entries are not ours).
            None if a.prev.index < self.log.base().index => {
                if !self.compacted_matches(epoch, a.prev.index) {
                    self.respond(reply, Body::AppendReply(AppendReply::Diverged { last }));
                    return;
                }
            }
            None => {
                self.respond(reply, Body::AppendReply(AppendReply::Gap { last }));
                return;
            }
        }
        let mut matched = a.prev.index;
        let mut diverged = false;
        for e in a.entries {
            if e.index != matched + 1 || e.epoch > epoch {
                tracing::warn!(index = e.index, "malformed append batch; ignoring its rest");
                break;
            }
            let held = self.log.last();
            if e.index <= held.index {
                self.check_committed(epoch, e.pos());
                // Already held: the same entry (a duplicate or a resend), or a conflict.
                let same = if e.index <= self.log.base().index {
                    self.compacted_matches(epoch, e.index)
                } else {
                    self.log.pos_at(e.index) == Some(e.pos())
                };
                if !same {
                    diverged = true;
                    break;
                }
            } else {
                if (e.lamport <= held.lamport || e.epoch < held.epoch) && held.index > 0 {
                    // Along any log stamps rise and epochs never fall; the split checks
                    // below our base rely on both.
                    tracing::warn!(
                        index = e.index,
                        "append with a non-increasing lamport or a falling epoch; ignoring"
                    );
                    break;
                }
                self.append_local(e);
            }
            matched += 1;
        }
        // Whatever matched up to here is the primary's log: apply what it says is committed.
        self.verified = (epoch, self.verified_by(epoch).max(matched));
        let new_commit = a.commit.min(matched);
        if new_commit > self.hard.commit {
            self.commit_through(new_commit, epoch);
            self.apply_committed();
        }
        if diverged {
            let last = self.log.last();
            self.respond(reply, Body::AppendReply(AppendReply::Diverged { last }));
            return;
        }
        // Holding everything the primary had (not just its commit point) means holding its
        // latest configuration, so our view of our own in-sync membership is current.
        if matched >= a.last {
            self.confirmed = true;
        }
        self.echoed_ack = self.echoed_ack.max(a.acked);
        self.ack_matched(reply, matched);
    }

    /// Acknowledge that our log matches the primary's through `matched`, once durable.
    fn ack_matched(&mut self, reply: R, matched: LogIndex) {
        let body = Body::AppendReply(AppendReply::Ok {
            matched,
            last: self.log.last(),
            seq: 0, // numbered when sent
        });
        self.ack_when_durable(reply, matched, body);
    }

    /// Reply once the log is durable through `matched`.
    fn ack_when_durable(&mut self, reply: R, matched: u64, body: Body) {
        let msg: Message = self.msg(body);
        let pending_before = self.unpersisted.first().map(|e| e.index);
        let durable = matched <= self.durable_index && pending_before.is_none_or(|i| i > matched);
        if durable && self.pending_acks.is_empty() {
            self.send_ack(reply, msg);
        } else {
            self.pending_acks.push_back((matched, reply, msg));
        }
    }

    /// `pos` is the entry the primary of `epoch` holds at `pos.index`. Where we committed that
    /// index it must be ours: the same position where we still hold ours, and where we no
    /// longer do (compacted), of an epoch no later than the one that committed it (a primary
    /// holds every entry committed before it took office). Anything else is a split brain.
    fn check_committed(&mut self, epoch: Epoch, pos: LogPos) {
        if pos.index == 0 || pos.index > self.hard.commit || epoch <= self.split_seen {
            return;
        }
        let differs = match self.log.pos_at(pos.index) {
            Some(ours) => ours != pos,
            // Compacted away: along any log epochs never fall and stamps rise by at least one
            // per entry, so ours there is of no later epoch than our base, and stamped at
            // least one below the base's per index between them. An entry of a later epoch,
            // or stamped too high, is not ours. (Bounding by the base's epoch rather than the
            // epoch we last committed in, which is never earlier, also catches a same-epoch
            // split after a restart, when that epoch is the one we were in.) The stamp is what
            // tells two primaries of the same epoch apart where our base is of that epoch
            // (partitions seed 118805: both sides of a split elected epoch 2; the losing
            // side's secondary, its own entries compacted, took the other primary's for its
            // own, joined its in-sync set and refused its copies for good).
            None => pos.epoch > self.log.base().epoch || !self.fits_below_base(pos),
        };
        if differs {
            self.note_split(epoch, pos.index);
        }
    }

    /// Whether an entry at `pos`, below our compacted base, could be in our history: its
    /// Lamport stamp is at least one below the base's for each index between them.
    fn fits_below_base(&self, pos: LogPos) -> bool {
        let base = self.log.base();
        pos.index >= base.index
            || pos.lamport.saturating_add(base.index - pos.index) <= base.lamport
    }

    /// How far the primary of `epoch` verified our log equal to its own (0: not at all).
    fn verified_by(&self, epoch: Epoch) -> LogIndex {
        if self.verified.0 == epoch {
            self.verified.1
        } else {
            0
        }
    }

    /// Whether the entry at `index`, compacted away here (so committed), can be taken to equal
    /// the primary's of `epoch`: yes, unless that primary showed a split brain (`split_seen`) —
    /// then only as far as it verified our log (its copy, or its appends). Taking a split
    /// primary's word for it would apply its entries on top of the other side's state: the
    /// same applied position, another state (the simulator's partitions seed 36773).
    fn compacted_matches(&self, epoch: Epoch, index: LogIndex) -> bool {
        self.split_seen != epoch || (self.verified.0 == epoch && index <= self.verified.1)
    }

    /// The primary of `epoch` holds another entry than ours at `index`, which we committed, or
    /// none: a split brain (see `split_seen`).
    fn note_split(&mut self, epoch: Epoch, index: LogIndex) {
        if epoch > self.split_seen {
            tracing::error!(
                index,
                commit = self.hard.commit,
                epoch,
                "the primary holds another entry where we committed one (split brain)"
            );
            self.split_seen = epoch;
        }
    }

    pub(super) fn on_install(&mut self, reply: R, from: NodeId, epoch: Epoch, snap: Snapshot) {
        let Some(reply) = self.accept_primary(reply, &from, epoch) else {
            return;
        };
        self.check_committed(epoch, snap.last);
        if snap.last.index < self.hard.commit {
            let ours = self.log.pos_at(snap.last.index);
            if ours.is_none_or(|p| p == snap.last) && self.split_seen != epoch {
                // We are simply ahead of the primary's applied state (it was just elected): the
                // copy would take us backwards.
                if self.verified_by(epoch) >= self.hard.commit {
                    // Its appends showed that its log holds ours through our commit point, so
                    // what holds it back is that we never acknowledged that prefix: a suffix of
                    // ours beyond it (an old primary's, uncommitted) answered `Diverged`. If
                    // we are in its in-sync set, it cannot commit without us, nor apply, nor
                    // make a copy we take. Acknowledge the prefix; the copy it sends once it
                    // has applied that far replaces the suffix.
                    self.ack_matched(reply, self.verified.1);
                    return;
                }
                // Ask again later.
                let commit = self.hard.commit;
                self.respond(
                    reply,
                    Body::AppendReply(AppendReply::SnapshotBehind { commit }),
                );
                return;
            }
            // Our committed entries differ from the primary's (at the copy's last entry, or
            // where this primary's appends met ours): only a split brain does that. The newer
            // epoch wins; our side's writes are lost (see ARCHITECTURE.md).
            tracing::error!(
                commit = self.hard.commit,
                snapshot = snap.last.index,
                "committed state diverged from the primary's (split brain); replacing it"
            );
        }
        let all_verified = self.verified.0 == epoch && self.verified.1 >= self.log.last().index;
        if all_verified && self.log.pos_at(snap.last.index) == Some(snap.last) {
            // A late copy: this primary's own appends, sent after it, overtook it (two messages
            // in flight) or it was delivered twice. We hold its last entry and, beyond it, only
            // what this primary sent us; installing would drop entries we may have acknowledged.
            // Keep the log; the copy only tells us its last entry is committed. (With entries
            // this primary never confirmed — an old, divergent suffix — the copy is installed:
            // keeping them would only earn another divergence, and another copy.)
            if snap.last.index > self.hard.commit {
                self.commit_through(snap.last.index, epoch);
                self.apply_committed();
            }
            self.ack_matched(reply, snap.last.index);
            return;
        }
        if snap.last.index < self.verified_by(epoch) && self.split_seen != epoch {
            // This primary's own appends showed that we share its log further than the copy
            // reaches: installing it would drop entries it holds too (committed, perhaps) and
            // perhaps the configuration among them that lists who else is in sync, leaving us
            // the copy's older one (lossy seed 3266535: with an in-sync set of ourselves
            // alone, we later won and replaced committed entries). Acknowledge that prefix
            // instead: the primary makes no copy until it has applied that far, and if we are
            // in its in-sync set, it cannot commit that far without our acknowledgement
            // (partitions seed 6970, where asking for a later copy left both waiting). After
            // a split brain, though, the newer history wins whole (`split_seen`).
            self.ack_matched(reply, self.verified.1);
            return;
        }
        if let Err(e) = self.sm.restore(&snap.state) {
            self.event(Event::SnapshotRejected {
                reason: e.to_string(),
            });
            let commit = self.hard.commit;
            self.respond(
                reply,
                Body::AppendReply(AppendReply::SnapshotBehind { commit }),
            );
            return;
        }
        self.dedup.restore(snap.dedup.clone());
        self.log.reset(snap.last);
        self.set_config(snap.config.clone());
        self.applied_config = snap.config.clone();
        self.applied = snap.last;
        self.last_snapshot = snap.last;
        self.commit_through(snap.last.index, epoch);
        self.verified = (epoch, snap.last.index);
        self.clock = self.clock.max(snap.last.lamport);
        // The old log is gone: nothing of it may be acknowledged or counted durable any more.
        self.unpersisted.clear();
        self.durable_marks.clear();
        self.pending_acks.clear();
        self.durable_index = 0;
        let last = snap.last;
        let seq = self.store(StoreOp::Install(Box::new(snap)));
        self.durable_marks.push_back((seq, last.index));
        self.save_hard_state();
        self.stats.snapshots_installed += 1;
        self.event(Event::SnapshotInstalled { last });
        let body = Body::AppendReply(AppendReply::Ok {
            matched: last.index,
            last,
            seq: 0, // numbered when sent
        });
        let msg = self.msg(body);
        self.pending_acks.push_back((last.index, reply, msg));
    }
}
