//! Measures how long `Storage::load` blocks the calling thread on a sled
//! store of many registers: the acceptor calls it on an async worker.
//! `cargo run --release --example load_latency -- 200000`
use std::time::Instant;

use bytes::Bytes;
use paxos_kv::paxos::{Accepted, Ballot};
use paxos_kv::storage::{SledStorage, State, Storage};
use paxos_kv::value::Value;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStorage::open(dir.path()).expect("open");
    let state = |i: usize| State {
        promised: Ballot::new(1, 1),
        accepted: Some(Accepted {
            ballot: Ballot::new(1, 1),
            value: Value {
                writer: i as u64,
                bytes: Bytes::from(vec![b'v'; 256]),
            },
        }),
        decided: true,
    };
    let mut writes = tokio::task::JoinSet::new();
    let store = std::sync::Arc::new(store);
    for chunk in 0..n.div_ceil(1000) {
        let store = store.clone();
        writes.spawn(async move {
            for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
                store
                    .store(&format!("key/{i:08}"), &state(i))
                    .await
                    .expect("store");
            }
        });
        if writes.len() >= 64 {
            writes.join_next().await;
        }
    }
    while writes.join_next().await.is_some() {}
    let mut times: Vec<u128> = Vec::with_capacity(n);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("key/{:08}", x as usize % n);
        let t = Instant::now();
        let got = store.load(&key).expect("load");
        times.push(t.elapsed().as_nanos());
        assert!(got.decided);
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{n} registers of 256 B: load p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}
