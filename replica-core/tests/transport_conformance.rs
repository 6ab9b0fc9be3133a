//! The `Transport` conformance suite on the in-memory network.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use replica_core::conformance::{transport_suite, TransportHarness};
use replica_core::{Handler, MemNetwork, MemTransport, NodeId};

/// Serves handlers by registering them on one [`MemNetwork`] under fresh names.
struct MemHarness {
    net: MemNetwork,
    next: AtomicU64,
}

#[async_trait]
impl TransportHarness for MemHarness {
    type Transport = MemTransport;

    async fn serve(&self, handler: Arc<dyn Handler>) -> NodeId {
        let id = NodeId::new(format!(
            "node-{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        self.net.register(id.clone(), handler);
        id
    }

    async fn stop(&self, addr: &NodeId) {
        self.net.unregister(addr);
    }

    fn transport(&self, me: &NodeId) -> MemTransport {
        self.net.transport(me.clone())
    }

    async fn unused_address(&self) -> NodeId {
        NodeId::new("nobody-serves-here")
    }
}

/// The in-memory transport meets every `Transport` requirement, on a multi-threaded runtime so
/// the concurrent calls really run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_network_passes_the_transport_suite() {
    let harness = MemHarness {
        net: MemNetwork::new(1),
        next: AtomicU64::new(0),
    };
    transport_suite(&harness).await;
}

/// The same suite under paused time on one thread: the scheduling every `Cluster` test uses.
#[tokio::test(start_paused = true)]
async fn mem_network_passes_the_transport_suite_paused() {
    let harness = MemHarness {
        net: MemNetwork::new(2),
        next: AtomicU64::new(0),
    };
    transport_suite(&harness).await;
}

/// The suite itself: each deliberately broken transport below must make it fail, or a green run
/// would prove nothing.
mod the_suite_catches {
    use super::*;
    use replica_core::{Body, Message, Transport, TransportError};
    use tokio::sync::Mutex;

    /// Wraps the in-memory harness, handing out a broken transport.
    struct Broken<F> {
        inner: MemHarness,
        make: F,
    }

    #[async_trait]
    impl<T: Transport, F: Fn(MemTransport) -> T + Send + Sync> TransportHarness for Broken<F> {
        type Transport = T;
        async fn serve(&self, handler: Arc<dyn Handler>) -> NodeId {
            self.inner.serve(handler).await
        }
        async fn stop(&self, addr: &NodeId) {
            self.inner.stop(addr).await
        }
        fn transport(&self, me: &NodeId) -> T {
            (self.make)(self.inner.transport(me))
        }
        async fn unused_address(&self) -> NodeId {
            self.inner.unused_address().await
        }
    }

    async fn run<T: Transport>(make: impl Fn(MemTransport) -> T + Send + Sync) {
        let inner = MemHarness {
            net: MemNetwork::new(3),
            next: AtomicU64::new(0),
        };
        transport_suite(&Broken { inner, make }).await;
    }

    /// Answers every call with an `Ack` of its own making.
    struct MadeUpReply(MemTransport);
    #[async_trait]
    impl Transport for MadeUpReply {
        async fn call(&self, to: &NodeId, msg: Message) -> Result<Message, TransportError> {
            let reply = self.0.call(to, msg).await?;
            Ok(Message {
                body: Body::Ack,
                ..reply
            })
        }
    }

    /// Tells the caller to retry at once when the peer is down.
    struct NeverBacksOff(MemTransport);
    #[async_trait]
    impl Transport for NeverBacksOff {
        async fn call(&self, to: &NodeId, msg: Message) -> Result<Message, TransportError> {
            self.0
                .call(to, msg)
                .await
                .map_err(|e| TransportError::Network(to.clone(), e.to_string()))
        }
    }

    /// Carries one call at a time.
    struct OneAtATime(MemTransport, Arc<Mutex<()>>);
    #[async_trait]
    impl Transport for OneAtATime {
        async fn call(&self, to: &NodeId, msg: Message) -> Result<Message, TransportError> {
            let _one = self.1.lock().await;
            self.0.call(to, msg).await
        }
    }

    /// Loses the last byte of every big message.
    struct Truncates(MemTransport);
    #[async_trait]
    impl Transport for Truncates {
        async fn call(&self, to: &NodeId, mut msg: Message) -> Result<Message, TransportError> {
            if let Body::InstallSnapshot(s) = &mut msg.body {
                s.state.truncate(s.state.len().saturating_sub(1));
            }
            self.0.call(to, msg).await
        }
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "must be A's reply")]
    async fn made_up_replies() {
        run(MadeUpReply).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "an unknown peer must say back off")]
    async fn retry_now_for_a_dead_peer() {
        run(NeverBacksOff).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(
        expected = "requirement 4: concurrent calls never cross replies: not done within"
    )]
    async fn one_call_at_a_time() {
        let lock = Arc::new(Mutex::new(()));
        run(move |t| OneAtATime(t, lock.clone())).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "snapshot must come back unchanged")]
    async fn corrupted_large_messages() {
        run(Truncates).await;
    }
}
