//! The cluster routes as an HTTP client sees them: authentication on every path, body limits,
//! error answers, and merging into an application's router.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{key, Server};
use replica_core::message::{decode, encode, WriteRequest};
use replica_core::{Body, Handler, Message, NodeId, NodeStopped};
use replica_http::{cluster_router, cluster_router_with, RouterOptions};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

/// Counts calls and acknowledges them; or, `stopped`, refuses as a stopped node.
struct Counter {
    calls: AtomicU64,
    stopped: bool,
}

impl Counter {
    fn new() -> Arc<Counter> {
        Arc::new(Counter {
            calls: AtomicU64::new(0),
            stopped: false,
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Handler for Counter {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.stopped {
            return Err(NodeStopped);
        }
        Ok(Message {
            from: NodeId::new("counter"),
            body: Body::Ack,
            ..msg
        })
    }
}

fn message(command_bytes: usize) -> Vec<u8> {
    let body = Body::Write(WriteRequest {
        id: Uuid::from_u128(9),
        command: Bytes::from(vec![7; command_bytes]),
    });
    encode(&Message {
        from: NodeId::new("test"),
        epoch: 1,
        clock: 1,
        body,
    })
    .unwrap()
}

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

impl Answer {
    /// The `error` field of a JSON error body (fails the test if the body is not one).
    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "error body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {v}"))
            .to_string()
    }
}

async fn send(method: Method, url: &str, authorization: Option<&str>, body: Vec<u8>) -> Answer {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .request(method, url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body);
    if let Some(a) = authorization {
        request = request.header(AUTHORIZATION, a);
    }
    let response = request.send().await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
    };
    let (www_authenticate, content_type) = (header(WWW_AUTHENTICATE), header(CONTENT_TYPE));
    let status = response.status();
    Answer {
        status,
        www_authenticate,
        content_type,
        body: response.bytes().await.unwrap(),
    }
}

fn bearer() -> String {
    "Bearer test-cluster-key-0123456789".to_string()
}

