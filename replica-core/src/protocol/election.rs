//! Elections: the seed's bully algorithm, ranked by log freshness instead of address.
//!
//! A candidate asks every replica it knows (`ElectionQuery`, the seed's `GET /election`). It
//! defers when someone still hears a primary, or when an eligible replica outranks it (or one
//! that asked it during the round and whose own answer has not come); otherwise
//! it takes the next epoch and announces itself (the seed's `POST /election`). "Next" skips the
//! epoch a replica that outranked it earlier could have taken without its announcement getting
//! through (it may have crashed right after taking office). A winner takes office only once
//! its new epoch is durable; if another replica acts as primary of that epoch meanwhile, the
//! winner yields to it (`yield_pending_claim`).
//!
//! Invariants:
//! - **rank** = (epoch of last entry, lamport of last entry, id): the freshest log wins, the id
//!   only breaks ties. Every acknowledged write is on every in-sync replica, so the
//!   highest-ranked eligible replica holds all of them.
//! - Only an *eligible* replica (in the in-sync set of its latest configuration, and caught up
//!   with a primary since it started) wins on its own. A restarted replica may have missed its
//!   own removal from the in-sync set, so it wins only after hearing from every member of every
//!   in-sync set it is told about, and from every replica that asked it during the round (the
//!   whole-cluster-restart case). So does a replica that heard from a fresher one whose
//!   configuration leaves it out: it may have been removed without knowing it.
//! - The new primary's in-sync set holds itself and the in-sync repliers whose logs are a prefix
//!   of its own; everyone else rejoins after catching up.
//!
//! The seed's "pull what a reachable replica has that the winner lacks" step is not needed: the
//! winner outranks every eligible replica, so anything only an ineligible replica holds was never
//! acknowledged, and its client retries it under the same id.

use std::collections::{BTreeMap, BTreeSet};

use super::{Event, Replica};
use crate::message::{Body, ElectionReply, Rank};
use crate::state_machine::StateMachine;
use crate::types::{Epoch, NodeId, Role};

/// One election round, as the candidate sees it.
///
/// A replica counts as dead only if it stays silent for the whole round, although it is asked
/// again at every tick: one lost query or reply must not make a live replica look dead, or two
/// candidates could each think they are alone and both take office.
#[derive(Debug)]
pub(super) struct Election {
    /// When to stop waiting (for answers, or for the announcement).
    deadline: u64,
    /// A higher-ranked replica answered: we wait for its announcement.
    waiting: bool,
    /// Replicas asked this round.
    asked: BTreeSet<NodeId>,
    /// Their answers, with the epoch each answered in.
    replies: BTreeMap<NodeId, (Epoch, ElectionReply)>,
    /// Replicas that asked us during this round, whatever our membership says, with the epoch
    /// and rank their latest query carried: alive, and perhaps fresher than us. A restarted
    /// candidate waits for their answers too; any candidate defers to one that outranks it and
    /// whose answer has not come (see `decide`).
    askers: BTreeMap<NodeId, (Epoch, Rank)>,
}

impl Election {
    fn complete(&self) -> bool {
        self.asked.iter().all(|id| self.replies.contains_key(id))
    }

    /// After a stall of our own: answers gathered so far may be stale (the world moved on while
    /// we were not running) and silence proves nothing, so ask everyone again and wait afresh.
    pub(super) fn restart_after_stall(&mut self, deadline: u64) {
        self.replies.clear();
        self.waiting = false;
        self.deadline = self.deadline.max(deadline);
    }

    fn silent(&self) -> Vec<NodeId> {
        self.asked
            .iter()
            .filter(|id| !self.replies.contains_key(*id))
            .cloned()
            .collect()
    }
}

impl<S: StateMachine, R> Replica<S, R> {
    fn election_deadline(&mut self) -> u64 {
        let jitter = self.rng.below(self.cfg.election_wait_ms / 2 + 1);
        self.now + self.cfg.election_wait_ms + jitter
    }

    /// Start a round: become a candidate and ask every known replica.
    pub(super) fn start_election(&mut self) {
        let asked = self.known_replicas();
        let deadline = self.election_deadline();
        let was = self.role;
        self.role = Role::Candidate;
        self.primary = None;
        self.election = Some(Election {
            deadline,
            waiting: false,
            asked: asked.clone(),
            replies: BTreeMap::new(),
            askers: BTreeMap::new(),
        });
        if was != Role::Candidate {
            self.event(Event::RoleChanged {
                role: Role::Candidate,
                epoch: self.hard.epoch,
                primary: None,
            });
        }
        self.event(Event::ElectionStarted {
            epoch: self.hard.epoch,
        });
        let rank = self.rank();
        for to in asked {
            self.call(to, Body::ElectionQuery(rank.clone()));
        }
        if self.election.as_ref().is_some_and(Election::complete) {
            self.decide();
        }
    }

