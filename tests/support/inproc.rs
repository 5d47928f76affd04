//! An in-process paxos-kv cluster for integration tests.
//!
//! Every node is the production wiring (`paxos_kv::server::prepare` +
//! `spawn`): real sled in its own temp directory, real HTTP on its own
//! 127.0.0.1 ephemeral port, the cluster token on peer routes. A node can be
//! stopped (gracefully) and restarted over the same data directory on the
//! same port, so "node down" scenarios need no child processes.
//!
//! Test files reach it as `support::inproc` (`mod support;`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use paxos_kv::config::{Config, ServeArgs, TimingArgs};
use paxos_kv::server::{prepare, RunningServer};
use tokio::net::TcpListener;

/// The cluster token every harness cluster uses unless told otherwise.
pub const TOKEN: &str = "integration-test-token";

// Re-exported so the files that name them `harness::...` keep doing so;
// a test crate that uses none of them is not warned.
#[allow(unused_imports)]
pub use super::net::{key_path as encode, poll, PATIENCE};

/// How a cluster is configured.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: u32,
    /// `--request-timeout`: a request ends in 503 after it.
    pub request_timeout: Duration,
    /// `--peer-timeout`.
    pub peer_timeout: Duration,
    /// `--max-value-bytes`.
    pub max_value_bytes: usize,
    /// `--cluster-token`.
    pub token: Option<String>,
}

impl Default for Options {
    /// Three nodes, generous deadlines (no test that expects success should
    /// see a 503 because the machine is slow), the default value limit.
    fn default() -> Self {
        Options {
            nodes: 3,
            request_timeout: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(5),
            max_value_bytes: 1024 * 1024,
            token: Some(TOKEN.to_string()),
        }
    }
}

impl Options {
    /// A cluster whose requests give up after 2 s, for tests that expect 503
    /// (a peer call must end sooner than a request: 1 s).
    pub fn impatient() -> Self {
        Options {
            request_timeout: Duration::from_secs(2),
            peer_timeout: Duration::from_secs(1),
            ..Options::default()
        }
    }
}

struct Slot {
    id: u32,
    addr: SocketAddr,
    data_dir: PathBuf,
    server: Option<RunningServer>,
}

/// A running in-process cluster. Dropping it leaves the servers to die with
/// the test's runtime; call [`Cluster::shutdown`] for a clean stop.
pub struct Cluster {
    options: Options,
    peers: String,
    slots: Vec<Slot>,
    client: reqwest::Client,
    // Last field: removed after everything else is dropped.
    _root: tempfile::TempDir,
}

/// An HTTP client that never goes through a proxy and never hangs a test.
pub fn http_client() -> reqwest::Client {
    super::net::client(PATIENCE)
}

