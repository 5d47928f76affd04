//! The three-node cluster of `docker-compose.yml` on the real Docker engine (issue 3).
//!
//! Builds the image from the project's own `Dockerfile` and starts the cluster exactly as
//! the README says (`docker compose up -d --build --wait`), under a unique compose project
//! name and free host ports, then checks through real containers what docs/api.md promises:
//!
//! * guarantee 1, agreement: a PUT of another value to a chosen key is a 409, on any node;
//! * guarantee 5, availability: with one node killed, or cut off by a network partition,
//!   the two others still answer every PUT and GET;
//! * a minority never answers wrongly: the cut-off node answers 503 for a PUT and for a
//!   GET of a key it does not know (never a value, never a 404), and "503 means retry the
//!   same value" holds once the partition heals;
//! * guarantee 3, durability: a restarted node serves what was written while it was down,
//!   and `docker compose down` + `up` (new containers, same named volumes) loses nothing;
//! * a lost disk loses nothing (issue 8): one service's volume removed and the service
//!   recreated with `up` rebuilds from the two others by itself (its `/ready` and the
//!   image's health check, which asks `/ready`, turn healthy once it has; `/v1/status`
//!   shows it serving as incarnation 2), and every value stays, on every node.
//!
//! Everything is torn down with `docker compose down -v`, whatever happens. Each step is
//! printed as it starts, bounded in time, and a failure names its step.
//!
//! When the Docker engine (or `docker compose` v2) is not reachable the test prints a loud
//! SKIP line and passes, unless `PAXOS_KV_REQUIRE_DOCKER=1` (CI sets it): then it fails.
//! The base images must exist locally or be pullable: where no registry can be reached,
//! run `bash scripts/docker-offline-images.sh` first.

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::net;

/// How long one `docker compose up --build` may take: it compiles the whole project in
/// release mode on two cores when the dependency layer is not cached yet.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// How long any other docker command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a node may take to serve again, or a condition to become true.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Per HTTP request; a node answers 503 after its request timeout (5 s by default).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

type Res<T> = Result<T, String>;
type Step = fn(&mut Cluster) -> Res<()>;

#[test]
fn three_node_compose_cluster() {
    if let Some(why) = docker_unavailable() {
        if std::env::var("PAXOS_KV_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("PAXOS_KV_REQUIRE_DOCKER=1 but Docker is not usable: {why}");
        }
        say(&format!(
            "\n!!!!!!!! SKIP compose test: Docker is not usable here ({why}).\n\
             !!!!!!!! Set PAXOS_KV_REQUIRE_DOCKER=1 to make this a failure.\n"
        ));
        return;
    }
    let started = Instant::now();
    let mut cluster = Cluster::new();
    let steps: [(&str, Step); 8] = [
        ("1 up --build --wait", step_up_build),
        ("2 put, get, conflict", step_put_get_conflict),
        ("3 kill node2: majority still serves", step_kill_node2),
        ("4 start node2: it serves what it missed", step_start_node2),
        ("5 partition node3 from the others", step_partition_node3),
        ("6 down, up: volumes keep everything", step_down_up),
        (
            "7 node3's volume removed, up: it rebuilds",
            step_lose_volume_node3,
        ),
        (
            "8 replace node3 by node4 online (the \"replace\" profile)",
            step_replace_node3,
        ),
    ];
    for (name, run) in steps {
        say(&format!(
            "== compose step {name} (project {}, {:.0?} elapsed)",
            cluster.project,
            started.elapsed()
        ));
        let t = Instant::now();
        if let Err(e) = run(&mut cluster) {
            cluster.dump_logs();
            panic!("compose step '{name}' failed: {e}");
        }
        say(&format!("   ok in {:.1?}", t.elapsed()));
    }
    say(&format!(
        "== compose step 9 down -v (teardown); all steps passed in {:.0?}",
        started.elapsed()
    ));
    // Step 9 is Cluster's Drop, which also runs when a step above panicked.
}

// ---------------------------------------------------------------------------------------
// The steps.

fn step_up_build(c: &mut Cluster) -> Res<()> {
    c.compose_streamed(
        &["--progress", "plain", "up", "-d", "--build", "--wait"],
        BUILD_TIMEOUT,
    )?;
    for node in 1..=3 {
        c.expect_status(node, "GET", "/health", None, 200)?;
        // `--wait` waited for the image's health check, which asks /ready.
        c.expect_status(node, "GET", "/ready", None, 200)?;
    }
    Ok(())
}

