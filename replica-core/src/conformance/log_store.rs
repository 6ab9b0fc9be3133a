//! The `LogStore` conformance suite: every requirement of the [`LogStore`] trait docs, checked
//! through the trait alone, so the in-memory and the file store are held to the same contract.
//!
//! "Reopen" drops the store and asks `open` for the same name again: a restart with the disk
//! intact. For a store whose clones share contents ([`MemLogStore`](crate::MemLogStore)),
//! `open` hands out a clone; for the file store, a new store on the same directory. A reopen
//! after a `sync` must show everything synced; without one, a contiguous prefix of what was
//! appended (either choice is a crash the contract allows).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;

use bytes::Bytes;
use uuid::Uuid;

use crate::storage::{LogStore, Recovered, StorageError, StoreOp};
use crate::types::{
    ClusterConfig, DedupRecord, Entry, HardState, LogIndex, LogPos, NodeId, Payload, Snapshot,
};

/// Run every `LogStore` requirement against stores made by `open`.
///
/// `open(name)` must return a store for the data location `name`: calling it again with the same
/// name must reopen the same durable contents (a restart); a new name is a new, empty store. The
/// suite drops a store before reopening its name, so a store may lock its location. Each phase
/// uses its own names; the suite panics with a description of the first broken requirement.
pub async fn log_store_suite<L, F, Fut>(mut open: F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    empty_store(&mut open).await;
    appends_survive_reopen_after_sync(&mut open).await;
    one_sync_covers_many_appends(&mut open).await;
    contiguity_errors_change_nothing(&mut open).await;
    unsynced_appends_leave_a_prefix(&mut open).await;
    hard_state_round_trip(&mut open).await;
    snapshot_round_trip_and_compaction(&mut open).await;
    snapshot_with_unsynced_appends(&mut open).await;
    install_is_total(&mut open).await;
    install_then_snapshot(&mut open).await;
    many_restarts(&mut open).await;
    large_entries(&mut open).await;
    owned_operations_match_borrowed(&mut open).await;
}

// ---------------------------------------------------------------------------- fixtures

/// A deterministic entry; `tag` distinguishes two histories that wrote the same index.
fn entry(index: LogIndex, epoch: u64, tag: u8) -> Entry {
    let payload = if index % 17 == 0 {
        let in_sync: BTreeSet<NodeId> = ["r0", "r1"].into_iter().map(NodeId::new).collect();
        Payload::Config(Box::new(ClusterConfig {
            primary: Some(NodeId::new("r0")),
            in_sync,
        }))
    } else {
        let len = ((index * 37 + u64::from(tag) * 11) % 300) as usize;
        Payload::Command(Bytes::from(vec![tag ^ (index as u8); len]))
    };
    Entry {
        index,
        lamport: index * 4 + u64::from(tag),
        epoch,
        id: Uuid::from_u128((u128::from(tag) << 64) | u128::from(index)),
        payload,
    }
}

fn entries(range: std::ops::RangeInclusive<LogIndex>, epoch: u64, tag: u8) -> Vec<Entry> {
    range.map(|i| entry(i, epoch, tag)).collect()
}

fn snapshot(last_index: LogIndex, epoch: u64, tag: u8) -> Snapshot {
    // The position of the entry this history wrote at `last_index`, id included.
    let last: LogPos = entry(last_index, epoch, tag).pos();
    Snapshot {
        last,
        config: ClusterConfig {
            primary: Some(NodeId::new("r0")),
            in_sync: [NodeId::new("r0")].into_iter().collect(),
        },
        state: Bytes::from(format!("state at {last_index} tag {tag}").into_bytes()),
        dedup: (1..=3)
            .map(|i| DedupRecord {
                id: Uuid::from_u128(u128::from(i) + u128::from(last_index)),
                index: last_index.saturating_sub(i),
                lamport: i,
                output: Bytes::from(vec![tag; i as usize]),
            })
            .collect(),
    }
}

