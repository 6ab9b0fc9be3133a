//! # replica-sim
//!
//! A deterministic simulator for `replica-core`: N replicas and M clients in one thread, in
//! simulated time, with faults drawn from one `u64` seed. The same seed always produces the same
//! run (the trace hash proves it), so any failure replays exactly.
//!
//! The protocol core is driven directly (`Replica::new` / `step` / `take_outputs`): no tokio, no
//! sockets, no files. The simulator supplies what the runtime normally does — a network (real
//! wire codec, loss, duplication, delay, reordering, partitions), a disk per replica (operations
//! in order, durable only after a simulated fsync, unsynced data lost on a crash), timer ticks,
//! and front-end clients that retry writes under the same request id.
//!
//! ## Layout
//!
//! - [`params`]: the per-seed swarm draw (cluster size, configuration, fault rates, workload)
//!   and the [`FaultMode`] envelopes;
//! - [`world`]: the event loop, network, replicas, crashes, pauses, partitions and healing;
//! - [`disk`]: the simulated store; [`client`]: the simulated front end;
//! - [`checker`]: protocol checks (ghost log, reference replay, epochs, reigns, acknowledgements);
//! - [`lin`]: a Wing–Gong linearizability checker; [`workload`]: the workload trait and the
//!   register/key-value workload; [`history`]: what clients observed;
//! - [`trace`]: the hashed, optionally readable, event trace.
//!
//! ## Example
//!
//! ```
//! use replica_sim::{run_seed, FaultMode};
//! let report = run_seed(42, FaultMode::CrashStop, false);
//! assert!(report.violations.is_empty(), "{report}");
//! assert_eq!(report.trace_hash, run_seed(42, FaultMode::CrashStop, false).trace_hash);
//! ```
//!
//! A run has three phases: the **fault phase** (clients issue operations while the nemesis
//! injects faults), the **healing phase** (faults stop, crashed replicas restart, the network
//! becomes reliable; the cluster must converge and every pending operation complete within
//! `heal_bound_ms`), and **verification** (every acknowledged write is re-sent under its id and
//! must return its first result; then the state, history and log checks run).

// Tests may unwrap (STYLE: no unwrap on outside input; test fixtures are not input).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod checker;
pub mod client;
pub mod disk;
pub mod history;
pub mod lin;
pub mod params;
pub mod trace;
pub mod workload;
pub mod world;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use checker::Violation;
pub use params::{FaultMode, Params};
pub use workload::{KvWorkload, Workload};
pub use world::{Stats, World};

#[cfg(feature = "bug-injection")]
pub use replica_core::bug_injection::Bug;

/// How long the verifier may take to re-send every acknowledged write: this, plus
/// [`VERIFY_PER_WRITE_MS`] per write, ms.
pub const VERIFY_BOUND_MS: u64 = 30_000;

/// Extra verification time per acknowledged write, ms.
pub const VERIFY_PER_WRITE_MS: u64 = 20;

/// The outcome of one seed.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Its parameters.
    pub params: Params,
    /// Every violated property (empty: the run passed).
    pub violations: Vec<Violation>,
    /// Hash of the whole event trace.
    pub trace_hash: u64,
    /// The readable trace, when asked for.
    pub trace: Option<String>,
    /// Counters.
    pub stats: Stats,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        write!(
            f,
            "seed {} ({}): {} replicas, {} clients, loss {:.2}, dup {:.2}, delay {}..{}ms, {} crashes, {} pauses, {} stalls, {} partitions, {} writes acked, {} committed, max epoch {}, {}ms simulated",
            self.seed,
            p.mode.name(),
            p.replicas,
            p.work.clients,
            p.net.loss,
            p.net.duplicate,
            p.net.delay_min_ms,
            p.net.delay_max_ms,
            self.stats.crashes,
            self.stats.pauses,
            self.stats.stalls,
            self.stats.partitions,
            self.stats.writes_acked,
            self.stats.committed,
            self.stats.max_epoch,
            self.stats.end_ms
        )?;
        for v in &self.violations {
            write!(f, "\n  VIOLATION {v}")?;
        }
        if !self.violations.is_empty() {
            let mode = if p.mode == FaultMode::CrashStop {
                String::new()
            } else {
                format!(" --faults {}", p.mode.name())
            };
            write!(
                f,
                "\n  replay: cargo run --release -p replica-sim -- --seed {}{mode} --trace",
                self.seed
            )?;
        }
        Ok(())
    }
}