fn step_put_get_conflict(c: &mut Cluster) -> Res<()> {
    c.put_expect(1, "k1", 201)?;
    c.get_expect_value(3, "k1")?;
    // Another value for a chosen key: 409 with the chosen value as the body.
    let r = c.http(2, "PUT", &kv_path("k1"), Some(b"some other value"))?;
    check_status(&r, 409, "PUT k1 (other value) via node2")?;
    if r.body != c.value("k1") {
        return Err(format!(
            "409 body is {:?}, not the chosen value",
            lossy(&r.body)
        ));
    }
    // The same value again is an idempotent retry.
    c.put_expect(3, "k1", 200)
}

fn step_kill_node2(c: &mut Cluster) -> Res<()> {
    c.compose(&["kill", "node2"])?;
    c.expect_running("node2", false)?;
    c.put_expect(1, "k2", 201)?;
    c.get_expect_value(3, "k2")?;
    c.put_expect(3, "k3", 201)?;
    c.get_expect_value(1, "k3")?;
    c.get_expect_value(1, "k1")?;
    // The writes above happened without node2: it is still down (a kill is a manual
    // stop for `restart: unless-stopped`).
    c.expect_running("node2", false)
}

fn step_start_node2(c: &mut Cluster) -> Res<()> {
    c.compose(&["start", "node2"])?;
    c.wait_serving(2)?;
    for key in ["k2", "k3", "k1"] {
        c.get_expect_value(2, key)?;
    }
    Ok(())
}

fn step_partition_node3(c: &mut Cluster) -> Res<()> {
    let network = format!("{}_default", c.project);
    let node3 = c.container_id("node3")?;
    c.docker(&["network", "disconnect", &network, &node3])?;
    // The majority side keeps serving.
    c.put_expect(1, "k4", 201)?;
    c.get_expect_value(2, "k4")?;
    c.get_expect_value(1, "k1")?;
    // The minority side: 503, never a value, never a 404. Published ports need the
    // network that was just cut, so node3 is asked from inside its own container.
    let r = c.exec_http(&node3, "PUT", &kv_path("k5"), Some(&c.value("k5")))?;
    check_status(&r, 503, "PUT k5 via cut-off node3")?;
    let r = c.exec_http(&node3, "GET", &kv_path("never-written"), None)?;
    check_status(&r, 503, "GET never-written via cut-off node3")?;
    let r = c.exec_http(&node3, "GET", &kv_path("k4"), None)?;
    check_status(&r, 503, "GET k4 (chosen while cut off) via cut-off node3")?;
    // Heal: reconnect under its service name, as compose attached it.
    c.docker(&["network", "connect", "--alias", "node3", &network, &node3])?;
    c.wait_serving(3)?;
    // 503 meant "outcome unknown, retry the same value": the retry must not conflict.
    let r = c.http(1, "PUT", &kv_path("k5"), Some(&c.value("k5")))?;
    if r.status != 200 && r.status != 201 {
        return Err(format!(
            "retrying the PUT of k5 via node1 after the partition: {} {}",
            r.status,
            lossy(&r.body)
        ));
    }
    c.all_agree(&["k1", "k2", "k3", "k4", "k5"])
}

fn step_down_up(c: &mut Cluster) -> Res<()> {
    c.compose(&["down"])?;
    c.compose_streamed(&["up", "-d", "--wait"], COMMAND_TIMEOUT)?;
    c.all_agree(&["k1", "k2", "k3", "k4", "k5"])?;
    // Still write-once after the restart.
    let r = c.http(3, "PUT", &kv_path("k2"), Some(b"a later, different value"))?;
    check_status(&r, 409, "PUT k2 (other value) via node3 after down/up")
}

