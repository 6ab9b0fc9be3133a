//! A ticket cluster over real HTTP on 127.0.0.1 in this process, for the end-to-end benchmark:
//! replicas with the in-memory log store, each serving its read routes and the cluster routes on
//! one port, and one front end.

use std::sync::Arc;

use replica_core::{
    Client, ClientConfig, Config, MemLogStore, Node, NodeHandle, NodeId, NodeOptions, Role,
};
use replica_http::{cluster_router, serve, ClusterKey, HttpTransport};
use ticket_app::api::with_json_fallbacks;
use ticket_app::{frontend_router, replica_router, TicketMachine};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running cluster; [`HttpCluster::stop`] ends it.
pub struct HttpCluster {
    /// `http://<front end>`.
    pub frontend_url: String,
    nodes: Vec<NodeHandle<TicketMachine>>,
    servers: Vec<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    membership: JoinHandle<()>,
}

/// Starting the cluster failed.
#[derive(Debug)]
pub struct StartError(pub String);

fn fail(e: impl std::fmt::Display) -> StartError {
    StartError(e.to_string())
}

fn spawn_server(
    listener: TcpListener,
    router: axum::Router,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

impl HttpCluster {
    /// Start `n` replicas (the first the initial primary) and a front end, and wait until all
    /// replicas are in sync.
    pub async fn start(n: usize) -> Result<HttpCluster, StartError> {
        let key = ClusterKey::new("bench-cluster-key-0123456789").map_err(fail)?;
        let mut ids = Vec::new();
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
            let id = NodeId::new(listener.local_addr().map_err(fail)?.to_string());
            let opts = NodeOptions {
                id: id.clone(),
                config: Config::default(),
                state_machine: TicketMachine::new(),
                store: MemLogStore::new(),
                transport: HttpTransport::new(&key).map_err(fail)?,
                initial_primary: i == 0,
                seeds: ids.first().cloned().into_iter().collect(),
                rng_seed: i as u64,
            };
            let node = Node::start(opts).await.map_err(fail)?;
            let router = with_json_fallbacks(
                replica_router(node.clone())
                    .merge(cluster_router(Arc::new(node.clone()), key.clone())),
            );
            servers.push(spawn_server(listener, router));
            ids.push(id);
            nodes.push(node);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?.to_string();
        let client = Client::new(
            NodeId::new(addr.clone()),
            HttpTransport::new(&key).map_err(fail)?,
            ids,
            ClientConfig::default(),
        );
        let router =
            frontend_router(client.clone()).merge(cluster_router(Arc::new(client.clone()), key));
        servers.push(spawn_server(listener, router));
        let membership = tokio::spawn(client.run_membership());
        let cluster = HttpCluster {
            frontend_url: format!("http://{addr}"),
            nodes,
            servers,
            membership,
        };
        for _ in 0..3000 {
            let st = cluster.nodes[0].status().await.map_err(fail)?;
            if st.role == Role::Primary && st.in_sync.len() == n {
                return Ok(cluster);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(StartError("the cluster did not form within 30 s".into()))
    }

    /// Stop every server and node.
    pub async fn stop(self) {
        self.membership.abort();
        for (stop, task) in self.servers {
            let _ = stop.send(());
            let _ = task.await;
        }
        for n in self.nodes {
            n.stop();
        }
    }
}
