//! The on-disk encoding of acceptor state (format version 1).
//!
//! Keys in the sled tree:
//! - `m` + name: node metadata (`mformat`: the format version byte,
//!   `mround`: the ballot reservation mark as u64 big-endian);
//! - `s` + key: the state header of a register;
//! - `v` + key + `0x00` + chunk index (u32 big-endian): the accepted value,
//!   split into chunks of [`CHUNK`] bytes. Keys contain no control
//!   characters, so the `0x00` separator is unambiguous.
//!
//! Header layout (38 bytes): version u8 | promised round u64 | promised node
//! u32 | flags u8 (bit 0: has a vote, bit 1: decided) | vote round u64 | vote
//! node u32 | writer id u64 | value length u32. Integers are big-endian.

use super::StorageError;
use crate::paxos::Ballot;

/// The format version written by this release.
pub const FORMAT_VERSION: u8 = 1;

/// Size of one value chunk. Small enough that a sled leaf (up to 17 items)
/// stays under a quarter of a 512 KiB segment, so sled never moves it to an
/// unsynced blob file.
pub const CHUNK: usize = 4096;

pub const FORMAT_KEY: &[u8] = b"mformat";
pub const ROUND_KEY: &[u8] = b"mround";
const HEADER_LEN: usize = 38;

/// The fixed part of a register's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub promised: Ballot,
    pub vote: Option<Ballot>,
    pub decided: bool,
    pub writer: u64,
    pub value_len: u32,
}

impl Header {
    pub fn chunks(&self) -> u32 {
        if self.vote.is_none() {
            0
        } else {
            (self.value_len as usize).div_ceil(CHUNK) as u32
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = FORMAT_VERSION;
        out[1..9].copy_from_slice(&self.promised.round.to_be_bytes());
        out[9..13].copy_from_slice(&self.promised.node.to_be_bytes());
        let vote = self.vote.unwrap_or(Ballot::ZERO);
        out[13] = u8::from(self.vote.is_some()) | (u8::from(self.decided) << 1);
        out[14..22].copy_from_slice(&vote.round.to_be_bytes());
        out[22..26].copy_from_slice(&vote.node.to_be_bytes());
        out[26..34].copy_from_slice(&self.writer.to_be_bytes());
        out[34..38].copy_from_slice(&self.value_len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Header, StorageError> {
        let version = *bytes
            .first()
            .ok_or_else(|| StorageError::Corrupt("empty state header".into()))?;
        if version != FORMAT_VERSION {
            return Err(StorageError::Version {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() != HEADER_LEN {
            return Err(StorageError::Corrupt(format!(
                "state header of {} bytes, expected {HEADER_LEN}",
                bytes.len()
            )));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let flags = bytes[13];
        if flags & !0b11 != 0 {
            return Err(StorageError::Corrupt(format!(
                "unknown header flags {flags:#x}"
            )));
        }
        let has_vote = flags & 1 != 0;
        Ok(Header {
            promised: Ballot::new(u64_at(1), u32_at(9)),
            vote: has_vote.then(|| Ballot::new(u64_at(14), u32_at(22))),
            decided: flags & 2 != 0,
            writer: u64_at(26),
            value_len: u32_at(34),
        })
    }
}

pub fn header_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(b's');
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn chunk_key(key: &str, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + key.len());
    k.push(b'v');
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            promised: Ballot::new(7, 2),
            vote: Some(Ballot::new(5, 3)),
            decided: true,
            writer: 99,
            value_len: 1 << 20,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.chunks(), 256);
    }

    /// Invariant 7: data from another format version is refused, not misread.
    #[test]
    fn other_versions_are_refused() {
        let mut bytes = Header {
            promised: Ballot::ZERO,
            vote: None,
            decided: false,
            writer: 0,
            value_len: 0,
        }
        .encode();
        bytes[0] = 2;
        assert!(matches!(
            Header::decode(&bytes),
            Err(StorageError::Version { found: 2, .. })
        ));
    }
}
