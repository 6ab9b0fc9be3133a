//! # replica-http
//!
//! The [`replica_core::Transport`] over HTTP: replicas and front ends talk to each other with
//! `POST /cluster/message` requests carrying one encoded [`replica_core::Message`] each, over
//! pooled keep-alive connections, authenticated by a shared [`ClusterKey`].
//!
//! ## Layout
//!
//! - [`HttpTransport`] (`client.rs`): the sending side, one pooled reqwest client; maps every
//!   failure to a [`replica_core::TransportError`] that says whether to back off or retry now.
//! - [`cluster_router`] (`server.rs`): the receiving side, an axum [`axum::Router`] of the
//!   routes under `/cluster/` that an application merges into its own router; plus [`serve`],
//!   which runs a router on a listener the caller bound until a shutdown future completes.
//! - [`ClusterKey`] (`key.rs`): the shared secret, sent as `Authorization: Bearer <key>` and
//!   compared in constant time.
//!
//! ## Wire
//!
//! | | |
//! |---|---|
//! | request | `POST http://<peer host:port>/cluster/message`, `Authorization: Bearer <key>`, `Content-Type: application/octet-stream`, body [`replica_core::message::encode`] |
//! | success | `200`, `application/octet-stream`, the handler's reply encoded the same way |
//! | errors | `401` no/wrong key (any path under `/cluster`), `413` body over the limit, `400` undecodable body, `503` node stopped, `404`/`405`; JSON body `{"error": "..."}` |
//!
//! ## Example
//!
//! A handler served on an ephemeral port, and a call to it:
//!
//! ```
//! use std::sync::Arc;
//! use replica_core::{Body, Handler, Message, NodeId, NodeStopped, Transport};
//! use replica_http::{cluster_router, serve, ClusterKey, HttpTransport};
//!
//! struct Pong;
//!
//! #[async_trait::async_trait]
//! impl Handler for Pong {
//!     async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
//!         Ok(Message { from: NodeId::new("pong"), body: Body::Ack, ..msg })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let key = ClusterKey::new("correct-horse-battery-staple").unwrap();
//!
//! // Server: bind, build the routes (merge them into your app's router), serve.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = NodeId::new(listener.local_addr().unwrap().to_string());
//! let router = axum::Router::new().merge(cluster_router(Arc::new(Pong), key.clone()));
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, router, async { let _ = stopped.await; }));
//!
//! // Client: one transport for every peer.
//! let transport = HttpTransport::new(&key).unwrap();
//! let ping = Message { from: NodeId::new("ping"), epoch: 1, clock: 1, body: Body::Announce };
//! let reply = transport.call(&addr, ping).await.unwrap();
//! assert_eq!((reply.from.as_str(), reply.body), ("pong", Body::Ack));
//!
//! let _ = stop.send(());
//! server.await.unwrap().unwrap();
//! # });
//! ```

mod client;
mod key;
mod server;

pub use client::{BuildError, HttpOptions, HttpTransport};
pub use key::{ClusterKey, KeyError, KEY_BYTES_MAX};
pub use server::{
    cluster_router, cluster_router_with, serve, serve_with, RouterOptions, ServeOptions,
    BODY_BYTES_MAX_DEFAULT,
};

/// Every cluster route lives under this prefix; every request under it needs the cluster key.
pub const CLUSTER_PREFIX: &str = "/cluster";

/// The one message route, relative to [`CLUSTER_PREFIX`]: `POST /cluster/message`.
pub const MESSAGE_ROUTE: &str = "/message";

/// Content type of encoded messages, both ways.
const OCTET_STREAM: &str = "application/octet-stream";
