//! `HttpTransport` against misbehaving and misconfigured peers: every failure maps to the
//! `TransportError` that tells the caller what to do (see the table on `HttpTransport`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::{key, Server};
use replica_core::message::{encode, WriteRequest};
use replica_core::{Body, Handler, Message, NodeId, NodeStopped, Transport, TransportError};
use replica_http::{
    cluster_router, cluster_router_with, ClusterKey, HttpOptions, HttpTransport, RouterOptions,
};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

/// Answers every message with a copy of it.
struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped> {
        Ok(msg)
    }
}

/// Never answers.
struct Silent;

#[async_trait]
impl Handler for Silent {
    async fn handle(&self, _msg: Message) -> Result<Message, NodeStopped> {
        std::future::pending().await
    }
}

fn msg(command_bytes: usize) -> Message {
    let body = Body::Write(WriteRequest {
        id: Uuid::from_u128(1),
        command: Bytes::from(vec![3; command_bytes]),
    });
    Message {
        from: NodeId::new("sender"),
        epoch: 1,
        clock: 1,
        body,
    }
}

fn transport() -> HttpTransport {
    HttpTransport::new(&key()).unwrap()
}

/// The caller's view of an error: which variant, and whether to retry at once.
fn kind(e: &TransportError) -> &'static str {
    match e {
        TransportError::Unreachable(..) => "unreachable",
        TransportError::Network(..) => "network",
        TransportError::Rejected(..) => "rejected",
        TransportError::Codec(..) => "codec",
    }
}

async fn call_err(t: &HttpTransport, to: &NodeId, m: Message) -> TransportError {
    match t.call(to, m).await {
        Ok(reply) => panic!("call to {to} succeeded: {reply:?}"),
        Err(e) => e,
    }
}

/// A transport with another cluster's key is rejected (401): retrying will not help.
#[tokio::test]
async fn wrong_key_is_rejected() {
    let server = Server::start(cluster_router(Arc::new(Echo), key())).await;
    let other = HttpTransport::new(&ClusterKey::new("another-clusters-key").unwrap()).unwrap();
    let e = call_err(&other, &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "rejected", "{e}");
    assert!(!e.retry_now());
    assert!(
        e.to_string().contains("401") && e.to_string().contains("cluster key"),
        "{e}"
    );
    // The right key works on the same server.
    assert!(transport().call(&server.addr, msg(1)).await.is_ok());
    server.stop().await;
}

/// A message larger than the peer accepts is rejected (413), and the connection pool copes
/// with the server refusing the body before reading it: the next call succeeds.
#[tokio::test]
async fn too_large_is_rejected() {
    let options = RouterOptions {
        body_bytes_max: 64 << 10,
    };
    let server = Server::start(cluster_router_with(Arc::new(Echo), key(), options)).await;
    let t = transport();
    let e = call_err(&t, &server.addr, msg(4 << 20)).await;
    assert_eq!(kind(&e), "rejected", "{e}");
    assert!(e.to_string().contains("413"), "{e}");
    let reply = t.call(&server.addr, msg(10)).await.unwrap();
    assert_eq!(reply, msg(10));
    server.stop().await;
}

/// A peer that is not a cluster member (some other HTTP service on that port) is rejected (404).
#[tokio::test]
async fn not_a_cluster_endpoint_is_rejected() {
    let server = Server::start(Router::new().route("/", post(|| async { "hello" }))).await;
    let e = call_err(&transport(), &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "rejected", "{e}");
    assert!(e.to_string().contains("404"), "{e}");
    server.stop().await;
}

/// A 200 whose body is not a message, or is larger than `reply_bytes_max`, is a codec error.
#[tokio::test]
async fn bad_replies_are_codec_errors() {
    let garbage = Router::new().route(
        "/cluster/message",
        post(|| async { Bytes::from_static(b"\x01\xff\xff\xff garbage") }),
    );
    let server = Server::start(garbage).await;
    let e = call_err(&transport(), &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "codec", "{e}");
    server.stop().await;

    let wrong_version = Router::new().route(
        "/cluster/message",
        post(|| async {
            let mut bytes = encode(&msg(1)).unwrap();
            bytes[0] = 200;
            bytes
        }),
    );
    let server = Server::start(wrong_version).await;
    let e = call_err(&transport(), &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "codec", "{e}");
    assert!(e.to_string().contains("version 200"), "{e}");
    server.stop().await;

    let server = Server::start(cluster_router(Arc::new(Echo), key())).await;
    let small = HttpTransport::with_options(
        &key(),
        HttpOptions {
            reply_bytes_max: 1024,
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let e = call_err(&small, &server.addr, msg(4096)).await;
    assert_eq!(kind(&e), "codec", "{e}");
    assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
    assert!(
        small.call(&server.addr, msg(10)).await.is_ok(),
        "small replies still pass"
    );
    server.stop().await;
}

/// A peer that takes the request and never answers: the call times out with a "retry now".
#[tokio::test]
async fn a_hung_peer_times_out_and_says_retry_now() {
    let server = Server::start(cluster_router(Arc::new(Silent), key())).await;
    let options = HttpOptions {
        request_timeout_ms: 200,
        ..HttpOptions::default()
    };
    let t = HttpTransport::with_options(&key(), options).unwrap();
    let e = call_err(&t, &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "network", "{e}");
    assert!(e.retry_now());
    assert!(e.to_string().contains("timed out"), "{e}");
    server.stop().await;
}

/// A peer that reads the request and drops the connection without answering (a crash
/// mid-call): "retry now", the peer may or may not have processed it.
#[tokio::test]
async fn a_connection_closed_mid_call_says_retry_now() {
    let listener = common::bind().await;
    let addr = NodeId::new(listener.local_addr().unwrap().to_string());
    let peer = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"POST /cluster/message HTTP/1.1"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Dropping the socket closes the connection with no response.
    });
    let e = call_err(&transport(), &addr, msg(1)).await;
    assert_eq!(kind(&e), "network", "{e}");
    assert!(e.retry_now());
    peer.await.unwrap();
}

/// Nothing listening, or an id that is not `host:port`: back off.
#[tokio::test]
async fn no_such_peer_says_back_off() {
    let listener = common::bind().await;
    let refused = NodeId::new(listener.local_addr().unwrap().to_string());
    drop(listener);
    let t = transport();
    for to in [
        refused,
        NodeId::new("r1"),
        NodeId::new("127.0.0.1:1/elsewhere"),
    ] {
        let e = call_err(&t, &to, msg(1)).await;
        assert_eq!(kind(&e), "unreachable", "{to}: {e}");
        assert!(!e.retry_now(), "{to}");
    }
}

/// A live server whose node stopped (503): back off.
#[tokio::test]
async fn a_stopped_node_says_back_off() {
    struct Stopped;
    #[async_trait]
    impl Handler for Stopped {
        async fn handle(&self, _msg: Message) -> Result<Message, NodeStopped> {
            Err(NodeStopped)
        }
    }
    let server = Server::start(cluster_router(Arc::new(Stopped), key())).await;
    let e = call_err(&transport(), &server.addr, msg(1)).await;
    assert_eq!(kind(&e), "unreachable", "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    server.stop().await;
}