    pub(super) fn on_election_query(&mut self, reply: R, from: NodeId, epoch: Epoch, rank: Rank) {
        if epoch > self.hard.epoch {
            self.adopt_epoch(epoch, None);
        }
        let live_primary = match self.role {
            Role::Primary => Some(self.id.clone()),
            // Won, waiting for the epoch to reach the disk: as good as primary to a candidate.
            Role::Candidate if self.pending_office.is_some() => Some(self.id.clone()),
            Role::Secondary
                if self.now.saturating_sub(self.primary_contact) < self.cfg.failure_timeout_ms =>
            {
                self.primary.clone()
            }
            _ => None,
        };
        let answer = ElectionReply {
            rank: self.rank(),
            in_sync: self.config.in_sync.contains(&self.id),
            confirmed: self.confirmed && self.lease_valid(),
            primary: live_primary.clone(),
            config_in_sync: self.config.in_sync.iter().cloned().collect(),
            last: self.log.last(),
        };
        self.respond(reply, Body::ElectionReply(Box::new(answer)));
        // The seed: a secondary that gets an election request (and no longer hears its
        // primary) becomes a candidate itself.
        if live_primary.is_none() && self.role == Role::Secondary {
            tracing::debug!(candidate = %from, their_rank = ?rank, "election request; joining the election");
            self.start_election();
        }
        // Whoever asks is a live replica, so our round must hear from it too, although our
        // membership may not list it yet (just restarted, the gossip not yet in). A restarted
        // replica that asked only the replicas it knew of won against a fresher one that was
        // asking it at that very moment (targeted seed 4161435: two primaries in epoch 3, and
        // a committed entry replaced).
        if let Some(el) = self.election.as_mut() {
            el.askers.insert(from.clone(), (epoch, rank));
            if el.asked.insert(from.clone()) {
                let rank = self.rank();
                self.call(from, Body::ElectionQuery(rank));
            }
        }
    }

    pub(super) fn on_election_reply(&mut self, from: NodeId, epoch: Epoch, answer: ElectionReply) {
        if self.role != Role::Candidate {
            return;
        }
        // A fresher replica, in the in-sync set of its latest configuration, where we are not:
        // we may have been dropped without knowing it, so we are no longer confirmed (until a
        // primary catches us up), and say so in our own answers. Our lease said the primary
        // could not have dropped us, on the assumption that a primary we no longer hear is
        // dead; but its messages after a pause of its own may have been lost while our
        // acknowledgements sat behind our stalled disk (targeted seed 4862335: r0 dropped r1,
        // committed two entries alone and crashed; r1, its lease intact, won against the
        // restarted r0 and replaced them). Giving up eligibility only ever makes winning
        // harder: a restarted candidate's rules (hear everyone, defer to anyone better) apply.
        if answer.rank > self.rank()
            && answer.in_sync
            && !answer.config_in_sync.contains(&self.id)
            && self.confirmed
        {
            tracing::warn!(fresher = %from, "a fresher replica's configuration leaves us out; no longer confirmed");
            self.confirmed = false;
        }
        let Some(el) = self.election.as_mut() else {
            return;
        };
        if !el.asked.contains(&from) || el.waiting {
            return;
        }
        el.replies.insert(from, (epoch, answer));
        // Decided at the next tick, not here: a tick first checks whether we stalled, in which
        // case these answers may be stale.
    }

    /// A query failed in transport: it is asked again at the next tick, until the deadline.
    pub(super) fn on_election_query_failed(&mut self, _to: &NodeId) {}

    pub(super) fn election_tick(&mut self) {
        let Some(el) = self.election.as_ref() else {
            self.start_election();
            return;
        };
        if self.now >= el.deadline {
            if el.waiting {
                // The announcement never came: new round.
                self.start_election();
            } else {
                self.decide();
            }
            return;
        }
        if !el.waiting {
            if el.complete() {
                self.decide();
                return;
            }
            let rank = self.rank();
            for to in el.silent() {
                self.call(to, Body::ElectionQuery(rank.clone()));
            }
        }
    }

