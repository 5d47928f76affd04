//! The sled-backed [`Storage`], with a group-committed `fdatasync`.
//!
//! sled 0.34's `flush` writes its buffers with `sync_file_range`, which
//! persists neither file metadata nor the device cache, and its own periodic
//! `fsync` runs only every `flush_every_ms`. So every write here is followed
//! by `flush` and then `fdatasync` on sled's log file (`<dir>/db`), opened by
//! us, plus an `fsync` of any file sled spilled to `blobs/` (large values are
//! split into small chunks so that this is rare). One sync thread applies
//! every write waiting at that moment and then syncs once (group commit):
//! concurrent writers share one `fdatasync`. A register whose value fits in
//! one chunk is a single record, written with one `insert` (see the codec for
//! why that matters: sled's `apply_batch` does IO of its own per batch).
//!
//! A failed write fails the database for good (docs/design.md, invariant
//! 9). sled applies a write to its in-memory tree before the flush that
//! fails, so memory may hold state that is not on disk; and after a failed
//! `fsync`/`fdatasync`, Linux may mark the unwritten pages clean, so they
//! read back as if durable and vanish later (the 2018 "fsyncgate"). Neither
//! memory nor the files can be trusted, and appending to that log again
//! could bury later, acknowledged writes behind a hole. So after the first
//! failure every operation fails with [`StorageError::Io`] (5xx) and
//! [`Storage::failure`] says why; the node then calls [`Storage::reset`],
//! which sets the database's files aside in `failed-<time>/` and opens a
//! fresh, blank database in the directory, and the node rebuilds it from a
//! majority of the other members (`src/rejoin.rs`) before it votes again.
//! After the rebuild, [`Storage::discard_failed`] deletes the set-aside files.
//!
//! Node metadata (the identity) lives beside the database in small files
//! `paxos-kv.<name>`, each replaced atomically (write, fsync, rename, fsync
//! the directory): it must outlive a database that is set aside.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::codec::{
    self, Header, CHUNK, DATABASE_ID_KEY, FORMAT_KEY, FORMAT_VERSION, OLDEST_READABLE, ROUND_KEY,
};
use super::{State, Storage, StorageError};
use crate::paxos::Accepted;
use crate::value::Value;

/// Acceptor state in a sled database under one directory.
pub struct SledStorage {
    shared: Arc<Shared>,
}

/// Prefix of node metadata files in the data directory.
const META_PREFIX: &str = "paxos-kv.";

/// Prefix of the folders failed databases are set aside in.
const FAILED_PREFIX: &str = "failed-";

struct Shared {
    dir: PathBuf,
    /// The open database; `None` while a failed one is being replaced.
    current: RwLock<Option<Arc<Open>>>,
    /// Serializes resets.
    resetting: Mutex<()>,
    /// Group commits of earlier databases, for metrics.
    earlier_syncs: AtomicU64,
    /// Told the duration of every group commit, once set.
    sync_observer: Arc<OnceLock<SyncObserver>>,
}

