//! The front end served on a real TCP socket, called with a real HTTP client: what the
//! in-process tests cannot see (headers on the wire, body limits on a streamed body, graceful
//! shutdown).

use std::time::Duration;

use replica_core::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::*;

#[tokio::test]
async fn frontend_over_a_real_socket() {
    let cluster = TicketCluster::start_with(2, Config::default()).await;
    cluster.wait_in_sync(2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ticket_app::serve(
        listener,
        cluster.frontend("fe"),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = |p: &str| format!("http://{addr}{p}");

    // Phase: a write and a read, with JSON content types on the wire.
    let r = http
        .post(url("/users/create"))
        .body(r#"{"username": "net"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "userid": 1 }));
    let r = http.get(url("/users/1")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["username"], "net");

    // Phase: bad input over the wire: a JSON 400, a JSON 413 for 1 MiB, a JSON 404.
    let r = http
        .post(url("/users/create"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let r = http
        .post(url("/users/create"))
        .body(vec![b' '; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "error": "request body is larger than 65536 bytes" })
    );
    let r = http.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // Phase: the server still serves, then stops cleanly when asked.
    assert_eq!(http.get(url("/greet")).send().await.unwrap().status(), 200);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
