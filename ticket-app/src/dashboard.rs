//! `GET /dashboard` and its data source `GET /cluster-view`, served by a front end: what an
//! operator looks at to see the cluster as it is now.
//!
//! The page (`dashboard/index.html`, compiled into the binary) is self-contained: inline CSS
//! and JavaScript, no build step, nothing fetched from elsewhere. It polls `/cluster-view` every
//! 500 ms and redraws: every replica with its role, epoch, commit point, applied position and
//! lag behind the primary; the front ends; who is primary; writes/s.
//!
//! `/cluster-view` asks every replica in the front end's service list for its `GET /status`
//! (plain HTTP to the replica's address, which serves its read routes and its cluster routes on
//! one port), in parallel, each with a short timeout, so one dead replica delays the view by at
//! most that timeout and shows as down. It is not under `/cluster/`: that prefix is
//! authenticated cluster traffic, and this is a read-only view for people. Like every other
//! public route, it is open to whoever can reach the front end.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use replica_core::message::ServiceKind;
use replica_core::{Client, Transport};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::ApiError;
use crate::replica_routes::StatusBody;

/// The page, compiled in.
pub const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");

/// How far back the writes/s rate looks, in milliseconds: long enough to smooth one page's
/// 500 ms polls, short enough to show a stall within seconds.
const RATE_WINDOW_MS: u64 = 3000;

/// Most rate samples kept (several pages polling at once add samples faster).
const RATE_SAMPLES_MAX: usize = 256;

/// Most bytes of a replica's `/status` answer read (a status with a long service list is a few
/// KiB; the bound keeps a misbehaving address from making the front end buffer megabytes).
const STATUS_BYTES_MAX: usize = 1 << 20;

/// Settings of [`dashboard_router`].
#[derive(Clone, Debug)]
pub struct DashboardOptions {
    /// This front end's address as the cluster knows it (`host:port`), shown in the view.
    pub frontend_address: String,
    /// How long to wait for one replica's `/status`, in milliseconds. Default 400: a live
    /// replica answers in about a millisecond; a dead one must not hold the page back.
    pub status_timeout_ms: u64,
}

impl DashboardOptions {
    /// Options for the front end at `frontend_address`, with default timeouts.
    pub fn new(frontend_address: impl Into<String>) -> Self {
        DashboardOptions {
            frontend_address: frontend_address.into(),
            status_timeout_ms: 400,
        }
    }
}

/// `GET /cluster-view`: the cluster as this front end can see it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This front end and its counters.
    pub frontend: FrontendView,
    /// The reachable replica that reports itself primary in the highest epoch, if any.
    pub primary: Option<String>,
    /// That primary's epoch.
    pub epoch: Option<u64>,
    /// That primary's commit index.
    pub commit: Option<u64>,
    /// Entries committed per second (from the primary's commit index over the last seconds).
    pub commits_per_s: Option<f64>,
    /// Every replica in the service list (and the primary the front end follows), by address.
    pub replicas: Vec<ReplicaView>,
    /// Front ends in the service list.
    pub frontends: Vec<FrontendEntry>,
    /// When the view was gathered, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// This front end's own numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontendView {
    /// Its address.
    pub address: String,
    /// The primary its client sends writes to.
    pub follows: Option<String>,
    /// Writes completed since it started.
    pub writes_total: u64,
    /// Writes completed per second over the last few seconds (none until two samples exist).
    pub writes_per_s: Option<f64>,
    /// Request attempts beyond the first.
    pub retries_total: u64,
    /// Writes being held and retried now.
    pub held_writes: u64,
    /// Reads served by the primary.
    pub reads_primary_total: u64,
    /// Reads served by a secondary.
    pub reads_secondary_total: u64,
}

/// One replica in the view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Its address.
    pub address: String,
    /// Whether it answered `/status`.
    pub up: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// Its status, when it answered.
    pub status: Option<StatusBody>,
    /// Entries it has yet to apply to reach the primary's commit point (when both are known).
    pub lag: Option<u64>,
}

/// A front end listed in the service list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontendEntry {
    /// Its address.
    pub address: String,
    /// Its incarnation.
    pub generation: u64,
    /// Its latest heartbeat counter.
    pub heartbeat: u64,
}

#[derive(Clone, Copy)]
struct RateSample {
    at: Instant,
    writes: u64,
    commit: Option<u64>,
}

struct Dashboard<T> {
    client: Client<T>,
    /// The client for replicas' `/status`; if it could not be built, why (then `/cluster-view`
    /// answers 500 saying so, and the rest of the front end is unaffected).
    http: Result<reqwest::Client, String>,
    options: DashboardOptions,
    samples: Mutex<VecDeque<RateSample>>,
}

/// `GET /dashboard` (the page) and `GET /cluster-view` (its JSON), for a front end whose
/// cluster client is `client`. Merge it into the front end's router.
pub fn dashboard_router<T: Transport>(client: Client<T>, options: DashboardOptions) -> Router {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(options.status_timeout_ms))
        .connect_timeout(Duration::from_millis(options.status_timeout_ms))
        .no_proxy()
        .build()
        .map_err(|e| {
            tracing::warn!(error = %e, "dashboard: cannot build an HTTP client; /cluster-view will fail");
            format!("cannot build the dashboard's HTTP client: {e}")
        });
    let state = Arc::new(Dashboard {
        client,
        http,
        options,
        samples: Mutex::new(VecDeque::new()),
    });
    Router::new()
        .route("/dashboard", get(page))
        .route("/cluster-view", get(cluster_view::<T>))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD_HTML,
    )
}

async fn cluster_view<T: Transport>(
    State(d): State<Arc<Dashboard<T>>>,
) -> Result<impl IntoResponse, ApiError> {
    let http = d
        .http
        .as_ref()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.clone()))?;
    let view = d.gather(http).await;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)))
}

