//! `GET /v1/kv/{key}?wait=DURATION` (docs/api.md, "wait until decided"):
//! readers parked on a key until this node learns that a value is chosen.
//!
//! A waiter costs no peer traffic while it waits: it is woken only by the
//! decide this node stores (a `Decide` from a peer, or this node's own
//! announce, which reaches its own acceptor the same way; see
//! [`Waiters::notify`]). Waiters of one key share one
//! [`tokio::sync::watch`] channel; a waiter is one receiver of it (a
//! pointer and a version number), so 10,000 waiters on one node cost a few
//! hundred kilobytes and no CPU while idle. The channel is removed when the
//! key's last waiter leaves, so keys nobody waits on cost nothing.
//!
//! The waiter subscribes *before* its first read: a decide stored between
//! that read and the wait marks the channel changed, and the wait returns at
//! once instead of missing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::node::{Node, NodeError};
use crate::storage::Storage;
use crate::transport::Transport;

/// The longest wait a request may ask for (docs/api.md: the server caps it
/// at 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The channels of every key that has at least one waiter.
#[derive(Debug)]
pub struct Waiters {
    keys: Mutex<HashMap<Arc<str>, watch::Sender<()>>>,
    /// Number of waiters on all keys; lets [`Waiters::notify`] skip the lock
    /// when nobody waits (the common case on the acceptor's path).
    waiting: AtomicUsize,
    /// True once the node shuts down: waits end early.
    closing: watch::Sender<bool>,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            keys: Mutex::default(),
            waiting: AtomicUsize::new(0),
            closing: watch::channel(false).0,
        }
    }
}

/// One registered waiter; leaving (drop) removes the key's channel when it
/// was the last waiter.
pub struct Waiter<'a> {
    waiters: &'a Waiters,
    key: Arc<str>,
    changed: Option<watch::Receiver<()>>,
    closing: watch::Receiver<bool>,
}

impl Waiters {
    /// Registers a waiter on `key`. Every [`Waiters::notify`] of `key` after
    /// this call wakes it, even one that happens before it starts waiting.
    pub fn register(&self, key: &str) -> Waiter<'_> {
        let mut keys = self.keys.lock().expect("poisoned");
        let changed = match keys.get(key) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(());
                keys.insert(Arc::from(key), tx);
                rx
            }
        };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter {
            waiters: self,
            key: Arc::from(key),
            changed: Some(changed),
            closing: self.closing.subscribe(),
        }
    }

    /// Wakes every waiter of `key`. Call after a decided state of `key` is
    /// durable on this node; cheap when nobody waits.
    pub fn notify(&self, key: &str) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(tx) = self.keys.lock().expect("poisoned").get(key) {
            tx.send_replace(());
        }
    }

    /// Ends every wait, now and later: each answers what a plain GET
    /// answers. Called when the node starts shutting down, so that its
    /// graceful stop does not wait for waiters.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Number of waiters on all keys now.
    pub fn count(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Number of keys with at least one waiter now.
    pub fn keys(&self) -> usize {
        self.keys.lock().expect("poisoned").len()
    }
}

impl Waiter<'_> {
    /// Resolves at the first notify of the key since the last call (or since
    /// [`Waiters::register`]), or once [`Waiters::close`] was called.
    pub async fn changed(&mut self) {
        let rx = self.changed.as_mut().expect("present until drop");
        // The sender lives while this receiver does (removed only by the
        // last waiter's drop), so `changed` cannot fail; treat it as a wake.
        tokio::select! {
            _ = rx.changed() => {}
            _ = self.closing.wait_for(|closing| *closing) => {}
        }
    }

    /// Whether the node is shutting down ([`Waiters::close`]).
    pub fn closing(&self) -> bool {
        *self.closing.borrow()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut keys = self.waiters.keys.lock().expect("poisoned");
        drop(self.changed.take());
        if keys
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            keys.remove(&self.key);
        }
        self.waiters.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET ?wait`: the value of `key` as soon as one is chosen, waiting at most
/// `wait` (capped at [`MAX_WAIT`]); when the wait ends, what a plain
/// [`Node::get`] answers then (`None`: a majority confirms no value is
/// chosen yet).
///
/// It answers at once when a plain GET finds a value. A GET that fails
/// before the end (no majority) does not end the wait: a decide may still
/// arrive; the final GET's error is the answer.
pub async fn get_or_wait<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    key: &str,
    wait: Duration,
) -> Result<Option<Bytes>, NodeError> {
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    // Before the first read, so a decide in between is not missed.
    let mut waiter = node.waiters().register(key);
    loop {
        let found = node.get(key).await;
        match &found {
            Ok(Some(_)) => return found,
            Ok(None) | Err(NodeError::Unavailable) => {}
            Err(_) => return found,
        }
        if waiter.closing() {
            return found; // the node stops: answer what GET just did
        }
        if tokio::time::timeout_at(deadline, waiter.changed())
            .await
            .is_err()
        {
            return node.get(key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notify_before_the_wait_is_not_missed() {
        let waiters = Waiters::default();
        let mut waiter = waiters.register("k");
        waiters.notify("k");
        tokio::time::timeout(Duration::from_secs(60), waiter.changed())
            .await
            .expect("woken by the earlier notify");
    }

    #[tokio::test]
    async fn other_keys_do_not_wake_a_waiter() {
        let waiters = Waiters::default();
        let mut waiter = waiters.register("k");
        waiters.notify("other");
        waiters.notify("k/");
        let woke = tokio::time::timeout(Duration::from_millis(50), waiter.changed()).await;
        assert!(woke.is_err(), "only a notify of \"k\" may wake it");
    }

    #[tokio::test]
    async fn closing_ends_every_wait() {
        let waiters = Waiters::default();
        let mut waiter = waiters.register("k");
        waiters.close();
        tokio::time::timeout(Duration::from_secs(60), waiter.changed())
            .await
            .expect("woken by close");
        assert!(waiter.closing() && waiters.register("j").closing());
    }

    #[test]
    fn the_last_waiter_removes_its_key() {
        let waiters = Waiters::default();
        let a = waiters.register("k");
        let b = waiters.register("k");
        let c = waiters.register("j");
        assert_eq!((waiters.count(), waiters.keys()), (3, 2));
        drop(a);
        assert_eq!((waiters.count(), waiters.keys()), (2, 2));
        drop(b);
        assert_eq!((waiters.count(), waiters.keys()), (1, 1));
        drop(c);
        assert_eq!((waiters.count(), waiters.keys()), (0, 0));
        waiters.notify("k"); // nobody waits: nothing to do
    }

    #[tokio::test]
    async fn many_waiters_of_one_key_all_wake() {
        let waiters = Arc::new(Waiters::default());
        let mut tasks = tokio::task::JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(10_000);
        for _ in 0..10_000 {
            let (waiters, ready) = (waiters.clone(), ready_tx.clone());
            tasks.spawn(async move {
                let mut waiter = waiters.register("k");
                ready.send(()).await.unwrap();
                waiter.changed().await;
            });
        }
        for _ in 0..10_000 {
            ready_rx.recv().await.unwrap();
        }
        assert_eq!((waiters.count(), waiters.keys()), (10_000, 1));
        waiters.notify("k");
        let woke = tokio::time::timeout(Duration::from_secs(60), async {
            let mut n = 0;
            while tasks.join_next().await.is_some() {
                n += 1;
            }
            n
        })
        .await
        .expect("every waiter wakes");
        assert_eq!(woke, 10_000);
        assert_eq!((waiters.count(), waiters.keys()), (0, 0));
    }
}
