//! Model checking of the real pure Paxos core (`src/paxos/`) with stateright.
//!
//! The adapter below wraps the real core as stateright actors: three servers,
//! each an acceptor ([`acceptor::handle`] over its [`AcceptorState`]) and a
//! coordinator of client requests ([`Round`] for PUT and recovery,
//! [`ReadRound`] for GET, following DESIGN.md "GET" and `src/node.rs`), and two
//! clients that PUT different values and GET through different servers. The
//! network loses, duplicates and reorders messages, and servers crash and
//! restart from what they saved (acceptor state and ballot clock mark), which
//! they save before any reply leaves, as the node does.
//!
//! Checked (API.md "Guarantees"): linearizability as a write-once register
//! with "not found" (4), agreement (1), validity (2), and durability (3)
//! through crashes. A `sometimes` property shows the check is not vacuous.
//! The mutation tests at the end run the same model around deliberately
//! broken variants of the core and assert that the checker catches each.
//!
//! Run: `cargo test --release --test model_check -- --nocapture`.
//! `PAXOS_KV_MODEL_DEEP=1` adds a larger configuration.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxos_kv::paxos::{
    acceptor, Accepted, AcceptorState, Ballot, BallotClock, Members, NodeId, Progress,
    ReadProgress, ReadRound, Reply, Request, Round, Step,
};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, LossyNetwork, Network, Out,
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

/// A write-once register. PUT outcomes follow API.md: `Created` (201) and
/// `AlreadyChosen` (200) are both a success meaning "the register now holds
/// my value"; the spec treats them alike (see the module docs of the report:
/// the node answers 200 to a PUT whose own earlier round got its value
/// accepted, so "empty before" cannot be required of 201 vs 200).
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
            (RegOp::Put(v), RegRet::Created | RegRet::AlreadyChosen) => match self.0 {
                None => {
                    self.0 = Some(*v);
                    true
                }
                Some(w) => w == *v,
            },
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
    call: u8,
    /// The coordinator's incarnation: a reply never reaches a later
    /// incarnation (its HTTP connection died with the process).
    incarnation: u8,
}

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
    /// announcement, whose answer the node drops).
    Peer {
        tag: Option<Tag>,
        request: Request<Value>,
    },
    /// Acceptor to coordinator. `vote` is a ghost field (not in the node's
    /// protocol): the vote an `Accepted` reply stands for, so the checker can
    /// tell which values were chosen.
    PeerReply {
        tag: Tag,
        reply: Reply<Value>,
        vote: Option<Accepted<Value>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// The coordinator of a client operation stops waiting: a read gives up
    /// on stragglers, a proposer round counts the silent members as
    /// unreachable.
    Op(Id, u8),
    /// Only with [`Mutation::ReplyBeforeSave`]: the delayed write.
    Flush,
}

/// What a server keeps across crashes: the node's sled contents for one key
/// plus the ballot clock's reservation mark.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Durable {
    acceptor: AcceptorState<Value>,
    mark: u64,
    /// Bumped at every start; bounds restarts (see [`Config::max_restarts`]).
    incarnation: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Put(Value),
    Get,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Reading(ReadRound<Value>),
    Proposing(Round<Value>),
}