fn ok<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

fn assert_invalid<T: Debug>(r: Result<T, StorageError>, what: &str) {
    assert!(
        matches!(r, Err(StorageError::Invalid(_))),
        "{what}: expected StorageError::Invalid, got {r:?}"
    );
}

async fn fresh<L, F, Fut>(open: &mut F, name: &str) -> (L, Recovered)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let mut store = open(name).await;
    let recovered = ok(store.load().await, &format!("load of {name}"));
    (store, recovered)
}

async fn reopen<L, F, Fut>(open: &mut F, name: &str, store: L) -> (L, Recovered)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    drop(store);
    fresh(open, name).await
}

/// The recovered log is contiguous and every entry is the one last written at its index.
fn assert_log_matches(what: &str, got: &[Entry], written: &BTreeMap<LogIndex, Entry>) {
    for w in got.windows(2) {
        assert_eq!(
            w[1].index,
            w[0].index + 1,
            "{what}: recovered log not contiguous at {}",
            w[0].index
        );
    }
    for e in got {
        assert_eq!(
            Some(e),
            written.get(&e.index),
            "{what}: entry {} is not what was written",
            e.index
        );
    }
}

fn indices(got: &[Entry]) -> Option<(LogIndex, LogIndex)> {
    Some((got.first()?.index, got.last()?.index))
}

async fn append_all<L: LogStore>(
    store: &mut L,
    batch: &[Entry],
    written: &mut BTreeMap<LogIndex, Entry>,
) {
    let what = format!("append of {:?}", indices(batch));
    ok(store.append(batch).await, &what);
    for e in batch {
        written.insert(e.index, e.clone());
    }
}

// ---------------------------------------------------------------------------- phases

/// A new store is empty, accepts index 1 first, and an idle sync is harmless.
async fn empty_store<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let (mut store, r) = fresh(open, "empty").await;
    assert_eq!(r, Recovered::default(), "a new store recovers nothing");
    ok(store.sync().await, "sync of an empty store");
    let (mut store, r) = reopen(open, "empty", store).await;
    assert_eq!(
        r,
        Recovered::default(),
        "an empty store stays empty across a reopen"
    );
    assert_invalid(
        store.append(&[entry(2, 1, 0)]).await,
        "first append at index 2",
    );
    ok(
        store.append(&[entry(1, 1, 0)]).await,
        "first append at index 1",
    );
}

/// Everything appended before a sync is there after a reopen, in order, byte for byte; appends
/// then continue after the last entry.
async fn appends_survive_reopen_after_sync<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "durable";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    let mut next = 1;
    for size in [1, 2, 7, 50, 100, 340] {
        append_all(
            &mut store,
            &entries(next..=next + size - 1, 1, 1),
            &mut written,
        )
        .await;
        next += size;
        ok(store.sync().await, "sync");
    }
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.entries.len(), 500, "all 500 synced entries recovered");
    assert_log_matches("after reopen", &r.entries, &written);
    assert_eq!(r.entries.first().map(|e| e.index), Some(1));

    // Phase: the log continues after a reopen.
    assert_invalid(
        store.append(&[entry(500, 1, 1)]).await,
        "re-append of the last index",
    );
    append_all(&mut store, &entries(501..=510, 2, 1), &mut written).await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(indices(&r.entries), Some((1, 510)));
    assert_log_matches("after second reopen", &r.entries, &written);
}

/// Group commit: one sync makes several earlier appends durable.
async fn one_sync_covers_many_appends<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "group-commit";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    append_all(&mut store, &entries(1..=3, 1, 2), &mut written).await;
    append_all(&mut store, &entries(4..=4, 1, 2), &mut written).await;
    append_all(&mut store, &entries(5..=40, 1, 2), &mut written).await;
    ok(store.sync().await, "one sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(
        indices(&r.entries),
        Some((1, 40)),
        "one sync covers every earlier append"
    );
    assert_log_matches("group commit", &r.entries, &written);
}