impl Cluster {
    /// Binds every node's port first (so `--peers` can name them), then
    /// starts every node.
    pub async fn start(options: Options) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in 0..options.nodes {
            listeners.push(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind an ephemeral port"),
            );
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}=http://{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            options,
            peers,
            slots: Vec::new(),
            client: http_client(),
            _root: root,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u32 + 1;
            let data_dir = cluster._root.path().join(format!("node{id}"));
            let config = cluster.config(id, addrs[i], &data_dir);
            let server = prepare(config)
                .unwrap_or_else(|e| panic!("prepare node {id}: {e}"))
                .spawn(listener)
                .unwrap_or_else(|e| panic!("spawn node {id}: {e}"));
            cluster.slots.push(Slot {
                id,
                addr: addrs[i],
                data_dir,
                server: Some(server),
            });
        }
        for id in cluster.ids() {
            cluster.wait_ready(id).await;
        }
        cluster
    }

    /// Polls `GET /ready` on node `id` until it is 200: the node serves (a
    /// new cluster forms only once every member answers; a restarted node
    /// serves at once, a wiped one after its rebuild).
    pub async fn wait_ready(&self, id: u32) {
        let url = format!("{}/ready", self.url(id));
        let client = &self.client;
        poll(&format!("node {id} serves (/ready)"), || {
            let url = url.clone();
            async move {
                let r = client.get(url).send().await.map_err(|e| e.to_string())?;
                match r.status().as_u16() {
                    200 => Ok(()),
                    s => Err(format!("{s} {}", r.text().await.unwrap_or_default())),
                }
            }
        })
        .await
    }

    /// `GET /v1/status` of node `id`, as JSON.
    pub async fn status(&self, id: u32) -> serde_json::Value {
        self.client
            .get(format!("{}/v1/status", self.url(id)))
            .send()
            .await
            .expect("GET /v1/status")
            .json()
            .await
            .expect("status JSON")
    }

    /// The envelope node `id` sends under, from its `/v1/status`: a batch
    /// posted to it with these fields belongs to its cluster and epoch.
    pub async fn envelope(&self, id: u32) -> serde_json::Value {
        let s = self.status(id).await;
        assert!(s["cluster"].is_string(), "node {id} has no cluster: {s}");
        serde_json::json!({
            "cluster": s["cluster"], "epoch": s["epoch"], "incarnation": s["incarnation"],
        })
    }

    /// A batch body (protocol 2) from member `from`, under the cluster id
    /// and epoch node `to` reports, carrying `messages`.
    pub async fn batch_to(
        &self,
        to: u32,
        from: u32,
        messages: Vec<serde_json::Value>,
    ) -> serde_json::Value {
        let mut body = self.envelope(to).await;
        body["version"] = serde_json::json!(2);
        body["from"] = serde_json::json!(from);
        body["messages"] = serde_json::Value::Array(messages);
        body
    }

    fn config(&self, id: u32, addr: SocketAddr, data_dir: &std::path::Path) -> Config {
        ServeArgs {
            id,
            listen: addr.to_string(),
            data_dir: data_dir.to_path_buf(),
            peers: Some(self.peers.clone()),
            join: None,
            cluster_token: self.options.token.clone(),
            max_value_bytes: self.options.max_value_bytes,
            timing: TimingArgs {
                request_timeout: self.options.request_timeout,
                peer_timeout: Some(self.options.peer_timeout),
                ..TimingArgs::default()
            },
            security: Default::default(),
        }
        .validate()
        .unwrap_or_else(|e| panic!("config of node {id}: {e}"))
    }

    fn slot(&self, id: u32) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.id).collect()
    }

    /// The `--peers` string every node was started with.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// The cluster token.
    pub fn token(&self) -> Option<&str> {
        self.options.token.as_deref()
    }

    /// Base URL of node `id`, without a trailing slash.
    pub fn url(&self, id: u32) -> String {
        format!("http://{}", self.slot(id).addr)
    }

    /// Address of node `id`.
    pub fn addr(&self, id: u32) -> SocketAddr {
        self.slot(id).addr
    }

    /// URL of `/v1/kv/<raw>`, where `raw` is already percent-encoded.
    pub fn kv(&self, id: u32, raw: &str) -> String {
        format!("{}/v1/kv/{raw}", self.url(id))
    }

    /// The shared HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether node `id` is serving.
    pub fn is_up(&self, id: u32) -> bool {
        self.slot(id).server.is_some()
    }

    /// Stops node `id` gracefully and waits until its storage is flushed and
    /// its port is closed.
    pub async fn stop(&mut self, id: u32) {
        let server = self
            .slot_mut(id)
            .server
            .take()
            .unwrap_or_else(|| panic!("node {id} is already down"));
        tokio::time::timeout(PATIENCE, server.stop())
            .await
            .unwrap_or_else(|_| panic!("node {id} did not stop within {PATIENCE:?}"))
            .unwrap_or_else(|e| panic!("node {id} stopped with an error: {e}"));
    }

    /// Restarts node `id` over its data directory on its old port, and
    /// waits until it serves (`/ready`). Polls
    /// (with a deadline) until sled's lock is released by the stopped node's
    /// last background tasks and the port can be bound again.
    pub async fn restart(&mut self, id: u32) {
        assert!(!self.is_up(id), "node {id} is still up");
        let (addr, data_dir) = {
            let s = self.slot(id);
            (s.addr, s.data_dir.clone())
        };
        let config = self.config(id, addr, &data_dir);
        let prepared = poll(&format!("reopen node {id}'s data dir"), || {
            let config = config.clone();
            async move { prepare(config).map_err(|e| e.to_string()) }
        })
        .await;
        let listener = poll(
            &format!("bind node {id}'s port {addr} again"),
            || async move { TcpListener::bind(addr).await.map_err(|e| e.to_string()) },
        )
        .await;
        let server = prepared
            .spawn(listener)
            .unwrap_or_else(|e| panic!("spawn node {id}: {e}"));
        self.slot_mut(id).server = Some(server);
        self.wait_ready(id).await;
    }

    /// Stops every node that is up.
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            if self.is_up(id) {
                self.stop(id).await;
            }
        }
    }

    /// The value of the Prometheus sample `series` (e.g.
    /// `paxos_kv_get_total{path="local"}`) on node `id`.
    pub async fn metric(&self, id: u32, series: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url(id)))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    }
}

/// The value of sample `series` in a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
