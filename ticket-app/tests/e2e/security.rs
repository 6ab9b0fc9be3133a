//! What a stranger can do to a running cluster: nothing under `/cluster/` without the key, and
//! nothing but a 400/413 with a JSON error through bad input to the front end.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

/// The visible state: what the front end and every replica answer to the read routes.
async fn visible_state(c: &Cluster) -> Vec<(String, Value)> {
    let mut sources = vec![c.fe()];
    sources.extend(c.running().into_iter().map(|i| c.node_addr(i)));
    let mut out = Vec::new();
    for addr in sources {
        for path in ["/events", "/users/1", "/users/2", "/users/3", "/events/2"] {
            let a = c.http.get(&addr, path).await;
            out.push((format!("{addr}{path}"), json!([a.status.as_u16(), a.body])));
        }
    }
    out
}

/// Every request under `/cluster/` to a replica or the front end, without the key or with a
/// wrong one, gets 401 with a JSON error, whatever the path and method, and changes nothing.
/// With the right key the same garbage body reaches the decoder (400): the key is what decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_refuse_requests_without_the_key() {
    let _serial = serial().await;
    let c = Cluster::start("auth", 3).await;
    let alice = c.create_user("alice").await;
    c.create_event(alice, "gig", 10).await;
    c.wait_converged().await;
    let before = visible_state(&c).await;
    let (_, primary_before) = c.primary().await.unwrap();

    let mut targets = vec![c.fe()];
    targets.extend((0..c.len()).map(|i| c.node_addr(i)));
    let http = c.http.inner();
    for addr in &targets {
        for (method, path) in [
            ("POST", "/cluster/message"),
            ("GET", "/cluster/message"),
            ("GET", "/cluster/status"),
            ("DELETE", "/cluster/"),
            ("POST", "/cluster"),
        ] {
            for auth in [
                None,
                Some("Bearer wrong-key".to_string()),
                Some(format!("Bearer {}x", c.key)),
                Some(format!("Basic {}", c.key)),
                Some(c.key.clone()),
            ] {
                let mut req = http
                    .request(method.parse().unwrap(), format!("http://{addr}{path}"))
                    .body(vec![1u8, 2, 3, 4]);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                let r = req.send().await.unwrap();
                let status = r.status();
                let www = r.headers().get("www-authenticate").cloned();
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {addr}{path} {auth:?}"
                );
                assert_eq!(www.unwrap(), "Bearer");
                assert!(
                    body["error"].as_str().unwrap().contains("cluster key"),
                    "{body}"
                );
            }
        }
        // The right key: past the check, the garbage body is refused by the decoder.
        let r = http
            .post(format!("http://{addr}/cluster/message"))
            .bearer_auth(&c.key)
            .body(vec![1u8, 2, 3, 4])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{addr}");
    }

    // Phase: nothing changed anywhere.
    assert_eq!(visible_state(&c).await, before);
    let (_, primary_after) = c.primary().await.unwrap();
    assert_eq!(
        (
            primary_after.epoch,
            primary_after.last.index,
            &primary_after.id
        ),
        (
            primary_before.epoch,
            primary_before.last.index,
            &primary_before.id
        )
    );
}

struct Case {
    what: &'static str,
    post: bool,
    path: &'static str,
    body: String,
    status: u16,
    says: &'static str,
}

fn post(what: &'static str, path: &'static str, body: &str, says: &'static str) -> Case {
    Case {
        what,
        post: true,
        path,
        body: body.to_string(),
        status: 400,
        says,
    }
}

