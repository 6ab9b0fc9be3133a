//! `ticket load`: concurrent create, purchase and transfer traffic against a front end, with
//! latency percentiles, a consistency check and SVG plots — the seed's ConcurrentTest grown up.
//!
//! A run has three phases:
//!
//! 1. **set-up** (not timed): users and events to work on, and in transfer and mixed modes a
//!    stock of tickets per client;
//! 2. **load**: `clients` tasks, each sending one request at a time (a closed loop, like the
//!    seed's test threads) until `requests` in total are done or `duration` has passed. Each
//!    records its latencies in its own HDR histogram and enters every answer in its own ledger
//!    (see [`workload`]); a progress bar shows the count and the rate;
//! 3. **check**: the ticket invariants and "every acknowledged write is reflected", read back
//!    through the public API ([`check`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ticket_app::load::LoadError> {
//! use ticket_app::load::{run, LoadOptions, Mode, Stop};
//! let report = run(&LoadOptions {
//!     frontend: "http://127.0.0.1:4560".into(),
//!     mode: Mode::Purchase,
//!     clients: 16,
//!     stop: Stop::Requests(10_000),
//!     ..LoadOptions::default()
//! })
//! .await?;
//! println!("{}", report.summary());
//! assert!(report.consistency.as_ref().is_some_and(|c| c.passed));
//! # Ok(()) }
//! ```

mod api;
pub mod check;
pub mod plot;
pub mod stats;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use self::api::Api;
use self::stats::{DistributionPoint, Latency, Recorder, Summary, TimelinePoint};
use self::workload::{Ledger, Worker};
pub use check::Consistency;

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Half `POST /users/create`, half `POST /events/create`.
    Create,
    /// `POST /events/{id}/purchase/{user}` of one ticket, random event and user.
    Purchase,
    /// `POST /users/{id}/tickets/transfer` of one ticket between a client's two users.
    Transfer,
    /// 50 % purchases, 20 % transfers, 20 % `GET /events/{id}`, 5 % user and 5 % event
    /// creations.
    Mixed,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Create => "create",
            Mode::Purchase => "purchase",
            Mode::Transfer => "transfer",
            Mode::Mixed => "mixed",
        })
    }
}

impl FromStr for Mode {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, LoadError> {
        match s {
            "create" => Ok(Mode::Create),
            "purchase" => Ok(Mode::Purchase),
            "transfer" => Ok(Mode::Transfer),
            "mixed" => Ok(Mode::Mixed),
            other => Err(LoadError::BadOptions(format!(
                "unknown mode {other:?}: expected create, purchase, transfer or mixed"
            ))),
        }
    }
}

/// When the load phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests in total (over all clients).
    Requests(u64),
    /// After this long; requests in flight then still complete and count.
    Duration(Duration),
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The front end's base URL (`http://host:port`; `host:port` alone means http).
    pub frontend: String,
    /// What to send.
    pub mode: Mode,
    /// Concurrent clients, each with one request in flight. Default 16.
    pub clients: usize,
    /// When to stop. Default 10,000 requests.
    pub stop: Stop,
    /// Events the run creates and purchases from. Few events means contention on them, as in
    /// the seed's concurrent purchase test. Default 4.
    pub events: usize,
    /// Tickets each of those events is created with. Default 10,000,000: a run sells out only
    /// when asked to (set it low to test the sold-out path; refusals are counted, and checked).
    pub tickets_per_event: u32,
    /// One request's time limit, in milliseconds; past it the request counts as `timeout` and
    /// its effect as unknown. Default 30,000: above the front end's own hold-and-retry
    /// deadline (10 s), so a write held across a failover is measured, not cut off.
    pub request_timeout_ms: u64,
    /// Seed of the clients' random choices (which event, which user): the same seed gives the
    /// same request mix. Default 1.
    pub seed: u64,
    /// Run the consistency check after the load. Default true.
    pub check: bool,
    /// Draw a progress bar on stderr (only when stderr is a terminal). Default false.
    pub progress: bool,
    /// Most requests kept for the latency-over-time plot, in total: 8 bytes each. Past it the
    /// plot covers the start of the run and the report says `timeline_truncated`; percentiles
    /// and counts always cover every request. Default 4,000,000 (32 MB).
    pub timeline_samples_max: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            frontend: "http://127.0.0.1:4560".into(),
            mode: Mode::Mixed,
            clients: 16,
            stop: Stop::Requests(10_000),
            events: 4,
            tickets_per_event: 10_000_000,
            request_timeout_ms: 30_000,
            seed: 1,
            check: true,
            progress: false,
            timeline_samples_max: 4_000_000,
        }
    }
}

