//! The JSON messages between nodes (protocol version 2).
//!
//! Acceptor messages travel only in [`PeerBatch`]es, POSTed to
//! `/v1/paxos/batch`: many messages (for any keys) in one request, answered
//! by a [`BatchResponse`] with one reply per message, in order; a single
//! message is a batch of one. Batching is how a node keeps up under load:
//! one HTTP exchange and one group commit serve many keys. Values travel as
//! standard base64, with the id of the PUT that proposed them (`writer`).
//!
//! Every batch names the sender's cluster, membership epoch and incarnation;
//! a node refuses a batch of another cluster or epoch (409), so nodes
//! configured with different member lists never form a quorum together
//! (docs/design.md, invariant 10). Every answer names the acceptor's
//! incarnation, and an accept names the incarnations of the promises its
//! round used (`fence`, invariant 8; see `src/paxos/rejoin.rs`).
//!
//! Node-level messages, outside any register: `/v1/paxos/hello` (who are
//! you: cluster, state, incarnation), `/v1/paxos/fence` (record my new
//! incarnation) and `/v1/paxos/scan` (a page of the keys you hold), used by a
//! node that starts a cluster or rebuilds after losing its disk.
//!
//! A message with another `version` is refused with 400 instead of being
//! misread (invariant 7).
//!
//! Which messages of a batch are announced decides, recorded without a
//! disk sync, travels beside the body, in the [`LAZY_HEADER`] header: the
//! body stays the shape releases before it accept.
//!
//! ```json
//! {"version":2,"from":2,"cluster":"9f..-01..","epoch":1,"incarnation":1,
//!  "messages":[{"op":"accept","key":"app/db","ballot":{"round":7,"node":2},
//!               "value":"aGk=","writer":12,"fence":{"1":1,"2":1}}]}
//! {"version":2,"from":1,"incarnation":1,"replies":[{"ok":{"type":"accepted","ballot":{"round":7,"node":2}}}]}
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::collections::BTreeMap;

use crate::paxos::ballot::MAX_ROUND;
use crate::paxos::{Accepted, Ballot, Fence, Incarnation, NodeId, Reply, Request};
use crate::value::Value;

/// The peer protocol version this release speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes that serialize as a base64 string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base64(pub Bytes);

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(|v| Base64(Bytes::from(v)))
            .map_err(|e| serde::de::Error::custom(format!("value is not base64: {e}")))
    }
}

/// The four acceptor operations, one route each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Phase 1a.
    Prepare,
    /// Phase 2a.
    Accept,
    /// Quorum read.
    Read,
    /// Chosen-value notice.
    Decide,
}

impl Op {
    /// The route's last path segment.
    pub fn name(self) -> &'static str {
        match self {
            Op::Prepare => "prepare",
            Op::Accept => "accept",
            Op::Read => "read",
            Op::Decide => "decide",
        }
    }

    /// The operation of a request.
    pub fn of<V>(request: &Request<V>) -> Op {
        match request {
            Request::Prepare { .. } => Op::Prepare,
            Request::Accept { .. } => Op::Accept,
            Request::Read => Op::Read,
            Request::Decide { .. } => Op::Decide,
        }
    }
}

/// Most messages in one [`PeerBatch`].
pub const MAX_BATCH_MESSAGES: usize = 256;

/// A sender closes a batch before its values pass this many bytes (a batch
/// of one message may carry a larger value).
pub const BATCH_VALUE_BYTES: usize = 1 << 20;

/// Which cluster, membership and incarnation a message comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster id (empty while it has none yet).
    pub cluster: String,
    /// The sender's membership epoch.
    pub epoch: u64,
    /// The sender's incarnation.
    pub incarnation: Incarnation,
}

/// Body of `/v1/paxos/batch`: messages for any keys, from one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerBatch {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sending node.
    pub from: NodeId,
    /// The sender's cluster id.
    pub cluster: String,
    /// The sender's membership epoch.
    pub epoch: u64,
    /// The sender's incarnation.
    pub incarnation: Incarnation,
    /// At most [`MAX_BATCH_MESSAGES`].
    pub messages: Vec<BatchMessage>,
}

