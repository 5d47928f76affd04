//! How a node reaches its peers: the [`Transport`] trait, the HTTP client
//! used in production and an in-memory network for deterministic tests.

use std::collections::BTreeMap;
use std::future::Future;

use crate::value::Value;

use crate::paxos::{Ballot, Fence, Incarnation, NodeId, Reply, Request};

mod http;
pub mod list;
mod memory;
pub mod wire;

pub(crate) use http::post_json;
pub use http::{HttpTransport, PeerClientError, PeerClientOptions};
pub use memory::{Fate, MemoryNetwork, MemoryTransport, PeerHandler};
pub use wire::{Envelope, HelloReply};

/// Why a peer call produced no reply. Every variant means "unknown": the
/// request may or may not have reached the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached (refused, reset, partitioned).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No reply within the per-call timeout.
    #[error("peer did not answer in time")]
    Timeout,
    /// The peer answered with an error status.
    #[error("peer answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The peer's error message.
        body: String,
    },
    /// The peer's reply could not be understood (bad JSON, other protocol version).
    #[error("peer protocol error: {0}")]
    Protocol(String),
    /// The address is not a member of this cluster.
    #[error("node {0} is not a member")]
    UnknownPeer(NodeId),
}

/// An acceptor's reply with the incarnation that made it (a promise binds
/// only that incarnation: see `src/paxos/rejoin.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What the acceptor answered.
    pub reply: Reply<Value>,
    /// The acceptor's incarnation when it answered.
    pub incarnation: Incarnation,
}

/// A node-level message: outside any register (see `wire.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Who are you? Carries the digest of the asker's membership.
    Hello {
        /// `identity::members_digest` of the asker.
        digest: u64,
        /// The asker's genesis nonce while it has no identity.
        nonce: Option<u64>,
    },
    /// Record that the sender is now `incarnation`; answer once durable.
    Fence {
        /// The sender's new incarnation.
        incarnation: Incarnation,
    },
    /// Which membership do you hold?
    Config,
    /// A page of the keys you hold, after `after`.
    Scan {
        /// Exclusive start.
        after: Option<String>,
        /// Page size.
        limit: usize,
    },
}

/// The answer to a [`Control`] message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlReply {
    /// To [`Control::Hello`].
    Hello(HelloReply),
    /// To [`Control::Fence`]: the incarnation now recorded for the sender.
    Fenced(Incarnation),
    /// To [`Control::Config`].
    Config(wire::ConfigReply),
    /// To [`Control::Scan`].
    Keys {
        /// The keys, in order.
        keys: Vec<String>,
        /// Whether more follow.
        more: bool,
    },
}

/// Sends one acceptor request to one peer and returns its reply.
///
/// Contract: a returned reply is exactly what the peer's acceptor answered
/// (so it was sent after the peer's state was durable); any failure is a
/// [`TransportError`] and says nothing about whether the peer acted on the
/// request. Implementations bound every call in time.
pub trait Transport: Send + Sync + 'static {
    /// Calls `to`'s acceptor for `key`. `fence` names the promises an
    /// accept's round relied on (empty for every other request).
    fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> impl Future<Output = Result<Answer, TransportError>> + Send;

    /// Tells `to` that `value` was chosen in `ballot`, for
    /// `Node::announce`: fire and forget, so the peer may record it without
    /// a disk sync (the `x-paxos-kv-lazy` header on the wire,
    /// [`wire::LAZY_HEADER`]). The default sends an
    /// ordinary decide, durable before its answer.
    fn announce(
        &self,
        to: NodeId,
        key: &str,
        ballot: Ballot,
        value: Value,
    ) -> impl Future<Output = Result<Answer, TransportError>> + Send {
        self.call(to, key, Request::Decide { ballot, value }, Fence::default())
    }

    /// Sends a node-level message to `to`.
    fn control(
        &self,
        to: NodeId,
        message: Control,
    ) -> impl Future<Output = Result<ControlReply, TransportError>> + Send;

    /// Sets the cluster, epoch and incarnation every later message carries
    /// (the node calls it when it learns or changes them).
    fn set_envelope(&self, envelope: Envelope) {
        let _ = envelope;
    }

    /// Replaces the members reachable (id to base URL) when the membership
    /// changes. Links to members that stay are kept.
    fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        let _ = peers;
    }
}
