//! One client request across all its rounds, as a pure state machine: the
//! code `src/node.rs` runs for every PUT and GET, and the code the model
//! checker (`tests/model_check.rs`) drives (docs/design.md, "One request,
//! one pure state machine").
//!
//! A PUT is an optional fast attempt ([`Round::start_fast`], with a
//! straggler wait once a majority accepted) and then classic rounds
//! ([`Round::start`]) with randomized growing backoff, each with a fresh
//! ballot above the highest promise seen. A GET is a quorum read
//! ([`ReadRound`], with a straggler wait) and, when the votes disagree, a
//! recovery: classic rounds with no value of its own.
//!
//! The coordinator does no IO, reads no clock and draws no random number.
//! Its executor feeds it what happened ([`Coordinator::handle_reply`],
//! [`Coordinator::handle_unreachable`], [`Coordinator::handle_timeout`],
//! [`Coordinator::handle_ballot`], [`Coordinator::handle_pause`]) and asks
//! [`Coordinator::poll`] what to do next, until [`Effect::Done`]:
//!
//! ```
//! use paxos_kv::paxos::{acceptor, AcceptorState, Coordinator, Effect, Limits, Members,
//!     Outcome, Step};
//!
//! let members = Members::new([1, 2, 3]);
//! let mut acceptors = vec![AcceptorState::<&str>::default(); 3];
//! let mut coord = Coordinator::put(members, "blue", false, Limits::unbounded());
//! let outcome = loop {
//!     match coord.poll() {
//!         Effect::NeedBallot { above } => {
//!             coord.handle_ballot(paxos_kv::paxos::Ballot::new(above + 1, 1))
//!         }
//!         Effect::Send { call, request, .. } => {
//!             for (i, state) in acceptors.iter_mut().enumerate() {
//!                 let reply = match acceptor::handle(state, request.clone()) {
//!                     Step::Reply(reply) => reply,
//!                     Step::Persist(p) => {
//!                         let (new_state, reply) = p.reply_once_durable();
//!                         *state = new_state;
//!                         reply
//!                     }
//!                 };
//!                 coord.handle_reply(0, call, i as u32 + 1, reply, 1);
//!             }
//!         }
//!         Effect::Done(outcome) => break outcome,
//!         Effect::Wait { .. } => unreachable!("every acceptor answered"),
//!         _ => {}
//!     }
//! };
//! assert_eq!(outcome, Outcome::Chosen { value: "blue", recovered: false });
//! ```

use std::collections::{BTreeSet, VecDeque};

use super::ballot::{Ballot, NodeId};
use super::messages::{Reply, Request};
use super::proposer::{Progress, Round};
use super::quorum::Members;
use super::read::{ReadProgress, ReadRound};
use super::rejoin::{Fence, Incarnation};

/// A point on the executor's monotonic clock, in microseconds since the
/// request began (`src/node.rs`), or any other unit the executor keeps
/// consistent with [`Limits`]. The model checker uses 0 throughout: its
/// timers fire whenever the search says.
pub type Time = u64;

/// The bounds and timings of one request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// The request ends [`Outcome::Unavailable`] once [`Time`] reaches it
    /// (`None`: never; the model checker bounds rounds instead).
    pub deadline: Option<Time>,
    /// With a majority of answers in hand but no conclusion, how long a fast
    /// attempt or a quorum read waits for the rest.
    pub straggler_wait: Time,
    /// Backoff ceiling before the second classic round; doubles each round.
    pub backoff_base: Time,
    /// Largest backoff ceiling.
    pub backoff_max: Time,
    /// Classic rounds before the request gives up with
    /// [`Outcome::Unavailable`] (`None` in production: the deadline ends it).
    pub max_rounds: Option<u32>,
    /// A deliberate bug, for the model checker's mutation tests only.
    /// Production uses [`Fault::None`].
    pub fault: Fault,
}

impl Limits {
    /// No deadline, no round bound, no waits, no fault.
    pub fn unbounded() -> Self {
        Limits {
            deadline: None,
            straggler_wait: 0,
            backoff_base: 0,
            backoff_max: 0,
            max_rounds: None,
            fault: Fault::None,
        }
    }
}