impl PeerBatch {
    /// A batch from `from` under `envelope`.
    pub fn new(from: NodeId, envelope: &Envelope, messages: Vec<BatchMessage>) -> Self {
        PeerBatch {
            version: PROTOCOL_VERSION,
            from,
            cluster: envelope.cluster.clone(),
            epoch: envelope.epoch,
            incarnation: envelope.incarnation,
            messages,
        }
    }
}

/// One acceptor message of a [`PeerBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    /// Which acceptor operation.
    pub op: Op,
    /// The register.
    pub key: String,
    /// Set for prepare, accept and decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ballot: Option<Ballot>,
    /// Set for accept and decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Base64>,
    /// Set for accept and decide: the PUT request that proposed `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<u64>,
    /// On a classic accept: each promiser of the round and its incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<BTreeMap<NodeId, Incarnation>>,
}

impl BatchMessage {
    /// Encodes `request` for `key`, with the round's `fence` (accepts only).
    pub fn new(key: &str, request: Request<Value>, fence: Fence) -> Self {
        let op = Op::of(&request);
        let (ballot, value) = match request {
            Request::Prepare { ballot } => (Some(ballot), None),
            Request::Accept { ballot, value } | Request::Decide { ballot, value } => {
                (Some(ballot), Some(value))
            }
            Request::Read => (None, None),
        };
        let (value, writer) = match value {
            Some(v) => (Some(Base64(v.bytes)), Some(v.writer)),
            None => (None, None),
        };
        BatchMessage {
            op,
            key: key.to_owned(),
            ballot,
            value,
            writer,
            fence: (!fence.is_empty()).then_some(fence.0),
        }
    }

    /// The value bytes this message carries.
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.0.len())
    }

    /// Decodes the message of a batch of protocol `version`, or says what is
    /// wrong with it.
    pub fn into_request(self, version: u32) -> Result<(String, Request<Value>, Fence), String> {
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "peer protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})"
            ));
        }
        let op = self.op;
        let ballot = || {
            let ballot = self
                .ballot
                .ok_or_else(|| format!("{} needs a ballot", op.name()))?;
            // Round 0 is the fast ballot: phase 2 only, and only as 0.0.
            let fast_ok = op != Op::Prepare && ballot == Ballot::FAST;
            if ballot.round == 0 && !fast_ok {
                return Err(
                    "ballot round 0 is only the fast ballot 0.0, never prepared".to_string()
                );
            }
            check_round(ballot)
        };
        let value = || match (&self.value, self.writer) {
            (Some(bytes), Some(writer)) => Ok(Value {
                writer,
                bytes: bytes.0.clone(),
            }),
            _ => Err(format!("{} needs a value and its writer", op.name())),
        };
        if self.fence.is_some() && op != Op::Accept {
            return Err(format!("{} carries no fence", op.name()));
        }
        let request = match op {
            Op::Prepare => Request::Prepare { ballot: ballot()? },
            Op::Accept => Request::Accept {
                ballot: ballot()?,
                value: value()?,
            },
            Op::Read => Request::Read,
            Op::Decide => Request::Decide {
                ballot: ballot()?,
                value: value()?,
            },
        };
        Ok((self.key, request, Fence(self.fence.unwrap_or_default())))
    }
}

/// The HTTP request header of a `/v1/paxos/batch` POST that names the
/// messages of its batch that are announced decides (fire and forget, the
/// answer dropped), which the acceptor may record without waiting for a
/// disk sync (docs/design.md, "Durability: what is synced before a
/// reply"; docs/api.md, "Peer protocol"): their indexes in the batch,
/// ascending, comma-separated, e.g. `x-paxos-kv-lazy: 0,3`.
///
/// A header and not a field of [`BatchMessage`]: releases before it refuse
/// a body with a field they do not know (`deny_unknown_fields`), and with
/// it every accept batched alongside, but ignore a header they do not
/// know, and then simply record the decide durably. So old and new nodes
/// interoperate during a rolling upgrade. A batch without the header (what
/// those releases send) is durable throughout.
pub const LAZY_HEADER: &str = "x-paxos-kv-lazy";

