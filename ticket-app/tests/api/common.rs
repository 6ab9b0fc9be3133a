//! A small in-process cluster of [`TicketMachine`] replicas (the ticket equivalent of
//! `replica_core::testing::Cluster`) and helpers to call routers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use replica_core::{
    Client, ClientConfig, Config, MemLogStore, MemNetwork, MemTransport, Node, NodeHandle, NodeId,
    NodeOptions, Role, Status,
};
use serde_json::Value;
use ticket_app::{frontend_router, replica_router, TicketMachine};
use tower::ServiceExt;

/// How long a wait may take before the test fails (simulated time under `start_paused`).
pub const WAIT_MAX: Duration = Duration::from_secs(60);

struct Slot {
    id: NodeId,
    store: MemLogStore,
    handle: Option<NodeHandle<TicketMachine>>,
}

/// `n` replicas named `r0..`, `r0` the initial primary, on one [`MemNetwork`].
pub struct TicketCluster {
    pub net: MemNetwork,
    config: Config,
    slots: Mutex<Vec<Slot>>,
}

impl TicketCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Config::default()).await
    }

    pub async fn start_with(n: usize, config: Config) -> Self {
        let cluster = TicketCluster {
            net: MemNetwork::new(11),
            config,
            slots: Mutex::new(Vec::new()),
        };
        for i in 0..n {
            let id = NodeId::new(format!("r{i}"));
            cluster.slots().push(Slot {
                id,
                store: MemLogStore::new(),
                handle: None,
            });
            cluster.boot(i).await;
        }
        cluster
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn boot(&self, i: usize) {
        let (id, store) = {
            let slots = self.slots();
            (slots[i].id.clone(), slots[i].store.clone())
        };
        let opts = NodeOptions {
            id: id.clone(),
            config: self.config.clone(),
            state_machine: TicketMachine::new(),
            store,
            transport: self.net.transport(id.clone()),
            initial_primary: i == 0,
            seeds: if i == 0 {
                Vec::new()
            } else {
                vec![NodeId::new("r0")]
            },
            rng_seed: 500 + i as u64,
        };
        let handle = Node::start(opts).await.unwrap();
        self.net.register(id, Arc::new(handle.clone()));
        self.slots()[i].handle = Some(handle);
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.slots().iter().map(|s| s.id.clone()).collect()
    }

    /// Replica `i`'s handle; panics if it is crashed.
    pub fn node(&self, i: usize) -> NodeHandle<TicketMachine> {
        self.slots()[i].handle.clone().expect("replica is running")
    }

    /// Running replicas' handles.
    pub fn running(&self) -> Vec<NodeHandle<TicketMachine>> {
        self.slots()
            .iter()
            .filter_map(|s| s.handle.clone())
            .collect()
    }

    /// Kill replica `i` like `kill -9`.
    pub fn crash(&self, i: usize) {
        let mut slots = self.slots();
        self.net.unregister(&slots[i].id);
        if let Some(h) = slots[i].handle.take() {
            h.stop();
        }
        slots[i].store.crash();
    }

    /// A front end named `name` with a default client.
    pub fn frontend(&self, name: &str) -> Router {
        self.frontend_with(
            name,
            ClientConfig {
                generation: 1,
                ..ClientConfig::default()
            },
        )
    }

    pub fn frontend_with(&self, name: &str, cfg: ClientConfig) -> Router {
        frontend_router(self.client(name, cfg))
    }

    pub fn client(&self, name: &str, cfg: ClientConfig) -> Client<MemTransport> {
        let id = NodeId::new(name);
        let client = Client::new(id.clone(), self.net.transport(id.clone()), self.ids(), cfg);
        self.net.register(id, Arc::new(client.clone()));
        client
    }

    /// The read routes and `/status` of replica `i`, with the JSON fallbacks a node adds.
    pub fn replica(&self, i: usize) -> Router {
        ticket_app::api::with_json_fallbacks(replica_router(self.node(i)))
    }

    pub async fn statuses(&self) -> Vec<Status> {
        let mut out = Vec::new();
        for h in self.running() {
            if let Ok(s) = h.status().await {
                out.push(s);
            }
        }
        out
    }

    /// Wait (at most [`WAIT_MAX`]) until `cond` holds on the running replicas' statuses.
    pub async fn wait_for(&self, what: &str, mut cond: impl FnMut(&[Status]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            let st = self.statuses().await;
            if cond(&st) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}\n{st:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until a primary has `n` replicas in sync and everyone applied its commits.
    pub async fn wait_in_sync(&self, n: usize) {
        self.wait_for(&format!("{n} replicas in sync"), |st| {
            let Some(p) = primary_of(st) else {
                return false;
            };
            p.in_sync.len() == n
                && st
                    .iter()
                    .all(|s| s.epoch == p.epoch && s.applied.index >= p.commit)
        })
        .await;
    }

    /// Wait until the primary has committed everything in its log and every running replica
    /// has applied exactly that.
    pub async fn wait_converged(&self) {
        self.wait_for("replicas converged", |st| {
            let Some(p) = primary_of(st) else {
                return false;
            };
            p.commit == p.last.index
                && st
                    .iter()
                    .all(|s| s.applied == p.applied && s.applied.index == p.commit)
        })
        .await;
    }

    /// Every running replica's applied state.
    pub async fn states(&self) -> Vec<(NodeId, TicketMachine)> {
        let mut out = Vec::new();
        for h in self.running() {
            let m = h.inspect(|m: &TicketMachine| m.clone()).await.unwrap();
            out.push((h.id().clone(), m));
        }
        out
    }

    /// Wait for convergence, then check that every replica holds the same valid state, and
    /// return it.
    pub async fn converged_state(&self) -> TicketMachine {
        self.wait_converged().await;
        let states = self.states().await;
        let (first_id, first) = &states[0];
        for (id, m) in &states {
            m.check_invariants().unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(m, first, "{id} differs from {first_id}");
        }
        first.clone()
    }
}

fn primary_of(st: &[Status]) -> Option<&Status> {
    st.iter()
        .filter(|s| s.role == Role::Primary)
        .max_by_key(|s| s.epoch)
}

/// A response: its status and its body, which must be JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The `error` string of an error body; panics when the body is not `{"error": "<string>"}`.
    pub fn error(&self) -> &str {
        let obj = self
            .body
            .as_object()
            .unwrap_or_else(|| panic!("error body not an object: {}", self.body));
        assert_eq!(obj.len(), 1, "error body has extra fields: {}", self.body);
        match obj.get("error") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => panic!("no error string in {}", self.body),
        }
    }
}