/// Appends that do not continue the log exactly are `Invalid` and change nothing.
async fn contiguity_errors_change_nothing<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "contiguity";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    assert_invalid(
        store.append(&[entry(2, 1, 3)]).await,
        "append starting at 2 on an empty log",
    );
    assert_invalid(
        store.append(&[entry(1, 1, 3), entry(3, 1, 3)]).await,
        "append with a gap inside",
    );
    assert_invalid(
        store.append(&[entry(1, 1, 3), entry(1, 1, 3)]).await,
        "append repeating an index",
    );
    append_all(&mut store, &entries(1..=3, 1, 3), &mut written).await;
    assert_invalid(
        store.append(&[entry(3, 1, 9)]).await,
        "append overwriting index 3",
    );
    assert_invalid(
        store.append(&[entry(2, 1, 9)]).await,
        "append going backwards",
    );
    assert_invalid(
        store.append(&[entry(5, 1, 9)]).await,
        "append skipping index 4",
    );
    assert_invalid(
        store.append(&[entry(4, 1, 3), entry(6, 1, 9)]).await,
        "append of 4 then a gap",
    );
    ok(store.append(&[]).await, "empty append");
    append_all(&mut store, &entries(4..=4, 1, 3), &mut written).await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(
        indices(&r.entries),
        Some((1, 4)),
        "rejected appends left no trace"
    );
    assert_log_matches("contiguity", &r.entries, &written);
}

/// Appends after the last sync may or may not survive a restart, but what survives is a
/// contiguous prefix of them (never a hole, never garbage), and the log continues after it.
async fn unsynced_appends_leave_a_prefix<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "unsynced";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    append_all(&mut store, &entries(1..=10, 1, 4), &mut written).await;
    ok(store.sync().await, "sync");
    append_all(&mut store, &entries(11..=15, 1, 4), &mut written).await;
    append_all(&mut store, &entries(16..=20, 1, 4), &mut written).await;
    let (mut store, r) = reopen(open, name, store).await;
    let (first, last) = indices(&r.entries).unwrap_or((0, 0));
    assert_eq!(first, 1, "synced entries kept");
    assert!(
        (10..=20).contains(&last),
        "recovered through {last}: synced 10, appended 20"
    );
    assert_log_matches("unsynced tail", &r.entries, &written);
    append_all(
        &mut store,
        &entries(last + 1..=last + 1, 2, 5),
        &mut written,
    )
    .await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(indices(&r.entries), Some((1, last + 1)));
    assert_log_matches("after the unsynced tail", &r.entries, &written);
}

/// The hard state comes back as last saved, next to the log.
async fn hard_state_round_trip<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "hard-state";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    let hs1 = HardState {
        epoch: 3,
        commit: 0,
        generation: 1,
    };
    ok(store.save_hard_state(&hs1).await, "save hard state");
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.hard_state, hs1);
    append_all(&mut store, &entries(1..=5, 3, 6), &mut written).await;
    ok(store.sync().await, "sync");
    for commit in 1..=5 {
        let hs = HardState {
            epoch: 3 + commit / 3,
            commit,
            generation: 2,
        };
        ok(store.save_hard_state(&hs).await, "save hard state");
    }
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(
        r.hard_state,
        HardState {
            epoch: 4,
            commit: 5,
            generation: 2
        },
        "the last save wins"
    );
    assert_eq!(
        indices(&r.entries),
        Some((1, 5)),
        "hard state saves leave the log alone"
    );
    assert_log_matches("hard state", &r.entries, &written);
}

