//! paxos-kv: a distributed key-value store of write-once registers.
pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod dev;
pub mod key;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod server;
pub mod storage;
pub mod transport;
pub mod value;
