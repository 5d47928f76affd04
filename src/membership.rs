//! Membership as data (docs/design.md, "Changing the members", and
//! invariant 10): the members of each epoch, as the cluster stores them.
//!
//! The configuration of epoch `E + 1` is the value of a write-once register,
//! [`register`]`(E + 1)`, chosen by the members of epoch `E` with the same
//! Paxos as every key. Two changes proposed at once race for that register:
//! one wins, the other is refused (409) and loses nothing. A node adopts a
//! configuration only once it is chosen, so every configuration a node
//! holds was chosen.
//!
//! One change is two epochs (after "Adding and removing acceptors" in
//! CASPaxos, Rystsov 2018, arXiv 1802.07000, with one member changed at a
//! time so that the majorities of consecutive epochs always intersect, as in
//! Raft's single-server changes, Ongaro 2014, section 4.1):
//! 1. a *transitional* epoch with the new members, in which the fast ballot
//!    is closed: a node added here starts empty and must not make a fast
//!    value chosen, nor hide the old members' fast votes from a phase 1;
//! 2. a *sweep*: every key is read through the new members' quorums with a
//!    classic round and its chosen value recorded as decided at a majority of
//!    them (`Coordinator::sweep`), so a majority of the new members holds
//!    everything chosen so far: this is how the added node catches up, and
//!    what lets the epoch after next (whose majorities need not meet the old
//!    epoch's) find every value;
//! 3. a *stable* epoch with the same members and the fast ballot open again.
//!
//! The next change may start only from a stable epoch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::paxos::{Members, NodeId};

/// The prefix of the cluster's own registers. Client keys cannot contain a
/// control character (docs/api.md), so no client key collides with these,
/// and listing skips them.
pub const INTERNAL_PREFIX: &str = "\u{1}";

/// The register whose chosen value is the configuration of `epoch`.
pub fn register(epoch: u64) -> String {
    format!("{INTERNAL_PREFIX}members/{epoch:020}")
}

/// Whether `key` is one of the cluster's own registers.
pub fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

/// The members of one epoch, with their URLs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The epoch.
    pub epoch: u64,
    /// Every member's base URL.
    pub members: BTreeMap<NodeId, String>,
    /// Set in a transitional epoch: the members of the stable epoch before,
    /// whose fast votes the sweep must still judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<BTreeSet<NodeId>>,
    /// Ids that were members once and were removed: never reused, so a
    /// removed node that comes back is never mistaken for a new one.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retired: BTreeSet<NodeId>,
}

/// A change of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add node `id`, reachable at `url`.
    Add {
        /// The new node's id.
        id: NodeId,
        /// Its base URL.
        url: String,
    },
    /// Remove node `id`.
    Remove {
        /// The node to remove.
        id: NodeId,
    },
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// Another change has not finished (409).
    #[error("another membership change is in progress (epoch {0} is transitional); retry when it has finished")]
    InProgress(u64),
    /// Adding a member that is one already (409).
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// Adding an id that was removed before (409).
    #[error("node id {0} was a member before and was removed; give the new node a new id")]
    Retired(NodeId),
    /// Removing a node that is not a member (404).
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// Removing the last member (409).
    #[error("node {0} is the last member; a cluster needs one")]
    LastMember(NodeId),
    /// Node ids are positive (400).
    #[error("node ids are positive integers")]
    BadId,
    /// The URL is unusable (400).
    #[error("the URL {0:?} is not an http:// or https:// base URL")]
    BadUrl(String),
    /// Another member already has this URL (409).
    #[error("node {0} already has this URL")]
    UrlTaken(NodeId),
}

impl MemberConfig {
    /// The first configuration of a cluster: `--peers`.
    pub fn initial(epoch: u64, members: BTreeMap<NodeId, String>) -> Self {
        MemberConfig {
            epoch,
            members,
            previous: None,
            retired: BTreeSet::new(),
        }
    }

    /// Whether the fast ballot is open (no change in progress).
    pub fn is_stable(&self) -> bool {
        self.previous.is_none()
    }

