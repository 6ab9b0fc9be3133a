//! `replica-sim`: run many seeds in parallel, or replay one with a readable trace.
//!
//! ```text
//! cargo run --release -p replica-sim -- --seeds 100000
//! cargo run --release -p replica-sim -- --seed 1234 --trace
//! cargo run --release -p replica-sim -- --seeds 10000 --faults partitions
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use replica_sim::{run_seed, FaultMode, Report};

/// Deterministic simulation of replica-core under seeded faults.
#[derive(Parser, Debug)]
#[command(name = "replica-sim", version)]
struct Args {
    /// Run this many seeds, in parallel over the cores.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Replay one seed (prints its report; with --trace, every message and state change).
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print the parameters drawn for the seed, then the readable trace.
    #[arg(long)]
    trace: bool,
    /// Fault envelope: `crash-stop` (the default mode's guarantees, every check) or
    /// `partitions` (adds partitions and long pauses; convergence checks only).
    #[arg(long, default_value = "crash-stop")]
    faults: String,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Switch on a deliberately broken protocol variant (`ack-before-replication` or
    /// `elect-by-id-only`); needs `--features bug-injection`.
    #[arg(long)]
    bug: Option<String>,
    /// Stop after this many failing seeds.
    #[arg(long, default_value_t = 20)]
    max_failures: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(mode) = FaultMode::parse(&args.faults) else {
        eprintln!(
            "error: unknown fault mode {:?} (expected crash-stop or partitions)",
            args.faults
        );
        return ExitCode::from(2);
    };
    #[cfg(feature = "bug-injection")]
    let bug = match args.bug.as_deref() {
        None => None,
        Some("ack-before-replication") => Some(replica_sim::Bug::AckBeforeReplication),
        Some("elect-by-id-only") => Some(replica_sim::Bug::ElectByIdOnly),
        Some(other) => {
            eprintln!("error: unknown bug {other:?}");
            return ExitCode::from(2);
        }
    };
    #[cfg(not(feature = "bug-injection"))]
    if args.bug.is_some() {
        eprintln!("error: --bug needs a build with --features bug-injection");
        return ExitCode::from(2);
    }
    let run = |seed: u64, trace: bool| -> Report {
        #[cfg(feature = "bug-injection")]
        replica_core_bug(bug);
        run_seed(seed, mode, trace)
    };
    // Panics inside a run are caught and reported as violations; keep stderr readable.
    std::panic::set_hook(Box::new(|_| {}));

    if let Some(seed) = args.seed {
        let report = run(seed, args.trace);
        if let Some(t) = &report.trace {
            // The draw first: timeouts and fault rates explain most of what the trace shows.
            println!("{:#?}", report.params);
            print!("{t}");
        }
        println!("{report}");
        println!("trace hash {:016x}", report.trace_hash);
        return if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(args.start);
    let done = AtomicU64::new(0);
    let end = args.start.saturating_add(args.seeds);
    let failures: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let failed = failures.lock().map_or(0, |f| f.len());
                if failed >= args.max_failures {
                    break;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let report = run(seed, false);
                if !report.passed() {
                    println!("\nFAIL {report}");
                    if let Ok(mut f) = failures.lock() {
                        f.push(report);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // Progress line.
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let d = done.load(Ordering::Relaxed);
            let failed = failures.lock().map_or(0, |f| f.len());
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r{d}/{} seeds, {failed} failed, {:.0} seeds/s, {secs:.0}s   ",
                args.seeds,
                d as f64 / secs.max(0.001)
            );
            let _ = std::io::stderr().flush();
            if d >= args.seeds || failed >= args.max_failures {
                break;
            }
            if failed >= args.max_failures {
                break;
            }
        }
    });
    let elapsed = started.elapsed();
    let failures = failures.into_inner().unwrap_or_default();
    let d = done.load(Ordering::Relaxed);
    eprintln!();
    println!(
        "{d} seeds ({} mode) in {:.1}s on {threads} threads: {} failed",
        mode.name(),
        elapsed.as_secs_f64(),
        failures.len()
    );
    for f in &failures {
        println!(
            "  seed {}: {}",
            f.seed,
            f.violations
                .first()
                .map_or(String::new(), |v| v.to_string())
        );
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(feature = "bug-injection")]
fn replica_core_bug(bug: Option<replica_sim::Bug>) {
    replica_sim::set_bug(bug);
}
