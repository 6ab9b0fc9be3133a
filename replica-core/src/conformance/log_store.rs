//! The `LogStore` conformance suite.

use std::future::Future;

use crate::storage::LogStore;

/// Run every `LogStore` requirement against stores made by `open`.
///
/// `open(name)` must return a store for the data location `name`: calling it again with the same
/// name must reopen the same durable contents (a restart); a new name is a new, empty store.
pub async fn log_store_suite<L, F, Fut>(mut open: F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    // Filled in with the file store (issue 4).
    let mut store = open("empty").await;
    let recovered = store
        .load()
        .await
        .unwrap_or_else(|e| panic!("load of a new store failed: {e}"));
    assert!(recovered.entries.is_empty(), "a new store holds no entries");
}
