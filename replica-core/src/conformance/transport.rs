//! The `Transport` conformance suite.
//!
//! Checks the requirements written on [`Transport`], [`Handler`] and [`TransportError`]:
//!
//! 1. a call reaches the handler served at `to` (and no other), which receives the message
//!    unchanged, and the call returns *that handler's* reply;
//! 2. every [`Body`] variant crosses the transport unchanged, both ways;
//! 3. a multi-MiB `InstallSnapshot` crosses unchanged, both ways;
//! 4. at least [`CONCURRENT_CALLS`] calls to one peer can be in flight at once, and each gets
//!    the reply to its own request, even when the handler answers them out of order;
//! 5. a call to an address where nothing is served fails with an error whose
//!    [`TransportError::retry_now`] is false (back off);
//! 6. a call to a handler that reports [`NodeStopped`] fails with an error whose `retry_now` is
//!    false;
//! 7. once a server is stopped, calls to it fail and never reach its handler; an error that
//!    says "retry now" (a pooled connection found closed) must, on immediate retry, turn into
//!    one that says "back off" within [`STOPPED_ATTEMPTS_MAX`] attempts.
//!
//! The suite needs no fault injection: it assumes a healthy network, under which a transport
//! must deliver every call.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use crate::message::{
    Append, AppendReply, Body, CopyChunk, CopyChunkReply, ElectionReply, Message, Rank, ReadError,
    ReadOk, ReadRequest, ServiceEntry, ServiceKind, WriteError, WriteRequest, Written,
};
use crate::rng::Rng;
use crate::transport::{Handler, NodeStopped, Transport, TransportError};
use crate::types::{ClusterConfig, DedupRecord, Entry, LogPos, NodeId, Payload, Snapshot};

/// Calls the suite keeps in flight at once to one peer (requirement 4). A primary under load
/// has a call per secondary per batch plus front-end writes in flight; a transport that cannot
/// carry this many concurrently would serialise the cluster.
pub const CONCURRENT_CALLS: u64 = 128;

/// Size of the snapshot state in requirement 3, in bytes: several MiB, like a real full copy.
pub const LARGE_SNAPSHOT_BYTES: usize = 6 << 20;

/// Attempts allowed, in requirement 7, before a stopped server must be reported as "back off".
/// The first call after a stop may go out on a pooled keep-alive connection whose closing the
/// sender has not noticed yet; that fails as a broken connection ("retry now"), and the retry
/// must then find the peer down.
pub const STOPPED_ATTEMPTS_MAX: usize = 3;

/// How long one requirement may take before the suite fails it (a hung call, a deadlock).
pub const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// What the suite needs from a transport implementation besides the [`Transport`] itself: a way
/// to serve handlers at fresh addresses, stop them, and name an address where nothing runs.
///
/// For the in-memory network: register / unregister a handler under a name. For HTTP: bind a
/// listener on `127.0.0.1:0`, serve the cluster routes, shut the server down.
#[async_trait]
pub trait TransportHarness: Send + Sync {
    /// The transport under test.
    type Transport: Transport;

    /// Serve `handler` at a new address and return that address (the `to` of calls to it).
    async fn serve(&self, handler: Arc<dyn Handler>) -> NodeId;

    /// Stop serving at `addr`, as a process that exits would: afterwards, calls to `addr` must
    /// fail and must not reach the handler. Returns once the stop is complete.
    async fn stop(&self, addr: &NodeId);

    /// A transport that sends as `me`.
    fn transport(&self, me: &NodeId) -> Self::Transport;

    /// An address where nothing is served.
    async fn unused_address(&self) -> NodeId;
}

/// Run every `Transport` requirement (see the module docs) against the transport made by
/// `harness`. Panics with a description of the first requirement broken.
pub async fn transport_suite<H: TransportHarness>(harness: &H) {
    check(
        "1: a call reaches the handler at `to` and returns its reply",
        reaches_the_handler_at_to(harness),
    )
    .await;
    check(
        "2: every Body variant round-trips",
        every_body_round_trips(harness),
    )
    .await;
    check(
        "3: a multi-MiB InstallSnapshot round-trips",
        large_snapshot_round_trips(harness),
    )
    .await;
    check(
        "4: concurrent calls never cross replies",
        concurrent_calls_do_not_cross(harness),
    )
    .await;
    check(
        "5: an unknown peer says back off",
        unknown_peer_says_back_off(harness),
    )
    .await;
    check(
        "6: a stopped handler is an error that says back off",
        stopped_handler_says_back_off(harness),
    )
    .await;
    check(
        "7: a stopped server is unreachable",
        stopped_server_is_unreachable(harness),
    )
    .await;
}

