//! Cluster membership and majority math.

use std::collections::BTreeSet;

use super::ballot::NodeId;

/// The fixed set of members of a cluster. Every quorum is a strict majority,
/// so any two quorums share at least one member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Members(BTreeSet<NodeId>);

impl Members {
    /// The members with these ids. Panics on an empty set: a cluster has at
    /// least one member (config validation rejects empty `--peers` first).
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> Self {
        let set: BTreeSet<NodeId> = ids.into_iter().collect();
        assert!(!set.is_empty(), "a cluster needs at least one member");
        Members(set)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a cluster has a member. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Smallest number of members that forms a majority: `len / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.0.len() / 2 + 1
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.0.contains(&id)
    }

    /// The member ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.iter().copied()
    }
}
