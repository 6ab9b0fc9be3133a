//! `replica-bench`: the openraft "minimal cluster" benchmark, for replica.
//!
//! M replicas in one process over the in-memory transport (every message still goes through the
//! postcard codec) with the in-memory log store and an empty state machine. CLIENTS tasks each
//! write sequentially to the primary until OPS writes are done in total.
//!
//! Replicas run with the default `Config` apart from the batch and pipeline limits: snapshots
//! every 10,000 entries with the log compacted behind them, and a 250,000-write dedup table, as a
//! deployment runs (openraft's benchmark also snapshots and purges its log as it goes). With
//! snapshots off (`--snapshot-interval 0`) the logs only grow, and page faults for fresh memory
//! become a fifth of the time.
//!
//! By default everything runs on one multi-thread tokio runtime (`--threads`, default one worker
//! per core), as openraft's benchmark does. `--runtimes K` gives the replicas runtimes of their
//! own instead (one worker each; the primary and the clients on the first, the secondaries on
//! the others), the layout of separate machines.
//!
//! ```sh
//! cargo run --release -p benches --bin replica-bench -- -m 3 -c 64 -n 1000000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use replica_core::{Config, NodeHandle};
use uuid::Uuid;

use benches::Noop;

/// Command-line options (the names follow openraft's bench).
#[derive(Parser, Debug)]
#[command(about = "Replication throughput of an in-process cluster (openraft-comparable)")]
struct Args {
    /// Number of replicas.
    #[arg(short = 'm', long, default_value_t = 3)]
    members: usize,
    /// Concurrent client tasks, each writing sequentially.
    #[arg(short = 'c', long, default_value_t = 64)]
    clients: u64,
    /// Total writes.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    ops: u64,
    /// Most entries per append message (batch_entries_max).
    #[arg(short = 'b', long, default_value_t = 1024)]
    batch: usize,
    /// Appends in flight per secondary (appends_in_flight_max).
    #[arg(long, default_value_t = Config::default().appends_in_flight_max)]
    pipeline: usize,
    /// Worker threads of the shared runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Instead of one shared runtime, K runtimes of one worker thread each: the primary and the
    /// clients on the first, the secondaries spread over the others.
    #[arg(long)]
    runtimes: Option<usize>,
    /// Keep every worker thread busy (a task that only yields, per worker), so no worker ever
    /// parks. A measurement aid, not a way to deploy: it burns the cores while idle. It shows
    /// what waking a parked thread costs on this machine (on a VM: an inter-processor interrupt
    /// through the hypervisor).
    #[arg(long)]
    busy_poll: bool,
    /// Take a snapshot (and compact the log) every N applied entries; 0 turns snapshots off.
    #[arg(long, default_value_t = Config::default().snapshot_interval_entries)]
    snapshot_interval: u64,
    /// `Config::idle_polls`: how often each replica's core looks for work again before its
    /// thread may sleep (0: never).
    #[arg(long, default_value_t = Config::default().idle_polls)]
    idle_polls: u32,
    /// Dedup retention: how many writes' results each replica remembers.
    #[arg(long, default_value_t = Config::default().dedup_entries_max)]
    dedup_max: usize,
    /// After the writes, leave the cluster idle this many seconds and print the CPU it used
    /// meanwhile (heartbeats, ticks and any idle polling), as a share of one core.
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    /// Pace the writes: each client waits for its turn on a schedule of RATE writes/s in all
    /// (0: as fast as they are answered). With `cpu:` in the output, this shows what a
    /// replica spends at a steady, moderate load rather than flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = start(args) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn start(args: Args) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot start tokio: {e}");
    let mut runtimes = Vec::new();
    if let Some(k) = args.runtimes {
        for i in 0..k.max(1) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("runtime-{i}"))
                .enable_all()
                .build()
                .map_err(err)?;
            runtimes.push(rt);
        }
    } else {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        if let Some(t) = args.threads {
            rt.worker_threads(t);
        }
        runtimes.push(rt.enable_all().build().map_err(err)?);
    }
    // Replica i runs on handles[i]: the primary alone on the first runtime when there are
    // several, the secondaries round-robin over the rest.
    let handles: Vec<_> = (0..args.members)
        .map(|i| {
            let k = runtimes.len();
            let r = if i == 0 || k == 1 {
                0
            } else {
                1 + (i - 1) % (k - 1)
            };
            runtimes[r].handle().clone()
        })
        .collect();
    // The main thread only waits.
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    if args.busy_poll {
        for rt in &runtimes {
            for _ in 0..rt.metrics().num_workers() {
                rt.spawn(async {
                    loop {
                        tokio::task::yield_now().await;
                    }
                });
            }
        }
    }
    main.block_on(run(args, handles))
}

