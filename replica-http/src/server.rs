//! The receiving side: the `/cluster/` routes and a `serve` loop.
//!
//! Invariant: no request under `/cluster/` reaches a handler (or has its body read) unless it
//! carries the cluster key. The key check is a layer around the whole nested router, its
//! fallback (unknown paths) and its method-not-allowed answers included, so a route added later
//! cannot forget it.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use replica_core::message::{decode, encode};
use replica_core::Handler;
use serde::Serialize;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::key::ClusterKey;
use crate::{CLUSTER_PREFIX, MESSAGE_ROUTE, OCTET_STREAM};

/// Default for [`RouterOptions::body_bytes_max`]: 64 MiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// Limits of the cluster routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterOptions {
    /// Largest request body accepted, in bytes; a larger one gets 413 and is not read further.
    /// Default 64 MiB.
    ///
    /// Cluster messages carry full snapshots (`InstallSnapshot`), so this must exceed the
    /// largest encoded snapshot of the application, or a secondary that needs a full copy never
    /// receives one. It also bounds the memory one authenticated request can pin (the body is
    /// buffered before decoding). Unauthenticated requests are refused before their body is read.
    pub body_bytes_max: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }
}

/// What every route closes over.
struct Shared {
    handler: Arc<dyn Handler>,
    key: ClusterKey,
}

/// The JSON body of every error answer: `{"error": "<what was wrong>"}`.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, what: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: what.into() })).into_response()
}

/// The cluster routes with default limits, to merge into an application's router. See
/// [`cluster_router_with`].
pub fn cluster_router<S>(handler: Arc<dyn Handler>, key: ClusterKey) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    cluster_router_with(handler, key, RouterOptions::default())
}

/// The cluster routes: `POST /cluster/message` hands one encoded [`replica_core::Message`] to
/// `handler` and answers with its encoded reply.
///
/// Merge the result into the application's own router (`app.merge(cluster_router(..))`); it
/// only claims paths under `/cluster`, and works whatever the application's state type is.
///
/// Answers:
/// - **401** (with `WWW-Authenticate: Bearer`) for any request under `/cluster` — any path, any
///   method, known or not — whose `Authorization` header is not `Bearer <key>`. Nothing else
///   happens: the body is not read and the handler is not called.
/// - **413** when the body exceeds [`RouterOptions::body_bytes_max`].
/// - **400** when the body is not a message this build can decode (wrong version byte,
///   truncated, garbage).
/// - **503** when the handler reports [`replica_core::NodeStopped`].
/// - **404** / **405** for an unknown path or method (after authentication).
/// - **200** with `application/octet-stream`: the reply, encoded with
///   [`replica_core::message::encode`].
///
/// Every error answer has a JSON body `{"error": "..."}`.
pub fn cluster_router_with<S>(
    handler: Arc<dyn Handler>,
    key: ClusterKey,
    options: RouterOptions,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let shared = Arc::new(Shared { handler, key });
    let inner = Router::new()
        .route(MESSAGE_ROUTE, post(message))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.body_bytes_max))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared.clone());
    // `nest` claims `/cluster` and `/cluster/<something>`, but not `/cluster/` itself (its
    // catch-all needs a non-empty tail): that one path gets its own authenticated route, so no
    // path under the prefix falls through to the application's fallback.
    let bare = any(unknown_route).layer(middleware::from_fn_with_state(shared, authenticate));
    Router::new()
        .nest(CLUSTER_PREFIX, inner)
        .route(&format!("{CLUSTER_PREFIX}/"), bare)
}

