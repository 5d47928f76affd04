//! Durable acceptor state: the [`Storage`] trait, its sled implementation and
//! an in-memory twin for deterministic tests.
//!
//! Contract for every implementation: when [`Storage::store`] or
//! [`Storage::store_round_mark`] returns `Ok`, the write survives a crash of
//! the process *and* of the machine (power loss). The caller serializes
//! writes to one key (the node holds a per-key lock around load, handle,
//! store), so implementations need no read-modify-write atomicity of their own.

use std::future::Future;

use crate::paxos::AcceptorState;
use crate::value::Value;

mod codec;
mod memory;
mod sled_store;

pub use memory::MemoryStorage;
pub use sled_store::{SledStorage, SyncObserver};

/// The acceptor state of one register.
pub type State = AcceptorState<Value>;

/// Why the store could not read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The disk or the database failed; the write may not be durable.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory was written by an incompatible release.
    #[error("data directory format version {found} is not supported (this release reads version {supported})")]
    Version {
        /// The version found on disk.
        found: u8,
        /// The version this release writes.
        supported: u8,
    },
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// Where a node keeps its acceptor state and its ballot reservation.
pub trait Storage: Send + Sync + 'static {
    /// The state of `key`; the default (nothing promised, nothing accepted)
    /// for a key never written.
    fn load(&self, key: &str) -> Result<State, StorageError>;

    /// Replaces the state of `key`. Resolves `Ok` only once the new state is
    /// durable (docs/design.md invariant 1); on `Err` the caller must not reply.
    ///
    /// Precondition (Paxos, and so every caller): one ballot carries one
    /// value, so a vote with the same ballot and writer as the stored one is
    /// the same value; implementations may skip rewriting its bytes.
    fn store(
        &self,
        key: &str,
        state: &State,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Replaces the state of `key` like [`Storage::store`], but resolves
    /// once later loads see the new state, not once it is durable: it
    /// becomes durable with the next write that is (a group commit syncs
    /// everything applied before it) or soon after on an idle node; a crash
    /// before that loses it, and `key` then reads as its last durable state.
    /// Writes to one key stay in the order they were made, lazy or not.
    ///
    /// Only for a write whose loss costs nothing but time: a decided flag
    /// from an announce (docs/design.md, "Durability: what is synced
    /// before a reply"). Never for a promise or a vote. The default is
    /// [`Storage::store`].
    fn store_lazy(
        &self,
        key: &str,
        state: &State,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.store(key, state)
    }

    /// Resolves once every write applied so far is durable, lazy ones
    /// included: before a reply that rests on state a lazy write made (a
    /// `Decided` answer someone counts). At once when none is pending.
    fn settle(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        async { Ok(()) }
    }

    /// The node's durable ballot reservation mark (0 when never written).
    fn load_round_mark(&self) -> Result<u64, StorageError>;

    /// Durably records the ballot reservation mark (docs/design.md invariant 2).
    fn store_round_mark(&self, mark: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Up to `limit` registers whose key starts with `prefix` and sorts
    /// after `after` (bytewise), in key order, with their states. Reads
    /// only what it returns: a page out of a large store costs the page.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, State)>, StorageError>;

    /// Whether no register and no ballot reservation was ever stored: a new
    /// or wiped data directory.
    fn is_blank(&self) -> Result<bool, StorageError> {
        Ok(self.scan("", None, 1)?.is_empty() && self.load_round_mark()? == 0)
    }

    /// Node metadata stored under `name` (identity, known incarnations);
    /// `None` when never written.
    fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Durably stores node metadata under `name`, like [`Storage::store`].
    fn store_meta(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Flushes everything to disk; called at shutdown.
    fn flush(&self) -> Result<(), StorageError>;

    /// The random id this database was given when it was created (a fresh
    /// database after [`Storage::reset`] has another).
    fn database_id(&self) -> Result<u64, StorageError>;

    /// Why the store refuses to work, after a write to its disk failed
    /// (docs/design.md, invariant 9): it then never writes to that database
    /// again. `None` while healthy.
    fn failure(&self) -> Option<String> {
        None
    }

    /// After a failure: sets the failed database aside and opens a fresh,
    /// blank one in its place (node metadata kept), for the node to rebuild
    /// into. Fails while the disk still refuses.
    fn reset(&self) -> impl Future<Output = Result<(), StorageError>> + Send {
        async {
            Err(StorageError::Io(
                "this store cannot start over in a fresh database".into(),
            ))
        }
    }

    /// Deletes databases set aside by [`Storage::reset`], once the fresh one
    /// is rebuilt.
    fn discard_failed(&self) {}

    /// Whether a database set aside by [`Storage::reset`] is still here: the
    /// fresh one was not rebuilt yet (the rebuild discards it when done), so
    /// a node that restarts over this store must rebuild before it votes,
    /// whatever its identity says. The set-aside folder is the only durable
    /// trace a full disk allows (a rename needs no space).
    fn holds_failed(&self) -> bool {
        false
    }

    /// How many group commits (disk syncs) ran since open, for metrics.
    fn sync_count(&self) -> u64 {
        0
    }
}
