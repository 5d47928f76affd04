//! An in-memory [`Storage`] for deterministic tests and simulation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{State, Storage, StorageError};

/// Acceptor state in memory. Clones share the same state, so a test can
/// "restart" a node by building a new one over a clone: every completed
/// `store` survives, exactly as the durability contract promises.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    states: Mutex<BTreeMap<String, State>>,
    round_mark: Mutex<u64>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    id: std::sync::OnceLock<u64>,
    failing: AtomicBool,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, every write fails with [`StorageError::Io`] and changes
    /// nothing, as a full or read-only disk would.
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// A snapshot of every stored register, for assertions.
    pub fn snapshot(&self) -> BTreeMap<String, State> {
        self.inner.states.lock().expect("poisoned").clone()
    }

    fn check(&self) -> Result<(), StorageError> {
        if self.inner.failing.load(Ordering::SeqCst) {
            Err(StorageError::Io("injected write failure".into()))
        } else {
            Ok(())
        }
    }
}

impl Storage for MemoryStorage {
    fn load(&self, key: &str) -> Result<State, StorageError> {
        let states = self.inner.states.lock().expect("poisoned");
        Ok(states.get(key).cloned().unwrap_or_default())
    }

    async fn store(&self, key: &str, state: &State) -> Result<(), StorageError> {
        self.check()?;
        let mut states = self.inner.states.lock().expect("poisoned");
        states.insert(key.to_owned(), state.clone());
        Ok(())
    }

    fn load_round_mark(&self) -> Result<u64, StorageError> {
        Ok(*self.inner.round_mark.lock().expect("poisoned"))
    }

    async fn store_round_mark(&self, mark: u64) -> Result<(), StorageError> {
        self.check()?;
        *self.inner.round_mark.lock().expect("poisoned") = mark;
        Ok(())
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, State)>, StorageError> {
        use std::ops::Bound;
        let states = self.inner.states.lock().expect("poisoned");
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(states
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, state)| (key.clone(), state.clone()))
            .collect())
    }

    fn database_id(&self) -> Result<u64, StorageError> {
        Ok(*self.inner.id.get_or_init(rand::random))
    }

    fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.meta.lock().expect("poisoned").get(name).cloned())
    }

    async fn store_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.check()?;
        self.inner
            .meta
            .lock()
            .expect("poisoned")
            .insert(name.to_owned(), bytes);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
