//! The command line of docs/api.md, driving the real `paxos-kv`
//! binary as child processes: `serve` (flags, environment twins, refusals
//! before binding, signals), `dev`, `put`/`get` exit codes and `bench`.
//!
//! Every child is wrapped in [`Proc`], which SIGKILLs and reaps it when
//! dropped, so a failing assertion never leaves a server behind.

mod support;

use std::fs::File;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use support::net::{self, free_port, free_port_range, PATIENCE};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_paxos-kv");

/// Every environment variable that could change what the binary does;
/// removed from each child so the runner's environment cannot leak in.
const ENV_TWINS: [&str; 10] = [
    "PAXOS_KV_ID",
    "PAXOS_KV_LISTEN",
    "PAXOS_KV_DATA_DIR",
    "PAXOS_KV_PEERS",
    "PAXOS_KV_CLUSTER_TOKEN",
    "PAXOS_KV_MAX_VALUE_BYTES",
    "PAXOS_KV_REQUEST_TIMEOUT",
    "PAXOS_KV_PEER_TIMEOUT",
    "PAXOS_KV_FAST_PATH_WINDOW",
    "RUST_LOG",
];

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A child process of the binary, killed (SIGKILL) and reaped on drop.
/// Its stdout and stderr go to files, so a chatty child never blocks on a
/// full pipe and the test can read what it said at any time.
struct Proc {
    child: std::process::Child,
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Starts `paxos-kv args...` with only `envs` from the PAXOS_KV family.
    fn spawn(dir: &Path, what: &str, args: &[&str], envs: &[(&str, &str)], stdin: bool) -> Proc {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stdout = dir.join(format!("{n}-{}.stdout", sanitize(what)));
        let stderr = dir.join(format!("{n}-{}.stderr", sanitize(what)));
        let mut command = Command::new(BIN);
        command.args(args);
        for name in ENV_TWINS {
            command.env_remove(name);
        }
        command
            .envs(envs.iter().copied())
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start {BIN}: {e}"));
        Proc {
            child,
            what: what.to_string(),
            stdout,
            stderr,
            exited: None,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        std::fs::read(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Sends `sig` to the child (it is not reaped yet, so its pid is ours).
    fn signal(&self, sig: i32) {
        assert!(self.exited.is_none(), "{}: already exited", self.what);
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
        let rc = unsafe { kill(pid, sig) };
        assert_eq!(rc, 0, "{}: kill({pid}, {sig}) failed", self.what);
    }

    /// The exit status if the child has exited.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits (polling) for the child to exit; fails the test after PATIENCE.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.poll_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running after {PATIENCE:?}; stderr:\n{}",
                self.what,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sanitize(what: &str) -> String {
    what.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect()
}

/// What a finished command said.
struct Output {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `paxos-kv args...` to completion (bounded by PATIENCE), feeding
/// `stdin` when given.
async fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let what = args.join(" ");
    let mut proc = Proc::spawn(dir, &what, args, envs, stdin.is_some());
    if let Some(bytes) = stdin {
        let mut pipe = proc.child.stdin.take().expect("stdin pipe");
        pipe.write_all(bytes).expect("write stdin");
        // Dropping the pipe closes it: the child reads to EOF.
    }
    let status = proc.wait_exit().await;
    Output {
        code: status.code(),
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

fn http() -> reqwest::Client {
    net::client(PATIENCE)
}

/// Polls `GET /health` on every URL until all answer 200, failing early
/// (with its stderr) if `proc` exits. Returns false if it exited.
async fn wait_healthy(proc: &mut Proc, urls: &[String]) -> bool {
    let client = http();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if proc.poll_exit().is_some() {
            return false;
        }
        let mut all = true;
        for url in urls {
            let ok = client
                .get(format!("{url}/health"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            all &= ok;
        }
        if all {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not healthy after {PATIENCE:?}; stderr:\n{}",
            proc.what,
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A batch of one peer read of `key` from member 1 (protocol 2), under the
/// cluster id and epoch the node at `url` reports in `/v1/status` once it
/// serves (polled with a deadline).
async fn read_batch(client: &reqwest::Client, url: &str, key: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status: serde_json::Value = match client.get(format!("{url}/v1/status")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if status["state"] == "serving" {
            return serde_json::json!({
                "version": 2, "from": 1, "cluster": status["cluster"], "epoch": status["epoch"],
                "incarnation": 1, "messages": [{"op": "read", "key": key}],
            })
            .to_string();
        }
        assert!(Instant::now() < deadline, "{url} does not serve: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `paxos-kv dev` over `data` on a free port range; retries on a
/// port lost to a race. Returns the process and the node URLs.
async fn start_dev(dir: &Path, data: &Path) -> (Proc, Vec<String>) {
    for attempt in 0..5 {
        let base = free_port_range(attempt);
        let (b, d) = (base.to_string(), data.display().to_string());
        let mut proc = Proc::spawn(
            dir,
            "dev",
            &["dev", "--base-port", &b, "--data-dir", &d],
            &[],
            false,
        );
        let urls: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", base + i))
            .collect();
        if wait_healthy(&mut proc, &urls).await {
            return (proc, urls);
        }
        let stderr = proc.stderr();
        assert!(
            stderr.contains("cannot listen"),
            "dev exited at start: {stderr}"
        );
    }
    panic!("dev could not find free ports in 5 attempts");
}

/// Asserts a refusal: non-zero exit and one clear line naming the problem.
/// Lines other than the first may only be clap's usage and `--help` hint.
#[track_caller]
fn assert_refused(out: &Output, expect: &[&str], case: &str) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "{case}: exit {:?}, want non-zero; stderr {:?}",
        out.code,
        out.stderr
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let first = lines.first().copied().unwrap_or_default();
    for needle in expect {
        assert!(
            first.contains(needle),
            "{case}: first stderr line {first:?} does not mention {needle:?}; stderr:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("cannot listen"),
        "{case}: it tried to bind before refusing: {}",
        out.stderr
    );
    if first.starts_with("paxos-kv: ") {
        assert_eq!(lines.len(), 1, "{case}: not one line:\n{}", out.stderr);
    } else {
        // clap's own refusals: "error: ..." then, optionally, the usage and
        // "For more information, try '--help'."
        assert!(first.starts_with("error: "), "{case}: {first:?}");
        for extra in &lines[1..] {
            assert!(
                extra.starts_with("Usage: ")
                    || extra.starts_with("For more information")
                    || extra.starts_with("  "),
                "{case}: unexpected stderr line {extra:?}:\n{}",
                out.stderr
            );
        }
    }
    assert!(
        out.stdout.is_empty(),
        "{case}: stdout {:?}",
        out.stdout_text()
    );
}

/// docs/api.md "Command line": bad flags, an id missing from --peers, a bad URL,
/// a duplicate id, an unusable data dir, a bad duration: `serve` exits
/// non-zero with one clear line, BEFORE binding anything. The listen port is
/// held by this test, so a binary that bound first would fail with "cannot
/// listen" instead (which the last case shows is what binding would say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_misconfiguration_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let me = format!("1=http://127.0.0.1:{port}");
    let peers = format!("{me},2=http://127.0.0.1:9,3=http://127.0.0.1:10");
    let data = dir.path().join("data").display().to_string();
    let a_file = dir.path().join("regular-file");
    std::fs::write(&a_file, b"not a directory").expect("write");
    let under_file = a_file.join("data").display().to_string();

    let serve = |id: &str, peers: &str, data: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "serve",
            "--id",
            id,
            "--listen",
            &listen,
            "--data-dir",
            data,
            "--peers",
            peers,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let bad_url = format!("{me},2=http://[::1,3=http://127.0.0.1:10");
    let ftp = format!("{me},2=ftp://127.0.0.1:9");
    let duplicate = format!("{me},1=http://127.0.0.1:9");
    let zero = format!("{me},0=http://127.0.0.1:9");
    let not_pair = format!("{me},2");
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "id not in --peers",
            serve("4", &peers, &data, &[]),
            vec!["--id 4", "--peers"],
        ),
        (
            "bad URL",
            serve("1", &bad_url, &data, &[]),
            vec!["--peers", "URL"],
        ),
        (
            "not http",
            serve("1", &ftp, &data, &[]),
            vec!["--peers", "http"],
        ),
        (
            "duplicate id",
            serve("1", &duplicate, &data, &[]),
            vec!["--peers", "twice"],
        ),
        (
            "id 0",
            serve("1", &zero, &data, &[]),
            vec!["--peers", "positive"],
        ),
        (
            "entry without =",
            serve("1", &not_pair, &data, &[]),
            vec!["--peers", "ID=URL"],
        ),
        ("empty --peers", serve("1", "", &data, &[]), vec!["--peers"]),
        (
            "data dir under a regular file",
            serve("1", &peers, &under_file, &[]),
            vec!["--data-dir", "regular-file"],
        ),
        (
            "bad duration",
            serve("1", &peers, &data, &["--request-timeout", "soon"]),
            vec!["--request-timeout", "soon"],
        ),
        (
            "bad duration unit",
            serve("1", &peers, &data, &["--peer-timeout", "5h"]),
            vec!["--peer-timeout", "5h"],
        ),
        (
            "peer timeout as long as the request timeout",
            serve(
                "1",
                &peers,
                &data,
                &["--request-timeout", "2s", "--peer-timeout", "2s"],
            ),
            vec!["--peer-timeout", "--request-timeout"],
        ),
        (
            "fast-path window too short for the heartbeat",
            serve("1", &peers, &data, &["--fast-path-window", "20ms"]),
            vec!["--fast-path-window", "30ms"],
        ),
        (
            "zero request timeout",
            serve("1", &peers, &data, &["--request-timeout", "0s"]),
            vec!["--request-timeout", "zero"],
        ),
        (
            "token with a space",
            serve("1", &peers, &data, &["--cluster-token", "a b"]),
            vec!["--cluster-token"],
        ),
        (
            "bad --listen",
            vec![
                "serve",
                "--id",
                "1",
                "--listen",
                "nowhere",
                "--data-dir",
                &data,
                "--peers",
                &peers,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec!["--listen", "nowhere"],
        ),
        (
            "id not a number",
            serve("one", &peers, &data, &[]),
            vec!["--id", "one"],
        ),
        (
            "no --id",
            vec![
                "serve",
                "--listen",
                &listen,
                "--data-dir",
                &data,
                "--peers",
                &peers,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec!["required"],
        ),
    ];
    for (case, args, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(dir.path(), &args, &[], None).await;
        assert_refused(&out, expect, case);
    }
    // The id-not-a-member check happens before the data dir is touched.
    assert!(!Path::new(&data).exists(), "a refused serve created {data}");

    // The environment twin is checked the same way.
    let env_out = run(
        dir.path(),
        &["serve"],
        &[
            ("PAXOS_KV_ID", "7"),
            ("PAXOS_KV_LISTEN", &listen),
            ("PAXOS_KV_DATA_DIR", &data),
            ("PAXOS_KV_PEERS", &peers),
        ],
        None,
    )
    .await;
    assert_refused(&env_out, &["--id 7", "--peers"], "PAXOS_KV_ID not a member");

    // A combination set half by a flag, half by an environment twin.
    let combined = run(
        dir.path(),
        &serve("1", &peers, &data, &["--request-timeout", "3s"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("PAXOS_KV_PEER_TIMEOUT", "4s")],
        None,
    )
    .await;
    assert_refused(
        &combined,
        &["--peer-timeout (4s)", "--request-timeout (3s)"],
        "PAXOS_KV_PEER_TIMEOUT over --request-timeout",
    );

    // Control: a valid configuration on the held port fails only at bind,
    // so the refusals above really came before binding.
    let out = run(
        dir.path(),
        &serve("1", &peers, &data, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
        None,
    )
    .await;
    assert!(out.code.is_some_and(|c| c != 0), "bound a held port?");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("paxos-kv: cannot listen on"),
        "bind failure: {:?}",
        out.stderr
    );
    drop(held);
}

/// docs/design.md invariant 10 at start: a data directory records which
/// node of which cluster it belongs to, and `serve` refuses one of another
/// node with a non-zero exit and one clear line naming both ids, before it
/// binds (the port is held by this test). The owner still starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_data_dir_of_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node1").display().to_string();
    let client = http();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (listen, peers) = (format!("127.0.0.1:{port}"), format!("1={url}"));
    let owner = |what: &str| {
        Proc::spawn(
            dir.path(),
            what,
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                &listen,
                "--data-dir",
                &data,
                "--peers",
                &peers,
            ],
            &[],
            false,
        )
    };
    let mut node = owner("owner");
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "serve exited: {}",
        node.stderr()
    );
    read_batch(&client, &url, "k").await;
    node.signal(SIGTERM);
    assert_eq!(node.wait_exit().await.code(), Some(0), "{}", node.stderr());

    let held = StdListener::bind("127.0.0.1:0").expect("bind");
    let other = held.local_addr().expect("addr");
    let two_peers = format!("1={url},2=http://{other}");
    let out = run(
        dir.path(),
        &[
            "serve",
            "--id",
            "2",
            "--listen",
            &other.to_string(),
            "--data-dir",
            &data,
            "--peers",
            &two_peers,
        ],
        &[],
        None,
    )
    .await;
    assert_refused(
        &out,
        &["node 1", "node 2"],
        "a data dir of node 1 given to node 2",
    );
    drop(held);

    // Control: its owner still serves from it.
    let mut node = owner("owner again");
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "the owner no longer starts: {}",
        node.stderr()
    );
    read_batch(&client, &url, "k").await;
    node.signal(SIGTERM);
    assert_eq!(node.wait_exit().await.code(), Some(0), "{}", node.stderr());
}

/// docs/api.md: every `serve` flag has an environment twin. A node configured
/// only through PAXOS_KV_* serves, enforces the token on peer routes and
/// the value limit from the environment, does not warn about an open peer
/// port, and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_configured_by_environment_twins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let peers = format!("1={url}");
    let data = dir.path().join("node1").display().to_string();
    let mut node = Proc::spawn(
        dir.path(),
        "serve by env",
        &["serve"],
        &[
            ("PAXOS_KV_ID", "1"),
            ("PAXOS_KV_LISTEN", &listen),
            ("PAXOS_KV_DATA_DIR", &data),
            ("PAXOS_KV_PEERS", &peers),
            ("PAXOS_KV_CLUSTER_TOKEN", "env-secret"),
            ("PAXOS_KV_MAX_VALUE_BYTES", "16"),
            ("PAXOS_KV_REQUEST_TIMEOUT", "20s"),
            ("PAXOS_KV_PEER_TIMEOUT", "3s"),
        ],
        false,
    );
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "serve exited: {}",
        node.stderr()
    );
    let client = http();
    let status: serde_json::Value = client
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["id"], 1, "{status}");
    let put = |key: &str, value: &'static [u8]| {
        client.put(format!("{url}/v1/kv/{key}")).body(value).send()
    };
    assert_eq!(
        put("fits", b"0123456789abcdef")
            .await
            .expect("PUT")
            .status(),
        201
    );
    assert_eq!(
        put("over", b"0123456789abcdefX")
            .await
            .expect("PUT")
            .status(),
        413
    );
    let read = read_batch(&client, &url, "fits").await;
    let open = client
        .post(format!("{url}/v1/paxos/batch"))
        .body(read.clone())
        .send()
        .await
        .expect("peer read");
    assert_eq!(open.status(), 401, "PAXOS_KV_CLUSTER_TOKEN is enforced");
    let authorized = client
        .post(format!("{url}/v1/paxos/batch"))
        .bearer_auth("env-secret")
        .body(read)
        .send()
        .await
        .expect("peer read");
    assert_eq!(authorized.status(), 200, "the env token is the token");
    assert!(
        !node.stderr().contains("no --cluster-token"),
        "warned although a token is set: {}",
        node.stderr()
    );
    node.signal(SIGTERM);
    let status = node.wait_exit().await;
    assert_eq!(status.code(), Some(0), "SIGTERM: {}", node.stderr());
}

/// docs/api.md: `serve` without a token logs a warning at start that its peer
/// routes are open (and they are); SIGTERM stops it with exit 0 after
/// flushing, so a PUT answered before the signal is there after a restart
/// over the same data dir (guarantee 3 across a graceful stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_token_warns_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node1").display().to_string();
    let client = http();
    for life in 0..2 {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let (listen, peers) = (format!("127.0.0.1:{port}"), format!("1={url}"));
        let mut node = Proc::spawn(
            dir.path(),
            "serve without token",
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                &listen,
                "--data-dir",
                &data,
                "--peers",
                &peers,
            ],
            &[],
            false,
        );
        assert!(
            wait_healthy(&mut node, std::slice::from_ref(&url)).await,
            "serve exited: {}",
            node.stderr()
        );
        let stderr = node.stderr();
        let warning = stderr
            .lines()
            .find(|l| l.contains("no --cluster-token"))
            .unwrap_or_else(|| panic!("no warning about open peer routes in:\n{stderr}"));
        assert!(warning.contains("WARN"), "not a warning: {warning}");
        let read = read_batch(&client, &url, "k").await;
        let open = client
            .post(format!("{url}/v1/paxos/batch"))
            .body(read)
            .send()
            .await
            .expect("peer read");
        assert_eq!(
            open.status(),
            200,
            "without a token the peer routes are open"
        );
        let kv = format!("{url}/v1/kv/k");
        if life == 0 {
            let put = client.put(&kv).body("kept").send().await.expect("PUT");
            assert_eq!(put.status(), 201);
        } else {
            let got = client.get(&kv).send().await.expect("GET");
            assert_eq!(got.status(), 200);
            assert_eq!(got.bytes().await.expect("body"), "kept");
        }
        node.signal(SIGTERM);
        let status = node.wait_exit().await;
        assert_eq!(status.code(), Some(0), "SIGTERM: {}", node.stderr());
    }
}

/// Reads from `stream` into `buf` until it holds a whole response head, and
/// returns that head (removing it from `buf`).
async fn next_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> String {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            return String::from_utf8_lossy(&head).into_owned();
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("response within PATIENCE")
            .expect("read");
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// docs/api.md "SIGTERM/SIGINT: stop accepting, finish in-flight requests, flush
/// sled, exit 0". A PUT whose body is half sent when SIGTERM arrives (the
/// node has answered `100 Continue`, so its handler is running) still
/// completes with 201 after the node has stopped accepting connections; the
/// node then exits 0, and the value is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node1").display().to_string();
    let start = |port: u16| {
        let (listen, peers) = (
            format!("127.0.0.1:{port}"),
            format!("1=http://127.0.0.1:{port}"),
        );
        let args = [
            "serve",
            "--id",
            "1",
            "--listen",
            &listen,
            "--data-dir",
            &data,
            "--peers",
            &peers,
            "--cluster-token",
            "t",
        ];
        Proc::spawn(dir.path(), "serve", &args, &[], false)
    };
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut node = start(port);
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "serve exited: {}",
        node.stderr()
    );
    let addr = format!("127.0.0.1:{port}");
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT /v1/kv/in-flight HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let interim = next_head(&mut stream, &mut buf).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    stream.write_all(b"01234").await.expect("first half");

    node.signal(SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.poll_exit().is_none(),
        "exited with a request in flight"
    );
    stream.write_all(b"56789").await.expect("second half");
    let answer = next_head(&mut stream, &mut buf).await;
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "in-flight PUT: {answer:?}"
    );
    let status = node.wait_exit().await;
    assert_eq!(status.code(), Some(0), "SIGTERM: {}", node.stderr());

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut node = start(port);
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "restart exited: {}",
        node.stderr()
    );
    let got = http()
        .get(format!("{url}/v1/kv/in-flight"))
        .send()
        .await
        .expect("GET");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("body"), "0123456789");
    node.signal(SIGTERM);
    assert_eq!(node.wait_exit().await.code(), Some(0), "{}", node.stderr());
}

