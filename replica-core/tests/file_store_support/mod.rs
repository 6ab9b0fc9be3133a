//! Helpers shared by the file store's integration tests.
// Each test binary uses a different subset; test code panics on any unexpected error.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use replica_core::storage::{FileLogStore, FileStoreOptions};
use replica_core::types::{Entry, Payload, Snapshot};
use replica_core::LogStore;
use uuid::Uuid;

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "replica-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The entry a test writes at `index`: its content is a function of the index alone, so a
/// reader can tell a correct entry from garbage without knowing what the writer did.
pub fn entry(index: u64) -> Entry {
    let len = (index.wrapping_mul(2_654_435_761) % 200) as usize;
    let payload: Vec<u8> = (0..len)
        .map(|i| (index as usize).wrapping_mul(131).wrapping_add(i) as u8)
        .collect();
    Entry {
        index,
        lamport: index * 2 + 1,
        epoch: 1 + index / 1000,
        id: Uuid::from_u128(0xfeed_0000_0000_0000_0000_0000_0000_0000 | u128::from(index)),
        payload: Payload::Command(Bytes::from(payload)),
    }
}

/// The snapshot a test saves at `index`: positioned at [`entry`]`(index)`, with state bytes
/// derived from the index, so a reader can check it.
pub fn snapshot_at(index: u64) -> Snapshot {
    let e = entry(index);
    Snapshot {
        last: e.pos(),
        state: Bytes::from(format!("state through {index}").into_bytes()),
        ..Snapshot::default()
    }
}

/// Segment files of a data directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .collect();
    out.sort();
    out
}

/// Copy every regular file of `from` into the (new) directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Options for tests that only need process-crash durability.
pub fn no_fsync() -> FileStoreOptions {
    FileStoreOptions {
        fsync: false,
        ..FileStoreOptions::default()
    }
}

/// Open and load a store, panicking with the error.
pub async fn open_loaded(
    dir: &Path,
    opts: FileStoreOptions,
) -> (FileLogStore, replica_core::Recovered) {
    let mut store = FileLogStore::open(dir, opts).unwrap();
    let r = store.load().await.unwrap();
    (store, r)
}

/// Wait (at most `deadline_ms`) until the directory's lock is free, then open it. A node stopped
/// with `NodeHandle::stop` drops its store only when the runtime gets to its aborted task, so
/// the lock can outlive `stop()` briefly.
pub async fn open_when_unlocked(
    dir: &Path,
    opts: FileStoreOptions,
    deadline_ms: u64,
) -> FileLogStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(deadline_ms);
    loop {
        match FileLogStore::open(dir, opts.clone()) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{} still locked after {deadline_ms} ms: {e}", dir.display()),
        }
    }
}
