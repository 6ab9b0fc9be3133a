//! The runtime: drives a [`Replica`] with tokio, a [`LogStore`], a [`Transport`] and timers.
//!
//! Three kinds of task:
//! - the **core task** owns the replica; woken by an input, it first yields once so that the
//!   tasks ready beside it queue theirs, then takes every input waiting in its inbox (up to
//!   `INPUTS_PER_TURN_MAX`), steps the replica with each, and executes the outputs once — this
//!   is where concurrent writes become one batch (a primary sends part of a long turn early,
//!   `TURN_SEND_INPUTS`, so that its secondaries need not wait for the rest). It also drives
//!   the replica's outbound calls (a `FuturesUnordered`: a reply wakes the core directly, no
//!   task per call); only full copies, which can be large to encode, go out on a task of their
//!   own. Under load (a pipeline of writes waiting on a primary, batches arriving at a
//!   secondary) it looks for more up to `idle_polls` times, yielding in between, before its
//!   thread may sleep; light traffic, ticks and heartbeats never poll, so an idle replica
//!   sleeps at once, and nor does a core while tasks wait in the runtime's shared queue;
//! - the **ticker task** sends the core a tick every `Config::tick_interval_ms`, through the
//!   same inbox as every other input;
//! - the **store task** executes storage operations strictly in order and syncs once per run of
//!   operations (group commit), then reports the highest durable sequence number. A store that
//!   [completes immediately](LogStore::completes_immediately) (in memory) has no task: the core
//!   runs its operations itself after each turn.
//!
//! Invariant: the replica is only touched by the core task, so the protocol never needs a lock.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use crate::config::Config;
use crate::message::{
    self, Body, CodecError, CopyChunk, CopyChunkReply, Message, WriteError, WriteRequest,
};
use crate::metrics::NodeMetrics;
use crate::protocol::{CallKind, Event, Input, Output, RecoveryError, Replica, Start, Status};
use crate::state_machine::StateMachine;
use crate::storage::{LogStore, StorageError, StoreOp};
use crate::transport::{handle_decoded, HandleError, Handler, NodeStopped, Transport};
use crate::types::{NodeId, Role};

use self::copy::{Assembler, Taken};
use self::inbox::{inbox, Inbox, InboxSender, WeakInboxSender};

mod copy;
mod inbox;

/// How many queued inputs the core task processes before executing outputs. Bounds the latency
/// one turn adds, while letting a burst of writes share one batch.
const INPUTS_PER_TURN_MAX: usize = 4096;

/// How many inputs of a turn a primary steps before it sends what it has, when a secondary can
/// take an append (`Replica::can_send_append`); the rest of the turn's writes go in the next
/// append. Without it, 256 writers formed one batch: the clients all woke together, the
/// primary took all their writes in one turn, and the secondaries sat idle while it did, then
/// it waited while they worked — a convoy that never breaks up. Two half batches overlap the
/// two sides instead: `replica-bench -c 256 --runtimes 2` (the primary and its clients on one
/// thread, the secondaries on another) ran 13% faster with 128 here than with whole turns.
/// Smaller batches cost more per write: a batch of 32 at 64 writers was slower than one of 64.
const TURN_SEND_INPUTS: usize = 128;

/// The load from which a replica polls before sleeping (`Config::idle_polls`): this many writes
/// waiting on a primary, or this many entries in one append to a secondary. Below it, polling
/// cost more CPU than the sleeps it saved: at 1,000 paced writes/s, three replicas in one
/// process used 26% of a core polling after every write against 10% without; at 10,000 writes/s
/// arriving ten per millisecond, a gate of 4 (which every burst passed) used 53% of a core with
/// 1,024 polls, a gate of 16 15% (benches/README.md). Flat out, batches hold one entry per
/// concurrent writer, so from 16 writers on the gate opens.
const POLL_LOAD_MIN: usize = 16;

/// What an idle poll that gives the I/O driver a turn costs out of `Config::idle_polls`,
/// which counts polls of an in-process transport: about eight times as long (a system call
/// and a clock read), so the same budget spins for about the same time either way.
const IO_POLL_COST: u32 = 8;

/// The sender of writes submitted through [`NodeHandle::write`]. A write's sender plays no part
/// in the protocol; a static id costs no reference count per write (the handle's own id did,
/// bounced between the client's core and the replica's).
const LOCAL_CLIENT: NodeId = NodeId::from_static("local");

