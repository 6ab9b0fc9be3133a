//! A simulated front end: the behaviour of `replica_core::Client`, as a synchronous state machine
//! the simulator can drive in simulated time.
//!
//! Like the real client it gives every write one request id for its whole life and retries it
//! with that id: `NotPrimary { hint }` redirects, no answer (transport failure) moves on to
//! another replica, `Overloaded` backs off. It greets the cluster periodically (the seed's
//! `POST /greet/frontend`) and follows the new primary's announcement. Unlike the real client it
//! never gives up on a write: the healing phase must let every write finish, which is part of
//! the liveness check.

use std::collections::VecDeque;

use bytes::Bytes;
use replica_core::message::{
    Body, Message, ReadError, ReadRequest, ServiceEntry, ServiceKind, WriteError, WriteRequest,
};
use replica_core::rng::Rng;
use replica_core::types::{Epoch, Lamport, NodeId, Role};
use uuid::Uuid;

use crate::history::{History, OpRecord, Outcome};

/// First pause between retries, ms (the real client's default).
const BACKOFF_MIN_MS: u64 = 10;
/// Longest pause between retries, ms (the real client's default).
const BACKOFF_MAX_MS: u64 = 200;
/// How often a client greets the cluster, ms (the real client's default).
const GREET_INTERVAL_MS: u64 = 200;

/// A request the client has to send.
#[derive(Clone, Debug)]
pub enum Req {
    /// A write under a fixed id.
    Write {
        /// The request id, the same across retries.
        id: Uuid,
        /// postcard `Command`.
        command: Bytes,
    },
    /// A read.
    Read {
        /// postcard `Query`.
        query: Bytes,
    },
}

/// What a client needs from the simulator while it reacts to something.
pub struct Ctx<'a> {
    /// Simulated time, ms.
    pub now: u64,
    /// The run's RNG.
    pub rng: &'a mut Rng,
    /// The history (operations are recorded here unless the client is the verifier).
    pub history: &'a mut History,
    /// Calls to make: `(call id, replica, message)`.
    pub out: &'a mut Vec<(u64, usize, Message)>,
    /// Allocator of call ids.
    pub next_call: &'a mut u64,
    /// Completed writes of the verifier, to compare with their first result.
    pub verified: &'a mut Vec<(Uuid, replica_core::message::Written)>,
}

impl Ctx<'_> {
    fn call(&mut self, to: usize, msg: Message) -> u64 {
        *self.next_call += 1;
        let id = *self.next_call;
        self.out.push((id, to, msg));
        id
    }
}

#[derive(Debug)]
struct Active {
    /// Index in the history (unused by the verifier).
    hist: usize,
    req: Req,
    /// The outstanding call of this operation, if any.
    call: Option<(u64, usize)>,
    backoff_ms: u64,
    /// Do not send before this time.
    not_before: u64,
    /// A replica answered "behind the fence": read from the primary from now on.
    primary_only: bool,
    /// Attempts so far.
    attempts: u64,
}

/// One simulated front end.
#[derive(Debug)]
pub struct SimClient {
    /// Its index.
    pub index: usize,
    /// Its address.
    pub id: NodeId,
    replicas: usize,
    primary: Option<usize>,
    primary_epoch: Epoch,
    fence: Lamport,
    next_replica: usize,
    active: Option<Active>,
    greet: Option<(u64, usize)>,
    next_greet: u64,
    heartbeat: u64,
    /// Operations still to issue before the client goes idle (the verifier's script).
    pub script: VecDeque<Req>,
    /// Whether the client takes new operations from the workload.
    pub issuing: bool,
    /// The verifier re-sends acknowledged writes; its results are compared, not recorded.
    pub verifier: bool,
    /// Earliest time of the next new operation.
    next_op_at: u64,
    read_from_secondaries: bool,
    think_max_ms: u64,
}

impl SimClient {
    /// A client that knows `replicas` replicas and believes `r0` is the primary.
    pub fn new(
        index: usize,
        id: NodeId,
        replicas: usize,
        read_from_secondaries: bool,
        think_max_ms: u64,
    ) -> Self {
        SimClient {
            index,
            id,
            replicas,
            primary: Some(0),
            primary_epoch: 0,
            fence: 0,
            next_replica: index,
            active: None,
            greet: None,
            next_greet: 0,
            heartbeat: 0,
            script: VecDeque::new(),
            issuing: true,
            verifier: false,
            next_op_at: 0,
            read_from_secondaries,
            think_max_ms,
        }
    }