/// Run one seed of the register/key-value workload under `mode`; keep a readable trace if
/// `trace` is set.
pub fn run_seed(seed: u64, mode: FaultMode, trace: bool) -> Report {
    let params = Params::draw(seed, mode);
    let workload = KvWorkload::new(
        params.work.keys,
        params.work.read_ratio,
        params.work.put_ratio,
    );
    run_with(params, workload, trace)
}

/// Run one seed with a deliberately broken protocol variant switched on (for this thread only).
#[cfg(feature = "bug-injection")]
pub fn run_seed_with_bug(seed: u64, mode: FaultMode, bug: Bug) -> Report {
    replica_core::bug_injection::set(Some(bug));
    let report = run_seed(seed, mode, false);
    replica_core::bug_injection::set(None);
    report
}

/// Switch a deliberately broken protocol variant on (or off, with `None`) for runs on this
/// thread.
#[cfg(feature = "bug-injection")]
pub fn set_bug(bug: Option<Bug>) {
    replica_core::bug_injection::set(bug);
}

/// Run `params` with any workload. A panic anywhere in the run (the core asserts its
/// invariants) is reported as a violation, not propagated.
pub fn run_with<W: Workload>(params: Params, workload: W, trace: bool) -> Report {
    let seed = params.seed;
    let mut world = World::new(params.clone(), workload, trace);
    let outcome = catch_unwind(AssertUnwindSafe(|| simulate(&mut world)));
    if let Err(panic) = outcome {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_string());
        let now = world.now();
        world.checker.fail("panic", now, msg);
    }
    let mut stats = world.stats.clone();
    stats.committed = world.checker.committed_len();
    stats.end_ms = world.now();
    Report {
        seed,
        params,
        violations: world.checker.violations.clone(),
        trace_hash: world.trace.hash(),
        trace: world.trace.take_text(),
        stats,
    }
}

/// Step size of the convergence and verification loops, ms.
const PROBE_MS: u64 = 25;

fn simulate<W: Workload>(world: &mut World<W>) {
    let p = world.params.clone();
    world.start(true);
    // Fault phase; the heal event at its end restarts everything.
    world.run_until(p.fault_phase_ms);
    heal_and_check(world);
}

/// End a run: heal (restart every replica, make the network reliable, stop new operations),
/// wait for convergence within `heal_bound_ms`, re-send every acknowledged write, and run every
/// end-of-run check. Violations land in `world.checker.violations`. Scripted runs (the proptest)
/// call this after driving the fault phase themselves.
pub fn heal_and_check<W: Workload>(world: &mut World<W>) {
    let p = world.params.clone();
    world.heal();

    // Healing phase: converge within the bound.
    let deadline = world.now() + p.heal_bound_ms;
    while !world.converged() {
        if world.now() >= deadline {
            let now = world.now();
            let state = world.describe_state();
            world.checker.fail(
                "no convergence after healing",
                now,
                format!("within {}ms:{state}", p.heal_bound_ms),
            );
            world.checker.finish(now);
            return;
        }
        let next = world.now() + PROBE_MS;
        world.run_until(next);
    }
    world.final_state_checks();

    // Verification: every acknowledged write, re-sent under its id, returns its first result
    // and executes nothing new.
    let applied_before = world.applied();
    world.start_verifier();
    let bound = VERIFY_BOUND_MS + VERIFY_PER_WRITE_MS * world.checker.acknowledged().len() as u64;
    let deadline = world.now() + bound;
    while !world.verifier_done() {
        if world.now() >= deadline {
            let now = world.now();
            let state = world.describe_state();
            world.checker.fail(
                "verifier did not finish",
                now,
                format!("within {bound}ms:{state}"),
            );
            break;
        }
        let next = world.now() + PROBE_MS;
        world.run_until(next);
    }
    // Let heartbeats carry any commit point, then the state must not have moved.
    let settle = world.now() + 4 * world.params.config.heartbeat_interval_ms;
    world.run_until(settle);
    let applied_after = world.applied();
    let indices = |v: &[replica_core::LogPos]| v.iter().map(|p| p.index).max().unwrap_or(0);
    // Re-sends are answered from the dedup table: no new command entry may appear. (A
    // configuration entry may, if the in-sync set changed.)
    let now = world.now();
    if world.params.mode != FaultMode::Partitions
        && indices(&applied_after) > indices(&applied_before)
    {
        let new = world
            .checker
            .committed()
            .into_iter()
            .filter(|c| c.index > indices(&applied_before))
            .count();
        if new > 0 {
            world.checker.fail(
                "re-sent acknowledged write executed again",
                now,
                format!("{new} new command entries after re-sending"),
            );
        }
    }
    world.checker.finish(now);
    if world.params.mode != FaultMode::Partitions {
        world.check_history();
    }
}
