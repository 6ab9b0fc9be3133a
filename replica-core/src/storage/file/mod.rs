//! A durable [`LogStore`] in a data directory: a segmented write-ahead log with group commit,
//! atomically replaced hard state and snapshots, and crash recovery.
//!
//! ```no_run
//! # async fn demo() -> Result<(), replica_core::StorageError> {
//! use replica_core::storage::file::{FileLogStore, FileStoreOptions};
//! use replica_core::LogStore;
//!
//! let mut store = FileLogStore::open("./data/r0", FileStoreOptions::default())?;
//! let recovered = store.load().await?; // once, before anything else
//! # let _ = recovered;
//! # Ok(()) }
//! ```
//!
//! # Files
//!
//! ```text
//! DIR/LOCK                      flock()ed while a store has the directory open
//! DIR/hardstate                 epoch, commit point, generation
//! DIR/snapshot                  the latest snapshot + where the log stands relative to it
//! DIR/seg-GGGGGGGGGG-IIII….log  log segments: generation G, first index I
//! DIR/*.tmp                     a metadata write that has not been renamed into place (ignored)
//! ```
//!
//! The byte layout is in `format.rs`. Every log record carries its length, a checksum of its
//! payload, the first index of the group-commit batch it was written in, and a checksum of that
//! header; the payload is the postcard-encoded [`Entry`].
//!
//! # Durability
//!
//! - `append` only encodes into memory (a batch stays in memory up to
//!   [`FileStoreOptions::write_buffer_bytes_max`]). `sync` writes the batch with one `write` and
//!   makes it durable with one `fdatasync`, however many entries it holds: group commit.
//! - `save_hard_state`, `save_snapshot` and `install_snapshot` first sync earlier appends (so
//!   what survives a crash is always a prefix of the operations), then replace their file
//!   atomically: temporary file, fsync, rename, fsync of the directory.
//! - A segment is fdatasynced before the next one is created, so only the last segment can have a
//!   torn tail.
//! - `install_snapshot` bumps the log *generation* recorded in the snapshot file; segments of an
//!   older generation are ignored by recovery, so the rename is the moment the old log is gone,
//!   whatever the crash point after it.
//!
//! # Recovery (`load`)
//!
//! Read the hard state and the snapshot, then replay the segments. A bad record in the last
//! segment (cut short, or failing a checksum) is a write that a crash interrupted when nothing
//! valid follows it, or when everything valid that follows belongs to the same batch: a batch is
//! written only after the previous one was synced, so only the last batch can be partly on disk
//! (with holes, after a power cut), and it was never acknowledged. Such a torn tail is cut off
//! with a warning. Any other damage is [`StorageError::Corrupt`] naming the file and byte offset,
//! and nothing on disk is changed: the replica must not serve from it and needs a full copy.
//! Entries below the snapshot's compaction point are dropped; segments made entirely of them are
//! deleted.
//!
//! # Threads
//!
//! File I/O blocks, so it never runs on a runtime worker: each store has one dedicated thread
//! that owns the files and executes operations in the order they were sent. Encoding and
//! checksumming happen on the caller's task, which is cheap and keeps the hop to the thread to
//! one per batch. A dedicated thread was measured against tokio's blocking pool
//! (`benches/benches/file_store.rs`, `io_handoff`): about 5 µs per round trip against 29–42 µs,
//! which is a fifth of a small batch's cost on a disk whose fdatasync takes ~110 µs.
//!
//! An operation whose future is dropped mid-flight (a cancelled task) still completes on the
//! thread, in order, so the store stays consistent. Dropping the store waits for the thread to
//! finish what it was sent: once the store is dropped, the directory is unlocked.

mod disk;
mod format;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{LogStore, Recovered, StorageError};
use crate::types::{Entry, HardState, LogIndex, Snapshot};
use disk::{Disk, Pending};

/// Settings of a [`FileLogStore`]. Every limit is named with its unit; see each field for its
/// default and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStoreOptions {
    /// A segment file is sealed and a new one started once the next record would take it past
    /// this size (a single larger record still gets a segment of its own). Compaction deletes
    /// whole segments, so this is also the granularity at which disk space comes back. Default
    /// 16 MiB: about 100,000 small entries, so a roll (one extra fdatasync and a directory fsync)
    /// is rare, while the space held behind a snapshot stays small.
    pub segment_bytes_max: u64,
    /// Largest encoded entry `append` accepts; a larger one is [`StorageError::Invalid`].
    /// Default 64 MiB. Recovery reads records of any size the file can hold.
    pub record_bytes_max: usize,
    /// Encoded appends held in memory before they are written to the OS ahead of `sync` (still
    /// not durable until `sync`). Bounds the memory of a long run of appends. Default 4 MiB.
    pub write_buffer_bytes_max: usize,
    /// Call `fdatasync`/`fsync` where durability needs it. Default `true`.
    ///
    /// `false` is for tests and benchmarks only: writes still reach the operating system at
    /// `sync`, so they survive the process being killed, but **a power loss or kernel crash can
    /// lose writes that were acknowledged, and can leave a segment damaged in the middle**, which
    /// recovery then reports as corruption. A replica running this way breaks the replication
    /// guarantee that no acknowledged write is lost.
    pub fsync: bool,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            segment_bytes_max: 16 << 20,
            record_bytes_max: 64 << 20,
            write_buffer_bytes_max: 4 << 20,
            fsync: true,
        }
    }
}

