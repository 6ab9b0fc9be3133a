//! Protocol-level checks, run continuously while the simulation steps and once at the end.
//!
//! The checker keeps a **ghost log**: for every index, the entry the first replica applied there.
//! Applied entries are committed entries, and a committed entry never changes, so every later
//! application of that index (by any replica, in any incarnation) must be the same entry. A
//! **reference machine** replays the ghost log in order; its outputs are what every
//! acknowledged write must have returned, and its state digests what every replica's state must
//! hash to.
//!
//! Checked on every step: one primary per epoch (across incarnations too: a restarted replica
//! that re-enters an epoch it led before breaks "same (index, epoch) ⇒ same entry"); epochs and
//! applied positions never go backwards within an incarnation; a request id is committed at most
//! once; applied entries agree with the ghost log; state digests agree at checkpoints. Checked on
//! every acknowledgement: the result equals the reference's, and a retried id gets the same
//! result as its first acknowledgement.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use replica_core::message::{self, Written};
use replica_core::state_machine::StateMachine;
use replica_core::types::{Entry, Epoch, LogIndex, LogPos, Payload, Role};
use uuid::Uuid;

use crate::history::Committed;
use crate::params::FaultMode;
use crate::trace::digest;

/// Compare full states every this many indices (a digest costs a snapshot of the state).
pub const CHECKPOINT_EVERY_ENTRIES: u64 = 8;

/// One violated property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Short name of the property.
    pub kind: &'static str,
    /// Simulated time it was detected, ms.
    pub at_ms: u64,
    /// What exactly went wrong.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}ms] {}: {}", self.at_ms, self.kind, self.detail)
    }
}

#[derive(Clone, Debug)]
struct Ghost {
    pos: LogPos,
    id: Uuid,
    /// postcard `Command`; `None` for a configuration entry.
    command: Option<Bytes>,
}

/// What the checker last saw of one replica incarnation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// Incarnation.
    pub inc: u64,
    /// Epoch.
    pub epoch: Epoch,
    /// Applied position.
    pub applied: LogPos,
}

/// The running checks of one simulation.
pub struct Checker<M: StateMachine + Default> {
    mode: FaultMode,
    /// Violations found so far.
    pub violations: Vec<Violation>,
    ghost: Vec<Option<Ghost>>,
    ids: HashMap<Uuid, LogIndex>,
    reigns: BTreeMap<Epoch, (usize, u64)>,
    seen: Vec<Seen>,
    reference: M,
    ref_applied: LogIndex,
    ref_out: HashMap<Uuid, (LogPos, Bytes)>,
    ref_digests: HashMap<LogIndex, u64>,
    acked: BTreeMap<Uuid, (Written, u64)>,
}

impl<M: StateMachine + Default> Checker<M> {
    /// A checker for `replicas` replicas under `mode`.
    pub fn new(mode: FaultMode, replicas: usize) -> Self {
        let mut ref_digests = HashMap::new();
        ref_digests.insert(0, digest(&M::default().snapshot()));
        Checker {
            mode,
            violations: Vec::new(),
            ghost: Vec::new(),
            ids: HashMap::new(),
            reigns: BTreeMap::new(),
            seen: vec![Seen::default(); replicas],
            reference: M::default(),
            ref_applied: 0,
            ref_out: HashMap::new(),
            ref_digests,
            acked: BTreeMap::new(),
        }
    }

    fn strict(&self) -> bool {
        self.mode != FaultMode::Partitions
    }

    /// Record a violation.
    pub fn fail(&mut self, kind: &'static str, at_ms: u64, detail: String) {
        // One report per kind and detail is enough; a broken run can repeat one forever.
        if self.violations.len() < 64
            && !self
                .violations
                .iter()
                .any(|v| v.kind == kind && v.detail == detail)
        {
            self.violations.push(Violation {
                kind,
                at_ms,
                detail,
            });
        }
    }

    /// A replica (re)started as incarnation `inc`: its monotonicity baselines reset.
    pub fn restarted(&mut self, r: usize, inc: u64, epoch: Epoch, applied: LogPos) {
        self.seen[r] = Seen {
            inc,
            epoch,
            applied,
        };
    }

