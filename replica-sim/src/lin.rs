//! A Wing–Gong linearizability checker with Lowe's memoization, over one object's history.
//!
//! Wing & Gong (1993) search for an order of the operations that respects real time (an operation
//! that returned before another was invoked comes first) and that a sequential model accepts;
//! Lowe (2017) prunes the search by remembering `(set of linearized operations, model state)`
//! pairs already explored. Histories are checked per key (P-compositionality: a history is
//! linearizable iff each object's sub-history is), which keeps the search small.
//!
//! An operation with no observed result (a write whose client never got an answer) may have taken
//! effect at any point after its invocation, or never: it is given an infinite return time and
//! need not be linearized at all.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// A sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Hash + Eq;
    /// An operation with its arguments.
    type Op;
    /// What the operation returns.
    type Out: PartialEq;
    /// Apply `op` to `state`: the new state and the output.
    fn step(&self, state: &Self::State, op: &Self::Op) -> (Self::State, Self::Out);
}

/// One operation of a history. Times are positions in one global real-time order.
#[derive(Clone, Debug)]
pub struct Call<Op, Out> {
    /// When the operation was invoked.
    pub invoke: u64,
    /// When its result came back; `None`: never (it may or may not have taken effect).
    pub complete: Option<u64>,
    /// The operation.
    pub op: Op,
    /// The observed output; `None` when not observed.
    pub out: Option<Out>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid linearization exists.
    Linearizable,
    /// None exists. `stuck_after` is the longest prefix the search could linearize, `blocked`
    /// the completed operations (indices into the history) that could not be placed next.
    Violation {
        /// Length of the longest linearizable prefix found.
        stuck_after: usize,
        /// Indices of the operations that were candidates at the deepest point.
        blocked: Vec<usize>,
    },
    /// The search exceeded its budget of explored states; no verdict.
    Inconclusive,
}

/// Most `(linearized set, state)` pairs explored before giving up.
pub const STATES_MAX: usize = 2_000_000;

/// Check `history` against `model` from `init`.
pub fn check<M: Model>(model: &M, init: M::State, history: &[Call<M::Op, M::Out>]) -> Verdict {
    let n = history.len();
    let words = n.div_ceil(64).max(1);
    let completed = history.iter().filter(|c| c.complete.is_some()).count();
    let mut search = Search {
        model,
        history,
        done: vec![0u64; words],
        done_completed: 0,
        completed,
        seen: HashSet::new(),
        deepest: 0,
        blocked: Vec::new(),
        depth: 0,
        budget_hit: false,
    };
    if search.dfs(&init) {
        Verdict::Linearizable
    } else if search.budget_hit {
        Verdict::Inconclusive
    } else {
        Verdict::Violation {
            stuck_after: search.deepest,
            blocked: search.blocked,
        }
    }
}

struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Call<M::Op, M::Out>],
    done: Vec<u64>,
    done_completed: usize,
    completed: usize,
    seen: HashSet<(Vec<u64>, u64)>,
    deepest: usize,
    blocked: Vec<usize>,
    depth: usize,
    budget_hit: bool,
}

impl<M: Model> Search<'_, M> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    fn dfs(&mut self, state: &M::State) -> bool {
        if self.done_completed == self.completed {
            return true;
        }
        if self.budget_hit {
            return false;
        }
        // Only an operation invoked before every pending operation's return can go next.
        let horizon = (0..self.history.len())
            .filter(|&i| !self.is_done(i))
            .filter_map(|i| self.history[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let candidates: Vec<usize> = (0..self.history.len())
            .filter(|&i| !self.is_done(i) && self.history[i].invoke < horizon)
            .collect();
        if self.depth >= self.deepest {
            self.deepest = self.depth;
            self.blocked = candidates.clone();
        }
        for i in candidates {
            let call = &self.history[i];
            let (next, out) = self.model.step(state, &call.op);
            if call.out.as_ref().is_some_and(|o| *o != out) {
                continue;
            }
            self.flip(i);
            let key = (self.done.clone(), state_hash(&next));
            if self.seen.insert(key) {
                if self.seen.len() > STATES_MAX {
                    self.budget_hit = true;
                    return false;
                }
                let counts = call.complete.is_some();
                self.done_completed += usize::from(counts);
                self.depth += 1;
                let ok = self.dfs(&next);
                self.depth -= 1;
                self.done_completed -= usize::from(counts);
                if ok {
                    return true;
                }
            }
            self.flip(i);
        }
        false
    }
}

fn state_hash<S: Hash>(s: &S) -> u64 {
    let mut h = crate::trace::Fnv::default();
    let mut w = FnvWriter(&mut h);
    s.hash(&mut w);
    h.finish()
}

struct FnvWriter<'a>(&'a mut crate::trace::Fnv);

impl Hasher for FnvWriter<'_> {
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: `Some(v)` writes v (returns nothing), `None` reads.
    struct Register;
    impl Model for Register {
        type State = u32;
        type Op = Option<u32>;
        type Out = Option<u32>;
        fn step(&self, s: &u32, op: &Option<u32>) -> (u32, Option<u32>) {
            match op {
                Some(v) => (*v, None),
                None => (*s, Some(*s)),
            }
        }
    }

    fn c(
        invoke: u64,
        complete: Option<u64>,
        op: Option<u32>,
        out: Option<Option<u32>>,
    ) -> Call<Option<u32>, Option<u32>> {
        Call {
            invoke,
            complete,
            op,
            out,
        }
    }

    /// Table of classic cases: concurrent overlap allows either order; real-time order is
    /// enforced; a pending write may or may not have happened.
    #[test]
    fn register_histories() {
        type RegCall = Call<Option<u32>, Option<u32>>;
        let cases: Vec<(&str, Vec<RegCall>, bool)> = vec![
            (
                "sequential write then read",
                vec![
                    c(1, Some(2), Some(1), Some(None)),
                    c(3, Some(4), None, Some(Some(1))),
                ],
                true,
            ),
            (
                "stale read after write returned",
                vec![
                    c(1, Some(2), Some(1), Some(None)),
                    c(3, Some(4), None, Some(Some(0))),
                ],
                false,
            ),
            (
                "concurrent read may see old",
                vec![
                    c(1, Some(4), Some(1), Some(None)),
                    c(2, Some(3), None, Some(Some(0))),
                ],
                true,
            ),
            (
                "concurrent read may see new",
                vec![
                    c(1, Some(4), Some(1), Some(None)),
                    c(2, Some(3), None, Some(Some(1))),
                ],
                true,
            ),
            (
                "pending write seen",
                vec![
                    c(1, None, Some(7), None),
                    c(5, Some(6), None, Some(Some(7))),
                ],
                true,
            ),
            (
                "pending write not seen",
                vec![
                    c(1, None, Some(7), None),
                    c(5, Some(6), None, Some(Some(0))),
                ],
                true,
            ),
            (
                "new then old: not linearizable",
                vec![
                    c(1, Some(10), Some(1), Some(None)),
                    c(2, Some(3), None, Some(Some(1))),
                    c(4, Some(5), None, Some(Some(0))),
                ],
                false,
            ),
        ];
        for (name, h, want) in cases {
            let got = check(&Register, 0, &h) == Verdict::Linearizable;
            assert_eq!(got, want, "{name}");
        }
    }
}
