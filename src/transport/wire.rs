//! The JSON messages between nodes (protocol version 1).
//!
//! Requests are POSTed to `/v1/paxos/{prepare,accept,read,decide}` with a
//! [`PeerRequest`] body; the acceptor answers 200 with a [`PeerResponse`].
//! Nodes send each other [`PeerBatch`]es on `/v1/paxos/batch`: many
//! messages (for any keys) in one request, answered by a [`BatchResponse`]
//! with one reply per message, in order. Batching is how a node keeps up
//! under load: one HTTP exchange and one group commit serve many keys.
//! Values travel as standard base64, with the id of the PUT that proposed
//! them (`writer`). A message with another `version` is
//! refused with 400 instead of being misread (DESIGN.md invariant 7).
//!
//! ```json
//! {"version":1,"from":2,"key":"app/db","ballot":{"round":7,"node":2},"value":"aGk=","writer":12}
//! {"version":1,"from":1,"type":"promise","ballot":{"round":7,"node":2},"accepted":null}
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::paxos::ballot::MAX_ROUND;
use crate::paxos::{Accepted, Ballot, NodeId, Reply, Request};
use crate::value::Value;

/// The peer protocol version this release speaks.
pub const PROTOCOL_VERSION: u32 = 1;

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

/// Body of a peer request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sending node.
    pub from: NodeId,
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
}

impl PeerRequest {
    /// Encodes `request` for `key`, sent by `from`.
    pub fn new(from: NodeId, key: &str, request: Request<Value>) -> Self {
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
        PeerRequest {
            version: PROTOCOL_VERSION,
            from,
            key: key.to_owned(),
            ballot,
            value,
            writer,
        }
    }

    /// Decodes the request for route `op`, or says what is wrong with it.
    pub fn into_request(self, op: Op) -> Result<Request<Value>, String> {
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "peer protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                self.version
            ));
        }
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
        Ok(match op {
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
        })
    }
}

/// Most messages in one [`PeerBatch`].
pub const MAX_BATCH_MESSAGES: usize = 256;

/// A sender closes a batch before its values pass this many bytes (a batch
/// of one message may carry a larger value).
pub const BATCH_VALUE_BYTES: usize = 1 << 20;

/// Body of `/v1/paxos/batch`: messages for any keys, from one node.
///
/// ```json
/// {"version":1,"from":2,"messages":[{"op":"prepare","key":"a","ballot":{"round":7,"node":2}}]}
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerBatch {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sending node.
    pub from: NodeId,
    /// At most [`MAX_BATCH_MESSAGES`].
    pub messages: Vec<BatchMessage>,
}

/// One message of a [`PeerBatch`]: a [`PeerRequest`] with its operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    /// Which acceptor operation.
    pub op: Op,
    /// The register.
    pub key: String,
    /// As in [`PeerRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ballot: Option<Ballot>,
    /// As in [`PeerRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Base64>,
    /// As in [`PeerRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<u64>,
}

impl BatchMessage {
    /// Encodes `request` for `key`.
    pub fn new(key: &str, request: Request<Value>) -> Self {
        let op = Op::of(&request);
        let PeerRequest {
            key,
            ballot,
            value,
            writer,
            ..
        } = PeerRequest::new(0, key, request);
        BatchMessage {
            op,
            key,
            ballot,
            value,
            writer,
        }
    }

    /// The value bytes this message carries.
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.0.len())
    }

    /// Decodes the request, with the checks of [`PeerRequest::into_request`].
    pub fn into_request(self, version: u32) -> Result<(String, Request<Value>), String> {
        let op = self.op;
        let single = PeerRequest {
            version,
            from: 0,
            key: self.key,
            ballot: self.ballot,
            value: self.value,
            writer: self.writer,
        };
        let key = single.key.clone();
        Ok((key, single.into_request(op)?))
    }
}

/// Body of the answer to a [`PeerBatch`]: one entry per message, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchResponse {
    /// [`PROTOCOL_VERSION`] of the acceptor.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The acceptor's answer to each message, or why it has none.
    pub replies: Vec<BatchReply>,
}

/// The answer to one message of a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchReply {
    /// The acceptor answered (after its new state was durable).
    Ok(WireReply),
    /// The acceptor could not act (its storage failed): no answer.
    Error(String),
}