/// One client operation this server coordinates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Coord {
    kind: Kind,
    phase: Phase,
    /// Broadcast counter, for [`Tag::call`].
    call: u8,
    /// Proposer rounds started so far (bounded by [`Config::max_rounds`]).
    rounds: u8,
    /// Highest round seen in a rejection: the next ballot goes above it.
    seen_round: u64,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientState {
    /// The operation in flight (or the number of operations when done).
    seq: u8,
    /// Got a 503: the outcome is unknown, the client stops.
    gave_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeState {
    Server(ServerState),
    Client(ClientState),
    /// A crashed server (only set by the checker's garbage collection).
    Down,
}

/// A deliberately broken variant of the core, built in the adapter around
/// the real core (src/ is not touched).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mutation {
    /// The real core, driven as the node drives it.
    None,
    /// An acceptor accepts `Accept(b)` even when `b < promised` (invariant 1).
    AcceptBelowPromise,
    /// A server replies before its new state is durable, and writes it only
    /// later (invariant 1, durability): a crash in between loses a promise.
    ReplyBeforeSave,
    /// A server restores its ballot clock from 0 after a restart, so it
    /// reuses ballots (invariant 2).
    ClockFromZero,
    /// A quorum read compares values alone, not (ballot, value) (invariant 4).
    ValueOnlyRead,
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

fn node_id(id: Id) -> NodeId {
    usize::from(id) as NodeId + 1
}

fn members() -> Members {
    Members::new((0..SERVERS).map(|i| i as NodeId + 1))
}

fn broadcast(tag: Option<Tag>, request: Request<Value>, o: &mut Out<Node>) {
    for m in 0..SERVERS {
        o.send(
            Id::from(m),
            Msg::Peer {
                tag,
                request: request.clone(),
            },
        );
    }
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
        o.save(Durable {
            acceptor: st.acceptor.clone(),
            mark: st.mark,
            incarnation: st.incarnation,
        });
    }

    /// The acceptor side: `Node::handle_acceptor`.
    fn on_peer_request(
        &self,
        st: &mut ServerState,
        src: Id,
        tag: Option<Tag>,
        request: Request<Value>,
        o: &mut Out<Node>,
    ) {
        let vote = match &request {
            Request::Accept { ballot, value } => Some(Accepted {
                ballot: *ballot,
                value: *value,
            }),
            _ => None,
        };
        let below_promise = matches!(&request,
            Request::Accept { ballot, .. } if *ballot < st.acceptor.promised);
        let step = if self.mutation == Mutation::AcceptBelowPromise && below_promise {
            // Broken: judge the accept as if nothing higher had been promised.
            let forgetful = AcceptorState {
                promised: Ballot::ZERO,
                ..st.acceptor.clone()
            };
            acceptor::handle(&forgetful, request)
        } else {
            acceptor::handle(&st.acceptor, request)
        };
        let reply = match step {
            Step::Reply(reply) => reply,
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
            o.send(src, Msg::PeerReply { tag, reply, vote });
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
        let mut coord = Coord {
            phase: Phase::Reading(ReadRound::start(members())),
            kind: kind.clone(),
            call: 0,
            rounds: 0,
            seen_round: 0,
        };
        o.set_timer(Timer::Op(client, seq), model_timeout());
        match kind {
            Kind::Get => {
                coord.call += 1;
                let tag = Tag {
                    client,
                    seq,
                    call: coord.call,
                    incarnation: st.incarnation,
                };
                broadcast(Some(tag), Request::Read, o);
                st.ops.insert(key, coord);
            }
            Kind::Put(_) => {
                st.ops.insert(key, coord);
                self.new_round(id, st, key, o);
            }
        }
    }

    /// Starts the next proposer round of `key` (`Node::propose` and
    /// `Node::next_ballot`), or answers 503 when the rounds are used up.
    fn new_round(&self, id: Id, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
        let coord = st.ops.get(&key).expect("op in hand");
        if coord.rounds >= self.max_rounds {
            self.finish(st, key, None, o);
            return;
        }
        let next = st.clock.next(coord.seen_round);
        if let Some(mark) = next.reserve {
            // Invariant 2: the reservation is durable before the ballot is used.
            st.mark = mark;
            self.save(st, o);
        }
        let coord = st.ops.get_mut(&key).expect("op in hand");
        let own = match coord.kind {
            Kind::Put(v) => Some(v),
            Kind::Get => None,
        };
        debug_assert_eq!(next.ballot.node, node_id(id));
        let (round, prepare) = Round::start(next.ballot, members(), own);
        coord.rounds += 1;
        coord.call += 1;
        coord.phase = Phase::Proposing(round);
        let tag = Tag {
            client: key.0,
            seq: key.1,
            call: coord.call,
            incarnation: st.incarnation,
        };
        broadcast(Some(tag), prepare, o);
        o.set_timer(Timer::Op(key.0, key.1), model_timeout());
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

    fn on_progress(
        &self,
        id: Id,
        st: &mut ServerState,
        key: (Id, u8),
        progress: Progress<Value>,
        o: &mut Out<Node>,
    ) {
        let coord = st.ops.get_mut(&key).expect("op in hand");
        match progress {
            Progress::Wait => {}
            Progress::Send(accept) => {
                coord.call += 1;
                let tag = Tag {
                    client: key.0,
                    seq: key.1,
                    call: coord.call,
                    incarnation: st.incarnation,
                };
                broadcast(Some(tag), accept, o);
            }
            Progress::Chosen {
                ballot,
                value,
                proposed,
            } => {
                broadcast(None, Request::Decide { ballot, value }, o);
                let ret = match coord.kind {
                    Kind::Put(_) if proposed => RegRet::Created,
                    Kind::Put(own) => same_or_conflict(value, own),
                    Kind::Get => RegRet::Got(Some(value)),
                };
                self.finish(st, key, Some(ret), o);
            }
            Progress::Empty => {
                assert_eq!(coord.kind, Kind::Get, "a round with a value never ends empty");
                self.finish(st, key, Some(RegRet::Got(None)), o);
            }
            Progress::Preempted { seen } => {
                coord.seen_round = coord.seen_round.max(seen.round);
                self.new_round(id, st, key, o);
            }
            Progress::Stalled => self.new_round(id, st, key, o),
        }
    }

    fn on_read_progress(
        &self,
        id: Id,
        st: &mut ServerState,
        key: (Id, u8),
        progress: ReadProgress<Value>,
        o: &mut Out<Node>,
    ) {
        match progress {
            ReadProgress::Wait => {}
            ReadProgress::Chosen { ballot, value } => {
                broadcast(None, Request::Decide { ballot, value }, o);
                self.finish(st, key, Some(RegRet::Got(Some(value))), o);
            }
            ReadProgress::Empty => self.finish(st, key, Some(RegRet::Got(None)), o),
            ReadProgress::Stalled => self.finish(st, key, None, o),
            // GET step 5: the votes disagree; finish the instance.
            ReadProgress::Recover => self.new_round(id, st, key, o),
        }
    }

    fn on_peer_reply(
        &self,
        id: Id,
        st: &mut ServerState,
        src: Id,
        tag: Tag,
        reply: Reply<Value>,
        o: &mut Out<Node>,
    ) {
        let key = (tag.client, tag.seq);
        let Some(coord) = st.ops.get_mut(&key) else {
            return;
        };
        if coord.call != tag.call || st.incarnation != tag.incarnation {
            return; // an answer to an earlier broadcast: its channel is gone
        }
        let from = node_id(src);
        match &mut coord.phase {
            Phase::Reading(read) => {
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
                let progress = read.on_reply(from, reply);
                self.on_read_progress(id, st, key, progress, o);
            }
            Phase::Proposing(round) => {
                let progress = round.on_reply(from, reply);
                self.on_progress(id, st, key, progress, o);
            }
        }
    }

    fn on_op_timeout(&self, id: Id, st: &mut ServerState, key: (Id, u8), o: &mut Out<Node>) {
        let Some(coord) = st.ops.get_mut(&key) else {
            return;
        };
        // A timeout that would only answer 503 is left out: a coordinator
        // that gives up is, for every property checked, the same as one that
        // waits forever (a 503 records nothing and changes no acceptor), and
        // waiting forever is already a behavior of the model. Keeping the
        // timer and changing nothing makes the step a no-op for the checker.
        let would_give_up = match &coord.phase {
            Phase::Reading(read) => matches!(read.clone().give_up(), ReadProgress::Stalled),
            Phase::Proposing(_) => coord.rounds >= self.max_rounds,
        };
        if would_give_up {
            o.set_timer(Timer::Op(key.0, key.1), model_timeout());
            return;
        }
        match &mut coord.phase {
            Phase::Reading(read) => {
                let progress = read.give_up();
                self.on_read_progress(id, st, key, progress, o);
            }
            Phase::Proposing(round) => {
                // A call that times out is an unreachable member.
                let mut progress = Progress::Stalled;
                for m in members().iter() {
                    match round.on_unreachable(m) {
                        Progress::Wait => {}
                        done => {
                            progress = done;
                            break;
                        }
                    }
                }
                self.on_progress(id, st, key, progress, o);
            }
        }
    }

    fn restart(&self, id: Id, storage: &Option<Durable>, o: &mut Out<Node>) -> ServerState {
        let (acceptor, mark, incarnation) = match storage {
            Some(d) => (d.acceptor.clone(), d.mark, d.incarnation + 1),
            None => (AcceptorState::default(), 0, 0),
        };
        let restored = if self.mutation == Mutation::ClockFromZero {
            0 // Broken: the durable mark is ignored.
        } else {
            mark
        };
        let mut st = ServerState {
            acceptor,
            clock: BallotClock::restore(node_id(id), restored),
            mark,
            incarnation,
            ops: BTreeMap::new(),
            done: BTreeSet::new(),
            unsaved: false,
        };
        self.save(&mut st, o);
        st
    }
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

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<NodeState>,
        src: Id,
        msg: Msg,
        o: &mut Out<Self>,
    ) {
        match self {
            Node::Server(cfg) => with_server(state, |st| match msg {
                Msg::Put { seq, value } => {
                    cfg.on_client_request(id, st, src, seq, Kind::Put(value), o)
                }
                Msg::Get { seq } => cfg.on_client_request(id, st, src, seq, Kind::Get, o),
                Msg::Peer { tag, request } => cfg.on_peer_request(st, src, tag, request, o),
                Msg::PeerReply { tag, reply, .. } => cfg.on_peer_reply(id, st, src, tag, reply, o),
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
        Msg::Done {
            about: Some(v), ..
        } if !h.unchosen_answer && !h.chosen.contains(v) => {
            let mut h = h.clone();
            h.unchosen_answer = true;
            Some(h)
        }
        Msg::Peer {
            tag: Some(tag),
            request: Request::Prepare { ballot },
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
fn record_in(_: &Config, h: &History, env: Envelope<&Msg>) -> Option<History> {
    match env.msg {
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

/// Values chosen: a majority of acceptors voted for them in one ballot
/// (invariant 4's definition, over every vote ever cast).
fn chosen(votes: &BTreeSet<(NodeId, Accepted<Value>)>) -> BTreeSet<Value> {
    let mut count: BTreeMap<&Accepted<Value>, usize> = BTreeMap::new();
    for (_, vote) in votes {
        *count.entry(vote).or_default() += 1;
    }
    let quorum = members().quorum();
    count
        .into_iter()
        .filter(|(_, n)| *n >= quorum)
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
}

/// Whether a server that is up now may ever restart: restarts are bounded
/// in total, and a server that is down holds one already.
fn can_restart(cfg: &Config, state: &State) -> bool {
    let used: u32 = state
        .actor_storages
        .iter()
        .flatten()
        .map(|d| u32::from(d.incarnation))
        .sum();
    let down = state.crashed.iter().filter(|c| **c).count() as u32;
    used + down < u32::from(cfg.max_restarts)
}

/// No reply to this broadcast will ever be taken in by its coordinator.
fn reply_is_dead(state: &State, coordinator: Id, tag: &Tag) -> bool {
    match &*state.actor_states[usize::from(coordinator)] {
        NodeState::Server(st) => {
            state.crashed[usize::from(coordinator)]
                || tag.incarnation != st.incarnation
                || st
                    .ops
                    .get(&(tag.client, tag.seq))
                    .is_none_or(|c| c.call != tag.call)
        }
        NodeState::Down | NodeState::Client(_) => true,
    }
}

/// A request whose answer nobody takes is dead once it can no longer change
/// the acceptor: judged on the durable state, which only moves up (promise
/// grows, decided sticks), so what is refused now is refused forever. The
/// real core confirms the request changes nothing (`Step::Reply`).
fn request_is_spent(cfg: &Config, durable: &AcceptorState<Value>, request: &Request<Value>) -> bool {
    let refused_forever = match request {
        _ if durable.decided => true,
        Request::Read => true,
        Request::Prepare { ballot } => *ballot <= durable.promised,
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
    let durable = &state.actor_storages[dst]
        .as_ref()
        .expect("a server saves at start")
        .acceptor;
    match &env.msg {
        Msg::PeerReply { tag, .. } => reply_is_dead(state, env.dst, tag),
        Msg::Peer { tag, request } => {
            let answer_dead = tag.as_ref().is_none_or(|t| reply_is_dead(state, env.src, t));
            answer_dead && request_is_spent(cfg, durable, request)
        }
        Msg::Put { seq, .. } | Msg::Get { seq } => match &*state.actor_states[dst] {
            // Taken already, and no restart can make the server forget it.
            NodeState::Server(st) if !state.crashed[dst] && (cfg.client_at_most_once || !can_restart(cfg, state)) => {
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
            .map(|s| collect_garbage(cfg, s))
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Self::Action>) {
        self.inner.actions(state, actions)
    }

    fn next_state(&self, state: &State, action: Self::Action) -> Option<State> {
        let next = self.inner.next_state(state, action)?;
        Some(collect_garbage(&self.inner.cfg, next))
    }

    fn format_action(&self, action: &Self::Action) -> String {
        self.inner.format_action(action)
    }

    fn within_boundary(&self, state: &State) -> bool {
        Model::within_boundary(&self.inner, state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            // API.md guarantee 4, with durability (3) through crashes.
            Property::always("linearizable", |_, state: &State| state.history.linearizable),
            // Guarantee 1: at most one value chosen (or decided anywhere).
            Property::always("agreement", |_, state: &State| {
                let mut all = state.history.chosen.clone();
                all.extend(decided(state));
                all.len() <= 1
            }),
            // API.md: "A GET never returns a value that is not chosen"; nor
            // does a PUT answer name one.
            Property::always("answers are chosen", |_, state: &State| {
                !state.history.unchosen_answer
            }),
            // Invariant 5: only a chosen value is ever recorded as decided.
            Property::always("decided is chosen", |_, state: &State| {
                decided(state).is_subset(&state.history.chosen)
            }),
            // Invariant 2: no ballot starts two rounds, even across restarts.
            Property::always("ballots unique", |_, state: &State| {
                !state.history.ballot_reused
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
        ]
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
            .map(|d| u32::from(d.incarnation))
            .sum();
        let down = state.crashed.iter().filter(|c| **c).count() as u32;
        let restarts = restarts + down <= u32::from(cfg.max_restarts);
        clients_up && restarts
    });
    Checked { inner }
}

// ---------------------------------------------------------------------------
// Configurations and tests.
// ---------------------------------------------------------------------------

/// Client 1 PUTs 'a' through server 0 then GETs through server 1; client 2
/// PUTs 'b' through server 1 then GETs through server 2.
fn two_clients() -> Vec<ClientCfg> {
    vec![
        ClientCfg {
            script: vec![(0, RegOp::Put('a')), (1, RegOp::Get)],
        },
        ClientCfg {
            script: vec![(1, RegOp::Put('b')), (2, RegOp::Get)],
        },
    ]
}

const SAFETY: [&str; 6] = [
    "linearizable",
    "agreement",
    "validity",
    "answers are chosen",
    "decided is chosen",
    "ballots unique",
];

fn run_bfs(name: &str, model: Checked) -> impl Checker<Checked> {
    let start = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    println!(
        "[{name}] unique states: {}, states generated: {}, max depth: {}, time: {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    checker
}

fn print_trace(name: &str, property: &str, path: &Path<State, ActorModelAction<Msg, Timer, ()>>) {
    println!("[{name}] counterexample for \"{property}\":");
    for (i, action) in path.clone().into_actions().into_iter().enumerate() {
        println!("  {i:>3}: {action:?}");
    }
    println!("  last history: {:?}", path.last_state().history.lin);
}

/// Exhaustive BFS of the small configuration: the real core is linearizable
/// (API.md guarantee 4), agrees (1), is valid (2) and durable through crashes
/// (3) under loss, duplication, reordering and crashes.
#[test]
fn real_core_is_safe_small() {
    let cfg = Config {
        mutation: Mutation::None,
        max_rounds: 2,
        max_restarts: 1,
        client_at_most_once: true,
    };
    let checker = run_bfs("small", model(cfg, two_clients(), 1));
    for p in SAFETY {
        if let Some(path) = checker.discovery(p) {
            print_trace("small", p, &path);
        }
    }
    checker.assert_properties();
}

#[allow(dead_code)]
fn unused() -> Duration {
    Duration::ZERO
}

#[allow(dead_code)]
fn any_failure() -> HasDiscoveries {
    HasDiscoveries::AnyFailures
}

#[test]
#[ignore]
fn explore_tmp() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = Config { mutation: Mutation::None, max_rounds: env("R", 2) as u8, max_restarts: env("E", 1) as u8, client_at_most_once: env("ONCE", 1) == 1 };
    let clients = match env("S", 0) {
        0 => two_clients(),
        1 => vec![ClientCfg { script: vec![(0, RegOp::Put('a'))] }, ClientCfg { script: vec![(1, RegOp::Put('b')), (2, RegOp::Get)] }],
        2 => vec![ClientCfg { script: vec![(0, RegOp::Put('a'))] }, ClientCfg { script: vec![(1, RegOp::Put('b'))] }],
        3 => vec![ClientCfg { script: vec![(0, RegOp::Put('a'))] }, ClientCfg { script: vec![(1, RegOp::Get)] }],
        _ => vec![ClientCfg { script: vec![(0, RegOp::Put('a'))] }],
    };
    let mut m = model(cfg, clients, env("C", 1) as usize);
    if env("L", 1) == 0 { m.inner.lossy_network = LossyNetwork::No; }
    let start = Instant::now();
    let b = m.checker().threads(2).timeout(Duration::from_secs(env("T", 30))).target_state_count(env("N", 100_000_000) as usize);
    let report = |c: &dyn Checker<Checked>| {
        println!("unique {} total {} depth {} time {:?}", c.unique_state_count(), c.state_count(), c.max_depth(), start.elapsed());
        for (n, p) in c.discoveries() { println!("{n}: depth {}", p.into_actions().len()); }
    };
    if env("D", 1) == 1 { report(&b.spawn_dfs().join()) } else { report(&b.spawn_bfs().join()) };
}

#[test]
#[ignore]
fn walk_tmp() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = Config { mutation: Mutation::None, max_rounds: 1, max_restarts: 1, client_at_most_once: true };
    let clients = vec![ClientCfg { script: vec![(0, RegOp::Put('a'))] }, ClientCfg { script: vec![(1, RegOp::Get)] }];
    let mut m = model(cfg, clients, 1);
    m.inner.lossy_network = LossyNetwork::No;
    let mut seed = env("SEED", 1);
    let mut state = m.init_states().pop().unwrap();
    for _ in 0..env("STEPS", 35) {
        let mut actions = Vec::new();
        m.actions(&state, &mut actions);
        let nexts: Vec<_> = actions.into_iter().filter_map(|a| m.next_state(&state, a.clone()).map(|s| (a, s))).filter(|(_, s)| m.within_boundary(s)).collect();
        if nexts.is_empty() { break; }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (a, s) = nexts[(seed >> 33) as usize % nexts.len()].clone();
        println!("{a:?}");
        state = s;
    }
    println!("NETWORK:");
    for e in state.network.iter_all() { println!("  {e:?}"); }
    for (i, s) in state.actor_states.iter().enumerate() { println!("ACTOR {i}: {s:?}"); }
    println!("STORAGE: {:?}", state.actor_storages);
    println!("TIMERS: {:?}", state.timers_set);
    println!("HIST: {:?}", state.history);
}
