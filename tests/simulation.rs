//! Deterministic simulation of the node layer ([`paxos_kv::node::Node`]) over
//! the in-memory transport and store, one seed per run.
//!
//! Each seed draws a scenario: 3 or 5 nodes, 1 to 3 contested keys, 2 to 6
//! concurrent clients PUTting values (mostly distinct) and GETting through random
//! nodes; per message a delay (some links systematically slower than
//! others, a few stragglers arriving seconds late), loss of the request or
//! of the reply, duplication, reordering by unequal delays, in some runs
//! loss of most `Decide` announcements; a nemesis that isolates nodes, splits
//! the cluster, cuts one-way links, heals, crashes and restarts nodes over
//! their surviving store (a crash can fall in the middle of a slow disk
//! write), wipes a node's disk (it restarts blank through `Node::open` and
//! rebuilds from the others before it votes: issue 8; one at a time, at
//! most three per run) and power-cycles the whole cluster. Every node
//! starts blank and runs its lifecycle (`rejoin::run`), so the cluster is
//! founded by genesis first. It runs on a current-thread
//! tokio runtime with paused time, so a run takes virtual seconds but real
//! microseconds, and every random choice (the scenario, each message's fate,
//! the nemesis, the clients, the disks' latency, the nodes' backoff and PUT
//! ids) comes from the seed. Every client operation is recorded with its
//! invocation and completion, and the history of each key is checked as a
//! write-once register by `support::history` (docs/api.md guarantees
//! 1, 2 and 4; 3 through the crashes; 5 at the end, when every node is up
//! and every link healed, and GETs through every node must all answer and
//! agree).
//!
//! Run more seeds with `PAXOS_KV_SIM_SEED_COUNT=100000`; replay one (and
//! print its history) with `PAXOS_KV_SEED=N`:
//! `PAXOS_KV_SEED=N cargo test --release --test simulation -- --nocapture`.
//!
//! The last tests show that the check can fail: with a disk that acknowledges
//! writes before they are durable, or with an acceptor that hides its vote in
//! promises, a seed within a bounded number breaks linearizability
//! (`PAXOS_KV_SIM_DEFECT_SCAN=N` prints how many of N seeds do).

mod support;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use std::future::Future;

use paxos_kv::identity::GENESIS_META;
use paxos_kv::node::{Health, Node, PutOutcome, Timing};
use paxos_kv::paxos::{Fence, Members, NodeId, Reply, Request};
use paxos_kv::storage::{MemoryStorage, State, Storage, StorageError};
use paxos_kv::transport::{
    Answer, Control, ControlReply, Fate, MemoryNetwork, MemoryTransport, Transport, TransportError,
};
use paxos_kv::value::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use support::history::{self, Call, Op, Ret};

/// Seeds in the default run: about 0.7 ms of CPU each in release, so a few
/// seconds on two idle cores (fewer in debug builds, which are ~10x slower).
const DEFAULT_SEEDS: u64 = if cfg!(debug_assertions) {
    1_000
} else {
    10_000
};

// ----- faults in the system under test (part 4: the check can fail) -----

/// A deliberate defect planted under the node, to show the check catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    /// The real thing: honest store, honest network.
    None,
    /// The disk acknowledges writes before they are durable and loses the
    /// unflushed ones when its node crashes (docs/design.md invariant 1 broken).
    ForgetfulDisk,
    /// Node 1's acceptor lies: its promises never report its vote
    /// (Paxos Made Simple 2.2, phase 1b broken).
    LyingAcceptor,
    /// The behaviour before issue 8: a node whose disk was wiped restarts
    /// with `Node::new` over the blank store and votes at once, instead of
    /// `Node::open`, which makes it rebuild from the others first.
    WipeWithoutRebuild,
}

/// The stored state of one node, shared by its successive incarnations.
#[derive(Clone)]
enum Disk {
    /// Every completed store survives a crash.
    Honest(MemoryStorage),
    /// Stores land in a volatile cache flushed every few stores.
    Forgetful(Arc<Mutex<ForgetfulDisk>>),
}

#[derive(Default)]
struct ForgetfulDisk {
    durable: BTreeMap<String, State>,
    cache: BTreeMap<String, State>,
    round_mark: u64,
    meta: BTreeMap<String, Vec<u8>>,
    stores: u32,
    flush_every: u32,
}

/// How long each write of one node's disk takes (a seeded draw per write).
#[derive(Clone)]
struct Latency {
    max_ms: u64,
    rng: Arc<Mutex<StdRng>>,
}

/// The [`Storage`] one incarnation of a node sees. Each write takes a random
/// time, so a crash can fall while a write is in progress (it is then lost
/// and never acknowledged). Once the incarnation has crashed, its writes
/// fail, as a dead process writes nothing: tasks of the old incarnation that
/// are still in flight cannot touch the disk that the next incarnation uses.
struct SimStorage {
    disk: Disk,
    latency: Latency,
    alive: Arc<AtomicBool>,
}

impl SimStorage {
    /// Waits for the write to "reach the disk", then fails if this
    /// incarnation crashed meanwhile.
    async fn write_barrier(&self) -> Result<(), StorageError> {
        let max = self.latency.max_ms;
        if max > 0 {
            let ms = self.latency.rng.lock().unwrap().random_range(0..=max);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.alive.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StorageError::Io("this incarnation crashed".into()))
        }
    }
}

