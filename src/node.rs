//! A node: the acceptor for every key it stores, and the proposer for every
//! client request it receives. Runs the pure core over any [`Storage`] and
//! [`Transport`]; holds no HTTP and no sled specifics.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio::time::Instant;

use crate::admission::PeerRefused;
use crate::events::{in_request, EventBus, Kind};
use crate::identity::{Identity, IdentityError, META_NAME};
use crate::metrics::{inc, Metrics};
use crate::paxos::{
    acceptor, Ballot, BallotClock, Coordinator, Count, Effect, Fault, Fence, Incarnation, Limits,
    Members, NodeId, Outcome, Reply, Request, Step, Time,
};
use crate::storage::{Storage, StorageError};
use crate::transport::{
    Answer, Control, ControlReply, Envelope, PeerHandler, Transport, TransportError,
};
use crate::value::Value;
use crate::waiters::Waiters;

pub use crate::config::Timing;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No majority answered before the deadline: the outcome is unknown.
    #[error(
        "no majority of nodes answered in time; the outcome is unknown, retry the same request"
    )]
    Unavailable,
    /// This node does not serve yet (its cluster is forming, or it rebuilds
    /// after losing its disk) or no longer does (its disk failed).
    #[error("this node is not serving: {0}")]
    NotServing(String),
    /// This node's storage failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The membership changed while the request ran: its answers may come
    /// from two epochs, so it concludes nothing (the caller retries).
    #[error("the cluster's membership changed while the request ran; retry")]
    EpochChanged,
}

/// Why an acceptor gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcceptorError {
    /// The node's storage failed: nothing may claim durability.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The message belongs to another membership epoch (invariant 10),
    /// found under the key's lock: the epoch changed after admission.
    #[error("this node is at membership epoch {mine}, the message at {theirs}")]
    OtherEpoch {
        /// The message's epoch.
        theirs: u64,
        /// This node's.
        mine: u64,
    },
    /// The node casts no vote and makes no promise in this state.
    #[error("this node is not serving: {0}")]
    NotServing(String),
    /// The node has as many acceptor steps in progress as it may.
    #[error("this node's acceptor is overloaded; retry")]
    Overloaded,
    /// The accept's round relied on a promise of an incarnation that has
    /// since lost its disk (docs/design.md, invariant 8).
    #[error("the round relied on a promise of node {0} made before it lost its disk; retry with a new ballot")]
    Fenced(NodeId),
}

/// A node's lifecycle state (`/ready`, `/v1/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// New, with no data: waiting for its peers to start a cluster or to
    /// show that one exists.
    Joining(String),
    /// Rebuilding its acceptor state from a majority of the other members
    /// after losing its disk (or resuming such a rebuild).
    Recovering(String),
    /// Voting and serving clients.
    Serving,
    /// Its storage failed; it serves nothing until it has rebuilt.
    Failed(String),
    /// It was removed from the cluster: it votes in nothing and serves
    /// nothing; its process can be stopped.
    Removed(String),
}

impl Health {
    /// The state's name: `joining`, `recovering`, `serving` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Joining(_) => "joining",
            Health::Recovering(_) => "recovering",
            Health::Serving => "serving",
            Health::Failed(_) => "failed",
            Health::Removed(_) => "removed",
        }
    }

    /// Why the node does not serve, when it does not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Joining(why)
            | Health::Recovering(why)
            | Health::Failed(why)
            | Health::Removed(why) => Some(why),
            Health::Serving => None,
        }
    }
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be read.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The data directory belongs to someone else, or is unreadable.
    #[error("{0}")]
    Identity(#[from] IdentityError),
}

/// Most acceptor steps a node runs at once; past it, peers are answered
/// "overloaded" at once instead of piling tasks up behind a slow disk.
pub const MAX_ACCEPTOR_STEPS: usize = 4096;

/// The answer to a PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The register was empty; this request's value is now chosen.
    Created,
    /// The register already held this very value.
    AlreadyChosen,
    /// The register holds another value, forever.
    Conflict(Bytes),
}

/// How a GET was answered, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// From this node's decided state.
    Local,
    /// By a quorum read.
    Quorum,
    /// By a recovery round.
    Recovered,
}

type CallResult = Result<Answer, String>;

/// One member of the cluster.
pub struct Node<S, T> {
    pub(crate) id: NodeId,
    /// The quorum view of the current epoch (follows the identity).
    members: std::sync::RwLock<Members>,
    /// Serializes membership changes run by this node (`src/reconfigure.rs`).
    pub(crate) reconfiguring: Mutex<()>,
    pub(crate) timing: Timing,
    pub(crate) storage: S,
    pub(crate) transport: T,
    /// Serializes load-handle-store per key (striped by key hash).
    key_locks: Vec<Mutex<()>>,
    clock: Mutex<BallotClock>,
    rng: std::sync::Mutex<StdRng>,
    /// When each peer last answered.
    last_seen: std::sync::Mutex<BTreeMap<NodeId, std::time::Instant>>,
    metrics: Metrics,
    /// Cluster, incarnation, known peer incarnations (invariants 8, 10).
    pub(crate) identity: std::sync::RwLock<Identity>,
    /// Serializes writes of the identity.
    pub(crate) identity_write: Mutex<()>,
    /// Whether this node votes and serves.
    pub(crate) health: watch::Sender<Health>,
    /// Why peers were refused (another cluster or membership), for status.
    pub(crate) peer_notes: std::sync::Mutex<BTreeMap<NodeId, String>>,
    /// Bounds the acceptor steps in progress.
    acceptor_slots: Arc<Semaphore>,
    /// Readers of `GET ?wait`, woken when a decided state is stored.
    waiters: Waiters,
    /// Protocol events for the console (`src/events.rs`).
    events: EventBus,
}

const KEY_LOCK_STRIPES: usize = 4096;