    /// Observe replica `r` after a step. `entry_at` looks up an entry in its log (through the
    /// simulator's mirror of its store operations); `state` is its state machine.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        now: u64,
        r: usize,
        inc: u64,
        role: Role,
        epoch: Epoch,
        applied: LogPos,
        entry_at: impl Fn(LogIndex) -> Option<Entry>,
        state: &M,
    ) {
        let before = self.seen[r];
        if epoch < before.epoch {
            self.fail(
                "epoch went backwards",
                now,
                format!("r{r} (incarnation {inc}) from {} to {epoch}", before.epoch),
            );
        }
        if applied.index < before.applied.index {
            self.fail(
                "applied index went backwards",
                now,
                format!(
                    "r{r} (incarnation {inc}) from {} to {}",
                    before.applied.index, applied.index
                ),
            );
        }
        if role == Role::Primary && self.strict() {
            match self.reigns.get(&epoch) {
                None => {
                    self.reigns.insert(epoch, (r, inc));
                }
                Some(&(p, pinc)) if (p, pinc) != (r, inc) => {
                    self.fail(
                        "two primaries in one epoch",
                        now,
                        format!(
                            "epoch {epoch}: r{p} (incarnation {pinc}) and r{r} (incarnation {inc})"
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        if applied.index > before.applied.index {
            for index in before.applied.index + 1..=applied.index {
                match entry_at(index) {
                    Some(e) => self.applied_entry(now, r, &e),
                    None if index == applied.index => self.applied_position(now, r, applied),
                    // Covered by an installed snapshot: checked through the state digest.
                    None => {}
                }
            }
            self.advance_reference(now);
            if applied.index % CHECKPOINT_EVERY_ENTRIES == 0
                || applied.index > before.applied.index + 1
            {
                self.compare_state(now, r, applied.index, state);
            }
        }
        self.seen[r] = Seen {
            inc,
            epoch,
            applied,
        };
    }

    fn applied_entry(&mut self, now: u64, r: usize, e: &Entry) {
        let command = match &e.payload {
            Payload::Command(c) => Some(c.clone()),
            Payload::Config(_) => None,
        };
        let slot = (e.index - 1) as usize;
        if self.ghost.len() <= slot {
            self.ghost.resize(slot + 1, None);
        }
        match &self.ghost[slot] {
            None => {
                if command.is_some() {
                    if let Some(&other) = self.ids.get(&e.id) {
                        if other != e.index && self.strict() {
                            self.fail(
                                "request executed twice",
                                now,
                                format!("id {} committed at index {other} and again at {} (applied by r{r})", e.id, e.index),
                            );
                        }
                    } else {
                        self.ids.insert(e.id, e.index);
                    }
                }
                self.ghost[slot] = Some(Ghost {
                    pos: e.pos(),
                    id: e.id,
                    command,
                });
            }
            Some(g) => {
                if (g.pos != e.pos() || g.id != e.id || g.command != command) && self.strict() {
                    let detail = format!(
                        "index {}: r{r} applied {:?} id {} but {:?} id {} was applied there before",
                        e.index,
                        e.pos(),
                        e.id,
                        g.pos,
                        g.id
                    );
                    self.fail("committed entry changed", now, detail);
                }
            }
        }
    }

    fn applied_position(&mut self, now: u64, r: usize, pos: LogPos) {
        let slot = (pos.index - 1) as usize;
        if let Some(Some(g)) = self.ghost.get(slot) {
            if g.pos != pos && self.strict() {
                let detail = format!(
                    "r{r} installed a snapshot at {pos:?} but {:?} was applied at index {}",
                    g.pos, pos.index
                );
                self.fail("committed entry changed", now, detail);
            }
        }
    }

    /// Replay the ghost log into the reference machine as far as it is contiguous.
    fn advance_reference(&mut self, now: u64) {
        while let Some(Some(g)) = self.ghost.get(self.ref_applied as usize) {
            let index = self.ref_applied + 1;
            if let Some(cmd) = &g.command {
                match message::from_bytes::<M::Command>(cmd) {
                    Ok(c) => {
                        let out = self.reference.apply(&c);
                        let out = message::to_bytes(&out).unwrap_or_default();
                        self.ref_out.entry(g.id).or_insert((g.pos, out));
                    }
                    Err(e) => {
                        let detail = format!("index {index}: {e}");
                        self.fail("undecodable committed command", now, detail);
                    }
                }
            }
            self.ref_applied = index;
            if index % CHECKPOINT_EVERY_ENTRIES == 0 {
                self.ref_digests
                    .insert(index, digest(&self.reference.snapshot()));
            }
        }
    }

    /// Compare a replica's state with the reference at `index`, when the reference knows it.
    pub fn compare_state(&mut self, now: u64, r: usize, index: LogIndex, state: &M) {
        if !self.strict() {
            return;
        }
        let want = if index == self.ref_applied {
            Some(digest(&self.reference.snapshot()))
        } else {
            self.ref_digests.get(&index).copied()
        };
        if let Some(want) = want {
            let got = digest(&state.snapshot());
            if got != want {
                self.fail(
                    "state differs from the committed log",
                    now,
                    format!("r{r} at index {index}: digest {got:016x}, replaying the committed log gives {want:016x}"),
                );
            }
        }
    }

    /// A client got `w` for request `id`.
    pub fn acked(&mut self, now: u64, id: Uuid, w: &Written) {
        if !self.strict() {
            return;
        }
        match self.acked.get(&id) {
            Some((first, _)) if first != w => {
                let detail = format!("id {id}: first {first:?}, now {w:?}");
                self.fail("acknowledged result changed", now, detail);
            }
            Some(_) => {}
            None => {
                self.acked.insert(id, (w.clone(), now));
            }
        }
        self.check_ack(now, id, w);
    }

    fn check_ack(&mut self, now: u64, id: Uuid, w: &Written) {
        if let Some((pos, out)) = self.ref_out.get(&id) {
            if pos.index != w.index || pos.lamport != w.lamport || *out != w.output {
                let detail = format!(
                    "id {id} acknowledged at index {} lamport {} output {:?}; the committed log has it at {pos:?} with output {out:?}",
                    w.index, w.lamport, w.output
                );
                self.fail(
                    "acknowledged write differs from the committed log",
                    now,
                    detail,
                );
            }
        } else if let Some(Some(g)) = self.ghost.get((w.index - 1) as usize) {
            if g.id != id {
                let detail = format!(
                    "id {id} acknowledged at index {}, but the committed entry there is id {}",
                    w.index, g.id
                );
                self.fail("acknowledged write lost", now, detail);
            }
        }
    }

    /// End of the run: every acknowledged write must be in the committed log, where its
    /// acknowledgement said.
    pub fn finish(&mut self, now: u64) {
        if !self.strict() {
            return;
        }
        let acked: Vec<(Uuid, Written)> = self
            .acked
            .iter()
            .map(|(id, (w, _))| (*id, w.clone()))
            .collect();
        for (id, w) in acked {
            if !self.ref_out.contains_key(&id) {
                let detail = format!(
                    "id {id} acknowledged at index {} lamport {} is not in the committed log (which has {} entries)",
                    w.index, w.lamport, self.ref_applied
                );
                self.fail("acknowledged write lost", now, detail);
            } else {
                self.check_ack(now, id, &w);
            }
        }
    }

    /// Highest index of the contiguous committed log.
    pub fn committed_len(&self) -> LogIndex {
        self.ref_applied
    }

    /// Digest of the reference state (the committed log replayed).
    pub fn reference_digest(&self) -> u64 {
        digest(&self.reference.snapshot())
    }

    /// The committed command entries, in order.
    pub fn committed(&self) -> Vec<Committed> {
        self.ghost
            .iter()
            .take(self.ref_applied as usize)
            .flatten()
            .filter_map(|g| {
                g.command.as_ref().map(|c| Committed {
                    index: g.pos.index,
                    lamport: g.pos.lamport,
                    id: g.id,
                    command: c.clone(),
                })
            })
            .collect()
    }

    /// Acknowledged writes: `(id, first result)`.
    pub fn acknowledged(&self) -> Vec<(Uuid, Written)> {
        self.acked
            .iter()
            .map(|(id, (w, _))| (*id, w.clone()))
            .collect()
    }
}