/// The [`LAZY_HEADER`] value of a batch whose message `i` is a lazy
/// announce iff `lazy[i]`; `None` (send no header) when none is.
pub fn lazy_header(lazy: &[bool]) -> Option<String> {
    let indexes: Vec<String> = lazy
        .iter()
        .enumerate()
        .filter(|(_, &lazy)| lazy)
        .map(|(i, _)| i.to_string())
        .collect();
    (!indexes.is_empty()).then(|| indexes.join(","))
}

/// Which of `messages` are lazy announces, from the batch's
/// [`LAZY_HEADER`] value (`None`: no header, every message durable, as a
/// release before the header sends them).
///
/// A malformed value is refused (the batch gets a 400 and nothing of it is
/// applied, like a malformed body), rather than read as "all durable",
/// though durable would be safe: only this release's own sender writes the
/// header, so a bad one is a bug or a forgery, and refusing says so at
/// once where ignoring would hide it, at the price of nothing but the
/// batch (its sender answers its callers with the error). Malformed means:
/// not a list of decimal indexes (spaces around the commas are allowed),
/// not strictly ascending, past the end of the batch, or naming a message
/// other than a decide (only an announced decide may skip the sync; a
/// lazy promise or vote would break invariant 1).
pub fn parse_lazy_header(
    value: Option<&[u8]>,
    messages: &[BatchMessage],
) -> Result<Vec<bool>, String> {
    let mut lazy = vec![false; messages.len()];
    let Some(value) = value else {
        return Ok(lazy);
    };
    let bad = |why: String| format!("header {LAZY_HEADER}: {why}");
    let text = std::str::from_utf8(value)
        .map_err(|_| bad("not a list of message indexes (not ASCII)".into()))?;
    let mut last: Option<usize> = None;
    for item in text.split(',') {
        let item = item.trim_matches(' ');
        let shown: String = item.chars().take(24).collect();
        let index = Some(item)
            .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| bad(format!("{shown:?} is not a message index")))?;
        if last.is_some_and(|last| index <= last) {
            return Err(bad(format!(
                "the indexes must be strictly ascending ({index} after {})",
                last.unwrap_or_default()
            )));
        }
        let message = messages
            .get(index)
            .ok_or_else(|| bad(format!("message {index} of a batch of {}", messages.len())))?;
        if message.op != Op::Decide {
            return Err(bad(format!(
                "message {index} ({}) is not a decide: only a decide may be lazy",
                message.op.name()
            )));
        }
        lazy[index] = true;
        last = Some(index);
    }
    Ok(lazy)
}

/// Body of the answer to a [`PeerBatch`]: one entry per message, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchResponse {
    /// [`PROTOCOL_VERSION`] of the acceptor.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The answering node's incarnation: its promises are made in it.
    pub incarnation: Incarnation,
    /// The acceptor's answer to each message, or why it has none.
    pub replies: Vec<BatchReply>,
}

/// The answer to one message of a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchReply {
    /// The acceptor answered (after its new state was durable).
    Ok(WireReply),
    /// The acceptor could not act (its storage failed, it is rebuilding, or
    /// it is overloaded): no answer.
    Error(String),
}

impl BatchReply {
    /// Encodes one acceptor reply.
    pub fn reply(reply: Reply<Value>) -> Self {
        BatchReply::Ok(reply_to_wire(reply))
    }
}

impl BatchResponse {
    /// Decodes the replies, refusing another protocol version or a count
    /// that does not match the `sent` messages.
    pub fn into_replies(self, sent: usize) -> Result<Vec<Result<Reply<Value>, String>>, String> {
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks protocol version {}, this node {PROTOCOL_VERSION}",
                self.version
            ));
        }
        if self.replies.len() != sent {
            return Err(format!(
                "{} replies to a batch of {sent} messages",
                self.replies.len()
            ));
        }
        self.replies
            .into_iter()
            .map(|reply| match reply {
                BatchReply::Ok(reply) => reply_from_wire(reply).map(Ok),
                BatchReply::Error(e) => Ok(Err(e)),
            })
            .collect()
    }
}

