//! Recovery of the file store from damaged directories: torn tails are cut at the last good
//! record with a warning; damage anywhere else is `StorageError::Corrupt` naming the file and
//! offset, and leaves the files untouched; crashes in the middle of compaction or install
//! cannot bring covered or replaced entries back.
#![allow(clippy::unwrap_used)] // test code: a failure should panic

mod file_store_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use file_store_support::{copy_dir, entry, open_loaded, segments, snapshot_at, TempDir};
use replica_core::storage::{FileLogStore, FileStoreOptions};
use replica_core::types::HardState;
use replica_core::{LogStore, StorageError};

// ---------------------------------------------------------------------------- helpers

/// Everything tracing logs in this test binary (warnings and above), for asserting warnings.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .init();
        capture
    })
}

/// Log lines that mention `needle` (a unique directory path).
fn log_lines_with(needle: &str) -> Vec<String> {
    let bytes = logs().0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Where one record sits: its segment and byte range.
#[derive(Clone, Debug)]
struct Placed {
    file: PathBuf,
    start: u64,
    end: u64,
}

/// Write entries `1..=n`, one sync each, and report where each record landed.
async fn fill(dir: &Path, opts: FileStoreOptions, n: u64) -> Vec<Placed> {
    let (mut store, r) = open_loaded(dir, opts).await;
    assert!(r.entries.is_empty());
    let mut placed = Vec::new();
    for i in 1..=n {
        store.append(&[entry(i)]).await.unwrap();
        store.sync().await.unwrap();
        let file = segments(dir).pop().unwrap();
        let end = std::fs::metadata(&file).unwrap().len();
        let start = match placed.last() {
            Some(Placed {
                file: f, end: e, ..
            }) if *f == file => *e,
            _ => 32, // first record after the segment header
        };
        placed.push(Placed { file, start, end });
    }
    placed
}

fn opts() -> FileStoreOptions {
    FileStoreOptions::default()
}

async fn load_err(dir: &Path) -> StorageError {
    let mut store = FileLogStore::open(dir, opts()).unwrap();
    match store.load().await {
        Ok(r) => panic!(
            "load of {} succeeded with {} entries; expected an error",
            dir.display(),
            r.entries.len()
        ),
        Err(e) => e,
    }
}

fn assert_entries(got: &[replica_core::Entry], range: std::ops::RangeInclusive<u64>) {
    let want: Vec<_> = range.map(entry).collect();
    assert_eq!(got.len(), want.len(), "entry count");
    assert!(
        got == want.as_slice(),
        "recovered entries differ from the ones written"
    );
}

// ---------------------------------------------------------------------------- torn tails

/// Cutting the last segment at every byte offset of its final record: recovery returns exactly
/// the records before it, cuts the file back to the last good record (on disk, with a warning
/// naming the file), and the log continues from there.
#[tokio::test]
async fn truncation_at_every_offset_of_the_final_record_is_a_torn_tail() {
    logs(); // capture warnings from the first load on
    let pristine = TempDir::new("torn-pristine");
    let placed = fill(pristine.path(), opts(), 40).await;
    let last = placed.last().unwrap().clone();
    let segment_name = last.file.file_name().unwrap().to_owned();
    assert!(
        last.end - last.start > 12,
        "the final record has a header and a payload"
    );

    for cut in last.start..last.end {
        // Phase: a copy of the directory with the final record cut at `cut`.
        let scratch = TempDir::new("torn-cut");
        let dir = scratch.path().join("d");
        copy_dir(pristine.path(), &dir);
        let file = dir.join(&segment_name);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();

        // Phase: recovery keeps 1..=39 exactly and truncates the file on disk.
        let (mut store, r) = open_loaded(&dir, opts()).await;
        assert_entries(&r.entries, 1..=39);
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            last.start,
            "cut {cut}: file truncated to the good prefix"
        );
        if cut > last.start {
            let warned = log_lines_with(&file.display().to_string());
            assert!(
                warned
                    .iter()
                    .any(|l| l.contains("WARN") && l.contains("torn tail")),
                "cut {cut}: expected a torn-tail warning naming the file, got {warned:?}"
            );
        }

        // Phase: the log continues at 40, and that survives a reopen.
        store.append(&[entry(40)]).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let (_, r) = open_loaded(&dir, opts()).await;
        assert_entries(&r.entries, 1..=40);
    }
}

