//! A cluster of real `paxos-kv serve` processes for crash and Jepsen-style
//! tests: each node is a child process with its own sled directory in a
//! temporary folder, started, SIGKILLed, SIGSTOPped/SIGCONTed and restarted
//! over the same data directory on command.
//!
//! Every child is killed when its [`NodeProc`] is dropped, so a failing or
//! panicking test leaves no process behind. Readiness is polled on
//! `GET /ready` (the node serves) or `GET /health` (the process listens)
//! with a deadline, never slept for.
//!
//! Ports: a node keeps its port across restarts (its peers know it by URL), so
//! ports are picked below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`). A port taken from that range
//! and released could be grabbed by any outgoing connection (every peer call
//! opens one) while the node is down, and the restart would then fail to bind.
//! Outside it, only another listener can collide, and a restart retries.
//!
//! Set `PAXOS_KV_KEEP_DIRS=1` to keep the data directories and node logs of a
//! run (their path is printed).

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster token every test cluster uses.
pub const TOKEN: &str = "procs-test-token";

/// How long a starting node may take to serve (sled open, cluster
/// genesis or a restart, on a loaded 2-core machine).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Serializes the process-heavy tests of one test binary: the machine has two
/// cores, and two clusters at once only make every timeout fire.
pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// Re-exported so the files that name them `procs::...` keep doing so.
#[allow(unused_imports)]
pub use super::net::{client, free_port, key_path};

/// How one node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node id.
    pub id: u32,
    /// Its client/peer port on 127.0.0.1.
    pub port: u16,
    /// Its sled directory.
    pub data_dir: PathBuf,
    /// The `--peers` string this node is given.
    pub peers: String,
    /// Extra flags (timeouts).
    pub extra: Vec<String>,
}

/// One `paxos-kv serve` process (or none, while it is down).
pub struct NodeProc {
    /// How it is started.
    pub config: NodeConfig,
    child: Option<Child>,
    paused: bool,
    log: PathBuf,
    /// How many times it was started.
    pub starts: u32,
    /// Set to wipe the data directory before every restart: a deliberately
    /// broken node that forgets its acceptor state in a crash.
    pub wipe_on_restart: bool,
}

impl NodeProc {
    /// A node that is not running yet; its log goes to `log`.
    pub fn new(config: NodeConfig, log: PathBuf) -> Self {
        NodeProc {
            config,
            child: None,
            paused: false,
            log,
            starts: 0,
            wipe_on_restart: false,
        }
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.config.id
    }

