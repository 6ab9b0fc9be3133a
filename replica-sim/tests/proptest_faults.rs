//! proptest drives a 3-replica cluster through a random sequence of transitions — time passing,
//! crashes, restarts, pauses, disk stalls, network changes — then heals it and runs every
//! check. On failure proptest shrinks the sequence to a minimal fault schedule.
//!
//! Plain `proptest` with a `Vec<Step>` strategy rather than proptest-state-machine: the only
//! reference state the transitions need (which replicas are down, at most N−1 of them) is
//! enforced by the simulator itself (an inapplicable step is a no-op), and vectors already
//! shrink by dropping and simplifying elements. That avoids a dependency (and its `fork` and
//! `timeout` features) for no loss of shrinking power.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use replica_sim::params::NetParams;
use replica_sim::{heal_and_check, FaultMode, KvWorkload, Params, World};

#[derive(Clone, Debug)]
enum Step {
    /// Let this much simulated time pass, ms.
    Run(u64),
    Crash(usize),
    Restart(usize),
    Pause(usize, u64),
    Stall(usize, u64),
    /// Duplication probability (percent) and largest delay, ms.
    Net(u8, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..600).prop_map(Step::Run),
        2 => (0usize..3).prop_map(Step::Crash),
        2 => (0usize..3).prop_map(Step::Restart),
        1 => (0usize..3, 1u64..200).prop_map(|(r, ms)| Step::Pause(r, ms)),
        1 => (0usize..3, 1u64..500).prop_map(|(r, ms)| Step::Stall(r, ms)),
        1 => (0u8..50, 0u64..30).prop_map(|(d, ms)| Step::Net(d, ms)),
    ]
}

/// Safety under any schedule of the crash-stop faults: no lost, duplicated or changed
/// acknowledged write, no divergence, linearizable history. (Liveness is excluded here: the
/// known livelock F4 would make the property fail on schedules that only delay progress.)
fn check(seed: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut p = Params::draw(seed, FaultMode::CrashStop);
    p.replicas = 3;
    p.full_mesh_seeds = true;
    let mut world = World::new(
        p.clone(),
        KvWorkload::new(p.work.keys, p.work.read_ratio, p.work.put_ratio),
        false,
    );
    world.start(false);
    // Warm-up: the initial primary's first configuration entry is durable before any fault
    // (crashing it earlier hits core finding F6, kept as its own regression test).
    world.run_until(200);
    for s in steps {
        match *s {
            Step::Run(ms) => {
                let t = world.now() + ms;
                world.run_until(t);
            }
            Step::Crash(r) => world.crash_replica(r),
            Step::Restart(r) => world.restart_replica(r),
            Step::Pause(r, ms) => world.pause_replica(r, ms.min(p.config.failure_timeout_ms / 3)),
            Step::Stall(r, ms) => world.stall_disk(r, ms.min(p.config.ack_timeout_ms / 2)),
            Step::Net(dup, delay) => {
                let mut net = NetParams::reliable(p.net.call_timeout_ms.max(2 * delay + 10));
                net.duplicate = f64::from(dup) / 100.0;
                net.delay_max_ms = delay.max(net.delay_min_ms);
                world.set_network(net);
            }
        }
    }
    heal_and_check(&mut world);
    let safety: Vec<String> = world
        .checker
        .violations
        .iter()
        .filter(|v| v.kind != "no convergence after healing" && v.kind != "verifier did not finish")
        .map(|v| v.to_string())
        .collect();
    prop_assert!(safety.is_empty(), "seed {seed}: {}", safety.join("\n"));
    Ok(())
}

/// 48 random schedules of up to 40 transitions on a 3-replica cluster, from a fixed proptest
/// seed so the test is deterministic.
#[test]
fn three_replicas_random_fault_sequences() {
    let config = Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (any::<u64>(), proptest::collection::vec(step(), 1..40));
    let result = runner.run(&strategy, |(seed, steps)| check(seed, &steps));
    if let Err(e) = result {
        panic!("{e}");
    }
}