async fn run(args: Args, runtimes: Vec<tokio::runtime::Handle>) -> Result<(), String> {
    let config = Config {
        batch_entries_max: args.batch,
        appends_in_flight_max: args.pipeline,
        snapshot_interval_entries: args.snapshot_interval,
        dedup_entries_max: args.dedup_max,
        idle_polls: args.idle_polls,
        pending_writes_max: (args.clients as usize).max(1) * 2,
        ..Config::default()
    };
    let nodes: Vec<NodeHandle<Noop>> =
        benches::start_noop_cluster_on(args.members, config, &runtimes).await?;
    let primary = nodes[0].clone();

    let next = Arc::new(AtomicU64::new(0));
    let (t0, cpu0) = (Instant::now(), process_cpu_seconds()?);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (node, next, total) = (primary.clone(), next.clone(), args.ops);
        // Write n is due at n / rate seconds after the start.
        let (rate, start) = (args.rate, tokio::time::Instant::now());
        // On the primary's runtime, as clients in the same process would be.
        tasks.push(runtimes[0].spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), String>(());
                }
                if rate > 0 {
                    let due = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                    tokio::time::sleep_until(start + due).await;
                }
                let id = Uuid::from_u64_pair(c + 1, n);
                node.write(id, &()).await.map_err(|e| e.to_string())?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = t0.elapsed();
    let cpu = process_cpu_seconds()? - cpu0;
    let st = primary.status().await.map_err(|e| e.to_string())?;
    let per_sec = args.ops as f64 / elapsed.as_secs_f64();
    println!(
        "replicas: {}, clients: {}, ops: {}, batch_max: {}, commit: {}",
        args.members, args.clients, args.ops, args.batch, st.commit
    );
    println!("put/s: {:.0}", per_sec);
    println!("ns/op: {:.0}", elapsed.as_nanos() as f64 / args.ops as f64);
    println!(
        "cpu: {:.0}% of one core, {:.2} µs per write",
        100.0 * cpu / elapsed.as_secs_f64(),
        1e6 * cpu / args.ops as f64
    );
    let m = primary.metrics();
    let appends = m.append_batch_entries.count().max(1);
    println!(
        "entries/append: {:.1} (mean over {appends} appends to secondaries)",
        m.append_batch_entries.sum() / appends as f64
    );
    let polls: u64 = nodes
        .iter()
        .map(|n| n.metrics().idle_polls.load(Ordering::Relaxed))
        .sum();
    println!(
        "idle polls: {:.2} per write (all replicas)",
        polls as f64 / args.ops as f64
    );
    if args.idle_secs > 0 {
        let (cpu0, t0) = (process_cpu_seconds()?, Instant::now());
        // A measurement of idling, not a wait for a condition.
        tokio::time::sleep(std::time::Duration::from_secs(args.idle_secs)).await;
        let cpu = process_cpu_seconds()? - cpu0;
        println!(
            "idle cpu: {:.1}% of one core ({} replicas, {:.1} s)",
            100.0 * cpu / t0.elapsed().as_secs_f64(),
            args.members,
            t0.elapsed().as_secs_f64()
        );
    }
    for n in &nodes {
        n.stop();
    }
    Ok(())
}

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux).
fn process_cpu_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| format!("unexpected /proc/self/stat: {stat}"))
    };
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