    /// Base URL, e.g. `http://127.0.0.1:23456`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.port)
    }

    /// Socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.port))
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether a process was started and not killed (it may be paused).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Spawns the process (without waiting for it to serve).
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.id()
        );
        if self.wipe_on_restart && self.starts > 0 {
            let _ = std::fs::remove_dir_all(&self.config.data_dir);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let c = &self.config;
        let child = Command::new(env!("CARGO_BIN_EXE_paxos-kv"))
            .arg("serve")
            .args(["--id", &c.id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", c.port)])
            .arg("--data-dir")
            .arg(&c.data_dir)
            // A node added online has no `--peers` (it takes `--join` in `extra`).
            .args(if c.peers.is_empty() {
                vec![]
            } else {
                vec!["--peers", c.peers.as_str()]
            })
            .args(["--cluster-token", TOKEN])
            .args(&c.extra)
            .env(
                "RUST_LOG",
                std::env::var("PAXOS_KV_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("PAXOS_KV_ID")
            .env_remove("PAXOS_KV_PEERS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn paxos-kv serve");
        self.child = Some(child);
        self.paused = false;
        self.starts += 1;
    }

    /// Polls `/ready` until it answers 200: the node serves (its cluster
    /// formed, or it rebuilt). Fails if the process exits or the deadline
    /// passes, with the tail of its log. A new cluster forms only once every
    /// member answers, so spawn every node before waiting for any.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), String> {
        self.wait_for("/ready", deadline).await
    }

    /// Polls `/health` until it answers 200: the process listens, whether or
    /// not it serves (it may wait for its peers or rebuild).
    pub async fn wait_up(&mut self, deadline: Duration) -> Result<(), String> {
        self.wait_for("/health", deadline).await
    }

    async fn wait_for(&mut self, path: &str, deadline: Duration) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let until = Instant::now() + deadline;
        let url = format!("{}{path}", self.url());
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "node {} exited with {status} while starting; log tail:\n{}",
                        self.id(),
                        self.log_tail(3000)
                    ));
                }
            } else {
                return Err(format!("node {} is not running", self.id()));
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                return Err(format!(
                    "node {} did not answer {path} with 200 within {deadline:?}; log tail:\n{}",
                    self.id(),
                    self.log_tail(3000)
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts the process and waits until it answers `/health`, whether or
    /// not it serves (retrying when its port was taken meanwhile).
    pub async fn start_up(&mut self) -> Result<(), String> {
        self.start_and_wait(false).await
    }

    /// Starts the node and waits until it serves, retrying when the process
    /// exits at once (its port briefly taken by someone else).
    pub async fn start(&mut self) -> Result<(), String> {
        self.start_and_wait(true).await
    }

    /// Spawns the process and waits for `/ready` (`serving`) or `/health`,
    /// spawning again while it exits at once, until [`READY_DEADLINE`].
    async fn start_and_wait(&mut self, serving: bool) -> Result<(), String> {
        let until = Instant::now() + READY_DEADLINE;
        loop {
            self.spawn();
            let left = until.saturating_duration_since(Instant::now());
            let waited = if serving {
                self.wait_ready(left).await
            } else {
                self.wait_up(left).await
            };
            match waited {
                Ok(()) => return Ok(()),
                Err(e) if self.child.is_none() && Instant::now() < until => {
                    eprintln!("retrying start: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// SIGKILL (via `Child::kill`), then reaps the process: when this
    /// returns, the process is gone and its port and files are released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} {pid} failed");
        }
    }

    /// SIGSTOP: the process stays alive but answers nothing.
    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal("-STOP");
            self.paused = true;
        }
    }

    /// SIGCONT after [`NodeProc::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
    }

    /// The last `bytes` of the node's log.
    pub fn log_tail(&self, bytes: u64) -> String {
        let Ok(mut f) = File::open(&self.log) else {
            return String::from("(no log)");
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Flags every test node gets: short deadlines so that faults turn into
/// 503s quickly.
pub fn default_extra() -> Vec<String> {
    ["--request-timeout", "2s", "--peer-timeout", "500ms"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Nodes `1..=n` of one cluster, sharing a temporary directory.
pub struct Cluster {
    /// Data directories and logs live here.
    pub dir: tempfile::TempDir,
    /// Node `i` is `nodes[i - 1]`.
    pub nodes: Vec<NodeProc>,
}

/// `1=http://127.0.0.1:P1,2=...` for the given ports.
pub fn peers_string(ports: &[(u32, u16)]) -> String {
    ports
        .iter()
        .map(|(id, port)| format!("{id}=http://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// A cluster of `n` nodes that are not started yet. `peers_of(id, ports)`
    /// gives each node's `--peers` (the same string for all, normally).
    pub fn new(n: u32, peers_of: impl Fn(u32, &[(u32, u16)]) -> String) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("paxos-kv-procs-")
            .tempdir()
            .expect("tempdir");
        let ports: Vec<(u32, u16)> = (1..=n).map(|id| (id, free_port())).collect();
        let nodes = ports
            .iter()
            .map(|&(id, port)| {
                let config = NodeConfig {
                    id,
                    port,
                    data_dir: dir.path().join(format!("node{id}")),
                    peers: peers_of(id, &ports),
                    extra: default_extra(),
                };
                NodeProc::new(config, dir.path().join(format!("node{id}.log")))
            })
            .collect();
        Cluster { dir, nodes }
    }

    /// `n` nodes that all see each other directly, started and serving.
    pub async fn start(n: u32) -> Cluster {
        let mut cluster = Cluster::new(n, |_, ports| peers_string(ports));
        cluster.start_all().await;
        cluster
    }

    /// Starts every node that is down and waits until each process answers
    /// `/health` (not until it serves: for tests of nodes that must not).
    pub async fn start_all_up(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| !n.is_up()) {
            node.start_up().await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Starts every node that is down and waits until all serve.
    pub async fn start_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| !n.is_up()) {
            node.spawn();
        }
        for node in &mut self.nodes {
            if let Err(e) = node.wait_ready(READY_DEADLINE).await {
                // The port may have been taken while it was down: retry.
                if node.is_up() {
                    panic!("{e}");
                }
                node.start().await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// A node with the next id, not started, that will join the cluster
    /// through `join_url` (`serve --join`, no `--peers`): its port and data
    /// directory are fixed now, so its URL can be given to
    /// `members add` before it starts. Returns its id.
    pub fn add_joining(&mut self, join_url: &str) -> u32 {
        let id = self.nodes.len() as u32 + 1;
        let mut extra = default_extra();
        extra.extend(["--join".to_owned(), join_url.to_owned()]);
        let config = NodeConfig {
            id,
            port: free_port(),
            data_dir: self.dir.path().join(format!("node{id}")),
            peers: String::new(),
            extra,
        };
        let log = self.dir.path().join(format!("node{id}.log"));
        self.nodes.push(NodeProc::new(config, log));
        id
    }

    /// Node `id`.
    pub fn node(&mut self, id: u32) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Base URL of node `id`.
    pub fn url(&self, id: u32) -> String {
        self.nodes[(id - 1) as usize].url()
    }

    /// Every node's base URL, node 1 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NodeProc::url).collect()
    }

    /// SIGKILLs every node, as close to "at once" as three syscalls get.
    pub fn kill_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &mut children {
            let _ = child.kill();
        }
        for child in &mut children {
            let _ = child.wait();
        }
        for node in &mut self.nodes {
            node.paused = false;
        }
    }

    /// SIGKILLs node `id` and starts it again over the same data directory.
    pub async fn crash_restart(&mut self, id: u32) {
        let node = self.node(id);
        node.kill();
        node.start().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The data directory root (kept after the test with `PAXOS_KV_KEEP_DIRS=1`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every node's log tail, for failure messages.
    pub fn logs(&self, bytes: u64) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- node {} -----\n{}", n.id(), n.log_tail(bytes)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.resume();
            node.kill();
        }
        if std::env::var_os("PAXOS_KV_KEEP_DIRS").is_some() {
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("paxos-kv-procs-empty-")
                    .tempdir()
                    .expect("tempdir"),
            );
            eprintln!("kept data dirs and logs in {}", kept.keep().display());
        }
    }
}

/// What a client saw for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A status code and the body.
    Status(u16, bytes::Bytes),
    /// No answer: connection refused or reset, timeout.
    NoAnswer(String),
}

/// `PUT /v1/kv/{key}` on `base`.
pub async fn put(client: &reqwest::Client, base: &str, key: &str, value: bytes::Bytes) -> Answer {
    let url = format!("{base}/v1/kv/{}", key_path(key));
    match client.put(url).body(value).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => Answer::Status(status, body),
                Err(e) => Answer::NoAnswer(e.to_string()),
            }
        }
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

/// `GET /v1/kv/{key}` on `base`.
pub async fn get(client: &reqwest::Client, base: &str, key: &str) -> Answer {
    let url = format!("{base}/v1/kv/{}", key_path(key));
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => Answer::Status(status, body),
                Err(e) => Answer::NoAnswer(e.to_string()),
            }
        }
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

/// `GET /v1/status` on `base`, as JSON.
pub async fn status(client: &reqwest::Client, base: &str) -> Result<serde_json::Value, String> {
    let r = client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}

/// The cluster id and membership epoch `base` reports in `/v1/status`
/// (an error while it has no cluster id yet).
pub async fn cluster_of(client: &reqwest::Client, base: &str) -> Result<(String, u64), String> {
    let s = status(client, base).await?;
    match (s["cluster"].as_str(), s["epoch"].as_u64()) {
        (Some(cluster), Some(epoch)) => Ok((cluster.to_owned(), epoch)),
        _ => Err(format!("{base} has no cluster id yet: {s}")),
    }
}

/// POSTs `body` (any JSON) to `base`'s `/v1/paxos/batch` with the cluster
/// token; returns the status and the parsed JSON body.
pub async fn post_batch(
    client: &reqwest::Client,
    base: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let r = client
        .post(format!("{base}/v1/paxos/batch"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&text).map_err(|e| format!("{status} {text:?}: {e}"))?;
    Ok((status, json))
}

/// POSTs a batch of acceptor `messages` (`{"op":..,"key":..,"ballot":..}`,
/// src/transport/wire.rs) from member `from` to `base`, under the cluster
/// id and epoch `base` reports in `/v1/status` (incarnation 1); returns the
/// status and the parsed JSON body (`{"replies":[...]}` on 200).
pub async fn peer_batch(
    client: &reqwest::Client,
    base: &str,
    from: u32,
    messages: Vec<serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let (cluster, epoch) = cluster_of(client, base).await?;
    let body = serde_json::json!({
        "version": 2, "from": from, "cluster": cluster, "epoch": epoch,
        "incarnation": 1, "messages": messages,
    });
    post_batch(client, base, &body).await
}

/// Sends one acceptor message as a batch of one ([`peer_batch`]). `body`
/// is a single message in the shape of protocol 1 (`from`, `key`, and
/// `ballot`, `value`, `writer` as the operation needs; `version` is
/// ignored); `op` is `prepare`, `accept`, `read` or `decide`. Returns the
/// status and, on 200, the acceptor's reply (`{"type":"promise",..}`), or
/// `{"error":..}` when the acceptor gave none; otherwise the error body.
pub async fn peer(
    client: &reqwest::Client,
    base: &str,
    op: &str,
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let from = body["from"].as_u64().ok_or("the message has no `from`")? as u32;
    let mut message = serde_json::json!({ "op": op, "key": body["key"] });
    for field in ["ballot", "value", "writer", "fence"] {
        if let Some(v) = body.get(field) {
            message[field] = v.clone();
        }
    }
    let (status, reply) = peer_batch(client, base, from, vec![message]).await?;
    if status != 200 {
        return Ok((status, reply));
    }
    let one = &reply["replies"][0];
    Ok((status, one.get("ok").unwrap_or(one).clone()))
}

/// Prints a value for humans: text if it is short UTF-8, else its length.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.len() <= 80 => format!("{s:?}"),
        _ => format!("<{} bytes>", bytes.len()),
    }
}

impl NodeProc {
    /// The exit status once the process has ended by itself (it is then
    /// reaped and the node counts as down); `None` while it runs or when
    /// it was never started.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }
}

/// Deletes everything in a node's data directory but its identity files
/// (`paxos-kv.*`): the database goes, the node's name for itself stays, as
/// when a disk is replaced under a kept configuration (issue 8).
pub fn delete_all_but_identity(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("paxos-kv.") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
}

/// Runs `paxos-kv members --url BASE [--cluster-token TOKEN] ARGS...`
/// (`token` false: without one); its exit code, stdout and stderr.
pub async fn members_cli(base: &str, token: bool, args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paxos-kv"));
    command
        .args(["members", "--url", base])
        .env_remove("PAXOS_KV_CLUSTER_TOKEN")
        .kill_on_drop(true);
    if token {
        command.args(["--cluster-token", TOKEN]);
    }
    let output = tokio::time::timeout(Duration::from_secs(180), command.args(args).output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `GET /v1/members` on `base` with the cluster token: the status and JSON.
pub async fn members(
    client: &reqwest::Client,
    base: &str,
) -> Result<(u16, serde_json::Value), String> {
    with_token(client.get(format!("{base}/v1/members"))).await
}

/// Sends `request` with the cluster token: the status and the body (JSON
/// when it parses, else the text).
async fn with_token(request: reqwest::RequestBuilder) -> Result<(u16, serde_json::Value), String> {
    let r = request
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, json))
}

/// `POST /v1/members {"id":ID,"url":URL}` (`Some(url)`) or
/// `DELETE /v1/members/ID` (`None`) on `base` with the cluster token: the
/// status and the body (JSON when it parses, else the text).
pub async fn change_members(
    client: &reqwest::Client,
    base: &str,
    id: u32,
    url: Option<&str>,
) -> Result<(u16, serde_json::Value), String> {
    let request = match url {
        Some(url) => client
            .post(format!("{base}/v1/members"))
            .json(&serde_json::json!({ "id": id, "url": url })),
        None => client.delete(format!("{base}/v1/members/{id}")),
    };
    with_token(request).await
}

/// A PUT's answer as the history checker sees it (`tests/support/history.rs`):
/// 201 created, 200 already chosen, 409 the other value; anything else may
/// or may not have taken effect.
pub fn put_ret(answer: &Answer) -> super::history::Ret<bytes::Bytes> {
    use super::history::Ret;
    match answer {
        Answer::Status(201, _) => Ret::Created,
        Answer::Status(200, _) => Ret::AlreadyChosen,
        Answer::Status(409, body) => Ret::Conflict(body.clone()),
        _ => Ret::Unknown,
    }
}

/// A GET's answer as the history checker sees it: 200 the value, 404 empty,
/// anything else unknown.
pub fn get_ret(answer: &Answer) -> super::history::Ret<bytes::Bytes> {
    use super::history::Ret;
    match answer {
        Answer::Status(200, body) => Ret::Found(body.clone()),
        Answer::Status(404, _) => Ret::NotFound,
        _ => Ret::Unknown,
    }
}