/// Body of `/v1/paxos/hello`: who are you?
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The asking node.
    pub from: NodeId,
    /// The digest of the asker's membership (`identity::members_digest`).
    pub digest: u64,
    /// While the asker has no identity: the genesis nonce it offers.
    pub nonce: Option<u64>,
}

/// The answer to a [`HelloRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloReply {
    /// [`PROTOCOL_VERSION`] of the answering node.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The digest of its membership.
    pub digest: u64,
    /// Its cluster id; `None` while it is new and waits for the others.
    pub cluster: Option<String>,
    /// Its membership epoch.
    pub epoch: u64,
    /// Its lifecycle state: `joining`, `recovering`, `serving` or `failed`.
    pub state: String,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// The newest incarnation it has recorded for the asker.
    pub yours: Incarnation,
    /// While joining: the nonce it offers for the cluster id.
    pub nonce: Option<u64>,
    /// When it founded the cluster: whether the asker's nonce is the one
    /// the asker offered at genesis (so the asker is a founder that never
    /// voted, not a member that lost its disk).
    pub founder: bool,
}

/// Body of `/v1/paxos/fence`: record that I am now `incarnation`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The rebuilding node.
    pub from: NodeId,
    /// Its cluster.
    pub cluster: String,
    /// Its membership epoch.
    pub epoch: u64,
    /// Its new incarnation.
    pub incarnation: Incarnation,
}

/// The answer to a [`FenceRequest`], sent once the record is durable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceReply {
    /// [`PROTOCOL_VERSION`] of the answering node.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The incarnation it has now recorded for the sender (at least the one
    /// asked for).
    pub recorded: Incarnation,
}

/// Body of `/v1/paxos/scan`: a page of the keys you hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The asking node.
    pub from: NodeId,
    /// Its cluster.
    pub cluster: String,
    /// Its membership epoch.
    pub epoch: u64,
    /// Keys after this one (bytewise), or from the first.
    pub after: Option<String>,
    /// At most this many keys (capped at [`MAX_SCAN_KEYS`]).
    pub limit: usize,
}

/// Most keys in one [`ScanReply`].
pub const MAX_SCAN_KEYS: usize = 10_000;

/// The answer to a [`ScanRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanReply {
    /// [`PROTOCOL_VERSION`] of the answering node.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The keys, in order.
    pub keys: Vec<String>,
    /// Whether keys remain after the last one.
    pub more: bool,
}

/// `POST /v1/paxos/config`: which membership do you hold? Answered to any
/// holder of the cluster token, member or not: a node being added learns the
/// cluster this way (`serve --join`), a lagging or removed one its fate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// [`PROTOCOL_VERSION`] of the asker.
    pub version: u32,
    /// The asker (it may not be a member yet).
    pub from: NodeId,
}

/// The answer to a [`ConfigRequest`]: the newest membership the answering
/// node holds (always a chosen one, see `src/membership.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigReply {
    /// [`PROTOCOL_VERSION`] of the answering node.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// Its cluster id (empty while its cluster forms).
    pub cluster: String,
    /// Its membership.
    pub config: crate::membership::MemberConfig,
}

/// A vote on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireVote {
    /// The ballot voted in.
    pub ballot: Ballot,
    /// The value voted for.
    pub value: Base64,
    /// The PUT request that proposed `value`.
    pub writer: u64,
}

/// An acceptor reply on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireReply {
    /// See [`Reply::Promise`].
    Promise {
        /// Promised ballot.
        ballot: Ballot,
        /// Previous vote.
        accepted: Option<WireVote>,
    },
    /// See [`Reply::Accepted`].
    Accepted {
        /// Accepted ballot.
        ballot: Ballot,
    },
    /// See [`Reply::Rejected`].
    Rejected {
        /// Rejected ballot.
        ballot: Ballot,
        /// The acceptor's promise.
        promised: Ballot,
    },
    /// See [`Reply::Decided`].
    Decided {
        /// Ballot chosen in.
        ballot: Ballot,
        /// Chosen value.
        value: Base64,
        /// The PUT request that proposed `value`.
        writer: u64,
    },
    /// See [`Reply::Vote`].
    Vote {
        /// Current vote.
        accepted: Option<WireVote>,
    },
    /// See [`Reply::Ack`].
    Ack,
}