/// The reply token the runtime hands the core: where the answer goes.
enum Responder {
    /// To a caller that takes the reply as it is (a local call, or a transport that decoded
    /// the request itself).
    Message(oneshot::Sender<Message>),
    /// To a caller that takes it encoded ([`Handler::handle_encoded`]): encoded here, on the
    /// replica's task, as the request was decoded.
    Encoded(oneshot::Sender<Result<Vec<u8>, CodecError>>),
}

impl Responder {
    fn send(self, msg: Message) {
        // A caller that gave up waiting is no error of ours.
        match self {
            Responder::Message(tx) => {
                let _ = tx.send(msg);
            }
            Responder::Encoded(tx) => {
                let _ = tx.send(message::encode(&msg));
            }
        }
    }
}

/// Outbound calls in flight, each resolving to the input its outcome feeds the replica, and
/// when an append was sent (to time its round trip).
type Calls = FuturesUnordered<BoxFuture<'static, (Input<Responder>, Option<Instant>)>>;

/// Where storage operations run.
enum StoreDriver<L> {
    /// On the store task, through this channel (a store that waits on a disk).
    Task(mpsc::UnboundedSender<(u64, StoreOp)>),
    /// On the core task, after each turn (a store that never waits).
    Inline(L),
}

enum Cmd<S> {
    Input(Input<Responder>),
    /// A request as it came over the transport, decoded by the core when it takes it.
    Encoded {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, CodecError>>,
    },
    Status(oneshot::Sender<Status>),
    Inspect(Box<dyn FnOnce(&S) + Send>),
    Fatal(String),
}

/// Everything needed to start a replica.
pub struct NodeOptions<S, L, T> {
    /// This replica's id: its address as peers reach it.
    pub id: NodeId,
    /// Timeouts and limits.
    pub config: Config,
    /// The application.
    pub state_machine: S,
    /// Where the log lives.
    pub store: L,
    /// How to reach peers.
    pub transport: T,
    /// Start as primary if the log is empty (the `--primary this` of the seed).
    pub initial_primary: bool,
    /// Addresses to greet at start (the configured primary).
    pub seeds: Vec<NodeId>,
    /// Seed for election jitter. Any value works; distinct replicas should differ.
    pub rng_seed: u64,
}

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored state could not be used.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// A write submitted through [`NodeHandle::write`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalWriteError {
    /// The primary refused (not primary, overloaded, rejected).
    #[error(transparent)]
    Refused(#[from] WriteError),
    /// The node stopped.
    #[error(transparent)]
    Stopped(#[from] NodeStopped),
    /// The output could not be decoded (a bug: encoder and decoder disagree).
    #[error("undecodable output: {0}")]
    Codec(String),
}

/// Handle to a running replica. Cheap to clone; every clone talks to the same replica.
pub struct NodeHandle<S> {
    id: NodeId,
    tx: InboxSender<Cmd<S>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    metrics: Arc<NodeMetrics>,
    /// Full copies arriving in pieces.
    copies: Arc<Assembler>,
}

impl<S> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id.clone(),
            tx: self.tx.clone(),
            tasks: self.tasks.clone(),
            metrics: self.metrics.clone(),
            copies: self.copies.clone(),
        }
    }
}

/// Starts replicas.
pub struct Node;

impl Node {
    /// Load the store, rebuild the replica, and start its tasks.
    pub async fn start<S, L, T>(opts: NodeOptions<S, L, T>) -> Result<NodeHandle<S>, NodeError>
    where
        S: StateMachine,
        L: LogStore,
        T: Transport,
    {
        let NodeOptions {
            id,
            config,
            state_machine,
            mut store,
            transport,
            initial_primary,
            seeds,
            rng_seed,
        } = opts;
        let recovered = store.load().await?;
        let tick = Duration::from_millis(config.tick_interval_ms);
        let start = Start {
            id: id.clone(),
            initial_primary,
            seeds,
            rng_seed,
        };
        let origin = Instant::now();
        let idle_polls = config.idle_polls;
        let copy_chunk_bytes = config.copy_chunk_bytes;
        let replica: Replica<S, Responder> =
            Replica::new(start, config, state_machine, recovered, 0)?;

        let (tx, rx) = inbox();
        let metrics = Arc::new(NodeMetrics::default());
        let mut tasks = Vec::new();
        let store = if store.completes_immediately() {
            StoreDriver::Inline(store)
        } else {
            let (store_tx, store_rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(run_store(
                store,
                store_rx,
                tx.clone(),
                metrics.clone(),
            )));
            StoreDriver::Task(store_tx)
        };
        let core = Core {
            replica,
            store,
            transport: Arc::new(transport),
            origin,
            turn: origin,
            id: id.clone(),
            metrics: metrics.clone(),
            idle_polls,
            copy_chunk_bytes,
            loaded: false,
        };
        tasks.push(tokio::spawn(run_ticker(tx.downgrade(), tick)));
        tasks.push(tokio::spawn(core.run(rx)));
        Ok(NodeHandle {
            id,
            tx,
            tasks: Arc::new(Mutex::new(tasks)),
            metrics,
            copies: Arc::new(Assembler::default()),
        })
    }
}

