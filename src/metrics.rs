//! What a node measures, exposed at `/metrics` in the Prometheus text format
//! (version 0.0.4) by the `prometheus-client` crate (`docs/api.md`,
//! "Operations").
//!
//! Two kinds of data:
//! - [`Metrics`]: counters of outcomes and protocol events, plain atomics
//!   that the node bumps with [`inc`] and tests read directly; encoded at
//!   scrape time as counters with the names they always had
//!   (`paxos_kv_put_total{outcome="created"}`, ...).
//! - [`Latency`]: histograms of client operations
//!   (`paxos_kv_request_duration_seconds{op="put"|"get"|"list"|"wait"}`),
//!   of peer calls (`paxos_kv_peer_call_duration_seconds{peer="2"}`, one
//!   batch exchange each) and of storage group commits
//!   (`paxos_kv_storage_sync_duration_seconds`, one flush and `fdatasync`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

/// A client operation timed by [`Latency::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `PUT /v1/kv/{key}`.
    Put,
    /// `GET /v1/kv/{key}` (without `wait`).
    Get,
    /// `GET /v1/kv/{prefix}?keys` or `?recurse`.
    List,
    /// `GET /v1/kv/{key}?wait=...`.
    Wait,
}

impl Op {
    const ALL: [Op; 4] = [Op::Put, Op::Get, Op::List, Op::Wait];

    fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Wait => "wait",
        }
    }
}