impl Storage for SimStorage {
    fn load(&self, key: &str) -> Result<State, StorageError> {
        match &self.disk {
            Disk::Honest(m) => m.load(key),
            Disk::Forgetful(f) => {
                let f = f.lock().unwrap();
                let state = f.cache.get(key).or_else(|| f.durable.get(key));
                Ok(state.cloned().unwrap_or_default())
            }
        }
    }

    async fn store(&self, key: &str, state: &State) -> Result<(), StorageError> {
        self.write_barrier().await?;
        match &self.disk {
            // Completes at its first poll: no crash can fall between the
            // barrier and the write.
            Disk::Honest(m) => m.store(key, state).await,
            Disk::Forgetful(f) => {
                let mut f = f.lock().unwrap();
                f.cache.insert(key.to_owned(), state.clone());
                f.stores += 1;
                if f.stores % f.flush_every == 0 {
                    let cache = std::mem::take(&mut f.cache);
                    f.durable.extend(cache);
                }
                Ok(())
            }
        }
    }

    fn load_round_mark(&self) -> Result<u64, StorageError> {
        match &self.disk {
            Disk::Honest(m) => m.load_round_mark(),
            Disk::Forgetful(f) => Ok(f.lock().unwrap().round_mark),
        }
    }

    async fn store_round_mark(&self, mark: u64) -> Result<(), StorageError> {
        self.write_barrier().await?;
        match &self.disk {
            Disk::Honest(m) => m.store_round_mark(mark).await,
            // The ballot reservation stays honest: this defect is about votes.
            Disk::Forgetful(f) => {
                f.lock().unwrap().round_mark = mark;
                Ok(())
            }
        }
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, State)>, StorageError> {
        match &self.disk {
            Disk::Honest(m) => m.scan(prefix, after, limit),
            Disk::Forgetful(f) => {
                let f = f.lock().unwrap();
                let mut all = f.durable.clone();
                all.extend(f.cache.clone());
                Ok(all
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                    .take(limit)
                    .collect())
            }
        }
    }

    fn database_id(&self) -> Result<u64, StorageError> {
        match &self.disk {
            Disk::Honest(m) => m.database_id(),
            Disk::Forgetful(f) => Ok(Arc::as_ptr(f) as u64),
        }
    }

    fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match &self.disk {
            Disk::Honest(m) => m.load_meta(name),
            Disk::Forgetful(f) => Ok(f.lock().unwrap().meta.get(name).cloned()),
        }
    }

    async fn store_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.write_barrier().await?;
        match &self.disk {
            Disk::Honest(m) => m.store_meta(name, bytes).await,
            Disk::Forgetful(f) => {
                f.lock().unwrap().meta.insert(name.to_owned(), bytes);
                Ok(())
            }
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The in-memory transport, optionally with a lying acceptor behind it.
struct SimTransport {
    inner: MemoryTransport,
    liar: Option<NodeId>,
}

impl Transport for SimTransport {
    async fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> Result<Answer, TransportError> {
        let answer = self.inner.call(to, key, request, fence).await?;
        let reply = match answer.reply {
            Reply::Promise {
                ballot,
                accepted: Some(_),
            } if self.liar == Some(to) => Reply::Promise {
                ballot,
                accepted: None,
            },
            reply => reply,
        };
        Ok(Answer { reply, ..answer })
    }

    async fn control(&self, to: NodeId, message: Control) -> Result<ControlReply, TransportError> {
        self.inner.control(to, message).await
    }
}

// ----- the cluster -----

type SimNode = Node<SimStorage, SimTransport>;

struct Slot {
    disk: Disk,
    latency: Latency,
    alive: Arc<AtomicBool>,
    node: Option<Arc<SimNode>>,
    /// Client requests this incarnation is coordinating, and its lifecycle
    /// task (`rejoin::run`): a crash aborts them (the client sees a reset
    /// connection) so a dead node proposes nothing.
    requests: Vec<AbortHandle>,
    /// Its disk was wiped and it has not been seen serving since.
    wiped: bool,
}

struct Cluster {
    members: Members,
    timing: Timing,
    net: MemoryNetwork,
    liar: Option<NodeId>,
    slots: BTreeMap<NodeId, Slot>,
    crashes: u64,
    /// Disks wiped.
    wipes: u64,
    defect: Defect,
    /// Fast-ballot attempts and fallbacks, summed over dead incarnations.
    fast: (u64, u64),
}

impl Cluster {
    fn up(&self) -> Vec<NodeId> {
        let up = self.slots.iter().filter(|(_, s)| s.node.is_some());
        up.map(|(id, _)| *id).collect()
    }

    fn down(&self) -> Vec<NodeId> {
        let down = self.slots.iter().filter(|(_, s)| s.node.is_none());
        down.map(|(id, _)| *id).collect()
    }

    /// Starts (or restarts) node `id` over what its disk kept, as the
    /// server does: `Node::open` (a blank disk joins the cluster, or
    /// rebuilds when it exists; an interrupted rebuild resumes) and its
    /// lifecycle task `rejoin::run`. `blind` starts it with `Node::new`
    /// instead, which serves at once whatever its disk holds (the
    /// behaviour before issue 8, for [`Defect::WipeWithoutRebuild`]).
    fn start_node(&mut self, id: NodeId, seed: u64, blind: bool) {
        let urls: BTreeMap<NodeId, String> = self
            .members
            .iter()
            .map(|m| (m, format!("memory:{m}")))
            .collect();
        let slot = self.slots.get_mut(&id).expect("a member");
        assert!(slot.node.is_none(), "node {id} is already up");
        let alive = Arc::new(AtomicBool::new(true));
        let storage = SimStorage {
            disk: slot.disk.clone(),
            latency: slot.latency.clone(),
            alive: alive.clone(),
        };
        let transport = SimTransport {
            inner: self.net.transport(id),
            liar: self.liar,
        };
        let timing = self.timing.clone();
        let node = if blind {
            Node::new(
                id,
                self.members.clone(),
                timing,
                storage,
                transport,
                Some(seed),
            )
            .expect("the in-memory store loads")
        } else {
            Node::open(id, &urls, timing, storage, transport, Some(seed))
                .expect("the in-memory store opens")
        };
        self.net.register(id, node.clone());
        if !blind {
            let lifecycle = tokio::spawn(paxos_kv::rejoin::run(node.clone()));
            slot.requests.push(lifecycle.abort_handle());
        }
        slot.alive = alive;
        slot.node = Some(node);
    }

    fn start(&mut self, id: NodeId, seed: u64) {
        self.start_node(id, seed, false);
    }

    /// Node `id` loses its disk: it crashes, its disk is replaced by a
    /// blank one, and it starts again over it.
    fn wipe(&mut self, id: NodeId, seed: u64) {
        self.crash(id);
        self.wipes += 1;
        let slot = self.slots.get_mut(&id).expect("a member");
        slot.wiped = true;
        slot.disk = match &slot.disk {
            Disk::Honest(_) => Disk::Honest(blank_store(seed)),
            Disk::Forgetful(f) => Disk::Forgetful(Arc::new(Mutex::new(ForgetfulDisk {
                flush_every: f.lock().unwrap().flush_every,
                ..ForgetfulDisk::default()
            }))),
        };
        let blind = self.defect == Defect::WipeWithoutRebuild;
        self.start_node(id, seed, blind);
    }

    /// Whether every node that is up serves and no wiped node is still
    /// rebuilding: only then may another disk be wiped. (With two of three
    /// members rebuilding at once, a majority lost its disks: the cluster
    /// then stays unavailable by design, and may have lost values.)
    fn settled(&mut self) -> bool {
        let mut settled = true;
        for slot in self.slots.values_mut() {
            match &slot.node {
                Some(node) if node.health() == Health::Serving => slot.wiped = false,
                Some(_) => settled = false,
                None => settled &= !slot.wiped,
            }
        }
        settled
    }

    /// Crashes node `id`: detached from the network, its disk fenced off, its
    /// in-flight client requests aborted; a forgetful disk loses its cache.
    fn crash(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("a member");
        let Some(node) = slot.node.take() else {
            return;
        };
        let m = node.metrics();
        self.fast.0 += m.fast_rounds.load(Ordering::Relaxed);
        self.fast.1 += m.fast_fallbacks.load(Ordering::Relaxed);
        drop(node);
        self.crashes += 1;
        slot.alive.store(false, Ordering::SeqCst);
        self.net.unregister(id);
        for request in slot.requests.drain(..) {
            request.abort();
        }
        if let Disk::Forgetful(f) = &slot.disk {
            f.lock().unwrap().cache.clear();
        }
    }
}

type Shared = Arc<Mutex<Cluster>>;

// ----- the history -----

/// When an event happened: `seq` orders all recorded events (the runtime has
/// one thread, so this is the real order); `at` is the virtual time, shown.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    seq: u64,
    at: Duration,
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:.3}s", self.seq, self.at.as_secs_f64())
    }
}

type SimOp = Op<Bytes, Stamp>;

struct Recorder {
    start: Instant,
    inner: Mutex<(u64, Vec<SimOp>)>,
    /// Things that are wrong whatever the history says (panics).
    bugs: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new((0, Vec::new())),
            bugs: Mutex::new(Vec::new()),
        }
    }

    fn stamp(&self, seq: &mut u64) -> Stamp {
        *seq += 1;
        Stamp {
            seq: *seq,
            at: self.start.elapsed(),
        }
    }

    fn invoke(&self, key: &str, process: usize, call: Call<Bytes>) -> usize {
        let mut inner = self.inner.lock().unwrap();
        let (seq, ops) = &mut *inner;
        let invoked = self.stamp(seq);
        ops.push(Op {
            key: key.to_owned(),
            process,
            call,
            ret: Ret::Unknown,
            invoked,
            completed: None,
        });
        ops.len() - 1
    }

    fn complete(&self, op: usize, ret: Ret<Bytes>) {
        let mut inner = self.inner.lock().unwrap();
        let (seq, ops) = &mut *inner;
        ops[op].completed = Some(self.stamp(seq));
        ops[op].ret = ret;
    }

    fn ops(&self) -> Vec<SimOp> {
        self.inner.lock().unwrap().1.clone()
    }
}

