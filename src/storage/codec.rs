//! The on-disk encoding of acceptor state (format version 2; reads 1).
//!
//! Keys in the sled tree:
//! - `m` + name: node metadata (`mformat`: the format version byte,
//!   `mround`: the ballot reservation mark as u64 big-endian, `mdatabase`:
//!   the database's random id as u64 big-endian; `mprobe`, the
//!   time of a storage probe, was written by earlier releases);
//! - `s` + key: the state record of a register: a header, followed by the
//!   accepted value itself when it fits in one chunk (flag bit 2, "inline");
//! - `v` + key + `0x00` + chunk index (u32 big-endian): an accepted value
//!   larger than one chunk, split into chunks of [`CHUNK`] bytes. Keys
//!   contain no control characters, so the `0x00` separator is unambiguous.
//!
//! Header layout (38 bytes): version u8 | promised round u64 | promised node
//! u32 | flags u8 (bit 0: has a vote, bit 1: decided, bit 2: value inline)
//! | vote round u64 | vote node u32 | writer id u64 | value length u32.
//! Integers are big-endian.
//!
//! Why inline: a small register is then one sled `insert`, which sled
//! appends to its current log buffer and makes durable with the next group
//! commit. A multi-key `apply_batch` costs sled two log writes of its own,
//! each with a `sync_file_range`, for every batch (measured: 377 us per
//! batch against 29 us per insert), so chunks and batches are kept for
//! values above one chunk.
//!
//! Version 1 (before inline values) differs only in that records are
//! always exactly the header; this release reads both and writes 2.

use super::StorageError;
use crate::paxos::Ballot;

/// The format version written by this release.
pub const FORMAT_VERSION: u8 = 2;

/// The oldest format version this release reads.
pub const OLDEST_READABLE: u8 = 1;

/// Size of one value chunk. Small enough that a sled leaf (up to 17 items)
/// stays under a quarter of a 512 KiB segment, so sled never moves it to an
/// unsynced blob file.
pub const CHUNK: usize = 4096;

pub const FORMAT_KEY: &[u8] = b"mformat";
pub const ROUND_KEY: &[u8] = b"mround";
/// A random id given to a database when it is created: the identity names
/// it, so a node notices when its database was replaced under it.
pub const DATABASE_ID_KEY: &[u8] = b"mdatabase";
const HEADER_LEN: usize = 38;

const HAS_VOTE: u8 = 1;
const DECIDED: u8 = 2;
const INLINE: u8 = 4;

/// The fixed part of a register's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub promised: Ballot,
    pub vote: Option<Ballot>,
    pub decided: bool,
    pub writer: u64,
    pub value_len: u32,
    /// The value follows the header in the same record (no chunks).
    pub inline: bool,
}

impl Header {
    pub fn chunks(&self) -> u32 {
        if self.vote.is_none() || self.inline {
            0
        } else {
            (self.value_len as usize).div_ceil(CHUNK) as u32
        }
    }

    /// The record: this header, then `inline` (the value, when
    /// [`Header::inline`]; empty otherwise).
    pub fn encode(&self, inline: &[u8]) -> Vec<u8> {
        debug_assert_eq!(
            inline.len(),
            if self.inline {
                self.value_len as usize
            } else {
                0
            }
        );
        let mut out = vec![0u8; HEADER_LEN + inline.len()];
        out[0] = FORMAT_VERSION;
        out[1..9].copy_from_slice(&self.promised.round.to_be_bytes());
        out[9..13].copy_from_slice(&self.promised.node.to_be_bytes());
        let vote = self.vote.unwrap_or(Ballot::ZERO);
        out[13] = (if self.vote.is_some() { HAS_VOTE } else { 0 })
            | (if self.decided { DECIDED } else { 0 })
            | (if self.inline { INLINE } else { 0 });
        out[14..22].copy_from_slice(&vote.round.to_be_bytes());
        out[22..26].copy_from_slice(&vote.node.to_be_bytes());
        out[26..34].copy_from_slice(&self.writer.to_be_bytes());
        out[34..38].copy_from_slice(&self.value_len.to_be_bytes());
        out[HEADER_LEN..].copy_from_slice(inline);
        out
    }

    /// Decodes a record into its header and the inline value bytes (empty
    /// unless [`Header::inline`]).
    pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), StorageError> {
        let version = *bytes
            .first()
            .ok_or_else(|| StorageError::Corrupt("empty state header".into()))?;
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
            return Err(StorageError::Version {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(StorageError::Corrupt(format!(
                "state header of {} bytes, expected {HEADER_LEN}",
                bytes.len()
            )));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let flags = bytes[13];
        let known = if version == 1 {
            HAS_VOTE | DECIDED
        } else {
            HAS_VOTE | DECIDED | INLINE
        };
        if flags & !known != 0 {
            return Err(StorageError::Corrupt(format!(
                "unknown header flags {flags:#x}"
            )));
        }
        let header = Header {
            promised: Ballot::new(u64_at(1), u32_at(9)),
            vote: (flags & HAS_VOTE != 0).then(|| Ballot::new(u64_at(14), u32_at(22))),
            decided: flags & DECIDED != 0,
            writer: u64_at(26),
            value_len: u32_at(34),
            inline: flags & INLINE != 0,
        };
        let inline = &bytes[HEADER_LEN..];
        let expected = if header.inline {
            header.value_len as usize
        } else {
            0
        };
        if inline.len() != expected || (header.inline && header.vote.is_none()) {
            return Err(StorageError::Corrupt(format!(
                "state record of {} bytes, header says {}",
                bytes.len(),
                HEADER_LEN + expected
            )));
        }
        Ok((header, inline))
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
            inline: false,
        };
        assert_eq!(Header::decode(&h.encode(&[])).unwrap(), (h, &[][..]));
        assert_eq!(h.chunks(), 256);
        let small = Header {
            value_len: 3,
            inline: true,
            ..h
        };
        let record = small.encode(b"abc");
        assert_eq!(Header::decode(&record).unwrap(), (small, &b"abc"[..]));
        assert_eq!(small.chunks(), 0);
    }

    /// A record whose length disagrees with its header is corrupt.
    #[test]
    fn truncated_inline_values_are_refused() {
        let h = Header {
            promised: Ballot::new(1, 1),
            vote: Some(Ballot::new(1, 1)),
            decided: false,
            writer: 1,
            value_len: 3,
            inline: true,
        };
        let record = h.encode(b"abc");
        assert!(matches!(
            Header::decode(&record[..record.len() - 1]),
            Err(StorageError::Corrupt(_))
        ));
    }

    /// Invariant 7: a version 1 header (no inline flag) still reads.
    #[test]
    fn version_one_headers_read() {
        let h = Header {
            promised: Ballot::new(7, 2),
            vote: Some(Ballot::new(5, 3)),
            decided: false,
            writer: 9,
            value_len: 10,
            inline: false,
        };
        let mut v1 = h.encode(&[]);
        v1[0] = 1;
        assert_eq!(Header::decode(&v1).unwrap(), (h, &[][..]));
        v1[13] |= INLINE;
        assert!(matches!(Header::decode(&v1), Err(StorageError::Corrupt(_))));
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
            inline: false,
        }
        .encode(&[]);
        for other in [0, FORMAT_VERSION + 1] {
            bytes[0] = other;
            assert!(matches!(
                Header::decode(&bytes),
                Err(StorageError::Version { found, .. }) if found == other
            ));
        }
    }
}