/// A deliberately broken coordinator, so `tests/model_check.rs` can show
/// that it checks this very code. Never set outside those tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The correct coordinator.
    None,
    /// A fast attempt whose straggler wait ends with a majority (not every
    /// member) of fast accepts declares its value chosen.
    FastMajority,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<V> {
    /// `value` is chosen. `recovered`: a GET's recovery round found it.
    Chosen {
        /// The chosen value.
        value: V,
        /// Reached by a GET's recovery round, not by its quorum read.
        recovered: bool,
    },
    /// A GET found that no value is chosen.
    Empty {
        /// Reached by a recovery round, not by the quorum read.
        recovered: bool,
    },
    /// Undecided by the deadline (or the round bound): 503.
    Unavailable,
}

/// What the coordinator did that the node counts (`src/metrics.rs`,
/// `src/events.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// A fast attempt started.
    FastRound,
    /// A fast attempt ended without a chosen value; classic rounds follow.
    FastFallback,
    /// A classic round started (it has its ballot).
    Round,
    /// A classic round was preempted by a higher promise.
    Preempted,
    /// A GET's votes disagreed: a recovery starts.
    Recovery,
}

/// The next thing the executor must do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Effect<V> {
    /// Send `request` to every member (this node too), with `fence` (the
    /// round's promisers, for accepts; else empty), and report each answer
    /// with this `call`. Answers to earlier calls are ignored from now on.
    Send {
        /// Names this broadcast in [`Coordinator::handle_reply`].
        call: u32,
        /// What to send.
        request: Request<V>,
        /// The promisers of the round (invariant 8).
        fence: Fence,
    },
    /// Tell every member that `value` is chosen in `ballot`, fire and forget.
    Announce {
        /// The ballot a quorum accepted.
        ballot: Ballot,
        /// The chosen value.
        value: V,
    },
    /// Count this (metrics, events).
    Count(Count),
    /// Answer with [`Coordinator::handle_ballot`]: a ballot of this node
    /// whose round is above `above` and above every round it used, durably
    /// reserved (invariant 2). Repeated until answered.
    NeedBallot {
        /// The highest round a refusal reported.
        above: u64,
    },
    /// Answer with [`Coordinator::handle_pause`]: a backoff drawn uniformly
    /// from `ceiling / 2 ..= ceiling`. Repeated until answered.
    NeedPause {
        /// The largest pause.
        ceiling: Time,
    },
    /// Nothing to do until an answer comes or, if set, until `until`: then
    /// call [`Coordinator::handle_timeout`].
    Wait {
        /// The next timer (straggler wait, backoff, or deadline).
        until: Option<Time>,
    },
    /// The request is over. Repeated on every later poll.
    Done(Outcome<V>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Stage<V> {
    /// The fast attempt of a PUT.
    Fast {
        round: Round<V>,
        accepted: BTreeSet<NodeId>,
        /// The highest promise a refusal reported.
        seen: Ballot,
        straggler: Option<Time>,
    },
    /// A GET's quorum read.
    Reading {
        read: ReadRound<V>,
        answered: BTreeSet<NodeId>,
        straggler: Option<Time>,
    },
    /// Waiting for the executor's random pause.
    NeedPause,
    /// Backing off before the next classic round.
    Pausing {
        wake: Time,
    },
    /// Waiting for the executor's ballot.
    NeedBallot,
    /// A sweep found `value` chosen and waits until a majority of the
    /// members acknowledged it as decided (durably).
    Recording {
        ballot: Ballot,
        value: V,
        acked: BTreeSet<NodeId>,
        failed: BTreeSet<NodeId>,
    },
    /// A classic round; `fence` collects its promisers for the accepts.
    Classic {
        round: Round<V>,
        fence: Fence,
    },
    Done(Outcome<V>),
}

/// One client request (a PUT, or a GET and its recovery), across all its
/// rounds. `Clone + Eq + Hash` so the model checker keeps it in its states.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Coordinator<V> {
    members: Members,
    limits: Limits,
    /// The PUT's value; `None` for a GET (and its recovery).
    own: Option<V>,
    stage: Stage<V>,
    /// The current broadcast; answers to others are stale.
    call: u32,
    /// The highest round a refusal reported: the next ballot goes above.
    seen_round: u64,
    /// Classic rounds ended so far.
    attempt: u32,
    /// A sweep: a chosen value is recorded as decided at a majority before
    /// the request is done.
    record: bool,
    effects: VecDeque<Effect<V>>,
}

