//! Why a configuration is refused: one line for the operator each.

use std::path::PathBuf;
use std::time::Duration;

use crate::paxos::NodeId;

/// A duration flag that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// Not a number with an optional unit.
    #[error("{0:?} is not a duration like 5s or 250ms")]
    NotADuration(String),
    /// A unit other than ms, s or m.
    #[error("{text:?} has unknown unit {unit:?}; use ms, s or m")]
    UnknownUnit {
        /// The flag's value.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// Negative, or too large for a duration.
    #[error("{text:?}: {source}")]
    OutOfRange {
        /// The flag's value.
        text: String,
        /// Why the number is no duration.
        source: std::time::TryFromFloatSecsError,
    },
}

/// Why `serve`'s flags are refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--peers` entry without `=`.
    #[error("--peers entry {0:?} is not ID=URL")]
    PeerNotIdUrl(String),
    /// A `--peers` id that is not a positive integer.
    #[error("--peers entry {0:?}: the id must be a positive integer")]
    PeerId(String),
    /// A `--peers` URL that does not parse.
    #[error("--peers entry {entry:?}: bad URL: {reason}")]
    PeerUrl {
        /// The entry.
        entry: String,
        /// Why the URL does not parse.
        reason: String,
    },
    /// A `--peers` URL that is not http(s) with a host.
    #[error("--peers entry {0:?}: the URL must be http:// or https:// with a host")]
    PeerScheme(String),
    /// A node listed twice.
    #[error("--peers names node {0} twice")]
    PeerTwice(NodeId),
    /// No member at all.
    #[error("--peers is empty; list every member as ID=URL,ID=URL,...")]
    NoPeers,
    /// `--join` is not an http(s) URL.
    #[error("--join {0:?} is not an http:// or https:// URL of a member")]
    Join(String),
    /// `--id` is not among the members.
    #[error("--id {id} is not in --peers (members: {members})")]
    NotAMember {
        /// The `--id`.
        id: NodeId,
        /// The members' ids, comma separated.
        members: String,
    },
    /// `--listen` does not resolve.
    #[error("--listen {listen:?}: {source}")]
    Listen {
        /// The flag's value.
        listen: String,
        /// Why it does not resolve.
        source: std::io::Error,
    },
    /// `--listen` resolves to nothing.
    #[error("--listen {0:?} resolves to no address")]
    ListenNowhere(String),
    /// A cluster token with spaces or control characters.
    #[error("--cluster-token must be non-empty printable ASCII without spaces")]
    ClusterToken,
    /// `--tls-ca` without a certificate of this node.
    #[error("--tls-ca needs --tls-cert and --tls-key")]
    TlsCaAlone,
    /// One of `--tls-cert` and `--tls-key`.
    #[error("--tls-cert and --tls-key go together")]
    TlsHalf,
    /// A plain-HTTP peer in a TLS cluster.
    #[error("with --tls-cert every node speaks HTTPS: --peers URL of node {id} ({url}) must be https://")]
    PeerNotHttps {
        /// The peer.
        id: NodeId,
        /// Its URL.
        url: String,
    },
    /// A deadline of zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// A peer call that may outlast the request it serves.
    #[error("--peer-timeout ({peer:?}) must be shorter than --request-timeout ({request:?}): a request must outlive a peer call that times out, to retry without it")]
    PeerTimeoutNotShorter {
        /// `--peer-timeout`.
        peer: Duration,
        /// `--request-timeout`.
        request: Duration,
    },
    /// A fast-path window that would make the heartbeat flood the peers.
    #[error("--fast-path-window ({window:?}) must be at least {shortest:?}: the heartbeat pings peers every third of it")]
    FastPathWindowTooShort {
        /// `--fast-path-window`.
        window: Duration,
        /// The shortest accepted.
        shortest: Duration,
    },
    /// A first backoff above its ceiling.
    #[error("the first backoff ({base:?}) exceeds the backoff ceiling ({max:?})")]
    Backoff {
        /// First backoff.
        base: Duration,
        /// Ceiling.
        max: Duration,
    },
    /// The data directory cannot be created or written.
    #[error("--data-dir {}: {source}", dir.display())]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}
