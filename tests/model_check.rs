//! Model checking of the real pure Paxos core (`src/paxos/`) with stateright.
//!
//! The adapter below wraps the real core as stateright actors: three servers,
//! each an acceptor ([`acceptor::handle`] over its [`AcceptorState`]) and a
//! coordinator of client requests (the production [`Coordinator`] of
//! `src/paxos/coordinator.rs`, whose effects the adapter executes as
//! `Node::execute` does: the fast attempt, classic rounds, the quorum read
//! and its recovery are the code the node runs, not a copy), and clients
//! that PUT different values and GET through different servers. The network
//! duplicates and reorders messages (stateright's unordered duplicating
//! network: a sent message may be delivered any number of times, in any
//! order, or never), and servers crash and restart from what they saved
//! (acceptor state and ballot clock mark), which they save before any reply
//! leaves, as the node does. The one exception is the node's too: an
//! announced decide (untagged: nobody reads its answer) is applied without
//! a save (`Storage::store_lazy`, issue 13) and saved with the server's next
//! save, so a crash before that loses the decided flag; an answer
//! `Decided` to a tagged request saves it first (`Storage::settle`). Once
//! no crash and restart can come any more, the garbage collection saves such
//! a flag (nothing reads the disk again), so crash-free searches have
//! exactly their former state counts.
//!
//! Checked, as `always` properties (docs/api.md "Guarantees", docs/design.md
//! invariants): linearizability as a write-once register with "not found"
//! (strict: only the PUT that filled the register may get 201), which
//! includes durability of answered outcomes through crashes (3, 4);
//! durability on disk (a chosen value keeps a majority of saved votes at or
//! above its ballot, all for it, so any restart still finds it); agreement (1: never two values a majority accepted in one ballot, nor two
//! decided); validity (2); answers name only chosen values; decided implies
//! chosen (invariant 5); no ballot starts two rounds (invariant 2). In the
//! fast ballot, which may carry several values, a value counts as chosen
//! only with every server's vote. The
//! `sometimes` property "value chosen" must be reached, so no check is vacuous.
//!
//! # What runs, exhaustively (every reachable state, searched to the end)
//!
//! | configuration | crashes | unique states | where |
//! |---|---|---|---|
//! | contention: PUT a via s0 and PUT b via s1 at once | 0 | 2,685,218 | CI |
//! | put-then-get: PUT a via s0, then GET via s1 | 1 | 490,502 (†) | CI |
//! | PUT a via s0 and a concurrent GET via s1 | 0 | 892,102 | CI |
//! | one PUT via s0, lossy network | 1 | 82,888 | CI |
//! | contention, as above | 1 | 5,040,722 (\*) | deep |
//! | PUT and concurrent GET, as above | 1 | 1,526,935 (\*) | deep |
//! | fast ballot: PUT a via s0, then GET via s1 | 1 | 3,549,209 (†) | CI |
//! | fast ballot: PUT a via s0 and a concurrent GET via s1 | 0 | 13,412,997 (\*) | deep |
//!
//! Measured when the model began to drive the production [`Coordinator`]
//! (issue 9): each CI count is exactly the count of the adapter's former
//! copy of the request logic, measured on the same day (the table before
//! was older than the wipe fault's changes to the state). (\*) Not measured
//! again since November: older than the wipe fault. (†) Measured with
//! lazy decides (issue 13; before: 335,088 and 3,049,266, 6.8 s and 61 s;
//! after: 10.1 s and 77 s, at load average 3.7 on 2 cores). The
//! put-then-get count includes the ghost of "decided flag lost" (which
//! servers took an announced decide), on only there ([`Config::track_lazy`]).
//!
//! With `fast`, a PUT first tries the fast ballot (Fast Paxos round 0: the
//! coordinator's fast attempt, as `Node::put_value` starts it when every
//! peer answered lately) and then one classic round. Two
//! fast writers at once (fast contention) and the fast PUT with a concurrent
//! GET are searched depth-first for a bounded time in CI (30 s each;
//! `PAXOS_KV_MODEL_SECS` changes it): 3.2 M fast-contention states in 60 s,
//! no violation; it does not finish in 15 minutes.
//!
//! CI (`cargo test --release`) runs this file, mutation tests included, in
//! about 8.5 minutes on 2 cores shared with other builds (515 s at issue 9;
//! the former copy took as long: its contention search alone took 253 s). `PAXOS_KV_MODEL_DEEP=1` adds the crash to the
//! two bigger configurations (2 to 3 minutes and about 1 minute on 2 idle
//! cores; under 2 GB) and runs the full configuration described below.
//! Counterexample and "sometimes" path lengths are printed; stateright keeps
//! the last path it found, so they are not always the shortest.
//!
//! # What is bounded, and why
//!
//! - Each client operation gets at most one classic round
//!   ([`Limits::max_rounds`], two in the value-only-read mutation; a PUT's
//!   fast attempt does not count) before its coordinator gives up; time is
//!   abstract (every [`Limits`] timing is 0, no deadline): an operation's
//!   timer fires whenever the search says, as the coordinator's straggler
//!   wait when it set one, else as every call in flight failing;
//!   a give-up that would only answer 503 is left out, since it changes no
//!   acceptor and a 503 records nothing (the operation stays pending, which
//!   the linearizability check treats as "may or may not have happened").
//! - At most one crash and one restart in total; a client request reaches a
//!   server at most once (it rides one HTTP connection).
//! - The safety configurations run without message loss.
//!   [`loss_adds_states_but_no_behavior`] shows why that loses nothing: with
//!   a duplicating network loss equals "never delivered again", and the test
//!   checks exhaustively, on a configuration with a crash, that a lossy
//!   network reaches exactly the same actor, storage, timer and history
//!   states while multiplying the state count (82,888 against 2,685 here;
//!   1,432,238 against 19,387 with two rounds per operation, measured in
//!   November), then checks the
//!   lossy model's properties too.
//! - Two writers, each then reading through another server, with a crash
//!   (the full configuration of issue 4) is too big to finish: a lossy BFS
//!   of it ran out of 24 GB within minutes, and a lossless DFS visited
//!   10.4 M states in 300 s (depth 74) without finishing or finding a
//!   violation. `PAXOS_KV_MODEL_DEEP=1` searches it (DFS, bounded by
//!   `PAXOS_KV_MODEL_SECS`, default 600) and says whether it finished.
//!
//! # Mutations (each must be caught)
//!
//! Accept below the promise, reply before the state is saved, a quorum read
//! by value alone, a second fast vote (caught in 7 steps as a chosen fast
//! value lost from disk), an accept recorded lazily like an announced decide
//! (issue 13: caught in 11 steps as "chosen is durable", about 2,100 states;
//! as a GET that misses an answered PUT in 18 steps, 81,000 to 185,000
//! states: the two-thread search stops at the first it finds), and the
//! ballot clock restored from zero; the first two
//! are searched again without "chosen is durable", which catches them
//! first, to show they also break agreement and linearizability. The last is
//! caught only as a reused ballot: with the real acceptor's strict promise
//! rule a reused ballot cannot break agreement (see
//! [`mutation_clock_from_zero_is_caught_as_reused_ballot`]); together with a
//! `>=` promise rule it does, and the checker finds that too.
//!
//! One mutation lives only in the production coordinator (issue 9): with
//! [`Fault::FastMajority`] a fast attempt whose straggler wait ends with a
//! majority of fast accepts declares its value chosen. No code in this file
//! decides that, so only checking the code the node runs can catch it
//! ([`mutation_fast_majority_in_the_coordinator_is_caught`]: a 201 for a
//! value that is not chosen, and acceptors that record it decided, in 10
//! steps, 2,166 states).
//!
//! # The wipe fault (issue 8, docs/design.md invariant 8)
//!
//! With `wipes`, a server may lose its disk: acceptor state, ballot clock
//! mark and identity (its incarnation and the incarnations it recorded for
//! the others) are replaced by a blank disk, and the process restarts at
//! once. It then follows `src/rejoin.rs`: recovering (it answers no
//! acceptor request and takes no client request), it learns from a
//! majority of the others, all serving, the newest incarnation they
//! recorded for it and takes the next (durably); records it at a majority
//! of the others (they then refuse accepts whose [`Fence`] names an older
//! incarnation of it, `Known::admits`); lists the key at a majority of the
//! serving others; if any holds it, runs phase 1 there with a fresh ballot
//! (its clock restarted from zero and floored by rejections) and installs
//! `rebuilt_vote(promises)` with that ballot as its promise (or the decided
//! value); then serves. Proposers collect the promisers' incarnations from
//! the promise replies and send them as the accepts' fence, as
//! the coordinator does for the node; an acceptor checks the fence against the table it
//! recorded plus its own incarnation (`Node::acceptor_step`). Not modelled:
//! the install and the "rebuilt" mark are one step here (two writes in the
//! node: a crash between them reruns the rebuild), and the hello, fence and
//! scan steps are not retried (a retry resends the same messages, which the
//! duplicating network already redelivers).
//!
//! With wipes the "chosen is durable" property counts the servers whose
//! rebuild finished: a server that rebuilds answers no phase 1, so the
//! value must be on all but fewer than a majority of the others; and
//! "ballots unique" is replaced by "one value per ballot" (a wiped server's
//! clock restarts from zero, and the protocol only keeps it from reusing a
//! round where an accept could be in flight, which is what agreement needs).
//!
//! Measured (2 cores shared with other builds, so slower than idle): one
//! PUT with a wipe of any server, exhaustive (`PAXOS_KV_MODEL_DEEP=1`):
//! 1,448,489 states, depth 46, 157 s, safe. In CI the four wipe safety
//! searches are depth-first and bounded at 10 s each (about 100,000 to
//! 120,000 states each, none exhaustive). Mutations caught: wipe without
//! rebuild in 11 steps by "chosen is durable" (2,129 states), and as a GET
//! that misses an answered PUT in 17 steps (56,193 states, 4.5 s); the
//! fast-ballot variant in 19 steps (163,528 states, 22 s); a rebuild from
//! one peer in 27 steps (339,114 states, 40 s). "No fence" and "self not
//! fenced" need two writers, a wipe and about 25 steps: their searches are
//! `#[ignore]`d tests (a breadth-first search used 7.6 GB within minutes;
//! 100 s of depth-first search did not reach the trace).
//!
//! Run: `cargo test --release --test model_check -- --nocapture`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use paxos_kv::paxos::{
    acceptor, rebuilt_vote, Accepted, AcceptorState, Ballot, BallotClock, Coordinator, Effect,
    Fault, Fence, Incarnation, Known, Limits, Members, NodeId, Outcome, Reply, Request, Step,
    FIRST_INCARNATION,
};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id,
    LossyNetwork, Network, Out,
};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use stateright::{Checker, HasDiscoveries, Model, Path, Property};

/// Register values: small, so states stay small.
type Value = char;

/// Servers are actors `0..SERVERS`; clients follow.
const SERVERS: usize = 3;

// ---------------------------------------------------------------------------
// The sequential specification: a write-once register that can say "not found".
// ---------------------------------------------------------------------------

/// A write-once register, as docs/api.md states it: `Created` (201) only for the
/// PUT that filled the empty register, `AlreadyChosen` (200) when it already
/// held the same value, `Conflict` (409) when it held another, and a GET sees
/// the value or "not found" (404). The same rules as the shared checker
/// `tests/support/history.rs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Register(Option<Value>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RegOp {
    Put(Value),
    Get,
}

/// What a client sees: the PUT outcomes of `src/node.rs` (`PutOutcome`) and
/// a GET's `Option<Value>` (404 is `Got(None)`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum RegRet {
    Created,
    AlreadyChosen,
    Conflict(Value),
    Got(Option<Value>),
}

impl SequentialSpec for Register {
    type Op = RegOp;
    type Ret = RegRet;

    fn invoke(&mut self, op: &RegOp) -> RegRet {
        match (op, self.0) {
            (RegOp::Put(v), None) => {
                self.0 = Some(*v);
                RegRet::Created
            }
            (RegOp::Put(v), Some(w)) if *v == w => RegRet::AlreadyChosen,
            (RegOp::Put(_), Some(w)) => RegRet::Conflict(w),
            (RegOp::Get, held) => RegRet::Got(held),
        }
    }

    fn is_valid_step(&mut self, op: &RegOp, ret: &RegRet) -> bool {
        match (op, ret) {
            (RegOp::Put(v), RegRet::Created) => match self.0 {
                None => {
                    self.0 = Some(*v);
                    true
                }
                Some(_) => false,
            },
            (RegOp::Put(v), RegRet::AlreadyChosen) => self.0 == Some(*v),
            (RegOp::Put(v), RegRet::Conflict(w)) => self.0 == Some(*w) && w != v,
            (RegOp::Get, RegRet::Got(seen)) => self.0 == *seen,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------
// Messages, states, configuration.
// ---------------------------------------------------------------------------

/// Routes an acceptor reply back to the broadcast that asked: the node gets
/// this for free from HTTP request/response pairing (one channel per
/// broadcast in `Node::broadcast`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tag {
    client: Id,
    seq: u8,
    /// [`Coordinator::call`] (or the rebuild's broadcast counter).
    call: u32,
    /// The coordinator's process generation (bumped at every start and
    /// every wipe): a reply never reaches a later one (its HTTP connection
    /// died with the process).
    incarnation: u8,
}

/// [`Tag::seq`] of the messages a wiped server sends while it rebuilds
/// (`src/rejoin.rs`); [`Tag::client`] is then the server itself.
const REBUILD: u8 = u8::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    /// Client to server: `PUT` with the client's operation number.
    Put { seq: u8, value: Value },
    /// Client to server: `GET`.
    Get { seq: u8 },
    /// Server to client: the answer to operation `seq`. `about` is a ghost
    /// field: the value the answer says is chosen (none for a 404).
    Done {
        seq: u8,
        ret: RegRet,
        about: Option<Value>,
    },
    /// Server to client: 503, the outcome is unknown.
    Unavailable { seq: u8 },
    /// Coordinator to acceptor. No tag: fire and forget (the `Decide`
    /// announcement, whose answer the node drops). `fence`: the promisers
    /// of the round, with the incarnation that promised (accepts only).
    Peer {
        tag: Option<Tag>,
        request: Request<Value>,
        fence: Fence,
    },
    /// Acceptor to coordinator, with the acceptor's incarnation. `vote` is
    /// a ghost field (not in the node's protocol): the vote an `Accepted`
    /// reply stands for, so the checker can tell which values were chosen.
    PeerReply {
        tag: Tag,
        reply: Reply<Value>,
        inc: Incarnation,
        vote: Option<Accepted<Value>>,
    },
    /// A rebuilding server asks a peer who it is (`Control::Hello`).
    Hello { tag: Tag },
    /// A serving peer answers: the incarnation it recorded for the asker.
    HelloReply { tag: Tag, yours: Incarnation },
    /// Record the sender's new incarnation (`Control::Fence`).
    FenceReq { tag: Tag, inc: Incarnation },
    /// The incarnation now recorded for the sender, durable.
    Fenced { tag: Tag, recorded: Incarnation },
    /// Which keys do you hold (`Control::Scan`, for the one key here).
    Scan { tag: Tag },
    /// A serving peer answers whether it stores the key.
    Keys { tag: Tag, has: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// The coordinator of a client operation stops waiting: a read gives up
    /// on stragglers, a proposer round counts the silent members as
    /// unreachable.
    Op(Id, u8),
    /// Only with [`Mutation::ReplyBeforeSave`]: the delayed write.
    Flush,
    /// The server loses its disk and restarts blank (the wipe fault).
    Wipe,
    /// A rebuild's phase 1 gives up waiting (`rebuild_key`'s deadline).
    Rebuild,
}

/// What a server keeps across crashes: the node's sled contents for one key
/// plus the ballot clock's reservation mark.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Durable {
    acceptor: AcceptorState<Value>,
    mark: u64,
    /// Process generation: bumped at every start and every wipe; the
    /// restarts it counts are bounded (see [`Config::max_restarts`]).
    incarnation: u8,
    /// Ghost (kept through a wipe, to bound them): how often this server
    /// lost its disk.
    wipes: u8,
    /// The identity (`src/identity.rs`): this server's incarnation, the
    /// incarnations it recorded for the others, and whether its rebuild
    /// finished.
    me: Incarnation,
    known: Known,
    rebuilt: bool,
}

impl Durable {
    /// Restarts (not wipes) this server used.
    fn restarts(&self) -> u32 {
        u32::from(self.incarnation - self.wipes)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Put(Value),
    Get,
}

/// One client operation this server coordinates: the production
/// [`Coordinator`], executed as `Node::execute` executes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Coord {
    kind: Kind,
    coord: Coordinator<Value>,
}

/// Where a wiped server is in its rebuild (`src/rejoin.rs`, `rebuild`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Rejoin {
    /// Step 1: the incarnations the serving others recorded for it.
    Hello {
        yours: BTreeMap<NodeId, Incarnation>,
    },
    /// Step 2: recording incarnation `inc` at the others.
    Fencing {
        inc: Incarnation,
        fenced: BTreeSet<NodeId>,
    },
    /// Step 3a: which of the serving others hold the key.
    Scanning { listed: BTreeMap<NodeId, bool> },
    /// Step 3b: phase 1 at the others with a fresh ballot.
    Rebuilding {
        ballot: Ballot,
        promises: BTreeMap<NodeId, Option<Accepted<Value>>>,
        /// The others that refused (a set: the network duplicates replies,
        /// and the node counts each call's answer once).
        failed: BTreeSet<NodeId>,
        seen_round: u64,
        attempts: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerState {
    acceptor: AcceptorState<Value>,
    clock: BallotClock,
    /// The mark last made durable.
    mark: u64,
    incarnation: u8,
    ops: BTreeMap<(Id, u8), Coord>,
    /// Operations finished in this incarnation (a duplicated client request
    /// is not coordinated twice; after a restart it may be, like a retry).
    done: BTreeSet<(Id, u8)>,
    /// Only with [`Mutation::ReplyBeforeSave`]: state not yet durable.
    unsaved: bool,
    /// `acceptor` holds a decided flag recorded lazily (an announced
    /// decide, `Storage::store_lazy`) and not saved since: the next save
    /// (any durable write: group commit) or an answer that rests on it
    /// (`Storage::settle`) saves it; a crash before that loses it.
    lazy: bool,
    /// See [`Durable::wipes`].
    wipes: u8,
    /// This server's incarnation and the others' it recorded.
    me: Incarnation,
    known: Known,
    /// `Some` while it rebuilds after a wipe: it votes in nothing and
    /// coordinates nothing (`Health::Recovering`).
    rejoin: Option<Rejoin>,
    /// Broadcast counter of the rebuild, for [`Tag::call`].
    rcall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientState {
    /// The operation in flight (or the number of operations when done).
    seq: u8,
    /// Got a 503: the outcome is unknown, the client stops.
    gave_up: bool,
}

// The states live behind `Arc`s in the checker; boxing the server's would
// only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeState {
    Server(ServerState),
    Client(ClientState),
    /// A crashed server (only set by the checker's garbage collection).
    Down,
}

/// A deliberately broken variant of the core, built in the adapter around
/// the real core (src/ is not touched), except [`Mutation::FastMajority`],
/// planted in the production coordinator through [`Limits::fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mutation {
    /// The real core and the production coordinator.
    None,
    /// An acceptor accepts `Accept(b)` even when `b < promised` (invariant 1).
    AcceptBelowPromise,
    /// A server replies before its new state is durable, and writes it only
    /// later (invariant 1, durability): a crash in between loses a promise.
    ReplyBeforeSave,
    /// A server restores its ballot clock from 0 after a restart, so it
    /// reuses ballots (invariant 2).
    ClockFromZero,
    /// [`Mutation::ClockFromZero`] plus acceptors that promise a `Prepare`
    /// equal to their promise again (`>=` instead of `>`): the strict rule
    /// is what masks a reused ballot in the real acceptor.
    ClockFromZeroRepromise,
    /// A quorum read compares values alone, not (ballot, value) (invariant 4):
    /// the vote replies reach the coordinator with the ballot replaced by
    /// one derived from the value.
    ValueOnlyRead,
    /// In the coordinator only ([`Fault::FastMajority`], planted through
    /// [`Limits::fault`]): a fast attempt whose straggler wait ends with a
    /// majority of fast accepts declares its value chosen.
    FastMajority,
    /// An acceptor votes again in the fast ballot, for another value (Fast
    /// Paxos allows one fast vote per acceptor, ever).
    SecondFastVote,
    /// The behaviour before issue 8: a wiped server comes back blank and
    /// votes at once (`Node::new` over an empty store).
    WipeWithoutRebuild,
    /// The rebuild runs, but acceptors ignore the fence of accepts.
    NoFence,
    /// An accept (phase 2) is recorded like an announced decide: applied
    /// and answered at once, saved only with the next durable write, so a
    /// crash before that loses a vote that was counted (issue 13's lazy
    /// decide, applied where it is not safe).
    LazyAccept,
    /// The rebuild lists and reads the key through one other server
    /// instead of a majority of them.
    RebuildFromOne,
    /// The fence is checked against the recorded incarnations of the
    /// others only, not against the acceptor's own: a rebuilt server admits
    /// an accept whose round relied on a promise of its own earlier
    /// incarnation (the first version of `Node::acceptor_step`).
    SelfNotFenced,
}

#[derive(Clone, Debug)]
struct Config {
    mutation: Mutation,
    /// Proposer rounds per client operation before the coordinator answers 503.
    max_rounds: u8,
    /// Client requests reach a server at most once (HTTP), instead of
    /// being redelivered to it after a restart like a client retry.
    client_at_most_once: bool,
    /// Restarts in total (a server may also crash and stay down).
    max_restarts: u8,
    /// A PUT first tries the fast ballot (`Coordinator::put` with `fast`),
    /// as `Node::put_value` does when every peer answered lately, and goes on
    /// with classic rounds when that attempt ends without a chosen value.
    fast: bool,
    /// Wipes in total: a server loses its disk (acceptor state, clock mark,
    /// identity) and restarts blank.
    wipes: u8,
    /// Phase-1 attempts of a rebuild before it stays stuck (recovering).
    rebuild_attempts: u8,
    /// Only this server may be wiped (all when `None`).
    wipe_only: Option<usize>,
    /// Ghost: record which servers took an announced decide, for the
    /// "decided flag lost" `sometimes` property (off by default: it splits
    /// states, about a quarter more in put-then-get+crash).
    track_lazy: bool,
}

#[derive(Clone, Debug)]
struct ClientCfg {
    /// (server index, operation), in order.
    script: Vec<(usize, RegOp)>,
}

#[derive(Clone, Debug)]
enum Node {
    Server(Config),
    Client(ClientCfg),
}

/// Which requests `Config::on_peer_request` may record lazily.
enum RequestKind {
    Accept,
    Decide,
    Other,
}

fn node_id(id: Id) -> NodeId {
    usize::from(id) as NodeId + 1
}

fn members() -> Members {
    Members::new((0..SERVERS).map(|i| i as NodeId + 1))
}

fn broadcast(tag: Option<Tag>, request: Request<Value>, fence: Fence, o: &mut Out<Node>) {
    for m in 0..SERVERS {
        o.send(
            Id::from(m),
            Msg::Peer {
                tag,
                request: request.clone(),
                fence: fence.clone(),
            },
        );
    }
}

/// The servers other than `id`.
fn others(id: Id) -> impl Iterator<Item = Id> {
    (0..SERVERS).map(Id::from).filter(move |m| *m != id)
}

/// A majority of the members: what a rebuild needs from the others.
fn quorum() -> usize {
    members().quorum()
}

fn same_or_conflict(chosen: Value, own: Value) -> RegRet {
    if chosen == own {
        RegRet::AlreadyChosen
    } else {
        RegRet::Conflict(chosen)
    }
}

// ---------------------------------------------------------------------------
// The server: acceptor + coordinator, over the real core.
// ---------------------------------------------------------------------------

impl Config {
    fn save(&self, st: &mut ServerState, o: &mut Out<Node>) {
        st.unsaved = false;
        st.lazy = false;
        o.save(Durable {
            acceptor: st.acceptor.clone(),
            mark: st.mark,
            incarnation: st.incarnation,
            wipes: st.wipes,
            me: st.me,
            known: st.known.clone(),
            rebuilt: st.rejoin.is_none(),
        });
    }