impl<S: StateMachine> NodeHandle<S> {
    /// This replica's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The replica's counters and histograms.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Metrics and state in the Prometheus text format, for a `/metrics` route.
    pub async fn render_metrics(&self) -> Result<String, NodeStopped> {
        let status = self.status().await?;
        Ok(self.metrics.render(&status))
    }

    /// A snapshot of the replica's state (role, epoch, log positions, in-sync set, services).
    pub async fn status(&self) -> Result<Status, NodeStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Status(tx)).map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Run `f` on the applied state machine (a local, possibly stale read for an embedding
    /// program; it reflects exactly the committed entries through `status().applied`).
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> T + Send + 'static,
    ) -> Result<T, NodeStopped> {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move |s: &S| {
            let _ = tx.send(f(s));
        });
        self.tx.send(Cmd::Inspect(job)).map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Submit a write directly to this replica (it must be the primary). `id` deduplicates:
    /// submitting the same id again returns the first result.
    pub async fn write(
        &self,
        id: Uuid,
        command: &S::Command,
    ) -> Result<S::Output, LocalWriteError> {
        let command =
            message::to_bytes(command).map_err(|e| LocalWriteError::Codec(e.to_string()))?;
        let msg = Message {
            from: LOCAL_CLIENT,
            epoch: 0,
            clock: 0,
            body: Body::Write(WriteRequest { id, command }),
        };
        let reply = self.call(msg).await?;
        match reply.body {
            Body::WriteReply(Ok(w)) => {
                message::from_bytes(&w.output).map_err(|e| LocalWriteError::Codec(e.to_string()))
            }
            Body::WriteReply(Err(e)) => Err(e.into()),
            other => Err(LocalWriteError::Codec(format!(
                "unexpected reply {}",
                other.kind()
            ))),
        }
    }

    async fn call(&self, msg: Message) -> Result<Message, NodeStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Input(Input::Request {
                reply: Responder::Message(tx),
                msg,
            }))
            .map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Stop the node at once, as a crash would: tasks are aborted mid-flight, nothing is
    /// flushed. (With a real store, what was synced survives; see `MemLogStore::crash`.)
    pub fn stop(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
    }

    /// Whether the node's tasks are still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

#[async_trait]
impl<S: StateMachine> Handler for NodeHandle<S> {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        match msg.body {
            Body::WriteBatch(writes) => {
                self.write_batch(msg.from, msg.epoch, msg.clock, writes)
                    .await
            }
            Body::CopyChunk(chunk) => self.copy_chunk(msg.from, chunk).await,
            _ => self.call(msg).await,
        }
    }

    /// Appends go to the core as they are and are decoded there, on this replica's task;
    /// anything else is decoded here (write batches are split up on the way in).
    async fn handle_encoded(&self, bytes: Vec<u8>) -> Result<Vec<u8>, HandleError> {
        if !message::is_append(&bytes) {
            return handle_decoded(self, &bytes).await;
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Encoded { bytes, reply: tx })
            .map_err(|_| NodeStopped)?;
        Ok(rx.await.map_err(|_| NodeStopped)??)
    }
}

impl<S: StateMachine> NodeHandle<S> {
    /// A piece of a full copy: held until the last one, which hands the whole copy to the
    /// replica and answers with its reply.
    async fn copy_chunk(&self, from: NodeId, chunk: CopyChunk) -> Result<Message, NodeStopped> {
        let reply = match self.copies.take(&from, chunk, std::time::Instant::now()) {
            Taken::Whole(copy) => return self.call(*copy).await,
            Taken::Holds(held) => CopyChunkReply::Holds(held),
            Taken::Refused(why) => {
                tracing::warn!(peer = %from, %why, "refused a piece of a full copy");
                CopyChunkReply::Refused(why)
            }
        };
        // Framing between runtimes: the sender's runtime reads the body, not the header.
        Ok(Message {
            from: self.id.clone(),
            epoch: 0,
            clock: 0,
            body: Body::CopyChunkReply(reply),
        })
    }