impl<S: Storage, T: Transport> Node<S, T> {
    /// A node with id `id` in `members`, restoring its ballot clock from
    /// `storage`. `seed` fixes the backoff randomness (tests); `None` seeds
    /// from the OS.
    pub fn new(
        id: NodeId,
        members: Members,
        timing: Timing,
        storage: S,
        transport: T,
        seed: Option<u64>,
    ) -> Result<Arc<Self>, StorageError> {
        let urls = members.iter().map(|m| (m, String::new())).collect();
        let identity = match storage.load_meta(META_NAME)? {
            Some(bytes) => {
                Identity::decode(&bytes, id).map_err(|e| StorageError::Corrupt(e.to_string()))?
            }
            None => Identity::new("local".into(), id, &urls),
        };
        let health = if identity.rebuilt {
            Health::Serving
        } else {
            Health::Recovering("resuming a rebuild".into())
        };
        Self::build(
            id, members, timing, storage, transport, seed, identity, health,
        )
    }

    /// A production node over `storage`, with the identity the data
    /// directory records (docs/design.md, invariant 8):
    /// - an identity whose rebuild finished: serving at once;
    /// - an identity whose rebuild did not finish: recovering;
    /// - no identity but data (a directory of an earlier release): serving,
    ///   under a cluster id derived from the membership alone;
    /// - no identity and no data (new, or wiped): joining, until its peers
    ///   say whether the cluster exists ([`crate::rejoin::run`] decides).
    ///
    /// `urls` is the membership of `--peers`; a stored membership wins over
    /// it (and the difference is logged).
    pub fn open(
        id: NodeId,
        urls: &BTreeMap<NodeId, String>,
        timing: Timing,
        storage: S,
        transport: T,
        seed: Option<u64>,
    ) -> Result<Arc<Self>, StartError> {
        let (identity, health) = match storage.load_meta(META_NAME)? {
            Some(bytes) => {
                let mut identity = Identity::decode(&bytes, id)?;
                let same_ids = identity.members.keys().eq(urls.keys());
                if identity.epoch == crate::identity::FIRST_EPOCH
                    && same_ids
                    && &identity.members != urls
                {
                    // The members never changed: --peers still says where
                    // they are (a dev cluster moved to other ports, say).
                    tracing::info!(
                        stored = ?identity.members,
                        flags = ?urls,
                        "the members' addresses in --peers differ from the stored ones; using --peers"
                    );
                    identity.members = urls.clone();
                } else if &identity.members != urls {
                    tracing::warn!(
                        stored = ?identity.members,
                        flags = ?urls,
                        "--peers differs from the membership stored in the data directory; the stored membership wins"
                    );
                }
                let database = storage.database_id()?;
                let health = if identity.database.is_some_and(|d| d != database) {
                    identity.rebuilt = false;
                    Health::Recovering(
                        "its database is not the one its identity was stored with (replaced \
                         or deleted under it): it rebuilds from a majority of the other members"
                            .into(),
                    )
                } else if identity.rebuilt && storage.holds_failed() {
                    // Its disk failed and the process ended before the
                    // fresh database was rebuilt: that database holds
                    // nothing it may vote from (docs/design.md, invariant 9).
                    identity.rebuilt = false;
                    Health::Recovering(
                        "its disk failed before this start and the rebuild into a fresh \
                         database had not finished: copying its state from a majority of \
                         the other members"
                            .into(),
                    )
                } else if identity.rebuilt {
                    Health::Serving
                } else {
                    Health::Recovering(
                        "resuming a rebuild that was interrupted: this node lost its disk and \
                         copies its state from a majority of the other members"
                            .into(),
                    )
                };
                (identity, health)
            }
            None if !storage.is_blank()? => {
                let cluster = crate::identity::legacy_cluster_id(urls);
                tracing::info!(%cluster, "a data directory of an earlier release: giving it an identity");
                (Identity::new(cluster, id, urls), Health::Serving)
            }
            None => {
                let mut identity = Identity::new(String::new(), id, urls);
                identity.rebuilt = false;
                let why = "new, with no data: waiting until every member answers (a new \
                           cluster starts) or any member shows the cluster exists (this node \
                           then rebuilds from the others)";
                (identity, Health::Joining(why.into()))
            }
        };
        let members = identity.config().quorums();
        Ok(Self::build(
            id, members, timing, storage, transport, seed, identity, health,
        )?)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        id: NodeId,
        members: Members,
        timing: Timing,
        storage: S,
        transport: T,
        seed: Option<u64>,
        identity: Identity,
        health: Health,
    ) -> Result<Arc<Self>, StorageError> {
        let mark = storage.load_round_mark()?;
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        transport.set_envelope(Envelope {
            cluster: identity.cluster.clone(),
            epoch: identity.epoch,
            incarnation: identity.incarnation,
        });
        transport.set_peers(&identity.members);
        Ok(Arc::new(Node {
            id,
            members: std::sync::RwLock::new(members),
            reconfiguring: Mutex::new(()),
            timing,
            storage,
            transport,
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            clock: Mutex::new(BallotClock::restore(id, mark)),
            rng: std::sync::Mutex::new(rng),
            last_seen: std::sync::Mutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            identity: std::sync::RwLock::new(identity),
            identity_write: Mutex::new(()),
            health: watch::Sender::new(health),
            peer_notes: std::sync::Mutex::new(BTreeMap::new()),
            acceptor_slots: Arc::new(Semaphore::new(MAX_ACCEPTOR_STEPS)),
            waiters: Waiters::default(),
            events: EventBus::new(id),
        }))
    }

    /// This node's lifecycle state.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// A copy of this node's identity.
    pub fn identity(&self) -> Identity {
        self.identity.read().expect("poisoned").clone()
    }

    /// This node's incarnation (what its promises are made in).
    pub fn incarnation(&self) -> Incarnation {
        self.identity.read().expect("poisoned").incarnation
    }

    /// Why peers were refused lately (another cluster or membership).
    pub fn peer_notes(&self) -> BTreeMap<NodeId, String> {
        self.peer_notes.lock().expect("poisoned").clone()
    }

    pub(crate) fn set_health(&self, health: Health) {
        if *self.health.borrow() != health {
            match health.reason() {
                None => tracing::info!(state = health.name(), "node state"),
                Some(why) => tracing::warn!(state = health.name(), reason = why, "node state"),
            }
        }
        self.health.send_replace(health);
    }

