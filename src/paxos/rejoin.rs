//! Rules for a node that lost its disk (docs/design.md, invariant 8): the
//! incarnation fence and the state a rebuilt acceptor may take.
//!
//! A node whose data directory was lost comes back as a new *incarnation*
//! of the same member. Before it votes again it must not contradict anything
//! its earlier incarnation said. Two things can go wrong:
//!
//! 1. **Lost votes.** A value chosen with the old incarnation's vote is now
//!    held by one member fewer; a phase 1 that meets the blank node could
//!    miss it. The rebuild therefore runs, for every register that any
//!    majority of the *other* members holds, a phase 1 at the other members
//!    with a fresh ballot and takes the vote phase 2 would have to respect
//!    ([`rebuilt_vote`]). Late accepts of the old incarnation's rounds are
//!    then refused by the members that promised the fresh ballot.
//! 2. **Lost promises.** A proposer may hold a promise of the old
//!    incarnation for a ballot the new one knows nothing about, and may use
//!    it in a phase-1 majority. So every promise carries the promiser's
//!    incarnation, every accept carries the incarnations of the promises its
//!    round used (a [`Fence`]), and an acceptor refuses an accept whose fence
//!    names an incarnation older than one it has recorded ([`Known::admits`]).
//!    The rebuilding node records its new incarnation at a majority of the
//!    others before it rebuilds, so a round that relied on an old promise can
//!    no longer gather a majority of accepts.
//!
//! This is the promise-floor approach of invariant 8, made exact: instead of
//! guessing a ballot above everything in flight, the old incarnation's
//! promises are fenced off, and its votes are re-read through a majority.
//! The model checker (`tests/model_check.rs`) checks it with a wipe fault.

use std::collections::BTreeMap;

use super::ballot::{Ballot, NodeId};
use super::messages::Accepted;
use super::proposer::unanimous_fast_vote;
use super::quorum::Members;

/// How many times a member started over with a blank disk, plus one: the
/// first incarnation of every member is 1.
pub type Incarnation = u64;

/// The incarnation every member has until it records another.
pub const FIRST_INCARNATION: Incarnation = 1;

/// The promisers of one proposer round, each with the incarnation that
/// promised. Sent with the round's accepts; empty for the fast ballot,
/// which has no phase 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence(pub BTreeMap<NodeId, Incarnation>);

impl Fence {
    /// Records that `node`, in `incarnation`, promised this round's ballot.
    pub fn promised(&mut self, node: NodeId, incarnation: Incarnation) {
        self.0.insert(node, incarnation);
    }

    /// No promiser is named (fast ballot, decides, reads).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The newest incarnation an acceptor has recorded for each member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Known(pub BTreeMap<NodeId, Incarnation>);

impl Known {
    /// The recorded incarnation of `node` ([`FIRST_INCARNATION`] if none).
    pub fn of(&self, node: NodeId) -> Incarnation {
        self.0.get(&node).copied().unwrap_or(FIRST_INCARNATION)
    }

    /// Raises the recorded incarnation of `node`; true when it changed (the
    /// caller must make the new table durable before it acknowledges).
    pub fn record(&mut self, node: NodeId, incarnation: Incarnation) -> bool {
        if incarnation > self.of(node) {
            self.0.insert(node, incarnation);
            true
        } else {
            false
        }
    }

    /// Whether an accept whose round relied on the promises of `fence` may be
    /// applied: `Err(node)` names a promiser whose incarnation has been
    /// superseded (it lost its disk since it promised, so the round's
    /// phase 1 may have missed a vote: refuse, and the proposer retries with
    /// a fresh phase 1).
    pub fn admits(&self, fence: &Fence) -> Result<(), NodeId> {
        match fence.0.iter().find(|(node, inc)| **inc < self.of(**node)) {
            Some((node, _)) => Err(*node),
            None => Ok(()),
        }
    }
}

/// The vote a rebuilding acceptor takes for one register, from the promises
/// of a majority of the *other* members for a fresh ballot (the same rule as
/// phase 2's choice of value, invariant 3):
/// - the highest classic vote among them, if any: one ballot carries one
///   value, and accepting a proposal late is always allowed to an acceptor
///   that promised nothing higher;
/// - else a fast vote only if every promiser of the epoch's electorate
///   carries that same value (a fast value is chosen only with every
///   electorate member's vote, so if one of them lacks it, it was not chosen,
///   and the promisers now refuse the fast ballot, so it never will be; see
///   [`Members::in_electorate`]);
/// - else nothing.
pub fn rebuilt_vote<V: Clone + PartialEq>(
    promises: &BTreeMap<NodeId, Option<Accepted<V>>>,
    members: &Members,
) -> Option<Accepted<V>> {
    let highest = promises.values().flatten().max_by_key(|v| v.ballot)?;
    if highest.ballot != Ballot::FAST {
        return Some(highest.clone());
    }
    unanimous_fast_vote(promises, members).map(|value| Accepted {
        ballot: Ballot::FAST,
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(round: u64, node: NodeId, value: &'static str) -> Option<Accepted<&'static str>> {
        Some(Accepted {
            ballot: Ballot::new(round, node),
            value,
        })
    }

    #[test]
    fn a_superseded_promiser_fences_the_accept() {
        let mut known = Known::default();
        let mut fence = Fence::default();
        fence.promised(1, 1);
        fence.promised(3, 1);
        assert_eq!(known.admits(&fence), Ok(()));
        assert!(known.record(3, 2));
        assert!(
            !known.record(3, 2),
            "recording the same incarnation changes nothing"
        );
        assert_eq!(known.admits(&fence), Err(3));
        fence.promised(3, 2);
        assert_eq!(known.admits(&fence), Ok(()));
        assert_eq!(
            known.admits(&Fence::default()),
            Ok(()),
            "fast accepts have no fence"
        );
    }

    fn promises(
        votes: &[Option<Accepted<&'static str>>],
    ) -> BTreeMap<NodeId, Option<Accepted<&'static str>>> {
        (1..).zip(votes.iter().cloned()).collect()
    }

    #[test]
    fn rebuild_takes_the_highest_classic_vote() {
        let promises = promises(&[vote(0, 0, "fast"), vote(3, 2, "b"), None, vote(2, 1, "a")]);
        let members = Members::new([1, 2, 3, 4, 5]);
        assert_eq!(rebuilt_vote(&promises, &members), vote(3, 2, "b"));
    }

    #[test]
    fn rebuild_takes_a_fast_vote_only_when_every_promiser_has_it() {
        let members = Members::new([1, 2, 3]);
        let x = vote(0, 0, "x");
        assert_eq!(
            rebuilt_vote(&promises(&[x.clone(), x.clone()]), &members),
            x
        );
        assert_eq!(
            rebuilt_vote(&promises(&[x.clone(), vote(0, 0, "y")]), &members),
            None
        );
        assert_eq!(rebuilt_vote(&promises(&[x.clone(), None]), &members), None);
        assert_eq!(
            rebuilt_vote::<&str>(&promises(&[None, None]), &members),
            None
        );
        // In a transitional epoch that added node 2, node 2's silence proves nothing.
        let grown = Members::transitional([1, 2, 3, 4], [1, 3, 4]);
        assert_eq!(rebuilt_vote(&promises(&[x.clone(), None]), &grown), x);
    }
}
