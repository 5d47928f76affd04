//! Counters of the connection layer (`server.rs`), read by `/metrics`
//! (`api.rs`): their own module, so neither of those imports the other's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of the connection layer, rendered by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    open: AtomicU64,
    shed: AtomicU64,
}

impl ConnectionStats {
    /// Counts a connection accepted.
    pub(crate) fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a connection refused at the connection limit.
    pub(crate) fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted since start, shed ones included.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections being served now (the 503 answers to shed ones excluded).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections refused with 503 (or closed) because the node was at its
    /// connection limit, since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Counts one open connection for as long as it lives.
pub(crate) struct OpenConnection(Arc<ConnectionStats>);

impl OpenConnection {
    pub(crate) fn new(stats: &Arc<ConnectionStats>) -> Self {
        stats.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(stats.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}