async fn check(what: &str, requirement: impl std::future::Future<Output = ()>) {
    tracing::info!(requirement = what, "transport suite");
    if tokio::time::timeout(CHECK_DEADLINE, requirement)
        .await
        .is_err()
    {
        panic!("transport requirement {what}: not done within {CHECK_DEADLINE:?}");
    }
}

/// A handler that records what it receives and answers with the same body, stamped with its
/// own name, and `epoch + 1`, `clock + 1`: a reply no transport could make up by itself.
struct Echo {
    name: NodeId,
    received: Mutex<Vec<Message>>,
}

impl Echo {
    fn new(name: &str) -> Arc<Echo> {
        Arc::new(Echo {
            name: NodeId::new(name),
            received: Mutex::new(Vec::new()),
        })
    }

    fn received(&self) -> Vec<Message> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reply_to(name: &NodeId, msg: &Message) -> Message {
        Message {
            from: name.clone(),
            epoch: msg.epoch.wrapping_add(1),
            clock: msg.clock.wrapping_add(1),
            body: msg.body.clone(),
        }
    }
}

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        let reply = Echo::reply_to(&self.name, &msg);
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        Ok(reply)
    }
}

fn sender() -> NodeId {
    NodeId::new("suite-sender")
}

fn request(clock: u64, body: Body) -> Message {
    Message {
        from: sender(),
        epoch: clock,
        clock,
        body,
    }
}

async fn call_ok<T: Transport>(transport: &T, to: &NodeId, msg: Message, what: &str) -> Message {
    match transport.call(to, msg).await {
        Ok(reply) => reply,
        Err(e) => panic!("{what}: call to {to} failed on a healthy network: {e}"),
    }
}

async fn reaches_the_handler_at_to<H: TransportHarness>(harness: &H) {
    let (a, b) = (Echo::new("handler-a"), Echo::new("handler-b"));
    let addr_a = harness.serve(a.clone()).await;
    let addr_b = harness.serve(b.clone()).await;
    assert_ne!(addr_a, addr_b, "serve must return a new address each time");
    let transport = harness.transport(&sender());

    // Phase: a call to A is answered by A, and B never sees it.
    let msg = request(41, Body::Announce);
    let reply = call_ok(&transport, &addr_a, msg.clone(), "call to A").await;
    assert_eq!(
        reply,
        Echo::reply_to(&a.name, &msg),
        "the reply must be A's reply to this message"
    );
    let got = a.received();
    assert!(!got.is_empty(), "A's handler must have been called");
    assert!(
        got.iter().all(|m| *m == msg),
        "A must receive the message unchanged: {got:?}"
    );
    assert!(b.received().is_empty(), "a call to A must not reach B");

    // Phase: and the other way round.
    let msg = request(42, Body::Ack);
    let reply = call_ok(&transport, &addr_b, msg.clone(), "call to B").await;
    assert_eq!(
        reply,
        Echo::reply_to(&b.name, &msg),
        "the reply must be B's reply to this message"
    );
    assert!(
        a.received().iter().all(|m| m.clock == 41),
        "a call to B must not reach A"
    );

    harness.stop(&addr_a).await;
    harness.stop(&addr_b).await;
}

async fn every_body_round_trips<H: TransportHarness>(harness: &H) {
    let echo = Echo::new("handler-bodies");
    let addr = harness.serve(echo.clone()).await;
    let transport = harness.transport(&sender());
    let bodies = every_body();
    let covered: BTreeSet<usize> = bodies.iter().map(variant).collect();
    assert_eq!(
        covered.len(),
        BODY_VARIANTS,
        "the suite's samples must cover every Body variant"
    );

    for (i, body) in bodies.into_iter().enumerate() {
        let kind = body.kind();
        let msg = request(1000 + i as u64, body);
        let reply = call_ok(&transport, &addr, msg.clone(), kind).await;
        assert_eq!(
            reply,
            Echo::reply_to(&echo.name, &msg),
            "{kind} must come back unchanged"
        );
        assert!(
            echo.received().contains(&msg),
            "{kind} must reach the handler unchanged"
        );
    }
    harness.stop(&addr).await;
}