/// A snapshot comes back as saved; entries after `compact_through` stay; entries up to it may
/// go; a bad compaction point is refused; a newer snapshot replaces the older.
async fn snapshot_round_trip_and_compaction<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "snapshot";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    append_all(&mut store, &entries(1..=100, 1, 7), &mut written).await;
    ok(store.sync().await, "sync");

    // Phase: a compaction point beyond the snapshot is refused and changes nothing.
    let snap60 = snapshot(60, 1, 7);
    assert_invalid(
        store.save_snapshot(&snap60, 61).await,
        "compaction beyond the snapshot",
    );
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot, None, "a refused snapshot is not saved");
    assert_eq!(indices(&r.entries), Some((1, 100)));

    // Phase: save and compact; the log goes on at 101.
    ok(
        store.save_snapshot(&snap60, 40).await,
        "save snapshot at 60 compacting through 40",
    );
    assert_invalid(
        store.append(&[entry(100, 1, 7)]).await,
        "re-append of 100 after a snapshot",
    );
    append_all(&mut store, &entries(101..=101, 1, 7), &mut written).await;
    ok(store.sync().await, "sync");
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap60), "snapshot round trip");
    let (first, last) = indices(&r.entries).unwrap_or((0, 0));
    assert!(
        (1..=41).contains(&first),
        "entries after compact_through (40) kept; log starts at {first}"
    );
    assert_eq!(last, 101);
    assert_log_matches("after compaction", &r.entries, &written);

    // Phase: a newer snapshot replaces the older one.
    let snap80 = snapshot(80, 1, 7);
    ok(
        store.save_snapshot(&snap80, 70).await,
        "save snapshot at 80",
    );
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(
        r.snapshot.as_ref(),
        Some(&snap80),
        "the newer snapshot wins"
    );
    let (first, last) = indices(&r.entries).unwrap_or((0, 0));
    assert!(
        (1..=71).contains(&first) && last == 101,
        "log {first}..{last} after compacting through 70"
    );
    assert_log_matches("after second compaction", &r.entries, &written);

    // Phase: compaction through the whole log; the log resumes after the snapshot.
    let snap101 = snapshot(101, 1, 7);
    ok(
        store.save_snapshot(&snap101, 101).await,
        "snapshot of the whole log",
    );
    append_all(&mut store, &entries(102..=103, 1, 7), &mut written).await;
    ok(store.sync().await, "sync");
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap101));
    assert_eq!(r.entries.last().map(|e| e.index), Some(103));
    assert!(
        r.entries.first().is_some_and(|e| e.index <= 102),
        "entries after the snapshot kept"
    );
    assert_log_matches("after full compaction", &r.entries, &written);
    append_all(&mut store, &entries(104..=104, 1, 7), &mut written).await;
}

/// A snapshot saved while appends are unsynced: the snapshot is durable on return; the log that
/// comes back is consistent with it and continues at the right index.
async fn snapshot_with_unsynced_appends<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "snapshot-unsynced";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    append_all(&mut store, &entries(1..=20, 1, 8), &mut written).await;
    let snap = snapshot(20, 1, 8);
    ok(
        store.save_snapshot(&snap, 10).await,
        "snapshot over unsynced appends",
    );
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(
        r.snapshot.as_ref(),
        Some(&snap),
        "the snapshot is durable once saved"
    );
    assert_log_matches("log beside the snapshot", &r.entries, &written);
    assert!(r.entries.iter().all(|e| e.index <= 20));
    let next = r.entries.last().map_or(21, |e| e.index + 1);
    append_all(&mut store, &entries(next..=next, 1, 8), &mut written).await;
    ok(store.sync().await, "sync");
}

