//! Real `ticket` processes for end-to-end tests.
//!
//! - [`Proc`]: one child process, killed on drop (so a failing test leaves nothing running), with
//!   stdin a pipe it holds: the child runs with `--exit-on-stdin-eof`, so even if the test binary
//!   itself is killed, its children stop.
//! - [`Cluster`]: replicas and a front end on 127.0.0.1, each started with `--port 0` and found
//!   through the `ready` line it prints (no port is guessed); a per-test temporary directory for
//!   data and logs, and a per-test cluster key.
//! - [`eventually`]: wait for a condition with a deadline, the only way these tests wait.
//!
//! Logs of every process go to `<tmp>/<name>.log`; when a test fails the directory is kept and
//! its path printed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use ticket_app::StatusBody;
use tokio::time::Instant;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ticket");

/// Longest a process may take to print its ready line.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Longest any condition may take to come true before the test fails. Generous: the machine
/// is shared and the binaries are unoptimized; a passing run takes a small fraction of it.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// Timeout of one `/status` poll: short, so that polling a replica that is stopped (SIGSTOP: its
/// kernel still accepts connections, nobody answers) does not hold up a test.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Timeout of one HTTP request from a test. Above the front end's 10 s request deadline, so a
/// front end that gives up is seen as its 503, not as a client timeout.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One cluster at a time: each test runs four processes, and two cores are shared with other
/// work; running clusters side by side would only make failover timings noisy.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hold this for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A directory under the system temp dir, removed on drop unless the thread is panicking (a
/// failed test keeps its logs, and says where).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ticket-e2e-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; logs and data kept in {}", self.0.display());
        } else if std::env::var_os("E2E_KEEP").is_some() {
            eprintln!("E2E_KEEP: logs and data kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running `ticket` child process.
pub struct Proc {
    pub name: String,
    /// `host:port` from its ready line.
    pub addr: String,
    child: Child,
    /// Held open: closing it tells the child to stop.
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Start `ticket <args> --exit-on-stdin-eof` with `key` in the environment, stderr to
    /// `log`, and wait for its ready line.
    pub async fn start(name: &str, args: &[String], key: &str, log: &Path) -> Proc {
        let log_file = File::options().create(true).append(true).open(log).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--exit-on-stdin-eof")
            .env("TICKET_CLUSTER_KEY", key)
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("ready ") {
                    let addr = url.split("http://").nth(1).unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut proc = Proc {
            name: name.to_string(),
            addr: String::new(),
            child,
            stdin: Some(stdin),
        };
        let deadline = Instant::now() + READY_WAIT;
        loop {
            match rx.try_recv() {
                Ok(addr) => {
                    proc.addr = addr;
                    return proc;
                }
                Err(mpsc::TryRecvError::Disconnected) => panic!(
                    "{name} exited before it was ready ({:?}); log: {}",
                    proc.child.try_wait(),
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(Instant::now() < deadline, "{name} not ready in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// `kill -9`, and reap it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Close the child's stdin, as a parent that dies would.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Send a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Wait for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process cannot die of SIGKILL until it is continued; a test that panics
        // between STOP and CONT must not leave it behind.
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Poll `check` every 20 ms until it returns `Some`, or fail after [`WAIT_MAX`] saying `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_MAX:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP answer: status and JSON body (`Null` when the body is not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
}

/// A test's HTTP client (no pooling surprises: one client per test).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// `GET http://{addr}{path}`; `None` if the process cannot be reached.
    pub async fn try_get(&self, addr: &str, path: &str) -> Option<Answer> {
        let r = self
            .client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .ok()?;
        Some(answer(r).await)
    }

    pub async fn get(&self, addr: &str, path: &str) -> Answer {
        self.try_get(addr, path)
            .await
            .unwrap_or_else(|| panic!("GET {addr}{path}: unreachable"))
    }

    /// `POST` a raw body.
    pub async fn post_raw(&self, addr: &str, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        let r = self
            .client
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {addr}{path}: {e}"));
        answer(r).await
    }

    pub async fn post(&self, addr: &str, path: &str, body: Value) -> Answer {
        self.post_raw(addr, path, body.to_string()).await
    }

    /// A replica's `/status`, if it answers.
    pub async fn status(&self, addr: &str) -> Option<StatusBody> {
        let r = self
            .client
            .get(format!("http://{addr}/status"))
            .timeout(STATUS_TIMEOUT)
            .send()
            .await
            .ok()?;
        let a = answer(r).await;
        if a.status != StatusCode::OK {
            return None;
        }
        serde_json::from_value(a.body).ok()
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = r.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        content_type,
    }
}

/// Replicas (the first the configured primary) and one front end, as real processes.
pub struct Cluster {
    pub dir: TempDir,
    pub key: String,
    pub http: Http,
    nodes: Vec<Option<Proc>>,
    /// Replica ports, known once each has started (a restart reuses its port).
    ports: Vec<u16>,
    frontend: Option<Proc>,
}

impl Cluster {
    /// `n` replicas and a front end; returns once the primary counts every replica in sync.
    pub async fn start(label: &str, n: usize) -> Cluster {
        let dir = TempDir::new(label);
        let key = format!(
            "e2e-{}-{}",
            std::process::id(),
            uuid_ish(dir.path().to_string_lossy().as_ref())
        );
        let mut c = Cluster {
            dir,
            key,
            http: Http::new(),
            nodes: (0..n).map(|_| None).collect(),
            ports: vec![0; n],
            frontend: None,
        };
        for i in 0..n {
            c.start_node(i).await;
        }
        let primary = c.node_addr(0);
        let fe_args = vec![
            "frontend".to_string(),
            "--port".into(),
            "0".into(),
            "--primary".into(),
            primary,
        ];
        let log = c.dir.path().join("frontend.log");
        c.frontend = Some(Proc::start("frontend", &fe_args, &c.key, &log).await);
        c.wait_in_sync(n).await;
        c
    }

    fn node_args(&self, i: usize) -> Vec<String> {
        let primary = if i == 0 {
            "this".to_string()
        } else {
            format!("127.0.0.1:{}", self.ports[0])
        };
        vec![
            "node".into(),
            "--port".into(),
            self.ports[i].to_string(),
            "--primary".into(),
            primary,
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("node-{i}"))
                .to_string_lossy()
                .into_owned(),
        ]
    }

    /// Start replica `i` (first time: on a port the kernel picks; later: on the same port,
    /// from the same data directory).
    pub async fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "replica {i} is running");
        let log = self.dir.path().join(format!("node-{i}.log"));
        let p = Proc::start(&format!("node-{i}"), &self.node_args(i), &self.key, &log).await;
        self.ports[i] = p.port();
        self.nodes[i] = Some(p);
    }

    /// `kill -9` replica `i`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].take().expect("replica is running").kill9();
    }

    pub fn node(&self, i: usize) -> &Proc {
        self.nodes[i].as_ref().expect("replica is running")
    }

    pub fn node_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn fe(&self) -> String {
        self.frontend.as_ref().unwrap().addr.clone()
    }

    /// Indices of running replicas.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Statuses of the running replicas that answer.
    pub async fn statuses(&self) -> BTreeMap<usize, StatusBody> {
        let mut out = BTreeMap::new();
        for i in self.running() {
            if let Some(s) = self.http.status(&self.node_addr(i)).await {
                out.insert(i, s);
            }
        }
        out
    }

    /// The running replica that says it is primary, with the highest epoch.
    pub async fn primary(&self) -> Option<(usize, StatusBody)> {
        self.statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.role == "primary")
            .max_by_key(|(_, s)| s.epoch)
    }

    /// Wait until the primary's in-sync set has `n` members.
    pub async fn wait_in_sync(&self, n: usize) -> (usize, StatusBody) {
        eventually(&format!("a primary with {n} replicas in sync"), || async {
            self.primary().await.filter(|(_, s)| s.in_sync.len() == n)
        })
        .await
    }

    /// Wait until every running replica has applied everything the primary has committed now,
    /// and answers its read routes.
    pub async fn wait_converged(&self) {
        let (_, p) = eventually("a primary", || self.primary()).await;
        let target = p.commit;
        eventually(
            &format!("every running replica applied through index {target}"),
            || async {
                let s = self.statuses().await;
                let all = s.len() == self.running().len()
                    && s.values().all(|st| st.applied.index >= target);
                all.then_some(())
            },
        )
        .await;
    }

    // --- The public API, through the front end.

    pub async fn create_user(&self, name: &str) -> u64 {
        let a = self
            .http
            .post(&self.fe(), "/users/create", json!({ "username": name }))
            .await;
        assert_eq!(a.status, 200, "create user: {a:?}");
        a.body["userid"].as_u64().unwrap()
    }

    pub async fn create_event(&self, userid: u64, name: &str, numtickets: u64) -> u64 {
        let a = self
            .http
            .post(
                &self.fe(),
                "/events/create",
                json!({ "userid": userid, "eventname": name, "numtickets": numtickets }),
            )
            .await;
        assert_eq!(a.status, 200, "create event: {a:?}");
        a.body["eventid"].as_u64().unwrap()
    }

    pub async fn purchase(&self, eventid: u64, userid: u64, tickets: u64) -> Answer {
        self.http
            .post(
                &self.fe(),
                &format!("/events/{eventid}/purchase/{userid}"),
                json!({ "tickets": tickets }),
            )
            .await
    }

    pub async fn transfer(&self, from: u64, eventid: u64, tickets: u64, to: u64) -> Answer {
        self.http
            .post(
                &self.fe(),
                &format!("/users/{from}/tickets/transfer"),
                json!({ "eventid": eventid, "tickets": tickets, "targetuser": to }),
            )
            .await
    }

    /// `GET` through the front end; must be 200.
    pub async fn read(&self, path: &str) -> Value {
        let a = self.http.get(&self.fe(), path).await;
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        a.body
    }
}

/// Tickets of `eventid` that `user` (a `GET /users/{id}` body) holds.
pub fn held(user: &Value, eventid: u64) -> u64 {
    user["holdings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["eventid"] == eventid)
        .map_or(0, |h| h["tickets"].as_u64().unwrap())
}

/// A short deterministic suffix from a string (keys differ between tests without an RNG).
fn uuid_ish(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