impl BatchResponse {
    /// Decodes the replies, refusing another protocol version or a count
    /// that does not match the `sent` messages.
    pub fn into_replies(self, sent: usize) -> Result<Vec<Result<Reply<Value>, String>>, String> {
        if self.replies.len() != sent {
            return Err(format!(
                "{} replies to a batch of {sent} messages",
                self.replies.len()
            ));
        }
        let (version, from) = (self.version, self.from);
        self.replies
            .into_iter()
            .map(|reply| match reply {
                BatchReply::Ok(reply) => PeerResponse {
                    version,
                    from,
                    reply,
                }
                .into_reply()
                .map(Ok),
                BatchReply::Error(e) => Ok(Err(e)),
            })
            .collect()
    }
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

/// Body of a peer reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerResponse {
    /// [`PROTOCOL_VERSION`] of the acceptor.
    pub version: u32,
    /// The answering node.
    pub from: NodeId,
    /// The acceptor's answer.
    #[serde(flatten)]
    pub reply: WireReply,
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

impl PeerResponse {
    /// Encodes `reply`, answered by `from`.
    pub fn new(from: NodeId, reply: Reply<Value>) -> Self {
        let reply = match reply {
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
        };
        PeerResponse {
            version: PROTOCOL_VERSION,
            from,
            reply,
        }
    }

    /// Decodes the reply, refusing another protocol version.
    pub fn into_reply(self) -> Result<Reply<Value>, String> {
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks protocol version {}, this node {PROTOCOL_VERSION}",
                self.version
            ));
        }
        let mut ballots = Vec::with_capacity(2);
        match &self.reply {
            WireReply::Promise { ballot, accepted } => {
                ballots.push(*ballot);
                ballots.extend(accepted.as_ref().map(|v| v.ballot));
            }
            WireReply::Vote { accepted } => ballots.extend(accepted.as_ref().map(|v| v.ballot)),
            WireReply::Accepted { ballot } | WireReply::Decided { ballot, .. } => {
                ballots.push(*ballot)
            }
            WireReply::Rejected { ballot, promised } => ballots.extend([*ballot, *promised]),
            WireReply::Ack => {}
        }
        for ballot in ballots {
            check_round(ballot)?;
        }
        Ok(match self.reply {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(version: u32, round: u64) -> PeerRequest {
        PeerRequest {
            version,
            from: 2,
            key: "k".into(),
            ballot: Some(Ballot::new(round, 2)),
            value: None,
            writer: None,
        }
    }

    /// Invariant 7: another protocol version is refused, not misread.
    #[test]
    fn other_protocol_versions_are_refused() {
        assert!(prepare(2, 1).into_request(Op::Prepare).is_err());
        assert!(prepare(PROTOCOL_VERSION, 1)
            .into_request(Op::Prepare)
            .is_ok());
        let mut reply = PeerResponse::new(1, Reply::Ack);
        reply.version = 9;
        assert!(reply.into_reply().is_err());
    }

    /// Invariant 2: a peer cannot push this node's ballot clock to the end
    /// of its range, nor send the "nothing promised" ballot.
    #[test]
    fn out_of_range_rounds_are_refused() {
        assert!(prepare(PROTOCOL_VERSION, 0)
            .into_request(Op::Prepare)
            .is_err());
        assert!(prepare(PROTOCOL_VERSION, MAX_ROUND)
            .into_request(Op::Prepare)
            .is_ok());
        assert!(prepare(PROTOCOL_VERSION, MAX_ROUND + 1)
            .into_request(Op::Prepare)
            .is_err());
        let reply = PeerResponse::new(
            1,
            Reply::Rejected {
                ballot: Ballot::new(1, 2),
                promised: Ballot::new(u64::MAX, 3),
            },
        );
        assert!(reply.into_reply().is_err());
    }

    #[test]
    fn values_round_trip_as_base64_with_their_writer() {
        let value = Value {
            writer: 7,
            bytes: Bytes::from_static(b"\x00\xffhi"),
        };
        let request = PeerRequest::new(
            1,
            "k",
            Request::Accept {
                ballot: Ballot::new(3, 1),
                value: value.clone(),
            },
        );
        let json = serde_json::to_string(&request).unwrap();
        let back: PeerRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.into_request(Op::Accept).unwrap(),
            Request::Accept {
                ballot: Ballot::new(3, 1),
                value
            }
        );
    }
}