/// Send one request to `app`. Every response of this service is JSON; anything else fails.
pub async fn send(app: &Router, method: Method, path: &str, body: impl Into<Body>) -> Reply {
    let req = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {status} with non-JSON body ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply { status, body }
}

pub async fn get(app: &Router, path: &str) -> Reply {
    send(app, Method::GET, path, Body::empty()).await
}

pub async fn post(app: &Router, path: &str, body: Value) -> Reply {
    send(app, Method::POST, path, body.to_string()).await
}

/// POST and expect 200; returns the body.
pub async fn post_ok(app: &Router, path: &str, body: Value) -> Value {
    let r = post(app, path, body).await;
    assert_eq!(r.status, StatusCode::OK, "POST {path}: {}", r.body);
    r.body
}

/// GET and expect 200; returns the body.
pub async fn get_ok(app: &Router, path: &str) -> Value {
    let r = get(app, path).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.body);
    r.body
}

/// Create a user through `app`; returns its id.
pub async fn create_user(app: &Router, name: &str) -> u64 {
    post_ok(
        app,
        "/users/create",
        serde_json::json!({ "username": name }),
    )
    .await["userid"]
        .as_u64()
        .unwrap()
}

/// Create an event through `app`; returns its id.
pub async fn create_event(app: &Router, userid: u64, name: &str, numtickets: u32) -> u64 {
    let body = serde_json::json!({ "userid": userid, "eventname": name, "numtickets": numtickets });
    post_ok(app, "/events/create", body).await["eventid"]
        .as_u64()
        .unwrap()
}