/// Sends one client request to node `id` (which must be up) and records it.
async fn request(
    cluster: &Shared,
    rec: &Recorder,
    process: usize,
    id: NodeId,
    key: &str,
    call: Call<Bytes>,
) -> Ret<Bytes> {
    let (op, task) = {
        let mut c = cluster.lock().unwrap();
        let slot = c.slots.get_mut(&id).expect("a member");
        let node = slot.node.clone().expect("requests go to nodes that are up");
        let op = rec.invoke(key, process, call.clone());
        let key = key.to_owned();
        let task = tokio::spawn(async move {
            match call {
                Call::Put(value) => match node.put(&key, value).await {
                    Ok(PutOutcome::Created) => Ret::Created,
                    Ok(PutOutcome::AlreadyChosen) => Ret::AlreadyChosen,
                    Ok(PutOutcome::Conflict(chosen)) => Ret::Conflict(chosen),
                    Err(_) => Ret::Unknown,
                },
                Call::Get => match node.get(&key).await {
                    Ok(Some(value)) => Ret::Found(value),
                    Ok(None) => Ret::NotFound,
                    Err(_) => Ret::Unknown,
                },
            }
        });
        slot.requests.retain(|r| !r.is_finished());
        slot.requests.push(task.abort_handle());
        (op, task)
    };
    let ret = match task.await {
        Ok(ret) => ret,
        Err(e) if e.is_cancelled() => Ret::Unknown,
        Err(e) => {
            let bug = format!("op #{op} on node {id} panicked: {e}");
            rec.bugs.lock().unwrap().push(bug);
            Ret::Unknown
        }
    };
    rec.complete(op, ret.clone());
    ret
}

// ----- one run -----

/// Everything a seed decides up front.
#[derive(Clone, Debug)]
struct Scenario {
    nodes: u32,
    keys: usize,
    clients: usize,
    ops_per_client: usize,
    think_max_ms: u64,
    delay_max_ms: u64,
    drop_request: f64,
    drop_reply: f64,
    duplicate: f64,
    straggle: f64,
    skewed_links: bool,
    decide_loss: f64,
    nemesis_events: usize,
    nemesis_gap_max_ms: u64,
    request_timeout_ms: u64,
    disk_latency_max_ms: u64,
    flush_every: u32,
    /// How likely a nemesis event wipes a disk (against 8 other kinds).
    wipe_weight: u32,
}

impl Scenario {
    fn draw(rng: &mut StdRng) -> Self {
        Scenario {
            nodes: if rng.random_bool(0.7) { 3 } else { 5 },
            keys: rng.random_range(1..=3),
            clients: rng.random_range(2..=6),
            ops_per_client: rng.random_range(2..=6),
            think_max_ms: [0, 2, 10, 50][rng.random_range(0..4)],
            delay_max_ms: rng.random_range(0..=30),
            drop_request: rng.random_range(0.0..0.15),
            drop_reply: rng.random_range(0.0..0.15),
            duplicate: rng.random_range(0.0..0.15),
            straggle: [0.0, 0.01, 0.05][rng.random_range(0..3)],
            skewed_links: rng.random_bool(0.5),
            decide_loss: [0.0, 0.0, 0.5, 1.0][rng.random_range(0..4)],
            nemesis_events: rng.random_range(0..=8),
            nemesis_gap_max_ms: rng.random_range(1..=200),
            request_timeout_ms: [300, 1_000, 5_000][rng.random_range(0..3)],
            disk_latency_max_ms: [0, 0, 2, 10][rng.random_range(0..4)],
            flush_every: rng.random_range(2..=4),
            wipe_weight: rng.random_range(0..=3),
        }
    }
}

/// A blank store whose genesis nonce (which `rejoin` would draw from the
/// OS when it first starts) is already drawn from the seed, so runs stay a
/// function of their seed.
fn blank_store(nonce: u64) -> MemoryStorage {
    let store = MemoryStorage::new();
    {
        let write = store.store_meta(GENESIS_META, nonce.to_be_bytes().to_vec());
        let mut write = std::pin::pin!(write);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match write.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => result.expect("the in-memory store writes"),
            std::task::Poll::Pending => unreachable!("the in-memory store completes at once"),
        }
    }
    store
}

/// Most disks wiped in one run.
const MAX_WIPES: u64 = 3;

/// The process number of the final GETs in histories.
const FINAL: usize = 999;

/// The outcome of one seed.
struct Run {
    seed: u64,
    scenario: Scenario,
    ops: Vec<SimOp>,
    failure: Option<Failure>,
    /// A hash of every message and its fate, in order: runs with equal
    /// traces saw the same network.
    trace: u64,
    crashes: u64,
    wipes: u64,
    /// Fast-ballot attempts, and those that fell back to classic rounds.
    fast: (u64, u64),
    virtual_time: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// A key's history is not linearizable.
    NotLinearizable { key: String, why: String },
    /// With everything healed, GETs through different nodes disagree or fail.
    Final { key: String, why: String },
    /// Something that must not happen at all (a panic, a hang).
    Bug(String),
}