/// Called by the sync thread with the duration of each group commit (its
/// flush and `fdatasync`), for the storage sync histogram of `/metrics`.
/// Runs on the sync thread between the sync and the replies: keep it short.
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// One open sled database and its sync thread.
struct Open {
    db: sled::Db,
    commit: Arc<Commit>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

type Done = oneshot::Sender<Result<(), StorageError>>;

/// One write, applied by the sync thread.
enum Write {
    /// Insert one record, then remove keys it made garbage (chunks of an
    /// older, larger value: unreferenced once the record is in, so removing
    /// them needs no atomicity with it).
    Insert {
        key: Vec<u8>,
        record: Vec<u8>,
        garbage: Vec<Vec<u8>>,
    },
    /// Several keys that must change atomically (a chunked value).
    Batch(sled::Batch),
    /// No change: a barrier whose group commit makes every write applied
    /// before it durable ([`Storage::settle`]).
    Nothing,
}

impl Write {
    fn apply(self, db: &sled::Db) -> Result<(), StorageError> {
        match self {
            Write::Insert {
                key,
                record,
                garbage,
            } => {
                db.insert(key, record)?;
                for key in garbage {
                    db.remove(key)?;
                }
            }
            Write::Batch(batch) => db.apply_batch(batch)?,
            Write::Nothing => {}
        }
        Ok(())
    }
}

/// Writes waiting for the sync thread.
struct Commit {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// How many sync rounds ran (each is one `fdatasync`), for metrics.
    syncs: AtomicU64,
    /// Lazy writes applied so far (counted by the sync thread).
    lazy_applied: AtomicU64,
    /// `lazy_applied` as it was when the last successful sync began: every
    /// lazy write up to there is durable.
    lazy_synced: AtomicU64,
    /// The first write failure; once set, the store refuses everything.
    failed: OnceLock<String>,
}

impl Commit {
    /// Fails once any write has failed: memory may be ahead of the disk.
    fn check(&self) -> Result<(), StorageError> {
        match self.failed.get() {
            None => Ok(()),
            Some(why) => Err(poisoned(why)),
        }
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    stop: bool,
}

/// A queued write and who waits for it.
struct Pending {
    write: Write,
    done: Done,
    /// Answered once applied (visible to later loads), without waiting for
    /// a sync: see [`Storage::store_lazy`].
    lazy: bool,
}

/// How long lazy writes may wait, applied but not synced, for a group
/// commit to cover them before the sync thread runs one for them alone.
/// Under load a durable write comes much sooner (every PUT's accept is
/// one), so this only fires on an idle node: it bounds how long a
/// decided flag (the only lazy write) can stay in memory.
const LAZY_SYNC_AFTER: Duration = Duration::from_millis(200);

fn poisoned(why: &str) -> StorageError {
    StorageError::Io(format!(
        "an earlier write failed ({why}); this node never writes to that database again and \
         serves nothing until it has rebuilt a fresh one from the other members"
    ))
}

impl Open {
    /// Opens (or creates) the database in `dir`. Fails if the directory is
    /// unusable or holds data of another format version.
    fn new(dir: &Path, observer: Arc<OnceLock<SyncObserver>>) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(128 * 1024 * 1024)
            .open()?;
        match db.get(FORMAT_KEY)?.as_deref() {
            Some([FORMAT_VERSION]) => {}
            // New, or an older format this release reads: check every record
            // reads, then stamp the current format, so that an older release
            // refuses the directory instead of misreading records it does
            // not know. A record that does not read stops the open before
            // anything is written: never a half-converted directory.
            None | Some([OLDEST_READABLE..=FORMAT_VERSION]) => {
                validate_records(&db)?;
                db.insert(FORMAT_KEY, &[FORMAT_VERSION])?;
                db.flush()?;
            }
            Some(v) => {
                return Err(StorageError::Version {
                    found: v.first().copied().unwrap_or(0),
                    supported: FORMAT_VERSION,
                })
            }
        }
        if db.get(DATABASE_ID_KEY)?.is_none() {
            let id: u64 = rand::random();
            db.insert(DATABASE_ID_KEY, &id.to_be_bytes())?;
            db.flush()?;
        }
        let log = File::open(dir.join("db"))?;
        log.sync_all()?;
        File::open(dir)?.sync_all()?;
        let commit = Arc::new(Commit {
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            syncs: AtomicU64::new(0),
            lazy_applied: AtomicU64::new(0),
            lazy_synced: AtomicU64::new(0),
            failed: OnceLock::new(),
        });
        let syncer = Syncer {
            db: db.clone(),
            log,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            commit: commit.clone(),
            observer,
        };
        let handle = std::thread::Builder::new()
            .name("paxos-kv-fsync".into())
            .spawn(move || syncer.run())?;
        Ok(Open {
            db,
            commit,
            syncer: Mutex::new(Some(handle)),
        })
    }

