//! The simulator catches deliberately broken protocol variants (replica-core's `bug-injection`
//! feature) within 1,000 crash-stop seeds each: a safety violation, at a seed where the correct
//! protocol has none.
#![cfg(feature = "bug-injection")]

use replica_sim::{run_seed, run_seed_with_bug, Bug, FaultMode};

/// Violation kinds that show lost or corrupted data (not merely unavailability).
fn is_safety(kind: &str) -> bool {
    kind != "no convergence after healing" && kind != "verifier did not finish"
}

fn first_catch(bug: Bug) -> Option<u64> {
    (0..1000).find(|&seed| {
        let r = run_seed_with_bug(seed, FaultMode::CrashStop, bug);
        r.violations.iter().any(|v| is_safety(v.kind))
    })
}

fn assert_caught(bug: Bug) {
    let seed = first_catch(bug).unwrap_or_else(|| panic!("{bug:?} not caught within 1,000 seeds"));
    let correct = run_seed(seed, FaultMode::CrashStop, false);
    assert!(
        !correct.violations.iter().any(|v| is_safety(v.kind)),
        "seed {seed} fails without the bug too:\n{correct}"
    );
    let broken = run_seed_with_bug(seed, FaultMode::CrashStop, bug);
    eprintln!("{bug:?} caught at seed {seed}:\n{broken}");
}

/// Acknowledging before the in-sync secondaries hold the entry loses acknowledged writes when
/// the primary crashes.
#[test]
fn ack_before_replication_is_caught() {
    assert_caught(Bug::AckBeforeReplication);
}

/// Electing by node id alone lets a replica that missed committed entries win.
#[test]
fn elect_by_id_only_is_caught() {
    assert_caught(Bug::ElectByIdOnly);
}