impl Run {
    fn report(&self, defect: Defect) -> String {
        let Some(failure) = &self.failure else {
            return format!("seed {} passed", self.seed);
        };
        let (what, key) = match failure {
            Failure::NotLinearizable { key, why } => {
                (format!("not linearizable: {why}"), Some(key))
            }
            Failure::Final { key, why } => (format!("after healing: {why}"), Some(key)),
            Failure::Bug(why) => (why.clone(), None),
        };
        let mut out = format!(
            "simulation seed {} ({defect:?}) failed on key {key:?}: {what}\n{:?}\n",
            self.seed, self.scenario
        );
        if defect == Defect::None {
            out += &format!(
                "{}\n",
                support::seed::replay(
                    self.seed,
                    "simulation",
                    "simulated_histories_are_linearizable"
                )
            );
        }
        out += "history (#op process invoked .. completed key call -> answer; seq@virtual time):\n";
        out += &history::render_where(&self.ops, |op| match key {
            Some(k) => op.key == *k,
            None => true,
        });
        out
    }
}

fn run(seed: u64, defect: Defect) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(simulate(seed, defect))
}

async fn simulate(seed: u64, defect: Defect) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let sc = Scenario::draw(&mut rng);
    let net = MemoryNetwork::new();
    let trace = Arc::new(AtomicU64::new(0));
    set_random_fates(
        &net,
        &sc,
        StdRng::seed_from_u64(rng.random()),
        trace.clone(),
    );

    let members = Members::new(1..=sc.nodes);
    let slots: BTreeMap<NodeId, Slot> = members
        .iter()
        .map(|id| {
            let disk = match defect {
                Defect::ForgetfulDisk => Disk::Forgetful(Arc::new(Mutex::new(ForgetfulDisk {
                    flush_every: sc.flush_every,
                    ..ForgetfulDisk::default()
                }))),
                _ => Disk::Honest(blank_store(rng.random())),
            };
            let latency = Latency {
                max_ms: sc.disk_latency_max_ms,
                rng: Arc::new(Mutex::new(StdRng::seed_from_u64(rng.random()))),
            };
            let slot = Slot {
                disk,
                latency,
                alive: Arc::new(AtomicBool::new(false)),
                node: None,
                requests: Vec::new(),
                wiped: false,
            };
            (id, slot)
        })
        .collect();
    let cluster: Shared = Arc::new(Mutex::new(Cluster {
        members: members.clone(),
        timing: Timing {
            request_timeout: Duration::from_millis(sc.request_timeout_ms),
            ..Timing::default()
        },
        net: net.clone(),
        liar: (defect == Defect::LyingAcceptor).then_some(1),
        slots,
        crashes: 0,
        wipes: 0,
        defect,
        fast: (0, 0),
    }));
    for id in members.iter() {
        cluster.lock().unwrap().start(id, rng.random());
    }
    let rec = Arc::new(Recorder::new());
    // Every node starts blank: the cluster forms when all have met.
    let formed = async {
        while !cluster.lock().unwrap().settled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), formed)
        .await
        .is_err()
    {
        let states: Vec<String> = {
            let c = cluster.lock().unwrap();
            let nodes = c
                .slots
                .iter()
                .filter_map(|(id, s)| Some((id, s.node.clone()?)));
            nodes
                .map(|(id, n)| format!("node {id}: {:?} {:?}", n.health(), n.identity()))
                .collect()
        };
        let bug = format!("the cluster did not form within a minute: {states:?}");
        rec.bugs.lock().unwrap().push(bug);
    }
    let keys: Arc<Vec<String>> = Arc::new((0..sc.keys).map(|k| format!("k{k}")).collect());

    let mut tasks = Vec::new();
    for p in 0..sc.clients {
        let (cluster, rec, keys) = (cluster.clone(), rec.clone(), keys.clone());
        let (sc, rng) = (sc.clone(), StdRng::seed_from_u64(rng.random()));
        tasks.push(tokio::spawn(client(p, cluster, rec, keys, sc, rng)));
    }
    let nemesis_rng = StdRng::seed_from_u64(rng.random());
    tasks.push(tokio::spawn(nemesis(
        cluster.clone(),
        sc.clone(),
        nemesis_rng,
    )));
    let all_done = async {
        for task in tasks {
            if let Err(e) = task.await {
                rec.bugs
                    .lock()
                    .unwrap()
                    .push(format!("a client task failed: {e}"));
            }
        }
    };
    // Every request has a deadline, so an hour of virtual time means a hang.
    if tokio::time::timeout(Duration::from_secs(3600), all_done)
        .await
        .is_err()
    {
        rec.bugs
            .lock()
            .unwrap()
            .push("clients still running after an hour".into());
    }

    // Heal everything, let in-flight messages land, and ask every node.
    {
        let mut c = cluster.lock().unwrap();
        c.net.heal();
        for id in c.down() {
            c.start(id, rng.random());
        }
    }
    net.set_fate(|_, _, _| Fate::Deliver {
        delay: Duration::ZERO,
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let final_failure = final_reads(&cluster, &rec, &keys, &members).await;

    let ops = rec.ops();
    let bugs = rec.bugs.lock().unwrap().clone();
    let failure = if let Some(bug) = bugs.first() {
        Some(Failure::Bug(bug.clone()))
    } else if let Err((key, violation)) = history::check_per_key(&ops) {
        Some(Failure::NotLinearizable {
            key,
            why: violation.to_string(),
        })
    } else {
        final_failure
    };
    let (crashes, wipes, fast) = {
        // Nodes and the network point at each other: break the cycle so the
        // run's memory is freed.
        let mut c = cluster.lock().unwrap();
        let crashes = c.crashes;
        for id in members.iter() {
            c.crash(id);
        }
        (crashes, c.wipes, c.fast)
    };
    Run {
        seed,
        scenario: sc,
        ops,
        failure,
        trace: trace.load(Ordering::SeqCst),
        crashes,
        wipes,
        fast,
        virtual_time: rec.start.elapsed(),
    }
}

/// Every message gets a seeded fate: delay, loss of the request or of the
/// reply, or duplication; unequal delays reorder, and a few stragglers
/// arrive long after their request gave up. Some runs lose many or all
/// `Decide` announcements (fire and forget, so safety must not need them). Each message and its fate are
/// folded into `trace`.
fn set_random_fates(net: &MemoryNetwork, sc: &Scenario, mut rng: StdRng, trace: Arc<AtomicU64>) {
    let sc = sc.clone();
    // Some runs give each one-way link its own latency, so some nodes lag
    // behind others systematically, not just by chance.
    let mut base = BTreeMap::new();
    for from in 1..=sc.nodes {
        for to in 1..=sc.nodes {
            let ms = if sc.skewed_links {
                rng.random_range(0..=2 * sc.delay_max_ms)
            } else {
                0
            };
            base.insert((from, to), ms);
        }
    }
    net.set_fate(move |from, to, request| {
        let delay_ms = if rng.random_bool(sc.straggle) {
            rng.random_range(200..=3_000)
        } else {
            base[&(from, to)] + rng.random_range(0..=sc.delay_max_ms)
        };
        let delay = Duration::from_millis(delay_ms);
        let dice: f64 = rng.random();
        let decide = matches!(request, Request::Decide { .. });
        let fate = if dice < sc.drop_request || decide && rng.random_bool(sc.decide_loss) {
            Fate::DropRequest {
                after: Duration::from_millis(rng.random_range(20..=200)),
            }
        } else if dice < sc.drop_request + sc.drop_reply {
            Fate::DropReply { delay }
        } else if dice < sc.drop_request + sc.drop_reply + sc.duplicate {
            let again = Duration::from_millis(rng.random_range(0..=3 * sc.delay_max_ms + 1));
            Fate::Duplicate { delay, again }
        } else {
            Fate::Deliver { delay }
        };
        let mut h = DefaultHasher::new();
        (trace.load(Ordering::SeqCst), from, to, request).hash(&mut h);
        format!("{fate:?}").hash(&mut h);
        trace.store(h.finish(), Ordering::SeqCst);
        fate
    });
}

/// One client: a few PUTs (of its own distinct values, or of bytes every
/// client may PUT) and GETs, on random keys through random live nodes; after
/// an unknown PUT it may retry the same value, as docs/api.md tells clients to.
async fn client(
    p: usize,
    cluster: Shared,
    rec: Arc<Recorder>,
    keys: Arc<Vec<String>>,
    sc: Scenario,
    mut rng: StdRng,
) {
    let mut retry: Option<(String, Bytes)> = None;
    for i in 0..sc.ops_per_client {
        let think = rng.random_range(0..=sc.think_max_ms);
        tokio::time::sleep(Duration::from_millis(think)).await;
        let up = cluster.lock().unwrap().up();
        if up.is_empty() {
            continue;
        }
        let id = up[rng.random_range(0..up.len())];
        let (key, call) = match retry.take() {
            Some((key, value)) => (key, Call::Put(value)),
            None => {
                let key = keys[rng.random_range(0..keys.len())].clone();
                if rng.random_bool(0.5) {
                    // Mostly a value of its own; sometimes bytes other
                    // clients PUT too, so that equal concurrent PUTs race
                    // and exactly one of them may be told it created them.
                    let value = if rng.random_bool(0.15) {
                        Bytes::from(format!("{key}:shared"))
                    } else {
                        Bytes::from(format!("{key}:p{p}:{i}"))
                    };
                    (key, Call::Put(value))
                } else {
                    (key, Call::Get)
                }
            }
        };
        let ret = request(&cluster, &rec, p, id, &key, call.clone()).await;
        if let (Ret::Unknown, Call::Put(value)) = (ret, call) {
            if rng.random_bool(0.5) {
                retry = Some((key, value));
            }
        }
    }
}

/// Partitions, one-way cuts, heals, crashes, restarts and whole-cluster power
/// failures at random times.
async fn nemesis(cluster: Shared, sc: Scenario, mut rng: StdRng) {
    let ids: Vec<NodeId> = (1..=sc.nodes).collect();
    for _ in 0..sc.nemesis_events {
        let gap = rng.random_range(0..=sc.nemesis_gap_max_ms);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let mut c = cluster.lock().unwrap();
        let id = ids[rng.random_range(0..ids.len())];
        match rng.random_range(0..8 + sc.wipe_weight) {
            0 => c.net.isolate(id, true),
            1 => {
                // Two sides; every link across is cut both ways.
                let side: Vec<bool> = ids.iter().map(|_| rng.random_bool(0.5)).collect();
                for (a, &sa) in ids.iter().zip(&side) {
                    for (b, &sb) in ids.iter().zip(&side) {
                        if sa != sb {
                            c.net.set_link(*a, *b, false);
                        }
                    }
                }
            }
            2 => {
                let other = ids[rng.random_range(0..ids.len())];
                if other != id {
                    c.net.set_link(id, other, false);
                }
            }
            3 => c.net.heal(),
            4 | 5 => c.crash(id),
            6 => {
                // Power failure: every node goes down at once and comes back
                // with only what its disk made durable.
                for id in c.up() {
                    c.crash(id);
                }
                for id in c.down() {
                    c.start(id, rng.random());
                }
            }
            7 => {
                let down = c.down();
                if !down.is_empty() {
                    let id = down[rng.random_range(0..down.len())];
                    c.start(id, rng.random());
                }
            }
            _ => {
                // A lost disk: the node restarts blank and rebuilds from a
                // majority of the others before it votes. One at a time, at
                // most three per run (see `Cluster::settled`).
                if c.settled() && c.wipes < MAX_WIPES {
                    c.wipe(id, rng.random());
                }
            }
        }
    }
}

/// With every node up and every link perfect, a GET of every key through
/// every node must answer (guarantee 5) and all must agree. A value left
/// accepted by a minority may be finished by one of these GETs (a recovery
/// round) after earlier ones found the register empty; that flip is legal,
/// happens at most once and is announced, so a second pass must be unanimous.
async fn final_reads(
    cluster: &Shared,
    rec: &Recorder,
    keys: &[String],
    members: &Members,
) -> Option<Failure> {
    for pass in 0..2 {
        let mut disagreement = None;
        for key in keys {
            let mut answers = Vec::new();
            for id in members.iter() {
                let ret = request(cluster, rec, FINAL, id, key, Call::Get).await;
                if ret == Ret::Unknown {
                    let why = format!("GET through node {id} failed with every node up");
                    return Some(Failure::Final {
                        key: key.clone(),
                        why,
                    });
                }
                answers.push(ret);
            }
            if answers.iter().any(|a| *a != answers[0]) && disagreement.is_none() {
                let why = format!("GETs through nodes 1.. disagree in pass {pass}: {answers:?}");
                disagreement = Some(Failure::Final {
                    key: key.clone(),
                    why,
                });
            }
        }
        // Let the announcements of any recovery land.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if disagreement.is_none() || pass == 1 {
            return disagreement;
        }
    }
    unreachable!("the second pass returns")
}

