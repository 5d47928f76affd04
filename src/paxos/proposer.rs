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
    /// Some acceptor promised a higher ballot and a majority (in the fast
    /// ballot: every member) is out of reach: retry above `seen`.
    Preempted {
        /// The highest promise reported by a rejecting acceptor.
        seen: Ballot,
    },
    /// Too many members are unreachable for a majority this round (in the
    /// fast ballot: any member is, or refused for another fast value).
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
    ///
    /// Phase 2 proposes the value of the highest-ballot vote among the
    /// promising majority (invariant 3). When that is the fast ballot, where
    /// votes may differ, it proposes a fast value only if every promise in
    /// the majority carries that same vote: a fast value is chosen only with
    /// the votes of all members, so if any promiser lacks it, it was not
    /// chosen and never will be (the promiser now refuses the fast ballot).
    /// Otherwise the round is free: its own value, or for a recovery round
    /// without one, one of the fast values found (to finish the instance).
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

    /// A round in the fast ballot ([`Ballot::FAST`]): `own` goes straight to
    /// phase 2, with no phase 1. It ends [`Progress::Chosen`] only when every
    /// member accepted; any refusal or unreachable member ends it at once
    /// (Preempted / Stalled), and the driver goes on with a classic round,
    /// whose phase 1 finds the fast votes. Returns the `Accept` to send.
    pub fn start_fast(members: Members, own: V) -> (Self, Request<V>) {
        let round = Round {
            ballot: Ballot::FAST,
            members,
            own: Some(own.clone()),
            phase: Phase::Accepting {
                value: own.clone(),
                proposed: true,
                accepted: BTreeSet::new(),
            },
            failed: BTreeSet::new(),
            highest_rejection: Ballot::ZERO,
        };
        let accept = Request::Accept {
            ballot: Ballot::FAST,
            value: own,
        };
        (round, accept)
    }

    /// How many accepts make the value chosen in this round's ballot: a
    /// majority, or every member in the fast ballot.
    fn needed(&self) -> usize {
        if self.ballot == Ballot::FAST {
            self.members.len()
        } else {
            self.members.quorum()
        }
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
            Reply::Rejected { ballot, promised }
                if ballot == Ballot::FAST && self.ballot == ballot =>
            {
                // Every member's vote is needed: one refusal ends the round.
                self.phase = Phase::Done;
                if promised > ballot {
                    Progress::Preempted { seen: promised }
                } else {
                    // Refused for another fast value, not for a promise.
                    Progress::Stalled
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
                let (value, proposed) =
                    match phase_two_value(promises, self.own.as_ref(), &self.members) {
                        Some(choice) => choice,
                        None => {
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
                let needed = self.needed();
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
                if accepted.len() < needed {
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
        if self.members.len() - self.failed.len() >= self.needed() {
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

/// The value phase 2 proposes, from a majority's promises (invariant 3, with
/// the fast-ballot rule of [`Round::start`]), and whether it is `own`;
/// `None` when there is nothing to propose (no vote and no value of its own).
///
/// A fast value is kept when every promiser of the epoch's electorate carries
/// it ([`Members::in_electorate`]): in a stable epoch that is every promiser;
/// in a transitional one, only the members of the stable epoch before count
/// (a member added since cast no fast vote, and its silence proves nothing).
/// Consecutive epochs' majorities overlap, so some promiser is in it.
/// The fast value every promiser of the electorate voted for, if they all
/// voted for one (`None` when one of them did not, or none promised).
pub(crate) fn unanimous_fast_vote<'a, V: PartialEq + 'a>(
    promises: impl IntoIterator<Item = (&'a NodeId, &'a Option<Accepted<V>>)>,
    members: &Members,
) -> Option<&'a V> {
    let mut found: Option<&V> = None;
    for (id, promise) in promises {
        if !members.in_electorate(*id) {
            continue;
        }
        match promise {
            Some(vote) if vote.ballot == Ballot::FAST => match found {
                Some(value) if *value != vote.value => return None,
                _ => found = Some(&vote.value),
            },
            _ => return None,
        }
    }
    found
}

fn phase_two_value<V: Clone + PartialEq>(
    promises: &BTreeMap<NodeId, Option<Accepted<V>>>,
    own: Option<&V>,
    members: &Members,
) -> Option<(V, bool)> {
    let highest = promises.values().flatten().max_by_key(|vote| vote.ballot);
    match highest {
        Some(vote) if vote.ballot != Ballot::FAST => return Some((vote.value.clone(), false)),
        Some(_) => {
            if let Some(value) = unanimous_fast_vote(promises, members) {
                return Some((value.clone(), false));
            }
        }
        None => {}
    }
    match (own, highest) {
        (Some(own), _) => Some((own.clone(), true)),
        (None, Some(vote)) => Some((vote.value.clone(), false)),
        (None, None) => None,
    }
}
