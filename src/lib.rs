//! paxos-kv: a distributed key-value store of write-once registers.
//!
//! Every key is an independent single-decree Paxos instance. The crate is
//! layered (docs/design.md), dependencies pointing down:
//!
//! - [`api`]: the axum router; parses requests, maps outcomes to status codes.
//! - [`node`]: executes each client request's coordinator over a
//!   [`storage::Storage`] and a [`transport::Transport`]: fan-out, timers,
//!   ballot reservations, backoff draws.
//! - [`paxos`]: the pure core: acceptor rules, proposer round, quorum read,
//!   the request coordinator, ballot clock. No IO, no clock, no randomness.
//! - [`storage`] (sled, or memory) and [`transport`] (HTTP, or memory).
//! - Registry reads on top of the node: [`list`] (a linearizable page of the
//!   keys under a prefix, from a majority's pages) and [`waiters`] (`GET ?wait`,
//!   woken by the decide a node stores); [`query`] parses their parameters.
//!
//! A short tour: three nodes over the in-memory network and store, the same
//! node code that serves HTTP over sled in production.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use paxos_kv::node::{Node, PutOutcome, Timing};
//! use paxos_kv::paxos::Members;
//! use paxos_kv::storage::MemoryStorage;
//! use paxos_kv::transport::MemoryNetwork;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let net = MemoryNetwork::new();
//! let members = Members::new([1, 2, 3]);
//! let nodes: Vec<_> = (1..=3)
//!     .map(|id| {
//!         let node = Node::new(id, members.clone(), Timing::default(),
//!                              MemoryStorage::new(), net.transport(id), Some(id as u64)).unwrap();
//!         net.register(id, node.clone());
//!         node
//!     })
//!     .collect();
//!
//! // The first value a majority accepts is chosen forever...
//! let put = nodes[0].put("app/db", Bytes::from("postgres://a")).await.unwrap();
//! assert_eq!(put, PutOutcome::Created);
//! // ...so another value is refused with the chosen one,
//! let again = nodes[1].put("app/db", Bytes::from("mysql://b")).await.unwrap();
//! assert_eq!(again, PutOutcome::Conflict(Bytes::from("postgres://a")));
//! // and every node reads it.
//! assert_eq!(nodes[2].get("app/db").await.unwrap(), Some(Bytes::from("postgres://a")));
//! assert_eq!(nodes[2].get("other").await.unwrap(), None);
//! # });
//! ```
pub mod admission;
pub mod api;
pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod connections;
pub mod console;
pub mod dev;
pub mod error_chain;
pub mod events;
pub mod identity;
pub mod join;
pub mod key;
pub mod list;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod query;
pub mod reconfigure;
pub mod rejoin;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod value;
pub mod waiters;