    /// The quorum view of this epoch for the Paxos core.
    pub fn quorums(&self) -> Members {
        let ids = self.members.keys().copied();
        match &self.previous {
            None => Members::new(ids),
            Some(previous) => Members::transitional(ids, previous.iter().copied()),
        }
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Members added by the transitional epoch this is (still catching up).
    pub fn catching_up(&self) -> BTreeSet<NodeId> {
        match &self.previous {
            Some(previous) => self
                .members
                .keys()
                .filter(|id| !previous.contains(id))
                .copied()
                .collect(),
            None => BTreeSet::new(),
        }
    }

    /// The transitional configuration that makes `change`: the next epoch.
    pub fn change(&self, change: &Change) -> Result<MemberConfig, ChangeRefused> {
        if !self.is_stable() {
            return Err(ChangeRefused::InProgress(self.epoch));
        }
        let mut next = MemberConfig {
            epoch: self.epoch + 1,
            members: self.members.clone(),
            previous: Some(self.members.keys().copied().collect()),
            retired: self.retired.clone(),
        };
        match change {
            Change::Add { id, url } => {
                if *id == 0 {
                    return Err(ChangeRefused::BadId);
                }
                check_url(url)?;
                if self.members.contains_key(id) {
                    return Err(ChangeRefused::AlreadyMember(*id));
                }
                if self.retired.contains(id) {
                    return Err(ChangeRefused::Retired(*id));
                }
                let canonical = url.trim_end_matches('/');
                if let Some((other, _)) = self
                    .members
                    .iter()
                    .find(|(_, u)| u.trim_end_matches('/') == canonical)
                {
                    return Err(ChangeRefused::UrlTaken(*other));
                }
                next.members.insert(*id, url.clone());
            }
            Change::Remove { id } => {
                if !self.members.contains_key(id) {
                    return Err(ChangeRefused::NotMember(*id));
                }
                if self.members.len() == 1 {
                    return Err(ChangeRefused::LastMember(*id));
                }
                next.members.remove(id);
                next.retired.insert(*id);
            }
        }
        Ok(next)
    }

    /// The stable epoch that ends a transitional one, once swept.
    pub fn stabilized(&self) -> MemberConfig {
        MemberConfig {
            epoch: self.epoch + 1,
            members: self.members.clone(),
            previous: None,
            retired: self.retired.clone(),
        }
    }

    /// The register value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a configuration always encodes")
    }

    /// A register value back.
    pub fn decode(bytes: &[u8]) -> Result<MemberConfig, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A base URL a peer can be reached at.
fn check_url(url: &str) -> Result<(), ChangeRefused> {
    let bad = || ChangeRefused::BadUrl(url.to_owned());
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    let usable = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if usable {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> MemberConfig {
        MemberConfig::initial(
            1,
            (1..=3)
                .map(|i| (i, format!("http://127.0.0.1:700{i}")))
                .collect(),
        )
    }

    #[test]
    fn a_change_is_a_transitional_epoch_then_a_stable_one() {
        let add = Change::Add {
            id: 4,
            url: "http://127.0.0.1:7004".into(),
        };
        let t = three().change(&add).unwrap();
        assert_eq!(t.epoch, 2);
        assert!(!t.is_stable() && !t.quorums().fast_allowed());
        assert_eq!(t.catching_up(), BTreeSet::from([4]));
        assert_eq!(t.change(&add), Err(ChangeRefused::InProgress(2)));
        let s = t.stabilized();
        assert_eq!((s.epoch, s.is_stable()), (3, true));
        assert_eq!(s.quorums().quorum(), 3);
        let r = s.change(&Change::Remove { id: 1 }).unwrap().stabilized();
        assert_eq!(r.members.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(
            r.change(&Change::Add {
                id: 1,
                url: "http://127.0.0.1:7009".into()
            }),
            Err(ChangeRefused::Retired(1))
        );
        assert_eq!(MemberConfig::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn bad_changes_are_refused_with_a_reason() {
        let c = three();
        let add = |id, url: &str| Change::Add {
            id,
            url: url.into(),
        };
        assert_eq!(c.change(&add(0, "http://a:1")), Err(ChangeRefused::BadId));
        assert!(matches!(
            c.change(&add(4, "ftp://a")),
            Err(ChangeRefused::BadUrl(_))
        ));
        assert!(matches!(
            c.change(&add(4, "not a url")),
            Err(ChangeRefused::BadUrl(_))
        ));
        assert_eq!(
            c.change(&add(2, "http://b:1")),
            Err(ChangeRefused::AlreadyMember(2))
        );
        assert_eq!(
            c.change(&add(5, "http://127.0.0.1:7001/")),
            Err(ChangeRefused::UrlTaken(1))
        );
        assert_eq!(
            c.change(&Change::Remove { id: 9 }),
            Err(ChangeRefused::NotMember(9))
        );
        let one = MemberConfig::initial(1, BTreeMap::from([(1, "http://a:1".to_owned())]));
        assert_eq!(
            one.change(&Change::Remove { id: 1 }),
            Err(ChangeRefused::LastMember(1))
        );
        assert!(register(2) < register(10), "registers sort by epoch");
        assert!(is_internal(&register(2)));
    }
}