/// docs/api.md `dev`: one command brings up a healthy 3-node cluster on
/// base-port..base-port+2 with a data dir per node, prints the URLs, serves
/// PUT/GET across nodes, stops with exit 0 on SIGINT, and the data stays
/// for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_comes_up_serves_and_stops_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let client = http();
    let (mut dev, urls) = start_dev(dir.path(), &data).await;
    let printed = String::from_utf8_lossy(&dev.stdout()).into_owned();
    for url in &urls {
        assert!(
            printed.contains(url.as_str()),
            "{url} not printed:\n{printed}"
        );
    }
    let put = client
        .put(format!("{}/v1/kv/greeting", urls[0]))
        .body("hello")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 201);
    let got = client
        .get(format!("{}/v1/kv/greeting", urls[2]))
        .send()
        .await
        .expect("GET");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("body"), "hello");
    let status: serde_json::Value = client
        .get(format!("{}/v1/status", urls[1]))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["id"], 2, "{status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    dev.signal(SIGINT);
    let code = dev.wait_exit().await.code();
    assert_eq!(code, Some(0), "SIGINT: {}", dev.stderr());
    for n in 1..=3 {
        assert!(data.join(format!("node{n}")).is_dir(), "node{n} data dir");
    }

    let (mut dev, urls) = start_dev(dir.path(), &data).await;
    let got = client
        .get(format!("{}/v1/kv/greeting", urls[1]))
        .send()
        .await
        .expect("GET");
    assert_eq!(got.status(), 200, "the data stays for the next run");
    assert_eq!(got.bytes().await.expect("body"), "hello");
    dev.signal(SIGTERM);
    assert_eq!(dev.wait_exit().await.code(), Some(0), "{}", dev.stderr());
}

