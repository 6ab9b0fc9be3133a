//! `ticket load` against a 3-replica cluster over HTTP on 127.0.0.1: every mode finishes with the
//! consistency check passing, the check catches a front end that loses acknowledged writes, a
//! run survives the primary's crash, and the SVG reports are well-formed XML with the expected
//! charts and series.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

mod load_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::Json;
use load_support::HttpCluster;
use replica_core::Role;
use ticket_app::load::plot::{
    report_svg, sweep_svg, DISTRIBUTION_CAPTION, SWEEP_LATENCY_CAPTION, SWEEP_THROUGHPUT_CAPTION,
    TIMELINE_CAPTION,
};
use ticket_app::load::{run, sweep, LoadOptions, LoadReport, Mode, Stop};

fn options(cluster: &HttpCluster, mode: Mode, clients: usize, requests: u64) -> LoadOptions {
    LoadOptions {
        frontend: cluster.frontend_url(),
        mode,
        clients,
        stop: Stop::Requests(requests),
        ..LoadOptions::default()
    }
}

fn assert_passed(report: &LoadReport) {
    let c = report.consistency.as_ref().expect("the check ran");
    assert!(c.passed, "consistency check failed:\n{}", report.summary());
    assert!(report.passed());
}

/// A minimal XML well-formedness check: every tag closes in order, attributes are quoted,
/// exactly one root element. Returns the element names in document order.
fn xml_elements(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        assert!(
            !rest[..lt].contains('>'),
            "stray '>' in text: {:?}",
            &rest[..lt]
        );
        rest = &rest[lt..];
        if let Some(body) = rest.strip_prefix("<?") {
            let end = body.find("?>").expect("unclosed processing instruction");
            rest = &body[end + 2..];
            continue;
        }
        if let Some(body) = rest.strip_prefix("<!--") {
            let end = body.find("-->").expect("unclosed comment");
            rest = &body[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "mismatched closing tag");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag.chars().take_while(|c| !c.is_whitespace()).collect();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_:.".contains(c)),
            "bad element name {name:?}"
        );
        // Attributes: name="value" pairs, quotes balanced.
        let attrs = &tag[name.len()..];
        assert_eq!(
            attrs.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if stack.is_empty() {
            roots += 1;
        }
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert!(rest.trim().is_empty(), "text after the root element");
    assert_eq!(roots, 1, "exactly one root element");
    names
}

/// The text content of every `<text>` element.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let start = t.find('>')? + 1;
            let end = t.find("</text>")?;
            Some(t[start..end].trim().to_string())
        })
        .collect()
}

/// The checker itself: it must refuse what is not well-formed.
#[test]
fn the_xml_check_refuses_malformed_documents() {
    assert_eq!(
        xml_elements(
            r#"<?xml version="1.0"?><svg a="1"><g><text>x</text></g><path d="M0"/></svg>"#
        ),
        vec!["svg", "g", "text", "path"]
    );
    for bad in [
        "<svg><g></svg>",
        "<svg></svg><svg></svg>",
        "<svg a=\"1></svg>",
        "<svg>",
        "<svg></g>",
    ] {
        assert!(
            std::panic::catch_unwind(|| xml_elements(bad)).is_err(),
            "{bad}"
        );
    }
}

/// Phase by phase: a mixed run passes the check, its numbers add up, its report is a
/// well-formed SVG with both charts and every series, and its JSON has the documented fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_passes_the_check_and_plots() {
    let cluster = HttpCluster::start(3).await;

    // Phase: the run.
    let report = run(&options(&cluster, Mode::Mixed, 8, 600)).await.unwrap();
    assert_passed(&report);
    assert_eq!(report.requests, 600);
    assert_eq!(report.status_counts.values().sum::<u64>(), 600);
    assert_eq!(
        report.status_counts.get("200").copied(),
        Some(600 - report.errors)
    );
    let c = report.consistency.as_ref().unwrap();
    assert!(c.acknowledged_writes > 300, "{}", report.summary());
    assert!(c.users_checked >= 16 && c.events_checked >= 4);
    let l = &report.latency;
    assert!(l.min_ms > 0.0 && l.min_ms <= l.p50_ms && l.p50_ms <= l.p90_ms);
    assert!(l.p90_ms <= l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms);
    assert!(report.requests_per_s > 0.0);
    assert!(!report.timeline.is_empty() && !report.timeline_truncated);
    assert_eq!(report.timeline.iter().map(|p| p.requests).sum::<u64>(), 600);
    assert!(report.timeline.windows(2).all(|w| w[0].t_s < w[1].t_s));

    // Phase: the replicas hold the same valid state.
    cluster.check_replicas_agree().await;

    // Phase: the SVG report.
    let svg = report_svg(&report).unwrap();
    let elements = xml_elements(&svg);
    assert_eq!(elements[0], "svg");
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    let texts = svg_texts(&svg);
    for want in ["p50", "p99", "max", "latency at percentile"] {
        assert!(
            texts.iter().any(|t| t == want),
            "no series {want:?} in {texts:?}"
        );
    }
    for caption in [TIMELINE_CAPTION, DISTRIBUTION_CAPTION] {
        assert!(
            texts.iter().any(|t| t.starts_with(caption)),
            "no chart {caption:?}"
        );
    }
    // Four data lines (three over time, one distribution) plus the legend samples.
    assert!(
        elements.iter().filter(|e| *e == "polyline").count() >= 4,
        "{elements:?}"
    );
    let dir = std::env::temp_dir().join(format!("ticket-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.svg");
    ticket_app::load::write_svg(&path, &svg).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
    std::fs::remove_dir_all(&dir).unwrap();

    // Phase: the JSON form.
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "requests_per_s",
        "latency",
        "status_counts",
        "consistency",
        "timeline",
        "distribution",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert_eq!(json["mode"], "mixed");
    assert_eq!(json["latency"]["p999_ms"], serde_json::json!(l.p999_ms));

    cluster.shutdown().await;
}

