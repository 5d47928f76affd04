//! Cluster membership and majority math, for one membership epoch.
//!
//! A membership change (docs/design.md, "Changing the members") moves the
//! cluster through two epochs per change: a *transitional* epoch with the new
//! members, in which nobody may vote in the fast ballot while every key is
//! swept into the new members' quorums, then a *stable* epoch with the same
//! members and the fast ballot open again. Two things in the core depend on
//! which kind of epoch a request runs in, and both live here:
//! - whether a fast attempt may be made at all ([`Members::fast_allowed`]);
//! - whose fast votes can have made a value chosen ([`Members::in_electorate`]):
//!   in a stable epoch, its own members (a fast value needs every member's
//!   vote); in a transitional one, the members of the stable epoch before it,
//!   the only epoch in which fast votes not yet swept were cast.

use std::collections::BTreeSet;

use super::ballot::NodeId;

/// The members of a cluster in one epoch. Every quorum is a strict majority
/// of the members, so any two quorums share at least one member; one member
/// added or removed per epoch keeps that true across consecutive epochs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Members {
    voters: BTreeSet<NodeId>,
    /// Whose fast votes can make up a chosen fast value (see the module doc).
    electorate: BTreeSet<NodeId>,
    /// Whether the fast ballot is open in this epoch.
    fast: bool,
}

impl Members {
    /// The members of a stable epoch with these ids. Panics on an empty set: a
    /// cluster has at least one member (config validation rejects empty
    /// `--peers` first).
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> Self {
        let set: BTreeSet<NodeId> = ids.into_iter().collect();
        assert!(!set.is_empty(), "a cluster needs at least one member");
        Members {
            electorate: set.clone(),
            voters: set,
            fast: true,
        }
    }

    /// The members of a transitional epoch: `ids` vote, the fast ballot is
    /// closed, and a fast vote found in a phase 1 is judged by the members of
    /// the stable epoch before, `previous`.
    pub fn transitional(
        ids: impl IntoIterator<Item = NodeId>,
        previous: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        let mut members = Members::new(ids);
        members.electorate = previous.into_iter().collect();
        assert!(
            !members.electorate.is_empty(),
            "a transitional epoch follows a stable one with members"
        );
        members.fast = false;
        members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Always false: a cluster has a member. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// Smallest number of members that forms a majority: `len / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The member ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    /// Whether a PUT may try the fast ballot, and an acceptor vote in it.
    pub fn fast_allowed(&self) -> bool {
        self.fast
    }

    /// Whether `id`'s fast vote counts towards a fast value being chosen.
    pub fn in_electorate(&self, id: NodeId) -> bool {
        self.electorate.contains(&id)
    }

    /// How many fast votes for one value make it chosen: every member of the
    /// electorate.
    pub fn electorate_len(&self) -> usize {
        self.electorate.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_single_changes_keep_every_pair_of_quorums_intersecting() {
        // The reason one change per epoch is safe: a majority of n and a
        // majority of n ± 1 members (sharing the rest) always overlap.
        fn majorities(ids: &[NodeId]) -> Vec<BTreeSet<NodeId>> {
            let q = ids.len() / 2 + 1;
            (0u32..1 << ids.len())
                .filter(|mask| mask.count_ones() as usize == q)
                .map(|mask| {
                    ids.iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, id)| *id)
                        .collect()
                })
                .collect()
        }
        for n in 1..=6u32 {
            let old: Vec<NodeId> = (1..=n).collect();
            let grown: Vec<NodeId> = (1..=n + 1).collect();
            let mut shrunk = old.clone();
            shrunk.remove(0);
            for next in [grown, shrunk].iter().filter(|m| !m.is_empty()) {
                for a in majorities(&old) {
                    for b in majorities(next) {
                        assert!(!a.is_disjoint(&b), "{old:?} -> {next:?}: {a:?} and {b:?}");
                    }
                }
            }
        }
        // Two changes in one step do not: {1,2} and {3,4} share nobody.
        let a: BTreeSet<NodeId> = [1, 2].into();
        let b: BTreeSet<NodeId> = [3, 4].into();
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn a_transitional_epoch_closes_the_fast_ballot_and_keeps_the_old_electorate() {
        let m = Members::transitional([1, 2, 3, 4], [1, 2, 3]);
        assert!(!m.fast_allowed());
        assert_eq!(m.quorum(), 3);
        assert!(m.in_electorate(2) && !m.in_electorate(4));
        assert_eq!(m.electorate_len(), 3);
        let s = Members::new([1, 2, 3, 4]);
        assert!(s.fast_allowed() && s.in_electorate(4));
    }
}