    /// Whether an operation is in progress.
    pub fn busy(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the client is waiting for a new operation to start (it can take one).
    pub fn wants_op(&self, now: u64) -> bool {
        self.active.is_none() && self.script.is_empty() && self.issuing && now >= self.next_op_at
    }

    /// Start an operation (the caller records nothing: this does).
    pub fn start(&mut self, ctx: &mut Ctx<'_>, req: Req) {
        let (id, write, payload) = match &req {
            Req::Write { id, command } => (*id, true, command.clone()),
            Req::Read { query } => (Uuid::nil(), false, query.clone()),
        };
        let hist = if self.verifier {
            usize::MAX
        } else {
            let invoke = ctx.history.tick();
            ctx.history.ops.push(OpRecord {
                client: self.index,
                id,
                write,
                payload,
                invoke,
                complete: None,
                outcome: None,
                invoke_ms: ctx.now,
            });
            ctx.history.ops.len() - 1
        };
        self.active = Some(Active {
            hist,
            req,
            call: None,
            backoff_ms: BACKOFF_MIN_MS,
            not_before: ctx.now,
            primary_only: false,
            attempts: 0,
        });
    }

    /// Time passed: greet if due, start the next scripted operation, send what is due. Returns
    /// when to wake up next.
    pub fn wake(&mut self, ctx: &mut Ctx<'_>) -> u64 {
        let now = ctx.now;
        if now >= self.next_greet && self.greet.is_none() {
            self.next_greet = now + GREET_INTERVAL_MS;
            self.send_greeting(ctx);
        }
        if self.active.is_none() {
            if let Some(req) = self.script.pop_front() {
                self.start(ctx, req);
            }
        }
        if let Some(a) = self.active.as_mut() {
            if a.call.is_none() && now >= a.not_before {
                self.attempt(ctx);
            }
        }
        let mut next = self.next_greet;
        if let Some(a) = &self.active {
            if a.call.is_none() {
                next = next.min(a.not_before.max(now + 1));
            }
        } else if self.issuing {
            next = next.min(self.next_op_at.max(now + 1));
        }
        next
    }

    fn pick_replica(&mut self) -> usize {
        let r = self.next_replica % self.replicas.max(1);
        self.next_replica = self.next_replica.wrapping_add(1);
        r
    }

    fn msg(&self, body: Body) -> Message {
        Message {
            from: self.id.clone(),
            epoch: 0,
            clock: self.fence,
            body,
        }
    }

    fn attempt(&mut self, ctx: &mut Ctx<'_>) {
        let fence = self.fence;
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let any_replica = self.read_from_secondaries && a.attempts == 0 && !a.primary_only;
        let body = match &a.req {
            Req::Write { id, command } => Body::Write(WriteRequest {
                id: *id,
                command: command.clone(),
            }),
            Req::Read { query } => Body::Read(ReadRequest {
                query: query.clone(),
                fence,
            }),
        };
        let to = if any_replica && matches!(body, Body::Read(_)) {
            ctx.rng.below(self.replicas as u64) as usize
        } else {
            match self.primary {
                Some(p) => p,
                None => self.pick_replica(),
            }
        };
        let msg = self.msg(body);
        let call = ctx.call(to, msg);
        if let Some(a) = self.active.as_mut() {
            a.call = Some((call, to));
            a.attempts += 1;
        }
    }

    fn send_greeting(&mut self, ctx: &mut Ctx<'_>) {
        self.heartbeat += 1;
        let me = ServiceEntry {
            kind: ServiceKind::Frontend,
            address: self.id.clone(),
            primary: false,
            generation: 1,
            heartbeat: self.heartbeat,
        };
        let to = match self.primary {
            Some(p) => p,
            None => self.pick_replica(),
        };
        let call = ctx.call(to, self.msg(Body::Gossip(vec![me])));
        self.greet = Some((call, to));
    }

    fn retry_later(&mut self, now: u64) {
        if let Some(a) = self.active.as_mut() {
            a.call = None;
            a.not_before = now + a.backoff_ms;
            a.backoff_ms = (a.backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>, outcome: Outcome) {
        let Some(a) = self.active.take() else { return };
        if let Outcome::Written(w) = &outcome {
            self.fence = self.fence.max(w.lamport);
            if self.verifier {
                if let Req::Write { id, .. } = a.req {
                    ctx.verified.push((id, w.clone()));
                }
            }
        }
        if let Outcome::Read { applied, .. } = &outcome {
            self.fence = self.fence.max(*applied);
        }
        if !self.verifier {
            let complete = ctx.history.tick();
            if let Some(op) = ctx.history.ops.get_mut(a.hist) {
                op.complete = Some(complete);
                op.outcome = Some(outcome);
            }
        }
        let think = if self.think_max_ms == 0 {
            0
        } else {
            ctx.rng.below(self.think_max_ms + 1)
        };
        self.next_op_at = ctx.now + think;
    }

    fn redirect(&mut self, from: usize, hint: Option<usize>, epoch: Epoch) {
        match hint {
            Some(h) if h != from => {
                if epoch >= self.primary_epoch {
                    self.primary_epoch = epoch;
                    self.primary = Some(h);
                }
            }
            _ => {
                if self.primary == Some(from) {
                    self.primary = None;
                }
            }
        }
    }

    fn forget(&mut self, who: usize) {
        if self.primary == Some(who) {
            self.primary = None;
        }
    }

    fn learn(&mut self, epoch: Epoch, list: &[ServiceEntry]) {
        let primary = list
            .iter()
            .find(|e| e.primary && e.kind == ServiceKind::Replica)
            .and_then(|e| replica_index(&e.address));
        if let Some(p) = primary {
            if epoch >= self.primary_epoch || self.primary.is_none() {
                self.primary_epoch = epoch;
                self.primary = Some(p);
            }
        }
    }

    /// The reply to call `call` arrived; `role` is the serving replica's role when it processed
    /// the request.
    pub fn on_reply(&mut self, ctx: &mut Ctx<'_>, call: u64, msg: Message, role: Option<Role>) {
        if let Some((g, _)) = self.greet {
            if g == call {
                self.greet = None;
                if let Body::Services(list) = &msg.body {
                    self.learn(msg.epoch, list);
                }
                return;
            }
        }
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let Some((c, to)) = a.call else { return };
        if c != call {
            return;
        }
        let is_read = matches!(a.req, Req::Read { .. });
        match msg.body {
            Body::WriteReply(Ok(w)) if !is_read => self.finish(ctx, Outcome::Written(w)),
            Body::WriteReply(Err(WriteError::NotPrimary { hint })) => {
                let hint = hint.as_ref().and_then(replica_index);
                self.redirect(to, hint, msg.epoch);
                self.retry_later(ctx.now);
            }
            Body::WriteReply(Err(WriteError::Overloaded)) => self.retry_later(ctx.now),
            Body::WriteReply(Err(WriteError::Rejected(r)))
            | Body::ReadReply(Err(ReadError::Rejected(r))) => {
                self.finish(ctx, Outcome::Rejected(r));
            }
            Body::ReadReply(Ok(ok)) if is_read => {
                let outcome = Outcome::Read {
                    answer: ok.answer,
                    applied: ok.applied,
                    fence: self.fence,
                    server: to,
                    role: role.unwrap_or(Role::Secondary),
                };
                self.finish(ctx, outcome);
            }
            Body::ReadReply(Err(ReadError::Behind { .. })) => {
                if let Some(a) = self.active.as_mut() {
                    a.primary_only = true;
                }
                self.retry_later(ctx.now);
            }
            _ => {
                self.forget(to);
                self.retry_later(ctx.now);
            }
        }
    }

    /// Call `call` failed in transport.
    pub fn on_failure(&mut self, ctx: &mut Ctx<'_>, call: u64) {
        if let Some((g, to)) = self.greet {
            if g == call {
                self.greet = None;
                self.forget(to);
                return;
            }
        }
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let Some((c, to)) = a.call else { return };
        if c != call {
            return;
        }
        self.forget(to);
        self.retry_later(ctx.now);
    }

    /// An inbound message from a replica (a new primary's announcement, gossip). Returns the
    /// reply.
    pub fn on_request(&mut self, msg: Message) -> Message {
        match &msg.body {
            Body::Announce if msg.epoch >= self.primary_epoch => {
                if let Some(p) = replica_index(&msg.from) {
                    self.primary_epoch = msg.epoch;
                    self.primary = Some(p);
                }
            }
            Body::Gossip(list) | Body::Services(list) => self.learn(msg.epoch, list),
            _ => {}
        }
        self.msg(Body::Ack)
    }

    /// Believe `p` is the primary.
    pub fn set_primary(&mut self, p: usize) {
        self.primary = Some(p);
    }

    /// Number of attempts of the operation in progress (for liveness reports).
    pub fn attempts(&self) -> u64 {
        self.active.as_ref().map_or(0, |a| a.attempts)
    }
}

/// Index of replica `r{i}`.
pub fn replica_index(id: &NodeId) -> Option<usize> {
    id.as_str().strip_prefix('r')?.parse().ok()
}

/// Index of client `c{i}`.
pub fn client_index(id: &NodeId) -> Option<usize> {
    id.as_str().strip_prefix('c')?.parse().ok()
}
