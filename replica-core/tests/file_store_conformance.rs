//! The `LogStore` conformance suite on both stores: the in-memory reference and the file store
//! (with default segments, and with tiny segments so every phase crosses segment boundaries).

#![allow(clippy::unwrap_used)] // test code: a failure should panic

mod file_store_support;

use std::collections::HashMap;

use file_store_support::TempDir;
use replica_core::conformance::log_store_suite;
use replica_core::storage::{FileLogStore, FileStoreOptions};
use replica_core::MemLogStore;

/// The reference store passes its own contract. "Reopen" is a clone: clones share contents, and
/// `load` drops what was not synced, as a restart would.
#[tokio::test]
#[allow(clippy::unwrap_or_default)]
async fn mem_store_passes_the_suite() {
    let mut stores: HashMap<String, MemLogStore> = HashMap::new();
    log_store_suite(|name| {
        let store = stores
            .entry(name.to_string())
            // `new`, not `default`: it is the documented way to make an empty store.
            .or_insert_with(MemLogStore::new)
            .clone();
        async move { store }
    })
    .await;
}

async fn run_file_suite(opts: FileStoreOptions) {
    let root = TempDir::new("conformance");
    let base = root.path().to_path_buf();
    log_store_suite(|name| {
        let (dir, opts) = (base.join(name), opts.clone());
        async move {
            FileLogStore::open(&dir, opts).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
        }
    })
    .await;
}

/// The file store with default options (fsync on).
#[tokio::test]
async fn file_store_passes_the_suite() {
    run_file_suite(FileStoreOptions::default()).await;
}

/// The file store with 4 KiB segments: appends roll segments, compaction deletes whole ones,
/// and the 1 MiB entry gets a segment of its own.
#[tokio::test]
async fn file_store_with_tiny_segments_passes_the_suite() {
    run_file_suite(FileStoreOptions {
        segment_bytes_max: 4096,
        ..FileStoreOptions::default()
    })
    .await;
}

/// The file store with a tiny write buffer: appends are written before `sync` asks.
#[tokio::test]
async fn file_store_with_early_writes_passes_the_suite() {
    run_file_suite(FileStoreOptions {
        write_buffer_bytes_max: 1,
        segment_bytes_max: 8192,
        ..FileStoreOptions::default()
    })
    .await;
}
