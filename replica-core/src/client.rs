//! The front end's side: request ids, hold-and-retry across failover, and read
//! fences.
//!
//! Guarantees, given the replicas' dedup table:
//! - a write is sent under one UUID for its whole life, so however many times it is retried (to
//!   however many primaries) it executes at most once, and the caller gets its first result;
//! - a write that no primary takes before the deadline fails with [`ClientError::Unavailable`]
//!   (it may still have executed: retrying it with [`Client::write_with_id`] and the same id is
//!   safe);
//! - reads never return state older than the newest this client has seen (the **read fence**:
//!   the highest Lamport stamp in any write result or read answer), unless no replica holding it
//!   is reachable — then they fail instead.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::message::{
    self, Body, Message, ReadError, ReadRequest, ServiceEntry, ServiceKind, WriteError,
    WriteRequest, Written,
};
use crate::transport::{Handler, NodeStopped, Transport};
use crate::types::{Epoch, Lamport, NodeId};

/// Client tunables.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long a write or read is held and retried before giving up. Default 10 s: long enough
    /// to ride out a failover (failure timeout + election, about 1.5 s) several times over.
    pub request_deadline_ms: u64,
    /// First pause between retries; doubles up to `retry_backoff_max_ms`. Default 10 ms.
    pub retry_backoff_ms: u64,
    /// Longest pause between retries. Default 200 ms.
    pub retry_backoff_max_ms: u64,
    /// Spread reads over all replicas that have reached the fence (else only the primary).
    /// Default true.
    pub read_from_secondaries: bool,
    /// Send concurrent writes to the primary together, one message per batch: while one batch
    /// is in flight the next forms. Each write keeps its own id, result and retries. Default
    /// true; turn off to send every write on its own.
    pub batch_writes: bool,
    /// Most writes in one batch. Default 256.
    pub write_batch_max: usize,
    /// How often [`Client::run_membership`] greets the cluster. Default 200 ms.
    pub greet_interval_ms: u64,
    /// This front end's incarnation, shown in service lists. Default: a value that increases
    /// across restarts (milliseconds since the Unix epoch at construction).
    pub generation: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        ClientConfig {
            request_deadline_ms: 10_000,
            retry_backoff_ms: 10,
            retry_backoff_max_ms: 200,
            read_from_secondaries: true,
            batch_writes: true,
            write_batch_max: 256,
            greet_interval_ms: 200,
            generation,
        }
    }
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No primary took the write (or no replica served the read) before the deadline. A write
    /// may still have executed; retry it under the same id to find out.
    #[error("no replica could take the request within {waited_ms} ms")]
    Unavailable {
        /// How long the request was held.
        waited_ms: u64,
    },
    /// The cluster refused the request itself (an undecodable command or query).
    #[error("request rejected: {0}")]
    Rejected(String),
    /// A value could not be encoded or a reply decoded.
    #[error("codec error: {0}")]
    Codec(String),
}

/// Counters a front end exports as metrics.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Writes that completed.
    pub writes: AtomicU64,
    /// Attempts beyond the first, over all requests.
    pub retries: AtomicU64,
    /// Writes currently held (being retried).
    pub held: AtomicU64,
    /// Reads served by a secondary.
    pub reads_secondary: AtomicU64,
    /// Reads served by the primary.
    pub reads_primary: AtomicU64,
}

struct View {
    primary: Option<NodeId>,
    /// Epoch of the reply that told us about `primary`; older news does not override it.
    primary_epoch: Epoch,
    replicas: BTreeSet<NodeId>,
    services: Vec<ServiceEntry>,
}

struct Inner<T> {
    me: NodeId,
    transport: T,
    cfg: ClientConfig,
    view: Mutex<View>,
    fence: AtomicU64,
    heartbeat: AtomicU64,
    next_read: AtomicUsize,
    stats: ClientStats,
    batch: Mutex<WriteBatchState>,
}

