//! The file store under the real runtime: a replica driven through `Node` takes snapshots and
//! compacts its log on disk, and a restart from the data directory restores the same state.
#![allow(clippy::unwrap_used)] // test code: a failure should panic

mod file_store_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use file_store_support::{open_when_unlocked, segments, TempDir};
use replica_core::storage::FileStoreOptions;
use replica_core::testing::{KvCommand, KvMachine};
use replica_core::{Config, MemNetwork, Node, NodeHandle, NodeId, NodeOptions, Role, StateMachine};
use uuid::Uuid;

/// Writes in the run.
const WRITES: u64 = 100_000;
/// Writers submitting concurrently, so writes share batches (group commit) as under load.
const WRITERS: u64 = 256;
/// Segment size: small enough that 100,000 entries need dozens of segments without compaction.
const SEGMENT_BYTES: u64 = 128 * 1024;
/// Longest a condition may take before the test fails (real time: the disk is real).
const WAIT_MAX: Duration = Duration::from_secs(60);

fn config() -> Config {
    Config {
        snapshot_interval_entries: 10_000,
        // Snapshots come at least every dedup-table-size entries (each copies the table): a
        // table of 10,000 keeps them at every 10,000 here.
        dedup_entries_max: 10_000,
        ..Config::default()
    }
}

fn store_options() -> FileStoreOptions {
    FileStoreOptions {
        segment_bytes_max: SEGMENT_BYTES,
        ..FileStoreOptions::default()
    }
}

async fn start(dir: &Path, net: &MemNetwork) -> NodeHandle<KvMachine> {
    let id = NodeId::new("r0");
    let store = open_when_unlocked(dir, store_options(), WAIT_MAX.as_millis() as u64).await;
    let node = Node::start(NodeOptions {
        id: id.clone(),
        config: config(),
        state_machine: KvMachine::default(),
        store,
        transport: net.transport(id.clone()),
        initial_primary: true,
        seeds: Vec::new(),
        rng_seed: 1,
    })
    .await
    .unwrap();
    net.register(id, Arc::new(node.clone()));
    node
}

/// Wait until `cond` holds on the node's status and state, or fail after `WAIT_MAX`.
async fn wait_until(
    node: &NodeHandle<KvMachine>,
    what: &str,
    cond: impl Fn(Role, u64, &KvMachine) -> bool,
) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = node.status().await.unwrap();
        let state = node.inspect(|m: &KvMachine| m.clone()).await.unwrap();
        if cond(status.role, status.applied.index, &state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The request id of write `i`: deterministic, and spread over all 128 bits like the random v4
/// ids a real client sends (splitmix64 of the counter).
fn request_id(i: u64) -> Uuid {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Uuid::from_u128((u128::from(z) << 64) | u128::from(z.rotate_left(29) ^ i))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// 100,000 writes with a snapshot every 10,000 applied entries: the data directory ends with a
/// bounded number of segments (compaction deleted the rest), and a restart from it restores
/// exactly the same state machine (same data, same count of applied commands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_writes_compact_and_restart_to_the_same_state() {
    let tmp = TempDir::new("node");
    let dir = tmp.path().join("r0");
    let net = MemNetwork::new(1);

    // Phase: a single replica becomes primary.
    let node = start(&dir, &net).await;
    wait_until(&node, "primary", |role, _, _| role == Role::Primary).await;

    // Phase: 100,000 writes from 256 concurrent writers.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < WRITES {
                // Each writer owns a key, so the key's final value is its writer's last write.
                let cmd = KvCommand::put(format!("k{w}"), format!("v{i}"));
                node.write(request_id(i), &cmd).await.unwrap();
                i += WRITERS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = node.inspect(|m: &KvMachine| m.clone()).await.unwrap();
    let status = node.status().await.unwrap();
    assert_eq!(before.applied, WRITES, "every write applied exactly once");
    let last_write_of = |w: u64| (w..WRITES).step_by(WRITERS as usize).last().unwrap_or(w);
    for w in 0..WRITERS {
        assert_eq!(
            before.data.get(&format!("k{w}")),
            Some(&format!("v{}", last_write_of(w))),
            "key k{w}"
        );
    }

    // Phase: the directory is compacted.
    let segs = segments(&dir);
    let first_index = |p: &Path| -> u64 {
        let name = p.file_name().unwrap().to_str().unwrap();
        name.trim_end_matches(".log")
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let oldest = first_index(&segs[0]);
    let bytes: u64 = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let per_entry = bytes / (status.last.index - oldest + 1);
    let live_max = config().log_retain_entries + config().snapshot_interval_entries;
    let bound = (live_max * per_entry).div_ceil(SEGMENT_BYTES) + 2;
    let unbounded = (status.last.index * per_entry).div_ceil(SEGMENT_BYTES);
    eprintln!(
        "{} segments ({bytes} bytes, ~{per_entry} bytes/entry) hold {oldest}..={}; bound {bound}, \
         {unbounded} without compaction",
        segs.len(),
        status.last.index
    );
    assert!(
        segs.len() as u64 <= bound,
        "{} segments, bound {bound}",
        segs.len()
    );
    assert!(
        unbounded > 3 * bound,
        "the test writes enough for compaction to matter"
    );
    assert!(
        oldest + live_max + SEGMENT_BYTES / per_entry >= status.last.index,
        "old segments deleted"
    );
    assert!(dir.join("snapshot").is_file() && dir.join("hardstate").is_file());

    // Phase: stop (as a crash would: tasks aborted) and restart from the directory.
    let hash = fnv(&before.snapshot());
    node.stop();
    drop(node);
    let node = start(&dir, &net).await;
    wait_until(&node, "same state after restart", |role, _, m| {
        role == Role::Primary && *m == before
    })
    .await;
    let after = node.inspect(|m: &KvMachine| m.clone()).await.unwrap();
    assert_eq!(
        fnv(&after.snapshot()),
        hash,
        "same state hash after restart"
    );

    // Phase: the restarted replica serves writes, continuing the same state.
    let out = node
        .write(request_id(WRITES), &KvCommand::put("k0", "after"))
        .await
        .unwrap();
    assert_eq!(
        out,
        Some(format!("v{}", last_write_of(0))),
        "the previous value is the last write before the restart"
    );
    node.stop();
}
