//! Property: under random writes, message drops, duplicates, reorders (random delays) and
//! secondary restarts, once the network heals every replica converges to the same state, and
//! every acknowledged write is present exactly once (unacknowledged ones at most once).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use replica_core::testing::{Cluster, KvCommand};
use replica_core::{Config, Faults, NodeId};

#[derive(Clone, Debug)]
enum Op {
    /// Append a unique token to one of four keys (concurrently with what is in flight).
    Write(u8),
    /// Replace the network's fault rates (percent, percent, percent, ms).
    Faults {
        drop: u8,
        drop_reply: u8,
        dup: u8,
        delay_ms: u8,
    },
    /// Crash a secondary (losing what it had not synced) and start it again.
    RestartSecondary(u8),
    /// Let time pass.
    Pause(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4).prop_map(Op::Write),
        1 => (0u8..30, 0u8..30, 0u8..50, 0u8..40)
            .prop_map(|(drop, drop_reply, dup, delay_ms)| Op::Faults { drop, drop_reply, dup, delay_ms }),
        1 => (1u8..3).prop_map(Op::RestartSecondary),
        1 => (0u8..200).prop_map(Op::Pause),
    ]
}

fn run(ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let cluster = Cluster::start_with(3, Config::default(), seed).await;
        cluster.wait_in_sync(3).await;
        let client = cluster.client("fe");
        let mut writes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Write(k) => {
                    let (c, key, token) = (client.clone(), format!("k{k}"), format!("<{i}>"));
                    let cmd = KvCommand::append(key.clone(), token.clone());
                    writes.push((
                        key,
                        token,
                        tokio::spawn(async move { c.write::<_, Option<String>>(&cmd).await }),
                    ));
                }
                Op::Faults {
                    drop,
                    drop_reply,
                    dup,
                    delay_ms,
                } => cluster.net.set_faults(Faults {
                    drop_request: f64::from(*drop) / 100.0,
                    drop_reply: f64::from(*drop_reply) / 100.0,
                    duplicate: f64::from(*dup) / 100.0,
                    delay_max_ms: u64::from(*delay_ms),
                }),
                Op::RestartSecondary(n) => {
                    let id = NodeId::new(format!("r{n}"));
                    cluster.crash(&id);
                    cluster.restart(&id).await;
                }
                Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await,
            }
        }
        // Heal, then collect every write's outcome.
        cluster.net.set_faults(Faults::default());
        let mut acked = Vec::new();
        let mut unacked = Vec::new();
        for (key, token, task) in writes {
            match task.await.unwrap() {
                Ok(_) => acked.push((key, token)),
                Err(_) => unacked.push((key, token)),
            }
        }
        cluster.wait_in_sync(3).await;
        let commit = cluster
            .statuses()
            .await
            .iter()
            .map(|s| s.commit)
            .max()
            .unwrap_or(0);
        cluster.wait_converged(commit).await;
        let states = cluster.states().await;
        prop_assert_eq!(states.len(), 3);
        for (id, m) in &states {
            prop_assert_eq!(&m.data, &states[0].1.data, "{} differs", id);
        }
        let data: &BTreeMap<String, String> = &states[0].1.data;
        for (key, token) in &acked {
            let n = data
                .get(key)
                .map_or(0, |v| v.matches(token.as_str()).count());
            prop_assert_eq!(
                n,
                1,
                "acknowledged {} on {} present {} times",
                token,
                key,
                n
            );
        }
        for (key, token) in &unacked {
            let n = data
                .get(key)
                .map_or(0, |v| v.matches(token.as_str()).count());
            prop_assert!(
                n <= 1,
                "unacknowledged {} on {} present {} times",
                token,
                key,
                n
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn converges_and_keeps_every_acknowledged_write_once(ops in prop::collection::vec(op(), 1..60), seed in 0u64..1000) {
        run(ops, seed)?;
    }
}
