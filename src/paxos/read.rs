//! A quorum read of one register, as a state machine fed acceptor replies
//! (docs/design.md, "GET" steps 2 to 5).

use std::collections::{BTreeMap, BTreeSet};

use super::ballot::{Ballot, NodeId};
use super::messages::{Accepted, Reply};
use super::quorum::Members;

/// What a quorum read concluded, or what to do next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum ReadProgress<V> {
    /// Not concluded: wait for more replies.
    Wait,
    /// `value` is chosen: an acceptor knew it was decided, or a majority
    /// reported a vote in the same `ballot` (in the fast ballot, which can
    /// carry different values: every member reported the same vote).
    Chosen {
        /// The ballot a majority accepted.
        ballot: Ballot,
        /// The chosen value.
        value: V,
    },
    /// A majority reported no vote at all: nothing is chosen.
    Empty,
    /// A majority answered but the votes disagree: run a recovery round.
    Recover,
    /// Too many members are unreachable for a majority.
    Stalled,
}

/// One quorum read. Replies are compared as (ballot, value), never by value
/// alone (invariant 4): equal values in different ballots prove nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadRound<V> {
    members: Members,
    votes: BTreeMap<NodeId, Option<Accepted<V>>>,
    unreachable: BTreeSet<NodeId>,
    done: bool,
}

impl<V: Clone + PartialEq> ReadRound<V> {
    /// A read over `members`; send [`super::Request::Read`] to each.
    pub fn start(members: Members) -> Self {
        ReadRound {
            members,
            votes: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            done: false,
        }
    }

    /// Feeds one acceptor's reply. Duplicates, non-members and replies after
    /// the read concluded are ignored.
    pub fn on_reply(&mut self, from: NodeId, reply: Reply<V>) -> ReadProgress<V> {
        if self.done || !self.members.contains(from) || self.unreachable.contains(&from) {
            return ReadProgress::Wait;
        }
        match reply {
            Reply::Decided { ballot, value } => self.finish(ReadProgress::Chosen { ballot, value }),
            Reply::Vote { accepted } => {
                self.votes.entry(from).or_insert(accepted);
                self.evaluate(false)
            }
            _ => ReadProgress::Wait,
        }
    }

    /// Records that `from` cannot be reached.
    pub fn on_unreachable(&mut self, from: NodeId) -> ReadProgress<V> {
        if self.done || !self.members.contains(from) || self.votes.contains_key(&from) {
            return ReadProgress::Wait;
        }
        self.unreachable.insert(from);
        self.evaluate(false)
    }

    /// The driver stops waiting for stragglers: with a majority of replies in
    /// hand and no conclusion, recover; with fewer, the read is stalled.
    pub fn give_up(&mut self) -> ReadProgress<V> {
        if self.done {
            return ReadProgress::Wait;
        }
        self.evaluate(true)
    }

    fn finish(&mut self, progress: ReadProgress<V>) -> ReadProgress<V> {
        self.done = true;
        progress
    }

    fn evaluate(&mut self, giving_up: bool) -> ReadProgress<V> {
        let quorum = self.members.quorum();
        // A fast value is chosen with every vote of the epoch's electorate.
        let everyone = self.members.electorate_len();
        let mut none = 0;
        // Votes in a classic ballot (one value each), and fast votes by value.
        let mut classic: BTreeMap<Ballot, (usize, &V)> = BTreeMap::new();
        let mut fast: Vec<(usize, &V)> = Vec::new();
        for (from, vote) in &self.votes {
            match vote {
                None => none += 1,
                Some(v) if v.ballot == Ballot::FAST => {
                    if !self.members.in_electorate(*from) {
                        continue;
                    }
                    match fast.iter_mut().find(|(_, value)| **value == v.value) {
                        Some(entry) => entry.0 += 1,
                        None => fast.push((1, &v.value)),
                    }
                }
                Some(v) => classic.entry(v.ballot).or_insert((0, &v.value)).0 += 1,
            }
        }
        let chosen = classic
            .iter()
            .find(|(_, (n, _))| *n >= quorum)
            .map(|(ballot, (_, value))| (*ballot, (*value).clone()))
            .or_else(|| {
                fast.iter()
                    .find(|(n, _)| *n >= everyone)
                    .map(|(_, value)| (Ballot::FAST, (*value).clone()))
            });
        if let Some((ballot, value)) = chosen {
            return self.finish(ReadProgress::Chosen { ballot, value });
        }
        if none >= quorum {
            return self.finish(ReadProgress::Empty);
        }
        let outstanding = self.members.len() - self.votes.len() - self.unreachable.len();
        let could_conclude = none + outstanding >= quorum
            || classic.values().any(|(n, _)| n + outstanding >= quorum)
            || fast.iter().any(|(n, _)| n + outstanding >= everyone);
        if !giving_up && could_conclude {
            return ReadProgress::Wait;
        }
        if self.votes.len() >= quorum {
            self.finish(ReadProgress::Recover)
        } else if giving_up || self.votes.len() + outstanding < quorum {
            self.finish(ReadProgress::Stalled)
        } else {
            ReadProgress::Wait
        }
    }
}