/// Refuses rounds no honest node produces, so a peer cannot push a node's
/// ballot clock to the end of its range.
fn check_round(ballot: Ballot) -> Result<Ballot, String> {
    if ballot.round > MAX_ROUND {
        Err(format!(
            "ballot round {} is above the limit {MAX_ROUND}",
            ballot.round
        ))
    } else {
        Ok(ballot)
    }
}

fn vote_to_wire(vote: Option<Accepted<Value>>) -> Option<WireVote> {
    vote.map(|a| WireVote {
        ballot: a.ballot,
        value: Base64(a.value.bytes),
        writer: a.value.writer,
    })
}

fn vote_from_wire(vote: Option<WireVote>) -> Option<Accepted<Value>> {
    vote.map(|w| Accepted {
        ballot: w.ballot,
        value: Value {
            writer: w.writer,
            bytes: w.value.0,
        },
    })
}

/// Encodes an acceptor reply for the wire.
pub fn reply_to_wire(reply: Reply<Value>) -> WireReply {
    match reply {
        Reply::Promise { ballot, accepted } => WireReply::Promise {
            ballot,
            accepted: vote_to_wire(accepted),
        },
        Reply::Accepted { ballot } => WireReply::Accepted { ballot },
        Reply::Rejected { ballot, promised } => WireReply::Rejected { ballot, promised },
        Reply::Decided { ballot, value } => WireReply::Decided {
            ballot,
            value: Base64(value.bytes),
            writer: value.writer,
        },
        Reply::Vote { accepted } => WireReply::Vote {
            accepted: vote_to_wire(accepted),
        },
        Reply::Ack => WireReply::Ack,
    }
}