async fn large_snapshot_round_trips<H: TransportHarness>(harness: &H) {
    let echo = Echo::new("handler-snapshot");
    let addr = harness.serve(echo.clone()).await;
    let transport = harness.transport(&sender());

    let mut rng = Rng::new(0x5EED);
    let state: Vec<u8> = (0..LARGE_SNAPSHOT_BYTES)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let dedup = (0..1000u64)
        .map(|i| DedupRecord {
            id: Uuid::from_u128(rng.next_u128()),
            index: i + 1,
            lamport: 2 * i + 1,
            output: Bytes::from(vec![i as u8; (i % 64) as usize]),
        })
        .collect();
    let snapshot = Snapshot {
        last: LogPos {
            index: 1000,
            epoch: 3,
            lamport: 1999,
            ..LogPos::ZERO
        },
        config: config(),
        state: state.into(),
        dedup,
    };
    let msg = request(7, Body::InstallSnapshot(Box::new(snapshot)));
    let reply = call_ok(&transport, &addr, msg.clone(), "large InstallSnapshot").await;
    assert!(
        reply == Echo::reply_to(&echo.name, &msg),
        "a {LARGE_SNAPSHOT_BYTES}-byte snapshot must come back unchanged"
    );
    assert!(
        echo.received().contains(&msg),
        "the snapshot must reach the handler unchanged"
    );
    harness.stop(&addr).await;
}

/// Answers only once every one of [`CONCURRENT_CALLS`] requests has arrived, then in an order
/// unrelated to arrival.
struct Gate {
    name: NodeId,
    arrived: watch::Sender<u64>,
}

#[async_trait]
impl Handler for Gate {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        let mut n = 0;
        self.arrived.send_modify(|a| {
            *a += 1;
            n = *a;
        });
        let mut rx = self.arrived.subscribe();
        let _ = rx.wait_for(|a| *a >= CONCURRENT_CALLS).await;
        // Shuffle the order of answers: later arrivals yield less and tend to answer first.
        for _ in 0..(n * 7919) % 13 {
            tokio::task::yield_now().await;
        }
        Ok(Echo::reply_to(&self.name, &msg))
    }
}

async fn concurrent_calls_do_not_cross<H: TransportHarness>(harness: &H) {
    let (arrived, _) = watch::channel(0);
    let gate = Arc::new(Gate {
        name: NodeId::new("handler-gate"),
        arrived,
    });
    let addr = harness.serve(gate.clone()).await;
    let transport = Arc::new(harness.transport(&sender()));

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT_CALLS {
        let (transport, addr) = (transport.clone(), addr.clone());
        // Each request is unique (clock, id and payload), so a crossed reply cannot go unseen.
        let msg = request(
            i,
            Body::Write(WriteRequest {
                id: Uuid::from_u128(u128::from(i)),
                command: Bytes::from(vec![i as u8; i as usize]),
            }),
        );
        calls.spawn(async move { (transport.call(&addr, msg.clone()).await, msg) });
    }
    let mut answered = BTreeSet::new();
    while let Some(joined) = calls.join_next().await {
        let (result, msg) = joined.unwrap_or_else(|e| panic!("a call task failed: {e}"));
        let reply = result.unwrap_or_else(|e| panic!("concurrent call {} failed: {e}", msg.clock));
        assert_eq!(
            reply,
            Echo::reply_to(&gate.name, &msg),
            "call {} got another call's reply",
            msg.clock
        );
        answered.insert(msg.clock);
    }
    assert_eq!(
        answered.len() as u64,
        CONCURRENT_CALLS,
        "every call answered once"
    );
    assert!(
        *gate.arrived.borrow() >= CONCURRENT_CALLS,
        "all calls were in flight together"
    );
    harness.stop(&addr).await;
}

async fn unknown_peer_says_back_off<H: TransportHarness>(harness: &H) {
    let transport = harness.transport(&sender());
    let nowhere = harness.unused_address().await;
    match transport.call(&nowhere, request(1, Body::Announce)).await {
        Ok(reply) => panic!("a call to {nowhere}, where nothing is served, succeeded: {reply:?}"),
        Err(e) => assert!(
            !e.retry_now(),
            "an unknown peer must say back off, got: {e}"
        ),
    }
}

