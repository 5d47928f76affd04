//! Ballots and the per-node ballot clock.
//!
//! A ballot is `(round, node)` compared lexicographically. Two nodes never
//! share a ballot because the node id is part of it; one node never reuses a
//! ballot because its rounds come from a [`BallotClock`] whose high-water mark
//! is persisted before any round above the previous mark is used
//! (docs/design.md invariant 2).

use serde::{Deserialize, Serialize};

/// Identifier of a cluster member: a small positive integer.
pub type NodeId = u32;

/// A Paxos ballot (proposal number). `Ballot::ZERO` is below every ballot a
/// proposer can produce and stands for "nothing promised yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Compared first.
    pub round: u64,
    /// Breaks ties between proposers; the proposing node's id.
    pub node: NodeId,
}

impl Ballot {
    /// Lower than any ballot a [`BallotClock`] hands out.
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };

    /// The fast ballot (Lamport, "Fast Paxos", 2006): round 0, shared by every
    /// proposer, which sends its value straight to phase 2 in it without a
    /// phase 1. An acceptor votes in it at most once, for the first value it
    /// gets, and only while it has promised nothing. Unlike every other
    /// ballot it may carry different values at different acceptors, so a
    /// value is chosen in it only when *every* member voted for it (a fast
    /// quorum of all members), and a phase 1 that finds fast votes keeps a
    /// fast value only when the whole promising majority voted for it.
    pub const FAST: Ballot = Ballot::ZERO;

    /// A ballot for `node` in `round`.
    pub const fn new(round: u64, node: NodeId) -> Self {
        Ballot { round, node }
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// The highest round a peer may send. Peers' messages with rounds above it
/// are refused at the wire, so hints fed to [`BallotClock::next`] stay far
/// below `u64::MAX` and the clock cannot run out of rounds.
pub const MAX_ROUND: u64 = 1 << 62;

/// How many rounds a node reserves with one durable write.
pub const ROUND_RESERVATION: u64 = 1 << 20;

/// Hands out strictly increasing rounds for one node, across restarts.
///
/// The clock never uses a round above its durable `reserved` mark. When it
/// needs one, [`BallotClock::next`] returns a new mark that the caller must
/// persist *before* it uses the ballot; [`BallotClock::restore`] starts above
/// the persisted mark, so no round used before a crash is used again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BallotClock {
    node: NodeId,
    last: u64,
    reserved: u64,
}

/// A ballot from the clock, possibly with a reservation to persist first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use = "persist `reserve` (when set) before using `ballot`"]
pub struct NextBallot {
    /// The new ballot: above every ballot this node produced before.
    pub ballot: Ballot,
    /// When set, the caller must durably store this mark (and restore the
    /// clock from it after a restart) before sending `ballot` anywhere.
    pub reserve: Option<u64>,
}

impl BallotClock {
    /// The clock of a node whose durable mark is `reserved` (0 on first start).
    /// Every round it hands out is above `reserved`.
    pub fn restore(node: NodeId, reserved: u64) -> Self {
        BallotClock {
            node,
            last: reserved,
            reserved,
        }
    }

    /// This clock's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The reservation mark: no round above it was handed out.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The next ballot, with a round above every round handed out before and
    /// above `at_least_above` (the highest round seen from other proposers).
    ///
    /// # Panics
    /// When no round is left above `u64::MAX - 1`: repeating a ballot would
    /// break agreement, so the clock refuses. Unreachable while hints come
    /// from messages bounded by [`MAX_ROUND`].
    pub fn next(&mut self, at_least_above: u64) -> NextBallot {
        let round = self
            .last
            .max(at_least_above)
            .checked_add(1)
            .expect("ballot rounds exhausted: refusing to reuse a ballot");
        self.last = round;
        let reserve = if round > self.reserved {
            self.reserved = round.saturating_add(ROUND_RESERVATION);
            Some(self.reserved)
        } else {
            None
        };
        NextBallot {
            ballot: Ballot::new(round, self.node),
            reserve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_compare_round_first_then_node() {
        assert!(Ballot::new(1, 3) < Ballot::new(2, 1));
        assert!(Ballot::new(2, 1) < Ballot::new(2, 2));
        assert!(Ballot::ZERO < Ballot::new(1, 1));
    }

    /// Invariant 2: a node never uses the same ballot twice.
    #[test]
    fn clock_is_strictly_increasing_and_jumps_past_hints() {
        let mut c = BallotClock::restore(2, 0);
        let a = c.next(0);
        assert_eq!(a.ballot, Ballot::new(1, 2));
        assert_eq!(a.reserve, Some(1 + ROUND_RESERVATION));
        let b = c.next(0);
        assert_eq!(b.ballot, Ballot::new(2, 2));
        assert_eq!(
            b.reserve, None,
            "inside the reservation: nothing to persist"
        );
        let d = c.next(41);
        assert_eq!(d.ballot.round, 42);
    }

    /// Invariant 2 across a restart: the restored clock starts above the
    /// durable mark, so it is above every round used before the crash.
    #[test]
    fn restored_clock_never_repeats_a_round() {
        let mut c = BallotClock::restore(1, 0);
        let first = c.next(0);
        let mark = first.reserve.unwrap();
        let mut used = vec![first.ballot];
        for _ in 0..10 {
            used.push(c.next(0).ballot);
        }
        let mut after = BallotClock::restore(1, mark);
        let n = after.next(0);
        assert!(used.iter().all(|b| *b < n.ballot));
        assert!(n.reserve.is_some());
    }

    #[test]
    fn hint_beyond_reservation_reserves_again() {
        let mut c = BallotClock::restore(1, 0);
        let _ = c.next(0);
        let far = c.next(5 * ROUND_RESERVATION);
        assert_eq!(far.ballot.round, 5 * ROUND_RESERVATION + 1);
        assert_eq!(far.reserve, Some(6 * ROUND_RESERVATION + 1));
    }
}
