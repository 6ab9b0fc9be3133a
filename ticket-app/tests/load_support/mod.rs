//! A ticket cluster over real HTTP on 127.0.0.1, in this process: replicas with the in-memory
//! log store, each serving its read routes, `/status` and the cluster routes on one port, and
//! one front end serving the public API, the dashboard and the cluster routes (so
//! announcements reach it). Shared by the load and dashboard tests.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use replica_core::{
    Client, ClientConfig, Config, MemLogStore, Node, NodeHandle, NodeId, NodeOptions, Role, Status,
};
use replica_http::{cluster_router, serve, ClusterKey, HttpTransport};
use ticket_app::api::with_json_fallbacks;
use ticket_app::{
    dashboard_router, frontend_router, replica_router, DashboardOptions, TicketMachine,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a condition may take before the test fails (real time: a failover takes about 2 s
/// with the default configuration; the rest is slack for a loaded two-core machine).
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// How often a waiting test re-checks its condition.
pub const POLL: Duration = Duration::from_millis(20);

pub fn key() -> ClusterKey {
    ClusterKey::new("load-test-cluster-key-0123456789").unwrap()
}

/// A router served on 127.0.0.1 until stopped.
pub struct Server {
    pub addr: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn start_on(listener: TcpListener, router: Router) -> Server {
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

pub struct Replica {
    pub id: NodeId,
    pub node: NodeHandle<TicketMachine>,
    server: Server,
}

/// `n` replicas (the first the initial primary) and one front end.
pub struct HttpCluster {
    pub replicas: Vec<Option<Replica>>,
    pub client: Client<HttpTransport>,
    frontend: Server,
    membership: JoinHandle<()>,
}

impl HttpCluster {
    pub async fn start(n: usize) -> HttpCluster {
        Self::start_with(n, |r| r).await
    }

    /// Start, with `wrap` applied to the front end's router (to inject faults in front of it).
    pub async fn start_with(n: usize, wrap: impl FnOnce(Router) -> Router) -> HttpCluster {
        let mut replicas = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let id = NodeId::new(listener.local_addr().unwrap().to_string());
            let opts = NodeOptions {
                id: id.clone(),
                config: Config::default(),
                state_machine: TicketMachine::new(),
                store: MemLogStore::new(),
                transport: HttpTransport::new(&key()).unwrap(),
                initial_primary: i == 0,
                seeds: ids.first().cloned().into_iter().collect(),
                rng_seed: 40 + i as u64,
            };
            let node = Node::start(opts).await.unwrap();
            let router = with_json_fallbacks(
                replica_router(node.clone()).merge(cluster_router(Arc::new(node.clone()), key())),
            );
            let server = Server::start_on(listener, router);
            ids.push(id.clone());
            replicas.push(Some(Replica { id, node, server }));
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fe_addr = listener.local_addr().unwrap().to_string();
        let client = Client::new(
            NodeId::new(fe_addr.clone()),
            HttpTransport::new(&key()).unwrap(),
            ids,
            ClientConfig {
                request_deadline_ms: 20_000,
                ..ClientConfig::default()
            },
        );
        let router = frontend_router(client.clone())
            .merge(cluster_router(Arc::new(client.clone()), key()))
            .merge(dashboard_router(
                client.clone(),
                DashboardOptions::new(fe_addr),
            ));
        let frontend = Server::start_on(listener, wrap(router));
        let membership = tokio::spawn(client.clone().run_membership());
        let cluster = HttpCluster {
            replicas,
            client,
            frontend,
            membership,
        };
        cluster
            .wait_for("a primary with every replica in sync", |st| {
                st.iter()
                    .any(|s| s.role == Role::Primary && s.in_sync.len() == n)
            })
            .await;
        cluster
    }

    /// `http://<front end>`.
    pub fn frontend_url(&self) -> String {
        format!("http://{}", self.frontend.addr)
    }

    pub async fn statuses(&self) -> Vec<Status> {
        let mut out = Vec::new();
        for r in self.replicas.iter().flatten() {
            if let Ok(s) = r.node.status().await {
                out.push(s);
            }
        }
        out
    }

    /// Poll the running replicas' statuses until `cond` holds; fail after [`WAIT_MAX`].
    pub async fn wait_for(
        &self,
        what: &str,
        mut cond: impl FnMut(&[Status]) -> bool,
    ) -> Vec<Status> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let st = self.statuses().await;
            if cond(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{st:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The running primary in the highest epoch: its slot and status.
    pub async fn primary(&self) -> Option<(usize, Status)> {
        let mut best: Option<(usize, Status)> = None;
        for (i, r) in self.replicas.iter().enumerate() {
            let Some(r) = r else { continue };
            if let Ok(s) = r.node.status().await {
                if s.role == Role::Primary && best.as_ref().is_none_or(|(_, b)| s.epoch > b.epoch) {
                    best = Some((i, s));
                }
            }
        }
        best
    }

    /// Crash-stop replica `i`: its node halts and its address stops answering.
    pub async fn kill(&mut self, i: usize) -> NodeId {
        let r = self.replicas[i].take().expect("replica is running");
        r.node.stop();
        r.server.stop().await;
        r.id
    }

    /// Wait until every running replica has applied the primary's whole log.
    pub async fn wait_converged(&self) {
        self.wait_for("replicas converged", |st| {
            let Some(p) = st
                .iter()
                .filter(|s| s.role == Role::Primary)
                .max_by_key(|s| s.epoch)
            else {
                return false;
            };
            p.commit == p.last.index && st.iter().all(|s| s.applied == p.applied)
        })
        .await;
    }

    /// Every running replica's state: valid, and the same on all.
    pub async fn check_replicas_agree(&self) {
        self.wait_converged().await;
        let mut states = Vec::new();
        for r in self.replicas.iter().flatten() {
            let m = r.node.inspect(|m: &TicketMachine| m.clone()).await.unwrap();
            m.check_invariants()
                .unwrap_or_else(|e| panic!("{}: {e}", r.id));
            states.push((r.id.clone(), m));
        }
        for (id, m) in &states {
            assert_eq!(m, &states[0].1, "{id} differs from {}", states[0].0);
        }
    }

    pub async fn shutdown(self) {
        self.membership.abort();
        self.frontend.stop().await;
        for r in self.replicas.into_iter().flatten() {
            r.node.stop();
            r.server.stop().await;
        }
    }
}
