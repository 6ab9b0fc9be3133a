//! The blocking half of the file store: owns the files, runs on a blocking thread.
//!
//! Invariants:
//! - every sealed (non-active) segment is complete and, with fsync on, durable: a segment is
//!   fdatasynced before the next one is created, so only the last segment can have a torn tail;
//! - records inside a segment have consecutive indices starting at its `first_index`;
//! - the snapshot file's rename is the single switch point of `save_snapshot` and
//!   `install_snapshot`: segment deletions only ever follow it, and recovery ignores whatever
//!   they did not finish.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::format::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use super::FileStoreOptions;
use crate::storage::{Recovered, StorageError};
use crate::types::{Entry, HardState, LogIndex, Snapshot};

const LOCK_FILE: &str = "LOCK";
const HARD_STATE_FILE: &str = "hardstate";
const SNAPSHOT_FILE: &str = "snapshot";
const TMP_SUFFIX: &str = ".tmp";

/// Records encoded by the async side, not yet written: one buffer, record boundaries beside it.
#[derive(Default)]
pub(super) struct Pending {
    /// Framed records, back to back.
    pub buf: Vec<u8>,
    /// `(index, end offset in buf)` of every record, in order.
    pub records: Vec<(LogIndex, usize)>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

struct Sealed {
    path: PathBuf,
    first_index: LogIndex,
}

struct Active {
    path: PathBuf,
    file: File,
    first_index: LogIndex,
    /// Index of the next record this file would take.
    next_index: LogIndex,
    /// Bytes written (or planned in the current write).
    len: u64,
}

/// The files of one data directory.
pub(super) struct Disk {
    dir: PathBuf,
    opts: FileStoreOptions,
    /// Held (flocked) for the store's lifetime: a second store on the same directory would
    /// interleave writes and destroy the log.
    _lock: File,
    /// Log generation of the current segments (see the snapshot file).
    gen: u64,
    /// Entries below this are covered by the snapshot; the log is contiguous from here.
    log_start: LogIndex,
    /// Index the next written record must have.
    next_index: LogIndex,
    sealed: Vec<Sealed>,
    active: Option<Active>,
    /// Data written to the active segment since its last fdatasync.
    unsynced: bool,
    /// Directory entries created since the last directory fsync.
    dir_dirty: bool,
    /// Set by the first failed operation: after a failed write or fsync the page cache no longer
    /// tells what is on disk, so the store refuses everything until it is reopened and recovered.
    failed: Option<String>,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// fsync a directory, which makes the names created or renamed in it durable.
fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing directory {}", dir.display())))
}

/// What recovery found in one segment.
struct Scan {
    /// Length of the valid prefix of the file (0: not even a valid header).
    valid_len: usize,
    /// Index after the last valid record.
    next_index: LogIndex,
    /// A torn tail that must be cut off: `(offset, reason)`.
    torn: Option<(usize, String)>,
}

/// Read the records of one segment, keeping entries at or after `keep_from` in `out`.
///
/// A bad record in the last segment can be a torn tail: a write of the last batch that a crash
/// interrupted (see [`format::is_torn_tail`]). Anything else is corruption.
fn scan_segment(
    path: &Path,
    data: &[u8],
    expect: SegmentHeader,
    is_last: bool,
    keep_from: LogIndex,
    out: &mut Vec<Entry>,
) -> Result<Scan, StorageError> {
    let header = match format::decode_segment_header(data) {
        Ok(h) => h,
        Err(reason) => {
            if is_last && format::is_torn_tail(data, 0, expect.first_index) {
                return Ok(Scan {
                    valid_len: 0,
                    next_index: expect.first_index,
                    torn: Some((0, reason)),
                });
            }
            return Err(corrupt(path, 0, reason));
        }
    };
    if header != expect {
        return Err(corrupt(
            path,
            0,
            format!(
                "header says generation {} first index {}, the name says {} and {}",
                header.gen, header.first_index, expect.gen, expect.first_index
            ),
        ));
    }
    let mut off = SEGMENT_HEADER_BYTES;
    let mut next = header.first_index;
    while off < data.len() {
        match format::read_record(data, off) {
            Ok(record) => {
                // The checksum passed, so these bytes are what was written: a bad entry here is
                // not a torn write but a format or logic error, and always corruption.
                let entry = format::decode_entry(record.payload)
                    .map_err(|r| corrupt(path, off as u64, r))?;
                if entry.index != next {
                    return Err(corrupt(
                        path,
                        off as u64,
                        format!("entry index {} where {next} was expected", entry.index),
                    ));
                }
                if entry.index >= keep_from {
                    out.push(entry);
                }
                next += 1;
                off = record.end;
            }
            Err(e) => {
                if is_last && format::is_torn_tail(data, off, next) {
                    return Ok(Scan {
                        valid_len: off,
                        next_index: next,
                        torn: Some((off, e.to_string())),
                    });
                }
                return Err(corrupt(path, off as u64, e.to_string()));
            }
        }
    }
    Ok(Scan {
        valid_len: off,
        next_index: next,
        torn: None,
    })
}

impl Disk {
    /// Create the directory if needed and lock it. Reads nothing yet.
    pub fn open(dir: &Path, opts: FileStoreOptions) -> Result<Disk, StorageError> {
        let existed = dir.is_dir();
        fs::create_dir_all(dir)
            .map_err(io(format!("creating data directory {}", dir.display())))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| StorageError::Io {
                context: format!(
                    "locking data directory {} (another store, in this or another process, has it open)",
                    dir.display()
                ),
                source: e.into(),
            },
        )?;
        if !existed && opts.fsync {
            // Make the new directory's own name durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        Ok(Disk {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            gen: 0,
            log_start: 1,
            next_index: 1,
            sealed: Vec::new(),
            active: None,
            unsynced: false,
            dir_dirty: false,
            failed: None,
        })
    }

    /// Index the next written record must have.
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }

    /// Whether `sync` has anything to do.
    pub fn needs_sync(&self) -> bool {
        self.unsynced || self.dir_dirty
    }

    /// Number of segment files (sealed and active).
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + usize::from(self.active.is_some())
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Io {
                context: format!(
                    "an earlier operation failed ({reason}); reopen the store to recover"
                ),
                source: std::io::Error::other("store failed earlier"),
            }),
            None => Ok(()),
        }
    }

    /// Run `f`; if it fails, the store refuses every later operation.
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Disk) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.check_failed()?;
        let result = f(self);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    // ------------------------------------------------------------------ recovery

    /// Read everything back and repair a torn tail. Nothing on disk changes unless the whole
    /// scan succeeded, so a `Corrupt` answer leaves the evidence in place.
    pub fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.failed = None;
        self.active = None;
        self.sealed.clear();
        self.unsynced = false;
        self.dir_dirty = false;

        // Phase: metadata.
        let hs_path = self.dir.join(HARD_STATE_FILE);
        let hard_state = match read_if_exists(&hs_path)? {
            None => HardState::default(),
            Some(data) => {
                let payload = format::decode_meta(format::HARD_STATE_MAGIC, &data)
                    .map_err(|r| corrupt(&hs_path, 0, r))?;
                postcard::from_bytes(payload).map_err(|e| corrupt(&hs_path, 0, e.to_string()))?
            }
        };
        let snap_path = self.dir.join(SNAPSHOT_FILE);
        let (snapshot, gen, log_start) = match read_if_exists(&snap_path)? {
            None => (None, 0, 1),
            Some(data) => {
                let payload = format::decode_meta(format::SNAPSHOT_MAGIC, &data)
                    .map_err(|r| corrupt(&snap_path, 0, r))?;
                let file: format::SnapshotFile = postcard::from_bytes(payload)
                    .map_err(|e| corrupt(&snap_path, 0, e.to_string()))?;
                (Some(file.snapshot), file.gen, file.log_start)
            }
        };

        // Phase: list the directory.
        let mut segments = Vec::new();
        let mut junk = Vec::new();
        let listing =
            fs::read_dir(&self.dir).map_err(io(format!("listing {}", self.dir.display())))?;
        for item in listing {
            let item = item.map_err(io(format!("listing {}", self.dir.display())))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // A metadata write that crashed before its rename: never took effect.
                junk.push(item.path());
            } else if let Some(h) = format::parse_segment_file_name(name) {
                if h.gen < gen {
                    // Left over from before an installed snapshot: replaced wholesale.
                    junk.push(item.path());
                } else if h.gen > gen {
                    return Err(corrupt(
                        &item.path(),
                        0,
                        format!(
                            "segment of log generation {} but the snapshot is of generation {gen}",
                            h.gen
                        ),
                    ));
                } else {
                    segments.push((h, item.path()));
                }
            }
        }
        segments.sort_by_key(|(h, _)| h.first_index);

        // Phase: drop segments wholly below `log_start` (a compaction that did not finish).
        let covered = segments
            .windows(2)
            .take_while(|w| w[1].0.first_index <= log_start)
            .count();
        junk.extend(segments.drain(..covered).map(|(_, p)| p));
        if let Some((h, path)) = segments.first() {
            if h.first_index > log_start {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "log resumes at index {} but must hold index {log_start} on",
                        h.first_index
                    ),
                ));
            }
        }

        // Phase: scan every segment.
        let mut entries = Vec::new();
        let mut prev_next: Option<LogIndex> = None;
        let mut torn = None;
        let count = segments.len();
        let mut scans = Vec::with_capacity(count);
        for (i, (h, path)) in segments.iter().enumerate() {
            if let Some(expected) = prev_next {
                // A gap is only allowed entirely below `log_start` (entries there are covered).
                if h.first_index != expected && h.first_index > log_start {
                    return Err(corrupt(
                        path,
                        0,
                        format!(
                            "segment starts at index {} but the log ends at {}",
                            h.first_index,
                            expected - 1
                        ),
                    ));
                }
            }
            let data = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
            let scan = scan_segment(path, &data, *h, i + 1 == count, log_start, &mut entries)?;
            if let Some((offset, reason)) = &scan.torn {
                torn = Some((path.clone(), *offset, reason.clone(), data.len()));
            }
            prev_next = Some(scan.next_index);
            scans.push(scan);
        }

        // Phase: repair (only now that the whole log has been read and found sound).
        for path in &junk {
            remove_if_exists(path)?;
        }
        let mut touched_dir = !junk.is_empty();
        let mut last_valid_len = scans.last().map_or(0, |s| s.valid_len as u64);
        if let Some((path, offset, reason, file_len)) = torn {
            tracing::warn!(
                file = %path.display(),
                offset,
                cut_bytes = file_len - offset,
                %reason,
                "torn tail of the log truncated to the last good record"
            );
            if offset < SEGMENT_HEADER_BYTES {
                remove_if_exists(&path)?;
                segments.pop();
                scans.pop();
                touched_dir = true;
                last_valid_len = scans.last().map_or(0, |s| s.valid_len as u64);
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("opening {} to truncate it", path.display())))?;
                f.set_len(offset as u64)
                    .map_err(io(format!("truncating {}", path.display())))?;
                if self.opts.fsync {
                    f.sync_all()
                        .map_err(io(format!("syncing {}", path.display())))?;
                }
            }
        }
        if touched_dir && self.opts.fsync {
            fsync_dir(&self.dir)?;
        }

        // Phase: set up for appending.
        self.gen = gen;
        self.log_start = log_start;
        let last_next = scans.last().map(|s| s.next_index);
        if let Some((h, path)) = segments.pop() {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            let next_index = last_next.unwrap_or(h.first_index);
            self.active = Some(Active {
                path,
                file,
                first_index: h.first_index,
                next_index,
                len: last_valid_len,
            });
        }
        self.sealed = segments
            .into_iter()
            .map(|(h, path)| Sealed {
                path,
                first_index: h.first_index,
            })
            .collect();
        self.next_index = entries.last().map_or(log_start, |e: &Entry| e.index + 1);
        debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
        Ok(Recovered {
            hard_state,
            snapshot,
            entries,
        })
    }

    // ------------------------------------------------------------------ the log

    /// Write pending records to the segment files (no fsync, except of a segment being sealed).
    pub fn write(&mut self, pending: &Pending) -> Result<(), StorageError> {
        if pending.is_empty() {
            return self.check_failed();
        }
        self.guard(|d| d.write_inner(pending))
    }

    fn write_inner(&mut self, pending: &Pending) -> Result<(), StorageError> {
        let mut run: Option<(usize, usize)> = None;
        let mut start = 0;
        for &(index, end) in &pending.records {
            let len = (end - start) as u64;
            let roll = match &self.active {
                None => true,
                Some(a) => {
                    a.next_index != index
                        || (a.next_index > a.first_index
                            && a.len + len > self.opts.segment_bytes_max)
                }
            };
            if roll {
                if let Some((s, e)) = run.take() {
                    self.write_active(&pending.buf[s..e])?;
                }
                self.roll(index)?;
            }
            run = Some((run.map_or(start, |(s, _)| s), end));
            if let Some(a) = self.active.as_mut() {
                a.len += len;
                a.next_index = index + 1;
            }
            self.next_index = index + 1;
            start = end;
        }
        if let Some((s, e)) = run {
            self.write_active(&pending.buf[s..e])?;
        }
        Ok(())
    }

    fn write_active(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let Some(a) = self.active.as_mut() else {
            return Err(StorageError::Invalid(
                "write without an active segment".into(),
            ));
        };
        a.file
            .write_all(bytes)
            .map_err(io(format!("writing {}", a.path.display())))?;
        self.unsynced = true;
        Ok(())
    }

    /// Seal the active segment (durably, so only the last segment can ever be torn) and start a
    /// new one whose first record is `first_index`.
    fn roll(&mut self, first_index: LogIndex) -> Result<(), StorageError> {
        if let Some(a) = self.active.take() {
            if a.next_index == a.first_index {
                // Never received a record: nothing to keep.
                drop(a.file);
                remove_if_exists(&a.path)?;
            } else {
                if self.opts.fsync && self.unsynced {
                    a.file
                        .sync_data()
                        .map_err(io(format!("syncing {}", a.path.display())))?;
                }
                self.sealed.push(Sealed {
                    path: a.path,
                    first_index: a.first_index,
                });
            }
            self.unsynced = false;
        }
        let path = self
            .dir
            .join(format::segment_file_name(self.gen, first_index));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("creating {}", path.display())))?;
        let header = format::encode_segment_header(SegmentHeader {
            gen: self.gen,
            first_index,
        });
        file.write_all(&header)
            .map_err(io(format!("writing {}", path.display())))?;
        self.active = Some(Active {
            path,
            file,
            first_index,
            next_index: first_index,
            len: SEGMENT_HEADER_BYTES as u64,
        });
        self.unsynced = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Make everything written durable: one fdatasync of the active segment (group commit), and
    /// a directory fsync if segments were created.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.guard(|d| {
            if d.opts.fsync {
                if d.unsynced {
                    if let Some(a) = &d.active {
                        a.file
                            .sync_data()
                            .map_err(io(format!("syncing {}", a.path.display())))?;
                    }
                }
                if d.dir_dirty {
                    fsync_dir(&d.dir)?;
                }
            }
            d.unsynced = false;
            d.dir_dirty = false;
            Ok(())
        })
    }

    // ------------------------------------------------------------------ metadata

    /// Replace `name` atomically: write a temporary file, fsync it, rename it over, fsync the
    /// directory. A crash leaves the old or the new file, never a mix.
    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = self.dir.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(io(format!("writing {}", tmp.display())))?;
        if self.opts.fsync {
            f.sync_all()
                .map_err(io(format!("syncing {}", tmp.display())))?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(io(format!("renaming {} into place", tmp.display())))?;
        if self.opts.fsync {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.guard(|d| {
            let payload = postcard::to_stdvec(hs)
                .map_err(|e| StorageError::Invalid(format!("hard state not encodable: {e}")))?;
            d.write_atomic(
                HARD_STATE_FILE,
                &format::encode_meta(format::HARD_STATE_MAGIC, &payload),
            )
        })
    }

    fn write_snapshot_file(
        &mut self,
        gen: u64,
        log_start: LogIndex,
        snapshot: &Snapshot,
    ) -> Result<(), StorageError> {
        let file = format::SnapshotFileRef {
            gen,
            log_start,
            snapshot,
        };
        let payload = postcard::to_stdvec(&file)
            .map_err(|e| StorageError::Invalid(format!("snapshot not encodable: {e}")))?;
        self.write_atomic(
            SNAPSHOT_FILE,
            &format::encode_meta(format::SNAPSHOT_MAGIC, &payload),
        )
    }

    /// Save a snapshot of this replica's own state, then delete sealed segments whose entries
    /// are all at or below `compact_through`. Everything written must be synced first (the
    /// caller does it), so the snapshot never gets ahead of the log it summarises.
    pub fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_through: LogIndex,
    ) -> Result<(), StorageError> {
        self.guard(|d| {
            let last = d.next_index - 1;
            let (log_start, next_index) = if last > compact_through {
                (d.log_start.max(compact_through + 1), d.next_index)
            } else {
                // Nothing of the log outlives the compaction: it resumes after the snapshot.
                (snapshot.last.index + 1, snapshot.last.index + 1)
            };
            d.write_snapshot_file(d.gen, log_start, snapshot)?;
            d.log_start = log_start;
            d.next_index = next_index;
            // Phase: delete sealed segments wholly below log_start. Not synced: recovery deletes
            // any that come back.
            let mut firsts: Vec<LogIndex> = d.sealed.iter().map(|s| s.first_index).collect();
            firsts.extend(d.active.as_ref().map(|a| a.first_index));
            let covered = firsts.windows(2).take_while(|w| w[1] <= log_start).count();
            for s in d.sealed.drain(..covered) {
                remove_if_exists(&s.path)?;
            }
            Ok(())
        })
    }

    /// Replace the whole log with `snapshot`. The rename of the snapshot file (with a new log
    /// generation) is the switch: after it, recovery ignores every older segment, so a crash at
    /// any later point cannot bring old entries back.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.guard(|d| {
            let gen = d.gen + 1;
            let log_start = snapshot.last.index + 1;
            d.write_snapshot_file(gen, log_start, snapshot)?;
            d.gen = gen;
            d.log_start = log_start;
            d.next_index = log_start;
            d.unsynced = false;
            let old: Vec<PathBuf> = d
                .sealed
                .drain(..)
                .map(|s| s.path)
                .chain(d.active.take().map(|a| a.path))
                .collect();
            for path in old {
                remove_if_exists(&path)?;
            }
            Ok(())
        })
    }
}
