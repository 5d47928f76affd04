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
//! A failed write poisons the open database. sled applies a write to its
//! in-memory tree before the flush that fails, so after a failed write,
//! memory may hold state that is not on disk; answering from it (a read's
//! vote, a decided value) could hand out a vote that a restart then loses,
//! undoing an answered GET. And sled itself refuses every later write once
//! an IO error is set (its global error), even after the disk recovers. So
//! after the first failure every operation fails with [`StorageError::Io`]
//! (5xx), and a recovery thread reopens the database from what is really on
//! disk, once a second, until it opens and a probe write is durable: the
//! node then serves again by itself, exactly as after a restart.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::codec::{
    self, Header, CHUNK, FORMAT_KEY, FORMAT_VERSION, OLDEST_READABLE, PROBE_KEY, ROUND_KEY,
};
use super::{State, Storage, StorageError};
use crate::paxos::Accepted;
use crate::value::Value;

/// Acceptor state in a sled database under one directory.
pub struct SledStorage {
    shared: Arc<Shared>,
}

/// How long the recovery thread waits between attempts to reopen.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

struct Shared {
    dir: PathBuf,
    /// The open database; `None` while a failed one is being replaced.
    current: RwLock<Option<Arc<Open>>>,
    /// Set while a recovery thread runs.
    recovering: AtomicBool,
    /// Set when the store is dropped: recovery stops.
    closing: AtomicBool,
    recovery: Mutex<Option<JoinHandle<()>>>,
    /// Group commits of earlier incarnations of the database, for metrics.
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
    pending: Vec<(Write, Done)>,
    stop: bool,
}

