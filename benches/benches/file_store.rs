//! The file log store: durable appends per second with fsync at batch sizes 1, 16 and 256,
//! against the anchor this machine's disk allows (serial append + fdatasync of a small write,
//! measured in the same run), restart time with 1,000,000 entries, and what a trip to the
//! blocking pool costs next to a trip to a dedicated thread.
//!
//! `cargo bench -p benches --bench file_store`. Scratch data goes under `REPLICA_BENCH_DIR` (default:
//! the system temp dir); put it on the disk you want to measure. Results: benches/README.md.
// Benchmark code: a failure should panic; `criterion_group!` generates an undocumented `pub fn`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use replica_core::storage::{FileLogStore, FileStoreOptions};
use replica_core::types::{Entry, Payload};
use replica_core::LogStore;
use uuid::Uuid;

/// Payload bytes of each benchmark entry: the size of a small application command.
const COMMAND_BYTES: usize = 100;
/// Entries in the restart benchmark.
const RESTART_ENTRIES: u64 = 1_000_000;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let base =
            std::env::var_os("REPLICA_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let path = base.join(format!("replica-bench-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        lamport: index,
        epoch: 1,
        id: Uuid::from_u128(u128::from(index) * 0x9e37_79b9_7f4a_7c15),
        payload: Payload::Command(Bytes::from(vec![(index % 251) as u8; COMMAND_BYTES])),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The anchor: one small append and one fdatasync, serially. Its inverse is the most durable
/// writes per second a store without batching could reach on this disk.
fn fdatasync_anchor(c: &mut Criterion) {
    let dir = Scratch::new("anchor");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("probe"))
        .unwrap();
    let record = [0x5au8; 64];
    c.bench_function("file_store/fdatasync_anchor", |b| {
        b.iter(|| {
            file.write_all(&record).unwrap();
            file.sync_data().unwrap();
        })
    });
}

/// Durable appends: each iteration appends one batch and syncs it (one fdatasync), as the
/// runtime's store task does for a batch of writes.
fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_store/durable_append");
    for batch in [1u64, 16, 256] {
        let dir = Scratch::new(&format!("append-{batch}"));
        let rt = runtime();
        let mut store = FileLogStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        rt.block_on(store.load()).unwrap();
        let mut next = 1;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let entries: Vec<Entry> = (next..next + batch).map(entry).collect();
                next += batch;
                rt.block_on(async {
                    store.append(&entries).await.unwrap();
                    store.sync().await.unwrap();
                });
            })
        });
    }
    group.finish();
}

/// Restart: open and load a directory holding 1,000,000 entries and no snapshot (warm page
/// cache: this measures decoding and checking, not the disk's read speed).
fn restart_load(c: &mut Criterion) {
    let dir = Scratch::new("restart");
    let rt = runtime();
    {
        // Setup, not measured: written without fsync (the files are the same).
        let opts = FileStoreOptions {
            fsync: false,
            ..FileStoreOptions::default()
        };
        let mut store = FileLogStore::open(dir.path(), opts).unwrap();
        rt.block_on(async {
            store.load().await.unwrap();
            for start in (1..=RESTART_ENTRIES).step_by(10_000) {
                let entries: Vec<Entry> = (start..start + 10_000).map(entry).collect();
                store.append(&entries).await.unwrap();
            }
            store.sync().await.unwrap();
        });
    }
    let mut group = c.benchmark_group("file_store/restart_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(RESTART_ENTRIES));
    group.bench_function("1000000_entries", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut store =
                    FileLogStore::open(dir.path(), FileStoreOptions::default()).unwrap();
                let recovered = store.load().await.unwrap();
                assert_eq!(recovered.entries.len() as u64, RESTART_ENTRIES);
                recovered
            })
        })
    });
    group.finish();
}

/// The cost of moving one operation off the async task: tokio's blocking pool (what the store
/// uses) against a dedicated thread fed by a channel (the alternative design).
fn io_handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_store/io_handoff");
    let rt = runtime();
    group.bench_function("spawn_blocking", |b| {
        b.iter(|| rt.block_on(async { tokio::task::spawn_blocking(|| 1u64).await.unwrap() }))
    });
    type Job = (u64, tokio::sync::oneshot::Sender<u64>);
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let worker = std::thread::spawn(move || {
        for (x, reply) in rx {
            let _ = reply.send(x + 1);
        }
    });
    group.bench_function("dedicated_thread", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send((1, reply)).unwrap();
                answer.await.unwrap()
            })
        })
    });
    group.finish();
    drop(tx);
    worker.join().unwrap();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = fdatasync_anchor, durable_append, restart_load, io_handoff
}
criterion_main!(benches);