impl<V: Clone + PartialEq> Coordinator<V> {
    /// A PUT of `own`. With `fast` (every peer answered lately) it tries the
    /// fast ballot first; otherwise it starts with a classic round.
    pub fn put(members: Members, own: V, fast: bool, limits: Limits) -> Self {
        let mut coord = Coordinator::new(members, limits, Some(own.clone()));
        if fast && coord.members.fast_allowed() {
            coord.effects.push_back(Effect::Count(Count::FastRound));
            let (round, accept) = Round::start_fast(coord.members.clone(), own);
            coord.stage = Stage::Fast {
                round,
                accepted: BTreeSet::new(),
                seen: Ballot::ZERO,
                straggler: None,
            };
            coord.send(accept, Fence::default());
        }
        coord
    }

    /// A GET: a quorum read, then a recovery if the votes disagree.
    pub fn get(members: Members, limits: Limits) -> Self {
        let mut coord = Coordinator::new(members.clone(), limits, None);
        coord.stage = Stage::Reading {
            read: ReadRound::start(members),
            answered: BTreeSet::new(),
            straggler: None,
        };
        coord.send(Request::Read, Fence::default());
        coord
    }

    /// A sweep of one key during a membership change (docs/design.md,
    /// "Changing the members"): a classic round of no value of its own at
    /// this epoch's members, whatever a read would say, and, when it finds a
    /// value chosen, a decide that a majority of the members acknowledge
    /// durably before it is done. Afterwards every majority of these members
    /// holds the chosen value, so the next epoch's majorities see it too.
    /// Ends with [`Outcome::Chosen`] (`recovered`: true), [`Outcome::Empty`]
    /// when no promiser holds a vote, or [`Outcome::Unavailable`].
    pub fn sweep(members: Members, limits: Limits) -> Self {
        let mut coord = Coordinator::new(members, limits, None);
        coord.record = true;
        coord
    }

    fn new(members: Members, limits: Limits, own: Option<V>) -> Self {
        Coordinator {
            members,
            limits,
            own,
            stage: Stage::NeedBallot,
            call: 0,
            seen_round: 0,
            attempt: 0,
            record: false,
            effects: VecDeque::new(),
        }
    }

    /// The next effect: queued ones first, in order; then a standing
    /// request (ballot, pause), [`Effect::Done`], or [`Effect::Wait`].
    pub fn poll(&mut self) -> Effect<V> {
        if let Some(effect) = self.effects.pop_front() {
            return effect;
        }
        match &self.stage {
            Stage::Done(outcome) => Effect::Done(outcome.clone()),
            Stage::NeedBallot => Effect::NeedBallot {
                above: self.seen_round,
            },
            Stage::NeedPause => Effect::NeedPause {
                ceiling: self.backoff_ceiling(),
            },
            _ => Effect::Wait {
                until: self.timer(),
            },
        }
    }

    /// The current broadcast's number (answers carry it).
    pub fn call(&self) -> u32 {
        self.call
    }

    /// When [`Coordinator::handle_timeout`] is due next, deadline included.
    pub fn timer(&self) -> Option<Time> {
        let wake = match &self.stage {
            Stage::Fast { straggler, .. } | Stage::Reading { straggler, .. } => *straggler,
            Stage::Pausing { wake } => Some(*wake),
            _ => None,
        };
        match (wake, self.limits.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the request is over.
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done(_))
    }

    /// The ballot asked for by [`Effect::NeedBallot`]: starts the next
    /// classic round. Ignored when no ballot was asked for.
    pub fn handle_ballot(&mut self, ballot: Ballot) {
        if !matches!(self.stage, Stage::NeedBallot) {
            return;
        }
        self.effects.push_back(Effect::Count(Count::Round));
        let (round, prepare) = Round::start(ballot, self.members.clone(), self.own.clone());
        self.stage = Stage::Classic {
            round,
            fence: Fence::default(),
        };
        self.send(prepare, Fence::default());
    }

    /// The pause asked for by [`Effect::NeedPause`]. A pause that would
    /// reach the deadline ends the request at once; a zero pause needs no
    /// wait. Ignored when no pause was asked for.
    pub fn handle_pause(&mut self, now: Time, pause: Time) {
        if !matches!(self.stage, Stage::NeedPause) {
            return;
        }
        let wake = now.saturating_add(pause);
        if self.limits.deadline.is_some_and(|d| wake >= d) {
            self.finish(Outcome::Unavailable);
        } else if pause == 0 {
            self.stage = Stage::NeedBallot;
        } else {
            self.stage = Stage::Pausing { wake };
        }
    }

