//! The dashboard: `/cluster-view` describes the running cluster, and the page, opened in
//! headless Chromium against 3 replicas over HTTP, shows the new primary after the old one is
//! killed.
//!
//! The browser test needs Debian's `chromium` (or `$CHROMIUM`). Without it the test fails,
//! unless `TICKET_SKIP_BROWSER_TESTS=1` is set, when it is skipped with a message: CI installs
//! chromium (`.ci/run`), so a skip there can only be asked for, never happen by accident.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod dashboard_support;
mod load_support;

use std::time::Duration;

use dashboard_support::{find_chromium, Browser};
use load_support::{HttpCluster, POLL, WAIT_MAX};
use replica_core::Role;
use serde_json::{json, Value};
use ticket_app::dashboard::ClusterView;
use tokio::time::Instant;

async fn cluster_view(http: &reqwest::Client, cluster: &HttpCluster) -> ClusterView {
    let r = http
        .get(format!("{}/cluster-view", cluster.frontend_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// `/cluster-view` lists every replica with its status, names the primary, computes lag, lists
/// the front end, and turns writes into a rate; a killed replica shows as down. `/dashboard`
/// is one HTML document that loads nothing from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_describes_the_cluster() {
    let mut cluster = HttpCluster::start(3).await;
    let http = reqwest::Client::new();
    let (p, primary) = cluster.primary().await.unwrap();

    // Phase: writes, spread over more than the rate's 200 ms minimum span.
    let deadline = Instant::now() + WAIT_MAX;
    let view = loop {
        for i in 0..5 {
            let r = http
                .post(format!("{}/users/create", cluster.frontend_url()))
                .body(json!({ "username": format!("u{i}") }).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let view = cluster_view(&http, &cluster).await;
        if view.frontend.writes_per_s.is_some_and(|r| r > 0.0) && view.frontends.len() == 1 {
            break view;
        }
        assert!(Instant::now() < deadline, "no write rate: {view:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view.primary.as_deref(), Some(primary.id.as_str()));
    assert_eq!(view.epoch, Some(primary.epoch));
    assert_eq!(view.replicas.len(), 3);
    assert!(view.replicas.iter().all(|r| r.up && r.error.is_none()));
    assert!(view.replicas.iter().all(|r| r.lag.is_some()));
    let roles: Vec<&str> = view
        .replicas
        .iter()
        .map(|r| r.status.as_ref().unwrap().role.as_str())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "primary").count(),
        1,
        "{roles:?}"
    );
    assert!(view.frontend.writes_total >= 5);
    assert_eq!(
        view.frontends[0].address,
        cluster.frontend_url().trim_start_matches("http://")
    );
    assert_eq!(view.frontend.address, view.frontends[0].address);

    // Phase: a dead secondary shows as down, with why.
    let secondary = (0..3).find(|i| *i != p).unwrap();
    let dead = cluster.kill(secondary).await;
    let view = cluster_view(&http, &cluster).await;
    let row = view
        .replicas
        .iter()
        .find(|r| r.address == dead.as_str())
        .expect("the dead replica is still listed until the suspicion timeout");
    assert!(!row.up && row.status.is_none() && row.lag.is_none());
    assert!(row.error.is_some());
    assert_eq!(view.primary.as_deref(), Some(primary.id.as_str()));

    // Phase: the page itself.
    let r = http
        .get(format!("{}/dashboard", cluster.frontend_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("fetch(\"/cluster-view\""));
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
    cluster.shutdown().await;
}

/// What the page shows, read from its DOM (null while the page is still loading).
const PAGE_STATE: &str = r##"document.getElementById("primary") === null ? null : JSON.stringify({
  primary: document.getElementById("primary").textContent,
  epoch: document.getElementById("epoch").textContent,
  refreshes: Number(document.body.dataset.refreshes),
  error: document.getElementById("error").textContent,
  rows: [...document.querySelectorAll("#replicas tbody tr")].map(r => [r.dataset.address, r.dataset.state]),
})"##;

/// Poll the page until `cond` holds on its state; fail after [`WAIT_MAX`].
async fn wait_page(
    page: &mut dashboard_support::Cdp,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let raw = page.evaluate(PAGE_STATE).await;
        let state: Value = match raw.as_str() {
            Some(json) => serde_json::from_str(json).unwrap(),
            None => Value::Null,
        };
        if !state.is_null() && cond(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "page never showed {what}: {state}"
        );
        tokio::time::sleep(POLL * 5).await;
    }
}

fn row_state<'a>(state: &'a Value, address: &str) -> Option<&'a str> {
    state["rows"]
        .as_array()?
        .iter()
        .find(|r| r[0] == address)
        .and_then(|r| r[1].as_str())
}

