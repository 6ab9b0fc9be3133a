//! The `Transport` conformance suite over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod common;

use replica_core::conformance::transport_suite;

/// `HttpTransport` + `cluster_router` meet every `Transport` requirement: each handler behind
/// its own server on an ephemeral port, real sockets, pooled keep-alive connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_passes_the_transport_suite() {
    let harness = common::HttpHarness::new();
    transport_suite(&harness).await;
}