impl FileStoreOptions {
    fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes_max
            <= (format::SEGMENT_HEADER_BYTES + format::RECORD_HEADER_BYTES) as u64
        {
            return Err(StorageError::Invalid(format!(
                "segment_bytes_max must exceed {} bytes (a header and a record header)",
                format::SEGMENT_HEADER_BYTES + format::RECORD_HEADER_BYTES
            )));
        }
        if self.record_bytes_max == 0 || u32::try_from(self.record_bytes_max).is_err() {
            return Err(StorageError::Invalid(
                "record_bytes_max must be between 1 and u32::MAX".into(),
            ));
        }
        Ok(())
    }
}

/// A [`LogStore`] on files in one data directory. See the [module docs](self) for the layout,
/// the durability rules and recovery.
///
/// One store per directory: [`FileLogStore::open`] takes an exclusive lock, so a second store
/// on the same directory (in this process or another) fails to open instead of interleaving
/// writes.
pub struct FileLogStore {
    dir: PathBuf,
    opts: FileStoreOptions,
    /// Sends operations to the I/O thread, which owns the [`Disk`]. `None` only during drop.
    jobs: Option<mpsc::Sender<Job>>,
    /// The I/O thread, joined on drop.
    thread: Option<JoinHandle<()>>,
    /// What the disk looked like after the last operation this store waited for.
    view: DiskView,
    /// Set by a successful `load`; nothing else runs before it.
    loaded: bool,
    /// Appended, encoded, not yet written.
    pending: Pending,
    /// Index the next appended entry must have.
    next_index: LogIndex,
    /// First index appended since the last sync: the batch every record carries, which is what
    /// lets recovery tell a partly written last batch from damage to a synced one.
    batch_first: Option<LogIndex>,
}

/// One operation for the I/O thread.
type Job = Box<dyn FnOnce(&mut Disk) + Send>;

/// The facts about the disk the async side needs without a round trip.
#[derive(Clone, Copy, Debug, Default)]
struct DiskView {
    next_index: LogIndex,
    needs_sync: bool,
    segment_count: usize,
}

impl DiskView {
    fn of(d: &Disk) -> DiskView {
        DiskView {
            next_index: d.next_index(),
            needs_sync: d.needs_sync(),
            segment_count: d.segment_count(),
        }
    }
}

/// The I/O thread: runs jobs in order until every sender is gone.
fn io_thread(mut disk: Disk, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        job(&mut disk);
    }
}

impl std::fmt::Debug for FileLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLogStore")
            .field("dir", &self.dir)
            .field("next_index", &self.next_index)
            .field("pending_entries", &self.pending.records.len())
            .finish_non_exhaustive()
    }
}

impl FileLogStore {
    /// Open (creating it if needed) and lock the data directory `dir`. Reads nothing: call
    /// [`LogStore::load`] next.
    ///
    /// Fails with [`StorageError::Io`] if the directory cannot be created or another store holds
    /// its lock, and with [`StorageError::Invalid`] for unusable options.
    pub fn open(dir: impl Into<PathBuf>, opts: FileStoreOptions) -> Result<Self, StorageError> {
        opts.validate()?;
        let dir = dir.into();
        let disk = Disk::open(&dir, opts.clone())?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("replica-store".into())
            .spawn(move || io_thread(disk, rx))
            .map_err(|source| StorageError::Io {
                context: "starting the store's I/O thread".into(),
                source,
            })?;
        Ok(FileLogStore {
            dir,
            opts,
            jobs: Some(jobs),
            thread: Some(thread),
            view: DiskView::default(),
            loaded: false,
            pending: Pending::default(),
            next_index: 1,
            batch_first: None,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &FileStoreOptions {
        &self.opts
    }

    /// Number of segment files in use after the last completed operation: what compaction keeps
    /// bounded.
    pub fn segment_count(&self) -> usize {
        self.view.segment_count
    }

    fn check_loaded(&self) -> Result<(), StorageError> {
        if self.loaded {
            Ok(())
        } else {
            Err(StorageError::Invalid(
                "load must be called before any other operation".into(),
            ))
        }
    }

    /// Run `f` on the I/O thread, after everything sent before it, and wait for its result.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Disk) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let stopped = || StorageError::Io {
            context: "the store's I/O thread".into(),
            source: std::io::Error::other("the I/O thread stopped (it panicked)"),
        };
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |disk: &mut Disk| {
            let result = f(disk);
            let _ = reply.send((result, DiskView::of(disk)));
        });
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        let (result, view) = answer.await.map_err(|_| stopped())?;
        self.view = view;
        result
    }