/// Most concurrent clients of one run: each is a task and an open connection.
pub const CLIENTS_MAX: usize = 4096;

/// Why a run could not be carried out (a failed consistency check is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options make no sense.
    #[error("invalid options: {0}")]
    BadOptions(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A request that must succeed (set-up or check) did not.
    #[error("{what} failed: {answer}")]
    Request {
        /// Which request.
        what: String,
        /// What came back.
        answer: String,
    },
    /// A plot could not be drawn or written.
    #[error("cannot write the report: {0}")]
    Report(String),
    /// A client task failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The run completed but the consistency check found problems (for a command line that
    /// must exit with a failure; the library itself returns them in the report).
    #[error("the consistency check found {problems} problem(s)")]
    Inconsistent {
        /// How many.
        problems: usize,
    },
}

/// What a run measured and found.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The front end it ran against.
    pub frontend: String,
    /// What was sent.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests completed in the load phase (whatever their answer).
    pub requests: u64,
    /// Length of the load phase, in seconds.
    pub duration_s: f64,
    /// `requests / duration_s`.
    pub requests_per_s: f64,
    /// Latency percentiles over every request.
    pub latency: Latency,
    /// Requests per answer: HTTP status (`"200"`, `"400"`, `"503"`…) or transport failure
    /// (`"timeout"`, `"connection"`, `"bad-body"`).
    pub status_counts: BTreeMap<String, u64>,
    /// Requests not answered 200.
    pub errors: u64,
    /// The consistency check, when it ran.
    pub consistency: Option<Consistency>,
    /// Latency over time, for the plot.
    pub timeline: Vec<TimelinePoint>,
    /// True when the timeline covers only the start of the run (see
    /// [`LoadOptions::timeline_samples_max`]).
    pub timeline_truncated: bool,
    /// Latency by percentile, for the plot.
    pub distribution: Vec<DistributionPoint>,
}

impl LoadReport {
    /// A few lines for a person: rate, percentiles, answers, check.
    pub fn summary(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "{} requests in {:.2} s with {} clients ({} mode): {:.0} requests/s\n\
             latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.requests,
            self.duration_s,
            self.clients,
            self.mode,
            self.requests_per_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms
        );
        let answers: Vec<String> = self
            .status_counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        out.push_str(&format!("answers: {}\n", answers.join(", ")));
        match &self.consistency {
            Some(c) if c.passed => out.push_str(&format!(
                "consistency: passed ({} events, {} users checked; {} acknowledged writes, {} unknown)\n",
                c.events_checked, c.users_checked, c.acknowledged_writes, c.unknown_writes
            )),
            Some(c) => {
                out.push_str(&format!("consistency: FAILED ({} problems)\n", c.problems.len()));
                for p in &c.problems {
                    out.push_str(&format!("  {p}\n"));
                }
            }
            None => out.push_str("consistency: not checked\n"),
        }
        out
    }

    /// Whether the run found nothing wrong (true when the check did not run).
    pub fn passed(&self) -> bool {
        self.consistency.as_ref().is_none_or(|c| c.passed)
    }
}

/// The runs of a sweep, one per client count.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// What was sent.
    pub mode: Mode,
    /// One run per client count, in the order given.
    pub runs: Vec<LoadReport>,
}

impl SweepReport {
    /// One line per run.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{:>8} {:>12} {:>10} {:>10} {:>10}  check\n",
            "clients", "requests/s", "p50 ms", "p99 ms", "max ms"
        );
        for r in &self.runs {
            out.push_str(&format!(
                "{:>8} {:>12.0} {:>10.3} {:>10.3} {:>10.3}  {}\n",
                r.clients,
                r.requests_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                match &r.consistency {
                    Some(c) if c.passed => "passed",
                    Some(_) => "FAILED",
                    None => "-",
                }
            ));
        }
        out
    }

    /// Whether every run passed.
    pub fn passed(&self) -> bool {
        self.runs.iter().all(LoadReport::passed)
    }
}