    /// Hands `write` to the sync thread and waits until it is applied and
    /// durable (`lazy`: only until it is applied). The async caller never
    /// blocks a runtime thread on sled's flush or on the disk. Writes are
    /// applied in the order they are queued, lazy or not.
    async fn commit(&self, write: Write, lazy: bool) -> Result<(), StorageError> {
        self.commit.check()?;
        let (done, result) = oneshot::channel();
        {
            let mut queue = self.commit.queue.lock().expect("poisoned");
            if queue.stop {
                return Err(StorageError::Io("storage is closed".into()));
            }
            queue.pending.push(Pending { write, done, lazy });
        }
        self.commit.cond.notify_one();
        result
            .await
            .map_err(|_| StorageError::Io("sync thread stopped".into()))?
    }

    /// The write that replaces the state of `key` with `state`. Reads the
    /// key's current record: the caller holds the key's lock, and the
    /// key's earlier writes are applied (`commit` returned), so it is the
    /// state this write replaces.
    fn write_of(&self, key: &str, state: &State) -> Result<Write, StorageError> {
        let value = state.accepted.as_ref().map(|a| &a.value.bytes);
        let value_len = match value {
            Some(v) => u32::try_from(v.len())
                .map_err(|_| StorageError::Io("value larger than 4 GiB".into()))?,
            None => 0,
        };
        let header = Header {
            promised: state.promised,
            vote: state.accepted.as_ref().map(|a| a.ballot),
            decided: state.decided,
            writer: state.accepted.as_ref().map_or(0, |a| a.value.writer),
            value_len,
            inline: value.is_some_and(|v| v.len() <= CHUNK),
        };
        let old = match self.db.get(codec::header_key(key))? {
            Some(raw) => Some(Header::decode(&raw)?.0),
            None => None,
        };
        let old_chunks = old.map_or(0, |o| o.chunks());
        if header.inline || header.vote.is_none() {
            let inline = if header.inline {
                &value.expect("inline")[..]
            } else {
                &[]
            };
            return Ok(Write::Insert {
                key: codec::header_key(key),
                record: header.encode(inline),
                garbage: (0..old_chunks).map(|i| codec::chunk_key(key, i)).collect(),
            });
        }
        // One ballot carries one value, so the same vote ballot, writer and
        // length in chunks means the chunks on disk are already this value.
        let same_value = old.is_some_and(|o| {
            o.vote == header.vote
                && o.writer == header.writer
                && o.value_len == header.value_len
                && !o.inline
        });
        if same_value {
            return Ok(Write::Insert {
                key: codec::header_key(key),
                record: header.encode(&[]),
                garbage: Vec::new(),
            });
        }
        let mut batch = sled::Batch::default();
        for (i, chunk) in value.expect("a vote").chunks(CHUNK).enumerate() {
            batch.insert(codec::chunk_key(key, i as u32), chunk);
        }
        for i in header.chunks()..old_chunks {
            batch.remove(codec::chunk_key(key, i));
        }
        batch.insert(codec::header_key(key), header.encode(&[]));
        Ok(Write::Batch(batch))
    }

    fn read_value(&self, key: &str, header: &Header) -> Result<Bytes, StorageError> {
        let mut value = BytesMut::with_capacity(header.value_len as usize);
        for i in 0..header.chunks() {
            let chunk = self
                .db
                .get(codec::chunk_key(key, i))?
                .ok_or_else(|| StorageError::Corrupt(format!("chunk {i} of {key:?} missing")))?;
            value.extend_from_slice(&chunk);
        }
        if value.len() != header.value_len as usize {
            return Err(StorageError::Corrupt(format!(
                "value of {key:?} has {} bytes, header says {}",
                value.len(),
                header.value_len
            )));
        }
        Ok(value.freeze())
    }

