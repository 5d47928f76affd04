//! paxos-kv: a distributed key-value store of write-once registers.
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod storage;
pub mod transport;
pub mod value;
