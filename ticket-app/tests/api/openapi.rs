//! Holds `openapi.json` to the router's real behaviour: every documented operation is driven
//! through the real front end until it has produced every status the description documents for
//! it, every response's status is documented, and every body matches its documented schema.
//! Request bodies the server accepts match the documented request schemas, and bodies the
//! server refuses for their shape break them.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use replica_core::ClientConfig;
use serde_json::{json, Value};

use crate::common::*;

/// A minimal JSON Schema checker for the subset the description uses.
fn check(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("bad $ref {r}"))?;
        let target = &spec["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: dangling $ref {r}"));
        }
        return check(spec, target, v, at);
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let obj = v
                .as_object()
                .ok_or_else(|| format!("{at}: expected object, got {v}"))?;
            for req in schema["required"].as_array().into_iter().flatten() {
                let k = req.as_str().unwrap();
                if !obj.contains_key(k) {
                    return Err(format!("{at}: missing required `{k}`"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check(spec, s, val, &format!("{at}.{k}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: undocumented field `{k}`"));
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let arr = v
                .as_array()
                .ok_or_else(|| format!("{at}: expected array, got {v}"))?;
            if num("minItems").is_some_and(|m| (arr.len() as f64) < m)
                || num("maxItems").is_some_and(|m| arr.len() as f64 > m)
            {
                return Err(format!("{at}: {} items out of range", arr.len()));
            }
            for (i, item) in arr.iter().enumerate() {
                check(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        Some("integer") => {
            let n = v
                .as_i64()
                .map(|n| n as f64)
                .or_else(|| v.as_u64().map(|n| n as f64));
            let n = n.ok_or_else(|| format!("{at}: expected integer, got {v}"))?;
            if num("minimum").is_some_and(|m| n < m) || num("maximum").is_some_and(|m| n > m) {
                return Err(format!("{at}: {n} out of range"));
            }
        }
        Some("string") => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("{at}: expected string, got {v}"))?;
            let len = s.chars().count() as f64;
            if num("minLength").is_some_and(|m| len < m)
                || num("maxLength").is_some_and(|m| len > m)
            {
                return Err(format!("{at}: string length {len} out of range"));
            }
        }
        Some("boolean") if !v.is_boolean() => {
            return Err(format!("{at}: expected boolean, got {v}"))
        }
        _ => {}
    }
    Ok(())
}

/// Map a concrete path to the documented template it instantiates.
fn template_of(spec: &Value, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').collect();
    let paths = spec["paths"].as_object().unwrap();
    // Static templates win over parameterised ones, as in the router.
    let mut matches: Vec<&String> = paths
        .keys()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .collect();
    matches.sort_by_key(|t| t.matches('{').count());
    matches.first().map(|t| t.to_string())
}

struct Harness {
    spec: Value,
    /// (template, method) → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Harness {
    async fn call(
        &mut self,
        app: &axum::Router,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let template =
            template_of(&self.spec, path).unwrap_or_else(|| panic!("{path} is not documented"));
        let m = method.as_str().to_lowercase();
        let op = self.spec["paths"][&template][&m].clone();
        assert!(op.is_object(), "{method} {template} is not documented");
        let raw = body.as_ref().map(Value::to_string).unwrap_or_default();
        let r = send(app, method.clone(), path, Body::from(raw)).await;
        let code = r.status.as_u16().to_string();
        let documented = &op["responses"][&code];
        assert!(
            documented.is_object(),
            "{method} {path} answered {code}, undocumented: {}",
            r.body
        );
        let schema = &documented["content"]["application/json"]["schema"];
        check(
            &self.spec,
            schema,
            &r.body,
            &format!("{method} {path} {code}"),
        )
        .unwrap_or_else(|e| panic!("{e}\nbody: {}", r.body));
        if r.status == StatusCode::OK {
            if let Some(b) = &body {
                let req_schema = &op["requestBody"]["content"]["application/json"]["schema"];
                check(
                    &self.spec,
                    req_schema,
                    b,
                    &format!("request to {method} {path}"),
                )
                .unwrap();
            }
        }
        self.seen
            .entry((template, m))
            .or_default()
            .insert(r.status.as_u16());
        r
    }

    fn documented(&self) -> BTreeMap<(String, String), BTreeSet<u16>> {
        let mut out = BTreeMap::new();
        for (path, ops) in self.spec["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let codes = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|c| c.parse().unwrap())
                    .collect();
                out.insert((path.clone(), method.clone()), codes);
            }
        }
        out
    }
}

#[tokio::test(start_paused = true)]
async fn openapi_matches_the_router() {
    let cluster = TicketCluster::start(2).await;
    cluster.wait_in_sync(2).await;
    let cfg = ClientConfig {
        request_deadline_ms: 1000,
        generation: 1,
        ..ClientConfig::default()
    };
    let fe = cluster.frontend_with("fe", cfg);

    // Phase: the served document is the crate's, and is valid JSON.
    let served = get_ok(&fe, "/openapi.json").await;
    let spec: Value = serde_json::from_str(ticket_app::openapi::OPENAPI_JSON).unwrap();
    assert_eq!(served, spec);
    assert_eq!(spec["openapi"], "3.0.3");
    let mut h = Harness {
        spec,
        seen: BTreeMap::new(),
    };
    let big = json!({ "pad": "x".repeat(70_000) });

    // Phase: every operation, succeeding and failing.
    h.call(&fe, Method::GET, "/openapi.json", None).await;
    h.call(&fe, Method::GET, "/greet", None).await;
    h.call(&fe, Method::GET, "/events", None).await;
    h.call(
        &fe,
        Method::POST,
        "/users/create",
        Some(json!({ "username": "ann" })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/users/create",
        Some(json!({ "username": "ben" })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/users/create",
        Some(json!({ "username": "" })),
    )
    .await;
    h.call(&fe, Method::POST, "/users/create", Some(big.clone()))
        .await;
    h.call(
        &fe,
        Method::POST,
        "/events/create",
        Some(json!({ "userid": 1, "eventname": "Gig", "numtickets": 5 })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/events/create",
        Some(json!({ "userid": 7, "eventname": "Gig", "numtickets": 5 })),
    )
    .await;
    h.call(&fe, Method::POST, "/events/create", Some(big.clone()))
        .await;
    h.call(&fe, Method::GET, "/events", None).await;
    h.call(&fe, Method::GET, "/events/1", None).await;
    h.call(&fe, Method::GET, "/events/2", None).await;
    h.call(
        &fe,
        Method::POST,
        "/events/1/purchase/1",
        Some(json!({ "tickets": 3 })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/events/1/purchase/1",
        Some(json!({ "tickets": 3 })),
    )
    .await;
    h.call(&fe, Method::POST, "/events/1/purchase/1", Some(big.clone()))
        .await;
    h.call(
        &fe,
        Method::POST,
        "/users/1/tickets/transfer",
        Some(json!({ "eventid": 1, "tickets": 2, "targetuser": 2 })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/users/1/tickets/transfer",
        Some(json!({ "eventid": 1, "tickets": 2, "targetuser": 2 })),
    )
    .await;
    h.call(&fe, Method::POST, "/users/1/tickets/transfer", Some(big))
        .await;
    h.call(&fe, Method::GET, "/users/1", None).await;
    h.call(&fe, Method::GET, "/users/2", None).await;
    h.call(&fe, Method::GET, "/users/3", None).await;

    // Phase: with every replica gone, each operation that needs the cluster says 503.
    cluster.crash(0);
    cluster.crash(1);
    h.call(&fe, Method::GET, "/events", None).await;
    h.call(&fe, Method::GET, "/events/1", None).await;
    h.call(&fe, Method::GET, "/users/1", None).await;
    h.call(
        &fe,
        Method::POST,
        "/users/create",
        Some(json!({ "username": "cy" })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/events/create",
        Some(json!({ "userid": 1, "eventname": "Gig", "numtickets": 5 })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/events/1/purchase/2",
        Some(json!({ "tickets": 1 })),
    )
    .await;
    h.call(
        &fe,
        Method::POST,
        "/users/2/tickets/transfer",
        Some(json!({ "eventid": 1, "tickets": 1, "targetuser": 1 })),
    )
    .await;
    h.call(&fe, Method::GET, "/greet", None).await;

    // Phase: exactly the documented statuses were produced, no more, no fewer.
    assert_eq!(h.seen, h.documented());
}

/// Bodies the server refuses for their shape alone are also invalid under the documented
/// request schemas, so a client generated from the description cannot send them.
#[test]
fn request_schemas_reject_what_the_server_refuses() {
    let spec: Value = serde_json::from_str(ticket_app::openapi::OPENAPI_JSON).unwrap();
    let s = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let long = "n".repeat(257);
    let bad = [
        ("CreateUser", json!({})),
        ("CreateUser", json!({ "username": "" })),
        ("CreateUser", json!({ "username": long })),
        ("CreateUser", json!({ "username": 5 })),
        (
            "CreateEvent",
            json!({ "userid": -1, "eventname": "x", "numtickets": 1 }),
        ),
        (
            "CreateEvent",
            json!({ "userid": 1, "eventname": "x", "numtickets": 0 }),
        ),
        (
            "CreateEvent",
            json!({ "userid": 1, "eventname": "x", "numtickets": 4294967296u64 }),
        ),
        (
            "CreateEvent",
            json!({ "userid": 1, "eventname": "x", "numtickets": 1.5 }),
        ),
        ("Purchase", json!({ "tickets": "1" })),
        ("Purchase", json!({})),
        ("Transfer", json!({ "eventid": 1, "tickets": 1 })),
        (
            "Transfer",
            json!({ "eventid": 1, "tickets": -1, "targetuser": 2 }),
        ),
    ];
    for (name, body) in bad {
        assert!(
            check(&spec, &s(name), &body, name).is_err(),
            "{name} accepts {body}"
        );
        let server = ticket_app::api::JsonObject(body.as_object().cloned().unwrap());
        let refused = match name {
            "CreateUser" => server.name("username").is_err(),
            "CreateEvent" => {
                server.id("userid").is_err()
                    || server.name("eventname").is_err()
                    || server.count("numtickets").is_err()
            }
            "Purchase" => server.count("tickets").is_err(),
            _ => {
                server.id("eventid").is_err()
                    || server.count("tickets").is_err()
                    || server.id("targetuser").is_err()
            }
        };
        assert!(refused, "server accepts {name} {body}");
    }
}