type Labels = Vec<(&'static str, String)>;

fn latency_buckets() -> Histogram {
    // 100 µs to ~52 s, doubling: fsync-bound PUTs sit in the low
    // milliseconds, waits run to their deadline.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Latency histograms of one node; cheap to clone (shared handles), safe
/// to observe from any thread.
#[derive(Clone)]
pub struct Latency {
    requests: Family<Labels, Histogram>,
    by_op: [Histogram; 4],
    peer_calls: Family<Labels, Histogram>,
    storage_sync: Histogram,
}

impl Default for Latency {
    fn default() -> Self {
        let requests =
            Family::<Labels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        let by_op =
            Op::ALL.map(|op| requests.get_or_create_owned(&vec![("op", op.label().into())]));
        Latency {
            requests: requests.clone(),
            by_op,
            peer_calls: Family::new_with_constructor(latency_buckets),
            storage_sync: latency_buckets(),
        }
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latency")
    }
}

impl Latency {
    /// Records one client operation that took `elapsed`, whatever its status.
    pub fn observe(&self, op: Op, elapsed: Duration) {
        let i = Op::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.by_op[i].observe(elapsed.as_secs_f64());
    }

    /// Records one exchange with peer `peer` (a batch POST, answered or not).
    pub fn observe_peer_call(&self, peer: u32, elapsed: Duration) {
        self.peer_calls
            .get_or_create(&vec![("peer", peer.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one storage group commit (flush plus `fdatasync`).
    pub fn observe_sync(&self, elapsed: Duration) {
        self.storage_sync.observe(elapsed.as_secs_f64());
    }
}

/// One sample of a counter family: its label, if any, and its value.
type Sample = (Option<(&'static str, &'static str)>, u64);

/// The counter values at one scrape, encoded by the crate.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<(&'static str, &'static str, Vec<Sample>)>,
    gauges: Vec<(&'static str, &'static str, u64)>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, samples) in &self.counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, value) in samples {
                let counter = ConstCounter::new(*value);
                match label {
                    Some(label) => {
                        let labels = [*label];
                        counter.encode(family.encode_family(&labels)?)?;
                    }
                    None => counter.encode(family.encode_family(&Vec::<(&str, &str)>::new())?)?,
                }
            }
        }
        for (name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(*value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

/// The node's counters, its latency histograms and `gauges` (name, help,
/// value) in the Prometheus text format: counter families are named as
/// before this module used the crate (`paxos_kv_put_total`, ...).
pub fn render(
    metrics: &Metrics,
    latency: &Latency,
    gauges: &[(&'static str, &'static str, u64)],
) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let one = |c: &AtomicU64| vec![(None, get(c))];
    let snapshot = Snapshot {
        counters: vec![
            (
                "paxos_kv_put",
                "Client PUTs by outcome.",
                vec![
                    (Some(("outcome", "created")), get(&metrics.put_created)),
                    (Some(("outcome", "same")), get(&metrics.put_same)),
                    (Some(("outcome", "conflict")), get(&metrics.put_conflict)),
                ],
            ),
            (
                "paxos_kv_get",
                "Client GETs by how they were answered.",
                vec![
                    (Some(("path", "local")), get(&metrics.get_local)),
                    (Some(("path", "quorum")), get(&metrics.get_quorum)),
                    (Some(("path", "recovered")), get(&metrics.get_recovered)),
                    (Some(("path", "not_found")), get(&metrics.get_not_found)),
                ],
            ),
            (
                "paxos_kv_unavailable",
                "Client requests answered 503.",
                one(&metrics.unavailable),
            ),
            (
                "paxos_kv_rounds",
                "Proposer rounds started.",
                one(&metrics.rounds),
            ),
            (
                "paxos_kv_preempted",
                "Proposer rounds preempted by a higher ballot.",
                one(&metrics.preempted),
            ),
            (
                "paxos_kv_fast_rounds",
                "PUTs that tried the fast ballot, and those that fell back to classic rounds.",
                vec![
                    (Some(("outcome", "tried")), get(&metrics.fast_rounds)),
                    (Some(("outcome", "fell_back")), get(&metrics.fast_fallbacks)),
                ],
            ),
            (
                "paxos_kv_acceptor_requests",
                "Acceptor requests handled.",
                one(&metrics.acceptor_requests),
            ),
            (
                "paxos_kv_peer_errors",
                "Peer calls that failed.",
                one(&metrics.peer_errors),
            ),
            (
                "paxos_kv_storage_errors",
                "Storage reads or writes that failed.",
                one(&metrics.storage_errors),
            ),
        ],
        gauges: gauges.to_vec(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register(
        "paxos_kv_request_duration_seconds",
        "Client request latency by operation, whatever the status",
        latency.requests.clone(),
    );
    registry.register(
        "paxos_kv_peer_call_duration_seconds",
        "Latency of one batch exchange with a peer, answered or not",
        latency.peer_calls.clone(),
    );
    registry.register(
        "paxos_kv_storage_sync_duration_seconds",
        "Duration of one storage group commit (flush and fdatasync)",
        latency.storage_sync.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_names_and_histograms_appear() {
        let m = Metrics::default();
        inc(&m.put_created);
        inc(&m.put_created);
        inc(&m.peer_errors);
        let l = Latency::default();
        l.observe(Op::Put, Duration::from_millis(3));
        l.observe_peer_call(2, Duration::from_millis(1));
        l.observe_sync(Duration::from_millis(2));
        let text = render(&m, &l, &[("paxos_kv_open_connections", "Open.", 7)]);
        for line in [
            "# TYPE paxos_kv_put_total counter",
            "paxos_kv_put_total{outcome=\"created\"} 2",
            "paxos_kv_put_total{outcome=\"conflict\"} 0",
            "paxos_kv_get_total{path=\"not_found\"} 0",
            "paxos_kv_peer_errors_total 1",
            "paxos_kv_fast_rounds_total{outcome=\"fell_back\"} 0",
            "# TYPE paxos_kv_open_connections gauge",
            "paxos_kv_open_connections 7",
            "# TYPE paxos_kv_request_duration_seconds histogram",
            "paxos_kv_request_duration_seconds_count{op=\"put\"} 1",
            "paxos_kv_request_duration_seconds_count{op=\"get\"} 0",
            "paxos_kv_peer_call_duration_seconds_count{peer=\"2\"} 1",
            "paxos_kv_storage_sync_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
