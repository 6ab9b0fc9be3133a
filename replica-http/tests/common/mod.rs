//! Shared by the integration tests: servers on ephemeral 127.0.0.1 ports, and the HTTP harness
//! for the transport conformance suite.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use replica_core::conformance::TransportHarness;
use replica_core::{Handler, NodeId};
use replica_http::{
    cluster_router_with, serve, ClusterKey, HttpOptions, HttpTransport, RouterOptions,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key every test cluster uses.
pub fn key() -> ClusterKey {
    ClusterKey::new("test-cluster-key-0123456789").unwrap()
}

/// A server running on 127.0.0.1 until stopped.
pub struct Server {
    pub addr: NodeId,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Bind 127.0.0.1:0 and serve `router` there.
    pub async fn start(router: Router) -> Server {
        let listener = bind().await;
        Server::start_on(listener, router)
    }

    /// Serve `router` on a listener the caller bound (to know the address before building it).
    pub fn start_on(listener: TcpListener, router: Router) -> Server {
        let addr = NodeId::new(listener.local_addr().unwrap().to_string());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// Shut down: stop accepting, close idle connections, finish requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Serves handlers behind the cluster routes on fresh ephemeral ports.
pub struct HttpHarness {
    pub key: ClusterKey,
    pub servers: Mutex<HashMap<NodeId, Server>>,
}

impl HttpHarness {
    pub fn new() -> Self {
        HttpHarness {
            key: key(),
            servers: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl TransportHarness for HttpHarness {
    type Transport = HttpTransport;

    async fn serve(&self, handler: Arc<dyn Handler>) -> NodeId {
        let router = cluster_router_with(handler, self.key.clone(), RouterOptions::default());
        let server = Server::start(router).await;
        let addr = server.addr.clone();
        self.servers.lock().unwrap().insert(addr.clone(), server);
        addr
    }

    async fn stop(&self, addr: &NodeId) {
        let server = self.servers.lock().unwrap().remove(addr);
        if let Some(server) = server {
            server.stop().await;
        }
    }

    fn transport(&self, _me: &NodeId) -> HttpTransport {
        HttpTransport::with_options(&self.key, HttpOptions::default()).unwrap()
    }

    /// A port that was just bound and released: nothing listens there.
    async fn unused_address(&self) -> NodeId {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        NodeId::new(addr)
    }
}
