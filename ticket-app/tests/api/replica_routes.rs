//! `GET /status` and the replica-side read routes.

use axum::http::StatusCode;
use serde_json::{json, Value};
use ticket_app::StatusBody;

use crate::common::*;

/// Every replica reports its role, epoch, log positions and the service list; the three agree
/// on who is primary and the positions move with writes.
#[tokio::test(start_paused = true)]
async fn status_reports_role_epoch_and_services() {
    let cluster = TicketCluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let fe = cluster.frontend("fe");
    create_user(&fe, "someone").await;
    cluster.wait_converged().await;

    let mut bodies = Vec::new();
    for i in 0..3 {
        let raw = get_ok(&cluster.replica(i), "/status").await;
        for key in [
            "role", "epoch", "lamport", "commit", "services", "primary", "applied", "in_sync",
        ] {
            assert!(raw.get(key).is_some(), "r{i} /status lacks {key}: {raw}");
        }
        let body: StatusBody = serde_json::from_value(raw).unwrap();
        bodies.push(body);
    }
    let roles: Vec<&str> = bodies.iter().map(|b| b.role.as_str()).collect();
    assert_eq!(roles, ["primary", "secondary", "secondary"]);
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b.id, format!("r{i}"));
        assert_eq!(b.primary.as_deref(), Some("r0"), "r{i}");
        assert_eq!(b.epoch, bodies[0].epoch, "r{i}");
        assert_eq!(b.commit, bodies[0].commit, "r{i}");
        assert_eq!(b.applied, bodies[0].applied, "r{i}");
        assert!(
            b.commit >= 1 && b.lamport >= b.applied.lamport && b.lamport > 0,
            "r{i}: {b:?}"
        );
    }
    let primary = &bodies[0];
    assert_eq!(primary.in_sync, ["r0", "r1", "r2"]);
    let replicas: Vec<_> = primary
        .services
        .iter()
        .filter(|s| s.service == "replica")
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(replicas, ["r0", "r1", "r2"], "{:?}", primary.services);
    let marked: Vec<_> = primary
        .services
        .iter()
        .filter(|s| s.primary)
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(marked, ["r0"]);

    // Phase: a write moves the commit point and the Lamport stamp forward.
    create_user(&fe, "another").await;
    cluster.wait_converged().await;
    let after: StatusBody =
        serde_json::from_value(get_ok(&cluster.replica(0), "/status").await).unwrap();
    assert!(
        after.commit > primary.commit && after.lamport > primary.lamport,
        "{after:?} vs {primary:?}"
    );
}

/// A secondary serves from its own applied state: cut off from the primary, it keeps answering
/// with what it has, while the front end moves on.
#[tokio::test(start_paused = true)]
async fn replica_reads_come_from_local_state() {
    let cluster = TicketCluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let fe = cluster.frontend("fe");
    let u = create_user(&fe, "ann").await;
    let e = create_event(&fe, u, "Gig", 3).await;
    cluster.wait_converged().await;
    let before = get_ok(&cluster.replica(2), &format!("/events/{e}")).await;
    assert_eq!(before["avail"], 3);

    // Phase: r2 hears nothing more; the rest of the cluster sells a ticket.
    let ids = cluster.ids();
    cluster
        .net
        .isolate(&ids[2], &[ids[0].clone(), ids[1].clone(), "fe".into()]);
    post_ok(
        &fe,
        &format!("/events/{e}/purchase/{u}"),
        json!({ "tickets": 1 }),
    )
    .await;
    assert_eq!(get_ok(&fe, &format!("/events/{e}")).await["avail"], 2);
    assert_eq!(
        get_ok(&cluster.replica(0), &format!("/events/{e}")).await["avail"],
        2
    );
    assert_eq!(
        get_ok(&cluster.replica(2), &format!("/events/{e}")).await,
        before,
        "r2 answers from its own state"
    );
}

/// Replica routes refuse bad ids like the front end, answer unknown routes as JSON, and say 503
/// once the replica has stopped.
#[tokio::test(start_paused = true)]
async fn replica_routes_errors() {
    let cluster = TicketCluster::start(1).await;
    cluster.wait_in_sync(1).await;
    let app = cluster.replica(0);

    let r = get(&app, "/events").await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::BAD_REQUEST, "no events found")
    );
    let r = get(&app, "/users/x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("`userid` in the path"));
    let r = get(&app, "/events/create").await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "replicas serve no writes: `create` is just a bad id"
    );
    let r = get(&app, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&app, axum::http::Method::POST, "/events", "{}").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    cluster.crash(0);
    for path in ["/status", "/events", "/users/1"] {
        let r = get(&app, path).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.body, json!({ "error": "replica stopped" }) as Value);
    }
}
