//! One proposer round (phase 1 then phase 2 with one ballot), as a state
//! machine fed acceptor replies.
//!
//! The driver starts a round with [`Round::start`], sends the returned
//! `Prepare` to every member, feeds each reply to [`Round::on_reply`] (and
//! each unreachable member to [`Round::on_unreachable`]) and acts on the
//! returned [`Progress`]. The round never retries by itself: on
//! [`Progress::Preempted`] or [`Progress::Stalled`] the driver backs off and
//! starts a new round with a higher ballot from its [`super::BallotClock`].

use std::collections::{BTreeMap, BTreeSet};

use super::ballot::{Ballot, NodeId};
use super::messages::{Accepted, Reply, Request};
use super::quorum::Members;

/// How a round ended, or what to do next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Progress<V> {
    /// Not decided yet: wait for more replies.
    Wait,
    /// Phase 1 succeeded: send this `Accept` to every member.
    Send(Request<V>),
    /// `value` is chosen: a majority accepted `ballot` (or an acceptor knew it
    /// was decided). `proposed` says whether it is the caller's own value,
    /// proposed fresh because no promise carried a vote.
    Chosen {
        /// A ballot in which a majority accepted `value`.
        ballot: Ballot,
        /// The chosen value.
        value: V,
        /// This round put the caller's value forward itself.
        proposed: bool,
    },
    /// A promising majority carried no vote and the round had no value of its
    /// own (a read's recovery round): no value was chosen before this ballot.
    Empty,
    /// Some acceptor promised a higher ballot and a majority is out of reach:
    /// retry above `seen`.
    Preempted {
        /// The highest promise reported by a rejecting acceptor.
        seen: Ballot,
    },
    /// Too many members are unreachable for a majority this round.
    Stalled,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Phase<V> {
    Preparing {
        promises: BTreeMap<NodeId, Option<Accepted<V>>>,
    },
    Accepting {
        value: V,
        proposed: bool,
        accepted: BTreeSet<NodeId>,
    },
    Done,
}

/// One proposer round for one register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Round<V> {
    ballot: Ballot,
    members: Members,
    own: Option<V>,
    phase: Phase<V>,
    /// Members that rejected or were unreachable in the current phase.
    failed: BTreeSet<NodeId>,
    highest_rejection: Ballot,
}

impl<V: Clone + PartialEq> Round<V> {
    /// A new round with a fresh `ballot`. `own` is the client's value, or
    /// `None` for a read's recovery round, which only finishes what it finds.
    /// Returns the round and the `Prepare` to send to every member.
    pub fn start(ballot: Ballot, members: Members, own: Option<V>) -> (Self, Request<V>) {
        let round = Round {
            ballot,
            members,
            own,
            phase: Phase::Preparing {
                promises: BTreeMap::new(),
            },
            failed: BTreeSet::new(),
            highest_rejection: Ballot::ZERO,
        };
        (round, Request::Prepare { ballot })
    }

    /// This round's ballot.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Feeds one acceptor's reply. Replies from non-members, for other
    /// ballots, duplicates and replies after the round ended are ignored.
    pub fn on_reply(&mut self, from: NodeId, reply: Reply<V>) -> Progress<V> {
        if !self.members.contains(from) || matches!(self.phase, Phase::Done) {
            return Progress::Wait;
        }
        match reply {
            Reply::Decided { ballot, value } => {
                self.phase = Phase::Done;
                let proposed = false;
                Progress::Chosen {
                    ballot,
                    value,
                    proposed,
                }
            }
            Reply::Rejected { ballot, promised } if ballot == self.ballot && promised > ballot => {
                self.highest_rejection = self.highest_rejection.max(promised);
                self.on_unreachable(from)
            }
            Reply::Promise { ballot, accepted } if ballot == self.ballot => {
                let Phase::Preparing { promises } = &mut self.phase else {
                    return Progress::Wait;
                };
                if self.failed.contains(&from) {
                    return Progress::Wait;
                }
                promises.insert(from, accepted);
                if promises.len() < self.members.quorum() {
                    return Progress::Wait;
                }
                // Invariant 3: the value of the highest-ballot vote among the
                // promises; the caller's own value only when there is none.
                let highest = promises
                    .values()
                    .flatten()
                    .max_by_key(|vote| vote.ballot)
                    .map(|vote| vote.value.clone());
                let (value, proposed) = match (highest, &self.own) {
                    (Some(value), _) => (value, false),
                    (None, Some(own)) => (own.clone(), true),
                    (None, None) => {
                        self.phase = Phase::Done;
                        return Progress::Empty;
                    }
                };
                self.failed.clear();
                self.phase = Phase::Accepting {
                    value: value.clone(),
                    proposed,
                    accepted: BTreeSet::new(),
                };
                Progress::Send(Request::Accept {
                    ballot: self.ballot,
                    value,
                })
            }
            Reply::Accepted { ballot } if ballot == self.ballot => {
                let Phase::Accepting {
                    value,
                    proposed,
                    accepted,
                } = &mut self.phase
                else {
                    return Progress::Wait;
                };
                if self.failed.contains(&from) {
                    return Progress::Wait;
                }
                accepted.insert(from);
                if accepted.len() < self.members.quorum() {
                    return Progress::Wait;
                }
                // Invariant 4: a majority accepted this very ballot.
                let chosen = Progress::Chosen {
                    ballot: self.ballot,
                    value: value.clone(),
                    proposed: *proposed,
                };
                self.phase = Phase::Done;
                chosen
            }
            _ => Progress::Wait,
        }
    }

    /// Records that `from` cannot be reached in the current phase (or rejected
    /// it). A member that already answered this phase keeps its answer.
    pub fn on_unreachable(&mut self, from: NodeId) -> Progress<V> {
        if !self.members.contains(from) || matches!(self.phase, Phase::Done) {
            return Progress::Wait;
        }
        let answered = match &self.phase {
            Phase::Preparing { promises } => promises.contains_key(&from),
            Phase::Accepting { accepted, .. } => accepted.contains(&from),
            Phase::Done => true,
        };
        if answered {
            return Progress::Wait;
        }
        self.failed.insert(from);
        self.check_reachable()
    }

    fn check_reachable(&mut self) -> Progress<V> {
        if self.members.len() - self.failed.len() >= self.members.quorum() {
            return Progress::Wait;
        }
        self.phase = Phase::Done;
        if self.highest_rejection > self.ballot {
            Progress::Preempted {
                seen: self.highest_rejection,
            }
        } else {
            Progress::Stalled
        }
    }
}
