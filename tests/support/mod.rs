//! The one support module of the integration tests. Every test file says
//! `mod support;` and uses what it needs:
//!
//! - [`seed`]: `PAXOS_KV_SEED`, the one variable that replays any randomized
//!   test, and the line each prints to replay it;
//! - [`inproc`]: a cluster of production nodes in the test's own process
//!   (real sled, real HTTP on 127.0.0.1), stopped and restarted at will;
//! - [`procs`]: a cluster of real `paxos-kv serve` processes, killed,
//!   paused and restarted;
//! - [`net`]: free ports, an HTTP client, key encoding, polling with a
//!   deadline;
//! - [`history`]: the write-once-register linearizability checker of
//!   recorded histories;
//! - [`sse`]: a reader of the event stream (`/v1/events`);
//! - [`tmpfs`]: a small disk to fill under a node.

#![allow(dead_code)]

pub mod history;
pub mod inproc;
pub mod net;
pub mod procs;
pub mod seed;
pub mod sse;
pub mod tmpfs;