    /// Member `from` (in `incarnation`) answered `reply` to broadcast `call`.
    pub fn handle_reply(
        &mut self,
        now: Time,
        call: u32,
        from: NodeId,
        reply: Reply<V>,
        incarnation: Incarnation,
    ) {
        if !self.awaits(call, from) {
            return;
        }
        match &mut self.stage {
            Stage::Fast {
                round,
                accepted,
                seen,
                ..
            } => {
                match &reply {
                    Reply::Accepted { .. } => {
                        accepted.insert(from);
                    }
                    Reply::Rejected { promised, .. } => *seen = (*seen).max(*promised),
                    _ => {}
                }
                let progress = round.on_reply(from, reply);
                self.on_fast(now, progress);
            }
            Stage::Reading { read, answered, .. } => {
                answered.insert(from);
                let progress = read.on_reply(from, reply);
                self.on_read(now, progress);
            }
            Stage::Classic { round, fence } => {
                // The promisers of this round, each in the incarnation that
                // promised: the accepts carry them (invariant 8).
                if matches!(reply, Reply::Promise { ballot, .. } if ballot == round.ballot()) {
                    fence.promised(from, incarnation);
                }
                let progress = round.on_reply(from, reply);
                self.on_classic(progress);
            }
            Stage::Recording {
                value,
                acked,
                failed,
                ..
            } => {
                let recorded = match &reply {
                    Reply::Ack => true,
                    Reply::Decided { value: v, .. } => v == value,
                    _ => false,
                };
                if recorded {
                    acked.insert(from);
                } else {
                    failed.insert(from);
                }
                self.on_recording();
            }
            _ => {}
        }
    }

    /// Member `from` could not be reached with broadcast `call` (or refused
    /// it with an error).
    pub fn handle_unreachable(&mut self, now: Time, call: u32, from: NodeId) {
        if !self.awaits(call, from) {
            return;
        }
        match &mut self.stage {
            Stage::Fast { round, .. } => {
                let progress = round.on_unreachable(from);
                self.on_fast(now, progress);
            }
            Stage::Reading { read, .. } => {
                let progress = read.on_unreachable(from);
                self.on_read(now, progress);
            }
            Stage::Classic { round, .. } => {
                let progress = round.on_unreachable(from);
                self.on_classic(progress);
            }
            Stage::Recording { failed, .. } => {
                failed.insert(from);
                self.on_recording();
            }
            _ => {}
        }
    }

    /// Every call of broadcast `call` has returned (the node's reply channel
    /// closed) and the stage still waits: nothing more will come. A fast
    /// attempt falls back, a read gives up on stragglers, a round is stalled.
    /// (The model checker's network may always deliver again: it never
    /// calls this.)
    pub fn handle_closed(&mut self, now: Time, call: u32) {
        if call != self.call {
            return;
        }
        match &mut self.stage {
            Stage::Fast { .. } => self.on_fast(now, Progress::Stalled),
            Stage::Reading { read, .. } => {
                let progress = read.give_up();
                self.on_read(now, progress);
            }
            Stage::Classic { .. } => self.on_classic(Progress::Stalled),
            Stage::Recording { .. } => self.finish(Outcome::Unavailable),
            _ => {}
        }
    }

