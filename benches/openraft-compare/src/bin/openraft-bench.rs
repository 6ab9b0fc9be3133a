//! `openraft-bench`: openraft's "minimal cluster" benchmark with `replica-bench`'s command line.
//!
//! M openraft nodes in one process; the network calls the target node's `Raft` methods directly
//! (no serialization); an in-memory log store and a state machine that applies nothing. CLIENTS
//! tasks each call `client_write` on the leader (node 0) sequentially until OPS writes are done in
//! total. Everything runs on one multi-thread tokio runtime (`--threads`, default one worker per
//! core), or with `--runtimes K` on K single-worker runtimes (the leader and the clients on the
//! first, the followers on the others), as `replica-bench --runtimes K` runs.
//!
//! ```sh
//! cargo run --release --bin openraft-bench -- -m 3 -c 64 -n 200000
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use openraft::Config;

use openraft_compare::network::new_cluster;
use openraft_compare::store::ClientRequest;

/// Command-line options (the same as replica-bench's).
#[derive(Parser, Debug)]
#[command(
    about = "Replication throughput of an in-process openraft cluster (replica-bench's twin)"
)]
struct Args {
    /// Number of replicas.
    #[arg(short = 'm', long, default_value_t = 3)]
    members: u64,
    /// Concurrent client tasks, each writing sequentially.
    #[arg(short = 'c', long, default_value_t = 64)]
    clients: u64,
    /// Total writes.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    ops: u64,
    /// Most entries per append-entries RPC (openraft's `max_payload_entries`; openraft's default,
    /// which its cluster benchmark keeps, is 300).
    #[arg(short = 'b', long, default_value_t = 300)]
    batch: u64,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Instead of one shared runtime, K runtimes of one worker thread each: the leader and the
    /// clients on the first, the followers spread over the others (replica-bench's
    /// `--runtimes`).
    #[arg(long)]
    runtimes: Option<usize>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = start(args) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn start(args: Args) -> Result<(), String> {
    // The runtime as openraft's benchmark builds it, except for the worker count (it hard-codes
    // 32; here one per core unless --threads says otherwise, like replica-bench).
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .thread_name("bench-cluster")
        .thread_stack_size(3 * 1024 * 1024)
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let mut own = Vec::new();
    for i in 0..args.runtimes.unwrap_or(0) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name(format!("runtime-{i}"))
            .thread_stack_size(3 * 1024 * 1024)
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?;
        own.push(rt);
    }
    // Node i runs on handles[i]: the leader alone on the first runtime when there are several,
    // the followers round-robin over the rest (replica-bench's layout).
    let handles: Vec<_> = (0..args.members as usize)
        .filter(|_| !own.is_empty())
        .map(|i| {
            let k = own.len();
            let r = if i == 0 || k == 1 {
                0
            } else {
                1 + (i - 1) % (k - 1)
            };
            own[r].handle().clone()
        })
        .collect();
    rt.block_on(run(args, handles))
}

async fn run(args: Args, runtimes: Vec<tokio::runtime::Handle>) -> Result<(), String> {
    if args.members == 0 {
        return Err("-m must be at least 1".into());
    }
    // openraft's cluster benchmark: the default Config with longer election timeouts and purging
    // in batches of 1024 logs. Snapshots stay on (the default policy: one every 5000 logs).
    let config = Config {
        election_timeout_min: 200,
        election_timeout_max: 2000,
        purge_batch_size: 1024,
        max_payload_entries: args.batch.max(1),
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("invalid openraft config: {e}"))?;
    let voters: BTreeSet<u64> = (0..args.members).collect();
    let cluster = new_cluster(Arc::new(config), voters, &runtimes).await?;
    let leader = cluster
        .router
        .get(0)
        .ok_or_else(|| "no node 0".to_string())?;
    let leader_sm = cluster
        .state_machines
        .get(&0)
        .ok_or_else(|| "no state machine for node 0".to_string())?
        .clone();
    let applied_before = leader_sm.normal_applied();

    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (raft, next, total) = (leader.clone(), next.clone(), args.ops);
        let client = async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), String>(());
                }
                raft.client_write(ClientRequest {})
                    .await
                    .map_err(|e| format!("client_write: {e}"))?;
            }
        };
        // On the leader's runtime, as replica-bench's clients are on the primary's.
        tasks.push(match runtimes.first() {
            Some(rt) => rt.spawn(client),
            None => tokio::spawn(client),
        });
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = t0.elapsed();

    let m = leader.metrics().borrow().clone();
    let committed = leader_sm.normal_applied() - applied_before;
    println!(
        "replicas: {}, clients: {}, ops: {}, batch_max: {}, commit: {} (last_log_index: {}, last_applied: {})",
        args.members,
        args.clients,
        args.ops,
        args.batch,
        committed,
        m.last_log_index.map_or(-1, |i| i as i64),
        m.last_applied.map_or(-1, |l| l.index as i64),
    );
    println!("put/s: {:.0}", args.ops as f64 / elapsed.as_secs_f64());
    println!(
        "ns/op: {:.0}",
        elapsed.as_nanos() as f64 / args.ops.max(1) as f64
    );
    let stats = &cluster.router.stats;
    let appends = stats.appends.load(Ordering::Relaxed);
    println!(
        "entries/append: {:.1} (mean over {appends} non-empty append-entries to followers)",
        stats.entries.load(Ordering::Relaxed) as f64 / appends.max(1) as f64
    );
    for raft in cluster.router.all() {
        raft.shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))?;
    }
    if committed != args.ops {
        return Err(format!(
            "the leader applied {committed} client writes, {} were asked",
            args.ops
        ));
    }
    Ok(())
}
