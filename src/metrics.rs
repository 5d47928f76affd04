//! Counters a node keeps, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcomes of client requests and protocol events, counted since start.
#[derive(Default)]
pub struct Metrics {
    /// PUT answered 201.
    pub put_created: AtomicU64,
    /// PUT answered 200 (same value already chosen).
    pub put_same: AtomicU64,
    /// PUT answered 409.
    pub put_conflict: AtomicU64,
    /// PUT or GET that ran out of time or majority (503).
    pub unavailable: AtomicU64,
    /// GET served from the local decided state.
    pub get_local: AtomicU64,
    /// GET decided by a quorum read.
    pub get_quorum: AtomicU64,
    /// GET that needed a recovery round.
    pub get_recovered: AtomicU64,
    /// GET answered 404.
    pub get_not_found: AtomicU64,
    /// Proposer rounds started (phase 1 sent).
    pub rounds: AtomicU64,
    /// Rounds preempted by a higher ballot.
    pub preempted: AtomicU64,
    /// PUTs that tried the fast ballot (phase 2 without phase 1).
    pub fast_rounds: AtomicU64,
    /// Fast attempts that could not finish and went on with classic rounds.
    pub fast_fallbacks: AtomicU64,
    /// Acceptor requests handled, from peers or from this node.
    pub acceptor_requests: AtomicU64,
    /// Peer calls that failed (unreachable, timeout, error status).
    pub peer_errors: AtomicU64,
    /// Storage errors.
    pub storage_errors: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The counters in the Prometheus text exposition format, plus `extra`
    /// gauges given as (name, help, value).
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "paxos_kv_put_total",
            "Client PUTs by outcome.",
            "counter",
            &[
                ("{outcome=\"created\"}", get(&self.put_created)),
                ("{outcome=\"same\"}", get(&self.put_same)),
                ("{outcome=\"conflict\"}", get(&self.put_conflict)),
            ],
        );
        family(
            "paxos_kv_get_total",
            "Client GETs by how they were answered.",
            "counter",
            &[
                ("{path=\"local\"}", get(&self.get_local)),
                ("{path=\"quorum\"}", get(&self.get_quorum)),
                ("{path=\"recovered\"}", get(&self.get_recovered)),
                ("{path=\"not_found\"}", get(&self.get_not_found)),
            ],
        );
        family(
            "paxos_kv_unavailable_total",
            "Client requests answered 503.",
            "counter",
            &[("", get(&self.unavailable))],
        );
        family(
            "paxos_kv_rounds_total",
            "Proposer rounds started.",
            "counter",
            &[("", get(&self.rounds))],
        );
        family(
            "paxos_kv_preempted_total",
            "Proposer rounds preempted by a higher ballot.",
            "counter",
            &[("", get(&self.preempted))],
        );
        family(
            "paxos_kv_fast_rounds_total",
            "PUTs that tried the fast ballot, and those that fell back to classic rounds.",
            "counter",
            &[
                ("{outcome=\"tried\"}", get(&self.fast_rounds)),
                ("{outcome=\"fell_back\"}", get(&self.fast_fallbacks)),
            ],
        );
        family(
            "paxos_kv_acceptor_requests_total",
            "Acceptor requests handled.",
            "counter",
            &[("", get(&self.acceptor_requests))],
        );
        family(
            "paxos_kv_peer_errors_total",
            "Peer calls that failed.",
            "counter",
            &[("", get(&self.peer_errors))],
        );
        family(
            "paxos_kv_storage_errors_total",
            "Storage reads or writes that failed.",
            "counter",
            &[("", get(&self.storage_errors))],
        );
        for (name, help, value) in extra {
            family(name, help, "gauge", &[("", *value)]);
        }
        out
    }
}