    /// Makes `identity` durable, then current (transport envelope included).
    pub(crate) async fn save_identity(&self, mut identity: Identity) -> Result<(), StorageError> {
        // A failed database has no id to give (the identity is then being
        // marked unrebuilt before a reset, and the id no longer matters).
        if let Ok(database) = self.storage.database_id() {
            identity.database = Some(database);
        }
        self.storage
            .store_meta(META_NAME, identity.encode())
            .await
            .inspect_err(|_| self.storage_failed())?;
        self.transport.set_envelope(Envelope {
            cluster: identity.cluster.clone(),
            epoch: identity.epoch,
            incarnation: identity.incarnation,
        });
        self.transport.set_peers(&identity.members);
        let members = identity.config().quorums();
        let mut current = self.identity.write().expect("poisoned");
        *self.members.write().expect("poisoned") = members;
        *current = identity;
        Ok(())
    }

    /// Whether a peer message of `cluster` and `epoch` from `from` belongs
    /// to this node's cluster and membership (invariant 10); the reason
    /// when not, noted for `/v1/status` and logged once per change.
    pub fn admit_peer(&self, from: NodeId, cluster: &str, epoch: u64) -> Result<(), PeerRefused> {
        let mine = self.identity.read().expect("poisoned");
        if mine.cluster.is_empty() {
            // Expected while the cluster forms: not worth a note or a log.
            return Err(PeerRefused::NotJoined);
        }
        let refusal = if cluster != mine.cluster {
            Some(PeerRefused::OtherCluster {
                from,
                theirs: cluster.to_owned(),
                mine: mine.cluster.clone(),
            })
        } else if epoch != mine.epoch {
            Some(PeerRefused::OtherEpoch {
                from,
                theirs: epoch,
                mine: mine.epoch,
            })
        } else {
            None
        };
        drop(mine);
        match refusal {
            None => {
                let mut notes = self.peer_notes.lock().expect("poisoned");
                if !notes.is_empty() && notes.remove(&from).is_some() {
                    tracing::info!(peer = from, "peer admitted again");
                }
                Ok(())
            }
            Some(why) => {
                self.note_peer(from, &why.to_string());
                Err(why)
            }
        }
    }

    /// Records why `peer` was refused (logged when it changes).
    pub(crate) fn note_peer(&self, peer: NodeId, why: &str) {
        let mut notes = self.peer_notes.lock().expect("poisoned");
        if notes.get(&peer).map(String::as_str) != Some(why) {
            tracing::warn!(peer, reason = why, "peer refused");
            notes.insert(peer, why.to_owned());
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's timing knobs.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The quorum view of the current membership epoch.
    pub fn members(&self) -> Members {
        self.members.read().expect("poisoned").clone()
    }

    /// The current membership epoch.
    pub fn epoch(&self) -> u64 {
        self.identity.read().expect("poisoned").epoch
    }

    /// The members and quorum view of the current epoch, read together.
    pub(crate) fn view(&self) -> (u64, Members) {
        let identity = self.identity.read().expect("poisoned");
        let members = self.members.read().expect("poisoned").clone();
        (identity.epoch, members)
    }

    /// This node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This node's protocol events (the console's feed).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// This node's storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The readers waiting on keys of this node (`GET ?wait`).
    pub fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// How long ago each peer last answered a call from this node.
    pub fn last_seen(&self) -> BTreeMap<NodeId, Duration> {
        let seen = self.last_seen.lock().expect("poisoned");
        seen.iter().map(|(id, at)| (*id, at.elapsed())).collect()
    }

    /// Sends `request` for `key` to every peer that has not answered for
    /// `quiet`, waiting for all of them; used as a heartbeat with a read.
    pub async fn ping_quiet_peers(
        self: &Arc<Self>,
        quiet: Duration,
        key: &str,
        request: Request<Value>,
    ) {
        let seen = self.last_seen();
        let quiet_peers: Vec<NodeId> = self
            .members()
            .iter()
            .filter(|id| *id != self.id && seen.get(id).is_none_or(|ago| *ago >= quiet))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for peer in quiet_peers {
            let (node, key, request) = (self.clone(), key.to_owned(), request.clone());
            calls.spawn(async move { node.call(peer, &key, request, Fence::default()).await });
        }
        while calls.join_next().await.is_some() {}
    }

    // ----- acceptor side -----

    /// Applies one acceptor request for `key` and returns the reply, which
    /// is only produced after the new state is durable (invariant 1), with
    /// this node's incarnation. An accept whose `fence` names a superseded
    /// incarnation is refused (invariant 8). A node that does not serve
    /// answers nothing (it votes in nothing while it rebuilds).
    ///
    /// The load-handle-store step runs in its own task, so it finishes even
    /// when the caller gives up (a peer's HTTP request times out and axum
    /// drops the handler): the key lock is released only after the write is
    /// applied and durable. Otherwise the next request for the key would
    /// decide from a state that a queued write is about to replace, and a
    /// vote could be reported and then lost.
    pub async fn handle_acceptor(
        self: &Arc<Self>,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> Result<Answer, AcceptorError> {
        let step = self.spawn_step(key.to_owned(), request, fence, None, false)?;
        join_step(step).await
    }

    /// [`Node::handle_acceptor`] for many requests at once (a peer's
    /// batch): they run concurrently, so their writes share group commits;
    /// the replies come back in order.
    /// Every request is checked again, under its key's lock, against this
    /// node's epoch (`epoch` is the sender's, invariant 10). A request
    /// marked `lazy` (an announced decide) is recorded without waiting for
    /// a disk sync (see `Node::announce` and docs/design.md, "Durability: what is
    /// synced before a reply").
    pub async fn handle_acceptor_batch(
        self: &Arc<Self>,
        requests: Vec<(String, Request<Value>, Fence, bool)>,
        epoch: u64,
    ) -> Vec<Result<Answer, AcceptorError>> {
        let steps: Vec<_> = requests
            .into_iter()
            .map(|(key, request, fence, lazy)| {
                self.spawn_step(key, request, fence, Some(epoch), lazy)
            })
            .collect();
        let mut replies = Vec::with_capacity(steps.len());
        for step in steps {
            replies.push(match step {
                Ok(step) => join_step(step).await,
                Err(e) => Err(e),
            });
        }
        replies
    }

    /// Runs one acceptor step in its own task (see [`Node::handle_acceptor`]),
    /// or refuses at once: when this node does not serve, or has
    /// [`MAX_ACCEPTOR_STEPS`] steps in progress already. `lazy`: see
    /// [`Node::acceptor_step`].
    fn spawn_step(
        self: &Arc<Self>,
        key: String,
        request: Request<Value>,
        fence: Fence,
        epoch: Option<u64>,
        lazy: bool,
    ) -> Result<StepHandle, AcceptorError> {
        if let Some(why) = self.health.borrow().reason() {
            return Err(AcceptorError::NotServing(why.to_owned()));
        }
        let slot = self
            .acceptor_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| AcceptorError::Overloaded)?;
        let node = self.clone();
        let heard = self.events.heard(&key, &request);
        // A decided membership register: the next epoch is chosen.
        let learned = match &request {
            Request::Decide { value, .. } if crate::membership::is_internal(&key) => {
                crate::membership::MemberConfig::decode(&value.bytes).ok()
            }
            _ => None,
        };
        Ok(tokio::spawn(async move {
            let answer = node.acceptor_step(&key, request, &fence, epoch, lazy).await;
            node.events.stepped(heard, &answer);
            drop(slot);
            if let (Some(config), Ok(_)) = (learned, &answer) {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.adopt(config).await {
                        tracing::warn!(error = %e, "cannot adopt a newer membership");
                    }
                });
            }
            answer
        }))
    }

