//! Workloads: what the simulated clients do, and the application-level checks of what they saw.
//!
//! A workload is a trait so that any [`StateMachine`] plugs in: the register/key-value workload
//! ([`KvWorkload`]) checks linearizability; a ticket workload (creates, purchases, transfers)
//! adds conservation checks through [`Workload::check_state`] and [`Workload::check_read`].

use std::collections::BTreeMap;

use bytes::Bytes;
use replica_core::message;
use replica_core::rng::Rng;
use replica_core::state_machine::StateMachine;
use replica_core::testing::{KvCommand, KvGet, KvMachine};
use replica_core::types::Role;

use crate::history::{Committed, History, Outcome};
use crate::lin::{self, Call, Model, Verdict};

/// One operation a client issues.
#[derive(Clone, Debug)]
pub enum Request<S: StateMachine> {
    /// A write, sent under a fresh request id and retried with that id until it commits.
    Write(S::Command),
    /// A read, sent with the client's read fence.
    Read(S::Query),
}

/// A client workload and its checks.
pub trait Workload {
    /// The replicated application.
    type Machine: StateMachine + Default;

    /// The next operation of `client`.
    fn next(&mut self, client: usize, rng: &mut Rng) -> Request<Self::Machine>;

    /// Check the client-observed history against the committed log (called once, after the
    /// cluster converged, in the crash-stop fault mode). Returns one message per violation.
    fn check_history(&self, history: &History, committed: &[Committed]) -> Vec<String>;

    /// Check an application invariant on a replica's state (called on every replica at the end).
    fn check_state(&self, _state: &Self::Machine) -> Vec<String> {
        Vec::new()
    }

    /// Check an application invariant on one read answer (postcard `Query` and `Answer`),
    /// whatever replica served it.
    fn check_read(&self, _query: &[u8], _answer: &[u8]) -> Option<String> {
        None
    }
}

/// Registers with `Put` (returns the old value), `Append` (returns the new value; not idempotent,
/// so a double execution shows) and `Get`, over a few keys: small enough for contention,
/// informative enough that write results alone pin down the order.
#[derive(Clone, Debug)]
pub struct KvWorkload {
    keys: usize,
    read_ratio: f64,
    put_ratio: f64,
    counter: u64,
}

impl KvWorkload {
    /// A workload over `keys` keys with the given mix.
    pub fn new(keys: usize, read_ratio: f64, put_ratio: f64) -> Self {
        KvWorkload {
            keys: keys.max(1),
            read_ratio,
            put_ratio,
            counter: 0,
        }
    }
}

/// The sequential specification of one key.
struct KvModel;

enum KvOp {
    Put(String),
    Append(String),
    Get,
}

impl Model for KvModel {
    type State = Option<String>;
    type Op = KvOp;
    type Out = Option<String>;

    fn step(&self, s: &Option<String>, op: &KvOp) -> (Option<String>, Option<String>) {
        match op {
            KvOp::Put(v) => (Some(v.clone()), s.clone()),
            KvOp::Append(x) => {
                let v = format!("{}{x}", s.as_deref().unwrap_or(""));
                (Some(v.clone()), Some(v))
            }
            KvOp::Get => (s.clone(), s.clone()),
        }
    }
}

fn key_of(cmd: &KvCommand) -> &str {
    match cmd {
        KvCommand::Put { key, .. } | KvCommand::Append { key, .. } => key,
    }
}

impl Workload for KvWorkload {
    type Machine = KvMachine;

    fn next(&mut self, client: usize, rng: &mut Rng) -> Request<KvMachine> {
        self.counter += 1;
        let key = format!("k{}", rng.below(self.keys as u64));
        if rng.chance(self.read_ratio) {
            return Request::Read(KvGet(key));
        }
        let tag = format!("c{client}.{}", self.counter);
        if rng.chance(self.put_ratio) {
            Request::Write(KvCommand::put(key, tag))
        } else {
            Request::Write(KvCommand::append(key, format!("{tag};")))
        }
    }