/// After `install_snapshot` returns, no reopen shows an entry of the old log; appends continue
/// at `snapshot.last.index + 1`, whether the old log was longer or shorter than the snapshot.
async fn install_is_total<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    // Phase: install inside the old log.
    let name = "install";
    let (mut store, _) = fresh(open, name).await;
    let mut old = BTreeMap::new();
    append_all(&mut store, &entries(1..=50, 1, 10), &mut old).await;
    ok(store.sync().await, "sync");
    let snap30 = snapshot(30, 2, 11);
    ok(store.install_snapshot(&snap30).await, "install at 30");
    assert_invalid(
        store.append(&[entry(51, 1, 10)]).await,
        "append after the old log's end",
    );
    let mut new = BTreeMap::new();
    append_all(&mut store, &entries(31..=32, 2, 11), &mut new).await;
    ok(store.sync().await, "sync");
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap30));
    assert_eq!(
        indices(&r.entries),
        Some((31, 32)),
        "only entries appended after the install"
    );
    assert_log_matches("after install", &r.entries, &new);

    // Phase: install below the current log, nothing appended after it.
    let snap10 = snapshot(10, 3, 12);
    ok(store.install_snapshot(&snap10).await, "install at 10");
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap10));
    assert!(
        r.entries.is_empty(),
        "nothing of the replaced log: {:?}",
        indices(&r.entries)
    );
    ok(
        store.append(&[entry(11, 3, 12)]).await,
        "append continues at 11",
    );

    // Phase: install beyond the end of the log.
    let name = "install-beyond";
    let (mut store, _) = fresh(open, name).await;
    append_all(&mut store, &entries(1..=5, 1, 13), &mut old).await;
    ok(store.sync().await, "sync");
    let snap100 = snapshot(100, 2, 14);
    ok(store.install_snapshot(&snap100).await, "install at 100");
    assert_invalid(
        store.append(&[entry(6, 1, 13)]).await,
        "append continuing the old log",
    );
    let mut new = BTreeMap::new();
    append_all(&mut store, &entries(101..=101, 2, 14), &mut new).await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap100));
    assert_eq!(indices(&r.entries), Some((101, 101)));
    assert_log_matches("after install beyond", &r.entries, &new);

    // Phase: install over unsynced appends.
    let name = "install-unsynced";
    let (mut store, _) = fresh(open, name).await;
    append_all(&mut store, &entries(1..=8, 1, 15), &mut old).await;
    let snap3 = snapshot(3, 2, 16);
    ok(
        store.install_snapshot(&snap3).await,
        "install over unsynced appends",
    );
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap3));
    assert!(
        r.entries.is_empty(),
        "unsynced appends before an install are gone too"
    );
    ok(
        store.append(&[entry(4, 2, 16)]).await,
        "append continues at 4",
    );
}

/// Compaction after an install: the log that comes back starts after the installed snapshot.
async fn install_then_snapshot<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "install-then-snapshot";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    append_all(&mut store, &entries(1..=20, 1, 17), &mut BTreeMap::new()).await;
    ok(store.sync().await, "sync");
    ok(
        store.install_snapshot(&snapshot(100, 2, 18)).await,
        "install at 100",
    );
    append_all(&mut store, &entries(101..=150, 2, 18), &mut written).await;
    ok(store.sync().await, "sync");
    // The core compacts through `applied - log_retain_entries`, which can fall below the base.
    let snap140 = snapshot(140, 2, 18);
    ok(
        store.save_snapshot(&snap140, 90).await,
        "snapshot compacting below the installed base",
    );
    let (mut store, r) = reopen(open, name, store).await;
    assert_eq!(r.snapshot.as_ref(), Some(&snap140));
    assert_eq!(
        indices(&r.entries),
        Some((101, 150)),
        "the log after the install is intact"
    );
    assert_log_matches("install then snapshot", &r.entries, &written);
    ok(
        store.save_snapshot(&snapshot(150, 2, 18), 120).await,
        "second snapshot",
    );
    append_all(&mut store, &entries(151..=151, 2, 18), &mut written).await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    let (first, last) = indices(&r.entries).unwrap_or((0, 0));
    assert!(
        (101..=121).contains(&first) && last == 151,
        "log {first}..{last}"
    );
    assert_log_matches("install then two snapshots", &r.entries, &written);
}

