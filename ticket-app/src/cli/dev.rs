//! `ticket dev`: a whole local cluster, 3 replicas and a front end, as child processes of this
//! one (the same binary, run as `ticket node` and `ticket frontend`).
//!
//! - **Key.** A random cluster key is generated (or taken from `TICKET_CLUSTER_KEY`) and handed
//!   to the children in that environment variable, never on their command line; only a short
//!   prefix is printed.
//! - **Supervision.** Each child has a supervisor task. A child that exits while the cluster is
//!   running is restarted with the same flags and data directory, after a pause that doubles
//!   while it keeps dying quickly. A child that exits before it was ever ready (a port in use,
//!   say) stops the whole cluster with an error instead: restarting would not help.
//! - **No orphans.** Children run in their own process group, so a Ctrl-C in the terminal reaches
//!   only this process, which then stops them in order. Each child's stdin is a pipe from this
//!   process, and children run with `--exit-on-stdin-eof`: if this process dies, even by
//!   `kill -9`, the pipe closes and every child stops by itself.
//! - **Ready.** The banner with the URLs is printed once every process serves and the replicas
//!   agree on a primary (after a restart they first elect one among themselves).
//! - **Logs.** Each child's stderr is copied to this process's stderr, every line prefixed with
//!   the child's name.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{shutdown_signal, CliError, CLUSTER_KEY_ENV, READY_PREFIX};
use crate::replica_routes::StatusBody;

/// Time allowed for every child to print its `ready` line at the first start.
const READY_TIMEOUT_MS: u64 = 60_000;
/// Pause before restarting a child that died; doubles while it keeps dying quickly.
const RESTART_PAUSE_MIN_MS: u64 = 200;
/// Longest pause between restarts of a child that keeps dying.
const RESTART_PAUSE_MAX_MS: u64 = 5_000;
/// A child that ran at least this long before dying is restarted after the shortest pause.
const STABLE_RUN_MS: u64 = 10_000;
/// After its stdin is closed, a child gets this long to stop on its own before it is killed.
const CHILD_STOP_GRACE_MS: u64 = 5_000;
/// Pause between two rounds of `/status` polls while waiting for a primary.
const STATUS_POLL_INTERVAL_MS: u64 = 50;
/// Timeout of one `/status` poll.
const STATUS_POLL_TIMEOUT_MS: u64 = 1_000;
/// Most replicas `ticket dev` runs.
const REPLICAS_MAX: u16 = 9;

/// One-line description in `ticket --help`.
pub const ABOUT: &str =
    "Run a local cluster (3 replicas and a front end) as child processes, until Ctrl-C";
/// Description in `ticket dev --help`.
pub const LONG_ABOUT: &str =
    "Run a local cluster on 127.0.0.1: replicas on --replica-port and the ports \
        after it (the first one is the configured primary), and a front end on --port serving \
        the public API. Data lives under --data-dir, one directory per replica, and survives \
        restarts. A replica process that dies is restarted. Ctrl-C stops everything.\n\n\
        The cluster key is random (or TICKET_CLUSTER_KEY if set) and is handed to the \
        processes in the environment.";
/// Examples at the end of `ticket dev --help`.
pub const EXAMPLES: &str = "Example:\n  ticket dev\n  curl -s -X POST localhost:4560/users/create -d '{\"username\": \"ada\"}'";

/// `ticket dev` flags.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Port of the front end (the public API).
    #[arg(long, default_value_t = 4560)]
    pub port: u16,
    /// Port of the first replica; the others use the ports right after it.
    #[arg(long, default_value_t = 4600)]
    pub replica_port: u16,
    /// Number of replicas (1 to 9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=REPLICAS_MAX as i64))]
    pub replicas: u16,
    /// Directory for the replicas' data (node-PORT inside, one per replica).
    #[arg(long, value_name = "DIR", default_value = "ticket-data")]
    pub data_dir: PathBuf,
}

/// One child process: what to run and how it is called.
#[derive(Clone, Debug)]
struct Spec {
    /// `node-4600`, `frontend-4560`: the log prefix.
    name: String,
    /// Its address.
    addr: String,
    /// Flags after the binary's name.
    args: Vec<OsString>,
}

