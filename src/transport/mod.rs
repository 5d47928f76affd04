//! How a node reaches its peers: the [`Transport`] trait, the HTTP client
//! used in production and an in-memory network for deterministic tests.

use std::future::Future;

use crate::value::Value;

use crate::paxos::{NodeId, Reply, Request};

mod http;
mod memory;
pub mod wire;

pub use http::{HttpTransport, PeerClientOptions};
pub use memory::{Fate, MemoryNetwork, MemoryTransport, PeerHandler};

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

/// Sends one acceptor request to one peer and returns its reply.
///
/// Contract: a returned reply is exactly what the peer's acceptor answered
/// (so it was sent after the peer's state was durable); any failure is a
/// [`TransportError`] and says nothing about whether the peer acted on the
/// request. Implementations bound every call in time.
pub trait Transport: Send + Sync + 'static {
    /// Calls `to`'s acceptor for `key`.
    fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
    ) -> impl Future<Output = Result<Reply<Value>, TransportError>> + Send;
}