/// Every request under /cluster without the right key — any path (known, unknown, the prefix
/// itself), any method, any wrong credential — gets 401 with a JSON error and a
/// `WWW-Authenticate` challenge, and the handler is never called.
#[tokio::test]
async fn requests_without_the_key_get_401_and_change_nothing() {
    let counter = Counter::new();
    let server = Server::start(cluster_router(counter.clone(), key())).await;

    let paths = [
        "/cluster/message",
        "/cluster/unknown",
        "/cluster/a/b/c",
        "/cluster",
        "/cluster/",
        "/cluster/message/",
    ];
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    let credentials = [
        None,
        Some("Bearer wrong-key".to_string()),
        Some("Bearer test-cluster-key-012345678".to_string()), // a prefix of the key
        Some("Bearer test-cluster-key-0123456789x".to_string()), // the key and more
        Some("Basic test-cluster-key-0123456789".to_string()),
        Some("test-cluster-key-0123456789".to_string()),
        Some("Bearer".to_string()),
    ];
    for path in paths {
        for method in &methods {
            for credential in &credentials {
                let a = send(
                    method.clone(),
                    &server.url(path),
                    credential.as_deref(),
                    message(10),
                )
                .await;
                let case = format!("{method} {path} with {credential:?}");
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{case}");
                assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"), "{case}");
                assert!(a.error().contains("cluster key"), "{case}: {}", a.error());
            }
        }
    }
    assert_eq!(
        counter.calls(),
        0,
        "no unauthenticated request may reach the handler"
    );

    // With the key, the same paths are answered normally: the 401s were about the key.
    let a = send(
        Method::POST,
        &server.url("/cluster/message"),
        Some(&bearer()),
        message(10),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(counter.calls(), 1);
    let a = send(
        Method::POST,
        &server.url("/cluster/unknown"),
        Some(&bearer()),
        message(10),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("/cluster/unknown"), "{}", a.error());
    let a = send(
        Method::GET,
        &server.url("/cluster/message"),
        Some(&bearer()),
        Vec::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.error().contains("GET"), "{}", a.error());
    assert_eq!(counter.calls(), 1, "404 and 405 do not reach the handler");
    server.stop().await;
}

/// A good request gets 200 and the handler's reply, encoded, as application/octet-stream.
#[tokio::test]
async fn a_valid_message_gets_the_handlers_reply() {
    let counter = Counter::new();
    let server = Server::start(cluster_router(counter.clone(), key())).await;
    let a = send(
        Method::POST,
        &server.url("/cluster/message"),
        Some(&bearer()),
        message(10),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type.as_deref(), Some("application/octet-stream"));
    let reply = decode(&a.body).unwrap();
    assert_eq!((reply.from.as_str(), reply.body), ("counter", Body::Ack));
    assert_eq!(counter.calls(), 1);
    server.stop().await;
}

/// A body over the limit gets 413 (not read, not handled); without the key the same body gets
/// 401: authentication comes before the body is read.
#[tokio::test]
async fn oversized_bodies_get_413() {
    let counter = Counter::new();
    let options = RouterOptions {
        body_bytes_max: 4096,
    };
    let server = Server::start(cluster_router_with(counter.clone(), key(), options)).await;
    let url = server.url("/cluster/message");

    let a = send(Method::POST, &url, Some(&bearer()), message(64 << 10)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!a.error().is_empty());
    let a = send(Method::POST, &url, None, message(64 << 10)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(counter.calls(), 0);

    // Just under the limit is fine.
    let a = send(Method::POST, &url, Some(&bearer()), message(3000)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(counter.calls(), 1);
    server.stop().await;
}

/// Bodies that are not a message this build can decode get 400 with a JSON error, never reach
/// the handler, and the server goes on serving.
#[tokio::test]
async fn undecodable_bodies_get_400() {
    let counter = Counter::new();
    let server = Server::start(cluster_router(counter.clone(), key())).await;
    let url = server.url("/cluster/message");
    let valid = message(10);
    let mut wrong_version = valid.clone();
    wrong_version[0] = 99;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        ("garbage", b"\x01not a message at all".to_vec(), "malformed"),
        ("wrong version", wrong_version, "version"),
        ("truncated", valid[..valid.len() - 3].to_vec(), "malformed"),
        ("json", br#"{"from":"x","epoch":1}"#.to_vec(), "version"),
    ];
    for (name, body, why) in cases {
        let a = send(Method::POST, &url, Some(&bearer()), body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}");
        let error = a.error();
        assert!(
            error.contains("undecodable") && error.contains(why),
            "{name}: {error}"
        );
    }
    assert_eq!(counter.calls(), 0);
    let a = send(Method::POST, &url, Some(&bearer()), valid).await;
    assert_eq!(a.status, StatusCode::OK, "still serving");
    server.stop().await;
}

/// A handler whose node has stopped makes the route answer 503.
#[tokio::test]
async fn a_stopped_node_gets_503() {
    let stopped = Arc::new(Counter {
        calls: AtomicU64::new(0),
        stopped: true,
    });
    let server = Server::start(cluster_router(stopped.clone(), key())).await;
    let a = send(
        Method::POST,
        &server.url("/cluster/message"),
        Some(&bearer()),
        message(10),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.error().contains("stopped"), "{}", a.error());
    assert_eq!(stopped.calls(), 1);
    server.stop().await;
}

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

/// Merged into an application router that has its own state, routes and fallback, the cluster
/// routes keep their authentication (unknown /cluster paths included) and the application's
/// routes and fallback keep working.
#[tokio::test]
async fn merges_into_an_application_router() {
    let counter = Counter::new();
    let app = Router::new()
        .route(
            "/greet",
            get(
                |axum::extract::State(s): axum::extract::State<AppState>| async move { s.greeting },
            ),
        )
        .merge(cluster_router(counter.clone(), key()))
        .fallback(|| async { (StatusCode::NOT_FOUND, "app fallback") })
        .with_state(AppState { greeting: "hello" });
    let server = Server::start(app).await;

    let a = send(Method::GET, &server.url("/greet"), None, Vec::new()).await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"hello"[..]));
    let a = send(Method::GET, &server.url("/elsewhere"), None, Vec::new()).await;
    assert_eq!(
        (a.status, &a.body[..]),
        (StatusCode::NOT_FOUND, &b"app fallback"[..])
    );
    let a = send(Method::GET, &server.url("/clusterfoo"), None, Vec::new()).await;
    assert_eq!(
        (a.status, &a.body[..]),
        (StatusCode::NOT_FOUND, &b"app fallback"[..]),
        "only /cluster/ is claimed"
    );
    for path in ["/cluster/unknown", "/cluster/message", "/cluster"] {
        let a = send(Method::POST, &server.url(path), None, message(10)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let a = send(
        Method::POST,
        &server.url("/cluster/message"),
        Some(&bearer()),
        message(10),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(counter.calls(), 1);
    server.stop().await;
}