    /// All answers are in (or the round timed out): follow, wait, or win.
    fn decide(&mut self) {
        let Some(el) = self.election.as_ref() else {
            return;
        };
        let me = self.rank();
        // Each replica that outranks us may take office in the epoch after the one it answered
        // in, and crash before its announcement reaches us, whether we defer to it or follow a
        // primary someone still hears; if we win a later round, we must not take that epoch
        // too (two primaries in one epoch would not fence each other). Targeted seed 4235007:
        // r0 followed a rumoured primary; r1, which outranked it, won epoch 5 and crashed
        // unheard; r0 later took epoch 5 as well.
        let outranking = el
            .replies
            .values()
            .map(|(e, r)| (e, &r.rank))
            .chain(el.askers.values().map(|(e, r)| (e, r)))
            .filter(|(_, r)| **r > me)
            .map(|(e, _)| e + 1)
            .max()
            .unwrap_or(0);
        // A replica that asked us this round is alive, and its query told us its rank. If it
        // outranks us and its answer has not reached us, we defer to it as if it had answered:
        // it may win this round, having heard our answer. Without this, a candidate whose
        // every answer from it was lost counted it as dead and won the same epoch (targeted
        // seed 4424960: two primaries in epoch 2). Its answer, once in, says more (whether it
        // is in sync and caught up) and decides instead.
        let unanswered_above = el
            .askers
            .iter()
            .any(|(id, (_, r))| *r > me && !el.replies.contains_key(id));
        // Someone still hears a primary: follow it, and give it a failure timeout to reach us.
        let live = el
            .replies
            .values()
            .find_map(|(_, r)| r.primary.clone().filter(|p| *p != self.id));
        if let Some(p) = live {
            self.epoch_deferred = self.epoch_deferred.max(outranking);
            self.become_secondary(Some(p));
            return;
        }
        let in_sync = self.config.in_sync.contains(&self.id);
        let may_win = if unanswered_above {
            false
        } else if self.eligible() {
            !el.replies
                .values()
                .any(|(_, r)| r.in_sync && r.confirmed && r.rank > me)
        } else if in_sync {
            // Restarted: win only if no one can do better and we heard from every member of
            // every in-sync set we know of, and from every replica that asked us.
            let someone_better = el
                .replies
                .values()
                .any(|(_, r)| r.in_sync && (r.confirmed || r.rank > me));
            let members: BTreeSet<&NodeId> = self
                .config
                .in_sync
                .iter()
                .chain(
                    el.replies
                        .values()
                        .flat_map(|(_, r)| r.config_in_sync.iter()),
                )
                .chain(el.askers.keys())
                .filter(|m| **m != self.id)
                .collect();
            let heard_all = members.iter().all(|m| el.replies.contains_key(*m));
            !someone_better && heard_all
        } else {
            false
        };
        if may_win {
            let epoch = el
                .replies
                .values()
                .map(|(e, _)| *e)
                .max()
                .unwrap_or(0)
                .max(self.hard.epoch)
                .max(self.epoch_deferred)
                + 1;
            let in_sync: BTreeSet<NodeId> = el
                .replies
                .iter()
                .filter(|(_, (_, r))| r.in_sync && self.log.pos_at(r.last.index) == Some(r.last))
                .map(|(id, _)| id.clone())
                .collect();
            tracing::info!(epoch, ?in_sync, "won the election");
            self.stats.elections_won += 1;
            self.event(Event::ElectionWon { epoch });
            self.claim_office(epoch, in_sync);
        } else {
            // Defer to those who outrank us (and skip the epochs they may take).
            self.epoch_deferred = self.epoch_deferred.max(outranking);
            let deadline = self.election_deadline();
            if let Some(el) = self.election.as_mut() {
                el.waiting = true;
                el.deadline = deadline;
            }
        }
    }

    /// Another replica acts as primary of the epoch we won and are still making durable
    /// (our disk is slow): give our claim up and let it keep the epoch. Nothing of the claim
    /// has left us — no announcement or append goes out before the epoch is durable, and an
    /// election answer that named us primary sets no one's primary for the epoch — while the
    /// other took office and may have replicated under it. Refusing it instead made it step
    /// down, after which we took office: two primaries in one epoch (targeted seeds 4122113,
    /// 4129236, where the two decided within a few milliseconds of each other, or one heard
    /// none of the other's answers).
    pub(super) fn yield_pending_claim(&mut self, from: &NodeId) -> bool {
        let claimed = self.role == Role::Candidate
            && self.pending_office.is_some()
            && self.epoch_primary.as_ref() == Some(&self.id)
            && *from != self.id;
        if claimed {
            tracing::warn!(other = %from, epoch = self.hard.epoch, "another replica took office in the epoch we claimed; yielding");
            self.pending_office = None;
            self.epoch_primary = None;
        }
        claimed
    }

    pub(super) fn on_announce(&mut self, reply: R, from: NodeId, epoch: Epoch) {
        if epoch < self.hard.epoch {
            self.respond(reply, Body::StaleEpoch);
            return;
        }
        if epoch > self.hard.epoch {
            self.adopt_epoch(epoch, Some(from));
        } else if self.role == Role::Primary
            || (!self.yield_pending_claim(&from)
                && self.epoch_primary.as_ref().is_some_and(|p| *p != from))
        {
            tracing::error!(other = %from, epoch, "announcement of a second primary for our epoch; refused");
            self.respond(reply, Body::StaleEpoch);
            return;
        } else {
            self.epoch_primary = Some(from.clone());
            self.become_secondary(Some(from));
        }
        self.primary_contact = self.now;
        self.respond(reply, Body::Ack);
    }
}