    /// The fence table an acceptor checks accepts against: the recorded
    /// incarnations of the others and its own (a rebuilt server refuses a
    /// round that relied on a promise of its earlier incarnation).
    fn fence_table(&self, id: Id, st: &ServerState) -> Known {
        fence_table(self, node_id(id), st.me, &st.known)
    }

    /// The acceptor side: `Node::handle_acceptor`. A server that rebuilds
    /// answers nothing; an accept whose fence names a superseded
    /// incarnation is refused (an error: no reply).
    #[allow(clippy::too_many_arguments)]
    fn on_peer_request(
        &self,
        id: Id,
        st: &mut ServerState,
        src: Id,
        tag: Option<Tag>,
        request: Request<Value>,
        fence: Fence,
        o: &mut Out<Node>,
    ) {
        if st.rejoin.is_some() {
            return;
        }
        if matches!(request, Request::Accept { .. })
            && self.mutation != Mutation::NoFence
            && self.fence_table(id, st).admits(&fence).is_err()
        {
            return;
        }
        let vote = match &request {
            Request::Accept { ballot, value } => Some(Accepted {
                ballot: *ballot,
                value: *value,
            }),
            _ => None,
        };
        let request_kind = match &request {
            Request::Accept { .. } => RequestKind::Accept,
            Request::Decide { .. } => RequestKind::Decide,
            _ => RequestKind::Other,
        };
        let below_promise = matches!(&request,
            Request::Accept { ballot, .. } if *ballot < st.acceptor.promised);
        let repromise = matches!(&request,
            Request::Prepare { ballot } if *ballot == st.acceptor.promised);
        let second_fast_vote = matches!(&request,
            Request::Accept { ballot, .. } if *ballot == Ballot::FAST
                && st.acceptor.promised == Ballot::FAST
                && !st.acceptor.decided);
        let step = if self.mutation == Mutation::SecondFastVote && second_fast_vote {
            // Broken: judge the fast accept as if no fast vote had been cast.
            let unvoted = AcceptorState {
                accepted: None,
                ..st.acceptor.clone()
            };
            acceptor::handle(&unvoted, request)
        } else if (self.mutation == Mutation::AcceptBelowPromise && below_promise)
            || (self.mutation == Mutation::ClockFromZeroRepromise && repromise)
        {
            // Broken: judge the accept (or the equal prepare) as if nothing
            // had been promised.
            let forgetful = AcceptorState {
                promised: Ballot::ZERO,
                ..st.acceptor.clone()
            };
            acceptor::handle(&forgetful, request)
        } else {
            acceptor::handle(&st.acceptor, request)
        };
        // `Node::acceptor_step`: an announced decide (no tag: nobody reads
        // its answer) is recorded lazily; with `LazyAccept`, an accept too.
        let lazy = match &request_kind {
            RequestKind::Decide => tag.is_none(),
            RequestKind::Accept => self.mutation == Mutation::LazyAccept,
            RequestKind::Other => false,
        };
        let reply = match step {
            // `Storage::settle`: an answer that rests on a lazily recorded
            // decided flag waits until it is durable.
            Step::Reply(reply @ Reply::Decided { .. }) if tag.is_some() && st.lazy => {
                self.save(st, o);
                reply
            }
            Step::Reply(reply) => reply,
            Step::Persist(persist) if lazy => {
                // Applied, not saved: durable with the next save.
                let (new_state, reply) = persist.reply_once_durable();
                st.acceptor = new_state;
                st.lazy = true;
                reply
            }
            Step::Persist(persist) => {
                if self.mutation == Mutation::ReplyBeforeSave {
                    // Broken: the reply leaves now, the write happens later.
                    let (new_state, reply) = persist.reply_once_durable();
                    st.acceptor = new_state;
                    st.unsaved = true;
                    o.set_timer(Timer::Flush, model_timeout());
                    reply
                } else {
                    let promised_before = st.acceptor.promised;
                    st.acceptor = persist.state().clone();
                    if self.mutation == Mutation::AcceptBelowPromise {
                        // Keep the higher promise: only the accept is wrong.
                        st.acceptor.promised = st.acceptor.promised.max(promised_before);
                    }
                    self.save(st, o);
                    persist.reply_once_durable().1
                }
            }
        };
        if let Some(tag) = tag {
            let vote = match reply {
                Reply::Accepted { .. } => vote,
                _ => None,
            };
            let inc = st.me;
            o.send(
                src,
                Msg::PeerReply {
                    tag,
                    reply,
                    inc,
                    vote,
                },
            );
        }
    }

    /// A client request arrives: `Node::put` / `Node::get_with_path`.
    fn on_client_request(
        &self,
        id: Id,
        st: &mut ServerState,
        client: Id,
        seq: u8,
        kind: Kind,
        o: &mut Out<Node>,
    ) {
        let key = (client, seq);
        if st.ops.contains_key(&key) || st.done.contains(&key) {
            return; // a duplicate of a request in hand
        }
        if st.rejoin.is_some() {
            // `Node::serving_by`: the request waits until the server serves
            // (the message stays in the network, deliverable later).
            return;
        }
        // Step 1 of both: a decided register is immutable (invariant 5).
        if let Some(chosen) = st.acceptor.decided_value() {
            let ret = match kind {
                Kind::Put(own) => same_or_conflict(chosen.value, own),
                Kind::Get => RegRet::Got(Some(chosen.value)),
            };
            st.done.insert(key);
            let about = Some(chosen.value);
            o.send(client, Msg::Done { seq, ret, about });
            return;
        }
        let limits = self.limits();
        let coord = match kind {
            Kind::Get => Coordinator::get(members(), limits),
            // `Node::put_value`: with `fast`, as when every peer answered
            // lately, the PUT tries the fast ballot first.
            Kind::Put(own) => Coordinator::put(members(), own, self.fast, limits),
        };
        st.ops.insert(key, Coord { kind, coord });
        o.set_timer(Timer::Op(client, seq), model_timeout());
        self.drive(id, st, key, o);
    }

    /// The coordinator's bounds in the model: no deadline and no waits (the
    /// model's timers fire whenever the search says), and at most
    /// [`Config::max_rounds`] classic rounds.
    fn limits(&self) -> Limits {
        Limits {
            max_rounds: Some(u32::from(self.max_rounds)),
            fault: match self.mutation {
                Mutation::FastMajority => Fault::FastMajority,
                _ => Fault::None,
            },
            ..Limits::unbounded()
        }
    }

    /// Executes the coordinator's effects until it waits or is done, as
    /// `Node::execute` does: broadcasts with a [`Tag`] naming the call,
    /// announcements as untagged `Decide`s, ballots from the clock with the
    /// reservation saved first (invariant 2), and no pause (time is
    /// abstract here: a pause is just a later step).
    fn drive(&self, id: Id, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
        loop {
            let coord = &mut st.ops.get_mut(&key).expect("op in hand").coord;
            match coord.poll() {
                Effect::Send {
                    call,
                    request,
                    fence,
                } => {
                    let tag = Tag {
                        client: key.0,
                        seq: key.1,
                        call,
                        incarnation: st.incarnation,
                    };
                    broadcast(Some(tag), request, fence, o);
                }
                Effect::Announce { ballot, value } => {
                    broadcast(None, Request::Decide { ballot, value }, Fence::default(), o)
                }
                Effect::Count(_) => {}
                Effect::NeedPause { .. } => coord.handle_pause(0, 0),
                Effect::NeedBallot { above } => {
                    let next = st.clock.next(above);
                    if let Some(mark) = next.reserve {
                        // Invariant 2: the reservation is durable before the ballot is used.
                        st.mark = mark;
                        self.save(st, o);
                    }
                    debug_assert_eq!(next.ballot.node, node_id(id));
                    let coord = &mut st.ops.get_mut(&key).expect("op in hand").coord;
                    coord.handle_ballot(next.ballot);
                }
                Effect::Wait { .. } => return,
                Effect::Done(outcome) => {
                    let kind = &st.ops[&key].kind;
                    let ret = match (outcome, kind) {
                        // As `Node::put_value`: the request whose own value
                        // was chosen created it (the node tells values apart
                        // by a per-request writer nonce; here every PUT has
                        // its own value).
                        (Outcome::Chosen { value, .. }, Kind::Put(own)) if value == *own => {
                            Some(RegRet::Created)
                        }
                        (Outcome::Chosen { value, .. }, Kind::Put(own)) => {
                            Some(same_or_conflict(value, *own))
                        }
                        (Outcome::Chosen { value, .. }, Kind::Get) => {
                            Some(RegRet::Got(Some(value)))
                        }
                        (Outcome::Empty { .. }, Kind::Get) => Some(RegRet::Got(None)),
                        (Outcome::Empty { .. }, Kind::Put(_)) => {
                            panic!("a round with a value never ends empty")
                        }
                        (Outcome::Unavailable, _) => None,
                    };
                    self.finish(st, key, ret, o);
                    return;
                }
            }
        }
    }