    /// One acceptor step under the key's lock: load, `acceptor::handle_in`,
    /// store, answer.
    ///
    /// `lazy` (an announced decide, whose answer nobody reads): a new state
    /// is stored with [`Storage::store_lazy`], applied but not synced; it
    /// is durable with the next group commit, and a crash before that
    /// loses only the decided flag (docs/design.md, "Durability: what is
    /// synced before a reply"). Not for a decide of a membership register:
    /// the node adopts the membership it names, so it stays durable.
    /// Every other step is durable before its answer, and an answer that
    /// rests on a decided flag (`Reply::Decided`, which a sweep counts as
    /// recorded) waits for [`Storage::settle`]: that flag may be lazy.
    async fn acceptor_step(
        &self,
        key: &str,
        request: Request<Value>,
        fence: &Fence,
        epoch: Option<u64>,
        lazy: bool,
    ) -> Result<Answer, AcceptorError> {
        let lazy = lazy
            && matches!(request, Request::Decide { .. })
            && !crate::membership::is_internal(key);
        inc(&self.metrics.acceptor_requests);
        let _guard = self.key_lock(key).lock().await;
        let (incarnation, fast_open) = {
            let identity = self.identity.read().expect("poisoned");
            if matches!(request, Request::Accept { .. }) && !fence.is_empty() {
                // Its own incarnation counts too: a rebuilt node must refuse
                // a round that relied on a promise of its earlier
                // incarnation, or it accepts that round's value over one
                // chosen meanwhile (tests/model_check.rs,
                // `mutation_self_not_fenced_is_caught`).
                let mut known = identity.known();
                known.record(self.id, identity.incarnation);
                known.admits(fence).map_err(AcceptorError::Fenced)?;
            }
            // Under the key's lock: a message admitted just before this node
            // adopted the next epoch is refused here, so after it answered
            // the next epoch for a key it never acts on the old one for it.
            if let Some(theirs) = epoch.filter(|e| *e != identity.epoch) {
                return Err(AcceptorError::OtherEpoch {
                    theirs,
                    mine: identity.epoch,
                });
            }
            let fast_open = self.members.read().expect("poisoned").fast_allowed();
            (identity.incarnation, fast_open)
        };
        let state = self
            .storage
            .load(key)
            .inspect_err(|_| self.storage_failed())?;
        let reply = match acceptor::handle_in(&state, request, fast_open) {
            Step::Reply(reply @ Reply::Decided { .. }) if !lazy => {
                self.storage
                    .settle()
                    .await
                    .inspect_err(|_| self.storage_failed())?;
                reply
            }
            Step::Reply(reply) => reply,
            Step::Persist(persist) if lazy => {
                self.storage
                    .store_lazy(key, persist.state())
                    .await
                    .inspect_err(|_| self.storage_failed())?;
                self.waiters.notify(key);
                // Not durable: only the announcer gets this answer, and it
                // drops it.
                persist.reply_once_durable().1
            }
            Step::Persist(persist) => {
                self.storage
                    .store(key, persist.state())
                    .await
                    .inspect_err(|_| self.storage_failed())?;
                // A decide received, or this node's own announce: wake readers.
                if persist.state().decided {
                    self.waiters.notify(key);
                }
                persist.reply_once_durable().1
            }
        };
        Ok(Answer { reply, incarnation })
    }

    /// Installs a rebuilt state for `key` (see `src/rejoin.rs`): only while
    /// this node does not serve, under the key's lock, durable on return.
    pub(crate) async fn install(
        &self,
        key: &str,
        state: &crate::storage::State,
    ) -> Result<(), StorageError> {
        let _guard = self.key_lock(key).lock().await;
        self.storage
            .store(key, state)
            .await
            .inspect_err(|_| self.storage_failed())
    }

    /// Answers a node-level message from `from` (see `src/rejoin.rs`).
    pub async fn handle_control(
        self: &Arc<Self>,
        from: NodeId,
        message: Control,
    ) -> Result<ControlReply, AcceptorError> {
        crate::rejoin::handle_control(self, from, message).await
    }