    /// The clock reached `now`: the deadline ends the request; an expired
    /// straggler wait ends the fast attempt (fall back) or the read (give
    /// up on the rest); an expired backoff asks for the next ballot.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.is_done() {
            return;
        }
        if self.limits.deadline.is_some_and(|d| now >= d) {
            self.finish(Outcome::Unavailable);
            return;
        }
        match &mut self.stage {
            Stage::Fast {
                straggler: Some(at),
                accepted,
                ..
            } if now >= *at => {
                if self.limits.fault == Fault::FastMajority
                    && accepted.len() >= self.members.quorum()
                {
                    // Broken on purpose: a majority is not a fast quorum.
                    let value = self.own.clone().expect("a PUT has a value");
                    self.decide(Ballot::FAST, value, false);
                    return;
                }
                self.on_fast(now, Progress::Stalled);
            }
            Stage::Reading {
                straggler: Some(at),
                read,
                ..
            } if now >= *at => {
                let progress = read.give_up();
                self.on_read(now, progress);
            }
            Stage::Pausing { wake } if now >= *wake => self.stage = Stage::NeedBallot,
            _ => {}
        }
    }

    /// Whether an answer of `from` to `call` is awaited: the current call,
    /// from a member, while a round or read is under way.
    fn awaits(&self, call: u32, from: NodeId) -> bool {
        let waiting = matches!(
            self.stage,
            Stage::Fast { .. }
                | Stage::Reading { .. }
                | Stage::Classic { .. }
                | Stage::Recording { .. }
        );
        waiting && call == self.call && self.members.contains(from)
    }

    fn send(&mut self, request: Request<V>, fence: Fence) {
        self.call += 1;
        self.effects.push_back(Effect::Send {
            call: self.call,
            request,
            fence,
        });
    }

    fn finish(&mut self, outcome: Outcome<V>) {
        self.stage = Stage::Done(outcome);
    }

    fn decide(&mut self, ballot: Ballot, value: V, recovered: bool) {
        if self.record {
            self.stage = Stage::Recording {
                ballot,
                value: value.clone(),
                acked: BTreeSet::new(),
                failed: BTreeSet::new(),
            };
            self.send(Request::Decide { ballot, value }, Fence::default());
            return;
        }
        self.effects.push_back(Effect::Announce {
            ballot,
            value: value.clone(),
        });
        self.finish(Outcome::Chosen { value, recovered });
    }

    fn on_fast(&mut self, now: Time, progress: Progress<V>) {
        let Stage::Fast {
            accepted,
            seen,
            straggler,
            ..
        } = &mut self.stage
        else {
            return;
        };
        let seen = *seen;
        match progress {
            Progress::Wait => {
                if accepted.len() >= self.members.quorum() && straggler.is_none() {
                    *straggler = Some(now.saturating_add(self.limits.straggler_wait));
                }
            }
            Progress::Chosen { ballot, value, .. } => self.decide(ballot, value, false),
            // A refusal for a promise tells the classic round where to
            // start: no round trip is spent learning it again.
            Progress::Preempted { seen: promised } => self.fall_back(seen.max(promised)),
            _ => self.fall_back(seen),
        }
    }

    fn fall_back(&mut self, seen: Ballot) {
        self.effects.push_back(Effect::Count(Count::FastFallback));
        self.seen_round = seen.round;
        self.stage = Stage::NeedBallot;
    }

    /// A sweep's decide: done once a majority recorded it; unavailable once
    /// too many failed for a majority (the sweep tries the key again).
    fn on_recording(&mut self) {
        let Stage::Recording {
            value,
            acked,
            failed,
            ..
        } = &self.stage
        else {
            return;
        };
        if acked.len() >= self.members.quorum() {
            let value = value.clone();
            self.finish(Outcome::Chosen {
                value,
                recovered: true,
            });
        } else if self.members.len() - failed.len() < self.members.quorum() {
            self.finish(Outcome::Unavailable);
        }
    }

    fn on_read(&mut self, now: Time, progress: ReadProgress<V>) {
        let Stage::Reading {
            answered,
            straggler,
            ..
        } = &mut self.stage
        else {
            return;
        };
        match progress {
            ReadProgress::Wait => {
                if answered.len() >= self.members.quorum() && straggler.is_none() {
                    *straggler = Some(now.saturating_add(self.limits.straggler_wait));
                }
            }
            ReadProgress::Chosen { ballot, value } => self.decide(ballot, value, false),
            ReadProgress::Empty => self.finish(Outcome::Empty { recovered: false }),
            ReadProgress::Stalled => self.finish(Outcome::Unavailable),
            // docs/design.md GET step 5: the votes disagree; finish the
            // instance with classic rounds of no value of its own.
            ReadProgress::Recover => {
                self.effects.push_back(Effect::Count(Count::Recovery));
                self.stage = Stage::NeedBallot;
            }
        }
    }

    fn on_classic(&mut self, progress: Progress<V>) {
        let recovered = self.own.is_none();
        match progress {
            Progress::Wait => {}
            Progress::Send(accept) => {
                let Stage::Classic { fence, .. } = &mut self.stage else {
                    return;
                };
                let fence = std::mem::take(fence);
                self.send(accept, fence);
            }
            Progress::Chosen { ballot, value, .. } => self.decide(ballot, value, recovered),
            Progress::Empty => self.finish(Outcome::Empty { recovered }),
            Progress::Preempted { seen } => {
                self.effects.push_back(Effect::Count(Count::Preempted));
                self.seen_round = self.seen_round.max(seen.round);
                self.next_round();
            }
            Progress::Stalled => self.next_round(),
        }
    }

    /// A classic round ended undecided: back off (the executor draws the
    /// pause), then the next ballot; or give up once the rounds run out.
    fn next_round(&mut self) {
        self.attempt += 1;
        if self.limits.max_rounds.is_some_and(|m| self.attempt >= m) {
            self.finish(Outcome::Unavailable);
        } else {
            self.stage = Stage::NeedPause;
        }
    }

    /// `backoff_base * 2^attempt`, at most `backoff_max` (exponent capped
    /// at 16).
    fn backoff_ceiling(&self) -> Time {
        let factor = 1u64 << self.attempt.min(16);
        self.limits
            .backoff_base
            .saturating_mul(factor)
            .min(self.limits.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::Accepted;

    fn members() -> Members {
        Members::new([1, 2, 3])
    }

    /// A deadline at 1000 and a straggler wait of 50.
    fn with_straggler_wait() -> Limits {
        Limits {
            deadline: Some(1_000),
            straggler_wait: 50,
            ..Limits::unbounded()
        }
    }

    /// Polls until the coordinator stands still, returning what it did.
    fn drain(coord: &mut Coordinator<&'static str>) -> Vec<Effect<&'static str>> {
        let mut effects = Vec::new();
        loop {
            let effect = coord.poll();
            let standing = matches!(
                effect,
                Effect::Wait { .. }
                    | Effect::Done(_)
                    | Effect::NeedBallot { .. }
                    | Effect::NeedPause { .. }
            );
            effects.push(effect);
            if standing {
                return effects;
            }
        }
    }

    #[test]
    fn a_refused_fast_attempt_falls_back_above_the_refusal() {
        let mut coord = Coordinator::put(members(), "a", true, with_straggler_wait());
        let effects = drain(&mut coord);
        assert_eq!(effects[0], Effect::Count(Count::FastRound));
        let call = coord.call();
        coord.handle_reply(
            1,
            call,
            1,
            Reply::Accepted {
                ballot: Ballot::FAST,
            },
            1,
        );
        let promised = Ballot::new(7, 2);
        let refusal = Reply::Rejected {
            ballot: Ballot::FAST,
            promised,
        };
        coord.handle_reply(2, call, 2, refusal, 1);
        assert_eq!(
            drain(&mut coord),
            vec![
                Effect::Count(Count::FastFallback),
                Effect::NeedBallot { above: 7 }
            ]
        );
        // An answer to the finished fast call changes nothing.
        let before = coord.clone();
        coord.handle_reply(
            3,
            call,
            3,
            Reply::Accepted {
                ballot: Ballot::FAST,
            },
            1,
        );
        assert_eq!(coord, before);
    }

    #[test]
    fn a_fast_majority_waits_for_stragglers_then_falls_back() {
        let mut coord = Coordinator::put(members(), "a", true, with_straggler_wait());
        let _ = drain(&mut coord);
        let call = coord.call();
        for from in [1, 2] {
            coord.handle_reply(
                10,
                call,
                from,
                Reply::Accepted {
                    ballot: Ballot::FAST,
                },
                1,
            );
        }
        assert_eq!(drain(&mut coord), vec![Effect::Wait { until: Some(60) }]);
        coord.handle_timeout(59);
        assert_eq!(drain(&mut coord), vec![Effect::Wait { until: Some(60) }]);
        coord.handle_timeout(60);
        assert_eq!(
            drain(&mut coord),
            vec![
                Effect::Count(Count::FastFallback),
                Effect::NeedBallot { above: 0 }
            ]
        );
    }

    #[test]
    fn a_stalled_round_backs_off_and_a_pause_past_the_deadline_gives_up() {
        let limits = Limits {
            deadline: Some(1_000),
            backoff_base: 100,
            backoff_max: 300,
            ..Limits::unbounded()
        };
        let mut coord = Coordinator::put(members(), "a", false, limits);
        assert_eq!(drain(&mut coord), vec![Effect::NeedBallot { above: 0 }]);
        coord.handle_ballot(Ballot::new(1, 1));
        let effects = drain(&mut coord);
        assert_eq!(effects[0], Effect::Count(Count::Round));
        let call = coord.call();
        coord.handle_unreachable(5, call, 2);
        coord.handle_unreachable(5, call, 3);
        assert_eq!(drain(&mut coord), vec![Effect::NeedPause { ceiling: 200 }]);
        coord.handle_pause(5, 150);
        assert_eq!(drain(&mut coord), vec![Effect::Wait { until: Some(155) }]);
        coord.handle_timeout(155);
        assert_eq!(drain(&mut coord), vec![Effect::NeedBallot { above: 0 }]);
        coord.handle_ballot(Ballot::new(2, 1));
        let _ = drain(&mut coord);
        let call = coord.call();
        coord.handle_closed(900, call);
        assert_eq!(drain(&mut coord), vec![Effect::NeedPause { ceiling: 300 }]);
        coord.handle_pause(900, 100);
        assert_eq!(drain(&mut coord), vec![Effect::Done(Outcome::Unavailable)]);
    }

    #[test]
    fn a_read_that_sees_disagreement_recovers() {
        let mut coord = Coordinator::get(members(), Limits::unbounded());
        let _ = drain(&mut coord);
        let call = coord.call();
        let vote = |round, value| Reply::Vote {
            accepted: Some(crate::paxos::Accepted {
                ballot: Ballot::new(round, 1),
                value,
            }),
        };
        coord.handle_reply(0, call, 1, vote(1, "a"), 1);
        coord.handle_reply(0, call, 2, vote(2, "b"), 1);
        coord.handle_reply(0, call, 3, Reply::Vote { accepted: None }, 1);
        assert_eq!(
            drain(&mut coord),
            vec![
                Effect::Count(Count::Recovery),
                Effect::NeedBallot { above: 0 }
            ]
        );
    }

    #[test]
    fn a_sweep_keeps_the_old_epochs_fast_value_and_records_it_at_a_majority() {
        // Node 4 was just added: it holds nothing. Nodes 1..3 hold the fast
        // value "a" that was chosen by all three in the epoch before.
        let grown = Members::transitional([1, 2, 3, 4], [1, 2, 3]);
        let mut coord = Coordinator::sweep(grown, Limits::unbounded());
        assert_eq!(coord.poll(), Effect::NeedBallot { above: 0 });
        let ballot = Ballot::new(1, 1);
        coord.handle_ballot(ballot);
        let fast_a = Some(Accepted {
            ballot: Ballot::FAST,
            value: "a",
        });
        let _ = drain(&mut coord);
        let call = coord.call();
        for (from, accepted) in [(4, None), (2, fast_a.clone()), (3, fast_a)] {
            coord.handle_reply(1, call, from, Reply::Promise { ballot, accepted }, 1);
        }
        let effects = drain(&mut coord);
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Send {
                    request: Request::Accept { value: "a", .. },
                    ..
                }
            )),
            "the old epoch's fast value is kept though node 4 is silent: {effects:?}"
        );
        let call = coord.call();
        for from in [2, 3, 4] {
            coord.handle_reply(1, call, from, Reply::Accepted { ballot }, 1);
        }
        let effects = drain(&mut coord);
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Send {
                    request: Request::Decide { value: "a", .. },
                    ..
                }
            )),
            "{effects:?}"
        );
        assert!(!coord.is_done(), "not done before a majority recorded it");
        let call = coord.call();
        coord.handle_reply(1, call, 2, Reply::Ack, 1);
        coord.handle_reply(1, call, 4, Reply::Ack, 1);
        assert!(!coord.is_done());
        coord.handle_reply(1, call, 3, Reply::Ack, 1);
        assert_eq!(
            coord.poll(),
            Effect::Done(Outcome::Chosen {
                value: "a",
                recovered: true
            })
        );
    }

    #[test]
    fn no_fast_attempt_in_a_transitional_epoch() {
        let grown = Members::transitional([1, 2, 3, 4], [1, 2, 3]);
        let mut coord = Coordinator::put(grown, "a", true, Limits::unbounded());
        assert_eq!(coord.poll(), Effect::NeedBallot { above: 0 });
    }
}