/// Why a supervisor stopped.
enum Exit {
    /// Asked to.
    Stopped,
    /// The child died before it was ever ready.
    NeverReady(String),
}

/// Start the cluster, print where it is, run until Ctrl-C or SIGTERM, stop every child.
pub async fn run(args: DevArgs) -> Result<(), CliError> {
    let specs = plan(&args)?;
    std::fs::create_dir_all(&args.data_dir).map_err(|source| CliError::DataDir {
        dir: args.data_dir.display().to_string(),
        source,
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Dev(format!("cannot find this program's path: {e}")))?;
    let key = match std::env::var(CLUSTER_KEY_ENV) {
        Ok(k) if !k.is_empty() => k,
        _ => format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    };
    // The children check the key too; checking here gives one error instead of four.
    replica_http::ClusterKey::new(&key)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<String>();
    let mut supervisors = JoinSet::new();
    for spec in specs.clone() {
        supervisors.spawn(supervise(
            spec,
            exe.clone().into(),
            key.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);

    let shutdown = shutdown_signal(false);
    tokio::pin!(shutdown);
    let mut outcome = Ok(());

    // Phase: wait until every child is ready (or one fails, or we are told to stop).
    let deadline = tokio::time::sleep(Duration::from_millis(READY_TIMEOUT_MS));
    tokio::pin!(deadline);
    let mut ready = 0;
    let mut stopping = false;
    while ready < specs.len() && !stopping {
        tokio::select! {
            Some(_) = ready_rx.recv() => ready += 1,
            Some(done) = supervisors.join_next() => {
                outcome = supervisor_outcome(done);
                stopping = true;
            }
            () = &mut deadline => {
                outcome = Err(CliError::Dev(format!(
                    "only {ready} of {} processes were ready after {} s; see their logs above",
                    specs.len(), READY_TIMEOUT_MS / 1000
                )));
                stopping = true;
            }
            () = &mut shutdown => stopping = true,
        }
    }

    // Phase: wait until the replicas agree on a primary and have applied what it committed,
    // so that the first request after the banner is served at once (after a restart, the
    // replicas first elect a primary among themselves).
    if !stopping {
        let replicas: Vec<String> = specs
            .iter()
            .filter(|s| s.name.starts_with("node-"))
            .map(|s| s.addr.clone())
            .collect();
        tokio::select! {
            () = settled(&replicas) => {}
            Some(done) = supervisors.join_next() => {
                outcome = supervisor_outcome(done);
                stopping = true;
            }
            () = &mut deadline => {
                tracing::warn!("the replicas have not agreed on a primary yet; requests will wait for one");
            }
            () = &mut shutdown => stopping = true,
        }
    }

    // Phase: serve until told to stop, or until a supervisor gives up.
    if !stopping {
        print_banner(&args, &specs, &key);
        tokio::select! {
            Some(done) = supervisors.join_next() => outcome = supervisor_outcome(done),
            () = &mut shutdown => {}
        }
    }

    // Phase: stop every child (supervisors close stdin, wait, then kill).
    eprintln!("ticket dev: stopping");
    stop_tx.send_replace(true);
    while let Some(done) = supervisors.join_next().await {
        if outcome.is_ok() {
            outcome = supervisor_outcome(done);
        }
    }
    outcome
}

/// Completes once every replica answers `GET /status` naming the same primary, which is one of
/// them and says so, and each has applied everything that primary has committed.
async fn settled(replicas: &[String]) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_millis(STATUS_POLL_TIMEOUT_MS))
        .no_proxy()
        .build()
    else {
        return;
    };
    loop {
        let mut statuses = Vec::new();
        for addr in replicas {
            let status = match http.get(format!("http://{addr}/status")).send().await {
                Ok(r) => r.json::<StatusBody>().await.ok(),
                Err(_) => None,
            };
            statuses.extend(status);
        }
        // A primary counts once it has applied an entry of its own epoch: until then its commit
        // point is the one it last saved before a restart, possibly behind.
        let primary = statuses
            .iter()
            .find(|s| s.role == "primary" && s.applied.epoch == s.epoch);
        if let Some(p) = primary {
            let agreed = statuses.len() == replicas.len()
                && statuses.iter().all(|s| {
                    s.primary.as_deref() == Some(p.id.as_str()) && s.applied.index >= p.commit
                });
            if agreed {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_INTERVAL_MS)).await;
    }
}

fn supervisor_outcome(done: Result<Exit, tokio::task::JoinError>) -> Result<(), CliError> {
    match done {
        Ok(Exit::Stopped) => Ok(()),
        Ok(Exit::NeverReady(why)) => Err(CliError::Dev(why)),
        Err(e) => Err(CliError::Dev(format!("a supervisor failed: {e}"))),
    }
}

/// The children: replicas first (the first is the configured primary), then the front end.
fn plan(args: &DevArgs) -> Result<Vec<Spec>, CliError> {
    let last = u32::from(args.replica_port) + u32::from(args.replicas) - 1;
    if args.replica_port == 0 || last > u32::from(u16::MAX) {
        return Err(CliError::Usage(format!(
            "--replica-port {} with {} replicas does not fit in 1..=65535",
            args.replica_port, args.replicas
        )));
    }
    let ports: Vec<u16> = (0..args.replicas).map(|i| args.replica_port + i).collect();
    if args.port == 0 || ports.contains(&args.port) {
        return Err(CliError::Usage(format!(
            "--port {} must be non-zero and differ from the replica ports {}..={last}",
            args.port, args.replica_port
        )));
    }
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let primary = addr(args.replica_port);
    let mut specs = Vec::new();
    for &port in &ports {
        let dir = args.data_dir.join(format!("node-{port}"));
        let mut a: Vec<OsString> = vec!["node".into(), "--port".into(), port.to_string().into()];
        a.extend([
            "--primary".into(),
            OsString::from(if port == args.replica_port {
                "this".to_string()
            } else {
                primary.clone()
            }),
        ]);
        a.extend(["--data-dir".into(), dir.into_os_string()]);
        specs.push(Spec {
            name: format!("node-{port}"),
            addr: addr(port),
            args: a,
        });
    }
    specs.push(Spec {
        name: format!("frontend-{}", args.port),
        addr: addr(args.port),
        args: vec![
            "frontend".into(),
            "--port".into(),
            args.port.to_string().into(),
            "--primary".into(),
            primary.into(),
        ],
    });
    Ok(specs)
}

fn print_banner(args: &DevArgs, specs: &[Spec], key: &str) {
    let fe = format!("http://127.0.0.1:{}", args.port);
    let mut out = String::new();
    out.push_str(&format!(
        "\nticket dev: {} replicas and a front end on 127.0.0.1\n\n",
        args.replicas
    ));
    out.push_str(&format!(
        "  front end  {fe}   (public API; {fe}/dashboard, {fe}/openapi.json, {fe}/metrics)\n"
    ));
    for (i, s) in specs
        .iter()
        .filter(|s| s.name.starts_with("node-"))
        .enumerate()
    {
        let note = if i == 0 {
            "   (configured primary; /status, /metrics, read-only /events, /users/{id})"
        } else {
            ""
        };
        out.push_str(&format!("  replica    http://{}{note}\n", s.addr));
    }
    out.push_str(&format!(
        "  data       {}\n  key        {}… (in {CLUSTER_KEY_ENV} for the processes)\n\n",
        args.data_dir.display(),
        key.chars().take(4).collect::<String>()
    ));
    out.push_str(&format!(
        "try:\n  curl -s -X POST {fe}/users/create -d '{{\"username\": \"ada\"}}'\n  \
         curl -s -X POST {fe}/events/create -d '{{\"userid\": 1, \"eventname\": \"gig\", \"numtickets\": 100}}'\n  \
         curl -s -X POST {fe}/events/1/purchase/1 -d '{{\"tickets\": 2}}'\n  \
         curl -s {fe}/users/1\n\nCtrl-C stops everything.\n"
    ));
    println!("{out}");
}

/// Run one child until told to stop, restarting it when it dies. Reports on `ready` the first
/// time the child prints its ready line.
async fn supervise(
    spec: Spec,
    exe: OsString,
    key: String,
    mut stop: watch::Receiver<bool>,
    ready: mpsc::UnboundedSender<String>,
) -> Exit {
    let mut pause_ms = RESTART_PAUSE_MIN_MS;
    let mut ever_ready = false;
    loop {
        let started = Instant::now();
        let (mut child, mut became_ready) = match spawn(&spec, &exe, &key) {
            Ok(c) => c,
            Err(e) => return Exit::NeverReady(format!("cannot start {}: {e}", spec.name)),
        };
        tracing::info!(child = %spec.name, pid = child.id(), "started");
        // Held here, not in `child`: `Child::wait` closes the child's stdin, which for these
        // children means "stop".
        let mut stdin = child.stdin.take();
        let mut watching = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                got = became_ready.recv(), if watching => match got {
                    Some(()) => {
                        if !ever_ready {
                            let _ = ready.send(spec.name.clone());
                        }
                        ever_ready = true;
                    }
                    None => watching = false,
                },
                () = stopped(&mut stop) => {
                    drop(stdin.take());
                    stop_child(&spec.name, &mut child).await;
                    return Exit::Stopped;
                }
            }
        };
        if *stop.borrow() {
            return Exit::Stopped;
        }
        let how = match &status {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        if !ever_ready {
            return Exit::NeverReady(format!(
                "{} ({}) exited before it was ready: {how}; see its log above",
                spec.name, spec.addr
            ));
        }
        if started.elapsed() >= Duration::from_millis(STABLE_RUN_MS) {
            pause_ms = RESTART_PAUSE_MIN_MS;
        }
        tracing::warn!(child = %spec.name, status = %how, restart_in_ms = pause_ms, "child exited; restarting it");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            () = stopped(&mut stop) => return Exit::Stopped,
        }
        pause_ms = (pause_ms * 2).min(RESTART_PAUSE_MAX_MS);
    }
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Start a child: own process group, stdin a pipe we hold, stdout watched for the ready line,
/// stderr copied to ours with a prefix.
fn spawn(
    spec: &Spec,
    exe: &OsString,
    key: &str,
) -> std::io::Result<(Child, mpsc::UnboundedReceiver<()>)> {
    let mut cmd = Command::new(exe);
    cmd.args(&spec.args)
        .arg("--exit-on-stdin-eof")
        .env(CLUSTER_KEY_ENV, key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        let name = spec.name.clone();
        tokio::spawn(forward(out, name, Some(ready_tx)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, spec.name.clone(), None));
    }
    Ok((child, ready_rx))
}

