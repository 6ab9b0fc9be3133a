//! Every kind of bad input the public API must refuse (issue 5, point 2), as one table: each row
//! gets its status, a JSON body `{"error": "..."}` saying what was wrong, and leaves every
//! replica's state exactly as it was.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

const BAD: StatusCode = StatusCode::BAD_REQUEST;

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: String,
    status: StatusCode,
    /// A fragment the error message must contain.
    says: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: &str,
    status: StatusCode,
    says: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        body: body.to_string(),
        status,
        says,
    }
}

fn post_case(what: &'static str, path: &str, body: &str, says: &'static str) -> Case {
    case(what, Method::POST, path, body, BAD, says)
}

fn get_case(what: &'static str, path: &str, says: &'static str) -> Case {
    case(what, Method::GET, path, "", BAD, says)
}

/// The fixture below is users 1 (alice) and 2 (bob), event 1 with 10 tickets, alice holding 3.
fn cases() -> Vec<Case> {
    let long = "n".repeat(257);
    let huge = "h".repeat(70 * 1024);
    let mut v = vec![
        // Malformed JSON and bodies that are not objects.
        post_case(
            "truncated JSON",
            "/users/create",
            r#"{"username": "x""#,
            "not valid JSON",
        ),
        post_case(
            "not JSON at all",
            "/events/create",
            "userid=1&eventname=x",
            "not valid JSON",
        ),
        post_case(
            "trailing garbage",
            "/users/create",
            r#"{"username": "x"} x"#,
            "not valid JSON",
        ),
        post_case("empty body", "/users/create", "", "empty"),
        post_case(
            "array body",
            "/users/create",
            r#"["alice"]"#,
            "must be a JSON object",
        ),
        post_case(
            "string body",
            "/events/1/purchase/1",
            r#""2""#,
            "must be a JSON object",
        ),
        post_case(
            "null body",
            "/users/1/tickets/transfer",
            "null",
            "must be a JSON object",
        ),
        // Wrong types.
        post_case(
            "username a number",
            "/users/create",
            r#"{"username": 42}"#,
            "`username` must be a string",
        ),
        post_case(
            "eventname an object",
            "/events/create",
            r#"{"userid": 1, "eventname": {"a": 1}, "numtickets": 5}"#,
            "`eventname` must be a string",
        ),
        post_case(
            "userid a string",
            "/events/create",
            r#"{"userid": "1", "eventname": "x", "numtickets": 5}"#,
            "`userid` must be a non-negative integer",
        ),
        post_case(
            "numtickets a string",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": "5"}"#,
            "`numtickets` must be an integer",
        ),
        post_case(
            "tickets a string",
            "/events/1/purchase/2",
            r#"{"tickets": "2"}"#,
            "`tickets` must be an integer",
        ),
        post_case(
            "tickets null",
            "/events/1/purchase/2",
            r#"{"tickets": null}"#,
            "`tickets` must be an integer",
        ),
        post_case(
            "eventid a bool",
            "/users/1/tickets/transfer",
            r#"{"eventid": true, "tickets": 1, "targetuser": 2}"#,
            "`eventid` must be a non-negative integer",
        ),
        post_case(
            "targetuser an array",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": [2]}"#,
            "`targetuser` must be a non-negative integer",
        ),
        // Missing fields.
        post_case(
            "no username",
            "/users/create",
            r#"{"name": "alice"}"#,
            "missing field `username`",
        ),
        post_case(
            "no userid",
            "/events/create",
            r#"{"eventname": "x", "numtickets": 5}"#,
            "missing field `userid`",
        ),
        post_case(
            "no eventname",
            "/events/create",
            r#"{"userid": 1, "numtickets": 5}"#,
            "missing field `eventname`",
        ),
        post_case(
            "no numtickets",
            "/events/create",
            r#"{"userid": 1, "eventname": "x"}"#,
            "missing field `numtickets`",
        ),
        post_case(
            "no tickets to buy",
            "/events/1/purchase/2",
            "{}",
            "missing field `tickets`",
        ),
        post_case(
            "no eventid to transfer",
            "/users/1/tickets/transfer",
            r#"{"tickets": 1, "targetuser": 2}"#,
            "missing field `eventid`",
        ),
        post_case(
            "no tickets to transfer",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "targetuser": 2}"#,
            "missing field `tickets`",
        ),
        post_case(
            "no targetuser",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1}"#,
            "missing field `targetuser`",
        ),
        // Unknown ids.
        post_case(
            "event by unknown user",
            "/events/create",
            r#"{"userid": 99, "eventname": "x", "numtickets": 5}"#,
            "user 99 not found",
        ),
        post_case(
            "purchase of unknown event",
            "/events/99/purchase/1",
            r#"{"tickets": 1}"#,
            "event 99 not found",
        ),
        post_case(
            "purchase by unknown user",
            "/events/1/purchase/99",
            r#"{"tickets": 1}"#,
            "user 99 not found",
        ),
        post_case(
            "transfer from unknown user",
            "/users/99/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 2}"#,
            "user 99 not found",
        ),
        post_case(
            "transfer to unknown user",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 99}"#,
            "target user 99 not found",
        ),
        post_case(
            "transfer of unknown event",
            "/users/1/tickets/transfer",
            r#"{"eventid": 99, "tickets": 1, "targetuser": 2}"#,
            "event 99 not found",
        ),
        get_case("get unknown event", "/events/99", "event 99 not found"),
        get_case("get unknown user", "/users/99", "user 99 not found"),
        get_case("get user 0", "/users/0", "user 0 not found"),
        // Zero counts.
        post_case(
            "zero numtickets",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": 0}"#,
            "`numtickets` must be an integer from 1",
        ),
        post_case(
            "buy zero",
            "/events/1/purchase/2",
            r#"{"tickets": 0}"#,
            "`tickets` must be an integer from 1",
        ),
        post_case(
            "transfer zero",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 0, "targetuser": 2}"#,
            "`tickets` must be an integer from 1",
        ),
        // Negative numbers.
        post_case(
            "negative numtickets",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": -5}"#,
            "got -5",
        ),
        post_case(
            "buy negative",
            "/events/1/purchase/2",
            r#"{"tickets": -1}"#,
            "got -1",
        ),
        post_case(
            "transfer negative",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": -2, "targetuser": 2}"#,
            "got -2",
        ),
        post_case(
            "negative userid",
            "/events/create",
            r#"{"userid": -1, "eventname": "x", "numtickets": 5}"#,
            "`userid` must be a non-negative integer",
        ),
        post_case(
            "negative targetuser",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": -2}"#,
            "`targetuser`",
        ),
        get_case(
            "negative event id in path",
            "/events/-1",
            "`eventid` in the path",
        ),
        get_case(
            "negative user id in path",
            "/users/-3",
            "`userid` in the path",
        ),
        post_case(
            "negative event id in purchase path",
            "/events/-1/purchase/1",
            r#"{"tickets": 1}"#,
            "`eventid` in the path",
        ),
        post_case(
            "negative user id in transfer path",
            "/users/-1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 2}"#,
            "`userid` in the path",
        ),
        // Non-integers.
        post_case(
            "fractional numtickets",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": 2.5}"#,
            "got 2.5",
        ),
        post_case(
            "buy 1.0",
            "/events/1/purchase/2",
            r#"{"tickets": 1.0}"#,
            "`tickets` must be an integer",
        ),
        post_case(
            "buy 1e2",
            "/events/1/purchase/2",
            r#"{"tickets": 1e2}"#,
            "`tickets` must be an integer",
        ),
        post_case(
            "fractional eventid",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1.5, "tickets": 1, "targetuser": 2}"#,
            "`eventid`",
        ),
        get_case("fractional path id", "/events/1.5", "`eventid` in the path"),
        get_case("word as path id", "/users/abc", "`userid` in the path"),
        post_case(
            "word as purchase event id",
            "/events/abc/purchase/1",
            r#"{"tickets": 1}"#,
            "`eventid` in the path",
        ),
        post_case(
            "word as purchase user id",
            "/events/1/purchase/x",
            r#"{"tickets": 1}"#,
            "`userid` in the path",
        ),
        // Counts and ids too large.
        post_case(
            "numtickets over u32",
            "/events/create",
            r#"{"userid": 1, "eventname": "x", "numtickets": 4294967296}"#,
            "got 4294967296",
        ),
        post_case(
            "buy over u32",
            "/events/1/purchase/2",
            r#"{"tickets": 4294967296}"#,
            "`tickets` must be an integer from 1 to 4294967295",
        ),
        post_case(
            "transfer over u64",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 18446744073709551616, "targetuser": 2}"#,
            "`tickets`",
        ),
        post_case(
            "userid over u64",
            "/events/create",
            r#"{"userid": 1e30, "eventname": "x", "numtickets": 5}"#,
            "`userid`",
        ),
        get_case(
            "path id over u64",
            "/events/18446744073709551616",
            "`eventid` in the path",
        ),
        // Names.
        post_case(
            "empty username",
            "/users/create",
            r#"{"username": ""}"#,
            "`username` must not be empty",
        ),
        post_case(
            "blank username",
            "/users/create",
            r#"{"username": "   "}"#,
            "`username` must not be empty",
        ),
        post_case(
            "username with NUL",
            "/users/create",
            r#"{"username": "a\u0000b"}"#,
            "control characters",
        ),
        post_case(
            "empty eventname",
            "/events/create",
            r#"{"userid": 1, "eventname": "", "numtickets": 5}"#,
            "`eventname` must not be empty",
        ),
        // The state machine's refusals.
        post_case(
            "buy more than available",
            "/events/1/purchase/2",
            r#"{"tickets": 8}"#,
            "event 1 has 7 tickets available, 8 requested",
        ),
        post_case(
            "buy u32::MAX",
            "/events/1/purchase/2",
            r#"{"tickets": 4294967295}"#,
            "7 tickets available",
        ),
        post_case(
            "transfer more than held",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 4, "targetuser": 2}"#,
            "user 1 holds 3 tickets of event 1, 4 requested",
        ),
        post_case(
            "transfer without holding",
            "/users/2/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 1}"#,
            "user 2 holds 0 tickets",
        ),
        post_case(
            "transfer to oneself",
            "/users/1/tickets/transfer",
            r#"{"eventid": 1, "tickets": 1, "targetuser": 1}"#,
            "cannot transfer tickets to themselves",
        ),
        // Routes and methods that do not exist.
        case(
            "unknown path",
            Method::GET,
            "/tickets",
            "",
            StatusCode::NOT_FOUND,
            "no route for GET /tickets",
        ),
        case(
            "trailing slash",
            Method::GET,
            "/events/",
            "",
            StatusCode::NOT_FOUND,
            "no route",
        ),
        case(
            "GET on a POST route",
            Method::GET,
            "/users/create",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET is not allowed",
        ),
        case(
            "DELETE an event",
            Method::DELETE,
            "/events/1",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE is not allowed",
        ),
    ];
    // Names over 256 characters, and bodies over 64 KiB (even when otherwise valid).
    v.push(post_case(
        "long username",
        "/users/create",
        &json!({ "username": long }).to_string(),
        "257 characters long, at most 256",
    ));
    v.push(post_case(
        "long eventname",
        "/events/create",
        &json!({ "userid": 1, "eventname": long, "numtickets": 5 }).to_string(),
        "`eventname` is 257 characters",
    ));
    for path in [
        "/users/create",
        "/events/create",
        "/events/1/purchase/2",
        "/users/1/tickets/transfer",
    ] {
        let body = json!({ "username": huge, "userid": 1, "eventname": "x", "numtickets": 1, "tickets": 1, "eventid": 1, "targetuser": 2 });
        v.push(case(
            "body over 64 KiB",
            Method::POST,
            path,
            &body.to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than 65536 bytes",
        ));
    }
    v
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_and_changes_nothing() {
    let cluster = TicketCluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let fe = cluster.frontend("fe");

    // Phase: the fixture.
    assert_eq!(create_user(&fe, "alice").await, 1);
    assert_eq!(create_user(&fe, "bob").await, 2);
    assert_eq!(create_event(&fe, 1, "concert", 10).await, 1);
    post_ok(&fe, "/events/1/purchase/1", json!({ "tickets": 3 })).await;
    let baseline = cluster.converged_state().await;

    // Phase: every bad request, one at a time, each checked against the baseline.
    let cases = cases();
    for c in &cases {
        let r = send(&fe, c.method.clone(), &c.path, c.body.clone()).await;
        assert_eq!(
            r.status, c.status,
            "{}: {} {} -> {}",
            c.what, c.method, c.path, r.body
        );
        let msg = r.error();
        assert!(
            msg.contains(c.says),
            "{}: error {msg:?} does not say {:?}",
            c.what,
            c.says
        );
        assert_eq!(
            cluster.converged_state().await,
            baseline,
            "{}: state changed",
            c.what
        );
    }

    // Phase: the service still serves, and the fixture reads back unchanged.
    let event = get_ok(&fe, "/events/1").await;
    assert_eq!(
        event,
        json!({ "eventid": 1, "eventname": "concert", "userid": 1, "avail": 7, "purchased": 3 })
    );
    assert!(cases.len() >= 70, "table shrank to {}", cases.len());
}

/// The limits are inclusive: a 256-character name, a `u32::MAX`-ticket event and a body of
/// exactly 64 KiB are accepted.
#[tokio::test(start_paused = true)]
async fn limits_are_inclusive() {
    let cluster = TicketCluster::start(1).await;
    cluster.wait_in_sync(1).await;
    let fe = cluster.frontend("fe");

    let name: String = "é".repeat(256);
    let user = create_user(&fe, &name).await;
    assert_eq!(
        get_ok(&fe, &format!("/users/{user}")).await["username"],
        json!(name)
    );
    let ev = create_event(&fe, user, &name, u32::MAX).await;
    assert_eq!(
        get_ok(&fe, &format!("/events/{ev}")).await["avail"],
        json!(u32::MAX)
    );

    // A body of exactly the limit: padding in a field the route ignores.
    let skeleton = json!({ "username": "padded", "pad": "" }).to_string();
    let pad = "p".repeat(ticket_app::limits::BODY_BYTES_MAX - skeleton.len());
    let body = json!({ "username": "padded", "pad": pad }).to_string();
    assert_eq!(body.len(), ticket_app::limits::BODY_BYTES_MAX);
    let r = send(&fe, Method::POST, "/users/create", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