/// `http://host:port` from what the user typed, without a trailing slash.
fn base_url(frontend: &str) -> Result<String, LoadError> {
    let s = frontend.trim().trim_end_matches('/');
    let s = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&s)
        .map_err(|e| LoadError::BadOptions(format!("front end URL {frontend:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(LoadError::BadOptions(format!(
            "front end URL {frontend:?}: only http is supported"
        )));
    }
    if url.host_str().is_none() || url.path() != "/" || url.query().is_some() {
        return Err(LoadError::BadOptions(format!(
            "front end URL {frontend:?}: expected http://host:port"
        )));
    }
    Ok(s)
}

fn validate(opts: &LoadOptions) -> Result<String, LoadError> {
    if opts.clients == 0 || opts.clients > CLIENTS_MAX {
        return Err(LoadError::BadOptions(format!(
            "clients must be 1 to {CLIENTS_MAX}, got {}",
            opts.clients
        )));
    }
    match opts.stop {
        Stop::Requests(0) => {
            return Err(LoadError::BadOptions("requests must be at least 1".into()))
        }
        Stop::Duration(d) if d.is_zero() => {
            return Err(LoadError::BadOptions("duration must be positive".into()))
        }
        _ => {}
    }
    if opts.tickets_per_event == 0 || opts.events == 0 {
        return Err(LoadError::BadOptions(
            "events and tickets per event must be at least 1".into(),
        ));
    }
    if opts.request_timeout_ms == 0 {
        return Err(LoadError::BadOptions(
            "request timeout must be positive".into(),
        ));
    }
    base_url(&opts.frontend)
}

/// Shared by the clients of a run: the stop condition and live counters for the progress bar.
struct Shared {
    stop: Stop,
    started: Instant,
    /// Requests handed out (requests mode).
    issued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    /// Whether a client may start one more request.
    fn take(&self) -> bool {
        match self.stop {
            Stop::Requests(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            Stop::Duration(d) => self.started.elapsed() < d,
        }
    }
}

/// Run one load test: set-up, load, check. See the module docs.
pub async fn run(opts: &LoadOptions) -> Result<LoadReport, LoadError> {
    let base = validate(opts)?;
    let api = Api::new(base.clone(), opts.request_timeout_ms)?;

    // Phase: set-up.
    let mut ledger = Ledger::default();
    let world = workload::set_up(
        &api,
        opts.mode,
        opts.clients,
        opts.events,
        opts.tickets_per_event,
        &mut ledger,
    )
    .await?;

    // Phase: load.
    let shared = Arc::new(Shared {
        stop: opts.stop,
        started: Instant::now(),
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let bar = progress_bar(opts);
    let ticker = tokio::spawn(tick_progress(bar.clone(), shared.clone()));
    let samples_per_client = opts.timeline_samples_max / opts.clients;
    let mut tasks = Vec::with_capacity(opts.clients);
    for c in 0..opts.clients {
        let mut worker = Worker::new(c, opts.seed, opts.mode, world.clone());
        let mut recorder = Recorder::new(samples_per_client)?;
        let (api, shared) = (api.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            while shared.take() {
                let start = Instant::now();
                let outcome = worker.step(&api).await;
                let latency = start.elapsed();
                if !matches!(outcome, api::Outcome::Ok(_)) {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                shared.completed.fetch_add(1, Ordering::Relaxed);
                recorder.record(
                    micros(start.duration_since(shared.started)),
                    micros(latency),
                    outcome.key(),
                );
            }
            (worker.ledger, recorder)
        }));
    }
    let mut recorders = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (l, r) = t
            .await
            .map_err(|e| LoadError::Internal(format!("load client failed: {e}")))?;
        ledger.merge(l);
        recorders.push(r);
    }
    let elapsed = shared.started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let summary = Summary::merge(recorders, micros(elapsed))?;

    // Phase: check.
    let consistency = if opts.check {
        Some(check::check(&api, &world, &ledger).await?)
    } else {
        None
    };
    let duration_s = elapsed.as_secs_f64();
    Ok(LoadReport {
        frontend: base,
        mode: opts.mode,
        clients: opts.clients,
        requests: summary.requests,
        duration_s,
        requests_per_s: summary.requests as f64 / duration_s.max(1e-9),
        latency: summary.latency,
        errors: summary
            .outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "200")
            .map(|(_, n)| n)
            .sum(),
        status_counts: summary.outcomes,
        consistency,
        timeline: summary.timeline,
        timeline_truncated: summary.timeline_truncated,
        distribution: summary.distribution,
    })
}