    /// The state of `key` from its record `raw` (reading chunks if any).
    fn decode_state(&self, key: &str, raw: &[u8]) -> Result<State, StorageError> {
        let (header, inline) = Header::decode(raw)?;
        let accepted = match header.vote {
            None => None,
            Some(ballot) => Some(Accepted {
                ballot,
                value: Value {
                    writer: header.writer,
                    bytes: if header.inline {
                        Bytes::copy_from_slice(inline)
                    } else {
                        self.read_value(key, &header)?
                    },
                },
            }),
        };
        Ok(State {
            promised: header.promised,
            accepted,
            decided: header.decided,
        })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        {
            let mut queue = self.commit.queue.lock().expect("poisoned");
            queue.stop = true;
        }
        self.commit.cond.notify_one();
        if let Some(handle) = self.syncer.lock().expect("poisoned").take() {
            let _ = handle.join();
        }
        if self.commit.failed.get().is_none() {
            let _ = self.db.flush();
        }
    }
}

impl SledStorage {
    /// Opens (or creates) the database in `dir`. Fails if the directory is
    /// unusable or holds data of another format version.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let sync_observer = Arc::new(OnceLock::new());
        let open = Open::new(dir, sync_observer.clone())?;
        Ok(SledStorage {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                current: RwLock::new(Some(Arc::new(open))),
                resetting: Mutex::new(()),
                earlier_syncs: AtomicU64::new(0),
                sync_observer,
            }),
        })
    }

    /// Has `observer` told the duration of every later group commit (of
    /// this database and of any reopened after a failure). The first
    /// observer set stays; later calls are ignored.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        let _ = self.shared.sync_observer.set(observer);
    }

    /// The open database, or why there is none: a failed one is refused.
    fn open_db(&self) -> Result<Arc<Open>, StorageError> {
        let current = self.shared.current.read().expect("poisoned").clone();
        match current {
            Some(open) => match open.commit.failed.get() {
                None => Ok(open),
                Some(why) => Err(poisoned(why)),
            },
            None => Err(StorageError::Io(
                "a fresh database is being opened after a failed write; retry shortly".into(),
            )),
        }
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.shared.dir.join(format!("{META_PREFIX}{name}"))
    }
}

/// Checks that every register record of `db` decodes (an older format
/// about to be restamped).
fn validate_records(db: &sled::Db) -> Result<(), StorageError> {
    for item in db.scan_prefix(b"s") {
        let (key, raw) = item?;
        Header::decode(&raw).map_err(|e| {
            StorageError::Corrupt(format!(
                "record {:?} does not read ({e}); the directory was left as it was",
                String::from_utf8_lossy(&key[1..])
            ))
        })?;
    }
    Ok(())
}