/// Copy a child's output lines to our stderr with its name in front; a `ready` line is
/// reported on `ready` instead.
async fn forward(
    from: impl AsyncRead + Unpin,
    name: String,
    ready: Option<mpsc::UnboundedSender<()>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = &ready {
            if line.starts_with(READY_PREFIX) {
                let _ = tx.send(());
                continue;
            }
        }
        eprintln!("{name:>15} | {line}");
    }
}

/// Wait for a child whose stdin was closed to stop by itself; kill it if it does not.
async fn stop_child(name: &str, child: &mut Child) {
    match tokio::time::timeout(Duration::from_millis(CHILD_STOP_GRACE_MS), child.wait()).await {
        Ok(_) => tracing::info!(child = %name, "stopped"),
        Err(_) => {
            tracing::warn!(child = %name, "did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(port: u16, replica_port: u16, replicas: u16) -> DevArgs {
        DevArgs {
            port,
            replica_port,
            replicas,
            data_dir: PathBuf::from("d"),
        }
    }

    #[test]
    fn plan_names_the_first_replica_primary() {
        let specs = plan(&args(4560, 4600, 3)).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["node-4600", "node-4601", "node-4602", "frontend-4560"]
        );
        let flags = |i: usize| -> Vec<String> {
            specs[i]
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            flags(0),
            [
                "node",
                "--port",
                "4600",
                "--primary",
                "this",
                "--data-dir",
                "d/node-4600"
            ]
        );
        assert_eq!(flags(2)[4], "127.0.0.1:4600");
        assert_eq!(
            flags(3),
            ["frontend", "--port", "4560", "--primary", "127.0.0.1:4600"]
        );
    }

    #[test]
    fn plan_refuses_clashing_ports() {
        assert!(plan(&args(4601, 4600, 3)).is_err());
        assert!(plan(&args(0, 4600, 3)).is_err());
        assert!(plan(&args(4560, 65535, 2)).is_err());
        assert!(plan(&args(4560, 0, 1)).is_err());
        assert!(plan(&args(4560, 65535, 1)).is_ok());
    }
}