impl<T: Transport> Dashboard<T> {
    async fn gather(&self, http: &reqwest::Client) -> ClusterView {
        let services = self.client.services();
        let follows = self.client.primary().map(|p| p.to_string());
        let mut addresses: BTreeSet<String> = services
            .iter()
            .filter(|s| s.kind == ServiceKind::Replica)
            .map(|s| s.address.to_string())
            .collect();
        addresses.extend(follows.clone());
        let frontends = services
            .iter()
            .filter(|s| s.kind == ServiceKind::Frontend)
            .map(|s| FrontendEntry {
                address: s.address.to_string(),
                generation: s.generation,
                heartbeat: s.heartbeat,
            })
            .collect();

        let mut calls = JoinSet::new();
        for address in addresses {
            let http = http.clone();
            calls.spawn(async move {
                let result = fetch_status(&http, &address).await;
                (address, result)
            });
        }
        let mut replicas = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((address, result)) = joined else {
                continue;
            };
            let (status, error) = match result {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            replicas.push(ReplicaView {
                address,
                up: status.is_some(),
                error,
                status,
                lag: None,
            });
        }
        replicas.sort_by(|a, b| a.address.cmp(&b.address));

        let primary = replicas
            .iter()
            .filter_map(|r| r.status.as_ref())
            .filter(|s| s.role == "primary")
            .max_by_key(|s| s.epoch)
            .cloned();
        if let Some(p) = &primary {
            for r in &mut replicas {
                r.lag = r
                    .status
                    .as_ref()
                    .map(|s| p.commit.saturating_sub(s.applied.index));
            }
        }

        let stats = self.client.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let writes_total = load(&stats.writes);
        let (writes_per_s, commits_per_s) =
            self.rates(writes_total, primary.as_ref().map(|p| p.commit));
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ClusterView {
            frontend: FrontendView {
                address: self.options.frontend_address.clone(),
                follows,
                writes_total,
                writes_per_s,
                retries_total: load(&stats.retries),
                held_writes: load(&stats.held),
                reads_primary_total: load(&stats.reads_primary),
                reads_secondary_total: load(&stats.reads_secondary),
            },
            primary: primary.as_ref().map(|p| p.id.clone()),
            epoch: primary.as_ref().map(|p| p.epoch),
            commit: primary.as_ref().map(|p| p.commit),
            commits_per_s,
            replicas,
            frontends,
            time_ms,
        }
    }

    /// Record a sample and return the write and commit rates over the window.
    fn rates(&self, writes: u64, commit: Option<u64>) -> (Option<f64>, Option<f64>) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back(RateSample {
            at: now,
            writes,
            commit,
        });
        let window = Duration::from_millis(RATE_WINDOW_MS);
        while samples.len() > RATE_SAMPLES_MAX
            || (samples.len() > 2 && samples.front().is_some_and(|s| now - s.at > window))
        {
            samples.pop_front();
        }
        rate_over(&samples)
    }
}

/// Writes/s and commits/s between the oldest and newest sample (none when they are less than
/// 200 ms apart, or a counter went backwards: a restart, not negative throughput).
fn rate_over(samples: &VecDeque<RateSample>) -> (Option<f64>, Option<f64>) {
    let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
        return (None, None);
    };
    let secs = (last.at - first.at).as_secs_f64();
    if secs < 0.2 {
        return (None, None);
    }
    let per_s = |a: u64, b: u64| b.checked_sub(a).map(|d| d as f64 / secs);
    let writes = per_s(first.writes, last.writes);
    let commits = samples
        .iter()
        .find_map(|s| s.commit.map(|c| (s.at, c)))
        .zip(last.commit)
        .and_then(|((at, c0), c1)| {
            let secs = (last.at - at).as_secs_f64();
            (secs >= 0.2)
                .then(|| c1.checked_sub(c0).map(|d| d as f64 / secs))
                .flatten()
        });
    (writes, commits)
}

/// `GET http://{address}/status`, parsed; a short error string otherwise.
async fn fetch_status(http: &reqwest::Client, address: &str) -> Result<StatusBody, String> {
    let resp = http
        .get(format!("http://{address}/status"))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection refused".to_string()
            } else {
                "request failed".to_string()
            }
        })?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > STATUS_BYTES_MAX as u64)
    {
        return Err("status too large".to_string());
    }
    let bytes = resp.bytes().await.map_err(|_| "body cut off".to_string())?;
    if bytes.len() > STATUS_BYTES_MAX {
        return Err("status too large".to_string());
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not a status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, writes: u64, commit: Option<u64>, origin: Instant) -> RateSample {
        RateSample {
            at: origin + Duration::from_millis(ms),
            writes,
            commit,
        }
    }

    /// Rates over the window, and the cases that give none.
    #[test]
    fn rates_from_samples() {
        let o = Instant::now();
        let q = |v: Vec<RateSample>| rate_over(&v.into_iter().collect());
        assert_eq!(q(vec![]), (None, None));
        assert_eq!(q(vec![sample(0, 5, Some(1), o)]), (None, None));
        assert_eq!(
            q(vec![
                sample(0, 0, Some(10), o),
                sample(100, 50, Some(20), o)
            ]),
            (None, None),
            "too close together"
        );
        assert_eq!(
            q(vec![
                sample(0, 100, None, o),
                sample(1000, 300, Some(40), o),
                sample(2000, 500, Some(140), o)
            ]),
            (Some(200.0), Some(100.0))
        );
        assert_eq!(
            q(vec![
                sample(0, 100, Some(5), o),
                sample(1000, 50, Some(4), o)
            ]),
            (None, None),
            "counters went backwards"
        );
    }
}