// ----- the tests -----

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
    )
}

/// Counts of what the runs did, to show the scenarios exercise every answer.
#[derive(Default, Debug)]
struct Tally {
    seeds: u64,
    ops: u64,
    created: u64,
    already: u64,
    conflict: u64,
    found: u64,
    not_found: u64,
    unknown: u64,
    crashes: u64,
    wipes: u64,
    fast_tried: u64,
    fast_fell_back: u64,
    virtual_secs: f64,
}

impl Tally {
    fn add(&mut self, run: &Run) {
        self.seeds += 1;
        self.crashes += run.crashes;
        self.wipes += run.wipes;
        self.fast_tried += run.fast.0;
        self.fast_fell_back += run.fast.1;
        self.virtual_secs += run.virtual_time.as_secs_f64();
        for op in &run.ops {
            self.ops += 1;
            *match op.ret {
                Ret::Created => &mut self.created,
                Ret::AlreadyChosen => &mut self.already,
                Ret::Conflict(_) => &mut self.conflict,
                Ret::Found(_) => &mut self.found,
                Ret::NotFound => &mut self.not_found,
                Ret::Unknown => &mut self.unknown,
            } += 1;
        }
    }

    fn merge(&mut self, o: Tally) {
        self.seeds += o.seeds;
        self.fast_tried += o.fast_tried;
        self.fast_fell_back += o.fast_fell_back;
        self.ops += o.ops;
        self.created += o.created;
        self.already += o.already;
        self.conflict += o.conflict;
        self.found += o.found;
        self.not_found += o.not_found;
        self.unknown += o.unknown;
        self.crashes += o.crashes;
        self.wipes += o.wipes;
        self.virtual_secs += o.virtual_secs;
    }
}

