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
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

use crate::events::{in_request, EventBus, Kind};
use crate::metrics::{inc, Metrics};
use crate::paxos::{
    acceptor, Ballot, BallotClock, Members, NodeId, Progress, ReadProgress, ReadRound, Reply,
    Request, Round, Step,
};
use crate::storage::{Storage, StorageError};
use crate::transport::{PeerHandler, Transport, TransportError};
use crate::value::Value;

/// Timing knobs of a node.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Every client request ends by then, with 503 if undecided.
    pub request_timeout: Duration,
    /// With a majority of read replies in hand but no conclusion, how long a
    /// GET waits for the rest before it runs a recovery round.
    pub straggler_wait: Duration,
    /// First backoff after a failed round; doubles each retry.
    pub backoff_base: Duration,
    /// Ceiling of the backoff.
    pub backoff_max: Duration,
    /// A PUT tries the fast ballot first only while every peer answered
    /// within this long (the server's heartbeat keeps it fresh); otherwise
    /// a fast attempt could not gather every member and would only add a
    /// wait before the classic round.
    pub fast_path_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            request_timeout: Duration::from_secs(5),
            straggler_wait: Duration::from_millis(50),
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(200),
            fast_path_window: Duration::from_secs(3),
        }
    }
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No majority answered before the deadline: the outcome is unknown.
    #[error(
        "no majority of nodes answered in time; the outcome is unknown, retry the same request"
    )]
    Unavailable,
    /// This node's storage failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

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

/// The result of a finished proposer loop.
enum Finished {
    Chosen(Value),
    Empty,
}

type Reply8 = Reply<Value>;
type CallResult = Result<Reply8, String>;