/// Repeated restarts with work in between: nothing is lost or duplicated along the way.
async fn many_restarts<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "restarts";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    let mut next = 1;
    for round in 1..=6u64 {
        let n = round * 13;
        append_all(
            &mut store,
            &entries(next..=next + n - 1, round, 19),
            &mut written,
        )
        .await;
        next += n;
        ok(store.sync().await, "sync");
        ok(
            store
                .save_hard_state(&HardState {
                    epoch: round,
                    commit: next - 1,
                    generation: round,
                })
                .await,
            "hs",
        );
        let (s, r) = reopen(open, name, store).await;
        store = s;
        assert_eq!(indices(&r.entries), Some((1, next - 1)), "round {round}");
        assert_log_matches(&format!("round {round}"), &r.entries, &written);
        assert_eq!(r.hard_state.commit, next - 1);
    }
}

/// Entries of very different sizes, up to 1 MiB, round-trip exactly.
async fn large_entries<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let name = "large";
    let (mut store, _) = fresh(open, name).await;
    let mut written = BTreeMap::new();
    let sizes = [0usize, 1, 1 << 20, 10, 300_000, 5];
    let batch: Vec<Entry> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let index = i as u64 + 1;
            let bytes: Vec<u8> = (0..len).map(|b| (b as u64 * 31 + index) as u8).collect();
            Entry {
                payload: Payload::Command(Bytes::from(bytes)),
                ..entry(index, 1, 20)
            }
        })
        .collect();
    append_all(&mut store, &batch, &mut written).await;
    ok(store.sync().await, "sync");
    let (_, r) = reopen(open, name, store).await;
    assert_eq!(indices(&r.entries), Some((1, sizes.len() as u64)));
    assert_log_matches("large entries", &r.entries, &written);
}

/// `execute_owned` (what the runtime calls) does exactly what `execute` does: the same
/// operations, refused ones included, leave two stores with the same durable contents.
async fn owned_operations_match_borrowed<L, F, Fut>(open: &mut F)
where
    L: LogStore,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = L>,
{
    let ops = vec![
        StoreOp::Append(entries(1..=40, 1, 5)),
        // Refused: a gap, then a compaction point beyond its snapshot.
        StoreOp::Append(entries(42..=43, 1, 5)),
        StoreOp::HardState(HardState {
            epoch: 2,
            commit: 30,
            generation: 3,
        }),
        StoreOp::Snapshot {
            snapshot: Box::new(snapshot(30, 1, 5)),
            compact_through: 31,
        },
        StoreOp::Snapshot {
            snapshot: Box::new(snapshot(30, 1, 5)),
            compact_through: 20,
        },
        StoreOp::Append(entries(41..=60, 2, 5)),
        StoreOp::Install(Box::new(snapshot(70, 2, 6))),
        StoreOp::Append(entries(71..=75, 2, 6)),
        StoreOp::Snapshot {
            snapshot: Box::new(snapshot(73, 2, 6)),
            compact_through: 72,
        },
        StoreOp::Append(entries(76..=80, 2, 6)),
    ];
    let (mut borrowed, _) = fresh(open, "ops-borrowed").await;
    let (mut owned, _) = fresh(open, "ops-owned").await;
    for (i, op) in ops.iter().enumerate() {
        let by_ref = borrowed.execute(op).await;
        let by_value = owned.execute_owned(op.clone()).await;
        assert_eq!(
            by_ref.is_ok(),
            by_value.is_ok(),
            "operation {i}: execute gave {by_ref:?}, execute_owned {by_value:?}"
        );
    }
    ok(borrowed.sync().await, "sync");
    ok(owned.sync().await, "sync");
    let (_, from_ref) = reopen(open, "ops-borrowed", borrowed).await;
    let (_, from_value) = reopen(open, "ops-owned", owned).await;
    assert_eq!(
        from_value, from_ref,
        "execute_owned left other contents than execute"
    );
    assert_eq!(indices(&from_value.entries).map(|(_, last)| last), Some(80));
}