    /// Split a batch into single writes, queued back to back so the core takes them in one
    /// turn (one log batch), and gather their results in order.
    async fn write_batch(
        &self,
        from: NodeId,
        epoch: u64,
        clock: u64,
        writes: Vec<WriteRequest>,
    ) -> Result<Message, NodeStopped> {
        let mut replies = Vec::with_capacity(writes.len());
        for w in writes {
            let (tx, rx) = oneshot::channel();
            let msg = Message {
                from: from.clone(),
                epoch,
                clock,
                body: Body::Write(w),
            };
            self.tx
                .send(Cmd::Input(Input::Request {
                    reply: Responder::Message(tx),
                    msg,
                }))
                .map_err(|_| NodeStopped)?;
            replies.push(rx);
        }
        let mut results = Vec::with_capacity(replies.len());
        let mut last = None;
        for rx in replies {
            let reply = rx.await.map_err(|_| NodeStopped)?;
            let result = match reply.body {
                Body::WriteReply(r) => r,
                other => Err(WriteError::Rejected(format!(
                    "unexpected reply {}",
                    other.kind()
                ))),
            };
            results.push(result);
            last = Some((reply.from, reply.epoch, reply.clock));
        }
        let (from, epoch, clock) = last.unwrap_or((self.id.clone(), 0, 0));
        Ok(Message {
            from,
            epoch,
            clock,
            body: Body::WriteBatchReply(results),
        })
    }
}

/// The core task's state.
struct Core<S: StateMachine, T, L> {
    replica: Replica<S, Responder>,
    store: StoreDriver<L>,
    transport: Arc<T>,
    origin: Instant,
    /// When the current turn started: the one clock read of a turn, which every input of the
    /// turn, every call sent and every reply timed in it share. (Reading the clock per call and
    /// per store run cost a few percent of the write path on a virtual machine.)
    turn: Instant,
    id: NodeId,
    metrics: Arc<NodeMetrics>,
    /// `Config::idle_polls`.
    idle_polls: u32,
    /// `Config::copy_chunk_bytes`.
    copy_chunk_bytes: usize,
    /// The current turn took an append of at least `POLL_LOAD_MIN` entries: this secondary is
    /// under load, and the next append is likely close behind.
    loaded: bool,
}

impl<S: StateMachine, T: Transport, L: LogStore> Core<S, T, L> {
    /// Start a turn: read the clock, and return the replica's time (ms since start).
    fn start_turn(&mut self) -> u64 {
        self.turn = Instant::now();
        self.now()
    }