/// One member of the cluster.
pub struct Node<S, T> {
    id: NodeId,
    members: Members,
    timing: Timing,
    storage: S,
    transport: T,
    /// Serializes load-handle-store per key (striped by key hash).
    key_locks: Vec<Mutex<()>>,
    clock: Mutex<BallotClock>,
    rng: std::sync::Mutex<StdRng>,
    /// When each peer last answered.
    last_seen: std::sync::Mutex<BTreeMap<NodeId, std::time::Instant>>,
    metrics: Metrics,
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
        let mark = storage.load_round_mark()?;
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Arc::new(Node {
            id,
            members,
            timing,
            storage,
            transport,
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            clock: Mutex::new(BallotClock::restore(id, mark)),
            rng: std::sync::Mutex::new(rng),
            last_seen: std::sync::Mutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            events: EventBus::new(id),
        }))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster's members.
    pub fn members(&self) -> &Members {
        &self.members
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
            .members
            .iter()
            .filter(|id| *id != self.id && seen.get(id).is_none_or(|ago| *ago >= quiet))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for peer in quiet_peers {
            let (node, key, request) = (self.clone(), key.to_owned(), request.clone());
            calls.spawn(async move { node.call(peer, &key, request).await });
        }
        while calls.join_next().await.is_some() {}
    }

    // ----- acceptor side -----

    /// Applies one acceptor request for `key` and returns the reply, which
    /// is only produced after the new state is durable (invariant 1).
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
    ) -> Result<Reply8, StorageError> {
        join_step(self.spawn_step(key.to_owned(), request)).await
    }

    /// [`Node::handle_acceptor`] for many requests at once (a peer's
    /// batch): they run concurrently, so their writes share group commits;
    /// the replies come back in order.
    pub async fn handle_acceptor_batch(
        self: &Arc<Self>,
        requests: Vec<(String, Request<Value>)>,
    ) -> Vec<Result<Reply8, StorageError>> {
        let steps: Vec<_> = requests
            .into_iter()
            .map(|(key, request)| self.spawn_step(key, request))
            .collect();
        let mut replies = Vec::with_capacity(steps.len());
        for step in steps {
            replies.push(join_step(step).await);
        }
        replies
    }

    /// Runs one acceptor step in its own task (see [`Node::handle_acceptor`]).
    fn spawn_step(
        self: &Arc<Self>,
        key: String,
        request: Request<Value>,
    ) -> tokio::task::JoinHandle<Result<Reply8, StorageError>> {
        let node = self.clone();
        let heard = self.events.heard(&key, &request);
        tokio::spawn(async move {
            let reply = node.acceptor_step(&key, request).await;
            node.events.stepped(heard, &reply);
            reply
        })
    }

    async fn acceptor_step(
        &self,
        key: &str,
        request: Request<Value>,
    ) -> Result<Reply8, StorageError> {
        inc(&self.metrics.acceptor_requests);
        let _guard = self.key_lock(key).lock().await;
        let state = self
            .storage
            .load(key)
            .inspect_err(|_| self.storage_failed())?;
        match acceptor::handle(&state, request) {
            Step::Reply(reply) => Ok(reply),
            Step::Persist(persist) => {
                self.storage
                    .store(key, persist.state())
                    .await
                    .inspect_err(|_| self.storage_failed())?;
                Ok(persist.reply_once_durable().1)
            }
        }
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

    /// Writes `value` to the register `key` once (API.md `PUT`).
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
        let deadline = Instant::now() + self.timing.request_timeout;
        let outcome = match self.local_decided(key)? {
            Some(chosen) => same_or_conflict(chosen, &own.bytes),
            None => match self.propose(key, Some(own.clone()), deadline).await {
                // Only the request whose proposal was chosen created the value.
                Ok(Finished::Chosen(chosen)) if chosen == own => PutOutcome::Created,
                Ok(Finished::Chosen(chosen)) => same_or_conflict(chosen.bytes, &own.bytes),
                Ok(Finished::Empty) => unreachable!("a round with a value never ends empty"),
                Err(e) => {
                    inc(&self.metrics.unavailable);
                    return Err(e);
                }
            },
        };
        inc(match &outcome {
            PutOutcome::Created => &self.metrics.put_created,
            PutOutcome::AlreadyChosen => &self.metrics.put_same,
            PutOutcome::Conflict(_) => &self.metrics.put_conflict,
        });
        Ok(outcome)
    }

    /// Reads the register `key` (API.md `GET`): `Some(value)` when a value is
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
        let deadline = Instant::now() + self.timing.request_timeout;
        // DESIGN.md GET step 1: a decided register is immutable (invariant 5).
        if let Some(value) = self.local_decided(key)? {
            return Ok((Some(value), ReadPath::Local));
        }
        // Steps 2-4: a quorum read comparing (ballot, value).
        let key: Arc<str> = Arc::from(key);
        let mut read = ReadRound::start(self.members.clone());
        let mut replies = self.broadcast(&key, Request::Read);
        let mut answered = 0usize;
        let mut straggler_deadline: Option<Instant> = None;
        let progress = loop {
            let until = straggler_deadline.map_or(deadline, |s| s.min(deadline));
            let progress = match tokio::time::timeout_at(until, replies.recv()).await {
                Err(_) if Instant::now() >= deadline => return Err(NodeError::Unavailable),
                Err(_) | Ok(None) => read.give_up(),
                Ok(Some((from, Ok(reply)))) => {
                    answered += 1;
                    read.on_reply(from, reply)
                }
                Ok(Some((from, Err(_)))) => read.on_unreachable(from),
            };
            match progress {
                ReadProgress::Wait => {
                    if answered >= self.members.quorum() && straggler_deadline.is_none() {
                        straggler_deadline = Some(Instant::now() + self.timing.straggler_wait);
                    }
                }
                done => break done,
            }
        };
        match progress {
            ReadProgress::Chosen { ballot, value } => {
                let bytes = value.bytes.clone();
                self.announce(&key, ballot, value);
                Ok((Some(bytes), ReadPath::Quorum))
            }
            ReadProgress::Empty => Ok((None, ReadPath::Quorum)),
            ReadProgress::Stalled => Err(NodeError::Unavailable),
            // Step 5: the votes disagree; finish the instance.
            ReadProgress::Recover => match self.propose(&key, None, deadline).await? {
                Finished::Chosen(value) => Ok((Some(value.bytes), ReadPath::Recovered)),
                Finished::Empty => Ok((None, ReadPath::Recovered)),
            },
            ReadProgress::Wait => unreachable!("the loop only ends on a conclusion"),
        }
    }

    fn local_decided(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let state = self
            .storage
            .load(key)
            .inspect_err(|_| self.storage_failed())?;
        Ok(state.decided_value().map(|a| a.value.bytes.clone()))
    }

    /// Runs proposer rounds with growing, randomized backoff until one ends
    /// in a chosen value (or, with no value of its own, finds none), or the
    /// deadline passes (invariant 6).
    async fn propose(
        self: &Arc<Self>,
        key: &str,
        own: Option<Value>,
        deadline: Instant,
    ) -> Result<Finished, NodeError> {
        let key: Arc<str> = Arc::from(key);
        if own.is_none() {
            self.events.recovery(&key);
        }
        if let Some(value) = own.as_ref().filter(|_| self.every_peer_answered_lately()) {
            if let Some(chosen) = self.fast_round(&key, value.clone(), deadline).await? {
                return Ok(Finished::Chosen(chosen));
            }
        }
        let mut seen_round = 0u64;
        for attempt in 0u32.. {
            if attempt > 0 {
                let pause = self.backoff(attempt);
                if Instant::now() + pause >= deadline {
                    return Err(NodeError::Unavailable);
                }
                tokio::time::sleep(pause).await;
            }
            let ballot = self.next_ballot(seen_round).await?;
            inc(&self.metrics.rounds);
            let (mut round, prepare) = Round::start(ballot, self.members.clone(), own.clone());
            let mut replies = self.broadcast(&key, prepare);
            let progress = loop {
                let progress = match tokio::time::timeout_at(deadline, replies.recv()).await {
                    Err(_) => return Err(NodeError::Unavailable),
                    Ok(None) => Progress::Stalled,
                    Ok(Some((from, Ok(reply)))) => round.on_reply(from, reply),
                    Ok(Some((from, Err(_)))) => round.on_unreachable(from),
                };
                match progress {
                    Progress::Wait => {}
                    Progress::Send(accept) => replies = self.broadcast(&key, accept),
                    done => break done,
                }
            };
            match progress {
                Progress::Chosen { ballot, value, .. } => {
                    self.announce(&key, ballot, value.clone());
                    return Ok(Finished::Chosen(value));
                }
                Progress::Empty => return Ok(Finished::Empty),
                Progress::Preempted { seen } => {
                    inc(&self.metrics.preempted);
                    seen_round = seen_round.max(seen.round);
                }
                Progress::Stalled => {}
                Progress::Wait | Progress::Send(_) => unreachable!("handled in the loop"),
            }
        }
        unreachable!("the attempt counter does not run out before the deadline")
    }

    /// One attempt in the fast ballot: `value` straight to phase 2 at every
    /// member. `Some` when every member accepted it (or one knew the chosen
    /// value); `None` when the attempt cannot succeed (a refusal, an
    /// unreachable member, or a member still silent a straggler wait after
    /// the rest accepted): the caller goes on with classic rounds at once,
    /// whose phase 1 finds whatever fast votes were cast.
    async fn fast_round(
        self: &Arc<Self>,
        key: &Arc<str>,
        value: Value,
        deadline: Instant,
    ) -> Result<Option<Value>, NodeError> {
        inc(&self.metrics.fast_rounds);
        let (mut round, accept) = Round::start_fast(self.members.clone(), value);
        let mut replies = self.broadcast(key, accept);
        let mut accepted = 0usize;
        let mut straggler_deadline: Option<Instant> = None;
        loop {
            let until = straggler_deadline.map_or(deadline, |s| s.min(deadline));
            let progress = match tokio::time::timeout_at(until, replies.recv()).await {
                Err(_) if Instant::now() >= deadline => return Err(NodeError::Unavailable),
                Err(_) | Ok(None) => Progress::Stalled,
                Ok(Some((from, Ok(reply)))) => {
                    accepted += usize::from(matches!(reply, Reply::Accepted { .. }));
                    round.on_reply(from, reply)
                }
                Ok(Some((from, Err(_)))) => round.on_unreachable(from),
            };
            match progress {
                Progress::Wait => {
                    if accepted >= self.members.quorum() && straggler_deadline.is_none() {
                        straggler_deadline = Some(Instant::now() + self.timing.straggler_wait);
                    }
                }
                Progress::Chosen { ballot, value, .. } => {
                    self.announce(key, ballot, value.clone());
                    return Ok(Some(value));
                }
                _ => {
                    inc(&self.metrics.fast_fallbacks);
                    return Ok(None);
                }
            }
        }
    }

    /// Whether every peer answered a call within the fast-path window.
    fn every_peer_answered_lately(&self) -> bool {
        let seen = self.last_seen.lock().expect("poisoned");
        let window = self.timing.fast_path_window;
        self.members
            .iter()
            .filter(|id| *id != self.id)
            .all(|id| seen.get(&id).is_some_and(|at| at.elapsed() < window))
    }

    /// A ballot above every ballot this node used and above `seen_round`;
    /// the reservation is durable before the ballot is returned (invariant 2).
    async fn next_ballot(&self, seen_round: u64) -> Result<Ballot, StorageError> {
        let mut clock = self.clock.lock().await;
        let before = clock.clone();
        let next = clock.next(seen_round);
        if let Some(mark) = next.reserve {
            if let Err(e) = self.storage.store_round_mark(mark).await {
                // The new mark is not durable: forget it, or later rounds
                // would rely on a reservation a restart does not know.
                *clock = before;
                self.storage_failed();
                return Err(e);
            }
        }
        Ok(next.ballot)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .timing
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.timing.backoff_max);
        let mut rng = self.rng.lock().expect("poisoned");
        ceiling.mul_f64(rng.random_range(0.5..=1.0))
    }

    /// Sends `request` to every member (this node included) concurrently and
    /// streams back replies as they come. Calls still running when the
    /// receiver is dropped finish in the background.
    fn broadcast(
        self: &Arc<Self>,
        key: &Arc<str>,
        request: Request<Value>,
    ) -> mpsc::UnboundedReceiver<(NodeId, CallResult)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let req = crate::events::current_request();
        for member in self.members.iter() {
            let (node, key, request, tx) = (self.clone(), key.clone(), request.clone(), tx.clone());
            tokio::spawn(in_request(req, async move {
                let result = node.call(member, &key, request).await;
                let _ = tx.send((member, result));
            }));
        }
        rx
    }

    async fn call(self: &Arc<Self>, to: NodeId, key: &str, request: Request<Value>) -> CallResult {
        let sent = self.events.sent(to, key, &request);
        let result = self.call_member(to, key, request).await;
        self.events.replied(sent, &result);
        result
    }

    async fn call_member(
        self: &Arc<Self>,
        to: NodeId,
        key: &str,
        request: Request<Value>,
    ) -> CallResult {
        if to == self.id {
            return self
                .handle_acceptor(key, request)
                .await
                .map_err(|e| e.to_string());
        }
        match self.transport.call(to, key, request).await {
            Ok(reply) => {
                let mut seen = self.last_seen.lock().expect("poisoned");
                seen.insert(to, std::time::Instant::now());
                Ok(reply)
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
    fn announce(self: &Arc<Self>, key: &Arc<str>, ballot: Ballot, value: Value) {
        drop(self.broadcast(key, Request::Decide { ballot, value }));
    }
}

/// The result of a step from [`Node::spawn_step`].
async fn join_step(
    step: tokio::task::JoinHandle<Result<Reply8, StorageError>>,
) -> Result<Reply8, StorageError> {
    step.await
        .map_err(|e| StorageError::Io(format!("acceptor task failed: {e}")))?
}

fn same_or_conflict(chosen: Bytes, value: &Bytes) -> PutOutcome {
    if chosen == *value {
        PutOutcome::AlreadyChosen
    } else {
        PutOutcome::Conflict(chosen)
    }
}

impl<S: Storage, T: Transport> PeerHandler for Node<S, T> {
    fn handle(
        self: Arc<Self>,
        _from: NodeId,
        key: String,
        request: Request<Value>,
    ) -> Pin<Box<dyn Future<Output = Result<Reply8, TransportError>> + Send>> {
        Box::pin(async move {
            self.handle_acceptor(&key, request)
                .await
                .map_err(|e| TransportError::Status {
                    status: 500,
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
        storage.set_failing(true);
        assert!(node.next_ballot(0).await.is_err());
        storage.set_failing(false);
        let mut used = vec![node.next_ballot(0).await.unwrap()];
        used.push(node.next_ballot(0).await.unwrap());
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
        let after = restarted.next_ballot(0).await.unwrap();
        assert!(used.iter().all(|b| *b < after), "{used:?} then {after}");
    }
}