fn step_lose_volume_node3(c: &mut Cluster) -> Res<()> {
    let before = c.status(3)?;
    if before["state"] != "serving" || before["incarnation"] != 1 {
        return Err(format!(
            "node3 before losing its volume should serve as founder, incarnation 1: {before}"
        ));
    }
    // The disk is lost: container and volume gone, as `docker compose down -v` would do
    // to one service, or a volume recreated by mistake.
    c.compose(&["rm", "--stop", "--force", "node3"])?;
    let volume = format!("{}_node3-data", c.project);
    c.docker(&["volume", "rm", &volume])?;
    // While node3 is gone, the two others keep serving.
    c.put_expect(1, "k6", 201)?;
    // The same command as always: `up` creates a fresh volume and container. `--wait`
    // returns once the health check (/ready) passes, i.e. once node3 rebuilt.
    c.compose_streamed(&["up", "-d", "--wait", "node3"], COMMAND_TIMEOUT)?;
    c.expect_status(3, "GET", "/ready", None, 200)?;
    let after = c.status(3)?;
    // A new incarnation: 2, or more if a rebuild attempt had to start over.
    let rebuilt = after["incarnation"].as_u64().is_some_and(|i| i >= 2);
    if after["state"] != "serving" || !rebuilt {
        return Err(format!(
            "node3 after its volume was recreated should serve as incarnation 2: {after}"
        ));
    }
    c.all_agree(&["k1", "k2", "k3", "k4", "k5", "k6"])?;
    // Still write-once, through the rebuilt node.
    let r = c.http(3, "PUT", &kv_path("k6"), Some(b"a later, different value"))?;
    check_status(&r, 409, "PUT k6 (other value) via the rebuilt node3")?;
    c.put_expect(3, "k7", 201)?;
    c.all_agree(&["k7"])
}

/// The recipe of docker-compose.yml's "replace" profile, command for command
/// (README "Changing the members"): add node4, start it, remove node3, stop it.
fn step_replace_node3(c: &mut Cluster) -> Res<()> {
    c.compose(&[
        "exec",
        "-T",
        "node1",
        "paxos-kv",
        "members",
        "add",
        "4",
        "http://node4:7001",
    ])?;
    c.compose_streamed(&["up", "-d", "--wait", "node4"], COMMAND_TIMEOUT)?;
    c.expect_status(4, "GET", "/ready", None, 200)?;
    for key in ["k1", "k2", "k3", "k4", "k5", "k6", "k7"] {
        c.get_expect_value(4, key)?;
    }
    c.compose(&["exec", "-T", "node1", "paxos-kv", "members", "remove", "3"])?;
    c.compose(&["stop", "node3"])?;
    // `members list` as the recipe's reader would run it: the epoch line, then
    // `ID<TAB>URL<TAB>STATE` per member.
    let listed = c.compose(&["exec", "-T", "node4", "paxos-kv", "members", "list"])?;
    let ids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    let first = listed.lines().next().unwrap_or_default();
    if ids != ["1", "2", "4"] || !first.starts_with("epoch ") || first.contains("progress") {
        return Err(format!(
            "after the replacement the members should be 1, 2, 4 with no change in progress:\n{listed}"
        ));
    }
    // The new majority serves writes, and node4 reads what node1 wrote.
    c.put_expect(1, "k8", 201)?;
    c.get_expect_value(4, "k8")?;
    c.put_expect(4, "k9", 201)?;
    c.get_expect_value(2, "k9")
}

// ---------------------------------------------------------------------------------------
// The cluster under test.

struct Cluster {
    project: String,
    dir: PathBuf,
    /// node1..node4's published ports (node4: the "replace" profile).
    ports: [u16; 4],
    token: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Cluster {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("{}{:08x}", std::process::id(), nanos);
        Cluster {
            project: format!("paxoskvtest{id}"),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            ports: [
                net::free_port(),
                net::free_port(),
                net::free_port(),
                net::free_port(),
            ],
            token: format!("compose-test-token-{id}"),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            // No pooled connections: containers and their port proxies are killed and
            // recreated under the same ports, and a stale pooled connection would fail.
            client: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
        }
    }

    /// Distinct, recognizable bytes per key and run (not valid UTF-8 on purpose).
    fn value(&self, key: &str) -> Vec<u8> {
        let mut v = format!("value of {key} in {}:", self.project).into_bytes();
        v.extend_from_slice(&[0, 0xff, 0xfe, b'\n']);
        v
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("PAXOS_KV_HOST_IP", "127.0.0.1")
            .env("PAXOS_KV_PORT1", self.ports[0].to_string())
            .env("PAXOS_KV_PORT2", self.ports[1].to_string())
            .env("PAXOS_KV_PORT3", self.ports[2].to_string())
            .env("PAXOS_KV_PORT4", self.ports[3].to_string())
            .env("PAXOS_KV_CLUSTER_TOKEN", &self.token)
            // Its own image tag: a concurrent run from another checkout cannot swap the
            // image under this one. The build cache is shared all the same.
            .env("PAXOS_KV_IMAGE", format!("paxos-kv:{}", self.project))
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE");
        cmd
    }