/// docs/api.md `put`/`get`: exit 0 on 201 and 200, 1 on 409 and 404 with the
/// reason on stderr, 2 when the node cannot be reached or the key is bad;
/// `put KEY -` reads the value from stdin and `get` prints the exact bytes
/// (binary, empty, no added newline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_exit_codes_and_exact_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, urls) = start_dev(dir.path(), &dir.path().join("data")).await;
    let d = dir.path();
    let (u1, u2, u3) = (urls[0].as_str(), urls[1].as_str(), urls[2].as_str());

    let out = run(d, &["put", "--url", u1, "app/name", "hello"], &[], None).await;
    assert_eq!(out.code, Some(0), "201: {}", out.stderr);
    let out = run(d, &["put", "--url", u2, "app/name", "hello"], &[], None).await;
    assert_eq!(out.code, Some(0), "200: {}", out.stderr);
    let out = run(d, &["put", "--url", u3, "app/name", "world"], &[], None).await;
    assert_eq!(out.code, Some(1), "409: {}", out.stderr);
    assert!(
        out.stderr.contains("conflict") && out.stderr.contains("hello"),
        "409 says why, with the chosen value: {:?}",
        out.stderr
    );
    let out = run(d, &["get", "--url", u3, "app/name"], &[], None).await;
    assert_eq!(out.code, Some(0), "GET 200: {}", out.stderr);
    assert_eq!(out.stdout, b"hello", "exact bytes, no newline");
    let out = run(d, &["get", "--url", u1, "missing key"], &[], None).await;
    assert_eq!(out.code, Some(1), "404: {}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing on stdout for 404");
    assert!(
        out.stderr.contains("not found"),
        "404 says why: {:?}",
        out.stderr
    );

    let all: Vec<u8> = (0..=255u8).rev().collect();
    let out = run(d, &["put", "--url", u2, "bin/ary", "-"], &[], Some(&all)).await;
    assert_eq!(out.code, Some(0), "put from stdin: {}", out.stderr);
    let out = run(d, &["get", "--url", u1, "bin/ary"], &[], None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, all, "get prints the exact bytes");
    let out = run(
        d,
        &["put", "--url", u3, "nothing here", "-"],
        &[],
        Some(b""),
    )
    .await;
    assert_eq!(out.code, Some(0), "empty value from stdin: {}", out.stderr);
    let out = run(d, &["get", "--url", u2, "nothing here"], &[], None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "the empty value prints nothing");
    let out = run(d, &["put", "--url", u1, "nothing here", "x"], &[], None).await;
    assert_eq!(out.code, Some(1), "409 on the empty value: {}", out.stderr);

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = run(d, &["put", "--url", &closed, "k", "v"], &[], None).await;
    assert_eq!(out.code, Some(2), "unreachable put: {}", out.stderr);
    assert!(!out.stderr.trim().is_empty(), "unreachable put says why");
    let out = run(d, &["get", "--url", &closed, "k"], &[], None).await;
    assert_eq!(out.code, Some(2), "unreachable get: {}", out.stderr);
    assert!(!out.stderr.trim().is_empty(), "unreachable get says why");
    let long = "k".repeat(1025);
    let out = run(d, &["put", "--url", u1, &long, "v"], &[], None).await;
    assert_eq!(out.code, Some(2), "bad key: {}", out.stderr);
    let out = run(d, &["get", "--url", u1, "bad\u{7}key"], &[], None).await;
    assert_eq!(out.code, Some(2), "bad key: {}", out.stderr);
}