/// Lets a request through only with the cluster key. Runs before anything reads the body.
async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if shared.key.authorizes(request.headers().get(AUTHORIZATION)) {
        return next.run(request).await;
    }
    tracing::debug!(path = %full_path(&request), method = %request.method(), "cluster request without a valid key");
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong cluster key (expected `Authorization: Bearer <key>`)",
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `POST /cluster/message`: decode, hand to the handler, encode the reply.
async fn message(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            let status = rejection.status();
            tracing::debug!(%status, reason = %rejection.body_text(), "cluster message body refused");
            return error(
                status,
                format!("cannot read the message body: {}", rejection.body_text()),
            );
        }
    };
    let msg = match decode(&bytes) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::debug!(error = %e, len_bytes = bytes.len(), "undecodable cluster message");
            return error(StatusCode::BAD_REQUEST, format!("undecodable message: {e}"));
        }
    };
    let (from, kind) = (msg.from.clone(), msg.body.kind());
    match shared.handler.handle(msg).await {
        Ok(reply) => match encode(&reply) {
            Ok(bytes) => (
                [(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM))],
                bytes,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(%from, kind, error = %e, "cannot encode a reply");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the reply: {e}"),
                )
            }
        },
        Err(stopped) => error(StatusCode::SERVICE_UNAVAILABLE, stopped.to_string()),
    }
}

async fn unknown_route(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no cluster route {}", full_path(&request)),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            full_path(&request)
        ),
    )
}

/// The request's path as the client sent it. Inside the nested router axum strips the
/// `/cluster` prefix; the bare `/cluster/` route sees it whole.
fn full_path(request: &Request) -> String {
    let path = request.uri().path();
    if path.starts_with(CLUSTER_PREFIX) {
        path.to_string()
    } else {
        format!("{CLUSTER_PREFIX}{path}")
    }
}

/// Limits of [`serve_with`]. They protect a server from clients that connect and then say
/// nothing (or trickle their headers): such a client holds a socket and a task until it is cut
/// off, and the cluster port is reachable by anyone who can reach the host, key or no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// A connection must deliver a request's complete headers within this long after it opens,
    /// or after the previous response on it (so it is also the idle keep-alive timeout), or it
    /// is closed. Default 30,000 ms; [`crate::HttpOptions::idle_timeout_ms`] stays below it, so
    /// a peer's pool drops an idle connection before the server closes it under a request.
    pub header_read_timeout_ms: u64,
    /// Most connections served at once; while that many are open, new ones wait in the kernel's
    /// accept queue. Default 4096: far above a cluster's needs (a few per peer and front end),
    /// well below a process's usual file-descriptor limit.
    pub connections_max: usize,
    /// After the shutdown signal, requests in flight get this long to be answered; then their
    /// connections are dropped. Default 5000 ms (a held write answers or gives up well within).
    pub shutdown_grace_ms: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout_ms: 30_000,
            connections_max: 4096,
            shutdown_grace_ms: 5000,
        }
    }
}

/// Pause after an `accept` error other than a connection reset (file descriptors exhausted,
/// out of memory): retrying at once would spin, and the condition usually clears when some
/// connections close.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// [`serve_with`] with default [`ServeOptions`].
pub async fn serve<F>(listener: TcpListener, router: Router, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, router, shutdown, ServeOptions::default()).await
}

/// Serve `router` over HTTP/1.1 on `listener` until `shutdown` completes (mini-redis style: the
/// caller binds, so tests bind `127.0.0.1:0` and read the port back; the caller decides when to
/// stop).
///
/// Connections get `TCP_NODELAY` (cluster messages are small request/response pairs; Nagle's
/// algorithm would add up to 40 ms to each) and the limits of [`ServeOptions`]. On shutdown
/// the listener closes at once (new connections are refused, which peers read as "unreachable"),
/// idle keep-alive connections are closed, and requests in flight are answered within
/// `shutdown_grace_ms`, after which their connections are dropped. Returns `Ok` after a
/// shutdown; accept errors are logged and retried, never returned.
pub async fn serve_with<F>(
    listener: TcpListener,
    router: Router,
    shutdown: F,
    options: ServeOptions,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(options.header_read_timeout_ms));
    let permits = Arc::new(Semaphore::new(options.connections_max.max(1)));
    let (stopping, _) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let mut stopping = stopping.subscribe();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stopping.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.send_replace(true);
    let grace = Duration::from_millis(options.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after the shutdown grace; dropping them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors that concern one incoming connection only (the client gave up before we accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