/// A checksum failure in the final record (nothing valid after it) is a torn tail too: a crash
/// can leave a record whose length made it to disk but whose payload did not.
#[tokio::test]
async fn damage_in_the_final_record_is_a_torn_tail() {
    let pristine = TempDir::new("final-pristine");
    let placed = fill(pristine.path(), opts(), 10).await;
    let last = placed.last().unwrap().clone();
    for pos in [last.start, last.start + 5, last.start + 12, last.end - 1] {
        let scratch = TempDir::new("final-flip");
        let dir = scratch.path().join("d");
        copy_dir(pristine.path(), &dir);
        let file = dir.join(last.file.file_name().unwrap());
        flip(&file, pos);
        let (_, r) = open_loaded(&dir, opts()).await;
        assert_entries(&r.entries, 1..=9);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), last.start);
    }
}

/// Bytes after the last record that are not a record (zeros from a power cut, or garbage) are a
/// torn tail and are cut off.
#[tokio::test]
async fn junk_after_the_last_record_is_cut() {
    for junk in [
        vec![0u8; 1],
        vec![0u8; 4096],
        (0..777u32).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>(),
    ] {
        let tmp = TempDir::new("junk");
        let placed = fill(tmp.path(), opts(), 5).await;
        let file = placed.last().unwrap().file.clone();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, &junk).unwrap();
        drop(f);
        let (_, r) = open_loaded(tmp.path(), opts()).await;
        assert_entries(&r.entries, 1..=5);
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            placed.last().unwrap().end
        );
    }
}

/// A segment whose header never fully reached the disk (a crash right after a roll) is removed;
/// the previous segment takes the appends again.
#[tokio::test]
async fn a_torn_new_segment_is_removed() {
    let tmp = TempDir::new("torn-header");
    let small = FileStoreOptions {
        segment_bytes_max: 1024,
        ..opts()
    };
    let placed = fill(tmp.path(), small.clone(), 30).await;
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3, "small segments roll: {}", segs.len());
    // The last segment cut inside its header: as if the crash came right after creating it.
    let last_seg = segs.last().unwrap();
    let first_in_last = placed.iter().position(|p| p.file == *last_seg).unwrap() as u64 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(last_seg)
        .unwrap()
        .set_len(20)
        .unwrap();
    let (mut store, r) = open_loaded(tmp.path(), small.clone()).await;
    assert_entries(&r.entries, 1..=first_in_last - 1);
    assert!(!last_seg.exists(), "the torn segment is gone");
    store.append(&[entry(first_in_last)]).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let (_, r) = open_loaded(tmp.path(), small).await;
    assert_entries(&r.entries, 1..=first_in_last);
}

