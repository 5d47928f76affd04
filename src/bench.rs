//! `paxos-kv bench`: a bounded load generator that prints throughput,
//! latency percentiles and the count of each status.
//!
//! `--api etcd` drives an etcd v3 HTTP gateway with the same workload
//! (put-if-absent as a transaction on `create_revision == 0`, linearizable
//! range reads), so both systems can be measured by one tool in one run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

use crate::config::parse_duration;
use crate::key::encode_key;

/// What each request does.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PUT a new key per request.
    Put,
    /// GET keys written before the clock starts.
    Get,
    /// List a page of `--page` keys (`?keys&limit=N&after=K`, K at random)
    /// out of `--keys` written before the clock starts.
    List,
}

/// Which server API to drive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// paxos-kv's /v1/kv API.
    PaxosKv,
    /// An etcd v3 gRPC-gateway (for side-by-side comparison).
    Etcd,
}

/// The flags of `paxos-kv bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URLs to spread requests over, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7001")]
    pub url: Vec<String>,
    /// put: write new keys; get: read keys written first.
    #[arg(long, value_enum, default_value = "put")]
    pub mode: Mode,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Size of each value.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// get and list modes: how many keys to write first.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Keys written before the clock starts (under their own prefix, not
    /// read by the measured phase): to measure a store that already holds
    /// many registers.
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// list mode: keys per page (`limit`).
    #[arg(long, default_value_t = 1000)]
    pub page: usize,
    /// Stop after this many requests even if time remains.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,
    /// Server API to drive.
    #[arg(long, value_enum, default_value = "paxos-kv")]
    pub api: Api,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// CA and client token for nodes with TLS or client tokens.
    #[command(flatten)]
    pub access: crate::client::ClientAccess,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests completed (any status).
    pub requests: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Count per status ("201", "409", "error: ...").
    pub statuses: BTreeMap<String, u64>,
}

struct Target {
    client: reqwest::Client,
    api: Api,
    urls: Vec<String>,
}