/// A handler whose node has stopped.
struct Stopped {
    calls: AtomicU64,
}

#[async_trait]
impl Handler for Stopped {
    async fn handle(&self, _msg: Message) -> Result<Message, NodeStopped> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(NodeStopped)
    }
}

async fn stopped_handler_says_back_off<H: TransportHarness>(harness: &H) {
    let stopped = Arc::new(Stopped {
        calls: AtomicU64::new(0),
    });
    let addr = harness.serve(stopped.clone()).await;
    let transport = harness.transport(&sender());
    match transport.call(&addr, request(1, Body::Announce)).await {
        Ok(reply) => panic!("a call to a stopped handler succeeded: {reply:?}"),
        Err(e) => assert!(
            !e.retry_now(),
            "a stopped handler must say back off, got: {e}"
        ),
    }
    assert!(
        stopped.calls.load(Ordering::SeqCst) >= 1,
        "the stopped handler was asked"
    );
    harness.stop(&addr).await;
}

async fn stopped_server_is_unreachable<H: TransportHarness>(harness: &H) {
    let echo = Echo::new("handler-stopped-server");
    let addr = harness.serve(echo.clone()).await;
    let transport = harness.transport(&sender());

    // Phase: a working call (on HTTP it leaves a pooled connection behind).
    call_ok(
        &transport,
        &addr,
        request(1, Body::Announce),
        "call before the stop",
    )
    .await;
    let seen = echo.received().len();

    // Phase: stop; calls fail, and (after at most a stale connection or two) say back off.
    harness.stop(&addr).await;
    let mut errors: Vec<TransportError> = Vec::new();
    for attempt in 0..STOPPED_ATTEMPTS_MAX {
        match transport
            .call(&addr, request(2 + attempt as u64, Body::Announce))
            .await
        {
            Ok(reply) => panic!("a call to stopped {addr} succeeded: {reply:?}"),
            Err(e) => {
                let back_off = !e.retry_now();
                errors.push(e);
                if back_off {
                    break;
                }
            }
        }
    }
    assert!(
        errors.last().is_some_and(|e| !e.retry_now()),
        "a stopped server must say back off within {STOPPED_ATTEMPTS_MAX} immediate attempts, got: {errors:?}"
    );
    assert_eq!(
        echo.received().len(),
        seen,
        "no call may reach the handler of a stopped server"
    );
}

/// Number of [`Body`] variants; [`variant`] fails to compile when one is added, which is the
/// reminder to give it a sample in [`every_body`].
const BODY_VARIANTS: usize = 18;

fn variant(body: &Body) -> usize {
    match body {
        Body::Append(_) => 0,
        Body::AppendReply(_) => 1,
        Body::InstallSnapshot(_) => 2,
        Body::Write(_) => 3,
        Body::WriteReply(_) => 4,
        Body::Read(_) => 5,
        Body::ReadReply(_) => 6,
        Body::ElectionQuery(_) => 7,
        Body::ElectionReply(_) => 8,
        Body::Announce => 9,
        Body::Gossip(_) => 10,
        Body::Services(_) => 11,
        Body::Ack => 12,
        Body::StaleEpoch => 13,
        Body::WriteBatch(_) => 14,
        Body::WriteBatchReply(_) => 15,
        Body::CopyChunk(_) => 16,
        Body::CopyChunkReply(_) => 17,
    }
}

fn config() -> ClusterConfig {
    ClusterConfig {
        primary: Some(NodeId::new("127.0.0.1:4601")),
        in_sync: ["127.0.0.1:4601", "127.0.0.1:4602"]
            .into_iter()
            .map(NodeId::new)
            .collect(),
    }
}

fn services() -> Vec<ServiceEntry> {
    vec![
        ServiceEntry {
            kind: ServiceKind::Replica,
            address: NodeId::new("127.0.0.1:4601"),
            primary: true,
            generation: 2,
            heartbeat: 99,
        },
        ServiceEntry {
            kind: ServiceKind::Frontend,
            address: NodeId::new("127.0.0.1:4560"),
            primary: false,
            generation: 1,
            heartbeat: u64::MAX,
        },
    ]
}