/// Moves every entry of `dir` but metadata files and earlier set-aside
/// folders into a new `failed-<time>/` folder (renames only: no space is
/// needed, which matters when the disk is full).
fn set_aside(dir: &Path) -> Result<PathBuf, StorageError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = dir.join(format!("{FAILED_PREFIX}{stamp}"));
    std::fs::create_dir(&aside)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with(META_PREFIX) || text.starts_with(FAILED_PREFIX) {
            continue;
        }
        std::fs::rename(entry.path(), aside.join(&name))?;
    }
    File::open(dir)?.sync_all()?;
    Ok(aside)
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Storage for SledStorage {
    fn load(&self, key: &str) -> Result<State, StorageError> {
        let open = self.open_db()?;
        match open.db.get(codec::header_key(key))? {
            None => Ok(State::default()),
            Some(raw) => open.decode_state(key, &raw),
        }
    }

    async fn store(&self, key: &str, state: &State) -> Result<(), StorageError> {
        let open = self.open_db()?;
        let write = open.write_of(key, state)?;
        open.commit(write, false).await
    }

    async fn store_lazy(&self, key: &str, state: &State) -> Result<(), StorageError> {
        let open = self.open_db()?;
        let write = open.write_of(key, state)?;
        open.commit(write, true).await
    }

    async fn settle(&self) -> Result<(), StorageError> {
        let open = self.open_db()?;
        let commit = &open.commit;
        if commit.lazy_synced.load(Ordering::Acquire) >= commit.lazy_applied.load(Ordering::Acquire)
        {
            return commit.check();
        }
        // A write of nothing: its group commit syncs everything applied
        // before it.
        open.commit(Write::Nothing, false).await
    }

    fn load_round_mark(&self) -> Result<u64, StorageError> {
        let open = self.open_db()?;
        match open.db.get(ROUND_KEY)? {
            None => Ok(0),
            Some(raw) => {
                let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| {
                    StorageError::Corrupt(format!("round mark of {} bytes", raw.len()))
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    async fn store_round_mark(&self, mark: u64) -> Result<(), StorageError> {
        self.open_db()?
            .commit(
                Write::Insert {
                    key: ROUND_KEY.to_vec(),
                    record: mark.to_be_bytes().to_vec(),
                    garbage: Vec::new(),
                },
                false,
            )
            .await
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, State)>, StorageError> {
        let open = self.open_db()?;
        let start = match after {
            Some(after) if after >= prefix => {
                let mut k = codec::header_key(after);
                k.push(0); // the smallest key above `after`
                k
            }
            _ => codec::header_key(prefix),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in open.db.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = item?;
            let Some(key) = raw_key.strip_prefix(b"s") else {
                break;
            };
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = std::str::from_utf8(key)
                .map_err(|_| StorageError::Corrupt("a stored key is not UTF-8".into()))?;
            out.push((key.to_owned(), open.decode_state(key, &raw)?));
        }
        Ok(out)
    }

    fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match std::fs::read(self.meta_path(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn store_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let path = self.meta_path(name);
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| StorageError::Io(format!("metadata write failed: {e}")))?
    }

    fn database_id(&self) -> Result<u64, StorageError> {
        let open = self.open_db()?;
        let raw = open
            .db
            .get(DATABASE_ID_KEY)?
            .ok_or_else(|| StorageError::Corrupt("the database has no id".into()))?;
        let bytes: [u8; 8] = raw
            .as_ref()
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("database id of {} bytes", raw.len())))?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn failure(&self) -> Option<String> {
        let current = self.shared.current.read().expect("poisoned");
        match current.as_ref() {
            Some(open) => open.commit.failed.get().cloned(),
            None => Some("the failed database is being replaced".into()),
        }
    }

    async fn reset(&self) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _one = shared.resetting.lock().expect("poisoned");
            let failed = shared.current.write().expect("poisoned").take();
            if let Some(failed) = failed {
                shared.earlier_syncs.fetch_add(
                    failed.commit.syncs.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                if failed.commit.failed.get().is_none() {
                    // Nothing failed: keep it.
                    *shared.current.write().expect("poisoned") = Some(failed);
                    return Ok(());
                }
                drop(failed);
                let aside = set_aside(&shared.dir)?;
                tracing::warn!(path = %aside.display(), "failed database set aside");
            }
            let open = Open::new(&shared.dir, shared.sync_observer.clone())?;
            *shared.current.write().expect("poisoned") = Some(Arc::new(open));
            tracing::warn!("a fresh database is open; the node rebuilds it from its peers");
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(format!("reset failed: {e}")))?
    }

    fn holds_failed(&self) -> bool {
        std::fs::read_dir(&self.shared.dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(FAILED_PREFIX) && e.path().is_dir()
            })
        })
    }

    fn discard_failed(&self) {
        let Ok(entries) = std::fs::read_dir(&self.shared.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(FAILED_PREFIX)
            {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "deleted a failed database, now rebuilt")
                    }
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete a failed database")
                    }
                }
            }
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.open_db()?.db.flush()?;
        Ok(())
    }

    fn sync_count(&self) -> u64 {
        let current = self.shared.current.read().expect("poisoned");
        let now = current
            .as_ref()
            .map_or(0, |o| o.commit.syncs.load(Ordering::Relaxed));
        self.shared.earlier_syncs.load(Ordering::Relaxed) + now
    }
}

impl Drop for SledStorage {
    fn drop(&mut self) {
        // Drops the database (joining its sync thread) unless an operation
        // still holds it; that one drops it when it ends.
        self.shared.current.write().expect("poisoned").take();
    }
}

/// The group-commit thread: applies every waiting batch, then makes them
/// all durable with one flush and one `fdatasync`, then answers them all.
struct Syncer {
    db: sled::Db,
    log: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
    commit: Arc<Commit>,
    observer: Arc<OnceLock<SyncObserver>>,
}