    /// Answers the client (`None`: 503) and forgets the operation.
    fn finish(&self, st: &mut ServerState, key: (Id, u8), ret: Option<RegRet>, o: &mut Out<Node>) {
        let about = match (&ret, st.ops.get(&key).map(|c| &c.kind)) {
            (Some(RegRet::Created | RegRet::AlreadyChosen), Some(Kind::Put(own))) => Some(*own),
            (Some(RegRet::Conflict(v) | RegRet::Got(Some(v))), _) => Some(*v),
            _ => None,
        };
        st.ops.remove(&key);
        st.done.insert(key);
        o.cancel_timer(Timer::Op(key.0, key.1));
        let (client, seq) = key;
        match ret {
            Some(ret) => o.send(client, Msg::Done { seq, ret, about }),
            None => o.send(client, Msg::Unavailable { seq }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_peer_reply(
        &self,
        id: Id,
        st: &mut ServerState,
        src: Id,
        tag: Tag,
        reply: Reply<Value>,
        inc: Incarnation,
        o: &mut Out<Node>,
    ) {
        if tag.seq == REBUILD {
            if self.rejoin_tag_is_current(id, st, &tag) {
                self.on_rebuild_reply(id, st, node_id(src), reply, o);
            }
            return;
        }
        let key = (tag.client, tag.seq);
        if st.incarnation != tag.incarnation {
            return; // an answer to an earlier process: its connection died
        }
        let Some(op) = st.ops.get_mut(&key) else {
            return;
        };
        let reply = match reply {
            Reply::Vote {
                accepted: Some(Accepted { value, .. }),
            } if self.mutation == Mutation::ValueOnlyRead => {
                // Broken: every vote for a value looks like the same
                // ballot, so equal values in different ballots agree.
                Reply::Vote {
                    accepted: Some(Accepted {
                        ballot: Ballot::new(u64::from(u32::from(value)), 0),
                        value,
                    }),
                }
            }
            reply => reply,
        };
        // The coordinator ignores answers to an earlier call (their channel
        // is gone in the node).
        op.coord.handle_reply(0, tag.call, node_id(src), reply, inc);
        self.drive(id, st, key, o);
    }

    fn on_op_timeout(&self, id: Id, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
        let Some(op) = st.ops.get_mut(&key) else {
            return;
        };
        // A timeout that would only answer 503 is left out: a coordinator
        // that gives up is, for every property checked, the same as one that
        // waits forever (a 503 records nothing and changes no acceptor), and
        // waiting forever is already a behavior of the model. Keeping the
        // timer and changing nothing makes the step a no-op for the checker.
        let mut trial = op.coord.clone();
        time_out(&mut trial);
        if only_gives_up(&mut trial) {
            o.set_timer(Timer::Op(key.0, key.1), model_timeout());
            return;
        }
        time_out(&mut op.coord);
        self.drive(id, st, key, o);
        if st.ops.contains_key(&key) {
            o.set_timer(Timer::Op(key.0, key.1), model_timeout());
        }
    }

    fn restart(&self, id: Id, storage: &Option<Durable>, o: &mut Out<Node>) -> ServerState {
        let blank = Durable {
            acceptor: AcceptorState::default(),
            mark: 0,
            incarnation: 0,
            wipes: 0,
            me: FIRST_INCARNATION,
            known: Known::default(),
            rebuilt: true,
        };
        let (d, incarnation) = match storage {
            Some(d) => (d.clone(), d.incarnation + 1),
            None => (blank, 0),
        };
        let from_zero = matches!(
            self.mutation,
            Mutation::ClockFromZero | Mutation::ClockFromZeroRepromise
        );
        let restored = if from_zero {
            0 // Broken: the durable mark is ignored.
        } else {
            d.mark
        };
        let mut st = ServerState {
            acceptor: d.acceptor,
            clock: BallotClock::restore(node_id(id), restored),
            mark: d.mark,
            incarnation,
            ops: BTreeMap::new(),
            done: BTreeSet::new(),
            unsaved: false,
            lazy: false,
            wipes: d.wipes,
            me: d.me,
            known: d.known,
            rejoin: None,
            rcall: 0,
        };
        if !d.rebuilt {
            // `Node::open` of an identity whose rebuild did not finish:
            // the rebuild starts over (`rejoin::rebuild`, step 1).
            self.start_rejoin(id, &mut st, o);
        }
        self.save(&mut st, o);
        if self.may_wipe(id, &st) {
            o.set_timer(Timer::Wipe, model_timeout());
        }
        st
    }

    fn may_wipe(&self, id: Id, st: &ServerState) -> bool {
        st.wipes < self.wipes && self.wipe_only.is_none_or(|w| w == usize::from(id))
    }

    /// The wipe fault: the process dies and its disk is replaced by a blank
    /// one; it restarts at once. With the rebuild (`Node::open` over a blank
    /// directory whose cluster exists) it is recovering; with
    /// [`Mutation::WipeWithoutRebuild`] it serves at once, as before.
    fn wipe(&self, id: Id, st: &mut ServerState, o: &mut Out<Node>) {
        for (client, seq) in st.ops.keys() {
            o.cancel_timer(Timer::Op(*client, *seq));
        }
        o.cancel_timer(Timer::Rebuild);
        o.cancel_timer(Timer::Flush);
        let mut blank = ServerState {
            acceptor: AcceptorState::default(),
            clock: BallotClock::restore(node_id(id), 0),
            mark: 0,
            incarnation: st.incarnation + 1,
            ops: BTreeMap::new(),
            done: BTreeSet::new(),
            unsaved: false,
            lazy: false,
            wipes: st.wipes + 1,
            me: FIRST_INCARNATION,
            known: Known::default(),
            rejoin: None,
            rcall: 0,
        };
        if self.mutation != Mutation::WipeWithoutRebuild {
            self.start_rejoin(id, &mut blank, o);
        }
        self.save(&mut blank, o);
        if self.may_wipe(id, &blank) {
            o.set_timer(Timer::Wipe, model_timeout());
        }
        *st = blank;
    }

    fn rebuild_tag(&self, id: Id, st: &ServerState) -> Tag {
        Tag {
            client: id,
            seq: REBUILD,
            call: st.rcall,
            incarnation: st.incarnation,
        }
    }

    fn rejoin_tag_is_current(&self, id: Id, st: &ServerState, tag: &Tag) -> bool {
        st.rejoin.is_some()
            && tag.client == id
            && tag.call == st.rcall
            && tag.incarnation == st.incarnation
    }

    /// How many of the others a rebuild reads the key through.
    fn rebuild_quorum(&self) -> usize {
        if self.mutation == Mutation::RebuildFromOne {
            1
        } else {
            quorum()
        }
    }

    /// Step 1: ask the others who this server is.
    fn start_rejoin(&self, id: Id, st: &mut ServerState, o: &mut Out<Node>) {
        st.rejoin = Some(Rejoin::Hello {
            yours: BTreeMap::new(),
        });
        st.rcall += 1;
        let tag = self.rebuild_tag(id, st);
        for m in others(id) {
            o.send(m, Msg::Hello { tag });
        }
    }

    /// A peer's side of the rebuild messages (`rejoin::handle_control`).
    fn on_control(&self, st: &mut ServerState, src: Id, msg: Msg, o: &mut Out<Node>) {
        let from = node_id(src);
        match msg {
            // Answered by every node; only serving ones count, so only
            // they answer here.
            Msg::Hello { tag } if st.rejoin.is_none() => {
                let yours = st.known.of(from);
                o.send(src, Msg::HelloReply { tag, yours });
            }
            Msg::FenceReq { tag, inc } => {
                if st.known.record(from, inc) {
                    self.save(st, o);
                }
                let recorded = st.known.of(from);
                o.send(src, Msg::Fenced { tag, recorded });
            }
            Msg::Scan { tag } if st.rejoin.is_none() => {
                let has = st.acceptor != AcceptorState::default();
                o.send(src, Msg::Keys { tag, has });
            }
            _ => {}
        }
    }

    /// The rebuilding server's side of steps 1 to 3a.
    fn on_control_reply(&self, id: Id, st: &mut ServerState, src: Id, msg: Msg, o: &mut Out<Node>) {
        let from = node_id(src);
        let tag = match &msg {
            Msg::HelloReply { tag, .. } | Msg::Fenced { tag, .. } | Msg::Keys { tag, .. } => *tag,
            _ => return,
        };
        if !self.rejoin_tag_is_current(id, st, &tag) {
            return;
        }
        let rejoin = st.rejoin.as_mut().expect("rebuilding");
        match (rejoin, msg) {
            (Rejoin::Hello { yours }, Msg::HelloReply { yours: y, .. }) => {
                yours.insert(from, y);
                if yours.len() >= quorum() {
                    let newest = yours.values().copied().max().unwrap_or(FIRST_INCARNATION);
                    let inc = st.me.max(newest) + 1;
                    st.me = inc;
                    st.rejoin = Some(Rejoin::Fencing {
                        inc,
                        fenced: BTreeSet::new(),
                    });
                    st.rcall += 1;
                    self.save(st, o);
                    let tag = self.rebuild_tag(id, st);
                    for m in others(id) {
                        o.send(m, Msg::FenceReq { tag, inc });
                    }
                }
            }
            (Rejoin::Fencing { inc, fenced }, Msg::Fenced { recorded, .. }) => {
                if recorded > *inc {
                    // A newer incarnation of this server exists: start over.
                    self.start_rejoin(id, st, o);
                    return;
                }
                if recorded == *inc {
                    fenced.insert(from);
                }
                if fenced.len() >= quorum() {
                    st.rejoin = Some(Rejoin::Scanning {
                        listed: BTreeMap::new(),
                    });
                    st.rcall += 1;
                    let tag = self.rebuild_tag(id, st);
                    for m in others(id) {
                        o.send(m, Msg::Scan { tag });
                    }
                }
            }
            (Rejoin::Scanning { listed }, Msg::Keys { has, .. }) => {
                listed.insert(from, has);
                if listed.len() >= self.rebuild_quorum() {
                    if listed.values().any(|h| *h) {
                        self.start_attempt(id, st, 0, 0, o);
                    } else {
                        self.serve(st, o);
                    }
                }
            }
            _ => {}
        }
    }

    /// Step 3b, `rejoin::rebuild_key`: phase 1 at the others with a fresh
    /// ballot above every rejection seen; stuck after the attempts run out.
    fn start_attempt(
        &self,
        id: Id,
        st: &mut ServerState,
        seen_round: u64,
        attempts: u8,
        o: &mut Out<Node>,
    ) {
        if attempts >= self.rebuild_attempts {
            return;
        }
        let next = st.clock.next(seen_round);
        if let Some(mark) = next.reserve {
            st.mark = mark;
        }
        st.rcall += 1;
        st.rejoin = Some(Rejoin::Rebuilding {
            ballot: next.ballot,
            promises: BTreeMap::new(),
            failed: BTreeSet::new(),
            seen_round,
            attempts: attempts + 1,
        });
        self.save(st, o);
        let tag = self.rebuild_tag(id, st);
        for m in others(id) {
            o.send(
                m,
                Msg::Peer {
                    tag: Some(tag),
                    request: Request::Prepare {
                        ballot: next.ballot,
                    },
                    fence: Fence::default(),
                },
            );
        }
        o.set_timer(Timer::Rebuild, model_timeout());
    }

    fn on_rebuild_reply(
        &self,
        id: Id,
        st: &mut ServerState,
        from: NodeId,
        reply: Reply<Value>,
        o: &mut Out<Node>,
    ) {
        let need = self.rebuild_quorum();
        let Some(Rejoin::Rebuilding {
            ballot,
            promises,
            failed,
            seen_round,
            attempts,
        }) = st.rejoin.as_mut()
        else {
            return;
        };
        match reply {
            Reply::Promise {
                ballot: b,
                accepted,
            } if b == *ballot => {
                promises.insert(from, accepted);
                if promises.len() >= need {
                    st.acceptor = AcceptorState {
                        promised: *ballot,
                        accepted: rebuilt_vote(promises, &members()),
                        decided: false,
                    };
                    self.serve(st, o);
                }
            }
            Reply::Decided { ballot, value } => {
                st.acceptor = AcceptorState {
                    promised: ballot,
                    accepted: Some(Accepted { ballot, value }),
                    decided: true,
                };
                self.serve(st, o);
            }
            reply => {
                if let Reply::Rejected { promised, .. } = reply {
                    *seen_round = (*seen_round).max(promised.round);
                }
                failed.insert(from);
                if SERVERS - 1 - failed.len() < need {
                    let (seen, attempts) = (*seen_round, *attempts);
                    self.start_attempt(id, st, seen, attempts, o);
                }
            }
        }
    }

    fn on_rebuild_timeout(&self, id: Id, st: &mut ServerState, o: &mut Out<Node>) {
        if let Some(Rejoin::Rebuilding {
            seen_round,
            attempts,
            ..
        }) = st.rejoin
        {
            self.start_attempt(id, st, seen_round, attempts, o);
        }
    }

    /// Step 4: the rebuilt state (installed by the caller) and the
    /// finished rebuild are durable together; the server votes again.
    fn serve(&self, st: &mut ServerState, o: &mut Out<Node>) {
        st.rejoin = None;
        o.cancel_timer(Timer::Rebuild);
        self.save(st, o);
    }
}

/// An operation's timer fires: the coordinator's own timer when it set one
/// (a straggler wait), else every call still in flight fails, as a
/// transport timeout does in the node (an unreachable member).
fn time_out(coord: &mut Coordinator<Value>) {
    match coord.timer() {
        Some(at) => coord.handle_timeout(at),
        None => {
            let call = coord.call();
            for m in members().iter() {
                coord.handle_unreachable(0, call, m);
            }
        }
    }
}

/// Whether what the coordinator does next is only to answer 503.
fn only_gives_up(coord: &mut Coordinator<Value>) -> bool {
    loop {
        match coord.poll() {
            Effect::Done(Outcome::Unavailable) => return true,
            Effect::Count(_) => {}
            _ => return false,
        }
    }
}

/// The table an acceptor checks a fence against (`Node::acceptor_step`):
/// the incarnations recorded for the others, and its own.
fn fence_table(cfg: &Config, me_id: NodeId, me: Incarnation, known: &Known) -> Known {
    let mut table = known.clone();
    if cfg.mutation != Mutation::SelfNotFenced {
        table.record(me_id, me);
    }
    table
}

/// Applies `f` to a copy of the server state and keeps the copy only when
/// it differs, so no-op deliveries stay no-ops for the checker.
fn with_server(state: &mut Cow<NodeState>, f: impl FnOnce(&mut ServerState)) {
    let NodeState::Server(before) = state.as_ref() else {
        return;
    };
    let mut after = before.clone();
    f(&mut after);
    if after != *before {
        *state = Cow::Owned(NodeState::Server(after));
    }
}

impl ClientCfg {
    fn send_op(&self, seq: u8, o: &mut Out<Node>) {
        if let Some((server, op)) = self.script.get(seq as usize) {
            let msg = match op {
                RegOp::Put(value) => Msg::Put { seq, value: *value },
                RegOp::Get => Msg::Get { seq },
            };
            o.send(Id::from(*server), msg);
        }
    }
}

impl Actor for Node {
    type Msg = Msg;
    type State = NodeState;
    type Timer = Timer;
    type Random = ();
    type Storage = Durable;

    fn on_start(&self, id: Id, storage: &Option<Durable>, o: &mut Out<Self>) -> NodeState {
        match self {
            Node::Server(cfg) => NodeState::Server(cfg.restart(id, storage, o)),
            Node::Client(cfg) => {
                cfg.send_op(0, o);
                NodeState::Client(ClientState {
                    seq: 0,
                    gave_up: false,
                })
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match self {
            Node::Server(cfg) => with_server(state, |st| match msg {
                Msg::Put { seq, value } => {
                    cfg.on_client_request(id, st, src, seq, Kind::Put(value), o)
                }
                Msg::Get { seq } => cfg.on_client_request(id, st, src, seq, Kind::Get, o),
                Msg::Peer {
                    tag,
                    request,
                    fence,
                } => cfg.on_peer_request(id, st, src, tag, request, fence, o),
                Msg::PeerReply {
                    tag, reply, inc, ..
                } => cfg.on_peer_reply(id, st, src, tag, reply, inc, o),
                msg @ (Msg::Hello { .. } | Msg::FenceReq { .. } | Msg::Scan { .. }) => {
                    cfg.on_control(st, src, msg, o)
                }
                msg @ (Msg::HelloReply { .. } | Msg::Fenced { .. } | Msg::Keys { .. }) => {
                    cfg.on_control_reply(id, st, src, msg, o)
                }
                Msg::Done { .. } | Msg::Unavailable { .. } => {}
            }),
            Node::Client(cfg) => {
                let NodeState::Client(cs) = state.as_ref() else {
                    return;
                };
                if cs.gave_up || usize::from(cs.seq) >= cfg.script.len() {
                    return;
                }
                match msg {
                    Msg::Done { seq, .. } if seq == cs.seq => {
                        let next = seq + 1;
                        *state = Cow::Owned(NodeState::Client(ClientState {
                            seq: next,
                            gave_up: false,
                        }));
                        cfg.send_op(next, o);
                    }
                    Msg::Unavailable { seq } if seq == cs.seq => {
                        *state = Cow::Owned(NodeState::Client(ClientState { seq, gave_up: true }));
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<NodeState>, timer: &Timer, o: &mut Out<Self>) {
        let Node::Server(cfg) = self else {
            return;
        };
        with_server(state, |st| match timer {
            Timer::Op(client, seq) => cfg.on_op_timeout(id, st, (*client, *seq), o),
            Timer::Flush => {
                if st.unsaved {
                    cfg.save(st, o);
                }
            }
            Timer::Wipe => cfg.wipe(id, st, o),
            Timer::Rebuild => cfg.on_rebuild_timeout(id, st, o),
        });
    }
}

// ---------------------------------------------------------------------------
// History (auxiliary state) and properties.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct History {
    /// Client invocations and returns.
    lin: LinearizabilityTester<Id, Register>,
    /// Values some client PUT (validity).
    puts: BTreeSet<Value>,
    /// Every vote an acceptor announced: (acceptor, ballot, value).
    votes: BTreeSet<(NodeId, Accepted<Value>)>,
    /// Derived from `votes`: values a majority accepted in one ballot.
    chosen: BTreeSet<Value>,
    /// Derived from `lin`: whether the history is linearizable.
    linearizable: bool,
    /// Derived from `lin`: every answer a client received.
    returns: BTreeSet<RegRet>,
    /// A server answered a client about a value that was not chosen.
    unchosen_answer: bool,
    /// The broadcast that used each ballot (invariant 2).
    ballots: BTreeMap<Ballot, Tag>,
    /// Two broadcasts started rounds with the same ballot.
    ballot_reused: bool,
    /// The value each classic ballot's accepts carried.
    accepts: BTreeMap<Ballot, Value>,
    /// Accepts of one classic ballot carried two values.
    ballot_split: bool,
    /// Servers (a bit each) that recorded an announced decide, lazily.
    lazily_decided: u8,
}

type State = ActorModelState<Node, History>;
type PaxosModel = ActorModel<Node, Config, History>;

fn record_out(_: &Config, h: &History, env: Envelope<&Msg>) -> Option<History> {
    let client = usize::from(env.src) >= SERVERS;
    match env.msg {
        Msg::Put { value, .. } if client => {
            let mut h = h.clone();
            h.linearizable = h.linearizable && h.lin.on_invoke(env.src, RegOp::Put(*value)).is_ok();
            h.puts.insert(*value);
            Some(h)
        }
        Msg::Get { .. } if client => {
            let mut h = h.clone();
            h.linearizable = h.linearizable && h.lin.on_invoke(env.src, RegOp::Get).is_ok();
            Some(h)
        }
        Msg::Done { about: Some(v), .. } if !h.unchosen_answer && !h.chosen.contains(v) => {
            let mut h = h.clone();
            h.unchosen_answer = true;
            Some(h)
        }
        Msg::Peer {
            request: Request::Accept { ballot, value },
            ..
        } if *ballot != Ballot::FAST => match h.accepts.get(ballot) {
            Some(v) if v == value => None,
            Some(_) if h.ballot_split => None,
            Some(_) => {
                let mut h = h.clone();
                h.ballot_split = true;
                Some(h)
            }
            None => {
                let mut h = h.clone();
                h.accepts.insert(*ballot, *value);
                Some(h)
            }
        },
        Msg::Peer {
            tag: Some(tag),
            request: Request::Prepare { ballot },
            ..
        } => match h.ballots.get(ballot) {
            Some(first) if first == tag => None,
            Some(_) => {
                let mut h = h.clone();
                h.ballot_reused = true;
                Some(h)
            }
            None => {
                let mut h = h.clone();
                h.ballots.insert(*ballot, *tag);
                Some(h)
            }
        },
        Msg::PeerReply {
            vote: Some(vote), ..
        } => {
            let entry = (node_id(env.src), vote.clone());
            if h.votes.contains(&entry) {
                return None;
            }
            let mut h = h.clone();
            h.votes.insert(entry);
            h.chosen = chosen(&h.votes);
            Some(h)
        }
        _ => None,
    }
}

/// Called only for deliveries that changed the receiver, so a client's
/// return is recorded once, for the operation in flight.
fn record_in(cfg: &Config, h: &History, env: Envelope<&Msg>) -> Option<History> {
    match env.msg {
        Msg::Peer {
            tag: None,
            request: Request::Decide { .. },
            ..
        } if cfg.track_lazy && h.lazily_decided & (1 << usize::from(env.dst)) == 0 => {
            let mut h = h.clone();
            h.lazily_decided |= 1 << usize::from(env.dst);
            Some(h)
        }
        Msg::Done { ret, .. } if usize::from(env.dst) >= SERVERS => {
            let mut h = h.clone();
            let _ = h.lin.on_return(env.dst, ret.clone());
            h.linearizable = h.lin.serialized_history().is_some();
            h.returns.insert(ret.clone());
            Some(h)
        }
        _ => None,
    }
}

/// Whether every chosen value survives in what the servers saved, so that
/// any crash and restart can still find it (durability, guarantee 3): for
/// the lowest ballot `b` in which `v` was chosen, every majority of the
/// saved acceptor states holds a vote at `b` or above, and every saved vote
/// at `b` or above is for `v` (Paxos Made Simple's P2c, on disk). A server
/// whose rebuild has not finished answers no phase 1 and holds nothing, so
/// a majority here is one of the other servers: the value must be on all
/// but fewer than a majority of them.
fn chosen_is_durable(state: &State) -> bool {
    let quorum = members().quorum();
    let mut count: BTreeMap<&Accepted<Value>, usize> = BTreeMap::new();
    for (_, vote) in &state.history.votes {
        *count.entry(vote).or_default() += 1;
    }
    let mut lowest: BTreeMap<Value, Ballot> = BTreeMap::new();
    for (vote, n) in count {
        if n >= votes_to_choose(vote.ballot) {
            let b = lowest.entry(vote.value).or_insert(vote.ballot);
            *b = (*b).min(vote.ballot);
        }
    }
    let disks: Vec<&Durable> = state
        .actor_storages
        .iter()
        .take(SERVERS)
        .map(|d| d.as_ref().expect("a server saves at start"))
        .collect();
    lowest.iter().all(|(value, ballot)| {
        let at_or_above = |d: &&&Durable| {
            d.acceptor
                .accepted
                .as_ref()
                .is_some_and(|a| a.ballot >= *ballot)
        };
        // A server that rebuilds after a wipe answers no phase 1, so only
        // the others must leave no majority without the value.
        let lacking = disks
            .iter()
            .filter(|d| d.rebuilt)
            .filter(|d| !at_or_above(d))
            .count();
        let all_for_it = disks
            .iter()
            .filter(at_or_above)
            .all(|d| d.acceptor.accepted.as_ref().map(|a| a.value) == Some(*value));
        lacking < quorum && all_for_it
    })
}

/// How many votes for one (ballot, value) choose it: a majority, or in the
/// fast ballot, which may carry several values, every member.
fn votes_to_choose(ballot: Ballot) -> usize {
    if ballot == Ballot::FAST {
        SERVERS
    } else {
        members().quorum()
    }
}

/// Values chosen: a majority of acceptors voted for them in one ballot, or
/// every acceptor in the fast ballot (invariant 4's definition, over every
/// vote ever cast).
fn chosen(votes: &BTreeSet<(NodeId, Accepted<Value>)>) -> BTreeSet<Value> {
    let mut count: BTreeMap<&Accepted<Value>, usize> = BTreeMap::new();
    for (_, vote) in votes {
        *count.entry(vote).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(vote, n)| *n >= votes_to_choose(vote.ballot))
        .map(|(vote, _)| vote.value)
        .collect()
}

/// Values some acceptor recorded as decided, in memory or on disk.
fn decided(state: &State) -> BTreeSet<Value> {
    let in_memory = state.actor_states.iter().filter_map(|s| match &**s {
        NodeState::Server(st) => st.acceptor.decided_value().map(|a| a.value),
        NodeState::Client(_) | NodeState::Down => None,
    });
    let on_disk = state
        .actor_storages
        .iter()
        .flatten()
        .filter_map(|d| d.acceptor.decided_value().map(|a| a.value));
    in_memory.chain(on_disk).collect()
}

/// The actor model, plus garbage collection of messages that can never
/// change anything again, so that states differing only in such messages
/// are one state. Only the adapter's own routing decides what is dead
/// (never the core's behavior), so the collection does not hide core bugs:
/// - a peer reply to a coordinator that is down for good, restarted since
///   the broadcast (a later incarnation), or no longer waits for that
///   broadcast (the operation finished, or moved to a later broadcast);
/// - a client request to a server that already took it and cannot restart;
/// - an answer to a client that no longer waits for it;
/// - any message to a server that is down for good;
/// - a `Decide` announcement to an acceptor that durably knows the value.
///
/// It also forgets stateright's record of the last delivered message, which
/// only distinguishes otherwise equal states.
struct Checked {
    inner: PaxosModel,
    /// Properties left out, to see what a broken variant does to the others
    /// (a search stops at the first property that fails).
    skip: &'static [&'static str],
}

/// Whether a server that is up now may ever restart: restarts are bounded
/// in total, and a server that is down holds one already.
fn can_restart(cfg: &Config, state: &State) -> bool {
    let used: u32 = state
        .actor_storages
        .iter()
        .flatten()
        .map(Durable::restarts)
        .sum();
    let down = state.crashed.iter().filter(|c| **c).count() as u32;
    (used + down < u32::from(cfg.max_restarts)) || can_wipe(cfg, state)
}

/// Whether a wipe may still happen (to any server): a wipe sets a disk
/// back to blank, so nothing refused now is refused forever.
fn can_wipe(cfg: &Config, state: &State) -> bool {
    let used: u32 = state
        .actor_storages
        .iter()
        .flatten()
        .map(|d| u32::from(d.wipes))
        .sum();
    used < u32::from(cfg.wipes)
}

/// No reply to this broadcast will ever be taken in by its coordinator.
fn reply_is_dead(state: &State, coordinator: Id, tag: &Tag) -> bool {
    match &*state.actor_states[usize::from(coordinator)] {
        NodeState::Server(st) if tag.seq == REBUILD => {
            state.crashed[usize::from(coordinator)]
                || tag.incarnation != st.incarnation
                || st.rejoin.is_none()
                || st.rcall != tag.call
        }
        NodeState::Server(st) => {
            state.crashed[usize::from(coordinator)]
                || tag.incarnation != st.incarnation
                || st
                    .ops
                    .get(&(tag.client, tag.seq))
                    .is_none_or(|c| c.coord.call() != tag.call)
        }
        NodeState::Down | NodeState::Client(_) => true,
    }
}

/// A request whose answer nobody takes is dead once it can no longer change
/// the acceptor: judged on the durable state, which only moves up (promise
/// grows, decided sticks), so what is refused now is refused forever. The
/// real core confirms the request changes nothing (`Step::Reply`).
fn request_is_spent(
    cfg: &Config,
    dst: Id,
    disk: &Durable,
    request: &Request<Value>,
    fence: &Fence,
) -> bool {
    let durable = &disk.acceptor;
    // The recorded incarnations only grow (without a wipe).
    let fenced = matches!(request, Request::Accept { .. })
        && cfg.mutation != Mutation::NoFence
        && fence_table(cfg, node_id(dst), disk.me, &disk.known)
            .admits(fence)
            .is_err();
    if fenced {
        return true;
    }
    let refused_forever = match request {
        _ if durable.decided => true,
        Request::Read => true,
        Request::Prepare { ballot } => {
            *ballot < durable.promised
                || (*ballot == durable.promised && cfg.mutation != Mutation::ClockFromZeroRepromise)
        }
        Request::Accept { ballot, .. } => {
            *ballot < durable.promised && cfg.mutation != Mutation::AcceptBelowPromise
        }
        Request::Decide { .. } => false,
    };
    refused_forever && matches!(acceptor::handle(durable, request.clone()), Step::Reply(_))
}

fn is_dead(cfg: &Config, state: &State, env: &Envelope<Msg>) -> bool {
    let dst = usize::from(env.dst);
    if let NodeState::Client(cs) = &*state.actor_states[dst] {
        return match &env.msg {
            Msg::Done { seq, .. } | Msg::Unavailable { seq } => *seq != cs.seq || cs.gave_up,
            _ => true,
        };
    }
    let disk = state.actor_storages[dst]
        .as_ref()
        .expect("a server saves at start");
    let wipe_ahead = can_wipe(cfg, state);
    match &env.msg {
        Msg::PeerReply { tag, .. }
        | Msg::HelloReply { tag, .. }
        | Msg::Fenced { tag, .. }
        | Msg::Keys { tag, .. } => reply_is_dead(state, env.dst, tag),
        Msg::Hello { tag } | Msg::Scan { tag } => reply_is_dead(state, env.src, tag),
        Msg::FenceReq { tag, inc } => {
            reply_is_dead(state, env.src, tag)
                && !wipe_ahead
                && disk.known.of(node_id(env.src)) >= *inc
        }
        Msg::Peer {
            tag,
            request,
            fence,
        } => {
            let answer_dead = tag
                .as_ref()
                .is_none_or(|t| reply_is_dead(state, env.src, t));
            answer_dead && !wipe_ahead && request_is_spent(cfg, env.dst, disk, request, fence)
        }
        Msg::Put { seq, .. } | Msg::Get { seq } => match &*state.actor_states[dst] {
            // Taken already, and no restart can make the server forget it.
            NodeState::Server(st)
                if !state.crashed[dst] && (cfg.client_at_most_once || !can_restart(cfg, state)) =>
            {
                let key = (env.src, *seq);
                st.ops.contains_key(&key) || st.done.contains(&key)
            }
            _ => false,
        },
        Msg::Done { .. } | Msg::Unavailable { .. } => true,
    }
}

/// Whether a server may still crash and come back (a crash without a
/// restart loses its memory, but nothing reads its disk again).
fn restart_ahead(cfg: &Config, max_crashes: usize, state: &State) -> bool {
    max_crashes > 0 && can_restart(cfg, state)
}

fn collect_garbage(cfg: &Config, max_crashes: usize, mut state: State) -> State {
    // Once no server can restart (nor be wiped), no disk is read again but
    // by the properties: a lazily recorded decided flag is then as good as
    // saved, so save it, and states that differ only in when it was saved
    // are one state (crash-free searches stay the size they were before
    // decides were lazy). What a crash could lose is searched before the
    // last crash is used.
    if !restart_ahead(cfg, max_crashes, &state) {
        for i in 0..SERVERS {
            let NodeState::Server(st) = &*state.actor_states[i] else {
                continue;
            };
            if !st.lazy || st.unsaved || state.crashed[i] {
                continue;
            }
            let mut st = st.clone();
            st.lazy = false;
            let disk = state.actor_storages[i]
                .as_mut()
                .expect("a server saves at start");
            disk.acceptor = st.acceptor.clone();
            state.actor_states[i] = Arc::new(NodeState::Server(st));
        }
    }
    let dead: Vec<Envelope<Msg>> = state
        .network
        .iter_all()
        .map(|env| env.to_cloned_msg())
        .filter(|env| is_dead(cfg, &state, env))
        .collect();
    if let Network::UnorderedDuplicating(set, last) = &mut state.network {
        *last = None;
        for env in &dead {
            set.remove(env);
        }
    }
    // A crashed server's memory is gone: on recovery it starts from storage.
    for (i, crashed) in state.crashed.iter().enumerate() {
        if *crashed && matches!(&*state.actor_states[i], NodeState::Server(_)) {
            state.actor_states[i] = Arc::new(NodeState::Down);
        }
    }
    state
}

impl Model for Checked {
    type State = State;
    type Action = ActorModelAction<Msg, Timer, ()>;

    fn init_states(&self) -> Vec<State> {
        let cfg = &self.inner.cfg;
        self.inner
            .init_states()
            .into_iter()
            .map(|s| collect_garbage(cfg, self.inner.max_crashes, s))
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Self::Action>) {
        self.inner.actions(state, actions)
    }

    fn next_state(&self, state: &State, action: Self::Action) -> Option<State> {
        let next = self.inner.next_state(state, action)?;
        Some(collect_garbage(
            &self.inner.cfg,
            self.inner.max_crashes,
            next,
        ))
    }

    fn format_action(&self, action: &Self::Action) -> String {
        self.inner.format_action(action)
    }

    fn within_boundary(&self, state: &State) -> bool {
        Model::within_boundary(&self.inner, state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            // docs/api.md guarantee 4, with durability (3) through crashes.
            Property::always("linearizable", |_, state: &State| {
                state.history.linearizable
            }),
            // Guarantee 1: at most one value chosen (or decided anywhere).
            Property::always("agreement", |_, state: &State| {
                let mut all = state.history.chosen.clone();
                all.extend(decided(state));
                all.len() <= 1
            }),
            // docs/api.md: "A GET never returns a value that is not chosen"; nor
            // does a PUT answer name one.
            Property::always("answers are chosen", |_, state: &State| {
                !state.history.unchosen_answer
            }),
            // Invariant 5: only a chosen value is ever recorded as decided.
            // Guarantee 3, on disk: a chosen value survives any crash.
            Property::always("chosen is durable", |_, state: &State| {
                chosen_is_durable(state)
            }),
            Property::always("decided is chosen", |_, state: &State| {
                decided(state).is_subset(&state.history.chosen)
            }),
            // Invariant 2: no ballot starts two rounds, even across restarts.
            Property::always("ballots unique", |_, state: &State| {
                !state.history.ballot_reused
            }),
            // One classic ballot carries one value (what phase 2's choice
            // and `rebuilt_vote` rely on), even across wipes.
            Property::always("one value per ballot", |_, state: &State| {
                !state.history.ballot_split
            }),
            // Guarantee 2: a chosen value is one some client PUT.
            Property::always("validity", |_, state: &State| {
                let mut all = state.history.chosen.clone();
                all.extend(decided(state));
                all.is_subset(&state.history.puts)
            }),
            // Not vacuous: values do get chosen, read and refused.
            Property::sometimes("value chosen", |_, state: &State| {
                !state.history.chosen.is_empty()
            }),
            Property::sometimes("get sees a value", |_, state: &State| {
                let returns = &state.history.returns;
                returns.iter().any(|r| matches!(r, RegRet::Got(Some(_))))
            }),
            Property::sometimes("put conflicts", |_, state: &State| {
                let returns = &state.history.returns;
                returns.iter().any(|r| matches!(r, RegRet::Conflict(_)))
            }),
            // Not vacuous: a crash does lose a lazily recorded decided flag
            // (a server that recorded an announced decide is up and
            // undecided again).
            Property::sometimes("decided flag lost", |_, state: &State| {
                (0..SERVERS).any(|i| {
                    state.history.lazily_decided & (1 << i) != 0
                        && !state.crashed[i]
                        && matches!(&*state.actor_states[i],
                            NodeState::Server(st) if !st.acceptor.decided)
                })
            }),
        ];
        properties.retain(|p| !self.skip.contains(&p.name));
        properties
    }
}

fn model(cfg: Config, clients: Vec<ClientCfg>, crashes: usize) -> Checked {
    let servers: Vec<Node> = (0..SERVERS).map(|_| Node::Server(cfg.clone())).collect();
    let clients = clients.into_iter().map(Node::Client);
    let inner = ActorModel::new(
        cfg,
        History {
            lin: LinearizabilityTester::new(Register::default()),
            puts: BTreeSet::new(),
            votes: BTreeSet::new(),
            chosen: BTreeSet::new(),
            linearizable: true,
            returns: BTreeSet::new(),
            unchosen_answer: false,
            ballots: BTreeMap::new(),
            ballot_reused: false,
            accepts: BTreeMap::new(),
            ballot_split: false,
            lazily_decided: 0,
        },
    )
    .actors(servers)
    .actors(clients)
    .init_network(Network::new_unordered_duplicating([]))
    .lossy_network(LossyNetwork::Yes)
    .max_crashes(crashes)
    .record_msg_out(record_out)
    .record_msg_in(record_in)
    .within_boundary(|cfg, state| {
        // Clients do not crash (a crashed client would only leave an
        // operation pending forever, which the spec already allows).
        let clients_up = state.crashed.iter().skip(SERVERS).all(|c| !c);
        // A server that crashes for good takes no further step, which a
        // server that is up but never scheduled covers too (with its memory
        // still counted by the properties): only crashes it can recover
        // from add behaviors. So a crash needs a restart left.
        let restarts: u32 = state
            .actor_storages
            .iter()
            .flatten()
            .map(Durable::restarts)
            .sum();
        let down = state.crashed.iter().filter(|c| **c).count() as u32;
        let restarts = restarts + down <= u32::from(cfg.max_restarts);
        let wipes: u32 = state
            .actor_storages
            .iter()
            .flatten()
            .map(|d| u32::from(d.wipes))
            .sum();
        clients_up && restarts && wipes <= u32::from(cfg.wipes)
    });
    Checked { inner, skip: &[] }
}

// ---------------------------------------------------------------------------
// Configurations and tests.
// ---------------------------------------------------------------------------

/// One configuration to check.
struct Scenario {
    name: &'static str,
    cfg: Config,
    /// Client `i` is actor `SERVERS + i`; each entry is (server index, op).
    clients: Vec<Vec<(usize, RegOp)>>,
    /// `ActorModel::max_crashes`.
    crashes: usize,
    /// Whether the network also loses messages (see the module docs: it adds
    /// states, never a behavior).
    lossy: bool,
    /// See [`Checked::skip`].
    skip: &'static [&'static str],
}

impl Scenario {
    fn new(name: &'static str, mutation: Mutation, max_rounds: u8) -> Self {
        Scenario {
            name,
            cfg: Config {
                mutation,
                max_rounds,
                client_at_most_once: true,
                max_restarts: 1,
                fast: false,
                wipes: 0,
                rebuild_attempts: 2,
                wipe_only: None,
                track_lazy: false,
            },
            clients: Vec::new(),
            crashes: 0,
            lossy: false,
            skip: &[],
        }
    }

    fn client(mut self, script: Vec<(usize, RegOp)>) -> Self {
        self.clients.push(script);
        self
    }

    fn crashes(mut self, crashes: usize) -> Self {
        self.crashes = crashes;
        self
    }

    fn lossy(mut self) -> Self {
        self.lossy = true;
        self
    }

    fn fast(mut self) -> Self {
        self.cfg.fast = true;
        self
    }

    fn model(&self) -> Checked {
        let clients = self
            .clients
            .iter()
            .map(|script| ClientCfg {
                script: script.clone(),
            })
            .collect();
        let mut m = model(self.cfg.clone(), clients, self.crashes);
        if !self.lossy {
            m.inner.lossy_network = LossyNetwork::No;
        }
        m.skip = self.skip;
        m
    }
}

/// The `always` properties: docs/api.md guarantees 1 to 4 and invariants 2 and 5.
const SAFETY: [&str; 8] = [
    "linearizable",
    "agreement",
    "chosen is durable",
    "validity",
    "answers are chosen",
    "decided is chosen",
    "ballots unique",
    "one value per ballot",
];

type Action = ActorModelAction<Msg, Timer, ()>;

fn print_trace(name: &str, property: &str, path: &Path<State, Action>) {
    let actions = path.clone().into_actions();
    println!(
        "[{name}] counterexample for \"{property}\", {} steps:",
        actions.len()
    );
    for (i, action) in actions.iter().enumerate() {
        println!("  {i:>3}: {action:?}");
    }
    println!("  history: {:?}", path.last_state().history.lin);
}

/// Exhaustive search of `scenario` with the real core: no safety property
/// may have a counterexample, and a value must get chosen somewhere (so the
/// check is not vacuous). Depth-first: it visits the same states as a
/// breadth-first search but keeps only their fingerprints, so the biggest
/// configuration needs about 300 MB instead of several GB. Returns the
/// number of unique states.
fn check_safe(scenario: &Scenario) -> usize {
    check_safe_reaching(scenario, &[])
}

/// [`check_safe`], and each `sometimes` property of `must_reach` is reached.
fn check_safe_reaching(scenario: &Scenario, must_reach: &[&'static str]) -> usize {
    let start = Instant::now();
    let checker = scenario.model().checker().threads(2).spawn_dfs().join();
    let elapsed = start.elapsed();
    println!(
        "[{}] exhaustive DFS: {} unique states ({} generated), max depth {}, {:.1?}",
        scenario.name,
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        elapsed
    );
    assert!(checker.is_done(), "the search must run to completion");
    let mut failed = Vec::new();
    for p in SAFETY {
        if let Some(path) = checker.discovery(p) {
            print_trace(scenario.name, p, &path);
            failed.push(p);
        }
    }
    assert!(
        failed.is_empty(),
        "[{}] violated: {failed:?}",
        scenario.name
    );
    for p in [
        "value chosen",
        "get sees a value",
        "put conflicts",
        "decided flag lost",
    ] {
        match checker.discovery(p) {
            Some(path) => println!(
                "[{}] sometimes \"{p}\": reached in {} steps",
                scenario.name,
                path.into_actions().len()
            ),
            None => println!("[{}] sometimes \"{p}\": not reached", scenario.name),
        }
    }
    assert!(
        checker.discovery("value chosen").is_some(),
        "[{}] no value is ever chosen: the check would be vacuous",
        scenario.name
    );
    for p in must_reach {
        assert!(
            checker.discovery(p).is_some(),
            "[{}] \"{p}\" is never reached",
            scenario.name
        );
    }
    checker.unique_state_count()
}

/// BFS of a broken variant until the first safety counterexample (the
/// shortest one); panics when the whole space is searched without one.
/// Returns the violated properties and the counterexample length.
fn check_caught(scenario: &Scenario) -> (Vec<&'static str>, usize) {
    let start = Instant::now();
    let checker = scenario
        .model()
        .checker()
        .threads(2)
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let caught: Vec<&'static str> = SAFETY
        .into_iter()
        .filter(|p| !scenario.skip.contains(p))
        .filter(|p| checker.discovery(p).is_some())
        .collect();
    println!(
        "[{}] {} unique states, {:.1?}, caught: {caught:?}",
        scenario.name,
        checker.unique_state_count(),
        start.elapsed()
    );
    let first = caught.first().unwrap_or_else(|| {
        panic!(
            "[{}] the broken variant was NOT caught: the checker cannot fail here",
            scenario.name
        )
    });
    let path = checker.discovery(first).expect("just found");
    print_trace(scenario.name, first, &path);
    (caught, path.into_actions().len())
}

use RegOp::{Get, Put};

/// Two clients PUT different values through different servers at once: the
/// contention case (duelling proposers, preemption, recovery of the other's
/// vote), with `crashes` crashes.
fn contention(mutation: Mutation, crashes: usize) -> Scenario {
    Scenario::new("contention", mutation, 1)
        .client(vec![(0, Put('a'))])
        .client(vec![(1, Put('b'))])
        .crashes(crashes)
}

/// One client PUTs through server 0 and then GETs through server 1, while
/// any one server may crash and restart from what it saved: durability of
/// an answered PUT, and of promises, votes and the clock mark.
fn put_then_get_with_crash(mutation: Mutation, max_rounds: u8) -> Scenario {
    Scenario::new("put-then-get+crash", mutation, max_rounds)
        .client(vec![(0, Put('a')), (1, Get)])
        .crashes(1)
}

/// docs/api.md guarantees 1, 2 and 4 under two concurrent writers, exhaustively;
/// with one crash and restart anywhere too (guarantee 3) under
/// `PAXOS_KV_MODEL_DEEP=1` (5.0 M states, 2 to 3 minutes on 2 cores: too
/// long for CI next to everything else).
#[test]
fn real_core_is_safe_under_contention() {
    let mut scenario = contention(Mutation::None, usize::from(deep()));
    if deep() {
        scenario.name = "contention+crash";
    }
    check_safe(&scenario);
}

/// Guarantees 1 to 4 with one crash and restart anywhere, exhaustively;
/// the crash does lose lazily recorded decided flags (issue 13).
#[test]
fn real_core_is_safe_put_then_get_with_crash() {
    let mut scenario = put_then_get_with_crash(Mutation::None, 1);
    scenario.cfg.track_lazy = true;
    check_safe_reaching(&scenario, &["decided flag lost"]);
}

/// Whether `PAXOS_KV_MODEL_DEEP=1` asks for the bigger configurations.
fn deep() -> bool {
    std::env::var("PAXOS_KV_MODEL_DEEP").as_deref() == Ok("1")
}

/// A PUT concurrent with a GET through another server (the GET may recover
/// the PUT's vote, race its round, or report "not found"), exhaustively;
/// with one crash too under `PAXOS_KV_MODEL_DEEP=1` (1.5 M states, about a
/// minute more than CI should spend here).
#[test]
fn real_core_is_safe_put_and_concurrent_get() {
    let crashes = usize::from(deep());
    let name = if deep() { "put||get+crash" } else { "put||get" };
    check_safe(
        &Scenario::new(name, Mutation::None, 1)
            .client(vec![(0, Put('a'))])
            .client(vec![(1, Get)])
            .crashes(crashes),
    );
}

/// Seconds for a time-bounded search: `PAXOS_KV_MODEL_SECS`, else 30 (600
/// under `PAXOS_KV_MODEL_DEEP=1`).
fn bound_secs() -> u64 {
    std::env::var("PAXOS_KV_MODEL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if deep() { 600 } else { 30 })
}

/// The fast ballot (Fast Paxos round 0, the coordinator's fast attempt): two clients
/// PUT different values through different servers, each first in the fast
/// ballot, then (when that attempt cannot finish) in one classic round whose
/// phase 1 must recover a fast value that may have been chosen. Too big to
/// finish (over 15 minutes on 2 cores), so a depth-first search bounded in
/// time (see [`bound_secs`]; 3.2 M states in 60 s): a bug finder over what
/// it reaches, not a proof.
#[test]
fn real_core_is_safe_with_fast_ballot_contention_bounded() {
    let mut scenario = contention(Mutation::None, 0).fast();
    scenario.name = "fast-contention";
    check_bounded(&scenario, bound_secs());
}

/// A fast-ballot PUT racing a GET through another server: the GET may see
/// some of the fast votes and recover them, or report "not found".
/// Exhaustive under `PAXOS_KV_MODEL_DEEP=1` (13.4 M states, about 3.5
/// minutes on 2 cores); time-bounded in CI.
#[test]
fn real_core_is_safe_fast_put_and_concurrent_get() {
    let scenario = Scenario::new("fast-put||get", Mutation::None, 1)
        .fast()
        .client(vec![(0, Put('a'))])
        .client(vec![(1, Get)]);
    if deep() {
        check_safe(&scenario);
    } else {
        check_bounded(&scenario, bound_secs());
    }
}

/// A depth-first search of `scenario` for at most `secs` seconds: every
/// state it reaches must be safe (a bug finder, not a proof).
fn check_bounded(scenario: &Scenario, secs: u64) {
    let start = Instant::now();
    let checker = scenario
        .model()
        .checker()
        .threads(2)
        .timeout(std::time::Duration::from_secs(secs))
        .spawn_dfs()
        .join();
    println!(
        "[{}] DFS bounded by {secs} s: {} unique states ({} generated), max depth {}, {:.1?}, {}",
        scenario.name,
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed(),
        if start.elapsed().as_secs() < secs {
            "exhaustive"
        } else {
            "stopped by the time bound (not exhaustive)"
        }
    );
    for p in SAFETY {
        if let Some(path) = checker.discovery(p) {
            print_trace(scenario.name, p, &path);
            panic!("[{}] violated: {p}", scenario.name);
        }
    }
    assert!(
        checker.discovery("value chosen").is_some(),
        "[{}] no value chosen in what was explored",
        scenario.name
    );
}

/// A fast-ballot PUT, then a GET through another server, with one crash and
/// restart anywhere: a fast value is durable and read back (a quorum read
/// counts a fast value as chosen only with every member's vote).
#[test]
fn real_core_is_safe_fast_put_then_get_with_crash() {
    let mut scenario = put_then_get_with_crash(Mutation::None, 1).fast();
    scenario.name = "fast-put-then-get+crash";
    check_safe(&scenario);
}

/// Fast Paxos broken: an acceptor casts a second fast vote for another
/// value. Two values then collect every vote in the fast ballot, or a value
/// chosen in it is lost from disk.
#[test]
fn mutation_second_fast_vote_is_caught() {
    let mut scenario = contention(Mutation::SecondFastVote, 0).fast();
    scenario.name = "fast-contention";
    let (caught, steps) = check_caught(&scenario);
    println!("second fast vote: caught by {caught:?} in {steps} steps");
}

/// Invariant 1 broken: an acceptor accepts below its promise. A vote for
/// the first chosen value is overwritten on disk ("chosen is durable"
/// fails), and with that property left out, both writers get a majority
/// (agreement fails).
#[test]
fn mutation_accept_below_promise_is_caught() {
    let (caught, steps) = check_caught(&contention(Mutation::AcceptBelowPromise, 0));
    println!("accept below promise: caught by {caught:?} in {steps} steps");
    let mut scenario = contention(Mutation::AcceptBelowPromise, 0);
    scenario.skip = &["chosen is durable"];
    let (caught, steps) = check_caught(&scenario);
    assert!(caught.contains(&"agreement"), "{caught:?}");
    println!("accept below promise: caught by {caught:?} in {steps} steps");
}

/// Invariant 1 broken the other way: the reply leaves before the state is
/// durable. A vote counted toward a chosen value is then not on disk
/// ("chosen is durable" fails at once), and with that property left out the
/// clients see it: a crash in between forgets the acknowledged vote, so a
/// GET after an answered PUT finds nothing (guarantees 3 and 4).
#[test]
fn mutation_reply_before_save_is_caught() {
    let (caught, steps) = check_caught(&put_then_get_with_crash(Mutation::ReplyBeforeSave, 1));
    assert!(caught.contains(&"chosen is durable"), "{caught:?}");
    println!("reply before save: caught by {caught:?} in {steps} steps");
    let mut scenario = put_then_get_with_crash(Mutation::ReplyBeforeSave, 1);
    scenario.skip = &["chosen is durable"];
    let (caught, steps) = check_caught(&scenario);
    assert!(caught.contains(&"linearizable"), "{caught:?}");
    println!("reply before save, seen by clients: caught by {caught:?} in {steps} steps");
}

/// A quorum read comparing values alone: a minority vote for `a` in one
/// ballot plus another in a later ballot (the writer's second round) looks
/// like a majority, and the GET answers a value that is not chosen.
#[test]
fn mutation_value_only_read_is_caught() {
    let scenario = Scenario::new("value-only read", Mutation::ValueOnlyRead, 2)
        .client(vec![(0, Put('a'))])
        .client(vec![(1, Get)]);
    let (caught, steps) = check_caught(&scenario);
    println!("value-only read: caught by {caught:?} in {steps} steps");
}

/// The coordinator broken, and only the coordinator (issue 9: the model
/// checks the code that runs): a fast attempt whose straggler wait ends
/// with two of three fast accepts declares its value chosen, answers 201
/// and announces it. It is planted through [`Limits::fault`] in the
/// production [`Coordinator`]; this file has no copy of the fast attempt's
/// logic, so only driving the production code can catch it. The PUT's
/// answer names a value that is not chosen (a fast value needs every
/// member's vote), and the announcement makes acceptors record it decided.
#[test]
fn mutation_fast_majority_in_the_coordinator_is_caught() {
    let scenario = Scenario::new("fast-majority", Mutation::FastMajority, 1)
        .fast()
        .client(vec![(0, Put('a')), (1, Get)]);
    let (caught, steps) = check_caught(&scenario);
    assert!(caught.contains(&"answers are chosen"), "{caught:?}");
    println!("fast majority (coordinator): caught by {caught:?} in {steps} steps");
}

/// Two writers through the same server, which may crash between them: the
/// restarted server coordinates the second PUT with a fresh clock.
fn same_coordinator_with_crash(mutation: Mutation) -> Scenario {
    Scenario::new("same-coordinator+crash", mutation, 1)
        .client(vec![(0, Put('a'))])
        .client(vec![(0, Put('b'))])
        .crashes(1)
}

/// Invariant 2 broken: the clock restarts from zero and reuses a ballot.
/// The checker catches it through the "ballots unique" property only, and
/// that is all it can catch: with the real acceptor the reuse cannot break
/// agreement or linearizability. A reused ballot `n` needs a majority of
/// promises for `n` again, but the old round sent accepts for `n` only after
/// a majority promised `n`, and the two majorities share an acceptor that
/// refuses `Prepare(n)` since it is not strictly above its promise. So the
/// old `Accept(n, a)` and a new `Accept(n, b)` never both exist. (The
/// simulation found the same in 100k seeds; see issue 4.) The next test
/// shows the bug does break agreement once that strict rule is relaxed.
#[test]
fn mutation_clock_from_zero_is_caught_as_reused_ballot() {
    let (caught, steps) = check_caught(&same_coordinator_with_crash(Mutation::ClockFromZero));
    assert!(caught.contains(&"ballots unique"), "{caught:?}");
    println!("clock from zero: caught by {caught:?} in {steps} steps");
}

/// Invariant 2 broken with acceptors that promise an equal ballot again:
/// the restarted server's reused ballot gathers promises from acceptors that
/// promised it to the old incarnation, the new value is chosen, and the old
/// incarnation's `Accept` for the same ballot, still in the network, then
/// makes a second majority for the old value (agreement fails).
#[test]
fn mutation_clock_from_zero_with_repromise_breaks_agreement() {
    let mut scenario = same_coordinator_with_crash(Mutation::ClockFromZeroRepromise);
    // "one value per ballot" (two values sent in one ballot) is what breaks
    // agreement here; it is skipped so that the checker shows the breakage.
    scenario.skip = &[
        "ballots unique",
        "chosen is durable",
        "one value per ballot",
    ];
    let (caught, steps) = check_caught(&scenario);
    assert!(caught.contains(&"agreement"), "{caught:?}");
    println!("clock from zero + re-promise: caught by {caught:?} in {steps} steps");
}

/// Everything in a state but the network, hashed: what the properties and
/// the actors' future can depend on apart from messages in flight.
fn projection(state: &State) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state.actor_states.hash(&mut h);
    state.actor_storages.hash(&mut h);
    state.crashed.hash(&mut h);
    state.timers_set.hash(&mut h);
    state.history.hash(&mut h);
    h.finish()
}

/// A plain BFS over `model` (within its boundary): the number of unique
/// states and the set of `project` of each (states it maps to `None` are
/// searched but not projected).
fn explore<M: Model>(
    model: &M,
    project: impl Fn(&M::State) -> Option<u64>,
) -> (usize, std::collections::HashSet<u64>)
where
    M::State: std::hash::Hash,
{
    use std::collections::{HashSet, VecDeque};
    use std::hash::{Hash, Hasher};
    let fingerprint = |s: &M::State| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    let mut seen = HashSet::new();
    let mut projections = HashSet::new();
    let mut queue = VecDeque::new();
    for s in model.init_states() {
        if seen.insert(fingerprint(&s)) {
            queue.push_back(s);
        }
    }
    let mut actions = Vec::new();
    while let Some(state) = queue.pop_front() {
        projections.extend(project(&state));
        model.actions(&state, &mut actions);
        for action in actions.drain(..) {
            let Some(next) = model.next_state(&state, action) else {
                continue;
            };
            if model.within_boundary(&next) && seen.insert(fingerprint(&next)) {
                queue.push_back(next);
            }
        }
    }
    (seen.len(), projections)
}

/// Why the safety checks above may leave loss out: in an unordered
/// duplicating network that never forces a delivery, losing a message is
/// the same as never delivering it again. Dropping the drop actions from a
/// trace leaves a trace of the lossless model whose network holds a superset
/// of the messages at every step (garbage collection depends on actor states
/// only, which are the same) and the same actor states, storage, timers and
/// history; properties look at nothing else. This test checks that claim
/// exhaustively on a configuration with a crash: loss multiplies states and
/// adds no state of actors, storage, timers or history.
#[test]
fn loss_adds_states_but_no_behavior() {
    let scenario = |lossy| {
        let s = Scenario::new("one put+crash", Mutation::None, 1)
            .client(vec![(0, Put('a'))])
            .crashes(1);
        if lossy {
            s.lossy()
        } else {
            s
        }
    };
    let start = Instant::now();
    let (lossy_states, lossy) = explore(&scenario(true).model(), |s| Some(projection(s)));
    let (states, lossless) = explore(&scenario(false).model(), |s| Some(projection(s)));
    println!(
        "[loss] lossy: {lossy_states} states, lossless: {states} states, \
         {} distinct non-network projections, {:.1?}",
        lossless.len(),
        start.elapsed()
    );
    assert!(lossy_states > states, "loss must be in play");
    assert_eq!(lossy, lossless, "loss reached a new actor/history state");
    // And the lossy model itself is safe, exhaustively.
    check_safe(&scenario(true));
}

/// The full configuration of issue 4: two clients PUT different values
/// through different servers and then GET through others, with one crash.
/// Too big for CI; runs only with `PAXOS_KV_MODEL_DEEP=1`, as a DFS bounded
/// by `PAXOS_KV_MODEL_SECS` seconds (default 600).
#[test]
fn deep_two_writers_and_readers_with_crash() {
    if !deep() {
        println!("set PAXOS_KV_MODEL_DEEP=1 to run the deep configuration");
        return;
    }
    let scenario = Scenario::new("deep", Mutation::None, 1)
        .client(vec![(0, Put('a')), (1, Get)])
        .client(vec![(1, Put('b')), (2, Get)])
        .crashes(1);
    check_bounded(&scenario, bound_secs());
}

// ---------------------------------------------------------------------------
// The wipe fault: a server loses its disk (issue 8, docs/design.md
// invariant 8, `src/rejoin.rs`).
// ---------------------------------------------------------------------------

impl Scenario {
    fn wipes(mut self, wipes: u8) -> Self {
        self.cfg.wipes = wipes;
        self
    }
}

/// The safety properties of a configuration with a wipe: all of them but
/// "ballots unique". A wiped server's ballot clock starts from zero, and
/// the protocol does not keep it from reusing a round of its old
/// incarnation where no accept can be in flight (its rebuild's rejections
/// move it past every round that could have one); "one value per ballot"
/// is what agreement needs from ballots, and it is checked.
const WIPE_SKIP: &[&str] = &["ballots unique"];

/// One client PUTs `a` through server 0, while any one server may lose
/// its disk: the chosen value must stay where every phase 1 finds it.
fn one_put_with_wipe(mutation: Mutation) -> Scenario {
    let mut s = Scenario::new("one-put+wipe", mutation, 1)
        .client(vec![(0, Put('a'))])
        .wipes(1);
    s.skip = WIPE_SKIP;
    s
}

/// One client PUTs `a` through server 0 and then GETs through server 1,
/// while any one server may lose its disk (and, with `crashes`, one may
/// crash and restart).
fn put_then_get_with_wipe(mutation: Mutation, crashes: usize) -> Scenario {
    let mut s = Scenario::new("put-then-get+wipe", mutation, 1)
        .client(vec![(0, Put('a')), (1, Get)])
        .crashes(crashes)
        .wipes(1);
    s.skip = WIPE_SKIP;
    s
}

/// Two clients PUT `a` through server 2 and `b` through server 1 at once,
/// while server 0 may lose its disk. Its rebuild ballot (1.1) is below
/// both writers' first ballots, so the rebuilt server 0 can be promised by
/// both: the case where a lost promise matters.
fn contention_with_wipe(mutation: Mutation) -> Scenario {
    let mut s = Scenario::new("contention+wipe", mutation, 1)
        .client(vec![(2, Put('a'))])
        .client(vec![(1, Put('b'))])
        .wipes(1);
    s.cfg.wipe_only = Some(0);
    s.skip = WIPE_SKIP;
    s
}

/// Seconds for each time-bounded wipe search in CI: a third of
/// [`bound_secs`] (10 s by default).
fn wipe_secs() -> u64 {
    if deep() {
        bound_secs()
    } else {
        (bound_secs() / 3).max(1)
    }
}

/// The new protocol with a wipe: one PUT through server 0, and any server
/// loses its disk at any moment (before, during or after the PUT): the
/// chosen value stays on every majority that can answer a phase 1, and no
/// other is ever chosen. Exhaustive under `PAXOS_KV_MODEL_DEEP=1`;
/// time-bounded in CI: messages to a server that may still be wiped cannot
/// be collected as garbage (a wipe sets its promise back), so even this
/// configuration did not finish within minutes on the loaded CI machine.
#[test]
fn rebuild_is_safe_one_put_with_wipe() {
    let scenario = one_put_with_wipe(Mutation::None);
    if deep() {
        check_safe(&scenario);
    } else {
        check_bounded(&scenario, wipe_secs());
    }
}

/// The new protocol with a wipe: an answered PUT is read back whatever
/// server loses its disk and when (guarantees 1 to 4). Time-bounded in CI;
/// exhaustive, with a crash too, under `PAXOS_KV_MODEL_DEEP=1`.
#[test]
fn rebuild_is_safe_put_then_get_with_wipe() {
    if deep() {
        let mut scenario = put_then_get_with_wipe(Mutation::None, 1);
        scenario.name = "put-then-get+wipe+crash";
        check_safe(&scenario);
    } else {
        check_bounded(&put_then_get_with_wipe(Mutation::None, 0), wipe_secs());
    }
}

/// The new protocol with a wipe under two concurrent writers: rounds that
/// relied on the wiped server's promises are fenced, and its rebuilt vote
/// keeps whatever was chosen. Time-bounded (a bug finder, not a proof).
#[test]
fn rebuild_is_safe_under_contention_with_wipe() {
    check_bounded(&contention_with_wipe(Mutation::None), wipe_secs());
}

/// The new protocol with a wipe and the fast ballot: a value chosen in
/// ballot 0.0 (every server voted) survives one of them losing its disk.
/// Time-bounded in CI, exhaustive under `PAXOS_KV_MODEL_DEEP=1`.
#[test]
fn rebuild_is_safe_fast_put_then_get_with_wipe() {
    let mut scenario = put_then_get_with_wipe(Mutation::None, 0).fast();
    scenario.name = "fast-put-then-get+wipe";
    if deep() {
        check_safe(&scenario);
    } else {
        check_bounded(&scenario, wipe_secs());
    }
}

/// Today's behaviour, as a mutation: a wiped server comes back blank and
/// votes at once. The chosen value loses a vote on disk at once ("chosen
/// is durable"), and with that property left out the client sees it: the
/// GET after an answered PUT finds nothing, or another value is chosen.
#[test]
fn mutation_wipe_without_rebuild_is_caught() {
    let (caught, steps) = check_caught(&put_then_get_with_wipe(Mutation::WipeWithoutRebuild, 0));
    assert!(caught.contains(&"chosen is durable"), "{caught:?}");
    println!("wipe without rebuild: caught by {caught:?} in {steps} steps");
    let mut scenario = put_then_get_with_wipe(Mutation::WipeWithoutRebuild, 0);
    scenario.skip = &["chosen is durable", "ballots unique"];
    let (caught, steps) = check_caught(&scenario);
    assert!(
        caught.contains(&"linearizable") || caught.contains(&"agreement"),
        "{caught:?}"
    );
    println!("wipe without rebuild, seen by clients: caught by {caught:?} in {steps} steps");
}

/// Today's behaviour in the fast ballot: a value chosen in ballot 0.0 with
/// every server's vote is undone by one wiped server (a phase 1 that meets
/// it finds the fast vote on one promiser only, so it may not keep it).
#[test]
fn mutation_wipe_without_rebuild_undoes_a_fast_value() {
    let mut scenario = put_then_get_with_wipe(Mutation::WipeWithoutRebuild, 0).fast();
    scenario.name = "fast-put-then-get+wipe-s1";
    // The reader's server loses its disk (keeps the search small for CI).
    scenario.cfg.wipe_only = Some(1);
    scenario.skip = &["chosen is durable", "ballots unique"];
    let (caught, steps) = check_caught(&scenario);
    assert!(
        caught.contains(&"linearizable") || caught.contains(&"agreement"),
        "{caught:?}"
    );
    println!("fast value undone by a wipe: caught by {caught:?} in {steps} steps");
}

/// A rebuild that reads the key through one other server instead of a
/// majority of them misses a vote of the chosen value.
#[test]
fn mutation_rebuild_from_one_is_caught() {
    let mut scenario = put_then_get_with_wipe(Mutation::RebuildFromOne, 0);
    scenario.name = "put-then-get+wipe-s1";
    // The reader's server loses its disk (keeps the search small for CI).
    scenario.cfg.wipe_only = Some(1);
    scenario.skip = &["chosen is durable", "ballots unique"];
    let (caught, steps) = check_caught(&scenario);
    assert!(
        caught.contains(&"linearizable") || caught.contains(&"agreement"),
        "{caught:?}"
    );
    println!("rebuild from one: caught by {caught:?} in {steps} steps");
}

/// A depth-first search of a broken variant for at most `secs` seconds,
/// stopping at the first counterexample (not the shortest): for
/// configurations whose breadth-first search needs more memory than CI has.
fn check_caught_dfs(scenario: &Scenario, secs: u64) -> Vec<&'static str> {
    let start = Instant::now();
    let checker = scenario
        .model()
        .checker()
        .threads(2)
        .finish_when(HasDiscoveries::AnyFailures)
        .timeout(std::time::Duration::from_secs(secs))
        .spawn_dfs()
        .join();
    let caught: Vec<&'static str> = SAFETY
        .into_iter()
        .filter(|p| !scenario.skip.contains(p))
        .filter(|p| checker.discovery(p).is_some())
        .collect();
    println!(
        "[{}] DFS: {} unique states, {:.1?}, caught: {caught:?}",
        scenario.name,
        checker.unique_state_count(),
        start.elapsed()
    );
    if let Some(first) = caught.first() {
        let path = checker.discovery(first).expect("just found");
        print_trace(scenario.name, first, &path);
    }
    caught
}

/// Accepts not fenced (n = 3): a writer holds a promise of server 0's old
/// incarnation and its own, for a ballot above server 0's rebuild ballot;
/// the rebuilt server 0 accepts the other writer's lower ballot, which is
/// chosen, and then the first writer's accepts are chosen too. A
/// depth-first search bounded by `PAXOS_KV_MODEL_SECS`; ignored: the
/// breadth-first search that finds such a long trace needs more memory than
/// CI has (7.6 GB after a few minutes), and 100 s of depth-first search did
/// not reach it. Run with `-- --ignored` and a generous bound.
#[test]
#[ignore = "the counterexample is beyond what a bounded search reaches in CI"]
fn mutation_no_fence_is_caught() {
    let mut scenario = contention_with_wipe(Mutation::NoFence);
    scenario.skip = &["ballots unique"];
    let caught = check_caught_dfs(&scenario, bound_secs());
    assert!(
        !caught.is_empty(),
        "no fence: not caught in {} s",
        bound_secs()
    );
}

/// The fence checked against the others' incarnations only (the first
/// version of `Node::acceptor_step`): the rebuilt server 0 accepts a round
/// that relied on its old incarnation's promise, over a value chosen
/// meanwhile by the other writer ("chosen is durable", then agreement).
/// Ignored, as above: 100 s of depth-first search did not reach it.
#[test]
#[ignore = "the counterexample is beyond what a bounded search reaches in CI"]
fn mutation_self_not_fenced_is_caught() {
    let mut scenario = contention_with_wipe(Mutation::SelfNotFenced);
    scenario.skip = &["ballots unique"];
    let caught = check_caught_dfs(&scenario, bound_secs());
    assert!(
        !caught.is_empty(),
        "self not fenced: not caught in {} s",
        bound_secs()
    );
}

// ---------------------------------------------------------------------------
// Lazy decides (issue 13): an announced decide is not synced.
// ---------------------------------------------------------------------------

/// What the lazy decide may lose, shown unsafe where it would matter: an
/// accept recorded lazily (applied and answered, saved with the next
/// durable write). The vote counted toward the chosen value is not on disk
/// ("chosen is durable"), and with that property left out the clients see
/// it: a crash forgets the vote, and a GET after the answered PUT finds
/// nothing. The correct variant, where only the announced decide is lazy,
/// is every safety search of this file (`Config::on_peer_request`), with
/// "decided flag lost" reached in
/// [`real_core_is_safe_put_then_get_with_crash`].
#[test]
fn mutation_lazy_accept_is_caught() {
    let (caught, steps) = check_caught(&put_then_get_with_crash(Mutation::LazyAccept, 1));
    assert!(caught.contains(&"chosen is durable"), "{caught:?}");
    println!("lazy accept: caught by {caught:?} in {steps} steps");
    let mut scenario = put_then_get_with_crash(Mutation::LazyAccept, 1);
    scenario.skip = &["chosen is durable"];
    let (caught, steps) = check_caught(&scenario);
    assert!(caught.contains(&"linearizable"), "{caught:?}");
    println!("lazy accept, seen by clients: caught by {caught:?} in {steps} steps");
}

// ---------------------------------------------------------------------------
// Online membership change (issue 10): 3 -> 4 -> 3 members.
// ---------------------------------------------------------------------------

/// A membership change from three members to four (node 4 added) and back
/// to three (node 1 removed), one key, with a concurrent fast writer, a
/// second writer and reader in later epochs, and one crash (any server or
/// the reconfigurer), over the production core: `acceptor::handle_in`,
/// `Coordinator::put`/`get`/`sweep` and the `Members` of each epoch
/// (`Members::new`, `Members::transitional`).
///
/// # The model
///
/// Epochs, as `src/membership.rs` makes them:
///
/// | epoch | kind | members | fast | electorate |
/// |---|---|---|---|---|
/// | 1 | stable | {1,2,3} | open | {1,2,3} |
/// | 2 | transitional | {1,2,3,4} | closed | {1,2,3} |
/// | 3 | stable | {1,2,3,4} | open | {1,2,3,4} |
/// | 4 | transitional | {2,3,4} | closed | {1,2,3,4} |
/// | 5 | stable | {2,3,4} | open | {2,3,4} |
///
/// - Servers 1 to 4 (actors 0 to 3) each hold an acceptor state and an
///   epoch, both durable (saved before any reply leaves), and coordinate
///   client requests with the production [`Coordinator`] built for the
///   epoch they hold. Node 4 starts in no epoch with an empty acceptor:
///   it takes client requests only once it is a member. Every message
///   carries its sender's epoch and an acceptor answers only messages of
///   its own epoch (`Node::acceptor_step`, checked under the key's lock;
///   here a server's step is atomic). A server that adopts a newer epoch
///   restarts every request it coordinates in that epoch with a new
///   coordinator (`Node::execute_in_epoch`: the old epoch's answers are
///   never counted), or answers 503 if it is no longer a member.
/// - The reconfigurer (actor 4) abstracts the configuration registers:
///   for each epoch `e` from 2 to the last it tells the members of `e` to
///   adopt `e` (one message each, delivered in any order, so servers switch
///   one by one; a removed node is not told). Only a stable epoch with a
///   successor waits until a majority of its members acknowledged (the
///   register of epoch `e + 1` is chosen by a majority of `e`); a sweep
///   needs no acknowledgement, since acceptors answer only messages of their
///   own epoch. In a transitional epoch it then runs the production
///   [`Coordinator::sweep`] with that epoch's `Members`, again after a
///   preempted sweep, and moves on once it ends `Chosen` or `Empty` (a
///   `Chosen` sweep recorded the value as decided at a majority first). Its
///   progress (the epoch it is adopting, whether it is sweeping, its ballot
///   clock mark) is durable; a crash loses the rest (acknowledgements, the
///   sweep in flight), and it restarts from the step it saved.
/// - Clients A and B send the requests their search gives them (client A:
///   a PUT of `a` through server 1, first in the fast ballot while epoch 1
///   is stable; client B: a PUT of `b` through the new server 4, then a GET
///   through server 2), each running in whatever epoch the server holds
///   then.
///
/// "Chosen" is computed from the votes as cast, each with the epoch it
/// was cast in (an acceptor votes only in its own epoch, and an `Accepted`
/// reply carries that epoch as a ghost field): `v` is chosen if for some
/// epoch `e` and classic ballot `b` a majority of `e`'s members voted
/// `(b, v)` while in `e`, or every member of `e` voted `(FAST, v)` while
/// in `e`. Properties: linearizability of every answer (a write-once
/// register), agreement (at most one value chosen or decided), answers
/// name only chosen values, decided implies chosen, validity, and "chosen
/// survives the change" (once the change finished, every chosen value is
/// on the disks of a majority of the last epoch's members, so a lost value
/// shows without a client asking for it); and, so the check is not vacuous,
/// the "sometimes" properties each search names (a value chosen, the change
/// finished, both, a GET that sees a value).
///
/// # Searches
///
/// Common bounds: a lossless network (loss adds no behaviour, see
/// [`loss_adds_states_but_no_behavior`]); clients do not crash; each
/// coordinator gets one classic round after its fast attempt; a timeout
/// that would only answer 503 is left out (as in the rest of this file); a
/// request whose server adopts a newer epoch ends 503
/// ([`membership_change::RESTART_ON_ADOPT`] is false: production restarts
/// it in the new epoch, a new request, which client B's requests in later
/// epochs stand for).
///
/// The exhaustive searches (every reachable state, to the end) use
/// [`membership_change::Shape::REDUCED`]: each message is delivered once,
/// in any order, as the HTTP transport sends each request once; and a
/// crashed actor restarts in the step that crashes it, which
/// [`membership_restart_reduction_adds_no_behavior`] shows loses no state
/// of actors, storage, timers or history.
///
/// | search | crash | unique states | time (2 threads) |
/// |---|---|---|---|
/// | 3 -> 4 -> 3, client A's fast PUT racing the change from its start, announcements lost | any server, any moment | 15,368,067 | 294-398 s |
/// | 3 -> 4 -> 3 from `a` chosen fast at {1,2,3} | anything, the reconfigurer mid-sweep included | 1,969,295 | 30 s |
/// | 3 -> 4 -> 3 from `a` chosen at {1,2} | anything | 1,969,295 | 30-45 s |
/// | transitional epoch of 3 -> 4 from `a` chosen fast, client B PUTs `b` through node 4 | none | 1,892,648 | 21 s |
///
/// A crash of the reconfigurer while client A writes multiplies the first
/// search by about 150 (the restarted sweep runs beside the old one's
/// messages): that combination, with two writers, a reader and a
/// duplicating network, is the bounded search
/// ([`membership_change_with_two_writers_reader_and_crash_bounded`], a
/// depth-first search bounded by [`members_secs`], about 580,000 states in
/// 30 s): a bug finder, not a proof.
///
/// Broken variants, each caught ([`membership_change::Mutation`]): the
/// fast ballot open in the transitional epoch (agreement, 14 steps) and
/// the new members as its electorate (agreement, 13 steps), in the last
/// configuration; no sweep (chosen survives the change, 8 steps from `a`
/// at {1,2} and 19 steps in the writer's search).
mod membership_change {
    use std::borrow::Cow;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Instant;

    use paxos_kv::paxos::{
        acceptor, Accepted, AcceptorState, Ballot, BallotClock, Coordinator, Effect, Limits,
        Members, NodeId, Outcome, Reply, Request, Step,
    };
    use stateright::actor::{
        model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id,
        LossyNetwork, Network, Out,
    };
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
    use stateright::{Checker, HasDiscoveries, Model, Path, Property};

    use super::{only_gives_up, same_or_conflict, RegOp, RegRet, Register, Value};

    /// Servers are actors 0..4 (nodes 1..=4).
    const SERVERS: usize = 4;
    /// The reconfigurer's actor index.
    const RECONF: usize = 4;
    /// Client A's actor index (client B is the next one).
    const CLIENT_A: usize = 5;
    /// The reconfigurer's ballot node id (it runs the sweep on a node in
    /// production; any id no server uses keeps ballots apart).
    const RECONF_NODE: NodeId = 9;
    /// Whether a request whose server adopts a newer epoch restarts there
    /// (`Node::execute_in_epoch`) instead of ending 503.
    pub(super) const RESTART_ON_ADOPT: bool = false;

    type Epoch = u8;

    /// The member ids of `epoch` (0: none, node 4 before it is added).
    fn ids(epoch: Epoch) -> &'static [NodeId] {
        match epoch {
            1 => &[1, 2, 3],
            2 | 3 => &[1, 2, 3, 4],
            4 | 5 => &[2, 3, 4],
            _ => &[],
        }
    }

    fn transitional(epoch: Epoch) -> bool {
        epoch == 2 || epoch == 4
    }

    fn is_member(epoch: Epoch, node: NodeId) -> bool {
        ids(epoch).contains(&node)
    }

    fn quorum(epoch: Epoch) -> usize {
        ids(epoch).len() / 2 + 1
    }

    fn node_id(id: Id) -> NodeId {
        usize::from(id) as NodeId + 1
    }

    fn actor(node: NodeId) -> Id {
        Id::from(node as usize - 1)
    }

    /// A deliberately broken membership change.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub(super) enum Mutation {
        None,
        /// A transitional epoch is given `Members::new(new members)`: the
        /// fast ballot stays open and the added node, empty, is in the
        /// electorate before the sweep caught it up.
        FastOpenInTransition,
        /// The fast ballot is closed in a transitional epoch, but its
        /// electorate is the new members: the empty new node's silence
        /// counts against the old epoch's fast value.
        NewMemberInElectorate,
        /// No sweep: the reconfigurer goes from a transitional epoch
        /// straight to the stable one.
        SkipSweep,
    }

    /// The quorum view of `epoch`: `MemberConfig::quorums` of the
    /// configurations `src/membership.rs` makes, or a broken one.
    fn members(mutation: Mutation, epoch: Epoch) -> Members {
        let ids = ids(epoch).iter().copied();
        if !transitional(epoch) {
            return Members::new(ids);
        }
        match mutation {
            Mutation::FastOpenInTransition => Members::new(ids),
            Mutation::NewMemberInElectorate => {
                Members::transitional(ids, self::ids(epoch).iter().copied())
            }
            _ => Members::transitional(ids, self::ids(epoch - 1).iter().copied()),
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    struct Tag {
        /// The client (or the reconfigurer, for a sweep).
        client: Id,
        seq: u8,
        /// The coordinator's epoch.
        epoch: Epoch,
        call: u32,
        /// The coordinator's process generation.
        inc: u8,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Msg {
        Put {
            seq: u8,
            value: Value,
        },
        Get {
            seq: u8,
        },
        /// `about`: ghost, the value the answer says is chosen.
        Done {
            seq: u8,
            ret: RegRet,
            about: Option<Value>,
        },
        Unavailable {
            seq: u8,
        },
        /// Coordinator to acceptor, stamped with the sender's epoch.
        Peer {
            tag: Option<Tag>,
            epoch: Epoch,
            request: Request<Value>,
        },
        /// `vote`: ghost, the vote an `Accepted` stands for and the epoch
        /// the acceptor cast it in.
        PeerReply {
            tag: Tag,
            reply: Reply<Value>,
            vote: Option<(Epoch, Accepted<Value>)>,
        },
        /// Reconfigurer to server: adopt `epoch` (a chosen configuration).
        Adopt {
            epoch: Epoch,
        },
        /// The server holds `epoch` or a newer one, durably.
        Adopted {
            epoch: Epoch,
        },
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Timer {
        Op(Id, u8),
        Sweep,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum Kind {
        Put(Value),
        Get,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Op {
        kind: Kind,
        epoch: Epoch,
        coord: Coordinator<Value>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct ServerState {
        epoch: Epoch,
        acceptor: AcceptorState<Value>,
        clock: BallotClock,
        mark: u64,
        inc: u8,
        ops: BTreeMap<(Id, u8), Op>,
        done: BTreeSet<(Id, u8)>,
    }

    /// Where the reconfigurer is: adopting `epoch`, or sweeping it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    struct Progress {
        epoch: Epoch,
        sweeping: bool,
    }

    impl Progress {
        /// Whether the change reached `last`, the last epoch modelled.
        fn finished(&self, last: Epoch) -> bool {
            self.epoch > last
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct ReconfState {
        progress: Progress,
        acks: BTreeSet<NodeId>,
        sweep: Option<Coordinator<Value>>,
        clock: BallotClock,
        mark: u64,
        inc: u8,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct ClientState {
        seq: u8,
        gave_up: bool,
    }

    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum NodeState {
        Server(ServerState),
        Reconf(ReconfState),
        Client(ClientState),
        /// A crashed server or reconfigurer (set by garbage collection).
        Down,
    }

    /// What survives a crash.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum Durable {
        Server {
            epoch: Epoch,
            acceptor: AcceptorState<Value>,
            mark: u64,
            inc: u8,
        },
        Reconf {
            progress: Progress,
            mark: u64,
            inc: u8,
        },
    }

    impl Durable {
        /// Restarts used (the first start is generation 0).
        fn restarts(&self) -> u32 {
            match self {
                Durable::Server { inc, .. } | Durable::Reconf { inc, .. } => u32::from(*inc),
            }
        }
    }

    /// What was chosen before the search starts: the mutation searches
    /// start from the state the counterexample needs, since a search from
    /// the empty register does not reach it in CI time.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Preload {
        /// Nothing: client A writes `a` during the search.
        None,
        /// `a` chosen in the fast ballot by {1,2,3} in epoch 1.
        FastAt123,
        /// `a` chosen in ballot 1.1 by {1,2} in epoch 1 (node 3 holds nothing).
        ClassicAt12,
    }

    impl Preload {
        /// The vote node `node` starts with.
        fn vote(&self, node: NodeId) -> Option<Accepted<Value>> {
            let ballot = match self {
                Preload::None => return None,
                Preload::FastAt123 if node <= 3 => Ballot::FAST,
                Preload::ClassicAt12 if node <= 2 => Ballot::new(1, 1),
                _ => return None,
            };
            Some(Accepted { ballot, value: 'a' })
        }
    }

    /// How a search is shaped (see the module docs, "Searches").
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Shape {
        /// Messages may be delivered any number of times (else exactly
        /// once, in any order).
        pub duplicating: bool,
        /// A crash restarts the actor in the same step (else it stays down
        /// until a later recover action).
        pub atomic_restart: bool,
        /// The reconfigurer may crash (servers always may).
        pub reconf_crashes: bool,
        /// Coordinators of client requests announce a chosen value to the
        /// epoch's members (`Effect::Announce`; else every announcement is
        /// lost, which a fire-and-forget broadcast may be).
        pub announce: bool,
        /// Client A's request reaches server 1 before anything else happens.
        pub writer_first: bool,
    }

    impl Shape {
        /// Every behaviour the model has: the bounded bug-finding searches.
        pub const FULL: Shape = Shape {
            duplicating: true,
            atomic_restart: false,
            reconf_crashes: true,
            announce: true,
            writer_first: false,
        };
        /// The reductions the reduction test shows add no state of actors,
        /// storage, timers or history.
        pub const REDUCED: Shape = Shape {
            duplicating: false,
            atomic_restart: true,
            ..Shape::FULL
        };
    }

    #[derive(Clone, Debug)]
    pub(super) struct Config {
        shape: Shape,
        mutation: Mutation,
        max_restarts: u8,
        /// Votes the servers start with (for the mutation searches).
        preload: Preload,
        /// The reconfigurer stops once this epoch is adopted (5: the whole
        /// change 3 -> 4 -> 3; 3: only the first half, 3 -> 4).
        last: Epoch,
    }

    #[derive(Clone, Debug)]
    enum Node {
        Server(Config),
        Reconf(Config),
        Client { script: Vec<(NodeId, RegOp)> },
    }

    fn limits() -> Limits {
        Limits {
            max_rounds: Some(1),
            ..Limits::unbounded()
        }
    }

    fn broadcast(tag: Option<Tag>, epoch: Epoch, request: Request<Value>, o: &mut Out<Node>) {
        for n in ids(epoch) {
            o.send(
                actor(*n),
                Msg::Peer {
                    tag,
                    epoch,
                    request: request.clone(),
                },
            );
        }
    }

    /// Runs a coordinator's effects until it waits or is done, as
    /// `Node::execute` does (its ballots come from `clock`, whose new
    /// reservation the caller saves in the same step, before any message
    /// of the step leaves).
    fn drive(
        coord: &mut Coordinator<Value>,
        tag: Tag,
        clock: &mut BallotClock,
        mark: &mut u64,
        announce: bool,
        o: &mut Out<Node>,
    ) -> Option<Outcome<Value>> {
        loop {
            match coord.poll() {
                Effect::Send { call, request, .. } => {
                    let tag = Tag { call, ..tag };
                    broadcast(Some(tag), tag.epoch, request, o);
                }
                Effect::Announce { ballot, value } => {
                    if announce {
                        broadcast(None, tag.epoch, Request::Decide { ballot, value }, o)
                    }
                }
                Effect::Count(_) => {}
                Effect::NeedPause { .. } => coord.handle_pause(0, 0),
                Effect::NeedBallot { above } => {
                    let next = clock.next(above);
                    if let Some(m) = next.reserve {
                        *mark = m;
                    }
                    coord.handle_ballot(next.ballot);
                }
                Effect::Wait { .. } => return None,
                Effect::Done(outcome) => return Some(outcome),
            }
        }
    }

    /// An operation's timer: the coordinator's own timer, else every call
    /// in flight fails (unreachable members).
    fn time_out(coord: &mut Coordinator<Value>, epoch: Epoch) {
        match coord.timer() {
            Some(at) => coord.handle_timeout(at),
            None => {
                let call = coord.call();
                for m in ids(epoch) {
                    coord.handle_unreachable(0, call, *m);
                }
            }
        }
    }

    impl Config {
        fn new_coordinator(&self, kind: &Kind, epoch: Epoch) -> Coordinator<Value> {
            let members = members(self.mutation, epoch);
            match kind {
                // `Coordinator::put` tries the fast ballot only where the
                // epoch allows it.
                Kind::Put(own) => Coordinator::put(members, *own, true, limits()),
                Kind::Get => Coordinator::get(members, limits()),
            }
        }

        fn server_durable(st: &ServerState) -> Durable {
            Durable::Server {
                epoch: st.epoch,
                acceptor: st.acceptor.clone(),
                mark: st.mark,
                inc: st.inc,
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn on_peer_request(
            &self,
            id: Id,
            st: &mut ServerState,
            src: Id,
            tag: Option<Tag>,
            epoch: Epoch,
            request: Request<Value>,
            o: &mut Out<Node>,
        ) {
            // Invariant 10: another epoch's message is refused (an error
            // reply in the node: the coordinator counts it unreachable,
            // which its timeout covers here).
            if epoch != st.epoch || !is_member(st.epoch, node_id(id)) {
                return;
            }
            let vote = match &request {
                Request::Accept { ballot, value } => Some((
                    epoch,
                    Accepted {
                        ballot: *ballot,
                        value: *value,
                    },
                )),
                _ => None,
            };
            let step = acceptor::handle_in(
                &st.acceptor,
                request,
                members(self.mutation, epoch).fast_allowed(),
            );
            let reply = match step {
                Step::Reply(reply) => reply,
                Step::Persist(p) => {
                    let (state, reply) = p.reply_once_durable();
                    st.acceptor = state;
                    reply
                }
            };
            if let Some(tag) = tag {
                let vote = match reply {
                    Reply::Accepted { .. } => vote,
                    _ => None,
                };
                o.send(src, Msg::PeerReply { tag, reply, vote });
            }
        }

        fn on_client_request(
            &self,
            id: Id,
            st: &mut ServerState,
            client: Id,
            seq: u8,
            kind: Kind,
            o: &mut Out<Node>,
        ) {
            let key = (client, seq);
            if st.ops.contains_key(&key) || st.done.contains(&key) {
                return;
            }
            if !is_member(st.epoch, node_id(id)) {
                return; // not serving yet: the request waits
            }
            if let Some(chosen) = st.acceptor.decided_value() {
                let ret = match kind {
                    Kind::Put(own) => same_or_conflict(chosen.value, own),
                    Kind::Get => RegRet::Got(Some(chosen.value)),
                };
                st.done.insert(key);
                let about = Some(chosen.value);
                o.send(client, Msg::Done { seq, ret, about });
                return;
            }
            let coord = self.new_coordinator(&kind, st.epoch);
            st.ops.insert(
                key,
                Op {
                    kind,
                    epoch: st.epoch,
                    coord,
                },
            );
            o.set_timer(Timer::Op(client, seq), model_timeout());
            self.drive_op(st, key, o);
        }

        fn drive_op(&self, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
            let op = st.ops.get_mut(&key).expect("op in hand");
            let tag = Tag {
                client: key.0,
                seq: key.1,
                epoch: op.epoch,
                call: 0,
                inc: st.inc,
            };
            let announce = self.shape.announce;
            let Some(outcome) = drive(&mut op.coord, tag, &mut st.clock, &mut st.mark, announce, o)
            else {
                return;
            };
            let ret = match (outcome, &op.kind) {
                (Outcome::Chosen { value, .. }, Kind::Put(own)) if value == *own => {
                    Some(RegRet::Created)
                }
                (Outcome::Chosen { value, .. }, Kind::Put(own)) => {
                    Some(same_or_conflict(value, *own))
                }
                (Outcome::Chosen { value, .. }, Kind::Get) => Some(RegRet::Got(Some(value))),
                (Outcome::Empty { .. }, Kind::Get) => Some(RegRet::Got(None)),
                (Outcome::Empty { .. }, Kind::Put(_)) => panic!("a PUT never ends empty"),
                (Outcome::Unavailable, _) => None,
            };
            finish(st, key, ret, o);
        }

        /// `Node::adopt`: durably, then every request in hand restarts in
        /// the new epoch (or ends 503 on a node no longer a member).
        fn adopt(&self, id: Id, st: &mut ServerState, epoch: Epoch, o: &mut Out<Node>) {
            if epoch > st.epoch {
                st.epoch = epoch;
                let keys: Vec<(Id, u8)> = st.ops.keys().copied().collect();
                for key in keys {
                    if RESTART_ON_ADOPT && is_member(epoch, node_id(id)) {
                        let op = st.ops.get_mut(&key).expect("listed");
                        op.epoch = epoch;
                        op.coord = self.new_coordinator(&op.kind, epoch);
                        self.drive_op(st, key, o);
                    } else {
                        finish(st, key, None, o);
                    }
                }
            }
            o.send(Id::from(RECONF), Msg::Adopted { epoch });
        }

        fn on_peer_reply(
            &self,
            st: &mut ServerState,
            src: Id,
            tag: Tag,
            reply: Reply<Value>,
            o: &mut Out<Node>,
        ) {
            let key = (tag.client, tag.seq);
            if tag.inc != st.inc {
                return;
            }
            let Some(op) = st.ops.get_mut(&key) else {
                return;
            };
            if op.epoch != tag.epoch {
                return;
            }
            op.coord.handle_reply(0, tag.call, node_id(src), reply, 1);
            self.drive_op(st, key, o);
        }

        fn on_op_timeout(&self, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
            let Some(op) = st.ops.get_mut(&key) else {
                return;
            };
            let mut trial = op.coord.clone();
            time_out(&mut trial, op.epoch);
            if only_gives_up(&mut trial) {
                o.set_timer(Timer::Op(key.0, key.1), model_timeout());
                return;
            }
            time_out(&mut op.coord, op.epoch);
            self.drive_op(st, key, o);
            if st.ops.contains_key(&key) {
                o.set_timer(Timer::Op(key.0, key.1), model_timeout());
            }
        }

        // --- The reconfigurer. ---

        fn reconf_durable(st: &ReconfState) -> Durable {
            Durable::Reconf {
                progress: st.progress,
                mark: st.mark,
                inc: st.inc,
            }
        }

        /// Starts the step `st.progress` names.
        fn reconf_step(&self, st: &mut ReconfState, o: &mut Out<Node>) {
            st.acks.clear();
            st.sweep = None;
            o.cancel_timer(Timer::Sweep);
            let Progress { epoch, sweeping } = st.progress;
            if st.progress.finished(self.last) {
                return;
            }
            if !sweeping {
                // A removed node is not told (it refuses the new epoch's
                // messages either way, and takes no request of it).
                for n in ids(epoch).iter().copied() {
                    o.send(actor(n), Msg::Adopt { epoch });
                }
                // Only a stable epoch with a successor waits for a majority
                // to adopt it: the next register is chosen by that majority.
                // A sweep needs no acknowledgement, since acceptors answer
                // only messages of their own epoch (its answers are the
                // adoptions), and the last epoch has no successor.
                if transitional(epoch) || epoch >= self.last {
                    self.advance(st, o);
                }
                return;
            }
            st.sweep = Some(Coordinator::sweep(members(self.mutation, epoch), limits()));
            o.set_timer(Timer::Sweep, model_timeout());
            self.drive_sweep(st, o);
        }

        fn advance(&self, st: &mut ReconfState, o: &mut Out<Node>) {
            let Progress { epoch, sweeping } = st.progress;
            st.progress =
                if transitional(epoch) && !sweeping && self.mutation != Mutation::SkipSweep {
                    Progress {
                        epoch,
                        sweeping: true,
                    }
                } else {
                    Progress {
                        epoch: epoch + 1,
                        sweeping: false,
                    }
                };
            self.reconf_step(st, o);
        }

        fn drive_sweep(&self, st: &mut ReconfState, o: &mut Out<Node>) {
            let epoch = st.progress.epoch;
            let tag = Tag {
                client: Id::from(RECONF),
                seq: epoch,
                epoch,
                call: 0,
                inc: st.inc,
            };
            let coord = st.sweep.as_mut().expect("sweeping");
            match drive(coord, tag, &mut st.clock, &mut st.mark, true, o) {
                None => {}
                Some(Outcome::Unavailable) => {
                    // Preempted: the sweep of the key is tried again.
                    self.reconf_step(st, o);
                }
                Some(_) => self.advance(st, o),
            }
        }

        fn on_adopted(&self, st: &mut ReconfState, src: Id, epoch: Epoch, o: &mut Out<Node>) {
            let p = st.progress;
            if p.sweeping || p.epoch != epoch || !is_member(epoch, node_id(src)) {
                return;
            }
            st.acks.insert(node_id(src));
            if st.acks.len() >= quorum(epoch) {
                self.advance(st, o);
            }
        }

        fn on_sweep_reply(
            &self,
            st: &mut ReconfState,
            src: Id,
            tag: Tag,
            reply: Reply<Value>,
            o: &mut Out<Node>,
        ) {
            let p = st.progress;
            if !p.sweeping || tag.inc != st.inc || tag.epoch != p.epoch {
                return;
            }
            let Some(coord) = st.sweep.as_mut() else {
                return;
            };
            coord.handle_reply(0, tag.call, node_id(src), reply, 1);
            self.drive_sweep(st, o);
        }

        fn on_sweep_timeout(&self, st: &mut ReconfState, o: &mut Out<Node>) {
            let epoch = st.progress.epoch;
            let Some(coord) = st.sweep.as_mut() else {
                return;
            };
            let mut trial = coord.clone();
            time_out(&mut trial, epoch);
            if only_gives_up(&mut trial) {
                o.set_timer(Timer::Sweep, model_timeout());
                return;
            }
            time_out(coord, epoch);
            o.set_timer(Timer::Sweep, model_timeout());
            self.drive_sweep(st, o);
        }
    }

    fn finish(st: &mut ServerState, key: (Id, u8), ret: Option<RegRet>, o: &mut Out<Node>) {
        let about = match (&ret, st.ops.get(&key).map(|c| &c.kind)) {
            (Some(RegRet::Created | RegRet::AlreadyChosen), Some(Kind::Put(own))) => Some(*own),
            (Some(RegRet::Conflict(v) | RegRet::Got(Some(v))), _) => Some(*v),
            _ => None,
        };
        st.ops.remove(&key);
        st.done.insert(key);
        o.cancel_timer(Timer::Op(key.0, key.1));
        let (client, seq) = key;
        match ret {
            Some(ret) => o.send(client, Msg::Done { seq, ret, about }),
            None => o.send(client, Msg::Unavailable { seq }),
        }
    }

    /// Applies `f` to a copy of the state; keeps it (and saves what must
    /// survive a crash, in the same step, so before any message of the
    /// step is delivered) only when it changed.
    fn with_state(
        state: &mut Cow<NodeState>,
        o: &mut Out<Node>,
        f: impl FnOnce(&mut NodeState, &mut Out<Node>),
    ) {
        let mut after = state.as_ref().clone();
        f(&mut after, o);
        if after != *state.as_ref() {
            let before = durable(state.as_ref());
            let now = durable(&after);
            if now != before {
                if let Some(d) = now {
                    o.save(d);
                }
            }
            *state = Cow::Owned(after);
        }
    }

    fn durable(state: &NodeState) -> Option<Durable> {
        match state {
            NodeState::Server(st) => Some(Config::server_durable(st)),
            NodeState::Reconf(st) => Some(Config::reconf_durable(st)),
            _ => None,
        }
    }

    impl Actor for Node {
        type Msg = Msg;
        type State = NodeState;
        type Timer = Timer;
        type Random = ();
        type Storage = Durable;

        fn on_start(&self, id: Id, storage: &Option<Durable>, o: &mut Out<Self>) -> NodeState {
            match self {
                Node::Server(cfg) => {
                    let node = node_id(id);
                    let vote = cfg.preload.vote(node);
                    let st = match storage {
                        Some(Durable::Server {
                            epoch,
                            acceptor,
                            mark,
                            inc,
                        }) => ServerState {
                            epoch: *epoch,
                            acceptor: acceptor.clone(),
                            clock: BallotClock::restore(node, *mark),
                            mark: *mark,
                            inc: inc + 1,
                            ops: BTreeMap::new(),
                            done: BTreeSet::new(),
                        },
                        _ => ServerState {
                            epoch: if is_member(1, node) { 1 } else { 0 },
                            acceptor: AcceptorState {
                                promised: vote.as_ref().map_or(Ballot::ZERO, |v| v.ballot),
                                accepted: vote,
                                decided: false,
                            },
                            clock: BallotClock::restore(node, 0),
                            mark: 0,
                            inc: 0,
                            ops: BTreeMap::new(),
                            done: BTreeSet::new(),
                        },
                    };
                    o.save(Config::server_durable(&st));
                    NodeState::Server(st)
                }
                Node::Reconf(cfg) => {
                    let (progress, mark, inc) = match storage {
                        Some(Durable::Reconf {
                            progress,
                            mark,
                            inc,
                        }) => (*progress, *mark, inc + 1),
                        _ => (
                            Progress {
                                epoch: 2,
                                sweeping: false,
                            },
                            0,
                            0,
                        ),
                    };
                    let mut st = ReconfState {
                        progress,
                        acks: BTreeSet::new(),
                        sweep: None,
                        clock: BallotClock::restore(RECONF_NODE, mark),
                        mark,
                        inc,
                    };
                    cfg.reconf_step(&mut st, o);
                    o.save(Config::reconf_durable(&st));
                    NodeState::Reconf(st)
                }
                Node::Client { script } => {
                    send_op(script, 0, o);
                    NodeState::Client(ClientState {
                        seq: 0,
                        gave_up: false,
                    })
                }
            }
        }

        fn on_msg(&self, id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
            match self {
                Node::Server(cfg) => with_state(state, o, |s, o| {
                    let NodeState::Server(st) = s else { return };
                    match msg {
                        Msg::Put { seq, value } => {
                            cfg.on_client_request(id, st, src, seq, Kind::Put(value), o)
                        }
                        Msg::Get { seq } => cfg.on_client_request(id, st, src, seq, Kind::Get, o),
                        Msg::Peer {
                            tag,
                            epoch,
                            request,
                        } => cfg.on_peer_request(id, st, src, tag, epoch, request, o),
                        Msg::PeerReply { tag, reply, .. } => {
                            cfg.on_peer_reply(st, src, tag, reply, o)
                        }
                        Msg::Adopt { epoch } => cfg.adopt(id, st, epoch, o),
                        _ => {}
                    }
                }),
                Node::Reconf(cfg) => with_state(state, o, |s, o| {
                    let NodeState::Reconf(st) = s else { return };
                    match msg {
                        Msg::Adopted { epoch } => cfg.on_adopted(st, src, epoch, o),
                        Msg::PeerReply { tag, reply, .. } => {
                            cfg.on_sweep_reply(st, src, tag, reply, o)
                        }
                        _ => {}
                    }
                }),
                Node::Client { script } => {
                    let NodeState::Client(cs) = state.as_ref() else {
                        return;
                    };
                    if cs.gave_up || usize::from(cs.seq) >= script.len() {
                        return;
                    }
                    match msg {
                        Msg::Done { seq, .. } if seq == cs.seq => {
                            let next = seq + 1;
                            *state = Cow::Owned(NodeState::Client(ClientState {
                                seq: next,
                                gave_up: false,
                            }));
                            send_op(script, next, o);
                        }
                        Msg::Unavailable { seq } if seq == cs.seq => {
                            *state =
                                Cow::Owned(NodeState::Client(ClientState { seq, gave_up: true }));
                        }
                        _ => {}
                    }
                }
            }
        }

        fn on_timeout(
            &self,
            _id: Id,
            state: &mut Cow<NodeState>,
            timer: &Timer,
            o: &mut Out<Self>,
        ) {
            match self {
                Node::Server(cfg) => with_state(state, o, |s, o| {
                    if let (NodeState::Server(st), Timer::Op(c, q)) = (s, timer) {
                        cfg.on_op_timeout(st, (*c, *q), o);
                    }
                }),
                Node::Reconf(cfg) => with_state(state, o, |s, o| {
                    if let NodeState::Reconf(st) = s {
                        cfg.on_sweep_timeout(st, o);
                    }
                }),
                Node::Client { .. } => {}
            }
        }
    }

    fn send_op(script: &[(NodeId, RegOp)], seq: u8, o: &mut Out<Node>) {
        if let Some((server, op)) = script.get(usize::from(seq)) {
            let msg = match op {
                RegOp::Put(value) => Msg::Put { seq, value: *value },
                RegOp::Get => Msg::Get { seq },
            };
            o.send(actor(*server), msg);
        }
    }

    // --- History and properties. ---

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct History {
        lin: LinearizabilityTester<Id, Register>,
        linearizable: bool,
        puts: BTreeSet<Value>,
        /// Every vote cast: (acceptor, epoch it was cast in, vote).
        votes: BTreeSet<(NodeId, Epoch, Accepted<Value>)>,
        chosen: BTreeSet<Value>,
        returns: BTreeSet<RegRet>,
        unchosen_answer: bool,
    }

    type State = ActorModelState<Node, History>;

    /// Values chosen, epoch-aware (see the module docs): for some epoch
    /// `e`, a majority of `e`'s members voted `(b, v)` while in `e`, or,
    /// in the fast ballot, every member of `e` did.
    fn chosen(votes: &BTreeSet<(NodeId, Epoch, Accepted<Value>)>) -> BTreeSet<Value> {
        let mut count: BTreeMap<(Epoch, &Accepted<Value>), usize> = BTreeMap::new();
        for (node, epoch, vote) in votes {
            if is_member(*epoch, *node) {
                *count.entry((*epoch, vote)).or_default() += 1;
            }
        }
        count
            .into_iter()
            .filter(|((epoch, vote), n)| {
                let needed = if vote.ballot == Ballot::FAST {
                    ids(*epoch).len()
                } else {
                    quorum(*epoch)
                };
                *n >= needed
            })
            .map(|((_, vote), _)| vote.value)
            .collect()
    }

    fn is_client(id: Id) -> bool {
        usize::from(id) > RECONF
    }

    fn record_out(_: &Config, h: &History, env: Envelope<&Msg>) -> Option<History> {
        match env.msg {
            Msg::Put { value, .. } if is_client(env.src) => {
                let mut h = h.clone();
                h.linearizable =
                    h.linearizable && h.lin.on_invoke(env.src, RegOp::Put(*value)).is_ok();
                h.puts.insert(*value);
                Some(h)
            }
            Msg::Get { .. } if is_client(env.src) => {
                let mut h = h.clone();
                h.linearizable = h.linearizable && h.lin.on_invoke(env.src, RegOp::Get).is_ok();
                Some(h)
            }
            Msg::Done { about: Some(v), .. } if !h.unchosen_answer && !h.chosen.contains(v) => {
                let mut h = h.clone();
                h.unchosen_answer = true;
                Some(h)
            }
            Msg::PeerReply {
                vote: Some((epoch, vote)),
                ..
            } => {
                let entry = (node_id(env.src), *epoch, vote.clone());
                if h.votes.contains(&entry) {
                    return None;
                }
                let mut h = h.clone();
                h.votes.insert(entry);
                h.chosen = chosen(&h.votes);
                Some(h)
            }
            _ => None,
        }
    }

    fn record_in(_: &Config, h: &History, env: Envelope<&Msg>) -> Option<History> {
        match env.msg {
            Msg::Done { ret, .. } if is_client(env.dst) => {
                let mut h = h.clone();
                let _ = h.lin.on_return(env.dst, ret.clone());
                h.linearizable = h.lin.serialized_history().is_some();
                h.returns.insert(ret.clone());
                Some(h)
            }
            _ => None,
        }
    }

    fn decided(state: &State) -> BTreeSet<Value> {
        let in_memory = state.actor_states.iter().filter_map(|s| match &**s {
            NodeState::Server(st) => st.acceptor.decided_value().map(|a| a.value),
            _ => None,
        });
        let on_disk = state
            .actor_storages
            .iter()
            .flatten()
            .filter_map(|d| match d {
                Durable::Server { acceptor, .. } => acceptor.decided_value().map(|a| a.value),
                Durable::Reconf { .. } => None,
            });
        in_memory.chain(on_disk).collect()
    }

    /// Once the change finished, every chosen value is on the disks of a
    /// majority of the last epoch's members (accepted or decided), so that
    /// epoch's phase 1 finds it whatever the old members do or lose: what
    /// the sweep is for. No client needs to ask for a value to show it lost.
    fn survives(cfg: &Config, state: &State) -> bool {
        if !change_finished(cfg, state) {
            return true;
        }
        state.history.chosen.iter().all(|v| {
            let holders = ids(cfg.last)
                .iter()
                .filter(|n| match &state.actor_storages[usize::from(actor(**n))] {
                    Some(Durable::Server { acceptor, .. }) => {
                        acceptor.accepted.as_ref().is_some_and(|a| a.value == *v)
                    }
                    _ => false,
                })
                .count();
            holders >= quorum(cfg.last)
        })
    }

    fn change_finished(cfg: &Config, state: &State) -> bool {
        matches!(
            &state.actor_storages[RECONF],
            Some(Durable::Reconf { progress, .. }) if progress.finished(cfg.last)
        )
    }

    // --- Garbage collection (as `collect_garbage` above). ---

    struct Checked {
        inner: ActorModel<Node, Config, History>,
    }

    /// No reply to this broadcast will ever be taken in.
    fn reply_is_dead(state: &State, coordinator: Id, tag: &Tag) -> bool {
        let i = usize::from(coordinator);
        if state.crashed[i] {
            return true; // it restarts as a new generation
        }
        match &*state.actor_states[i] {
            NodeState::Server(st) => {
                tag.inc != st.inc
                    || st
                        .ops
                        .get(&(tag.client, tag.seq))
                        .is_none_or(|op| op.epoch != tag.epoch || op.coord.call() != tag.call)
            }
            NodeState::Reconf(st) => {
                tag.inc != st.inc
                    || !st.progress.sweeping
                    || st.progress.epoch != tag.epoch
                    || st.sweep.as_ref().is_none_or(|c| c.call() != tag.call)
            }
            _ => true,
        }
    }

    /// A request that can never change the acceptor again: epochs and
    /// promises only grow, and decided sticks.
    fn request_is_spent(
        cfg: &Config,
        disk: &Durable,
        epoch: Epoch,
        request: &Request<Value>,
    ) -> bool {
        let Durable::Server {
            epoch: mine,
            acceptor: durable,
            ..
        } = disk
        else {
            return true;
        };
        if *mine > epoch {
            return true;
        }
        if *mine < epoch {
            return false;
        }
        let fast_closed = !members(cfg.mutation, epoch).fast_allowed();
        let refused_forever = match request {
            _ if durable.decided => true,
            Request::Read => true,
            Request::Prepare { ballot } => *ballot <= durable.promised,
            Request::Accept { ballot, .. } => {
                *ballot < durable.promised || (*ballot == Ballot::FAST && fast_closed)
            }
            Request::Decide { .. } => false,
        };
        refused_forever
            && matches!(
                acceptor::handle_in(
                    durable,
                    request.clone(),
                    members(cfg.mutation, epoch).fast_allowed()
                ),
                Step::Reply(_)
            )
    }

    fn is_dead(cfg: &Config, state: &State, env: &Envelope<Msg>) -> bool {
        let dst = usize::from(env.dst);
        if let NodeState::Client(cs) = &*state.actor_states[dst] {
            return match &env.msg {
                Msg::Done { seq, .. } | Msg::Unavailable { seq } => *seq != cs.seq || cs.gave_up,
                _ => true,
            };
        }
        let reconf_progress = match &state.actor_storages[RECONF] {
            Some(Durable::Reconf { progress, .. }) => *progress,
            _ => unreachable!("the reconfigurer saves at start"),
        };
        let disk = state.actor_storages[dst].as_ref().expect("saved at start");
        match &env.msg {
            Msg::PeerReply { tag, .. } => reply_is_dead(state, env.dst, tag),
            Msg::Peer {
                tag,
                epoch,
                request,
            } => {
                tag.as_ref()
                    .is_none_or(|t| reply_is_dead(state, env.src, t))
                    && request_is_spent(cfg, disk, *epoch, request)
            }
            // Counted only while the reconfigurer adopts that epoch.
            Msg::Adopted { epoch } | Msg::Adopt { epoch } => {
                reconf_progress
                    > Progress {
                        epoch: *epoch,
                        sweeping: false,
                    }
                    && match disk {
                        Durable::Server { epoch: mine, .. } => mine >= epoch,
                        Durable::Reconf { .. } => true,
                    }
            }
            Msg::Put { seq, .. } | Msg::Get { seq } => match &*state.actor_states[dst] {
                // Taken already (a client request reaches a server once).
                NodeState::Server(st) if !state.crashed[dst] => {
                    let key = (env.src, *seq);
                    st.ops.contains_key(&key) || st.done.contains(&key)
                }
                _ => false,
            },
            Msg::Done { .. } | Msg::Unavailable { .. } => true,
        }
    }

    fn collect_garbage(cfg: &Config, mut state: State) -> State {
        let dead: Vec<Envelope<Msg>> = state
            .network
            .iter_all()
            .map(|env| env.to_cloned_msg())
            .filter(|env| is_dead(cfg, &state, env))
            .collect();
        if let Network::UnorderedDuplicating(set, last) = &mut state.network {
            *last = None;
            for env in &dead {
                set.remove(env);
            }
        }
        if let Network::UnorderedNonDuplicating(map) = &mut state.network {
            for env in &dead {
                map.remove(env);
            }
        }
        for (i, crashed) in state.crashed.iter().enumerate() {
            if *crashed && !matches!(&*state.actor_states[i], NodeState::Client(_)) {
                state.actor_states[i] = Arc::new(NodeState::Down);
            }
        }
        state
    }

    type Action = ActorModelAction<Msg, Timer, ()>;

    impl Model for Checked {
        type State = State;
        type Action = Action;

        fn init_states(&self) -> Vec<State> {
            let cfg = &self.inner.cfg;
            self.inner
                .init_states()
                .into_iter()
                .map(|s| collect_garbage(cfg, s))
                .collect()
        }

        fn actions(&self, state: &State, actions: &mut Vec<Action>) {
            self.inner.actions(state, actions);
            let shape = self.inner.cfg.shape;
            if shape.writer_first {
                let first = actions.iter().find(|a| {
                    matches!(a, ActorModelAction::Deliver { src, msg: Msg::Put { .. }, .. }
                        if usize::from(*src) == CLIENT_A)
                });
                if let Some(first) = first.cloned() {
                    actions.clear();
                    actions.push(first);
                    return;
                }
            }
            actions.retain(|a| match a {
                ActorModelAction::Crash(id) => {
                    usize::from(*id) < RECONF
                        || (usize::from(*id) == RECONF && shape.reconf_crashes)
                }
                ActorModelAction::Recover(_) => !shape.atomic_restart,
                _ => true,
            });
        }

        fn next_state(&self, state: &State, action: Action) -> Option<State> {
            let restart = match &action {
                ActorModelAction::Crash(id) if self.inner.cfg.shape.atomic_restart => Some(*id),
                _ => None,
            };
            let mut next = self.inner.next_state(state, action)?;
            if let Some(id) = restart {
                next = self
                    .inner
                    .next_state(&next, ActorModelAction::Recover(id))?;
            }
            Some(collect_garbage(&self.inner.cfg, next))
        }

        fn format_action(&self, action: &Action) -> String {
            self.inner.format_action(action)
        }

        fn within_boundary(&self, state: &State) -> bool {
            Model::within_boundary(&self.inner, state)
        }

        fn properties(&self) -> Vec<Property<Self>> {
            vec![
                Property::always("linearizable", |_, s: &State| s.history.linearizable),
                Property::always("agreement", |_, s: &State| {
                    let mut all = s.history.chosen.clone();
                    all.extend(decided(s));
                    all.len() <= 1
                }),
                Property::always("answers are chosen", |_, s: &State| {
                    !s.history.unchosen_answer
                }),
                Property::always("decided is chosen", |_, s: &State| {
                    decided(s).is_subset(&s.history.chosen)
                }),
                Property::always("validity", |_, s: &State| {
                    let mut all = s.history.chosen.clone();
                    all.extend(decided(s));
                    all.is_subset(&s.history.puts)
                }),
                Property::always("chosen survives the change", |m: &Checked, s: &State| {
                    survives(&m.inner.cfg, s)
                }),
                Property::sometimes("value chosen", |_, s: &State| !s.history.chosen.is_empty()),
                Property::sometimes("change finished", |m: &Checked, s: &State| {
                    change_finished(&m.inner.cfg, s)
                }),
                Property::sometimes("chosen and change finished", |m: &Checked, s: &State| {
                    change_finished(&m.inner.cfg, s) && !s.history.chosen.is_empty()
                }),
                Property::sometimes("get sees a value", |_, s: &State| {
                    s.history
                        .returns
                        .iter()
                        .any(|r| matches!(r, RegRet::Got(Some(_))))
                }),
            ]
        }
    }

    const SAFETY: [&str; 6] = [
        "linearizable",
        "agreement",
        "answers are chosen",
        "decided is chosen",
        "validity",
        "chosen survives the change",
    ];

    /// The configuration: servers 1..=4, the reconfigurer, client A (fast
    /// PUT `a` through server 1) and client B (PUT `b` through server 4,
    /// then GET through server 2), with `crashes` crashes.
    /// One search: the protocol (or a broken variant), the clients, the
    /// crashes, the change modelled and the shape of the search.
    #[derive(Clone, Debug)]
    pub(super) struct Search {
        pub name: &'static str,
        pub shape: Shape,
        pub mutation: Mutation,
        /// Crashes in total (each restarts from what the actor saved).
        pub crashes: usize,
        /// The last epoch the reconfigurer adopts (5: 3 -> 4 -> 3; 3: 3 -> 4;
        /// 2: only the transitional epoch of the addition).
        pub last: Epoch,
        pub preload: Preload,
        /// Client A's and client B's requests, in order: (server, op).
        pub a: Vec<(NodeId, RegOp)>,
        pub b: Vec<(NodeId, RegOp)>,
    }

    fn model(search: &Search) -> Checked {
        let Search {
            shape,
            mutation,
            crashes,
            last,
            preload,
            ..
        } = *search;
        let cfg = Config {
            shape,
            mutation,
            max_restarts: crashes as u8,
            last,
            preload,
        };
        let votes: BTreeSet<(NodeId, Epoch, Accepted<Value>)> = (1..=3)
            .filter_map(|n| preload.vote(n).map(|v| (n, 1, v)))
            .collect();
        let mut actors: Vec<Node> = (0..SERVERS).map(|_| Node::Server(cfg.clone())).collect();
        actors.push(Node::Reconf(cfg.clone()));
        actors.push(Node::Client {
            script: search.a.clone(),
        });
        actors.push(Node::Client {
            script: search.b.clone(),
        });
        let inner = ActorModel::new(
            cfg,
            History {
                // A preloaded value is chosen: the register starts full.
                lin: LinearizabilityTester::new(Register(chosen(&votes).into_iter().next())),
                linearizable: true,
                puts: votes.iter().map(|(_, _, v)| v.value).collect(),
                chosen: chosen(&votes),
                votes,
                returns: BTreeSet::new(),
                unchosen_answer: false,
            },
        )
        .actors(actors)
        .init_network(if shape.duplicating {
            Network::new_unordered_duplicating([])
        } else {
            Network::new_unordered_nonduplicating([])
        })
        .lossy_network(LossyNetwork::No)
        .max_crashes(crashes)
        .record_msg_out(record_out)
        .record_msg_in(record_in)
        .within_boundary(|cfg, state| {
            let clients_up = state.crashed.iter().skip(RECONF + 1).all(|c| !c);
            let used: u32 = state
                .actor_storages
                .iter()
                .flatten()
                .map(Durable::restarts)
                .sum();
            let down = state.crashed.iter().filter(|c| **c).count() as u32;
            clients_up && used + down <= u32::from(cfg.max_restarts)
        });
        Checked { inner }
    }

    fn print_trace(name: &str, property: &str, path: &Path<State, Action>) {
        let actions = path.clone().into_actions();
        println!(
            "[{name}] counterexample for \"{property}\", {} steps:",
            actions.len()
        );
        for (i, action) in actions.iter().enumerate() {
            println!("  {i:>3}: {action:?}");
        }
        println!("  votes: {:?}", path.last_state().history.votes);
        println!("  history: {:?}", path.last_state().history.lin);
    }

    /// Runs `search` with the correct protocol: a depth-first search
    /// bounded by `secs`. With `exhaustive`, the search must end before the
    /// bound (every reachable state visited), else the test fails. No safety
    /// property may fail, and every property in `sometimes` must be reached
    /// (so the check is not vacuous). Returns the unique states.
    pub(super) fn check_safe(
        search: &Search,
        exhaustive: bool,
        sometimes: &[&'static str],
        secs: u64,
    ) -> usize {
        let name = search.name;
        let start = Instant::now();
        let checker = model(search)
            .checker()
            .threads(2)
            .timeout(std::time::Duration::from_secs(secs))
            .spawn_dfs()
            .join();
        let finished = start.elapsed().as_secs() < secs;
        println!(
            "[{name}] DFS: {} unique states ({} generated), max depth {}, {:.1?}, {}",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            start.elapsed(),
            if finished {
                "exhaustive".to_string()
            } else {
                format!("stopped by the {secs} s bound (not exhaustive)")
            }
        );
        let mut failed = Vec::new();
        for p in SAFETY {
            if let Some(path) = checker.discovery(p) {
                print_trace(name, p, &path);
                failed.push(p);
            }
        }
        assert!(failed.is_empty(), "[{name}] violated: {failed:?}");
        assert!(
            finished || !exhaustive,
            "[{name}] did not finish within {secs} s: not exhaustive"
        );
        for p in sometimes {
            let path = checker
                .discovery(p)
                .unwrap_or_else(|| panic!("[{name}] \"{p}\" never reached: the check is vacuous"));
            println!(
                "[{name}] sometimes \"{p}\": reached in {} steps",
                path.into_actions().len()
            );
        }
        checker.unique_state_count()
    }

    /// A plain breadth-first search of `search` (within its boundary): the
    /// unique states, and the projections (everything but the network) of
    /// the states in which no actor is down.
    pub(super) fn explore(search: &Search) -> (usize, std::collections::HashSet<u64>) {
        use std::hash::{Hash, Hasher};
        super::explore(&model(search), |s: &State| {
            if s.crashed.iter().any(|c| *c) {
                return None;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.actor_states.hash(&mut h);
            s.actor_storages.hash(&mut h);
            s.timers_set.hash(&mut h);
            s.history.hash(&mut h);
            Some(h.finish())
        })
    }

    /// Search of a broken variant until its first counterexample (the
    /// shortest with `bfs`; else depth-first, the first found), within
    /// `secs`; returns the properties caught and its length.
    pub(super) fn check_caught(
        search: &Search,
        bfs: bool,
        secs: u64,
    ) -> (Vec<&'static str>, usize) {
        let start = Instant::now();
        let checker = model(search)
            .checker()
            .threads(2)
            .finish_when(HasDiscoveries::AnyFailures)
            .timeout(std::time::Duration::from_secs(secs));
        if bfs {
            caught_in(search.name, checker.spawn_bfs().join(), start)
        } else {
            caught_in(search.name, checker.spawn_dfs().join(), start)
        }
    }

    fn caught_in(
        name: &str,
        checker: impl Checker<Checked>,
        start: Instant,
    ) -> (Vec<&'static str>, usize) {
        let caught: Vec<&'static str> = SAFETY
            .into_iter()
            .filter(|p| checker.discovery(p).is_some())
            .collect();
        println!(
            "[{name}] {} unique states, {:.1?}, caught: {caught:?}",
            checker.unique_state_count(),
            start.elapsed()
        );
        let first = caught
            .first()
            .unwrap_or_else(|| panic!("[{name}] the broken variant was NOT caught"));
        let path = checker.discovery(first).expect("just found");
        print_trace(name, first, &path);
        (caught, path.into_actions().len())
    }
}

/// Seconds for each time-bounded membership search: `PAXOS_KV_MODEL_SECS`,
/// else 30 (see [`bound_secs`]).
fn members_secs() -> u64 {
    bound_secs()
}

/// The bound on an exhaustive membership search, only there so that a
/// search that grew by mistake fails instead of hanging CI: such a search
/// must end well before it, or the test fails as not exhaustive.
const EXHAUSTIVE_LIMIT_SECS: u64 = 1800;

mod members {
    //! The searches of issue 10's change, named (see [`membership_change`]).
    use super::membership_change::{Mutation, Preload, Search, Shape};
    use super::RegOp;

    /// Issue 10's small configuration: 3 -> 4 -> 3 with client A's fast
    /// PUT of `a` through server 1 racing the change from its start, and
    /// one crash of any server, at any moment.
    pub fn writer_and_server_crash() -> Search {
        Search {
            name: "members 3-4-3, writer, server crash",
            shape: Shape {
                reconf_crashes: false,
                announce: false,
                writer_first: true,
                ..Shape::REDUCED
            },
            mutation: Mutation::None,
            crashes: 1,
            last: 5,
            preload: Preload::None,
            a: vec![(1, RegOp::Put('a'))],
            b: vec![],
        }
    }

    /// 3 -> 4 -> 3 from a value already chosen, with one crash of anything,
    /// the reconfigurer mid-sweep included (its restart sweeps again while
    /// the old sweep's messages are still in flight).
    pub fn any_crash_from(preload: Preload) -> Search {
        Search {
            name: match preload {
                Preload::FastAt123 => "members 3-4-3 from a chosen fast, any crash",
                _ => "members 3-4-3 from a chosen at 1,2, any crash",
            },
            shape: Shape::REDUCED,
            mutation: Mutation::None,
            crashes: 1,
            last: 5,
            preload,
            a: vec![],
            b: vec![],
        }
    }

    /// The first transitional epoch of the addition, from `a` chosen fast
    /// by {1,2,3}, with client B's PUT of `b` through the new node 4: where
    /// the fast-ballot mutations break agreement.
    pub fn fast_value_and_new_writer(mutation: Mutation) -> Search {
        Search {
            name: "members 3-4 (transitional) from a chosen fast, writer b at node 4",
            shape: Shape::REDUCED,
            mutation,
            crashes: 0,
            last: 2,
            preload: Preload::FastAt123,
            a: vec![],
            b: vec![(4, RegOp::Put('b'))],
        }
    }

    /// Everything together, every behaviour of the model (duplicating
    /// network, crashes that stay down a while): two writers, a reader,
    /// one crash of anything. Far too big to finish: a bug finder.
    pub fn everything() -> Search {
        Search {
            name: "members 3-4-3, two writers, reader, any crash (bounded)",
            shape: Shape::FULL,
            mutation: Mutation::None,
            crashes: 1,
            last: 5,
            preload: Preload::None,
            a: vec![(1, RegOp::Put('a'))],
            b: vec![(4, RegOp::Put('b')), (2, RegOp::Get)],
        }
    }
}

/// Issue 10, exhaustively: the change from 3 to 4 members and back to 3
/// with a concurrent fast writer and one crash of any server at any
/// moment. Every reachable state is visited; the test fails if the search
/// does not end.
#[test]
fn membership_change_with_writer_and_crash_is_safe_exhaustively() {
    membership_change::check_safe(
        &members::writer_and_server_crash(),
        true,
        &[
            "value chosen",
            "change finished",
            "chosen and change finished",
        ],
        EXHAUSTIVE_LIMIT_SECS,
    );
}

/// Issue 10, exhaustively: the whole change with one crash of anything,
/// the reconfigurer (the node running the change) included, from a value
/// chosen fast by {1,2,3} and from one chosen at {1,2} only: the value is
/// on a majority of the final members when the change ends.
#[test]
fn membership_change_with_coordinator_crash_is_safe_exhaustively() {
    use membership_change::Preload;
    for preload in [Preload::FastAt123, Preload::ClassicAt12] {
        membership_change::check_safe(
            &members::any_crash_from(preload),
            true,
            &["change finished", "chosen and change finished"],
            EXHAUSTIVE_LIMIT_SECS,
        );
    }
}

/// Everything together (two writers, a reader, any crash, a duplicating
/// network): a depth-first search bounded by [`members_secs`], a bug finder
/// over what the exhaustive searches leave out.
#[test]
fn membership_change_with_two_writers_reader_and_crash_bounded() {
    membership_change::check_safe(
        &members::everything(),
        false,
        &[
            "value chosen",
            "change finished",
            "chosen and change finished",
            "get sees a value",
        ],
        members_secs(),
    );
}

/// The new node counted before it caught up: a transitional epoch keeps
/// the fast ballot open with the new members as electorate. A value chosen
/// fast by {1,2,3} in epoch 1 is undone: the empty node 4 votes fast for
/// another value in epoch 2, and a phase 1 at {2,3,4} that counts node 4
/// in the electorate proposes it.
#[test]
fn mutation_new_member_votes_fast_before_catch_up_is_caught() {
    let search =
        members::fast_value_and_new_writer(membership_change::Mutation::FastOpenInTransition);
    let (caught, steps) = membership_change::check_caught(&search, true, EXHAUSTIVE_LIMIT_SECS);
    assert!(caught.contains(&"agreement"), "{caught:?}");
    println!("fast ballot open in the transitional epoch: caught by {caught:?} in {steps} steps");
}

/// The fast ballot closed in the transitional epoch, but the new members
/// as its electorate: node 4's empty promise makes a phase 1 drop the fast
/// value the old members chose.
#[test]
fn mutation_new_member_in_electorate_is_caught() {
    let search =
        members::fast_value_and_new_writer(membership_change::Mutation::NewMemberInElectorate);
    let (caught, steps) = membership_change::check_caught(&search, true, EXHAUSTIVE_LIMIT_SECS);
    assert!(caught.contains(&"agreement"), "{caught:?}");
    println!("new member in the electorate: caught by {caught:?} in {steps} steps");
}

/// Control for the two mutations above: the correct protocol in their
/// configuration is safe, exhaustively, and client B's PUT is answered.
#[test]
fn membership_mutation_configuration_is_safe_without_the_mutation() {
    membership_change::check_safe(
        &members::fast_value_and_new_writer(membership_change::Mutation::None),
        true,
        &["value chosen"],
        EXHAUSTIVE_LIMIT_SECS,
    );
}

/// Why the exhaustive membership searches may restart a crashed actor in
/// the step that crashes it ([`membership_change::Shape::REDUCED`]): an
/// actor that is down neither receives, sends nor times out, and what it
/// restarts from (its storage) does not change while it is down, so staying
/// down is the same as being slow. On the change with one crash of anything
/// (the reconfigurer mid-sweep included), from a value chosen fast, a
/// breadth-first search where a crashed actor stays down any number of
/// steps and one where it restarts at once reach the same states of actors,
/// storage, timers and history (properties look at nothing else); the
/// first has more states.
///
/// (The exhaustive searches also deliver each message once, as HTTP does:
/// the transport sends a request once and takes one answer. That is not an
/// equivalence: in this same configuration a duplicating network reaches
/// 4,250 more projections out of 146,156, every one a sweep coordinator
/// that took two answers to one request from one acceptor, a promise and
/// then `Decided`. The bounded search keeps duplication.)
#[test]
fn membership_restart_reduction_adds_no_behavior() {
    use membership_change::{Preload, Search, Shape};
    let reduced = Search {
        name: "members 3-4 from a chosen fast, any crash",
        last: 3,
        ..members::any_crash_from(Preload::FastAt123)
    };
    let stays_down = Search {
        shape: Shape {
            atomic_restart: false,
            ..Shape::REDUCED
        },
        ..reduced.clone()
    };
    let start = Instant::now();
    let (down_states, down_projections) = membership_change::explore(&stays_down);
    let (states, projections) = membership_change::explore(&reduced);
    println!(
        "[members restart reduction] down for a while: {down_states} states, restart at once: \
         {states} states, {} distinct projections, {:.1?}",
        projections.len(),
        start.elapsed()
    );
    assert!(down_states > states, "the reduction must be in play");
    assert_eq!(
        down_projections, projections,
        "restarting at once lost a state of actors, storage, timers or history"
    );
}

/// No sweep between the epochs, in both exhaustive configurations: after
/// 3 -> 4 and the removal of node 1, a value chosen at {1,2} is on no
/// majority of {2,3,4}.
#[test]
fn mutation_skip_sweep_is_caught() {
    use membership_change::Preload;
    let searches = [
        members::any_crash_from(Preload::ClassicAt12),
        members::writer_and_server_crash(),
    ];
    for search in searches {
        let search = membership_change::Search {
            mutation: membership_change::Mutation::SkipSweep,
            ..search
        };
        let (caught, steps) =
            membership_change::check_caught(&search, false, EXHAUSTIVE_LIMIT_SECS);
        assert!(caught.contains(&"chosen survives the change"), "{caught:?}");
        println!(
            "[{}] no sweep: caught by {caught:?} in {steps} steps",
            search.name
        );
    }
}