/// docs/api.md `put`/`get`: any failure other than 404/409 exits 2 with the
/// reason, here a 503 from node 1 of three: first while its peers never
/// started (a new cluster forms only once every member answers, so it does
/// not serve yet and says so), then once the cluster formed and both peers
/// stopped (no majority answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_exit_2_on_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = [free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let peers = format!("1={},2={},3={}", urls[0], urls[1], urls[2]);
    let serve = |id: usize| {
        let listen = format!("127.0.0.1:{}", ports[id - 1]);
        let data = dir.path().join(format!("node{id}")).display().to_string();
        Proc::spawn(
            dir.path(),
            &format!("serve {id}"),
            &[
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                &listen,
                "--data-dir",
                &data,
                "--peers",
                &peers,
                "--cluster-token",
                "t",
                "--request-timeout",
                "1s",
            ],
            &[],
            false,
        )
    };
    let url = urls[0].clone();
    let exits_2_on_503 = |case: &'static str, why: &'static str| {
        let (d, url) = (dir.path().to_owned(), url.clone());
        async move {
            let out = run(&d, &["put", "--url", &url, "k", "v"], &[], None).await;
            assert_eq!(out.code, Some(2), "{case}: put on 503: {}", out.stderr);
            assert!(
                out.stderr.contains("503"),
                "{case}: says 503: {:?}",
                out.stderr
            );
            assert!(
                out.stderr.contains(why),
                "{case}: says why: {:?}",
                out.stderr
            );
            let out = run(&d, &["get", "--url", &url, "k"], &[], None).await;
            assert_eq!(out.code, Some(2), "{case}: get on 503: {}", out.stderr);
            assert!(
                out.stderr.contains("503"),
                "{case}: says 503: {:?}",
                out.stderr
            );
            assert!(out.stdout.is_empty());
        }
    };
    let mut node = serve(1);
    assert!(
        wait_healthy(&mut node, std::slice::from_ref(&url)).await,
        "serve exited: {}",
        node.stderr()
    );
    exits_2_on_503("peers never started", "not serving").await;

    let mut others = vec![serve(2), serve(3)];
    let client = http();
    for u in &urls {
        let deadline = Instant::now() + PATIENCE;
        while !client
            .get(format!("{u}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "{u} does not serve");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for other in &mut others {
        other.signal(SIGTERM);
        assert_eq!(
            other.wait_exit().await.code(),
            Some(0),
            "{}",
            other.stderr()
        );
    }
    exits_2_on_503("both peers stopped", "majority").await;
    node.signal(SIGTERM);
    assert_eq!(node.wait_exit().await.code(), Some(0), "{}", node.stderr());
}

/// The number after `label` in `line` (e.g. "p50 1.23 ms").
fn number_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// docs/api.md `bench`: against a running cluster, prints throughput, latency
/// percentiles (p50, p90, p99, max) and the count of each status, in both
/// modes. Only the report's shape and consistency are checked, never speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_throughput_percentiles_and_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, urls) = start_dev(dir.path(), &dir.path().join("data")).await;
    let url_list = urls.join(",");
    for (mode, ok_status) in [("put", "201"), ("get", "200")] {
        let out = run(
            dir.path(),
            &[
                "bench",
                "--url",
                &url_list,
                "--mode",
                mode,
                "--duration",
                "1s",
                "--concurrency",
                "4",
                "--keys",
                "20",
                "--preload",
                "30",
            ],
            &[],
            None,
        )
        .await;
        let text = out.stdout_text();
        assert_eq!(out.code, Some(0), "bench {mode}: {}\n{text}", out.stderr);
        // --preload writes its keys before the clock starts and says so.
        assert!(
            text.contains("30 keys preloaded") && out.stderr.contains("preloaded 30 keys"),
            "bench {mode}: no preload reported: {}\n{text}",
            out.stderr
        );
        let line = |word: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(word))
                .unwrap_or_else(|| panic!("bench {mode}: no {word:?} line in:\n{text}"))
        };
        let requests = line("requests");
        assert!(requests.contains("req/s"), "throughput: {requests}");
        let count = number_after(requests, "requests").expect("request count") as u64;
        assert!(count > 0, "bench {mode} ran no request: {text}");
        let latency = line("latency");
        for p in ["p50", "p90", "p99", "max"] {
            let v = number_after(latency, p)
                .unwrap_or_else(|| panic!("bench {mode}: no {p} in {latency:?}"));
            assert!(v >= 0.0, "{p} = {v}");
        }
        let statuses = line("statuses");
        let counts: Vec<(String, u64)> = statuses
            .trim_start()
            .trim_start_matches("statuses")
            .split(',')
            .filter_map(|s| s.rsplit_once(':'))
            .map(|(s, n)| (s.trim().to_string(), n.trim().parse().expect("count")))
            .collect();
        assert!(
            counts.iter().any(|(s, n)| s == ok_status && *n > 0),
            "bench {mode}: no {ok_status} counted: {statuses}"
        );
        let sum: u64 = counts.iter().map(|(_, n)| n).sum();
        assert_eq!(sum, count, "status counts add up to the requests");
    }
    // The preloaded keys are really there: two runs of 30 each (every page
    // of the listing, at most 100 pages).
    let client = net::client(PATIENCE);
    let (mut preloaded, mut after) = (0, String::new());
    for _page in 0..100 {
        let listed: serde_json::Value = client
            .get(format!(
                "{}/v1/kv/bench/?keys&limit=10000&after={}",
                urls[0],
                net::key_path(&after)
            ))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("list JSON");
        preloaded += listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|k| k.as_str().is_some_and(|k| k.contains("/preload/")))
            .count();
        match listed["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(preloaded, 60, "preloaded keys listed");
}