impl Syncer {
    fn run(mut self) {
        loop {
            let pending = {
                let mut queue = self.commit.queue.lock().expect("poisoned");
                while queue.pending.is_empty() && !queue.stop {
                    if self.lazy_unsynced() {
                        let (q, waited) = self
                            .commit
                            .cond
                            .wait_timeout(queue, LAZY_SYNC_AFTER)
                            .expect("poisoned");
                        queue = q;
                        if waited.timed_out() && queue.pending.is_empty() && !queue.stop {
                            break; // idle: a group commit of no writes covers them
                        }
                    } else {
                        queue = self.commit.cond.wait(queue).expect("poisoned");
                    }
                }
                if queue.pending.is_empty() && queue.stop {
                    drop(queue);
                    if self.lazy_unsynced() && self.commit.failed.get().is_none() {
                        self.round(Vec::new()); // closing: make them durable
                    }
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            self.round(pending);
        }
    }

    /// Whether some applied lazy write is not yet covered by a sync.
    fn lazy_unsynced(&self) -> bool {
        self.commit.lazy_synced.load(Ordering::Relaxed)
            < self.commit.lazy_applied.load(Ordering::Relaxed)
    }

    /// One group commit: applies every write in queue order, answers the
    /// lazy ones, then (unless every write was lazy) flushes and syncs once
    /// and answers the rest. With no writes at all it only syncs (lazy
    /// writes left unsynced by an idle node).
    fn round(&mut self, pending: Vec<Pending>) {
        let idle = pending.is_empty();
        let mut waiting: Vec<(Result<(), StorageError>, Done)> = Vec::new();
        let mut lazy_answers: Vec<(Result<(), StorageError>, Done)> = Vec::new();
        for Pending { write, done, lazy } in pending {
            let result = write.apply(&self.db);
            if lazy {
                self.commit.lazy_applied.fetch_add(1, Ordering::Release);
                lazy_answers.push((result, done));
            } else {
                waiting.push((result, done));
            }
        }
        // A write that failed to apply fails the database before anyone
        // hears back (invariant 9).
        let apply_failure = waiting
            .iter()
            .chain(lazy_answers.iter())
            .find_map(|(r, _)| r.as_ref().err().cloned());
        if let Some(e) = &apply_failure {
            self.fail(e);
        }
        // Lazy writers need only the write applied: later loads of their
        // key see it, and the sync below or a later one makes it durable.
        for (result, done) in lazy_answers {
            let _ = done.send(result.and_then(|()| self.commit.check()));
        }
        let must_sync = !waiting.is_empty() || idle;
        if !must_sync || apply_failure.is_some() {
            for (result, done) in waiting {
                let _ = done.send(result.and_then(|()| self.commit.check()));
            }
            return;
        }
        let covered = self.commit.lazy_applied.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let synced = self.sync();
        if let Some(observe) = self.observer.get() {
            observe(started.elapsed());
        }
        self.commit.syncs.fetch_add(1, Ordering::Relaxed);
        match &synced {
            Ok(()) => self.commit.lazy_synced.store(covered, Ordering::Release),
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; writes answered with errors");
                // Poison before anyone hears back, so that no later load
                // sees state the failed round left in memory only.
                self.fail(e);
            }
        }
        for (result, done) in waiting {
            let _ = done.send(result.and_then(|()| synced.clone()));
        }
    }

    fn fail(&self, e: &StorageError) {
        if self.commit.failed.set(e.to_string()).is_ok() {
            tracing::error!(
                error = %e,
                "storage failed: this database is never written again (fail-stop)"
            );
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.log.sync_data()?;
        self.sync_blobs()
    }

    /// fsyncs blob files sled created since the last round, then the folder.
    fn sync_blobs(&mut self) -> Result<(), StorageError> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            if self.synced_blobs.contains(&entry.file_name()) {
                continue;
            }
            File::open(entry.path())?.sync_all()?;
            self.synced_blobs.insert(entry.file_name());
            new = true;
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        Ok(())
    }
}