/// docs/api.md guarantees 1 (agreement), 2 (validity), 3 (durability across
/// crashes and restarts), 4 (linearizability of every key's history) and 5
/// (every request completes once all is healed), on thousands of seeded
/// scenarios of concurrent clients, message loss, delay, duplication,
/// reordering, partitions and crash-restarts. `PAXOS_KV_SIM_SEED_COUNT=N`
/// runs seeds 0 to N-1; `PAXOS_KV_SEED=N` replays seed N and prints its
/// history.
#[test]
fn simulated_histories_are_linearizable() {
    if let Some(seed) = support::seed::fixed() {
        let run = run(seed, Defect::None);
        println!("{:?}", run.scenario);
        println!("{}", history::render(&run.ops));
        assert!(run.failure.is_none(), "{}", run.report(Defect::None));
        println!("seed {seed} passed; {} crashes", run.crashes);
        return;
    }
    let seeds = env_u64("PAXOS_KV_SIM_SEED_COUNT").unwrap_or(DEFAULT_SEEDS);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8) as u64;
    let started = std::time::Instant::now();
    let failed = AtomicBool::new(false);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let failed = &failed;
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for seed in (t..seeds).step_by(threads as usize) {
                        if failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let run = run(seed, Defect::None);
                        tally.add(&run);
                        if run.failure.is_some() {
                            failed.store(true, Ordering::SeqCst);
                            return (tally, Some(run.report(Defect::None)));
                        }
                    }
                    (tally, None)
                })
            })
            .collect();
        for w in workers {
            let (t, failure) = w.join().expect("worker");
            tally.merge(t);
            failures.extend(failure);
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {secs:.1} s ({:.0} seeds/s on {threads} threads); {tally:?}",
        tally.seeds,
        tally.seeds as f64 / secs
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if seeds >= 1_000 {
        // The scenarios reach every answer and crash nodes: the check is not vacuous.
        for (what, n) in [
            ("created", tally.created),
            ("already chosen", tally.already),
            ("conflict", tally.conflict),
            ("found", tally.found),
            ("not found", tally.not_found),
            ("unknown", tally.unknown),
            ("crashes", tally.crashes),
            ("wiped disks", tally.wipes),
            ("fast-ballot PUT", tally.fast_tried),
            ("fast-ballot fallback", tally.fast_fell_back),
        ] {
            assert!(n > 0, "no {what} in {} seeds: {tally:?}", tally.seeds);
        }
    }
}