/// A table of bad requests over the real front end process (the full table runs in-process in
/// `tests/api/bad_input.rs`): each gets its status and a JSON error saying what was wrong, no
/// state changes on any replica, and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_the_wire_changes_nothing() {
    let _serial = serial().await;
    let c = Cluster::start("bad-input", 3).await;

    // Fixture: alice (1), bob (2), event 1 with 10 tickets, alice holding 3.
    let alice = c.create_user("alice").await;
    let bob = c.create_user("bob").await;
    let gig = c.create_event(alice, "gig", 10).await;
    assert_eq!((alice, bob, gig), (1, 2, 1));
    assert_eq!(c.purchase(gig, alice, 3).await.status, 200);
    c.wait_converged().await;
    let before = visible_state(&c).await;

    let long = "n".repeat(257);
    let cases = vec![
        post(
            "truncated JSON",
            "/users/create",
            r#"{"username": "x""#,
            "not valid JSON",
        ),
        post(
            "not an object",
            "/users/create",
            r#"["x"]"#,
            "must be a JSON object",
        ),
        post("empty body", "/events/create", "", "empty"),
        post(
            "wrong type",
            "/users/create",
            r#"{"username": 5}"#,
            "must be a string",
        ),
        post(
            "missing field",
            "/events/create",
            r#"{"userid": 1, "eventname": "x"}"#,
            "missing field `numtickets`",
        ),
        post(
            "empty name",
            "/users/create",
            r#"{"username": "  "}"#,
            "must not be empty",
        ),
        Case {
            body: format!(r#"{{"username": "{long}"}}"#),
            ..post("name over 256 chars", "/users/create", "", "at most 256")
        },
        post(
            "zero tickets",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": 0}"#,
            "`numtickets` must be an integer from 1",
        ),
        post(
            "negative count",
            "/events/1/purchase/2",
            r#"{"tickets": -1}"#,
            "`tickets`",
        ),
        post(
            "fractional count",
            "/events/1/purchase/2",
            r#"{"tickets": 1.5}"#,
            "`tickets`",
        ),
        post(
            "count over u32",
            "/events/1/purchase/2",
            r#"{"tickets": 4294967296}"#,
            "`tickets`",
        ),
        post(
            "unknown event",
            "/events/9/purchase/2",
            r#"{"tickets": 1}"#,
            "event 9 not found",
        ),
        post(
            "unknown user",
            "/events/1/purchase/9",
            r#"{"tickets": 1}"#,
            "user 9 not found",
        ),
        post(
            "negative path id",
            "/events/-1/purchase/2",
            r#"{"tickets": 1}"#,
            "`eventid`",
        ),
        post(
            "more than available",
            "/events/1/purchase/2",
            r#"{"tickets": 8}"#,
            "7 tickets available",
        ),
        post(
            "transfer more than held",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 4, "targetuser": 2}"#,
            "holds 3 tickets",
        ),
        post(
            "transfer to oneself",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 1}"#,
            "themselves",
        ),
        post(
            "transfer to nobody",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 9}"#,
            "target user 9 not found",
        ),
        Case {
            status: 413,
            body: format!(r#"{{"username": "{}"}}"#, "h".repeat(70 * 1024)),
            ..post(
                "body over 64 KiB",
                "/users/create",
                "",
                "larger than 65536 bytes",
            )
        },
        Case {
            post: false,
            ..post("unknown user read", "/users/9", "", "user 9 not found")
        },
        Case {
            post: false,
            ..post("non-numeric path id", "/events/abc", "", "`eventid`")
        },
    ];

    let fe = c.fe();
    for case in &cases {
        let a = if case.post {
            c.http.post_raw(&fe, case.path, case.body.clone()).await
        } else {
            c.http.get(&fe, case.path).await
        };
        assert_eq!(a.status.as_u16(), case.status, "{}: {a:?}", case.what);
        assert_eq!(a.content_type, "application/json", "{}", case.what);
        let error = a.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {a:?}", case.what));
        assert!(
            error.contains(case.says),
            "{}: {error:?} lacks {:?}",
            case.what,
            case.says
        );
    }

    // Phase: the front end still serves, and no replica's state moved.
    assert_eq!(c.http.get(&fe, "/greet").await.status, 200);
    assert_eq!(visible_state(&c).await, before);
}