/// A front end's connection to the cluster. Cheap to clone.
pub struct Client<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Client<T> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> Client<T> {
    /// A client that knows `seeds` (at least the configured primary) and calls as `me` (its own
    /// address, where announcements reach it).
    pub fn new(me: NodeId, transport: T, seeds: Vec<NodeId>, cfg: ClientConfig) -> Self {
        let primary = seeds.first().cloned();
        let view = View {
            primary,
            primary_epoch: 0,
            replicas: seeds.into_iter().collect(),
            services: Vec::new(),
        };
        Client {
            inner: Arc::new(Inner {
                me,
                transport,
                cfg,
                view: Mutex::new(view),
                fence: AtomicU64::new(0),
                heartbeat: AtomicU64::new(0),
                next_read: AtomicUsize::new(0),
                stats: ClientStats::default(),
                batch: Mutex::new(WriteBatchState::default()),
            }),
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.inner.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The primary this client believes in.
    pub fn primary(&self) -> Option<NodeId> {
        self.view().primary.clone()
    }

    /// The last service list received from the cluster.
    pub fn services(&self) -> Vec<ServiceEntry> {
        self.view().services.clone()
    }

    /// The read fence: the highest Lamport stamp this client has seen.
    pub fn fence(&self) -> Lamport {
        self.inner.fence.load(Ordering::Acquire)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    fn raise_fence(&self, lamport: Lamport) {
        self.inner.fence.fetch_max(lamport, Ordering::AcqRel);
    }

    fn msg(&self, body: Body) -> Message {
        Message {
            from: self.inner.me.clone(),
            epoch: 0,
            clock: self.fence(),
            body,
        }
    }

    /// Execute a command once, under a fresh request id. See [`Client::write_with_id`].
    pub async fn write<C: Serialize, O: DeserializeOwned>(
        &self,
        cmd: &C,
    ) -> Result<O, ClientError> {
        self.write_with_id(Uuid::new_v4(), cmd).await
    }

    /// Execute a command at most once under `id`: held and retried with the same id across
    /// primary failures until the deadline. Calling it again with the same id returns the first
    /// result without executing again (within the cluster's dedup retention).
    pub async fn write_with_id<C: Serialize, O: DeserializeOwned>(
        &self,
        id: Uuid,
        cmd: &C,
    ) -> Result<O, ClientError> {
        let command = message::to_bytes(cmd).map_err(|e| ClientError::Codec(e.to_string()))?;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.inner.cfg.request_deadline_ms);
        let mut backoff = self.inner.cfg.retry_backoff_ms;
        let mut attempt = 0u64;
        let stats = &self.inner.stats;
        loop {
            if attempt == 1 {
                stats.held.fetch_add(1, Ordering::Relaxed);
            }
            if attempt > 0 {
                stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            if let Some(to) = self.primary() {
                let req = WriteRequest {
                    id,
                    command: command.clone(),
                };
                match self.attempt_write(&to, req).await {
                    Attempt::Reply { result: Ok(w), .. } => {
                        self.raise_fence(w.lamport);
                        if attempt > 1 {
                            stats.held.fetch_sub(1, Ordering::Relaxed);
                        }
                        stats.writes.fetch_add(1, Ordering::Relaxed);
                        return message::from_bytes(&w.output)
                            .map_err(|e| ClientError::Codec(e.to_string()));
                    }
                    Attempt::Reply {
                        result: Err(e),
                        epoch,
                    } => match e {
                        WriteError::NotPrimary { hint } => self.redirect(&to, hint, epoch),
                        WriteError::Overloaded => {}
                        WriteError::Rejected(reason) => {
                            if attempt > 1 {
                                stats.held.fetch_sub(1, Ordering::Relaxed);
                            }
                            return Err(ClientError::Rejected(reason));
                        }
                    },
                    Attempt::Unexpected => self.forget_primary(&to),
                    Attempt::Failed(e) => {
                        tracing::debug!(primary = %to, error = %e, "write attempt failed");
                        if !e.retry_now() {
                            self.forget_primary(&to);
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                if attempt > 1 {
                    stats.held.fetch_sub(1, Ordering::Relaxed);
                }
                return Err(ClientError::Unavailable {
                    waited_ms: (now - started).as_millis() as u64,
                });
            }
            let pause = Duration::from_millis(backoff).min(deadline - now);
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.inner.cfg.retry_backoff_max_ms);
            if self.primary().is_none() {
                self.discover().await;
            }
        }
    }

    /// One attempt of one write at `to`: alone, or in a batch with the other writes this
    /// client has waiting (see [`ClientConfig::batch_writes`]).
    async fn attempt_write(&self, to: &NodeId, req: WriteRequest) -> Attempt {
        if !self.inner.cfg.batch_writes {
            return self
                .send_writes(to, vec![req])
                .await
                .pop()
                .unwrap_or(Attempt::Unexpected);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_sender = {
            let mut batch = self.inner.batch.lock().unwrap_or_else(|p| p.into_inner());
            batch.queue.push((to.clone(), req, tx));
            !std::mem::replace(&mut batch.sending, true)
        };
        if start_sender {
            // A task, not this caller: a caller may be cancelled (its HTTP client hung up),
            // and the other writes in the batch must not be stranded with it.
            let client = self.clone();
            tokio::spawn(async move { client.drain_batches().await });
        }
        rx.await.unwrap_or(Attempt::Unexpected)
    }

    /// Send waiting writes, one message per destination, until none are waiting. One batch is
    /// in flight at a time; writes that arrive meanwhile form the next (group commit, as the
    /// primary does towards its secondaries).
    async fn drain_batches(self) {
        loop {
            let items = {
                let mut batch = self.inner.batch.lock().unwrap_or_else(|p| p.into_inner());
                if batch.queue.is_empty() {
                    batch.sending = false;
                    return;
                }
                let n = batch.queue.len().min(self.inner.cfg.write_batch_max.max(1));
                batch.queue.drain(..n).collect::<Vec<_>>()
            };
            let mut by_dest: std::collections::BTreeMap<NodeId, Vec<_>> = Default::default();
            for (to, req, tx) in items {
                by_dest.entry(to).or_default().push((req, tx));
            }
            for (to, group) in by_dest {
                let (reqs, txs): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                let outcomes = self.send_writes(&to, reqs).await;
                for (tx, outcome) in txs.into_iter().zip(outcomes) {
                    let _ = tx.send(outcome);
                }
            }
        }
    }

    /// Send writes to `to` in one message and return one outcome per write, in order.
    async fn send_writes(&self, to: &NodeId, reqs: Vec<WriteRequest>) -> Vec<Attempt> {
        let n = reqs.len();
        let body = match <[WriteRequest; 1]>::try_from(reqs) {
            Ok([one]) => Body::Write(one),
            Err(reqs) => Body::WriteBatch(reqs),
        };
        match self.inner.transport.call(to, self.msg(body)).await {
            Ok(Message {
                body: Body::WriteReply(result),
                epoch,
                ..
            }) if n == 1 => {
                vec![Attempt::Reply { result, epoch }]
            }
            Ok(Message {
                body: Body::WriteBatchReply(results),
                epoch,
                ..
            }) if results.len() == n => results
                .into_iter()
                .map(|result| Attempt::Reply { result, epoch })
                .collect(),
            Ok(_) => (0..n).map(|_| Attempt::Unexpected).collect(),
            Err(e) => (0..n).map(|_| Attempt::Failed(e.clone())).collect(),
        }
    }

    /// Answer a query from state at least as new as the read fence.
    ///
    /// Tries one replica (round robin over the replicas we know, when reading from secondaries
    /// is enabled); if it is behind the fence or unreachable, asks the primary, retrying until
    /// the deadline (a new primary may need a moment to apply what it holds).
    pub async fn read<Q: Serialize, A: DeserializeOwned>(
        &self,
        query: &Q,
    ) -> Result<A, ClientError> {
        let query = message::to_bytes(query).map_err(|e| ClientError::Codec(e.to_string()))?;
        let stats = &self.inner.stats;
        if self.inner.cfg.read_from_secondaries {
            let pick = {
                let view = self.view();
                let n = view.replicas.len().max(1);
                let i = self.inner.next_read.fetch_add(1, Ordering::Relaxed) % n;
                view.replicas.iter().nth(i).cloned()
            };
            if let Some(to) = pick.filter(|p| Some(p) != self.primary().as_ref()) {
                if let Ok(Some(answer)) = self.read_once(&to, &query).await {
                    stats.reads_secondary.fetch_add(1, Ordering::Relaxed);
                    return Ok(answer);
                }
            }
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.inner.cfg.request_deadline_ms);
        let mut backoff = self.inner.cfg.retry_backoff_ms;
        loop {
            if let Some(to) = self.primary() {
                match self.read_once(&to, &query).await {
                    Ok(Some(answer)) => {
                        stats.reads_primary.fetch_add(1, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Ok(None) => {}
                    Err(ReadFailure::Rejected(r)) => return Err(ClientError::Rejected(r)),
                    Err(ReadFailure::Codec(r)) => return Err(ClientError::Codec(r)),
                    Err(ReadFailure::Unreachable) => self.forget_primary(&to),
                    Err(ReadFailure::Transient) => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unavailable {
                    waited_ms: (now - started).as_millis() as u64,
                });
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(backoff).min(deadline - now)).await;
            backoff = (backoff * 2).min(self.inner.cfg.retry_backoff_max_ms);
            if self.primary().is_none() {
                self.discover().await;
            }
        }
    }

    /// One read attempt: `Ok(None)` when the replica is behind the fence.
    async fn read_once<A: DeserializeOwned>(
        &self,
        to: &NodeId,
        query: &bytes::Bytes,
    ) -> Result<Option<A>, ReadFailure> {
        let req = self.msg(Body::Read(ReadRequest {
            query: query.clone(),
            fence: self.fence(),
        }));
        match self.inner.transport.call(to, req).await {
            Ok(Message {
                body: Body::ReadReply(Ok(r)),
                ..
            }) => {
                self.raise_fence(r.applied);
                message::from_bytes(&r.answer)
                    .map(Some)
                    .map_err(|e| ReadFailure::Codec(e.to_string()))
            }
            Ok(Message {
                body: Body::ReadReply(Err(ReadError::Behind { .. })),
                ..
            }) => Ok(None),
            Ok(Message {
                body: Body::ReadReply(Err(ReadError::Rejected(r))),
                ..
            }) => Err(ReadFailure::Rejected(r)),
            // A transient failure ("retry now") keeps the primary; anything else (unreachable,
            // rejected, an answer of the wrong kind) means looking for another one.
            Err(e) if e.retry_now() => Err(ReadFailure::Transient),
            Ok(_) | Err(_) => Err(ReadFailure::Unreachable),
        }
    }

    fn redirect(&self, from: &NodeId, hint: Option<NodeId>, epoch: Epoch) {
        let mut view = self.view();
        match hint {
            Some(h) if h != *from => {
                if epoch >= view.primary_epoch {
                    view.primary_epoch = epoch;
                    view.replicas.insert(h.clone());
                    view.primary = Some(h);
                }
            }
            _ => {
                if view.primary.as_ref() == Some(from) {
                    view.primary = None;
                }
            }
        }
    }

    fn forget_primary(&self, who: &NodeId) {
        let mut view = self.view();
        if view.primary.as_ref() == Some(who) {
            view.primary = None;
        }
    }

    fn my_entry(&self) -> ServiceEntry {
        ServiceEntry {
            kind: ServiceKind::Frontend,
            address: self.inner.me.clone(),
            primary: false,
            generation: self.inner.cfg.generation,
            heartbeat: self.inner.heartbeat.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Greet the primary (or, not knowing one, every replica we know) with our service entry,
    /// and learn the service list and the primary from the answers — the seed's
    /// `POST /greet/frontend`.
    pub async fn discover(&self) {
        let targets: Vec<NodeId> = {
            let view = self.view();
            match &view.primary {
                Some(p) => vec![p.clone()],
                None => view.replicas.iter().cloned().collect(),
            }
        };
        let me = self.my_entry();
        let mut calls = tokio::task::JoinSet::new();
        for to in targets {
            let (client, req) = (self.clone(), self.msg(Body::Gossip(vec![me.clone()])));
            calls.spawn(async move {
                let result = client.inner.transport.call(&to, req).await;
                (to, result)
            });
        }
        let mut any_ok = false;
        while let Some(joined) = calls.join_next().await {
            let Ok((to, result)) = joined else { continue };
            match result {
                Ok(Message {
                    body: Body::Services(list),
                    epoch,
                    ..
                }) => {
                    any_ok = true;
                    self.learn(epoch, list);
                }
                _ => self.forget_primary(&to),
            }
        }
        if !any_ok && self.primary().is_none() {
            tracing::debug!("no replica answered the greeting");
        }
    }

    fn learn(&self, epoch: Epoch, list: Vec<ServiceEntry>) {
        let mut view = self.view();
        for e in list.iter().filter(|e| e.kind == ServiceKind::Replica) {
            view.replicas.insert(e.address.clone());
        }
        if let Some(p) = list
            .iter()
            .find(|e| e.primary && e.kind == ServiceKind::Replica)
        {
            if epoch >= view.primary_epoch || view.primary.is_none() {
                view.primary_epoch = epoch;
                view.primary = Some(p.address.clone());
            }
        }
        // Replicas the cluster no longer lists are forgotten, but never the last one we know.
        let listed: BTreeSet<NodeId> = list
            .iter()
            .filter(|e| e.kind == ServiceKind::Replica)
            .map(|e| e.address.clone())
            .collect();
        if !listed.is_empty() {
            view.replicas = listed;
        }
        view.services = list;
    }

    /// Greet the cluster every `greet_interval_ms`, forever: keeps this front end in the
    /// primary's service list and its own view fresh. Spawn it.
    pub async fn run_membership(self) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.inner.cfg.greet_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.discover().await;
        }
    }
}

/// What one write attempt came to.
enum Attempt {
    /// The replica answered (taken, or refused with a reason).
    Reply {
        result: Result<Written, WriteError>,
        epoch: Epoch,
    },
    /// The replica answered something that is not an answer to a write.
    Unexpected,
    /// The call failed in transport.
    Failed(crate::transport::TransportError),
}

/// Writes waiting to be sent, and whether a sender task is running.
#[derive(Default)]
struct WriteBatchState {
    sending: bool,
    queue: Vec<(NodeId, WriteRequest, tokio::sync::oneshot::Sender<Attempt>)>,
}

enum ReadFailure {
    Rejected(String),
    Codec(String),
    Transient,
    Unreachable,
}

#[async_trait]
impl<T: Transport> Handler for Client<T> {
    /// Front ends receive the new primary's announcement (the seed's `POST /election` to front
    /// ends) and service lists.
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        match msg.body {
            Body::Announce => {
                let mut view = self.view();
                if msg.epoch >= view.primary_epoch {
                    tracing::info!(primary = %msg.from, epoch = msg.epoch, "new primary announced");
                    view.primary_epoch = msg.epoch;
                    view.replicas.insert(msg.from.clone());
                    view.primary = Some(msg.from);
                }
            }
            Body::Gossip(list) | Body::Services(list) => self.learn(msg.epoch, list),
            _ => {}
        }
        Ok(self.msg(Body::Ack))
    }
}