    /// The replica's time at the start of this turn.
    fn now(&self) -> u64 {
        let elapsed = self.turn.saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, mut rx: Inbox<Cmd<S>>) {
        let mut calls = Calls::new();
        if !self.execute(&mut calls).await {
            return;
        }
        let idle_polls = self.idle_polls;
        let in_process = self.transport.in_process();
        let poll_cost = if in_process { 1 } else { IO_POLL_COST };
        let mut polls_left: u32 = 0;
        // A turn's inputs, taken from the inbox before any is stepped (see `Replica::warm`).
        let mut inbox: Vec<Cmd<S>> = Vec::new();
        let runtime = tokio::runtime::Handle::current().metrics();
        loop {
            self.loaded = false;
            // Biased: no random draw per loop, and replies before requests. Replies cannot
            // keep coming without new requests (they answer appends, which carry requests), so
            // the inbox is never starved; the other way round, a stream of requests would hold
            // back the acknowledgements that commit them.
            tokio::select! {
                biased;
                Some(done) = calls.next(), if !calls.is_empty() => {
                    let now = self.start_turn();
                    self.returned(now, done);
                    // Every other reply already in joins this turn.
                    self.take_ready(now, &mut calls);
                }
                taken = rx.take(&mut inbox, INPUTS_PER_TURN_MAX) => {
                    if taken == 0 {
                        break;
                    }
                    // Let the tasks that are ready beside us run first: the clients woken by
                    // the last turn's replies queue their next writes, and this turn takes
                    // them all as one batch. Without it the scheduler runs the core as soon as
                    // the first client writes (tokio polls a just-woken task next) and turns
                    // carry one or two writes each: -m 1 in replica-bench went from 450 k to
                    // 800 k writes/s with this line. An idle runtime returns at once.
                    yield_turn(in_process).await;
                    let now = self.start_turn();
                    rx.try_take(&mut inbox, INPUTS_PER_TURN_MAX);
                    // Touch the memory the inputs will need before stepping any of them, so
                    // that the cache misses (the dedup index's, one per write) overlap instead
                    // of queueing one behind the other.
                    for cmd in &inbox {
                        if let Cmd::Input(input) = cmd {
                            self.replica.warm(input);
                        }
                    }
                    for (taken, cmd) in (1..).zip(inbox.drain(..)) {
                        if !self.process(now, cmd) {
                            return;
                        }
                        // Send the batch so far if a secondary can take it, rather than at the
                        // end of the turn: it then works on it while we take the rest.
                        if taken % TURN_SEND_INPUTS == 0 && self.replica.can_send_append() {
                            if !self.execute(&mut calls).await {
                                return;
                            }
                            // A call goes out when first polled: poll the new ones now (and
                            // take any reply that is in already).
                            self.take_ready(now, &mut calls);
                        }
                    }
                }
                // Nothing was ready: look again after the other ready tasks ran, until the
                // `idle_polls` budget is spent, before sleeping (`yield_turn` is ready only the
                // second time it is polled; every other branch is cancel-safe). Not while
                // tasks wait in the runtime's shared queue: the worker has work, so it will not
                // sleep, and polling is pointless. It would even crowd them out: a worker takes
                // from the shared queue only every few dozen polls while its own queue holds
                // anything, and a spinning replica is always there. The shared queue is where
                // the woken clients overflow once a worker's own queue (256 tasks) is full:
                // `replica-bench -c 256 --threads 1` polled 2.7 times per write without this
                // check and batched 155 writes per append instead of 256.
                _ = yield_turn(in_process), if polls_left > 0 && runtime.global_queue_depth() == 0 => {
                    polls_left = polls_left.saturating_sub(poll_cost);
                    self.metrics.idle_polls.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            // Poll under load only: a primary with a pipeline of writes waiting, a secondary
            // fed batches. Light traffic (a write at a time) and heartbeats never poll, and a
            // primary whose pipeline drains stops at once.
            let waiting = self.replica.writes_waiting();
            if self.loaded || waiting >= POLL_LOAD_MIN {
                polls_left = idle_polls;
            } else if self.replica.role() == Role::Primary {
                polls_left = 0;
            }
            if !self.execute(&mut calls).await {
                break;
            }
        }
    }

    /// Poll the calls in flight once, without waiting: each that has finished feeds its
    /// outcome to the replica, and each not yet polled goes out.
    fn take_ready(&mut self, now: u64, calls: &mut Calls) {
        while let Some(Some(done)) = calls.next().now_or_never() {
            self.returned(now, done);
        }
    }

    /// Feed a finished call's outcome to the replica; time it if it was an append.
    fn returned(&mut self, now: u64, (input, sent): (Input<Responder>, Option<Instant>)) {
        if let (Some(sent), Input::Response { .. }) = (sent, &input) {
            self.metrics
                .replication_seconds
                .observe(self.turn.saturating_duration_since(sent).as_secs_f64());
        }
        self.replica.step(now, input);
    }

    /// Returns false when the node must stop.
    fn process(&mut self, now: u64, cmd: Cmd<S>) -> bool {
        match cmd {
            Cmd::Encoded { bytes, reply } => match message::decode(&bytes) {
                Ok(msg) => {
                    let reply = Responder::Encoded(reply);
                    return self.process(now, Cmd::Input(Input::Request { reply, msg }));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Input(input) => {
                if let Input::Request { msg, .. } = &input {
                    if let Body::Append(a) = &msg.body {
                        self.loaded |= a.entries.len() >= POLL_LOAD_MIN;
                    }
                }
                self.replica.step(now, input)
            }
            Cmd::Status(tx) => {
                let _ = tx.send(self.replica.status());
            }
            Cmd::Inspect(job) => job(self.replica.state_machine()),
            Cmd::Fatal(reason) => {
                tracing::error!(node = %self.id, %reason, "storage failed; replica halts and needs a full copy");
                return false;
            }
        }
        true
    }

    /// Execute the replica's outputs; with an inline store, run its operations and feed back
    /// their completion until the replica has nothing more to say. Returns false when the node
    /// must stop (the store failed).
    async fn execute(&mut self, calls: &mut Calls) -> bool {
        loop {
            let mut ops = Vec::new();
            for out in self.replica.take_outputs() {
                match out {
                    Output::Call { to, kind, msg } => self.call(calls, to, kind, msg),
                    Output::Respond { reply, msg } => {
                        match &msg.body {
                            Body::WriteReply(Ok(_)) => self
                                .metrics
                                .writes_committed
                                .fetch_add(1, Ordering::Relaxed),
                            Body::WriteReply(Err(_)) => {
                                self.metrics.writes_refused.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => 0,
                        };
                        reply.send(msg);
                    }
                    Output::Store { seq, op } => match &self.store {
                        StoreDriver::Task(tx) => {
                            let _ = tx.send((seq, op));
                        }
                        StoreDriver::Inline(_) => ops.push((seq, op)),
                    },
                    Output::Event(ev) => {
                        let counter = match &ev {
                            Event::ElectionStarted { .. } => Some(&self.metrics.elections_started),
                            Event::ElectionWon { .. } => Some(&self.metrics.elections_won),
                            Event::SnapshotSent { .. } => Some(&self.metrics.snapshots_sent),
                            Event::SnapshotInstalled { .. } => {
                                Some(&self.metrics.snapshots_installed)
                            }
                            _ => None,
                        };
                        if let Some(c) = counter {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        log_event(&self.id, &ev);
                    }
                }
            }
            let StoreDriver::Inline(store) = &mut self.store else {
                return true;
            };
            if ops.is_empty() {
                return true;
            }
            // An inline store never waits, so its "sync" is not timed.
            match execute_ops(store, ops, &self.metrics, false).await {
                Ok(seq) => {
                    // Still this turn: the store took no time worth a clock read.
                    let now = self.now();
                    self.replica.step(now, Input::Persisted { seq });
                }
                // The same halt as a failure reported by the store task.
                Err(e) => return self.process(self.now(), Cmd::Fatal(e.to_string())),
            }
        }
    }

    /// Start an outbound call; its outcome comes back through `calls`.
    fn call(&self, calls: &mut Calls, to: NodeId, kind: CallKind, msg: Message) {
        let (transport, metrics) = (self.transport.clone(), self.metrics.clone());
        let sent = match &msg.body {
            Body::Append(a) if !a.entries.is_empty() => {
                metrics.append_batch_entries.observe(a.entries.len() as f64);
                Some(self.turn)
            }
            _ => None,
        };
        let full_copy = matches!(msg.body, Body::InstallSnapshot(_));
        let peer = to.clone();
        let chunk_bytes = self.copy_chunk_bytes;
        let outcome = async move {
            let result = if full_copy {
                copy::send(&*transport, &to, msg, chunk_bytes, &metrics).await
            } else {
                transport.call(&to, msg).await
            };
            let input = match result {
                Ok(msg) => Input::Response { from: to, msg },
                Err(e) => {
                    tracing::trace!(peer = %to, error = %e, "call failed");
                    metrics.calls_failed.fetch_add(1, Ordering::Relaxed);
                    Input::CallFailed { to, kind }
                }
            };
            (input, sent)
        };
        if full_copy {
            // A full copy can take a while to encode: not on the replica's task.
            let task = tokio::spawn(outcome);
            calls.push(
                async move {
                    task.await
                        .unwrap_or((Input::CallFailed { to: peer, kind }, None))
                }
                .boxed(),
            );
        } else {
            calls.push(outcome.boxed());
        }
    }
}

fn log_event(node: &NodeId, ev: &Event) {
    match ev {
        Event::RoleChanged {
            role,
            epoch,
            primary,
        } => {
            tracing::info!(%node, %role, epoch, primary = ?primary, "role changed")
        }
        Event::InSyncChanged { in_sync } => tracing::info!(%node, ?in_sync, "in-sync set changed"),
        Event::ElectionStarted { epoch } => tracing::info!(%node, epoch, "election started"),
        Event::ElectionWon { epoch } => tracing::info!(%node, epoch, "election won"),
        Event::SnapshotSent { to, last } => {
            tracing::info!(%node, %to, index = last.index, "full copy sent")
        }
        Event::SnapshotInstalled { last } => {
            tracing::info!(%node, index = last.index, "full copy installed")
        }
        Event::SnapshotTaken { last } => {
            tracing::debug!(%node, index = last.index, "snapshot taken")
        }
        Event::ServiceAdded { address } => tracing::info!(%node, %address, "service joined"),
        Event::ServiceRemoved { address } => tracing::info!(%node, %address, "service removed"),
        Event::SnapshotRejected { reason } => tracing::warn!(%node, %reason, "snapshot rejected"),
    }
}

/// Send the core a tick every `tick`, through its inbox like any other input, until the core
/// stops or every handle to the node is gone (the sender is weak: it does not keep the inbox
/// open).
///
/// A task of its own rather than a timer in the core's loop: the loop runs once per turn and
/// once per idle poll, and polling an `Interval` there cost about 150 instructions each time,
/// 4.5% of the write path at `replica-bench -c 256` (callgrind).
async fn run_ticker<S>(tx: WeakInboxSender<Cmd<S>>, tick: Duration) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        if tx.send(Cmd::Input(Input::Tick)).is_err() {
            return;
        }
    }
}

/// Most operations executed before one sync.
const STORE_OPS_PER_SYNC_MAX: usize = 1024;

async fn run_store<S, L: LogStore>(
    mut store: L,
    mut rx: mpsc::UnboundedReceiver<(u64, StoreOp)>,
    tx: InboxSender<Cmd<S>>,
    metrics: Arc<NodeMetrics>,
) {
    while let Some((seq, op)) = rx.recv().await {
        let mut batch = vec![(seq, op)];
        while batch.len() < STORE_OPS_PER_SYNC_MAX {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let cmd = match execute_ops(&mut store, batch, &metrics, true).await {
            Ok(seq) => Cmd::Input(Input::Persisted { seq }),
            Err(e) => Cmd::Fatal(e.to_string()),
        };
        let fatal = matches!(cmd, Cmd::Fatal(_));
        if tx.send(cmd).is_err() || fatal {
            return;
        }
    }
}

/// Execute a run of operations in order, then sync once if any appended (group commit).
/// Returns the sequence number of the last one, now durable. `time_sync`: observe how long the
/// sync took (not for an inline store, whose sync does not wait: two clock reads per turn saved).
async fn execute_ops<L: LogStore>(
    store: &mut L,
    batch: Vec<(u64, StoreOp)>,
    metrics: &NodeMetrics,
    time_sync: bool,
) -> Result<u64, StorageError> {
    let (mut last, ops) = (0, batch.len());
    let mut needs_sync = false;
    for (seq, op) in batch {
        needs_sync |= matches!(op, StoreOp::Append(_));
        store.execute_owned(op).await?;
        last = seq;
    }
    if needs_sync {
        let started = time_sync.then(Instant::now);
        store.sync().await?;
        if let Some(started) = started {
            metrics
                .store_sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        metrics.store_ops_per_sync.observe(ops as f64);
    }
    Ok(last)
}

/// Let the other tasks ready on this worker run, then run again: with an in-process
/// transport by [`reschedule`], otherwise by `tokio::task::yield_now`, which also gives the
/// I/O driver a turn — over sockets, that turn is how the next request is seen at all.
async fn yield_turn(in_process: bool) {
    if in_process {
        reschedule().await;
    } else {
        tokio::task::yield_now().await;
    }
}

/// Let the other tasks ready on this worker run, then run again: pending the first time it is
/// polled, after waking its own task; ready the second time.
///
/// Not `tokio::task::yield_now`: that one holds the wake back until the worker has nothing else
/// to run and then polls the I/O driver first, so on a worker with nothing else to run every
/// yield cost an `epoll_wait` system call and a clock read. With replicas in one process
/// nothing arrives through the driver: `replica-bench -m 3 -c 64` made 415,000 `epoll_wait`
/// calls for 500,000 writes with `yield_now`, 42,000 with this. A task woken while it runs
/// goes to the back of its worker's queue (tokio treats it as a yield), so the ready tasks
/// beside it still run first.
fn reschedule() -> impl std::future::Future<Output = ()> {
    let mut woke = false;
    std::future::poll_fn(move |cx| {
        if woke {
            return std::task::Poll::Ready(());
        }
        woke = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}