/// Create, purchase and transfer runs each pass; a purchase run that sells its events out
/// gets 400s for the rest and still passes (refusals changed nothing, and the check proves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_passes_including_sold_out() {
    let cluster = HttpCluster::start(3).await;
    for mode in [Mode::Create, Mode::Purchase, Mode::Transfer] {
        let report = run(&options(&cluster, mode, 4, 200)).await.unwrap();
        assert_passed(&report);
        assert_eq!(report.errors, 0, "{mode}: {}", report.summary());
    }

    let sold_out = LoadOptions {
        events: 2,
        tickets_per_event: 25,
        ..options(&cluster, Mode::Purchase, 4, 120)
    };
    let report = run(&sold_out).await.unwrap();
    assert_passed(&report);
    assert_eq!(
        report.status_counts.get("200"),
        Some(&50),
        "{}",
        report.summary()
    );
    assert_eq!(
        report.status_counts.get("400"),
        Some(&70),
        "{}",
        report.summary()
    );

    cluster.check_replicas_agree().await;
    cluster.shutdown().await;
}

/// A front end that answers every fifth purchase with a made-up 200 without executing it:
/// the check must report the lost purchases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_lost_acknowledged_purchases() {
    let seen = Arc::new(AtomicU64::new(0));
    let lie = move |req: Request, next: Next| {
        let seen = seen.clone();
        async move {
            if req.uri().path().contains("/purchase/")
                && seen.fetch_add(1, Ordering::Relaxed) % 5 == 4
            {
                let body = serde_json::json!({"eventid": 1, "userid": 1, "tickets": 1, "avail": 0});
                return Json(body).into_response();
            }
            next.run(req).await
        }
    };
    let cluster = HttpCluster::start_with(3, |r| r.layer(middleware::from_fn(lie))).await;
    let report = run(&options(&cluster, Mode::Purchase, 4, 100))
        .await
        .unwrap();
    let c = report.consistency.as_ref().unwrap();
    assert!(!c.passed && !report.passed(), "{}", report.summary());
    assert!(
        c.problems
            .iter()
            .any(|p| p.contains("purchased") && p.contains("acknowledged")),
        "{:?}",
        c.problems
    );
    cluster.shutdown().await;
}

/// The seed's concurrent test with the primary killed mid-run: the front end holds writes
/// across the failover, the run completes, and every acknowledged write is in the new
/// primary's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_survives_the_primary_crashing() {
    let mut cluster = HttpCluster::start(3).await;
    let (old, before) = cluster.primary().await.unwrap();
    let opts = options(&cluster, Mode::Mixed, 8, 3000);
    let load = tokio::spawn(async move { run(&opts).await });

    // Phase: once the run is under way, crash the primary.
    cluster
        .wait_for("the run under way", |st| {
            st.iter()
                .any(|s| s.role == Role::Primary && s.commit > before.commit + 100)
        })
        .await;
    cluster.kill(old).await;

    // Phase: a new primary, and a run that finishes with the check passing.
    cluster
        .wait_for("a new primary", |st| {
            st.iter()
                .any(|s| s.role == Role::Primary && s.epoch > before.epoch)
        })
        .await;
    let report = load.await.unwrap().unwrap();
    assert_passed(&report);
    assert_eq!(report.requests, 3000);
    let retries = cluster.client.stats().retries.load(Ordering::Relaxed);
    assert!(
        retries > 0,
        "the crash happened after the run: no request was retried"
    );
    assert!(report.latency.max_ms > 0.0);
    cluster.check_replicas_agree().await;
    cluster.shutdown().await;
}

/// A sweep runs once per client count and plots throughput and latency against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_plots_against_concurrency() {
    let cluster = HttpCluster::start(3).await;
    let report = sweep(&options(&cluster, Mode::Purchase, 1, 100), &[1, 4])
        .await
        .unwrap();
    assert_eq!(
        report.runs.iter().map(|r| r.clients).collect::<Vec<_>>(),
        vec![1, 4]
    );
    assert!(report.passed(), "{}", report.summary());
    let svg = sweep_svg(&report).unwrap();
    let elements = xml_elements(&svg);
    let texts = svg_texts(&svg);
    for want in ["requests/s", "p50", "p99"] {
        assert!(
            texts.iter().any(|t| t == want),
            "no series {want:?} in {texts:?}"
        );
    }
    for caption in [SWEEP_THROUGHPUT_CAPTION, SWEEP_LATENCY_CAPTION] {
        assert!(
            texts.iter().any(|t| t.starts_with(caption)),
            "no chart {caption:?}"
        );
    }
    // Two points per series, drawn as circles: 3 series × 2 client counts.
    assert!(elements.iter().filter(|e| *e == "circle").count() >= 6);
    cluster.shutdown().await;
}