    fn check_history(&self, history: &History, committed: &[Committed]) -> Vec<String> {
        let mut out = Vec::new();
        // Versions of every key along the committed log, for the read checks.
        let mut versions: BTreeMap<String, Vec<(u64, Option<String>)>> = BTreeMap::new();
        let mut replay = KvMachine::default();
        for c in committed {
            let Ok(cmd) = message::from_bytes::<KvCommand>(&c.command) else {
                out.push(format!("committed entry {} is not a KvCommand", c.index));
                continue;
            };
            replay.apply(&cmd);
            let key = key_of(&cmd).to_string();
            let value = replay.data.get(&key).cloned();
            versions.entry(key).or_default().push((c.lamport, value));
        }

        // Per-key histories for the linearizability check: every write, and reads served by a
        // primary. Reads from secondaries are checked against the committed log below.
        let mut per_key: BTreeMap<String, Vec<Call<KvOp, Option<String>>>> = BTreeMap::new();
        for (i, op) in history.ops.iter().enumerate() {
            if op.write {
                let Ok(cmd) = message::from_bytes::<KvCommand>(&op.payload) else {
                    continue;
                };
                let out_value = match &op.outcome {
                    Some(Outcome::Written(w)) => {
                        match message::from_bytes::<Option<String>>(&w.output) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                out.push(format!("op {i}: undecodable write output: {e}"));
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                let (key, kop) = match cmd {
                    KvCommand::Put { key, value } => (key, KvOp::Put(value)),
                    KvCommand::Append { key, suffix } => (key, KvOp::Append(suffix)),
                };
                let complete = out_value.as_ref().and(op.complete);
                per_key.entry(key).or_default().push(Call {
                    invoke: op.invoke,
                    complete,
                    op: kop,
                    out: out_value,
                });
            } else {
                let Some(Outcome::Read {
                    answer,
                    applied,
                    fence,
                    role,
                    server,
                }) = &op.outcome
                else {
                    continue;
                };
                let Ok(KvGet(key)) = message::from_bytes::<KvGet>(&op.payload) else {
                    continue;
                };
                let Ok(value) = message::from_bytes::<Option<String>>(answer) else {
                    out.push(format!("op {i}: undecodable read answer"));
                    continue;
                };
                // Session guarantees: the answer is the committed state at the serving replica's
                // applied stamp, and that stamp has reached the client's fence.
                if applied < fence {
                    out.push(format!("op {i}: read of {key} served by r{server} at applied {applied} below the client's fence {fence}"));
                }
                let expect = versions
                    .get(&key)
                    .and_then(|v| v.iter().rev().find(|(l, _)| l <= applied))
                    .and_then(|(_, v)| v.clone());
                if expect != value {
                    out.push(format!(
                        "op {i}: read of {key} by client {} from r{server} ({role:?}) returned {value:?}, but the committed state at lamport {applied} is {expect:?}",
                        op.client
                    ));
                }
                if *role == Role::Primary {
                    per_key.entry(key).or_default().push(Call {
                        invoke: op.invoke,
                        complete: op.complete,
                        op: KvOp::Get,
                        out: Some(value),
                    });
                }
            }
        }
        for (key, calls) in per_key {
            match lin::check(&KvModel, None, &calls) {
                Verdict::Linearizable => {}
                Verdict::Inconclusive => {}
                Verdict::Violation {
                    stuck_after,
                    blocked,
                } => {
                    let show: Vec<String> = blocked
                        .iter()
                        .filter_map(|&b| calls.get(b))
                        .map(|c| {
                            let what = match &c.op {
                                KvOp::Put(v) => format!("put {v}"),
                                KvOp::Append(x) => format!("append {x}"),
                                KvOp::Get => "get".to_string(),
                            };
                            format!("[{what} @{}..{:?} -> {:?}]", c.invoke, c.complete, c.out)
                        })
                        .collect();
                    out.push(format!(
                        "history of {key} is not linearizable: {} of {} operations placed; none of {} can go next",
                        stuck_after,
                        calls.len(),
                        show.join(" ")
                    ));
                }
            }
        }
        out
    }
}

/// The postcard bytes of a request, for the wire.
pub fn encode_request<S: StateMachine>(req: &Request<S>) -> Result<(bool, Bytes), String> {
    match req {
        Request::Write(c) => message::to_bytes(c)
            .map(|b| (true, b))
            .map_err(|e| e.to_string()),
        Request::Read(q) => message::to_bytes(q)
            .map(|b| (false, b))
            .map_err(|e| e.to_string()),
    }
}