fn poisoned(why: &str) -> StorageError {
    StorageError::Io(format!(
        "an earlier write failed ({why}); this node refuses to serve from state that may \
         not be on disk until it has reopened its database from the disk (it retries every \
         second)"
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
            // New, or an older format this release reads: stamp the current
            // one, so that an older release refuses the directory instead of
            // misreading records it does not know.
            None | Some([OLDEST_READABLE..=FORMAT_VERSION]) => {
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
        let log = File::open(dir.join("db"))?;
        log.sync_all()?;
        File::open(dir)?.sync_all()?;
        let commit = Arc::new(Commit {
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            syncs: AtomicU64::new(0),
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
    /// durable. The async caller never blocks a runtime thread on sled's
    /// flush or on the disk.
    async fn commit(&self, write: Write) -> Result<(), StorageError> {
        self.commit.check()?;
        let (done, result) = oneshot::channel();
        {
            let mut queue = self.commit.queue.lock().expect("poisoned");
            if queue.stop {
                return Err(StorageError::Io("storage is closed".into()));
            }
            queue.pending.push((write, done));
        }
        self.commit.cond.notify_one();
        result
            .await
            .map_err(|_| StorageError::Io("sync thread stopped".into()))?
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

    /// A write through the sync thread, from a plain thread: shows that the
    /// disk takes writes again.
    fn probe(&self) -> Result<(), StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| StorageError::Io(format!("cannot run the probe: {e}")))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        runtime.block_on(self.commit(Write::Insert {
            key: PROBE_KEY.to_vec(),
            record: stamp.to_be_bytes().to_vec(),
            garbage: Vec::new(),
        }))
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
                recovering: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                recovery: Mutex::new(None),
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

    /// The open database, or why there is none: a failed one is refused
    /// (and its recovery started).
    fn open_db(&self) -> Result<Arc<Open>, StorageError> {
        let current = self.shared.current.read().expect("poisoned").clone();
        match current {
            Some(open) => match open.commit.failed.get() {
                None => Ok(open),
                Some(why) => {
                    let error = poisoned(why);
                    drop(open);
                    self.start_recovery();
                    Err(error)
                }
            },
            None => {
                self.start_recovery();
                Err(StorageError::Io(
                    "the database is being reopened after a failed write; retry shortly".into(),
                ))
            }
        }
    }

    fn start_recovery(&self) {
        if self.shared.recovering.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("paxos-kv-recover".into())
            .spawn(move || recover(&shared));
        match spawned {
            Ok(handle) => {
                let mut slot = self.shared.recovery.lock().expect("poisoned");
                if let Some(old) = slot.replace(handle) {
                    let _ = old.join();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start storage recovery");
                self.shared.recovering.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// Reopens the database from disk until it opens and a probe write is
/// durable, once per [`RECOVERY_INTERVAL`]. Dropping the failed database
/// first discards the memory that may be ahead of the disk.
fn recover(shared: &Shared) {
    let failed = shared.current.write().expect("poisoned").take();
    if let Some(failed) = failed {
        shared.earlier_syncs.fetch_add(
            failed.commit.syncs.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        drop(failed);
    }
    let mut attempts = 0u32;
    while !shared.closing.load(Ordering::SeqCst) {
        std::thread::sleep(RECOVERY_INTERVAL);
        attempts += 1;
        // The open fails while an operation still holds the failed
        // database (sled's file lock) or while the disk still fails.
        match Open::new(&shared.dir, shared.sync_observer.clone())
            .and_then(|open| open.probe().map(|()| open))
        {
            Ok(open) => {
                if shared.closing.load(Ordering::SeqCst) {
                    return;
                }
                *shared.current.write().expect("poisoned") = Some(Arc::new(open));
                shared.recovering.store(false, Ordering::SeqCst);
                tracing::warn!(attempts, "storage recovered: database reopened from disk");
                return;
            }
            Err(e) => tracing::warn!(attempts, error = %e, "storage still failing; retrying"),
        }
    }
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
        let old = match open.db.get(codec::header_key(key))? {
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
            return open
                .commit(Write::Insert {
                    key: codec::header_key(key),
                    record: header.encode(inline),
                    garbage: (0..old_chunks).map(|i| codec::chunk_key(key, i)).collect(),
                })
                .await;
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
            return open
                .commit(Write::Insert {
                    key: codec::header_key(key),
                    record: header.encode(&[]),
                    garbage: Vec::new(),
                })
                .await;
        }
        let mut batch = sled::Batch::default();
        for (i, chunk) in value.expect("a vote").chunks(CHUNK).enumerate() {
            batch.insert(codec::chunk_key(key, i as u32), chunk);
        }
        for i in header.chunks()..old_chunks {
            batch.remove(codec::chunk_key(key, i));
        }
        batch.insert(codec::header_key(key), header.encode(&[]));
        open.commit(Write::Batch(batch)).await
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
            .commit(Write::Insert {
                key: ROUND_KEY.to_vec(),
                record: mark.to_be_bytes().to_vec(),
                garbage: Vec::new(),
            })
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
        let open = self.open_db()?;
        Ok(open.db.get(codec::meta_key(name))?.map(|v| v.to_vec()))
    }

    async fn store_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.open_db()?
            .commit(Write::Insert {
                key: codec::meta_key(name),
                record: bytes,
                garbage: Vec::new(),
            })
            .await
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
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(handle) = self.shared.recovery.lock().expect("poisoned").take() {
            let _ = handle.join();
        }
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
                    queue = self.commit.cond.wait(queue).expect("poisoned");
                }
                if queue.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let applied: Vec<(Result<(), StorageError>, Done)> = pending
                .into_iter()
                .map(|(write, done)| (write.apply(&self.db), done))
                .collect();
            let started = std::time::Instant::now();
            let synced = self.sync();
            if let Some(observe) = self.observer.get() {
                observe(started.elapsed());
            }
            self.commit.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = &synced {
                tracing::error!(error = %e, "group commit failed; writes answered with errors");
            }
            // Poison before anyone hears back, so that no later load sees
            // state the failed round left in memory only.
            let failure = synced
                .as_ref()
                .err()
                .or_else(|| applied.iter().find_map(|(r, _)| r.as_ref().err()));
            if let Some(e) = failure {
                if self.commit.failed.set(e.to_string()).is_ok() {
                    tracing::error!(
                        error = %e,
                        "storage poisoned: every request now fails until the node restarts"
                    );
                }
            }
            for (result, done) in applied {
                let _ = done.send(result.and_then(|()| synced.clone()));
            }
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