/// Run once per client count in `clients` (each with fresh users and events), for a plot of
/// throughput and latency against concurrency.
pub async fn sweep(opts: &LoadOptions, clients: &[usize]) -> Result<SweepReport, LoadError> {
    if clients.is_empty() {
        return Err(LoadError::BadOptions(
            "the sweep needs at least one client count".into(),
        ));
    }
    let mut runs = Vec::with_capacity(clients.len());
    for &c in clients {
        let opts = LoadOptions {
            clients: c,
            ..opts.clone()
        };
        runs.push(run(&opts).await?);
    }
    Ok(SweepReport {
        mode: opts.mode,
        runs,
    })
}

/// Parse a sweep's client counts: `1,4,16,64`.
pub fn parse_clients_list(s: &str) -> Result<Vec<usize>, LoadError> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<usize>() {
                Ok(n) if (1..=CLIENTS_MAX).contains(&n) => Ok(n),
                _ => Err(LoadError::BadOptions(format!(
                    "client count {part:?} in {s:?}: expected an integer from 1 to {CLIENTS_MAX}"
                ))),
            }
        })
        .collect()
}

/// Write `svg` to `path`.
pub fn write_svg(path: &std::path::Path, svg: &str) -> Result<(), LoadError> {
    std::fs::write(path, svg).map_err(|e| LoadError::Report(format!("{}: {e}", path.display())))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn progress_bar(opts: &LoadOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let (len, template) = match opts.stop {
        Stop::Requests(n) => (
            n,
            "{elapsed_precise} [{bar:40}] {pos}/{len} requests  {msg}",
        ),
        Stop::Duration(d) => (
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            "{elapsed_precise} [{bar:40}] {msg}",
        ),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Update the bar every 100 ms until aborted.
async fn tick_progress(bar: ProgressBar, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let done = shared.completed.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let secs = shared.started.elapsed().as_secs_f64().max(1e-3);
        match shared.stop {
            Stop::Requests(_) => bar.set_position(done),
            Stop::Duration(_) => bar.set_position(micros(shared.started.elapsed()) / 1000),
        }
        bar.set_message(format!(
            "{done} done, {:.0}/s, {errors} not 200",
            done as f64 / secs
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_end_urls() {
        assert_eq!(base_url("127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(
            base_url("http://localhost:8000/").unwrap(),
            "http://localhost:8000"
        );
        for bad in ["https://x:1", "http://x:1/api", "http://x:1?a=b", "::", ""] {
            assert!(
                matches!(base_url(bad), Err(LoadError::BadOptions(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_are_validated() {
        let ok = LoadOptions::default();
        assert!(validate(&ok).is_ok());
        for bad in [
            LoadOptions {
                clients: 0,
                ..ok.clone()
            },
            LoadOptions {
                clients: CLIENTS_MAX + 1,
                ..ok.clone()
            },
            LoadOptions {
                stop: Stop::Requests(0),
                ..ok.clone()
            },
            LoadOptions {
                stop: Stop::Duration(Duration::ZERO),
                ..ok.clone()
            },
            LoadOptions {
                events: 0,
                ..ok.clone()
            },
            LoadOptions {
                tickets_per_event: 0,
                ..ok.clone()
            },
            LoadOptions {
                request_timeout_ms: 0,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(validate(&bad), Err(LoadError::BadOptions(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn modes_and_client_lists_parse() {
        for m in [Mode::Create, Mode::Purchase, Mode::Transfer, Mode::Mixed] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("buy".parse::<Mode>().is_err());
        assert_eq!(
            parse_clients_list("1, 4,16,64").unwrap(),
            vec![1, 4, 16, 64]
        );
        for bad in ["", "1,,2", "0", "x", "-1", "99999999"] {
            assert!(parse_clients_list(bad).is_err(), "{bad:?}");
        }
    }
}