/// Decodes an acceptor reply, refusing ballots no honest node sends.
pub fn reply_from_wire(reply: WireReply) -> Result<Reply<Value>, String> {
    let mut ballots = Vec::with_capacity(2);
    match &reply {
        WireReply::Promise { ballot, accepted } => {
            ballots.push(*ballot);
            ballots.extend(accepted.as_ref().map(|v| v.ballot));
        }
        WireReply::Vote { accepted } => ballots.extend(accepted.as_ref().map(|v| v.ballot)),
        WireReply::Accepted { ballot } | WireReply::Decided { ballot, .. } => ballots.push(*ballot),
        WireReply::Rejected { ballot, promised } => ballots.extend([*ballot, *promised]),
        WireReply::Ack => {}
    }
    for ballot in ballots {
        check_round(ballot)?;
    }
    Ok(match reply {
        WireReply::Promise { ballot, accepted } => Reply::Promise {
            ballot,
            accepted: vote_from_wire(accepted),
        },
        WireReply::Accepted { ballot } => Reply::Accepted { ballot },
        WireReply::Rejected { ballot, promised } => Reply::Rejected { ballot, promised },
        WireReply::Decided {
            ballot,
            value,
            writer,
        } => Reply::Decided {
            ballot,
            value: Value {
                writer,
                bytes: value.0,
            },
        },
        WireReply::Vote { accepted } => Reply::Vote {
            accepted: vote_from_wire(accepted),
        },
        WireReply::Ack => Reply::Ack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(round: u64) -> BatchMessage {
        BatchMessage::new(
            "k",
            Request::Prepare {
                ballot: Ballot::new(round.max(1), 2),
            },
            Fence::default(),
        )
        .with_round(round)
    }

    impl BatchMessage {
        fn with_round(mut self, round: u64) -> Self {
            self.ballot = Some(Ballot::new(round, 2));
            self
        }
    }

    /// Invariant 7: another protocol version is refused, not misread.
    #[test]
    fn other_protocol_versions_are_refused() {
        assert!(prepare(1).into_request(1).is_err());
        assert!(prepare(1).into_request(PROTOCOL_VERSION).is_ok());
        let response = BatchResponse {
            version: 9,
            from: 1,
            incarnation: 1,
            replies: vec![BatchReply::reply(Reply::Ack)],
        };
        assert!(response.into_replies(1).is_err());
    }

    /// Invariant 2: a peer cannot push this node's ballot clock to the end
    /// of its range, nor send the "nothing promised" ballot.
    #[test]
    fn out_of_range_rounds_are_refused() {
        assert!(prepare(0).into_request(PROTOCOL_VERSION).is_err());
        assert!(prepare(MAX_ROUND).into_request(PROTOCOL_VERSION).is_ok());
        assert!(prepare(MAX_ROUND + 1)
            .into_request(PROTOCOL_VERSION)
            .is_err());
        let reply = reply_from_wire(reply_to_wire(Reply::Rejected {
            ballot: Ballot::new(1, 2),
            promised: Ballot::new(u64::MAX, 3),
        }));
        assert!(reply.is_err());
    }

    #[test]
    fn values_and_fences_round_trip() {
        let value = Value {
            writer: 7,
            bytes: Bytes::from_static(b"\x00\xffhi"),
        };
        let accept = Request::Accept {
            ballot: Ballot::new(3, 1),
            value: value.clone(),
        };
        let mut fence = Fence::default();
        fence.promised(1, 1);
        fence.promised(3, 2);
        let batch = PeerBatch::new(
            1,
            &Envelope::default(),
            vec![BatchMessage::new("k", accept.clone(), fence.clone())],
        );
        let json = serde_json::to_string(&batch).unwrap();
        let back: PeerBatch = serde_json::from_str(&json).unwrap();
        let message = back.messages.into_iter().next().unwrap();
        assert_eq!(
            message.into_request(PROTOCOL_VERSION).unwrap(),
            ("k".to_string(), accept, fence)
        );
    }

    /// Only an accept names promisers.
    #[test]
    fn a_fence_on_another_operation_is_refused() {
        let mut fence = Fence::default();
        fence.promised(1, 1);
        let prepare = BatchMessage::new(
            "k",
            Request::Prepare {
                ballot: Ballot::new(1, 1),
            },
            Fence::default(),
        );
        let forged = BatchMessage {
            fence: Some(fence.0),
            ..prepare
        };
        assert!(forged.into_request(PROTOCOL_VERSION).is_err());
    }

    /// The batch shapes of the previous release (protocol 2, before lazy
    /// decides), frozen here: whatever this release
    /// sends must decode under their rules, or nodes still running it
    /// refuse the whole batch during a rolling upgrade.
    mod previous_release {
        use super::super::{Base64, Op};
        use crate::paxos::{Ballot, Incarnation, NodeId};
        use serde::Deserialize;
        use std::collections::BTreeMap;

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // decoded, never read: the decode is the check
        pub struct PeerBatch {
            pub version: u32,
            pub from: NodeId,
            pub cluster: String,
            pub epoch: u64,
            pub incarnation: Incarnation,
            pub messages: Vec<BatchMessage>,
        }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct BatchMessage {
            pub op: Op,
            pub key: String,
            #[serde(default)]
            pub ballot: Option<Ballot>,
            #[serde(default)]
            pub value: Option<Base64>,
            #[serde(default)]
            pub writer: Option<u64>,
            #[serde(default)]
            pub fence: Option<BTreeMap<NodeId, Incarnation>>,
        }
    }

    /// A batch of an accept, two announces and a durable decide, as the
    /// HTTP transport sends it.
    fn mixed_batch() -> (Vec<BatchMessage>, Vec<bool>) {
        let value = Value {
            writer: 7,
            bytes: Bytes::from_static(b"hi"),
        };
        let ballot = Ballot::new(3, 1);
        let decide = || {
            BatchMessage::new(
                "k",
                Request::Decide {
                    ballot,
                    value: value.clone(),
                },
                Fence::default(),
            )
        };
        let accept = BatchMessage::new(
            "a",
            Request::Accept {
                ballot,
                value: value.clone(),
            },
            Fence(BTreeMap::from([(1, 1), (2, 1)])),
        );
        (
            vec![decide(), accept, decide(), decide()],
            vec![true, false, true, false],
        )
    }

    /// A batch with lazy announces serializes to a body with no `lazy`
    /// key anywhere, which the previous release's types (unknown fields
    /// refused) and this release's decode, every message intact.
    #[test]
    fn a_batch_with_lazy_announces_is_a_body_the_previous_release_accepts() {
        let (messages, lazy) = mixed_batch();
        let envelope = Envelope {
            cluster: "c".into(),
            epoch: 1,
            incarnation: 1,
        };
        let batch = PeerBatch::new(2, &envelope, messages.clone());
        let json = serde_json::to_string(&batch).unwrap();
        assert!(!json.contains("lazy"), "{json}");
        assert_eq!(lazy_header(&lazy).as_deref(), Some("0,2"));
        let old: previous_release::PeerBatch = serde_json::from_str(&json).expect(&json);
        assert_eq!(old.messages.len(), 4);
        let back: PeerBatch = serde_json::from_str(&json).unwrap();
        for (sent, got) in messages.into_iter().zip(back.messages) {
            assert_eq!(
                got.into_request(PROTOCOL_VERSION),
                sent.into_request(PROTOCOL_VERSION)
            );
        }
        // The check can fail: a `lazy` field in the body is refused.
        let with_field = json.replacen(r#""op":"decide","#, r#""op":"decide","lazy":true,"#, 1);
        assert!(serde_json::from_str::<previous_release::PeerBatch>(&with_field).is_err());
        assert!(serde_json::from_str::<PeerBatch>(&with_field).is_err());
    }

    /// Marks set → header → the same marks; no header → all durable.
    #[test]
    fn lazy_marks_round_trip_through_the_header_and_none_means_durable() {
        let (messages, lazy) = mixed_batch();
        let header = lazy_header(&lazy).unwrap();
        assert_eq!(
            parse_lazy_header(Some(header.as_bytes()), &messages),
            Ok(lazy)
        );
        assert_eq!(
            parse_lazy_header(None, &messages),
            Ok(vec![false; messages.len()])
        );
        assert_eq!(lazy_header(&[false, false]), None);
        assert_eq!(lazy_header(&[]), None);
        let all = [true, false, true, true];
        assert_eq!(lazy_header(&all).as_deref(), Some("0,2,3"));
        assert_eq!(
            parse_lazy_header(Some(b"0, 2 ,3"), &messages),
            Ok(all.to_vec())
        );
        // Every lazy subset of the decides of a batch of MAX_BATCH_MESSAGES.
        let decides: Vec<BatchMessage> = (0..MAX_BATCH_MESSAGES)
            .map(|_| messages[0].clone())
            .collect();
        let marks: Vec<bool> = (0..MAX_BATCH_MESSAGES).map(|i| i % 3 != 1).collect();
        let header = lazy_header(&marks).unwrap();
        assert_eq!(
            parse_lazy_header(Some(header.as_bytes()), &decides),
            Ok(marks)
        );
    }

    /// A malformed header value is refused, saying what is wrong.
    #[test]
    fn a_malformed_lazy_header_is_refused() {
        let (messages, _) = mixed_batch();
        for (value, why) in [
            (&b""[..], "is not a message index"),
            (b" ", "is not a message index"),
            (b"0,", "is not a message index"),
            (b",0", "is not a message index"),
            (b"x", "is not a message index"),
            (b"-1", "is not a message index"),
            (b"+0", "is not a message index"),
            (b"0x2", "is not a message index"),
            (b"99999999999999999999999", "is not a message index"),
            (b"\xff", "not ASCII"),
            (b"2,0", "strictly ascending"),
            (b"0,0", "strictly ascending"),
            (b"4", "message 4 of a batch of 4"),
            (b"1", "message 1 (accept) is not a decide"),
            (b"0,1", "message 1 (accept) is not a decide"),
        ] {
            let err = parse_lazy_header(Some(value), &messages).expect_err(&format!("{value:?}"));
            assert!(
                err.contains(LAZY_HEADER) && err.contains(why),
                "{value:?}: {err}"
            );
        }
        for op in [
            prepare(1),
            BatchMessage::new("k", Request::Read, Fence::default()),
        ] {
            assert!(parse_lazy_header(Some(b"0"), &[op]).is_err());
        }
    }
}
