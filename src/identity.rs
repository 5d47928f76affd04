//! Who a data directory belongs to: cluster id, node id, incarnation, the
//! membership, and the incarnations this node has recorded for its peers
//! (docs/design.md, invariants 8 and 10).
//!
//! The identity is stored as node metadata (for sled: a small JSON file next
//! to the database, written atomically, so that it survives the database
//! being set aside after a disk failure). Its absence on a directory with no
//! data is what tells a node it may be new, or may have lost its disk: it
//! then asks its peers before it votes in anything (see `src/rejoin.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::membership::MemberConfig;
use crate::paxos::{Incarnation, Known, NodeId, FIRST_INCARNATION};

/// The metadata name the identity is stored under.
pub const META_NAME: &str = "node";

/// The metadata name of the nonce a new node offers at cluster genesis.
pub const GENESIS_META: &str = "genesis";

/// Version of the identity record this release writes and reads.
pub const IDENTITY_FORMAT: u32 = 1;

/// The membership epoch of a cluster whose members never changed.
pub const FIRST_EPOCH: u64 = 1;

/// A node's identity, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// [`IDENTITY_FORMAT`].
    pub format: u32,
    /// The cluster this directory belongs to.
    pub cluster: String,
    /// This node's id.
    pub node: NodeId,
    /// This node's incarnation: bumped each time it starts over without its
    /// acceptor state.
    pub incarnation: Incarnation,
    /// The membership epoch.
    pub epoch: u64,
    /// Every member's base URL, this node included.
    pub members: BTreeMap<NodeId, String>,
    /// Set while the epoch is transitional: the members of the stable
    /// epoch before (`src/membership.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<BTreeSet<NodeId>>,
    /// Ids removed from the cluster, never reused.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retired: BTreeSet<NodeId>,
    /// The newest incarnation recorded for each peer (the fence).
    #[serde(default)]
    pub known: BTreeMap<NodeId, Incarnation>,
    /// The genesis nonce each founding member offered when this cluster
    /// started (empty when this node did not found it). A founder that
    /// crashed before storing its identity shows the same nonce again and
    /// is told it may join without a rebuild: it never voted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub founders: BTreeMap<NodeId, u64>,
    /// The id of the database this identity was stored with
    /// (`Storage::database_id`): a different one means the database was
    /// replaced or deleted under the identity, and the node rebuilds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<u64>,
    /// False from the moment this incarnation starts rebuilding until its
    /// rebuild is complete: a node that crashes meanwhile resumes the rebuild
    /// instead of serving a half-copied state.
    pub rebuilt: bool,
}

/// Why a stored identity cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The record does not parse.
    #[error("the identity record is corrupt: {0}")]
    Corrupt(String),
    /// Written by a newer release.
    #[error("identity format {0} is not supported (this release reads {IDENTITY_FORMAT})")]
    Format(u32),
    /// The directory belongs to another node.
    #[error("this data directory belongs to node {found} of cluster {cluster}, not node {expected}; give each node its own directory")]
    OtherNode {
        /// The node id recorded.
        found: NodeId,
        /// The id this process was started with.
        expected: NodeId,
        /// The recorded cluster.
        cluster: String,
    },
}

impl Identity {
    /// Decodes a stored record for node `expected`.
    pub fn decode(bytes: &[u8], expected: NodeId) -> Result<Identity, IdentityError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        if probe.format != IDENTITY_FORMAT {
            return Err(IdentityError::Format(probe.format));
        }
        let identity: Identity =
            serde_json::from_slice(bytes).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        if identity.node != expected {
            return Err(IdentityError::OtherNode {
                found: identity.node,
                expected,
                cluster: identity.cluster,
            });
        }
        Ok(identity)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an identity always encodes");
        bytes.push(b'\n');
        bytes
    }

    /// A first incarnation in cluster `cluster`.
    pub fn new(cluster: String, node: NodeId, members: &BTreeMap<NodeId, String>) -> Self {
        Identity {
            format: IDENTITY_FORMAT,
            cluster,
            node,
            incarnation: FIRST_INCARNATION,
            epoch: FIRST_EPOCH,
            members: members.clone(),
            previous: None,
            retired: BTreeSet::new(),
            known: BTreeMap::new(),
            founders: BTreeMap::new(),
            database: None,
            rebuilt: true,
        }
    }

    /// The membership this node holds (always a chosen one).
    pub fn config(&self) -> MemberConfig {
        MemberConfig {
            epoch: self.epoch,
            members: self.members.clone(),
            previous: self.previous.clone(),
            retired: self.retired.clone(),
        }
    }

    /// Takes `config` as this node's membership.
    pub fn set_config(&mut self, config: MemberConfig) {
        self.epoch = config.epoch;
        self.members = config.members;
        self.previous = config.previous;
        self.retired = config.retired;
    }

    /// The recorded peer incarnations as the pure core's table.
    pub fn known(&self) -> Known {
        Known(self.known.clone())
    }
}

/// A digest of a membership (ids and URLs), the same on every node started
/// with the same `--peers`: nodes with different member lists never agree
/// on it, so they never form a cluster together. FNV-1a, 64 bits: stable
/// across releases and platforms (std's hasher is not).
pub fn members_digest(members: &BTreeMap<NodeId, String>) -> u64 {
    let mut canonical = String::new();
    for (id, url) in members {
        canonical.push_str(&format!("{id}={},", url.trim_end_matches('/')));
    }
    fnv1a(canonical.as_bytes())
}

/// The id of a cluster born from `members`, with the genesis nonce of its
/// lowest-numbered member: every founding node computes the same one.
pub fn cluster_id(members: &BTreeMap<NodeId, String>, nonce: u64) -> String {
    format!("{:016x}-{nonce:016x}", members_digest(members))
}

/// The id given to a cluster whose directories predate cluster identity
/// (they hold data but no identity): derived from the membership alone, so
/// every upgraded node computes the same one without asking.
pub fn legacy_cluster_id(members: &BTreeMap<NodeId, String>) -> String {
    format!("{:016x}-legacy", members_digest(members))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> BTreeMap<NodeId, String> {
        (1..=3)
            .map(|i| (i, format!("http://127.0.0.1:700{i}/")))
            .collect()
    }

    #[test]
    fn identity_round_trips_and_refuses_another_node() {
        let mut id = Identity::new(cluster_id(&members(), 42), 2, &members());
        id.known.insert(3, 4);
        let bytes = id.encode();
        assert_eq!(Identity::decode(&bytes, 2).unwrap(), id);
        let other = Identity::decode(&bytes, 1).unwrap_err();
        assert!(other.to_string().contains("belongs to node 2"), "{other}");
        assert!(matches!(
            Identity::decode(b"{\"format\":9}", 2),
            Err(IdentityError::Format(9))
        ));
        assert!(matches!(
            Identity::decode(b"nonsense", 2),
            Err(IdentityError::Corrupt(_))
        ));
    }

    #[test]
    fn digests_tell_memberships_apart() {
        let a = members();
        let mut b = members();
        b.insert(4, "http://127.0.0.1:7004/".into());
        assert_ne!(members_digest(&a), members_digest(&b));
        let mut slash = members();
        slash.insert(1, "http://127.0.0.1:7001".into());
        assert_eq!(members_digest(&a), members_digest(&slash));
        assert_eq!(cluster_id(&a, 1), cluster_id(&a, 1));
        assert_ne!(cluster_id(&a, 1), cluster_id(&a, 2));
        // Stable across releases: a fixed input, a fixed digest.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
