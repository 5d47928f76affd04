//! Why a node refuses a peer's message: the sender is not of its cluster or
//! membership epoch (docs/design.md, invariant 10), or this node has not
//! joined a cluster yet.

use crate::paxos::NodeId;

/// Why [`crate::node::Node::admit_peer`] refused a peer message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    /// This node has no cluster yet (it forms or rebuilds one): expected
    /// while a cluster forms, so neither noted nor logged.
    #[error("this node has not joined its cluster yet")]
    NotJoined,
    /// The sender belongs to another cluster.
    #[error("node {from} belongs to cluster {theirs:?}, this node to {mine:?} (different --peers, or a data directory of another cluster)")]
    OtherCluster {
        /// The sender.
        from: NodeId,
        /// The sender's cluster id.
        theirs: String,
        /// This node's cluster id.
        mine: String,
    },
    /// The sender is at another membership epoch.
    #[error("node {from} is at membership epoch {theirs}, this node at {mine}")]
    OtherEpoch {
        /// The sender.
        from: NodeId,
        /// The sender's epoch.
        theirs: u64,
        /// This node's epoch.
        mine: u64,
    },
}