    fn compose_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["compose", "-p", &self.project, "-f", "docker-compose.yml"];
        all.extend_from_slice(args);
        all
    }

    /// `docker compose ARGS`, output captured (shown only on failure).
    fn compose(&self, args: &[&str]) -> Res<String> {
        self.docker(&self.compose_args(args))
    }

    /// `docker compose ARGS`, output streamed to this test's stderr (build logs).
    fn compose_streamed(&self, args: &[&str], timeout: Duration) -> Res<()> {
        let all = self.compose_args(args);
        let mut cmd = self.command("docker", &all);
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("docker {}: {e}", all.join(" ")))?;
        let (ok, _) = wait_bounded(child, timeout, &all)?;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "docker {} failed (see output above)",
                all.join(" ")
            ))
        }
    }

    /// `docker ARGS`, output captured; an error carries it.
    fn docker(&self, args: &[&str]) -> Res<String> {
        let mut cmd = self.command("docker", args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
        let (ok, out) = wait_bounded(child, COMMAND_TIMEOUT, args)?;
        if ok {
            Ok(out)
        } else {
            Err(format!("docker {} failed:\n{out}", args.join(" ")))
        }
    }

    fn container_id(&self, service: &str) -> Res<String> {
        let id = self.compose(&["ps", "-q", service])?.trim().to_string();
        if id.is_empty() {
            return Err(format!("no container for {service}"));
        }
        Ok(id)
    }

    fn expect_running(&self, service: &str, running: bool) -> Res<()> {
        let id = self
            .compose(&["ps", "-a", "-q", service])?
            .trim()
            .to_string();
        let state = self.docker(&["inspect", "-f", "{{.State.Running}}", &id])?;
        if state.trim() != running.to_string() {
            return Err(format!(
                "{service}: running is {}, expected {running}",
                state.trim()
            ));
        }
        Ok(())
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[node - 1])
    }

    /// One request to a node through its published port.
    fn http(&self, node: usize, method: &str, path: &str, body: Option<&[u8]>) -> Res<Reply> {
        let url = self.url(node, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self.client.request(method.clone(), &url);
        let req = match body {
            Some(b) => req.body(b.to_vec()),
            None => req,
        };
        self.rt.block_on(async {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
            Ok(Reply {
                status,
                body: body.to_vec(),
            })
        })
    }

    /// One request to a node from inside its own container (its loopback), for when its
    /// published port is unreachable. bash's /dev/tcp: the image has no curl.
    fn exec_http(
        &self,
        container: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Res<Reply> {
        let body = body.unwrap_or_default();
        let script = r#"exec 3<>/dev/tcp/127.0.0.1/7001 || exit 9
printf '%s %s HTTP/1.1\r\nHost: node\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$M" "$P" "$(wc -c < /tmp/body)" >&3
cat /tmp/body >&3
timeout 30 cat <&3"#;
        let full = format!("cat > /tmp/body; {script}");
        let mut cmd = self.command(
            "docker",
            &[
                "exec",
                "-i",
                "-e",
                &format!("M={method}"),
                "-e",
                &format!("P={path}"),
                container,
                "bash",
                "-c",
                &full,
            ],
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("docker exec: {e}"))?;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(body)
            .map_err(|e| format!("docker exec stdin: {e}"))?;
        drop(stdin);
        let (ok, out) = wait_bounded(child, COMMAND_TIMEOUT, &["exec", container, method, path])?;
        if !ok {
            return Err(format!("HTTP {method} {path} inside {container}:\n{out}"));
        }
        parse_http_response(out.as_bytes())
            .ok_or_else(|| format!("HTTP {method} {path} inside {container}: no response:\n{out}"))
    }

    fn expect_status(
        &self,
        node: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Res<Reply> {
        let r = self.http(node, method, path, body)?;
        check_status(&r, want, &format!("{method} {path} via node{node}"))?;
        Ok(r)
    }

    fn put_expect(&self, node: usize, key: &str, want: u16) -> Res<()> {
        self.expect_status(node, "PUT", &kv_path(key), Some(&self.value(key)), want)
            .map(drop)
    }

    fn get_expect_value(&self, node: usize, key: &str) -> Res<()> {
        let r = self.expect_status(node, "GET", &kv_path(key), None, 200)?;
        if r.body != self.value(key) {
            return Err(format!(
                "GET {key} via node{node}: wrong value {:?}",
                lossy(&r.body)
            ));
        }
        Ok(())
    }

    /// `GET /v1/status` of a node, parsed.
    fn status(&self, node: usize) -> Res<serde_json::Value> {
        let r = self.expect_status(node, "GET", "/v1/status", None, 200)?;
        serde_json::from_slice(&r.body).map_err(|e| format!("/v1/status of node{node}: {e}"))
    }

    /// Waits until a node answers GET /ready (it serves) through its published port.
    fn wait_serving(&self, node: usize) -> Res<()> {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let last = match self.http(node, "GET", "/ready", None) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("status {}", r.status),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node{node} not serving after {CONVERGE_TIMEOUT:?}: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every node returns the same, expected value for every key. A node that just got
    /// its network back may answer 503 until its peers' connections are re-established,
    /// so a 503 is retried until a deadline; any other answer fails at once.
    fn all_agree(&self, keys: &[&str]) -> Res<()> {
        for node in 1..=3 {
            for key in keys {
                let deadline = Instant::now() + CONVERGE_TIMEOUT;
                loop {
                    let r = self.http(node, "GET", &kv_path(key), None)?;
                    if r.status == 503 && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(250));
                        continue;
                    }
                    check_status(&r, 200, &format!("GET {key} via node{node}"))?;
                    if r.body != self.value(key) {
                        return Err(format!(
                            "GET {key} via node{node}: wrong value {:?}",
                            lossy(&r.body)
                        ));
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    fn dump_logs(&self) {
        if let Ok(out) = self.compose(&["--profile", "replace", "ps", "-a"]) {
            say(&format!("---- docker compose ps -a\n{out}"));
        }
        let logs = ["--profile", "replace", "logs", "--no-color", "--tail", "60"];
        if let Ok(out) = self.compose(&logs) {
            say(&format!(
                "---- docker compose logs (last 60 lines per node)\n{out}"
            ));
        }
    }
}

impl Drop for Cluster {
    /// Step 9: the teardown, also after a failed step. `down -v` removes the containers,
    /// the network and the named volumes of this project; `--rmi all` its image tag (the
    /// build cache stays).
    fn drop(&mut self) {
        let down = [
            "--profile",
            "replace",
            "down",
            "-v",
            "--rmi",
            "all",
            "--remove-orphans",
            "-t",
            "10",
        ];
        match self.compose(&down) {
            Ok(_) => say(&format!("   removed project {} and its volumes", self.project)),
            Err(e) => say(&format!(
                "!!!! teardown of {} failed: {e}\n!!!! clean up by hand: docker compose -p {} down -v",
                self.project, self.project
            )),
        }
        // Compose exports the image once per service: the copies that lost the tag are
        // left dangling. Remove dangling paxos-kv images (never one a container uses).
        let prune = [
            "image",
            "prune",
            "-f",
            "--filter",
            "label=org.opencontainers.image.title=paxos-kv",
        ];
        let _ = self.docker(&prune);
    }
}

// ---------------------------------------------------------------------------------------
// Plumbing.

/// Why docker compose cannot be used here, or None when it can.
fn docker_unavailable() -> Option<String> {
    for args in [&["info"][..], &["compose", "version"][..]] {
        let child = Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot run docker: {e}")),
        };
        match wait_bounded(child, Duration::from_secs(60), args) {
            Ok((true, _)) => {}
            Ok((false, out)) => {
                let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let hint = if args[0] == "compose" {
                    " (Compose v2 is needed: bash scripts/docker-compose-v2.sh)"
                } else {
                    ""
                };
                return Some(format!("`docker {}` failed: {line}{hint}", args.join(" ")));
            }
            Err(e) => return Some(e),
        }
    }
    None
}

/// Waits for a child with a deadline (killing it past the deadline) and returns whether
/// it succeeded and its captured stdout+stderr (empty when not piped).
fn wait_bounded(mut child: Child, timeout: Duration, what: &[&str]) -> Res<(bool, String)> {
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`docker {}` did not finish within {timeout:?}",
                    what.join(" ")
                ));
            }
            Err(e) => return Err(format!("waiting for `docker {}`: {e}", what.join(" "))),
        }
    };
    let mut out = Vec::new();
    for r in readers {
        out.extend(r.join().unwrap_or_default());
    }
    Ok((status.success(), String::from_utf8_lossy(&out).into_owned()))
}

fn parse_http_response(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Reply { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn check_status(r: &Reply, want: u16, what: &str) -> Res<()> {
    if r.status == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: got {} {:?}, expected {want}",
            r.status,
            lossy(&r.body)
        ))
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/compose/{key}")
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Prints at once, past the test harness's output capture: the steps show as they run.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}
