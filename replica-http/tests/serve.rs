//! The serve loop's limits: slow clients are cut off, connections are bounded, and shutdown
//! answers what is in flight but does not wait forever.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{bind, key};
use replica_core::{Body, Handler, Message, NodeId, NodeStopped, Transport};
use replica_http::{cluster_router, serve_with, HttpTransport, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Generous bound for things that must happen (real time; never reached when all is well).
const DEADLINE: Duration = Duration::from_secs(20);

fn ping(clock: u64) -> Message {
    Message {
        from: NodeId::new("client"),
        epoch: 1,
        clock,
        body: Body::Announce,
    }
}

/// Tells the test when a request arrived, then answers once released.
struct Held {
    arrived: mpsc::UnboundedSender<u64>,
    release: Arc<Semaphore>,
    answered: AtomicU64,
}

#[async_trait]
impl Handler for Held {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        let _ = self.arrived.send(msg.clock);
        let permit = self.release.acquire().await.map_err(|_| NodeStopped)?;
        permit.forget();
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(Message {
            body: Body::Ack,
            ..msg
        })
    }
}

fn held() -> (Arc<Held>, mpsc::UnboundedReceiver<u64>) {
    let (arrived, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Held {
            arrived,
            release: Arc::new(Semaphore::new(0)),
            answered: AtomicU64::new(0),
        }),
        rx,
    )
}

/// Serve `handler`'s cluster routes with `options`; returns the address, the stop switch and
/// the serve task.
async fn start(
    handler: Arc<dyn Handler>,
    options: ServeOptions,
) -> (
    NodeId,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = bind().await;
    let addr = NodeId::new(listener.local_addr().unwrap().to_string());
    let (stop, stopped) = oneshot::channel::<()>();
    let router = cluster_router(handler, key());
    let task = tokio::spawn(serve_with(
        listener,
        router,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    (addr, stop, task)
}

/// Read until the peer closes the connection; true if it did within the deadline.
async fn closed_by_peer(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_to_end).await.is_ok()
}

/// A client that opens a connection and trickles an incomplete request is disconnected after
/// `header_read_timeout_ms`, and the server keeps serving others.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (handler, _arrived) = held();
    handler.release.add_permits(100);
    let options = ServeOptions {
        header_read_timeout_ms: 200,
        ..ServeOptions::default()
    };
    let (addr, stop, task) = start(handler.clone(), options).await;

    let mut slow = TcpStream::connect(addr.as_str()).await.unwrap();
    slow.write_all(b"POST /cluster/message HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_peer(&mut slow).await,
        "the server must close a connection whose headers never end"
    );

    let reply = HttpTransport::new(&key())
        .unwrap()
        .call(&addr, ping(1))
        .await
        .unwrap();
    assert_eq!(reply.body, Body::Ack);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// With `connections_max` connections open, another client is not served until one closes.
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let (handler, _arrived) = held();
    handler.release.add_permits(100);
    let options = ServeOptions {
        connections_max: 1,
        ..ServeOptions::default()
    };
    let (addr, stop, task) = start(handler.clone(), options).await;

    // Phase: an idle connection takes the only slot.
    let idle = TcpStream::connect(addr.as_str()).await.unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let call = {
        let (addr, closed) = (addr.clone(), closed.clone());
        tokio::spawn(async move {
            let reply = HttpTransport::new(&key())
                .unwrap()
                .call(&addr, ping(1))
                .await;
            (reply, closed.load(Ordering::SeqCst))
        })
    };
    // While the slot is held the call cannot be answered, however long we wait (this bound can
    // only make the test pass wrongly on a very slow machine, never fail wrongly).
    tokio::pin!(call);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut call)
            .await
            .is_err(),
        "a call was served beyond connections_max"
    );
    assert_eq!(handler.answered.load(Ordering::SeqCst), 0);

    // Phase: the idle connection closes; the waiting call gets the slot.
    closed.store(true, Ordering::SeqCst);
    drop(idle);
    let (reply, after_close) = tokio::time::timeout(DEADLINE, call).await.unwrap().unwrap();
    assert_eq!(reply.unwrap().body, Body::Ack);
    assert!(after_close);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Shutdown answers the request in flight, refuses new connections, and returns.
#[tokio::test]
async fn shutdown_answers_requests_in_flight() {
    let (handler, mut arrived) = held();
    let (addr, stop, task) = start(handler.clone(), ServeOptions::default()).await;
    let transport = HttpTransport::new(&key()).unwrap();

    // Phase: a call is in the handler when the shutdown signal comes.
    let call = {
        let (t, addr) = (transport.clone(), addr.clone());
        tokio::spawn(async move { t.call(&addr, ping(7)).await })
    };
    assert_eq!(arrived.recv().await, Some(7));
    let _ = stop.send(());

    // Phase: new connections are refused once the listener is closed...
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr.as_str()).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never closed"
        );
        tokio::task::yield_now().await;
    }
    // ...while the call in flight still gets its answer.
    handler.release.add_permits(1);
    let reply = call.await.unwrap().unwrap();
    assert_eq!((reply.clock, reply.body), (7, Body::Ack));
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A request that is still unanswered after `shutdown_grace_ms` is dropped: shutdown returns,
/// and the caller sees a broken connection ("retry now").
#[tokio::test]
async fn shutdown_does_not_wait_forever() {
    let (handler, mut arrived) = held();
    let options = ServeOptions {
        shutdown_grace_ms: 100,
        ..ServeOptions::default()
    };
    let (addr, stop, task) = start(handler.clone(), options).await;
    let call = {
        let addr = addr.clone();
        tokio::spawn(async move {
            HttpTransport::new(&key())
                .unwrap()
                .call(&addr, ping(1))
                .await
        })
    };
    assert_eq!(arrived.recv().await, Some(1));
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("shutdown returned")
        .unwrap()
        .unwrap();
    let e = call.await.unwrap().unwrap_err();
    assert!(e.retry_now(), "a dropped connection says retry now: {e}");
    assert_eq!(handler.answered.load(Ordering::SeqCst), 0);
}