    /// The records appended since the last write, leaving none behind.
    fn take_pending(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    /// The pending records, for an operation that ends the batch with a sync: the next append
    /// starts a new batch. (The I/O thread runs operations in order, so the new batch reaches the
    /// disk only after this sync, even if the caller stops waiting for it.)
    fn take_pending_for_sync(&mut self) -> Pending {
        self.batch_first = None;
        self.take_pending()
    }
}

impl Drop for FileLogStore {
    /// Let the I/O thread finish what it was sent, so the files are closed and the directory is
    /// unlocked when the drop returns. Only an operation cancelled mid-flight can make this wait.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl LogStore for FileLogStore {
    async fn load(&mut self) -> Result<Recovered, StorageError> {
        self.pending = Pending::default();
        self.batch_first = None;
        self.loaded = false;
        let recovered = self.blocking(|d| d.recover()).await?;
        self.next_index = self.view.next_index;
        self.loaded = true;
        Ok(recovered)
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_loaded()?;
        // Phase: check everything before changing anything.
        for (i, e) in entries.iter().enumerate() {
            let want = self.next_index + i as u64;
            if e.index != want {
                return Err(StorageError::Invalid(format!(
                    "append of index {} where {want} was expected",
                    e.index
                )));
            }
        }
        // Phase: encode; undo on failure.
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let batch_first = *self.batch_first.get_or_insert(first.index);
        let (buf_len, records_len) = (self.pending.buf.len(), self.pending.records.len());
        for e in entries {
            let encoded = format::encode_record(e, batch_first, &mut self.pending.buf);
            let failure = match encoded {
                Ok(len) if len > self.opts.record_bytes_max => Some(format!(
                    "entry {} encodes to {len} bytes, over record_bytes_max ({})",
                    e.index, self.opts.record_bytes_max
                )),
                Ok(_) => None,
                Err(err) => Some(format!("entry {} not encodable: {err}", e.index)),
            };
            if let Some(reason) = failure {
                self.pending.buf.truncate(buf_len);
                self.pending.records.truncate(records_len);
                return Err(StorageError::Invalid(reason));
            }
            self.pending.records.push((e.index, self.pending.buf.len()));
        }
        self.next_index += entries.len() as u64;
        // Phase: bound memory by writing (not syncing) a large batch early.
        if self.pending.buf.len() >= self.opts.write_buffer_bytes_max {
            let pending = self.take_pending();
            self.blocking(move |d| d.write(&pending)).await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        self.check_loaded()?;
        let idle = self.pending.is_empty() && !self.view.needs_sync;
        if idle {
            return Ok(());
        }
        let pending = self.take_pending_for_sync();
        self.blocking(move |d| {
            d.write(&pending)?;
            d.sync()
        })
        .await
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.check_loaded()?;
        let (pending, hs) = (self.take_pending_for_sync(), *hs);
        self.blocking(move |d| {
            d.write(&pending)?;
            d.sync()?;
            d.save_hard_state(&hs)
        })
        .await
    }

    async fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_through: LogIndex,
    ) -> Result<(), StorageError> {
        self.check_loaded()?;
        if compact_through > snapshot.last.index {
            return Err(StorageError::Invalid(format!(
                "compaction through {compact_through} beyond snapshot at {}",
                snapshot.last.index
            )));
        }
        // A clone, because the I/O thread needs an owned copy; the state is `Bytes`
        // (reference-counted), so the cost is the dedup table's vector.
        let (pending, snapshot) = (self.take_pending_for_sync(), snapshot.clone());
        self.blocking(move |d| {
            d.write(&pending)?;
            d.sync()?;
            d.save_snapshot(&snapshot, compact_through)
        })
        .await?;
        self.next_index = self.view.next_index;
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.check_loaded()?;
        // Appends not yet written are superseded by the install: drop them.
        drop(self.take_pending_for_sync());
        let snapshot = snapshot.clone();
        self.blocking(move |d| d.install_snapshot(&snapshot))
            .await?;
        self.next_index = self.view.next_index;
        Ok(())
    }
}