impl Target {
    async fn put(&self, i: usize, key: &str, value: Vec<u8>) -> String {
        let base = &self.urls[i % self.urls.len()];
        let request = match self.api {
            Api::PaxosKv => self
                .client
                .put(format!("{base}/v1/kv/{}", encode_key(key)))
                .body(value),
            Api::Etcd => {
                let k = STANDARD.encode(key);
                let body = json!({
                    "compare": [{"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
                    "success": [{"request_put": {"key": k, "value": STANDARD.encode(&value)}}],
                    "failure": [{"request_range": {"key": k}}],
                });
                self.client.post(format!("{base}/v3/kv/txn")).json(&body)
            }
        };
        self.finish(request, true).await
    }

    async fn get(&self, i: usize, key: &str) -> String {
        let base = &self.urls[i % self.urls.len()];
        let request = match self.api {
            Api::PaxosKv => self.client.get(format!("{base}/v1/kv/{}", encode_key(key))),
            Api::Etcd => self
                .client
                .post(format!("{base}/v3/kv/range"))
                .json(&json!({ "key": STANDARD.encode(key) })),
        };
        self.finish(request, false).await
    }

    /// One page of the keys under `prefix` after `after` (paxos-kv only).
    async fn list(&self, i: usize, prefix: &str, after: &str, limit: usize) -> String {
        let base = &self.urls[i % self.urls.len()];
        let url = format!(
            "{base}/v1/kv/{}?keys&limit={limit}&after={}",
            encode_key(prefix),
            encode_key(after)
        );
        self.finish(self.client.get(url), false).await
    }

    /// The outcome as a paxos-kv status code (etcd's answers are mapped to
    /// the codes paxos-kv would give).
    async fn finish(&self, request: reqwest::RequestBuilder, put: bool) -> String {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return format!("error: {}", short_error(&e)),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return format!("error: {}", short_error(&e)),
        };
        if self.api == Api::PaxosKv || status != 200 {
            return status.to_string();
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = if put {
            if v["succeeded"].as_bool() == Some(true) {
                "201"
            } else {
                "409"
            }
        } else if v["kvs"].as_array().is_some_and(|kvs| !kvs.is_empty()) {
            "200"
        } else {
            "404"
        };
        code.to_string()
    }
}

fn short_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// Writes `count` new keys `{prefix}/{k}` with `workers` requests in flight;
/// any answer but 201 (or 200, a retried write) is an error.
async fn write_keys(
    target: &Arc<Target>,
    prefix: &str,
    count: usize,
    workers: usize,
    value: &Arc<Vec<u8>>,
) -> Result<(), String> {
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (target, value, prefix) = (target.clone(), value.clone(), prefix.to_owned());
        writers.spawn(async move {
            for k in (w..count).step_by(workers) {
                let status = target
                    .put(k, &format!("{prefix}/{k}"), value.to_vec())
                    .await;
                if status != "201" && status != "200" {
                    return Err(format!("writing key {prefix}/{k}: {status}"));
                }
            }
            Ok(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Runs the benchmark described by `args`.
pub async fn run(args: &BenchArgs) -> Result<Report, String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let client = args
        .access
        .builder()?
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let target = Arc::new(Target {
        client,
        api: args.api,
        urls: args
            .url
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect(),
    });
    let run_id: u32 = rand::rng().random();
    let prefix = format!("bench/{run_id:08x}");
    let mut value = vec![0u8; args.value_bytes];
    rand::rng().fill_bytes(&mut value);
    let value = Arc::new(value);

    if args.mode == Mode::List && args.api != Api::PaxosKv {
        return Err("--mode list drives the paxos-kv API only".into());
    }
    if args.preload > 0 {
        let started = Instant::now();
        write_keys(
            &target,
            &format!("{prefix}/preload"),
            args.preload,
            args.concurrency,
            &value,
        )
        .await?;
        eprintln!(
            "preloaded {} keys in {:.1} s",
            args.preload,
            started.elapsed().as_secs_f64()
        );
    }
    if args.mode != Mode::Put {
        // The keys the measured phase reads, written outside it.
        write_keys(&target, &prefix, args.keys, args.concurrency, &value).await?;
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(args.max_requests));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (target, value, prefix, budget) = (
            target.clone(),
            value.clone(),
            prefix.clone(),
            budget.clone(),
        );
        let (mode, keys, page) = (args.mode, args.keys.max(1), args.page);
        workers.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            let mut i = 0usize;
            while Instant::now() < deadline
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    )
                    .is_ok()
            {
                let t0 = Instant::now();
                let status = match mode {
                    Mode::Put => {
                        target
                            .put(w + i, &format!("{prefix}/{w}/{i}"), value.to_vec())
                            .await
                    }
                    Mode::Get => {
                        let k = rng.random_range(0..keys);
                        target.get(w + i, &format!("{prefix}/{k}")).await
                    }
                    Mode::List => {
                        let k = rng.random_range(0..keys);
                        let after = format!("{prefix}/{k}");
                        target
                            .list(w + i, &format!("{prefix}/"), &after, page)
                            .await
                    }
                };
                let us = t0.elapsed().as_micros().max(1) as u64;
                let _ = hist.record(us);
                *statuses.entry(status).or_default() += 1;
                i += 1;
            }
            (hist, statuses)
        });
    }
    let mut latency_us = Histogram::<u64>::new(3).expect("histogram");
    let mut statuses = BTreeMap::new();
    let mut requests = 0;
    while let Some(r) = workers.join_next().await {
        let (hist, counts) = r.map_err(|e| e.to_string())?;
        latency_us.add(&hist).map_err(|e| e.to_string())?;
        for (status, n) in counts {
            requests += n;
            *statuses.entry(status).or_default() += n;
        }
    }
    Ok(Report {
        requests,
        elapsed: started.elapsed(),
        latency_us,
        statuses,
    })
}

impl Report {
    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Human-readable text.
    pub fn text(&self, args: &BenchArgs) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        format!(
            "mode {:?} against {} ({:?} API), {} in flight, {} B values, {} keys preloaded\n\
             requests   {} in {:.2} s = {:.0} req/s\n\
             latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             statuses   {}",
            args.mode,
            args.url.join(","),
            args.api,
            args.concurrency,
            args.value_bytes,
            args.preload,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.latency_us.max() as f64 / 1000.0,
            statuses.join(", ")
        )
    }

    /// One JSON object.
    pub fn json(&self, args: &BenchArgs) -> serde_json::Value {
        json!({
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "api": format!("{:?}", args.api),
            "concurrency": args.concurrency,
            "value_bytes": args.value_bytes,
            "preload": args.preload,
            "requests": self.requests,
            "seconds": self.elapsed.as_secs_f64(),
            "throughput": self.throughput(),
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "statuses": self.statuses,
        })
    }
}