/// After a power cut the last batch, whose sync never returned (so nothing of it was
/// acknowledged), can be on disk with a hole: zeros in the middle, intact records after. That is
/// a torn tail, cut at the hole. The same hole in an earlier batch, which was synced before the
/// last one was written, is corruption.
#[tokio::test]
async fn a_hole_in_the_last_batch_is_a_torn_tail_but_not_in_a_synced_one() {
    // Phase: two batches, 1..=10 then 11..=40, one sync each.
    let pristine = TempDir::new("hole-pristine");
    let (mut store, _) = open_loaded(pristine.path(), opts()).await;
    store
        .append(&(1..=10).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    store.sync().await.unwrap();
    let seg = segments(pristine.path()).pop().unwrap();
    let first_batch_end = std::fs::metadata(&seg).unwrap().len();
    store
        .append(&(11..=40).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    store.sync().await.unwrap();
    drop(store);
    let len = std::fs::metadata(&seg).unwrap().len();
    let zero = |file: &Path, at: u64| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at as usize..at as usize + 200].fill(0);
        std::fs::write(file, bytes).unwrap();
    };

    // Phase: a hole in the middle of the last batch is cut off.
    let scratch = TempDir::new("hole-last");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    let file = dir.join(seg.file_name().unwrap());
    zero(&file, (first_batch_end + len) / 2);
    let (_, r) = open_loaded(&dir, opts()).await;
    let last = r.entries.last().unwrap().index;
    assert!(
        (10..40).contains(&last),
        "cut inside the last batch, at {last}"
    );
    assert_entries(&r.entries, 1..=last);
    assert!(
        std::fs::metadata(&file).unwrap().len() < len,
        "the rest of the batch is cut off"
    );

    // Phase: the same hole in the first batch is corruption.
    let scratch = TempDir::new("hole-synced");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    let file = dir.join(seg.file_name().unwrap());
    zero(&file, (32 + first_batch_end) / 2 - 100);
    match load_err(&dir).await {
        StorageError::Corrupt { file: f, .. } => assert_eq!(f, file.display().to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------- corruption

fn flip(file: &Path, pos: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[pos as usize] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

fn expect_corrupt(err: StorageError, file: &Path, offset: u64) {
    match err {
        StorageError::Corrupt {
            file: f,
            offset: o,
            reason,
        } => {
            assert_eq!(
                f,
                file.display().to_string(),
                "names the damaged file ({reason})"
            );
            assert_eq!(o, offset, "names the damaged record's offset ({reason})");
        }
        other => panic!(
            "expected Corrupt in {} at {offset}, got {other:?}",
            file.display()
        ),
    }
}

/// One flipped byte in the middle of a segment, anywhere in a record's header or payload: load
/// fails with `Corrupt` naming the segment and the record's offset, and changes nothing on disk
/// (a second load fails the same way).
#[tokio::test]
async fn a_flipped_byte_in_the_middle_is_corruption() {
    let pristine = TempDir::new("flip-pristine");
    let placed = fill(pristine.path(), opts(), 60).await;
    let file_name = placed[0].file.file_name().unwrap().to_owned();
    assert!(
        placed.iter().all(|p| p.file == placed[0].file),
        "one segment"
    );

    // Phase: the byte in the very middle of the file.
    let len = placed.last().unwrap().end;
    let middle = len / 2;
    let victim = placed
        .iter()
        .find(|p| p.start <= middle && middle < p.end)
        .unwrap()
        .clone();
    // Phase: and every byte of one record in the middle, header included.
    let sweep = placed[29].clone();
    let positions = std::iter::once(middle).chain(sweep.start..sweep.end);
    for pos in positions {
        let expected_record = if pos == middle { &victim } else { &sweep };
        let scratch = TempDir::new("flip");
        let dir = scratch.path().join("d");
        copy_dir(pristine.path(), &dir);
        let file = dir.join(&file_name);
        flip(&file, pos);
        let before = std::fs::read(&file).unwrap();
        expect_corrupt(load_err(&dir).await, &file, expected_record.start);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "flip at {pos}: a failed load changes nothing"
        );
        expect_corrupt(load_err(&dir).await, &file, expected_record.start);
    }
}

/// Damage in a sealed (non-last) segment is never a torn tail: sealed segments were synced
/// before the next one began.
#[tokio::test]
async fn damage_in_a_sealed_segment_is_corruption() {
    let small = FileStoreOptions {
        segment_bytes_max: 1024,
        ..opts()
    };
    let pristine = TempDir::new("sealed-pristine");
    let placed = fill(pristine.path(), small.clone(), 40).await;
    let segs = segments(pristine.path());
    assert!(segs.len() >= 3);
    let sealed = segs[1].clone();
    let in_sealed: Vec<&Placed> = placed.iter().filter(|p| p.file == sealed).collect();
    let last_in_sealed = (*in_sealed.last().unwrap()).clone();

    // Phase: its final record cut short.
    let scratch = TempDir::new("sealed-cut");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    let file = dir.join(sealed.file_name().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(last_in_sealed.end - 3)
        .unwrap();
    expect_corrupt(load_err(&dir).await, &file, last_in_sealed.start);

    // Phase: its final record's checksum broken.
    let scratch = TempDir::new("sealed-flip");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    let file = dir.join(sealed.file_name().unwrap());
    flip(&file, last_in_sealed.end - 1);
    expect_corrupt(load_err(&dir).await, &file, last_in_sealed.start);

    // Phase: its header damaged.
    let scratch = TempDir::new("sealed-header");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    let file = dir.join(sealed.file_name().unwrap());
    flip(&file, 3);
    expect_corrupt(load_err(&dir).await, &file, 0);

    // Phase: the whole segment missing: a gap in the log.
    let scratch = TempDir::new("sealed-gone");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    std::fs::remove_file(dir.join(sealed.file_name().unwrap())).unwrap();
    let next = dir.join(segs[2].file_name().unwrap());
    expect_corrupt(load_err(&dir).await, &next, 0);

    // Phase: the first segment missing: the log does not start where it must.
    let scratch = TempDir::new("first-gone");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    std::fs::remove_file(dir.join(segs[0].file_name().unwrap())).unwrap();
    expect_corrupt(
        load_err(&dir).await,
        &dir.join(segs[1].file_name().unwrap()),
        0,
    );
}

/// Damaged metadata files are corruption naming the file; leftover temporary files from a save
/// that never got renamed are ignored and removed.
#[tokio::test]
async fn metadata_damage_and_leftovers() {
    let pristine = TempDir::new("meta-pristine");
    {
        let (mut store, _) = open_loaded(pristine.path(), opts()).await;
        store
            .append(&(1..=5).map(entry).collect::<Vec<_>>())
            .await
            .unwrap();
        store
            .save_hard_state(&HardState {
                epoch: 2,
                commit: 5,
                generation: 3,
            })
            .await
            .unwrap();
        store.save_snapshot(&snapshot_at(4), 2).await.unwrap();
    }
    for name in ["hardstate", "snapshot"] {
        let scratch = TempDir::new("meta-flip");
        let dir = scratch.path().join("d");
        copy_dir(pristine.path(), &dir);
        let file = dir.join(name);
        let len = std::fs::metadata(&file).unwrap().len();
        flip(&file, len - 1);
        expect_corrupt(load_err(&dir).await, &file, 0);
        // Cut short: also corruption (an atomic replace never leaves a short file).
        copy_dir(pristine.path(), &dir);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        expect_corrupt(load_err(&dir).await, &file, 0);
    }

    // Phase: junk temporaries are ignored and removed; unknown files are left alone.
    let scratch = TempDir::new("meta-tmp");
    let dir = scratch.path().join("d");
    copy_dir(pristine.path(), &dir);
    std::fs::write(dir.join("snapshot.tmp"), b"half a snapshot").unwrap();
    std::fs::write(dir.join("hardstate.tmp"), b"").unwrap();
    std::fs::write(dir.join("README"), b"operator notes").unwrap();
    let (_, r) = open_loaded(&dir, opts()).await;
    assert_eq!(
        r.hard_state,
        HardState {
            epoch: 2,
            commit: 5,
            generation: 3
        }
    );
    assert_eq!(r.snapshot, Some(snapshot_at(4)));
    assert_entries(&r.entries, 3..=5);
    assert!(!dir.join("snapshot.tmp").exists() && !dir.join("hardstate.tmp").exists());
    assert!(dir.join("README").exists());
}

// ---------------------------------------------------------------------------- crash windows

/// A crash after an install's snapshot rename but before the old segments were deleted: the old
/// segments are still on disk, and recovery must ignore (and delete) them.
#[tokio::test]
async fn install_crash_before_deleting_old_segments() {
    let tmp = TempDir::new("install-window");
    let small = FileStoreOptions {
        segment_bytes_max: 1024,
        ..opts()
    };
    fill(tmp.path(), small.clone(), 30).await;
    let saved = TempDir::new("install-old");
    copy_dir(tmp.path(), saved.path());
    {
        let (mut store, _) = open_loaded(tmp.path(), small.clone()).await;
        store.install_snapshot(&snapshot_at(20)).await.unwrap();
    }
    // Put the old segments back, as if the deletions never happened.
    for seg in segments(saved.path()) {
        std::fs::copy(&seg, tmp.path().join(seg.file_name().unwrap())).unwrap();
    }
    let (mut store, r) = open_loaded(tmp.path(), small.clone()).await;
    assert_eq!(r.snapshot, Some(snapshot_at(20)));
    assert!(
        r.entries.is_empty(),
        "old entries came back: {:?}",
        r.entries.iter().map(|e| e.index).collect::<Vec<_>>()
    );
    assert!(
        segments(tmp.path()).is_empty(),
        "old-generation segments deleted"
    );
    store.append(&[entry(21)]).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let (_, r) = open_loaded(tmp.path(), small).await;
    assert_entries(&r.entries, 21..=21);
}

/// A crash after a snapshot but before compaction deleted the covered segments: recovery drops
/// them, and the log is the same as if the deletion had happened.
#[tokio::test]
async fn compaction_crash_before_deleting_segments() {
    let tmp = TempDir::new("compact-window");
    let small = FileStoreOptions {
        segment_bytes_max: 1024,
        ..opts()
    };
    fill(tmp.path(), small.clone(), 60).await;
    let saved = TempDir::new("compact-old");
    copy_dir(tmp.path(), saved.path());
    let before = segments(tmp.path()).len();
    {
        let (mut store, _) = open_loaded(tmp.path(), small.clone()).await;
        store.save_snapshot(&snapshot_at(50), 45).await.unwrap();
        assert!(
            store.segment_count() < before,
            "compaction deleted segments"
        );
    }
    let after = segments(tmp.path()).len();
    for seg in segments(saved.path()) {
        std::fs::copy(&seg, tmp.path().join(seg.file_name().unwrap())).unwrap();
    }
    let (_, r) = open_loaded(tmp.path(), small).await;
    assert_eq!(r.snapshot, Some(snapshot_at(50)));
    assert_entries(&r.entries, 46..=60);
    assert_eq!(
        segments(tmp.path()).len(),
        after,
        "covered segments deleted again"
    );
}

// ---------------------------------------------------------------------------- misuse

/// One store per directory: a second open fails with a clear error until the first is dropped.
#[tokio::test]
async fn a_directory_has_one_store_at_a_time() {
    let tmp = TempDir::new("lock");
    let first = FileLogStore::open(tmp.path(), opts()).unwrap();
    match FileLogStore::open(tmp.path(), opts()) {
        Err(StorageError::Io { context, .. }) => assert!(context.contains("locking"), "{context}"),
        other => panic!("second open: {other:?}"),
    }
    drop(first);
    FileLogStore::open(tmp.path(), opts()).unwrap();
}

/// Bad options and bad calls are `Invalid` and change nothing.
#[tokio::test]
async fn bad_options_and_calls_are_refused() {
    let tmp = TempDir::new("misuse");
    let bad = FileStoreOptions {
        segment_bytes_max: 10,
        ..opts()
    };
    assert!(matches!(
        FileLogStore::open(tmp.path(), bad),
        Err(StorageError::Invalid(_))
    ));

    // Phase: nothing before load.
    let mut store = FileLogStore::open(tmp.path(), opts()).unwrap();
    assert!(matches!(
        store.append(&[entry(1)]).await,
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(store.sync().await, Err(StorageError::Invalid(_))));
    assert!(matches!(
        store.save_hard_state(&HardState::default()).await,
        Err(StorageError::Invalid(_))
    ));

    // Phase: an entry over record_bytes_max is refused, and the batch around it with it.
    drop(store);
    let size = |i: u64| replica_core::message::to_bytes(&entry(i)).unwrap().len();
    let limited = FileStoreOptions {
        record_bytes_max: size(1),
        ..opts()
    };
    let (mut store, _) = open_loaded(tmp.path(), limited.clone()).await;
    let big = (2..=200).find(|&i| size(i) > size(1)).unwrap();
    let batch: Vec<_> = (1..=big).map(entry).collect();
    assert!(matches!(
        store.append(&batch).await,
        Err(StorageError::Invalid(_))
    ));
    store.append(&batch[..1]).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let (_, r) = open_loaded(tmp.path(), limited).await;
    assert_entries(&r.entries, 1..=1);
}

/// With fsync off, everything still reaches the operating system at `sync`: a reopen (as after
/// a process crash) sees it.
#[tokio::test]
async fn without_fsync_synced_writes_survive_a_reopen() {
    let tmp = TempDir::new("nofsync");
    let (mut store, _) = open_loaded(tmp.path(), file_store_support::no_fsync()).await;
    store
        .append(&(1..=100).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    store.sync().await.unwrap();
    store
        .save_hard_state(&HardState {
            epoch: 1,
            commit: 100,
            generation: 1,
        })
        .await
        .unwrap();
    drop(store);
    let (_, r) = open_loaded(tmp.path(), file_store_support::no_fsync()).await;
    assert_entries(&r.entries, 1..=100);
    assert_eq!(r.hard_state.commit, 100);
}

/// An operation whose future is dropped after it reached the I/O thread still completes, in
/// order: the store keeps working and nothing is lost or reordered.
#[tokio::test]
async fn a_cancelled_operation_completes_in_order() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let tmp = TempDir::new("cancel");
    let (mut store, _) = open_loaded(tmp.path(), opts()).await;
    store
        .append(&(1..=10).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    {
        // Poll the sync once (it sends its job to the I/O thread), then drop it.
        let mut sync = std::pin::pin!(store.sync());
        let _ = sync.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }
    store.append(&[entry(11)]).await.unwrap();
    store.sync().await.unwrap();
    drop(store);
    let (_, r) = open_loaded(tmp.path(), opts()).await;
    assert_entries(&r.entries, 1..=11);
}