/// At least one sample of every [`Body`] variant and of every enum inside one (reply variants,
/// payload kinds, error kinds), with edge values (empty, maximal, non-ASCII).
fn every_body() -> Vec<Body> {
    let pos = LogPos {
        index: 17,
        epoch: 3,
        lamport: 40,
        ..LogPos::ZERO
    };
    let entries = vec![
        Entry {
            index: 18,
            lamport: 41,
            epoch: 3,
            id: Uuid::from_u128(1),
            payload: Payload::Command(Bytes::from_static(b"put k v")),
        },
        Entry {
            index: 19,
            lamport: 42,
            epoch: 3,
            id: Uuid::from_u128(u128::MAX),
            payload: Payload::Config(Box::new(config())),
        },
        Entry {
            index: 20,
            lamport: u64::MAX,
            epoch: u64::MAX,
            id: Uuid::nil(),
            payload: Payload::Command(Bytes::new()),
        },
    ];
    let rank = Rank {
        last_epoch: 3,
        last_lamport: 42,
        node: NodeId::new("127.0.0.1:4602"),
    };
    vec![
        Body::Append(Box::new(Append {
            prev: pos,
            entries,
            commit: 17,
            last: 17,
            acked: 0,
        })),
        Body::Append(Box::new(Append {
            prev: LogPos::ZERO,
            entries: Vec::new(),
            commit: 0,
            last: 0,
            acked: 0,
        })),
        Body::AppendReply(AppendReply::Ok {
            matched: 19,
            last: pos,
            seq: 3,
        }),
        Body::AppendReply(AppendReply::Gap { last: pos }),
        Body::AppendReply(AppendReply::Diverged { last: pos }),
        Body::AppendReply(AppendReply::SnapshotBehind { commit: 12 }),
        Body::InstallSnapshot(Box::default()),
        Body::Write(WriteRequest {
            id: Uuid::from_u128(7),
            command: Bytes::from_static("événement ✓".as_bytes()),
        }),
        Body::WriteReply(Ok(Written {
            index: 18,
            lamport: 41,
            output: Bytes::from_static(b"\x00\xff"),
        })),
        Body::WriteReply(Err(WriteError::NotPrimary {
            hint: Some(NodeId::new("127.0.0.1:4603")),
        })),
        Body::WriteReply(Err(WriteError::NotPrimary { hint: None })),
        Body::WriteReply(Err(WriteError::Rejected("bad command".into()))),
        Body::WriteReply(Err(WriteError::Overloaded)),
        Body::WriteBatch(vec![
            WriteRequest {
                id: Uuid::from_u128(8),
                command: Bytes::from_static(b"a"),
            },
            WriteRequest {
                id: Uuid::from_u128(9),
                command: Bytes::new(),
            },
        ]),
        Body::WriteBatchReply(vec![
            Ok(Written {
                index: 19,
                lamport: 43,
                output: Bytes::new(),
            }),
            Err(WriteError::Overloaded),
        ]),
        Body::Read(ReadRequest {
            query: Bytes::from_static(b"get k"),
            fence: 41,
        }),
        Body::ReadReply(Ok(ReadOk {
            answer: Bytes::from_static(b"v"),
            applied: 42,
        })),
        Body::ReadReply(Err(ReadError::Behind { applied: 3 })),
        Body::ReadReply(Err(ReadError::Rejected(String::new()))),
        Body::ElectionQuery(rank.clone()),
        Body::ElectionReply(Box::new(ElectionReply {
            rank,
            in_sync: true,
            confirmed: false,
            primary: Some(NodeId::new("127.0.0.1:4601")),
            config_in_sync: config().in_sync.into_iter().collect(),
            last: pos,
        })),
        Body::Announce,
        Body::Gossip(services()),
        Body::Gossip(Vec::new()),
        Body::Services(services()),
        Body::Ack,
        Body::StaleEpoch,
        Body::CopyChunk(CopyChunk {
            transfer: u64::MAX,
            offset: 4 << 20,
            total: (4 << 20) + 3,
            bytes: Bytes::from_static(&[0, 255, 7]),
        }),
        Body::CopyChunkReply(CopyChunkReply::Holds(4 << 20)),
        Body::CopyChunkReply(CopyChunkReply::Refused("épreuve: ✗".into())),
    ]
}
