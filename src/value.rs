//! What a register holds.

use bytes::Bytes;

/// A value as the Paxos instances of the server carry it: the client's bytes
/// and the id of the PUT request that first proposed them.
///
/// The id makes 201 exact: when two clients PUT the same bytes concurrently,
/// both may find the register empty and propose, but only one proposal is
/// chosen, so exactly one request learns `Created` and the other
/// `AlreadyChosen`. Clients only ever see `bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    /// The PUT request that proposed these bytes (random per request).
    pub writer: u64,
    /// The client's bytes.
    pub bytes: Bytes,
}
