//! The command line: help on every subcommand, clear refusals, and `ticket dev` as a user runs
//! it (a replica it restarts, Ctrl-C, and no orphans when it is killed).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::harness::*;

fn ticket(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TICKET_CLUSTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--help` works for the binary and every subcommand, and names every flag.
#[test]
fn help_on_every_subcommand() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &["Usage: ticket <COMMAND>", "node", "frontend", "dev", "load"],
        ),
        (
            &["load", "--help"],
            &["Usage: ticket load", "--frontend", "--mode", "--clients"],
        ),
        (
            &["node", "--help"],
            &[
                "Usage: ticket node",
                "--port",
                "--primary",
                "--host",
                "--data-dir",
                "--cluster-key",
                "TICKET_CLUSTER_KEY",
            ],
        ),
        (
            &["frontend", "--help"],
            &[
                "Usage: ticket frontend",
                "--port",
                "--primary",
                "--host",
                "--cluster-key",
            ],
        ),
        (
            &["dev", "--help"],
            &[
                "Usage: ticket dev",
                "--port",
                "--replica-port",
                "--replicas",
                "--data-dir",
            ],
        ),
        (&["help", "node"], &["Usage: ticket node"]),
    ];
    for (args, wants) in cases {
        let out = ticket(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let stdout = text(&out.stdout);
        for want in *wants {
            assert!(stdout.contains(want), "{args:?} lacks {want:?}:\n{stdout}");
        }
        assert!(
            !stdout.contains("exit-on-stdin-eof"),
            "internal flag shown in {args:?}"
        );
    }
}

/// A node or front end without a usable key, or with flags that cannot work, refuses to start:
/// non-zero exit and one line saying what to fix.
#[test]
fn refuses_to_start_without_a_usable_key_or_with_bad_flags() {
    let dir = TempDir::new("cli-refusals");
    let data = dir.path().join("d").to_string_lossy().into_owned();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "node",
                "--port",
                "0",
                "--primary",
                "this",
                "--data-dir",
                &data,
            ],
            "no cluster key: pass --cluster-key KEY or set TICKET_CLUSTER_KEY",
        ),
        (
            &["frontend", "--port", "0", "--primary", "127.0.0.1:4600"],
            "no cluster key",
        ),
        (
            &[
                "node",
                "--port",
                "0",
                "--primary",
                "this",
                "--cluster-key",
                "two words",
                "--data-dir",
                &data,
            ],
            "unusable cluster key",
        ),
        (
            &[
                "node",
                "--port",
                &taken_port,
                "--primary",
                "this",
                "--cluster-key",
                "k",
                "--data-dir",
                &data,
            ],
            "cannot listen on 127.0.0.1:",
        ),
        (
            &[
                "node",
                "--port",
                "0",
                "--primary",
                "nowhere",
                "--cluster-key",
                "k",
            ],
            "expected HOST:PORT",
        ),
        (
            &["node", "--primary", "this", "--cluster-key", "k"],
            "--port",
        ),
        (
            &[
                "frontend",
                "--port",
                "0",
                "--primary",
                "this",
                "--cluster-key",
                "k",
            ],
            "expected HOST:PORT",
        ),
        (&["dev", "--replicas", "0"], "--replicas"),
        (
            &["dev", "--port", "4600", "--replica-port", "4600"],
            "must be non-zero and differ",
        ),
    ];
    for (args, says) in cases {
        let out = ticket(args);
        assert!(!out.status.success(), "{args:?} started: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(says),
            "{args:?}: stderr lacks {says:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    drop(taken);
}

/// A node with the key in `TICKET_CLUSTER_KEY` starts; SIGTERM stops it cleanly (status 0),
/// and so does closing its stdin when it runs with `--exit-on-stdin-eof`.
#[tokio::test]
async fn a_node_stops_cleanly_on_sigterm_and_on_stdin_eof() {
    let _serial = serial().await;
    let dir = TempDir::new("cli-stop");
    let args = |n: &str| -> Vec<String> {
        ["node", "--port", "0", "--primary", "this", "--data-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([dir.path().join(n).to_string_lossy().into_owned()])
            .collect()
    };
    let mut p = Proc::start("term", &args("a"), "k3y", &dir.path().join("a.log")).await;
    let http = Http::new();
    eventually("the node to take office", || async {
        http.status(&p.addr).await.filter(|s| s.role == "primary")
    })
    .await;
    p.signal("TERM");
    assert!(p.wait_exit().await.success());
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(log.contains("SIGTERM: stopping"), "{log}");

    let mut p = Proc::start("eof", &args("b"), "k3y", &dir.path().join("b.log")).await;
    eventually("the node to take office", || async {
        http.status(&p.addr).await.filter(|s| s.role == "primary")
    })
    .await;
    p.close_stdin();
    assert!(p.wait_exit().await.success());
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(log.contains("stdin closed: stopping"), "{log}");
}

/// Ports `p, p+1, p+2` free for the replicas and another for the front end (found by binding
/// and releasing; nothing else on this host is expected to grab them in between).
fn free_ports() -> (u16, u16) {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        if base > 65_000 {
            continue;
        }
        let others: Vec<_> = (1..3)
            .map(|k| TcpListener::bind(("127.0.0.1", base + k)))
            .collect();
        if others.iter().all(Result::is_ok) {
            let fe = TcpListener::bind("127.0.0.1:0").unwrap();
            return (fe.local_addr().unwrap().port(), base);
        }
    }
    panic!("no three consecutive free ports");
}

/// A running `ticket dev`, killed on drop.
struct Dev {
    child: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Start `ticket dev` and wait for its banner.
    async fn start(fe: u16, base: u16, data: &Path, log: &Path) -> Dev {
        let mut child = Command::new(BIN)
            .args([
                "dev",
                "--port",
                &fe.to_string(),
                "--replica-port",
                &base.to_string(),
            ])
            .arg("--data-dir")
            .arg(data)
            .env_remove("TICKET_CLUSTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let dev = Dev { child };
        let mut banner = String::new();
        let text = eventually("the dev banner", || {
            while let Ok(line) = rx.try_recv() {
                banner.push_str(&line);
                banner.push('\n');
            }
            let done = banner.contains("Ctrl-C stops everything");
            let out = done.then(|| banner.clone());
            async move { out }
        })
        .await;
        assert!(text.contains(&format!("http://127.0.0.1:{fe}")), "{text}");
        assert!(text.contains("curl"), "{text}");
        dev
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its children: pid and command line, from /proc.
    fn children(&self) -> Vec<(u32, String)> {
        children_of(self.pid())
    }
}

fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(parent) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, cmd));
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// `ticket dev` end to end: the banner, the API, a replica killed and restarted by it, a clean
/// stop on Ctrl-C (SIGINT) with no child left, data kept across a restart of the whole thing,
/// and no orphans even when `ticket dev` itself is killed with `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_a_cluster_restarts_replicas_and_leaves_no_orphans() {
    let _serial = serial().await;
    let dir = TempDir::new("dev");
    let data = dir.path().join("data");
    let (fe_port, base) = free_ports();
    let fe = format!("127.0.0.1:{fe_port}");
    let http = Http::new();

    // Phase: start it; the API works through the front end.
    let mut dev = Dev::start(fe_port, base, &data, &dir.path().join("dev-1.log")).await;
    let a = http
        .post(&fe, "/users/create", json!({ "username": "ada" }))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let userid = a.body["userid"].as_u64().unwrap();
    let kids = dev.children();
    assert_eq!(kids.len(), 4, "{kids:?}");

    // Phase: `ticket load` against it: the consistency check passes (exit 0, and in the JSON),
    // and the SVG report is a document with both plots.
    let svg_path = dir.path().join("load.svg");
    let url = format!("http://{fe}");
    let svg_arg = svg_path.to_string_lossy().to_string();
    let load = ticket(&[
        "load",
        "--frontend",
        &url,
        "--mode",
        "mixed",
        "--clients",
        "4",
        "--requests",
        "300",
        "--report",
        &svg_arg,
        "--json",
    ]);
    assert!(
        load.status.success(),
        "ticket load failed: {}",
        text(&load.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    assert_eq!(report["consistency"]["passed"], json!(true), "{report:#}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let root = svg.trim_start().trim_start_matches(|c| c != '<');
    assert!(
        root.starts_with("<svg") || root.starts_with("<?xml"),
        "not an SVG document"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "truncated SVG");
    for caption in [
        ticket_app::load::plot::TIMELINE_CAPTION,
        ticket_app::load::plot::DISTRIBUTION_CAPTION,
    ] {
        assert!(
            svg.contains(caption),
            "the report lacks the {caption:?} plot"
        );
    }

    // Phase: kill -9 a replica; dev starts a new one on the same port, which catches up.
    let victim_port = format!("--port {}", base + 1);
    let (victim, _) = kids
        .iter()
        .find(|(_, cmd)| cmd.contains(&victim_port))
        .cloned()
        .unwrap();
    signal(victim, "KILL");
    let replica = format!("127.0.0.1:{}", base + 1);
    eventually("the killed replica restarted and caught up", || async {
        let restarted = dev
            .children()
            .iter()
            .any(|(pid, cmd)| *pid != victim && cmd.contains(&victim_port));
        let user = http.try_get(&replica, &format!("/users/{userid}")).await;
        (restarted && user.is_some_and(|u| u.status == 200)).then_some(())
    })
    .await;

    // Phase: Ctrl-C stops dev and every child; it exits with status 0.
    let kids: Vec<u32> = dev.children().iter().map(|(pid, _)| *pid).collect();
    signal(dev.pid(), "INT");
    let deadline = Instant::now() + WAIT_MAX;
    let status = loop {
        if let Some(s) = dev.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ticket dev did not stop on SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(kids.iter().all(|k| !alive(*k)), "children left: {kids:?}");

    // Phase: start again from the same data: the user is still there (the front end's
    // answer comes from the replicas' restored logs).
    let dev = Dev::start(fe_port, base, &data, &dir.path().join("dev-2.log")).await;
    let u = http.get(&fe, &format!("/users/{userid}")).await;
    assert_eq!(
        (u.status.as_u16(), u.body["username"].clone()),
        (200, json!("ada"))
    );

    // Phase: kill -9 dev itself; its children notice the closed pipe and exit on their own.
    let kids: Vec<u32> = dev.children().iter().map(|(pid, _)| *pid).collect();
    assert_eq!(kids.len(), 4);
    drop(dev);
    eventually("every child of the killed dev to exit", || async {
        kids.iter().all(|k| !alive(*k)).then_some(())
    })
    .await;
}