/// The simulation is a function of its seed: the same seed gives the same
/// messages with the same fates in the same order, and the same history
/// (tokio's current-thread scheduler and paused clock are deterministic;
/// every random choice, the nodes' included, comes from the seed).
#[test]
fn same_seed_same_run() {
    for seed in 0..40 {
        let (a, b) = (run(seed, Defect::None), run(seed, Defect::None));
        assert_eq!(a.trace, b.trace, "seed {seed}: different message traces");
        assert_eq!(
            history::render(&a.ops),
            history::render(&b.ops),
            "seed {seed}: different histories"
        );
        assert_eq!(a.virtual_time, b.virtual_time, "seed {seed}");
        assert_eq!(a.failure, b.failure, "seed {seed}");
    }
    let (a, b) = (run(1, Defect::None), run(2, Defect::None));
    assert_ne!(a.trace, b.trace, "different seeds give different runs");
}

/// Finds the first seed below `limit` whose history the checker rejects.
/// With `PAXOS_KV_SIM_DEFECT_SCAN=N`, first prints how many of N seeds do.
fn first_violation(defect: Defect, limit: u64) -> Option<Run> {
    let caught = |run: &Run| matches!(run.failure, Some(Failure::NotLinearizable { .. }));
    if let Some(scan) = env_u64("PAXOS_KV_SIM_DEFECT_SCAN") {
        let hits = (0..scan).filter(|&seed| caught(&run(seed, defect))).count();
        println!("{defect:?}: {hits} of {scan} seeds caught");
    }
    (0..limit).map(|seed| run(seed, defect)).find(caught)
}

/// The check can fail (a test that cannot fail is a defect): a disk that
/// acknowledges a write before it is durable and loses it in a crash breaks
/// docs/design.md invariant 1, and the history checker catches the result.
#[test]
fn checker_catches_a_disk_that_forgets_acknowledged_writes() {
    let run = first_violation(Defect::ForgetfulDisk, 3_000)
        .expect("no seed caught the forgetful disk: the simulation cannot fail");
    println!("caught: {}", run.report(Defect::ForgetfulDisk));
}

/// The check can fail: an acceptor whose promises hide its vote breaks phase
/// 1b of Paxos (a later proposer may pick a new value after one was chosen),
/// and the history checker catches the result.
#[test]
fn checker_catches_an_acceptor_that_hides_its_vote() {
    let run = first_violation(Defect::LyingAcceptor, 3_000)
        .expect("no seed caught the lying acceptor: the simulation cannot fail");
    println!("caught: {}", run.report(Defect::LyingAcceptor));
}

/// The check can fail on a lost disk: a node whose disk is wiped and that
/// restarts with `Node::new` over the blank store votes at once (the
/// behaviour before issue 8), forgetting its votes and promises; the
/// history checker catches a chosen value lost that way. The same seeds
/// pass with `Node::open` and the rebuild (`simulated_histories_are_linearizable`).
#[test]
fn checker_catches_a_wiped_node_that_votes_at_once() {
    let run = first_violation(Defect::WipeWithoutRebuild, 3_000)
        .expect("no seed caught the wiped node voting at once: the simulation cannot fail");
    println!("caught: {}", run.report(Defect::WipeWithoutRebuild));
    let fixed = self::run(run.seed, Defect::None);
    println!(
        "seed {} with the rebuild: {}",
        run.seed,
        fixed.report(Defect::None)
    );
}
