//! The messages of one single-decree Paxos instance (one key).
//!
//! The key, the protocol version and the wire encoding belong to the
//! transport; these types only say what a proposer asks and what an acceptor
//! answers. `V` is the value type: `bytes::Bytes` in the server, something
//! small in the model checker.

use super::ballot::Ballot;

/// A vote an acceptor cast: it accepted `value` in `ballot`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Accepted<V> {
    /// The ballot of the accept request.
    pub ballot: Ballot,
    /// The value of the accept request.
    pub value: V,
}

/// What a proposer (or a reader) asks an acceptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Request<V> {
    /// Phase 1a: promise to ignore ballots below `ballot`, and tell me your vote.
    Prepare {
        /// The proposer's new ballot.
        ballot: Ballot,
    },
    /// Phase 2a: accept `value` in `ballot`.
    Accept {
        /// A ballot the proposer got promises for from a majority.
        ballot: Ballot,
        /// The value phase 1 picked (invariant 3).
        value: V,
    },
    /// A quorum read: tell me your vote, change nothing.
    Read,
    /// `value` was chosen in `ballot` (a majority accepted it); record it.
    Decide {
        /// The ballot a majority accepted.
        ballot: Ballot,
        /// The chosen value.
        value: V,
    },
}

/// What an acceptor answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply<V> {
    /// Phase 1b: promised `ballot`; `accepted` is the vote cast before, if any.
    Promise {
        /// The ballot promised (echoes the request).
        ballot: Ballot,
        /// The highest-ballot vote this acceptor cast before promising.
        accepted: Option<Accepted<V>>,
    },
    /// Phase 2b: accepted the value of `ballot`.
    Accepted {
        /// The ballot accepted (echoes the request).
        ballot: Ballot,
    },
    /// The request's `ballot` is below what this acceptor has promised.
    Rejected {
        /// The ballot of the rejected request (echoes the request).
        ballot: Ballot,
        /// The acceptor's promise: a retry must go above it.
        promised: Ballot,
    },
    /// The register is decided: `value` was chosen in `ballot`. Sent for any
    /// request once the acceptor knows, so proposers and readers stop early.
    Decided {
        /// The ballot in which the value was chosen.
        ballot: Ballot,
        /// The chosen value.
        value: V,
    },
    /// Answer to [`Request::Read`] on an undecided register.
    Vote {
        /// The acceptor's current vote, if it cast one.
        accepted: Option<Accepted<V>>,
    },
    /// Answer to [`Request::Decide`]: recorded.
    Ack,
}