/// The acceptance test: the dashboard in a real browser shows the primary, and after the
/// primary is killed, the new one, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shows_the_new_primary() {
    let Some(chromium) = find_chromium() else {
        if std::env::var("TICKET_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED dashboard_in_chromium_shows_the_new_primary: no chromium on PATH and TICKET_SKIP_BROWSER_TESTS=1");
            return;
        }
        panic!(
            "chromium not found (install it: apt-get install -y chromium, or set $CHROMIUM); \
             set TICKET_SKIP_BROWSER_TESTS=1 to skip this test deliberately"
        );
    };
    let mut cluster = HttpCluster::start(3).await;
    let (p, old) = cluster.primary().await.unwrap();

    // Phase: open the page; it shows the primary and all three replicas up.
    let browser = Browser::launch(&chromium, &format!("{}/dashboard", cluster.frontend_url()));
    let mut page = browser.page("/dashboard").await;
    let shown = wait_page(&mut page, "the first primary", |s| {
        s["primary"] == old.id.as_str()
            && s["rows"].as_array().is_some_and(|r| r.len() == 3)
            && s["rows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r[1] == "primary" || r[1] == "secondary")
    })
    .await;
    assert_eq!(shown["epoch"], old.epoch.to_string());
    assert_eq!(shown["error"], "");

    // Phase: kill the primary; the survivors elect a new one.
    let killed = cluster.kill(p).await;
    let st = cluster
        .wait_for("a new primary", |st| {
            st.iter()
                .any(|s| s.role == Role::Primary && s.epoch > old.epoch)
        })
        .await;
    let new = st
        .iter()
        .filter(|s| s.role == Role::Primary)
        .max_by_key(|s| s.epoch)
        .unwrap()
        .clone();
    assert_ne!(new.id, killed);

    // Phase: the same page, never reloaded, shows the new primary; the old one is shown down
    // (or, once the membership's suspicion timeout has removed it, not at all).
    let before = shown["refreshes"].as_u64().unwrap();
    let shown = wait_page(&mut page, "the new primary", |s| {
        s["primary"] == new.id.as_str()
    })
    .await;
    assert!(
        matches!(row_state(&shown, killed.as_str()), Some("down") | None),
        "{shown}"
    );
    assert!(shown["refreshes"].as_u64().unwrap() > before, "{shown}");
    let epoch: u64 = shown["epoch"].as_str().unwrap().parse().unwrap();
    assert!(epoch > old.epoch, "{shown}");
    assert_eq!(row_state(&shown, new.id.as_str()), Some("primary"));

    // For a person to look at: TICKET_DASHBOARD_SCREENSHOT=/tmp/dashboard.png.
    if let Ok(path) = std::env::var("TICKET_DASHBOARD_SCREENSHOT") {
        let shot = page
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        std::fs::write(&path, png).unwrap();
    }

    drop(page);
    drop(browser);
    cluster.shutdown().await;
}

/// Standard base64 (what DevTools sends screenshots in).
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..c.len()].to_vec()
        })
        .collect()
}