    fn key_lock(&self, key: &str) -> &Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.key_locks[(hash as usize) % KEY_LOCK_STRIPES]
    }

    fn storage_failed(&self) {
        inc(&self.metrics.storage_errors);
    }

    // ----- proposer side -----

    /// Writes `value` to the register `key` once (docs/api.md `PUT`).
    pub async fn put(self: &Arc<Self>, key: &str, value: Bytes) -> Result<PutOutcome, NodeError> {
        let own = Value {
            writer: self.rng.lock().expect("poisoned").random(),
            bytes: value,
        };
        let req = own.writer;
        self.events
            .client_start(Kind::PutStart, key, req, Some(&own.bytes));
        let result = in_request(req, self.put_value(key, own)).await;
        self.events.put_ended(key, req, &result);
        result
    }

    async fn put_value(self: &Arc<Self>, key: &str, own: Value) -> Result<PutOutcome, NodeError> {
        let start = Instant::now();
        let deadline = start + self.timing.request_timeout;
        if let Err(e) = self.serving_by(deadline).await {
            inc(&self.metrics.unavailable);
            return Err(e);
        }
        let outcome = match self.local_decided(key)? {
            Some(chosen) => same_or_conflict(chosen, &own.bytes),
            None => {
                // docs/design.md "Fast ballot": only while every peer
                // answered lately could a fast attempt gather every vote.
                let fast = self.every_peer_answered_lately();
                let put = |members| Coordinator::put(members, own.clone(), fast, self.limits());
                match self.execute_in_epoch(key, put, start).await {
                    // Only the request whose proposal was chosen created the value.
                    Ok(Outcome::Chosen { value, .. }) if value == own => PutOutcome::Created,
                    Ok(Outcome::Chosen { value, .. }) => same_or_conflict(value.bytes, &own.bytes),
                    Ok(Outcome::Empty { .. }) => {
                        unreachable!("a round with a value never ends empty")
                    }
                    Ok(Outcome::Unavailable) => {
                        inc(&self.metrics.unavailable);
                        return Err(NodeError::Unavailable);
                    }
                    Err(e) => {
                        inc(&self.metrics.unavailable);
                        return Err(e);
                    }
                }
            }
        };
        inc(match &outcome {
            PutOutcome::Created => &self.metrics.put_created,
            PutOutcome::AlreadyChosen => &self.metrics.put_same,
            PutOutcome::Conflict(_) => &self.metrics.put_conflict,
        });
        Ok(outcome)
    }

    /// Reads the register `key` (docs/api.md `GET`): `Some(value)` when a value is
    /// chosen, `None` when a majority confirms nothing is.
    pub async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Bytes>, NodeError> {
        let req = self.events.request_id();
        self.events.client_start(Kind::GetStart, key, req, None);
        let result = in_request(req, self.get_with_path(key)).await;
        self.events.get_ended(key, req, &result);
        match &result {
            Ok((None, _)) => inc(&self.metrics.get_not_found),
            Ok((Some(_), ReadPath::Local)) => inc(&self.metrics.get_local),
            Ok((Some(_), ReadPath::Quorum)) => inc(&self.metrics.get_quorum),
            Ok((Some(_), ReadPath::Recovered)) => inc(&self.metrics.get_recovered),
            Err(_) => inc(&self.metrics.unavailable),
        }
        result.map(|(value, _)| value)
    }

    /// [`Node::get`], also saying how the answer was reached.
    pub async fn get_with_path(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<(Option<Bytes>, ReadPath), NodeError> {
        let start = Instant::now();
        let deadline = start + self.timing.request_timeout;
        self.serving_by(deadline).await?;
        // docs/design.md GET step 1: a decided register is immutable (invariant 5).
        if let Some(value) = self.local_decided(key)? {
            return Ok((Some(value), ReadPath::Local));
        }
        // Steps 2-5: a quorum read comparing (ballot, value), and a
        // recovery round when the votes disagree.
        let get = |members| Coordinator::get(members, self.limits());
        let path = |recovered| match recovered {
            true => ReadPath::Recovered,
            false => ReadPath::Quorum,
        };
        match self.execute_in_epoch(key, get, start).await? {
            Outcome::Chosen { value, recovered } => Ok((Some(value.bytes), path(recovered))),
            Outcome::Empty { recovered } => Ok((None, path(recovered))),
            Outcome::Unavailable => Err(NodeError::Unavailable),
        }
    }

    /// Waits until this node serves, at most until `deadline`: a request
    /// that arrives while the cluster forms is answered once it has formed;
    /// one on a node that rebuilds (or whose disk failed) ends in 503 with
    /// the reason. A node that does not serve coordinates nothing either:
    /// its ballot clock may be behind the rounds it used before it lost its
    /// disk until its rebuild has moved it past them.
    async fn serving_by(&self, deadline: Instant) -> Result<(), NodeError> {
        if *self.health.borrow() == Health::Serving {
            return Ok(());
        }
        let mut health = self.health.subscribe();
        let serving = async { health.wait_for(|h| *h == Health::Serving).await.map(|_| ()) };
        match tokio::time::timeout_at(deadline, serving).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(NodeError::NotServing(
                self.health().reason().unwrap_or("it stopped").to_owned(),
            )),
        }
    }

    fn local_decided(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let state = self
            .storage
            .load(key)
            .inspect_err(|_| self.storage_failed())?;
        Ok(state.decided_value().map(|a| a.value.bytes.clone()))
    }

    /// Runs the coordinator `make` builds for the current epoch's members;
    /// when the membership changes under it (an epoch's answers must not be
    /// counted in another's quorums), it starts again in the new epoch, with
    /// what is left of the request's time. Same value, same key: a PUT
    /// retried this way is the idempotent retry docs/api.md allows.
    pub(crate) async fn execute_in_epoch(
        self: &Arc<Self>,
        key: &str,
        make: impl Fn(Members) -> Coordinator<Value>,
        start: Instant,
    ) -> Result<Outcome<Value>, NodeError> {
        loop {
            let (epoch, members) = self.view();
            let coord = make(members.clone());
            match self.execute(key, coord, start, epoch, &members).await {
                Err(NodeError::EpochChanged) if start.elapsed() < self.timing.request_timeout => {
                    continue
                }
                Err(NodeError::EpochChanged) => return Err(NodeError::Unavailable),
                other => return other,
            }
        }
    }

    /// Runs one request's coordinator (`src/paxos/coordinator.rs`) to its
    /// end, in membership `epoch` (whose quorum view is `members`): turns its effects into broadcasts, timers, durable ballot
    /// reservations, backoff draws, announcements and counts. `start` is
    /// time 0 of the coordinator's clock (microseconds); the deadline is
    /// `start` plus the request timeout.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        key: &str,
        mut coord: Coordinator<Value>,
        start: Instant,
        epoch: u64,
        members: &Members,
    ) -> Result<Outcome<Value>, NodeError> {
        let key: Arc<str> = Arc::from(key);
        let deadline = start + self.timing.request_timeout;
        // The answers to the current broadcast only: dropping the receiver
        // of an earlier one leaves its calls to finish in the background.
        let mut replies: Option<mpsc::UnboundedReceiver<(NodeId, CallResult)>> = None;
        let mut call = 0;
        loop {
            match coord.poll() {
                Effect::Send {
                    call: current,
                    request,
                    fence,
                } => {
                    call = current;
                    replies = Some(self.send_to(members.iter(), &key, request, fence));
                }
                // Every message so far left in `epoch` only if the node is
                // still in it: the transport stamps the node's current epoch.
                Effect::Announce { .. } | Effect::Done(_) if self.epoch() != epoch => {
                    return Err(NodeError::EpochChanged)
                }
                Effect::Announce { ballot, value } => self.announce(&key, ballot, value),
                Effect::Count(count) => self.count(&key, count),
                Effect::NeedBallot { above } => {
                    let ballot = self.next_ballot(above, deadline).await?;
                    coord.handle_ballot(ballot);
                }
                Effect::NeedPause { ceiling } => {
                    let pause = self.backoff(ceiling);
                    coord.handle_pause(micros_since(start), pause);
                }
                Effect::Wait { until } => {
                    let until = until.map_or(deadline, |t| start + Duration::from_micros(t));
                    let next = match replies.as_mut() {
                        Some(rx) => tokio::time::timeout_at(until, rx.recv()).await.ok(),
                        None => {
                            tokio::time::sleep_until(until).await;
                            None
                        }
                    };
                    let now = micros_since(start);
                    match next {
                        None => coord.handle_timeout(now),
                        // Every call of the broadcast returned.
                        Some(None) => {
                            replies = None;
                            coord.handle_closed(now, call);
                        }
                        Some(Some((from, Ok(answer)))) => {
                            coord.handle_reply(now, call, from, answer.reply, answer.incarnation)
                        }
                        Some(Some((from, Err(_)))) => coord.handle_unreachable(now, call, from),
                    }
                }
                Effect::Done(outcome) => return Ok(outcome),
            }
        }
    }

    /// What the coordinator counts, in the node's metrics and events.
    fn count(&self, key: &Arc<str>, count: Count) {
        match count {
            Count::FastRound => inc(&self.metrics.fast_rounds),
            Count::FastFallback => inc(&self.metrics.fast_fallbacks),
            Count::Round => inc(&self.metrics.rounds),
            Count::Preempted => inc(&self.metrics.preempted),
            Count::Recovery => self.events.recovery(key),
        }
    }

    /// The coordinator's bounds from this node's [`Timing`], in
    /// microseconds from the request's start.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            deadline: Some(micros(self.timing.request_timeout)),
            straggler_wait: micros(self.timing.straggler_wait),
            backoff_base: micros(self.timing.backoff_base),
            backoff_max: micros(self.timing.backoff_max),
            max_rounds: None,
            fault: Fault::None,
        }
    }

    /// Whether every peer answered a call within the fast-path window.
    fn every_peer_answered_lately(&self) -> bool {
        let seen = self.last_seen.lock().expect("poisoned");
        let window = self.timing.fast_path_window;
        self.members()
            .iter()
            .filter(|id| *id != self.id)
            .all(|id| seen.get(&id).is_some_and(|at| at.elapsed() < window))
    }

    /// A ballot above every ballot this node used and above `seen_round`;
    /// the reservation is durable before the ballot is returned (invariant
    /// 2). Waits for the clock (and a reservation write) at most until
    /// `deadline`: a slow disk makes the request a 503, not a hang. The
    /// clock changes only once the reservation is durable, so a request
    /// that gives up mid-write leaves it as it was.
    pub(crate) async fn next_ballot(
        &self,
        seen_round: u64,
        deadline: Instant,
    ) -> Result<Ballot, NodeError> {
        let reserve = async {
            let mut clock = self.clock.lock().await;
            let mut trial = clock.clone();
            let next = trial.next(seen_round);
            if let Some(mark) = next.reserve {
                self.storage
                    .store_round_mark(mark)
                    .await
                    .inspect_err(|_| self.storage_failed())?;
            }
            *clock = trial;
            Ok::<_, StorageError>(next.ballot)
        };
        match tokio::time::timeout_at(deadline, reserve).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(NodeError::Unavailable),
        }
    }

    /// Stores the clock's reservation mark again: after a rebuild into a
    /// fresh database, whose mark would otherwise start at zero while this
    /// process's clock has used rounds under the old database's mark.
    pub(crate) async fn persist_clock(&self) -> Result<(), StorageError> {
        let clock = self.clock.lock().await;
        self.storage
            .store_round_mark(clock.reserved())
            .await
            .inspect_err(|_| self.storage_failed())
    }

    /// A backoff pause drawn uniformly from `ceiling / 2 ..= ceiling`
    /// (microseconds): the coordinator's randomness.
    fn backoff(&self, ceiling: Time) -> Time {
        let mut rng = self.rng.lock().expect("poisoned");
        micros(Duration::from_micros(ceiling).mul_f64(rng.random_range(0.5..=1.0)))
    }

    /// Sends `request` to each member of `to` (this node may be one)
    /// concurrently and streams back replies as they come. Calls still
    /// running when the receiver is dropped finish in the background.
    pub(crate) fn send_to(
        self: &Arc<Self>,
        to: impl Iterator<Item = NodeId>,
        key: &Arc<str>,
        request: Request<Value>,
        fence: Fence,
    ) -> mpsc::UnboundedReceiver<(NodeId, CallResult)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = crate::events::current_request();
        for member in to {
            let (node, key, request, tx, fence) = (
                self.clone(),
                key.clone(),
                request.clone(),
                tx.clone(),
                fence.clone(),
            );
            tokio::spawn(in_request(req, async move {
                let result = node.call(member, &key, request, fence).await;
                let _ = tx.send((member, result));
            }));
        }
        rx
    }

    async fn call(
        self: &Arc<Self>,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> CallResult {
        let sent = self.events.sent(to, key, &request);
        let result = self.call_member(to, key, request, fence).await;
        self.events.replied(sent, &result);
        result
    }

    async fn call_member(
        self: &Arc<Self>,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> CallResult {
        if to == self.id {
            // Stamped with this node's current epoch, like the transport's.
            let step = self.spawn_step(key.to_owned(), request, fence, Some(self.epoch()), false);
            return match step {
                Ok(step) => join_step(step).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        }
        let result = self.transport.call(to, key, request, fence).await;
        self.note_answer(to, result)
    }

    /// Records when `to` last answered, or counts its failure.
    fn note_answer(&self, to: NodeId, result: Result<Answer, TransportError>) -> CallResult {
        match result {
            Ok(answer) => {
                let mut seen = self.last_seen.lock().expect("poisoned");
                seen.insert(to, std::time::Instant::now());
                Ok(answer)
            }
            Err(e) => {
                inc(&self.metrics.peer_errors);
                tracing::debug!(peer = to, error = %e, "peer call failed");
                Err(e.to_string())
            }
        }
    }

    /// Tells every member (this node too) that `value` is chosen in
    /// `ballot`, fire and forget, so later GETs anywhere are local.
    ///
    /// The decide rides lazily (`Node::acceptor_step`): each member applies
    /// it without waiting for a disk sync. The value is already durable at
    /// a majority through their accepts, so a decided flag a crash loses
    /// costs only a later quorum read; syncing it would put a disk sync on
    /// the path of the next request (docs/design.md, "Durability: what is
    /// synced before a reply"). A decide whose answer is counted (the
    /// sweep of a membership change) is a `Send` of the coordinator and
    /// goes through [`Node::send_to`], durable.
    fn announce(self: &Arc<Self>, key: &Arc<str>, ballot: Ballot, value: Value) {
        let request = Request::Decide { ballot, value };
        let req = crate::events::current_request();
        for member in self.members().iter() {
            let (node, key, request) = (self.clone(), key.clone(), request.clone());
            tokio::spawn(in_request(req, async move {
                let sent = node.events.sent(member, &key, &request);
                let result = node.call_lazy(member, &key, request).await;
                node.events.replied(sent, &result);
            }));
        }
    }

    /// [`Node::call_member`] for an announced decide: recorded lazily.
    async fn call_lazy(
        self: &Arc<Self>,
        to: NodeId,
        key: &str,
        request: Request<Value>,
    ) -> CallResult {
        if to == self.id {
            let step = self.spawn_step(
                key.to_owned(),
                request,
                Fence::default(),
                Some(self.epoch()),
                true,
            );
            return match step {
                Ok(step) => join_step(step).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        }
        let Request::Decide { ballot, value } = request else {
            return self.call_member(to, key, request, Fence::default()).await;
        };
        let result = self.transport.announce(to, key, ballot, value).await;
        self.note_answer(to, result)
    }
}

type StepHandle = tokio::task::JoinHandle<Result<Answer, AcceptorError>>;

/// The result of a step from [`Node::spawn_step`].
async fn join_step(step: StepHandle) -> Result<Answer, AcceptorError> {
    step.await.map_err(|e| {
        AcceptorError::Storage(StorageError::Io(format!("acceptor task failed: {e}")))
    })?
}

fn same_or_conflict(chosen: Bytes, value: &Bytes) -> PutOutcome {
    if chosen == *value {
        PutOutcome::AlreadyChosen
    } else {
        PutOutcome::Conflict(chosen)
    }
}

/// A duration in whole microseconds (the coordinator's [`Time`]).
fn micros(d: Duration) -> Time {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds since `start`: the coordinator's clock.
fn micros_since(start: Instant) -> Time {
    micros(start.elapsed())
}

impl<S: Storage, T: Transport> PeerHandler for Node<S, T> {
    fn handle(
        self: Arc<Self>,
        _from: NodeId,
        key: String,
        request: Request<Value>,
        fence: Fence,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, TransportError>> + Send>> {
        Box::pin(async move {
            self.handle_acceptor(&key, request, fence)
                .await
                .map_err(|e| TransportError::Status {
                    status: 503,
                    body: e.to_string(),
                })
        })
    }

    fn control(
        self: Arc<Self>,
        from: NodeId,
        message: Control,
    ) -> Pin<Box<dyn Future<Output = Result<ControlReply, TransportError>> + Send>> {
        Box::pin(async move {
            self.handle_control(from, message)
                .await
                .map_err(|e| TransportError::Status {
                    status: 503,
                    body: e.to_string(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use crate::transport::MemoryNetwork;

    /// Invariant 2: when the ballot reservation cannot be stored, the clock
    /// does not keep it, so a restart never hands out a ballot used before.
    #[tokio::test]
    async fn a_failed_reservation_is_not_relied_on() {
        let storage = MemoryStorage::new();
        let net = MemoryNetwork::new();
        let members = Members::new([1]);
        let node = Node::new(
            1,
            members.clone(),
            Timing::default(),
            storage.clone(),
            net.transport(1),
            Some(1),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        storage.set_failing(true);
        assert!(node.next_ballot(0, deadline).await.is_err());
        storage.set_failing(false);
        let mut used = vec![node.next_ballot(0, deadline).await.unwrap()];
        used.push(node.next_ballot(0, deadline).await.unwrap());
        drop(node);
        let restarted = Node::new(
            1,
            members,
            Timing::default(),
            storage,
            net.transport(1),
            Some(2),
        )
        .unwrap();
        let after = restarted.next_ballot(0, deadline).await.unwrap();
        assert!(used.iter().all(|b| *b < after), "{used:?} then {after}");
    }

    fn urls(n: u32) -> BTreeMap<NodeId, String> {
        (1..=n).map(|i| (i, format!("http://n{i}/"))).collect()
    }

    fn open(
        id: NodeId,
        storage: &MemoryStorage,
        net: &MemoryNetwork,
    ) -> Arc<Node<MemoryStorage, crate::transport::MemoryTransport>> {
        let node = Node::open(
            id,
            &urls(3),
            Timing::default(),
            storage.clone(),
            net.transport(id),
            Some(u64::from(id)),
        )
        .expect("opens");
        net.register(id, node.clone());
        node
    }

    /// Invariant 8: what a data directory says decides how a node starts.
    #[tokio::test]
    async fn a_node_starts_as_its_directory_says() {
        let net = MemoryNetwork::new();
        let blank = MemoryStorage::new();
        assert!(matches!(open(1, &blank, &net).health(), Health::Joining(_)));
        // Data but no identity: an earlier release's directory serves.
        let legacy = MemoryStorage::new();
        legacy
            .store("k", &crate::storage::State::default())
            .await
            .unwrap();
        legacy.store_round_mark(7).await.unwrap();
        let node = open(2, &legacy, &net);
        assert_eq!(node.health(), Health::Serving);
        assert!(node.identity().cluster.ends_with("-legacy"));
        // Another node's identity is refused.
        let mine = Identity::new("c".into(), 3, &urls(3));
        let other = MemoryStorage::new();
        other.store_meta(META_NAME, mine.encode()).await.unwrap();
        let refused = Node::open(
            2,
            &urls(3),
            Timing::default(),
            other.clone(),
            net.transport(2),
            None,
        );
        let error = refused.err().expect("refused").to_string();
        assert!(error.contains("belongs to node 3"), "{error}");
        // An identity stored with another database: replaced under it.
        let mut replaced = mine.clone();
        replaced.database = Some(other.database_id().unwrap().wrapping_add(1));
        let moved = MemoryStorage::new();
        moved
            .store_meta(META_NAME, replaced.encode())
            .await
            .unwrap();
        assert!(matches!(
            open(3, &moved, &net).health(),
            Health::Recovering(_)
        ));
        // An unfinished rebuild resumes.
        let mut half = mine;
        half.rebuilt = false;
        other.store_meta(META_NAME, half.encode()).await.unwrap();
        assert!(matches!(
            open(3, &other, &net).health(),
            Health::Recovering(_)
        ));
    }

    /// Invariant 8: an accept whose round counted a promise of a superseded
    /// incarnation is refused; one that names the current incarnation, or
    /// none (the fast ballot), is applied.
    #[tokio::test]
    async fn accepts_relying_on_a_lost_promise_are_fenced() {
        let net = MemoryNetwork::new();
        let storage = MemoryStorage::new();
        let node = Node::new(
            1,
            Members::new([1, 2, 3]),
            Timing::default(),
            storage,
            net.transport(1),
            Some(1),
        )
        .unwrap();
        let value = Value {
            writer: 1,
            bytes: Bytes::from_static(b"v"),
        };
        let accept = |round| Request::Accept {
            ballot: Ballot::new(round, 2),
            value: value.clone(),
        };
        let mut fence = Fence::default();
        fence.promised(3, 1);
        fence.promised(2, 1);
        let answer = node
            .handle_acceptor("k", accept(1), fence.clone())
            .await
            .unwrap();
        assert_eq!(
            answer.reply,
            Reply::Accepted {
                ballot: Ballot::new(1, 2)
            }
        );
        let recorded = node
            .handle_control(3, Control::Fence { incarnation: 2 })
            .await
            .unwrap();
        assert_eq!(recorded, ControlReply::Fenced(2));
        let refused = node.handle_acceptor("k", accept(2), fence.clone()).await;
        assert!(
            matches!(refused, Err(AcceptorError::Fenced(3))),
            "{refused:?}"
        );
        fence.promised(3, 2);
        assert!(node.handle_acceptor("k", accept(3), fence).await.is_ok());
        let fast = Request::Accept {
            ballot: Ballot::FAST,
            value: value.clone(),
        };
        assert!(node
            .handle_acceptor("other", fast, Fence::default())
            .await
            .is_ok());
        assert_eq!(
            node.identity().known.get(&3),
            Some(&2),
            "the record is kept"
        );
    }

    /// A node that does not serve answers no acceptor request.
    #[tokio::test]
    async fn a_joining_node_votes_in_nothing() {
        let net = MemoryNetwork::new();
        let node = open(1, &MemoryStorage::new(), &net);
        let prepare = Request::Prepare {
            ballot: Ballot::new(1, 2),
        };
        let answer = node.handle_acceptor("k", prepare, Fence::default()).await;
        assert!(
            matches!(answer, Err(AcceptorError::NotServing(_))),
            "{answer:?}"
        );
    }

    /// Genesis: three blank nodes form one cluster (every member answered),
    /// with the same id; a fourth start over a wiped store of a member
    /// rebuilds what the others hold before it serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blank_nodes_form_a_cluster_and_a_wiped_one_rebuilds() {
        let net = MemoryNetwork::new();
        let stores: Vec<MemoryStorage> = (0..3).map(|_| MemoryStorage::new()).collect();
        let nodes: Vec<_> = (1..=3)
            .map(|id| open(id, &stores[id as usize - 1], &net))
            .collect();
        let lifecycles: Vec<_> = nodes
            .iter()
            .map(|n| tokio::spawn(crate::rejoin::run(n.clone())))
            .collect();
        let put = nodes[0].put("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(put, PutOutcome::Created);
        for node in &nodes {
            let mut health = node.health.subscribe();
            tokio::time::timeout(
                Duration::from_secs(30),
                health.wait_for(|h| *h == Health::Serving),
            )
            .await
            .expect("every founder serves")
            .expect("node alive");
        }
        let cluster = nodes[0].identity().cluster;
        assert!(nodes.iter().all(|n| n.identity().cluster == cluster));
        // Node 3 loses everything.
        lifecycles[2].abort();
        net.unregister(3);
        drop(nodes);
        let wiped = MemoryStorage::new();
        let node3 = open(3, &wiped, &net);
        let _run = tokio::spawn(crate::rejoin::run(node3.clone()));
        let mut health = node3.health.subscribe();
        tokio::time::timeout(
            Duration::from_secs(30),
            health.wait_for(|h| *h == Health::Serving),
        )
        .await
        .expect("rebuilt in time")
        .expect("node alive");
        assert_eq!(node3.identity().incarnation, 2);
        let state = wiped.load("k").unwrap();
        assert_eq!(
            state.accepted.map(|a| a.value.bytes),
            Some(Bytes::from_static(b"v"))
        );
    }
}
