//! A lost disk never loses a value (issue 8), with real `paxos-kv serve`
//! processes (`tests/support/procs.rs`), SIGKILL and real data directories.
//!
//! The four steps of the issue, several rounds on one cluster, for the
//! classic path and for the fast path:
//! 1. node 1 stopped; a value `v` is chosen by nodes 2 and 3 (a 201);
//! 2. node 3 killed, its `--data-dir` emptied (or deleted), started again
//!    with the same command: it must not vote from its forgotten state;
//! 3. node 2 stopped, node 1 started: nodes 1 and 3 are no majority that
//!    knows anything, so `GET` through node 1 must not be 404 and `PUT w`
//!    must not be 201 (503 is right: node 3 cannot rebuild without node 2);
//! 4. everyone back: every node answers `v`, and node 3 rebuilt by itself
//!    (`/ready` 200, `/v1/status` serving as a new incarnation).
//!
//! Also: a directory of another node is refused at start; nodes started
//! with different `--peers` never serve together; a disk that fails under
//! one node (a full tmpfs) makes it fail-stop and rebuild, losing nothing
//! that was acknowledged (docs/api.md, "Cluster identity and membership";
//! docs/design.md, invariants 8 to 10).

mod support;

use support::procs;
use support::tmpfs::Tmpfs;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use procs::{Answer, Cluster, NodeProc};
use serde_json::{json, Value as Json};

/// Rounds of the four steps per path. Each round costs about 10 s of
/// restarts and 503s on a loaded machine.
const ROUNDS: u32 = 5;

/// Generous deadline for anything a node does by itself (start, rebuild).
const DEADLINE: Duration = Duration::from_secs(60);

fn http() -> reqwest::Client {
    procs::client(Duration::from_secs(15))
}

/// `GET /v1/status` of `url`, if it answers.
async fn status(http: &reqwest::Client, url: &str) -> Option<Json> {
    let r = http.get(format!("{url}/v1/status")).send().await.ok()?;
    r.json().await.ok()
}

/// `GET /ready`: status code and body.
async fn ready(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http.get(format!("{url}/ready")).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.unwrap_or_default()))
}

/// Polls `/v1/status` of `node` until `check` accepts it; the status, or an
/// error with the last status seen and the node's log tail.
async fn wait_status(
    http: &reqwest::Client,
    node: &NodeProc,
    what: &str,
    check: impl Fn(&Json) -> bool,
) -> Result<Json, String> {
    let until = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Some(s) = status(http, &node.url()).await {
            if check(&s) {
                return Ok(s);
            }
            last = Some(s);
        }
        if Instant::now() >= until {
            return Err(format!(
                "node {} not {what} within {DEADLINE:?}; last status {last:?}; log tail:\n{}",
                node.id(),
                node.log_tail(3000)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` serves: `/ready` 200 and state `serving`.
async fn wait_serving(http: &reqwest::Client, node: &NodeProc) -> Json {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some((200, _)) = ready(http, &node.url()).await {
            break;
        }
        assert!(
            Instant::now() < until,
            "node {} did not become ready within {DEADLINE:?}; status {:?}; log tail:\n{}",
            node.id(),
            status(http, &node.url()).await,
            node.log_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status(http, &node.url()).await.expect("status answers");
    assert_eq!(s["state"], "serving", "node {}: {s}", node.id());
    s
}

/// A 3-node cluster, every node serving.
async fn serving_cluster() -> Cluster {
    let mut cluster = Cluster::new(3, |_, ports| procs::peers_string(ports));
    cluster.start_all_up().await;
    let http = http();
    for node in &cluster.nodes {
        wait_serving(&http, node).await;
    }
    cluster
}

/// How a disk is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// Every file in the data directory removed (a replaced disk mounted at
    /// the same path, a recreated volume).
    Emptied,
    /// The data directory itself removed (a typo in the path).
    Deleted,
}

fn lose_disk(dir: &Path, loss: Loss) {
    match loss {
        Loss::Deleted => std::fs::remove_dir_all(dir).expect("remove data dir"),
        Loss::Emptied => {
            for entry in std::fs::read_dir(dir).expect("read data dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).expect("remove");
                } else {
                    std::fs::remove_file(&path).expect("remove");
                }
            }
            assert_eq!(std::fs::read_dir(dir).expect("read").count(), 0);
        }
    }
}

/// Kills `node`, loses its disk and starts it again with the same command
/// (waiting only for the process to answer `/health`).
async fn wipe_and_restart(node: &mut NodeProc, loss: Loss) {
    node.kill();
    lose_disk(&node.config.data_dir.clone(), loss);
    node.start_up().await.unwrap_or_else(|e| panic!("{e}"));
}

fn text(answer: &Answer) -> String {
    match answer {
        Answer::Status(code, body) => format!("{code} {}", procs::show(body)),
        Answer::NoAnswer(e) => format!("no answer ({e})"),
    }
}

/// Whether `answer` is a 503 with a JSON error.
fn is_json_503(answer: &Answer) -> bool {
    match answer {
        Answer::Status(503, body) => serde_json::from_slice::<Json>(body)
            .map(|j| j["error"].is_string())
            .unwrap_or(false),
        _ => false,
    }
}

/// Step 3: through a node that, with the one rebuilding node, is no majority
/// that knows `key`: no 404, no second value. 503 is the right answer; the
/// chosen value itself (200/409) would be correct too. The two answers, for
/// the record.
async fn no_forgotten_answer(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    v: &[u8],
    w: &[u8],
) -> String {
    let got = procs::get(http, url, key).await;
    match &got {
        Answer::Status(200, body) => assert_eq!(&body[..], v, "GET {key}"),
        other => assert!(
            is_json_503(other),
            "GET {key} with no majority that knows it: want 503 (never 404), got {}",
            text(other)
        ),
    }
    let put = procs::put(http, url, key, Bytes::copy_from_slice(w)).await;
    match &put {
        Answer::Status(409, body) => assert_eq!(&body[..], v, "PUT {key}"),
        other => assert!(
            is_json_503(other),
            "PUT {key}=w after {key}=v was chosen: want 503 (never 201), got {}",
            text(other)
        ),
    }
    format!("GET {}, PUT w {}", code(&got), code(&put))
}

fn code(answer: &Answer) -> String {
    match answer {
        Answer::Status(code, _) => code.to_string(),
        Answer::NoAnswer(e) => format!("no answer ({e})"),
    }
}

/// `(tried, fell_back)` of node `url`'s fast ballot counter.
async fn fast_counters(http: &reqwest::Client, url: &str) -> (u64, u64) {
    let body = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let count = |label: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "paxos_kv_fast_rounds_total{{outcome=\"{label}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no fast_rounds {label} in metrics:\n{body}"))
    };
    (count("tried"), count("fell_back"))
}

/// Sends acceptor `messages` to `to` as node `from` would (the peer
/// protocol, docs/api.md "Peer protocol"), with `from`'s envelope taken
/// from its `/v1/status`; the replies.
async fn peer_batch(
    http: &reqwest::Client,
    from_status: &Json,
    to: &str,
    messages: Vec<Json>,
) -> Vec<Json> {
    let body = json!({
        "version": 2,
        "from": from_status["id"],
        "cluster": from_status["cluster"],
        "epoch": from_status["epoch"],
        "incarnation": from_status["incarnation"],
        "messages": messages,
    });
    let (code, reply) = procs::post_batch(http, to, &body)
        .await
        .unwrap_or_else(|e| panic!("batch to {to}: {e}"));
    assert_eq!(code, 200, "batch to {to}: {reply}");
    reply["replies"].as_array().expect("replies").clone()
}

/// What acceptor `to` holds for `key` (a peer `read`): the value of its
/// vote, the vote's ballot, and whether it is decided.
async fn acceptor_vote(
    http: &reqwest::Client,
    from_status: &Json,
    to: &str,
    key: &str,
) -> Option<(Vec<u8>, Json, bool)> {
    let replies = peer_batch(
        http,
        from_status,
        to,
        vec![json!({"op": "read", "key": key})],
    )
    .await;
    let reply = &replies[0]["ok"];
    let (vote, decided) = match reply["type"].as_str() {
        Some("vote") if reply["accepted"].is_null() => return None,
        Some("vote") => (&reply["accepted"], false),
        Some("decided") => (reply, true),
        _ => panic!("read {key} at {to}: {}", replies[0]),
    };
    let value = STANDARD
        .decode(vote["value"].as_str().expect("value"))
        .expect("base64");
    Some((value, vote["ballot"].clone(), decided))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathKind {
    Classic,
    Fast,
}

/// The four steps of issue 8, `ROUNDS` times on one cluster (module docs).
async fn four_steps(kind: PathKind) {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = serving_cluster().await;
    let http = http();
    // Every value chosen so far: (key, value); all must stay.
    let mut chosen: Vec<(String, Vec<u8>)> = Vec::new();
    let mut incarnation3 = status(&http, &cluster.url(3)).await.expect("status 3")["incarnation"]
        .as_u64()
        .expect("incarnation");
    assert_eq!(incarnation3, 1, "a founder starts as incarnation 1");
    let mut fast_chosen = 0u32;
    for round in 0..ROUNDS {
        let loss = if round % 2 == 0 {
            Loss::Emptied
        } else {
            Loss::Deleted
        };
        let name = match kind {
            PathKind::Classic => "classic",
            PathKind::Fast => "fast",
        };
        let key = format!("{name}/{round}/k");
        let v = format!("v-{round}").into_bytes();
        let w = format!("w-{round}").into_bytes();
        // The fast path: with all three up, `v` is chosen in ballot 0.0 by
        // a client PUT, and a second value `vf` is chosen in ballot 0.0 by
        // a proposer that dies right after its accepts arrived (this test
        // plays that proposer through the peer protocol): its decide is
        // lost everywhere, every node holds an undecided fast vote.
        let forged = format!("{name}/{round}/decide-lost");
        let vf = format!("vf-{round}").into_bytes();
        let mut round_keys = vec![(key.clone(), v.clone())];
        if kind == PathKind::Fast {
            // The fast ballot needs every peer heard from lately: a warm-up.
            let warm = format!("{name}/{round}/warm-up");
            let answer = procs::put(&http, &cluster.url(2), &warm, Bytes::from_static(b"x")).await;
            assert!(
                matches!(answer, Answer::Status(201, _)),
                "{}",
                text(&answer)
            );
            chosen.push((warm, b"x".to_vec()));
            let before = fast_counters(&http, &cluster.url(2)).await;
            let answer = procs::put(&http, &cluster.url(2), &key, Bytes::from(v.clone())).await;
            assert!(
                matches!(answer, Answer::Status(201, _)),
                "round {round}: PUT {key} with all up: {}",
                text(&answer)
            );
            let after = fast_counters(&http, &cluster.url(2)).await;
            if after.0 > before.0 && after.1 == before.1 {
                fast_chosen += 1;
            }
            let status2 = status(&http, &cluster.url(2)).await.expect("status 2");
            let accept = json!({
                "op": "accept", "key": forged,
                "ballot": {"round": 0, "node": 0},
                "value": STANDARD.encode(&vf),
                "writer": 0x5eed_0000_u64 + u64::from(round),
            });
            for url in cluster.urls() {
                let replies = peer_batch(&http, &status2, &url, vec![accept.clone()]).await;
                assert_eq!(replies[0]["ok"]["type"], "accepted", "{url}: {replies:?}");
            }
            // Node 1 is the one that will be left with only its fast vote.
            let vote = acceptor_vote(&http, &status2, &cluster.url(1), &forged).await;
            assert_eq!(
                vote,
                Some((vf.clone(), json!({"round": 0, "node": 0}), false)),
                "node 1 holds an undecided vote in ballot 0.0"
            );
            round_keys.push((forged.clone(), vf.clone()));
        }

        // 1. Node 1 stopped; the value is chosen by nodes 2 and 3.
        cluster.node(1).kill();
        match kind {
            PathKind::Classic => {
                let answer = procs::put(&http, &cluster.url(2), &key, Bytes::from(v.clone())).await;
                assert!(
                    matches!(answer, Answer::Status(201, _)),
                    "round {round}: PUT {key} through node 2: {}",
                    text(&answer)
                );
            }
            PathKind::Fast => {
                // A client observes the value chosen in the fast ballot.
                for (k, value) in &round_keys {
                    let answer = procs::get(&http, &cluster.url(2), k).await;
                    assert_eq!(
                        answer,
                        Answer::Status(200, Bytes::from(value.clone())),
                        "round {round}: GET {k} through node 2"
                    );
                }
            }
        }

        // 2. Node 3 loses its disk and is started again, same command.
        wipe_and_restart(cluster.node(3), loss).await;
        let s3 = wait_status(&http, &cluster.nodes[2], "recovering", |s| {
            s["state"] == "recovering"
        })
        .await
        .unwrap_or_else(|e| panic!("round {round} ({loss:?}): {e}"));
        assert!(s3["reason"].is_string(), "{s3}");
        let (code, body) = ready(&http, &cluster.url(3)).await.expect("ready answers");
        assert_eq!(code, 503, "a rebuilding node is not ready: {body}");

        // 3. Node 2 stopped, node 1 started: no majority knows the key.
        cluster.node(2).kill();
        cluster
            .node(1)
            .start_up()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_serving(&http, &cluster.nodes[0]).await;
        let mut step3 = Vec::new();
        for (k, value) in &round_keys {
            step3.push(no_forgotten_answer(&http, &cluster.url(1), k, value, &w).await);
        }
        let s3 = status(&http, &cluster.url(3)).await.expect("status 3");
        assert_eq!(
            s3["state"], "recovering",
            "node 3 cannot rebuild without node 2: {s3}"
        );
        let reason = s3["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.contains("serving") || reason.contains("majority"),
            "node 3 says why it waits: {reason}"
        );

        // 4. Everyone back: node 3 rebuilds by itself, every node answers v.
        cluster
            .node(2)
            .start_up()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for node in &cluster.nodes {
            wait_serving(&http, node).await;
        }
        let s3 = status(&http, &cluster.url(3)).await.expect("status 3");
        let inc = s3["incarnation"].as_u64().expect("incarnation");
        assert!(
            inc > incarnation3,
            "round {round}: node 3 serves again as a new incarnation (was {incarnation3}): {s3}"
        );
        // (Exactly one more, normally; a rebuild that starts over after a
        // transient error takes another, which is just as correct.)
        incarnation3 = inc;
        // Node 3's own acceptor state holds the values (the rebuild copied
        // them), before any client read repairs anything.
        let status1 = status(&http, &cluster.url(1)).await.expect("status 1");
        for (k, value) in &round_keys {
            let vote = acceptor_vote(&http, &status1, &cluster.url(3), k).await;
            assert_eq!(
                vote.as_ref().map(|v| &v.0),
                Some(value),
                "round {round}: rebuilt node 3 holds {k}"
            );
        }
        chosen.extend(round_keys);
        for (k, value) in &chosen {
            for url in cluster.urls() {
                let answer = procs::get(&http, &url, k).await;
                assert_eq!(
                    answer,
                    Answer::Status(200, Bytes::from(value.clone())),
                    "round {round}: GET {k} through {url}"
                );
            }
        }
        for url in cluster.urls() {
            let answer = procs::put(&http, &url, &key, Bytes::from(w.clone())).await;
            assert_eq!(
                answer,
                Answer::Status(409, Bytes::from(v.clone())),
                "round {round}: PUT {key}=w through {url}"
            );
        }
        eprintln!(
            "{name} round {round} ({loss:?}): step 3 through node 1: {}; node 3 rebuilt as \
             incarnation {inc}, {} values kept, {:.1}s",
            step3.join("; "),
            chosen.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if kind == PathKind::Fast {
        assert!(
            fast_chosen > 0,
            "no client PUT went through the fast ballot in {ROUNDS} rounds"
        );
        eprintln!("{fast_chosen} of {ROUNDS} client PUTs were chosen in the fast ballot");
    }
}

/// Issue 8, the classic path: a value chosen by nodes 2 and 3 survives
/// node 3 losing its disk (emptied or deleted) and a majority of nodes 1
/// and 3; the wiped node rebuilds by itself once node 2 is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_undoes_a_classic_value() {
    four_steps(PathKind::Classic).await;
}

/// Issue 8, the fast path: values chosen in ballot 0.0 (by a client PUT,
/// and by a proposer whose decide was lost everywhere) survive node 3
/// losing its disk while node 1, holding only its undecided fast vote, and
/// node 3 would be a majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_undoes_a_fast_value() {
    four_steps(PathKind::Fast).await;
}

/// The mutation that brings back the behaviour before issue 8, to show
/// that the four steps catch it: node 3's database files are deleted but
/// its identity file (`paxos-kv.node`) is kept, so it believes it still
/// holds its votes and serves from a blank state at once, exactly as every
/// wiped node did before. Step 3 then answers 404 and takes a second value,
/// which `four_steps` refuses. A node notices a database replaced under its
/// identity (the identity names the database's random id), so the mutation
/// also strips that id from the identity, as an identity written before
/// database ids would lack it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_steps_catch_a_node_that_forgets_its_votes() {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = serving_cluster().await;
    let http = http();
    cluster.node(1).kill();
    let answer = procs::put(&http, &cluster.url(2), "k", Bytes::from_static(b"v")).await;
    assert!(
        matches!(answer, Answer::Status(201, _)),
        "{}",
        text(&answer)
    );
    let node3 = cluster.node(3);
    node3.kill();
    let dir = node3.config.data_dir.clone();
    procs::delete_all_but_identity(&dir);
    let identity_file = dir.join("paxos-kv.node");
    let mut identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&identity_file).expect("identity")).expect("JSON");
    identity
        .as_object_mut()
        .expect("an object")
        .remove("database");
    std::fs::write(&identity_file, serde_json::to_vec(&identity).unwrap()).expect("write");
    node3.start_up().await.unwrap_or_else(|e| panic!("{e}"));
    let s3 = wait_serving(&http, &cluster.nodes[2]).await;
    assert_eq!(s3["incarnation"], 1, "it did not rebuild: {s3}");
    cluster.node(2).kill();
    cluster
        .node(1)
        .start_up()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_serving(&http, &cluster.nodes[0]).await;
    let get = procs::get(&http, &cluster.url(1), "k").await;
    let put = procs::put(&http, &cluster.url(1), "k", Bytes::from_static(b"w")).await;
    eprintln!(
        "with the mutation: GET {}, PUT w {}",
        text(&get),
        text(&put)
    );
    assert!(
        matches!(get, Answer::Status(404, _)) && matches!(put, Answer::Status(201, _)),
        "the mutation should bring back the split brain of issue 8 (404, then a second value); \
         got GET {}, PUT {}",
        text(&get),
        text(&put)
    );
}

/// Waits until `node`'s process exits; its exit status.
async fn wait_exit(node: &mut NodeProc) -> std::process::ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = node.try_exit() {
            return status;
        }
        assert!(
            Instant::now() < until,
            "node {} did not exit within {DEADLINE:?}; log tail:\n{}",
            node.id(),
            node.log_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node started on another node's data directory is refused at start:
/// exit status not 0, one line naming both nodes; the directory is left
/// as it was, and its owner serves from it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_directory_is_refused_at_start() {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = serving_cluster().await;
    let http = http();
    let answer = procs::put(&http, &cluster.url(1), "mine", Bytes::from_static(b"v")).await;
    assert!(
        matches!(answer, Answer::Status(201, _)),
        "{}",
        text(&answer)
    );
    cluster.node(2).kill();
    let node2_dir = cluster.node(2).config.data_dir.clone();
    // Node 1 down too, started on node 2's directory (a swapped volume).
    cluster.node(1).kill();
    let mut config = cluster.node(1).config.clone();
    config.data_dir = node2_dir.clone();
    let log = cluster.path().join("wrong-dir.log");
    let mut wrong = NodeProc::new(config, log.clone());
    wrong.spawn();
    let exit = wait_exit(&mut wrong).await;
    assert!(
        !exit.success(),
        "started on another node's directory: {exit}"
    );
    let output = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let refusal: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("node 2") && l.contains("not node 1"))
        .collect();
    assert_eq!(
        refusal.len(),
        1,
        "one line says whose directory it is:\n{output}"
    );
    assert!(
        refusal[0].starts_with("paxos-kv: "),
        "the refusal is the process's own last word:\n{output}"
    );
    // Nothing was changed: both owners serve again from their directories.
    cluster
        .node(1)
        .start_up()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .node(2)
        .start_up()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for node in &cluster.nodes {
        let s = wait_serving(&http, node).await;
        assert_eq!(s["incarnation"], 1, "no node rebuilt: {s}");
    }
    for url in cluster.urls() {
        assert_eq!(
            procs::get(&http, &url, "mine").await,
            Answer::Status(200, Bytes::from_static(b"v"))
        );
    }
}

/// Nodes started with different `--peers` strings never serve together:
/// node 3 names node 1 by `localhost` instead of `127.0.0.1` (the same
/// process, another member list). Nobody forms the cluster: every
/// `/ready` stays 503 naming `--peers`, node 3's `/v1/status` lists the
/// refused peers, and no PUT succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_peers_never_serve_together() {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::new(3, |id, ports| {
        let peers = procs::peers_string(ports);
        if id == 3 {
            peers.replacen("1=http://127.0.0.1", "1=http://localhost", 1)
        } else {
            peers
        }
    });
    assert_ne!(cluster.nodes[0].config.peers, cluster.nodes[2].config.peers);
    cluster.start_all_up().await;
    let http = http();
    // Every node comes to say why it waits.
    for node in &cluster.nodes {
        let s = wait_status(&http, node, "waiting for the same --peers", |s| {
            s["reason"].as_str().is_some_and(|r| r.contains("--peers"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s["state"], "joining", "node {}: {s}", node.id());
        assert!(s["cluster"].is_null(), "no cluster formed: {s}");
    }
    let s3 = wait_status(&http, &cluster.nodes[2], "listing refused peers", |s| {
        s["refused_peers"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("node 3 status: {s3}");
    // Bounded: two attempts per node, each waits out the request deadline.
    for attempt in 0..2 {
        for url in cluster.urls() {
            let key = format!("split/{attempt}");
            let answer = procs::put(&http, &url, &key, Bytes::from_static(b"v")).await;
            assert!(
                is_json_503(&answer),
                "PUT through {url} in a cluster that never formed: {}",
                text(&answer)
            );
            let (code, body) = ready(&http, &url).await.expect("ready answers");
            assert_eq!(code, 503, "{url}: {body}");
            assert!(body.contains("--peers"), "{url} says why: {body}");
        }
    }
    for node in &cluster.nodes {
        let log = node.log_tail(200_000);
        assert!(
            log.contains("another member list"),
            "node {}'s log says why:\n{}",
            node.id(),
            node.log_tail(3000)
        );
    }
}

// ----------------------------------------------------------------------
// Fail-stop storage on a full disk
// ----------------------------------------------------------------------

/// A 3-node cluster whose node 1 keeps its data on `disk`.
async fn cluster_with_node1_on(disk: &Tmpfs) -> Cluster {
    let mut cluster = Cluster::new(3, |_, ports| procs::peers_string(ports));
    cluster.nodes[0].config.data_dir = disk.mount.join("node1");
    cluster.start_all_up().await;
    let http = http();
    for node in &cluster.nodes {
        wait_serving(&http, node).await;
    }
    cluster
}

/// Values clients were told are stored (201, or a 200 GET).
#[derive(Default)]
struct Acked(Vec<(String, Vec<u8>)>);

impl Acked {
    async fn put(&mut self, http: &reqwest::Client, url: &str, key: &str, value: &[u8]) -> Answer {
        let answer = procs::put(http, url, key, Bytes::copy_from_slice(value)).await;
        match &answer {
            Answer::Status(201, _) => self.0.push((key.to_owned(), value.to_vec())),
            Answer::Status(500..=599, body) => {
                let j: Json = serde_json::from_slice(body).expect("5xx with a JSON error");
                assert!(j["error"].is_string(), "{j}");
            }
            Answer::NoAnswer(_) => {}
            other => panic!("PUT {key} through {url}: {}", text(other)),
        }
        answer
    }

    /// Every acknowledged value answers through every node, and node
    /// `holder`'s own acceptor state holds it.
    async fn all_kept(&self, http: &reqwest::Client, cluster: &Cluster, holder: u32) {
        let reader = status(http, &cluster.url(if holder == 1 { 2 } else { 1 }))
            .await
            .expect("status");
        for (key, value) in &self.0 {
            let vote = acceptor_vote(http, &reader, &cluster.url(holder), key).await;
            assert_eq!(
                vote.as_ref().map(|v| &v.0),
                Some(value),
                "node {holder}'s own state holds acknowledged {key}"
            );
            for url in cluster.urls() {
                assert_eq!(
                    procs::get(http, &url, key).await,
                    Answer::Status(200, Bytes::from(value.clone())),
                    "acknowledged {key} through {url}"
                );
            }
        }
    }
}

/// Writes big values through every node until node 1's disk fails and it
/// leaves `serving`; returns its status then.
async fn write_until_node1_fails(
    http: &reqwest::Client,
    cluster: &Cluster,
    acked: &mut Acked,
) -> Json {
    let big = vec![b'f'; 256 * 1024];
    let until = Instant::now() + DEADLINE;
    for i in 0..400u32 {
        let url = cluster.url(1 + i % 3);
        acked.put(http, &url, &format!("full/{i}"), &big).await;
        let s = status(http, &cluster.url(1)).await.expect("status 1");
        if s["state"] != "serving" {
            return s;
        }
        assert!(
            Instant::now() < until,
            "node 1 kept serving on a full disk: {s}"
        );
    }
    panic!("node 1 kept serving on a full disk after 400 writes")
}

/// Fail-stop (docs/design.md, invariant 9), one node of three on a disk
/// that fills: once its write failed, node 1 gives no success (503 with a
/// JSON error, `/ready` 503 saying why) while the others keep serving; when
/// space is back it rebuilds by itself into a fresh database (a new
/// incarnation) and every acknowledged value is intact in its own state
/// and through every node, also after a SIGKILL and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_fail_stops_and_rebuilds_losing_nothing() {
    let test = "a_failed_disk_fail_stops_and_rebuilds_losing_nothing";
    let Some(disk) = Tmpfs::or_skip(test) else {
        return;
    };
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = cluster_with_node1_on(&disk).await;
    let http = http();
    let mut acked = Acked::default();
    for i in 0..5 {
        let answer = acked
            .put(&http, &cluster.url(1), &format!("before/{i}"), b"b")
            .await;
        assert!(
            matches!(answer, Answer::Status(201, _)),
            "{}",
            text(&answer)
        );
    }
    disk.fill();
    let s = write_until_node1_fails(&http, &cluster, &mut acked).await;
    eprintln!("node 1 after its write failed: {s}");
    // No success from node 1 while its disk is full, for anything.
    for i in 0..3 {
        let key = format!("while-full/{i}");
        let answer = procs::put(&http, &cluster.url(1), &key, Bytes::from_static(b"x")).await;
        assert!(
            is_json_503(&answer),
            "PUT through node 1 with a failed disk: {}",
            text(&answer)
        );
        let answer = procs::get(&http, &cluster.url(1), "before/0").await;
        assert!(
            is_json_503(&answer),
            "GET through node 1 with a failed disk: {}",
            text(&answer)
        );
        let (code, body) = ready(&http, &cluster.url(1)).await.expect("ready");
        assert_eq!(code, 503, "{body}");
        // The healthy majority serves.
        let answer = acked
            .put(
                &http,
                &cluster.url(2 + i % 2),
                &format!("healthy/{i}"),
                b"h",
            )
            .await;
        assert!(
            matches!(answer, Answer::Status(201, _)),
            "{}",
            text(&answer)
        );
    }
    let s = status(&http, &cluster.url(1)).await.expect("status");
    assert_ne!(s["state"], "serving", "{s}");
    assert!(
        s["reason"].as_str().is_some_and(|r| r.contains("disk")),
        "node 1 says its disk failed: {s}"
    );
    // Space back: it rebuilds by itself, as a new incarnation.
    disk.free();
    let s = wait_serving(&http, &cluster.nodes[0]).await;
    assert_eq!(s["incarnation"], 2, "rebuilt into a fresh database: {s}");
    acked.all_kept(&http, &cluster, 1).await;
    let answer = acked.put(&http, &cluster.url(1), "after", b"a").await;
    assert!(
        matches!(answer, Answer::Status(201, _)),
        "{}",
        text(&answer)
    );
    // And after a SIGKILL.
    cluster.crash_restart(1).await;
    let s = wait_serving(&http, &cluster.nodes[0]).await;
    assert_eq!(s["incarnation"], 2, "{s}");
    acked.all_kept(&http, &cluster, 1).await;
}

/// Fail-stop across a crash: node 1's write fails on a full disk and the
/// process is SIGKILLed before it could rebuild; started again with space
/// back, it must not serve from the database that failed (or from a blank
/// one): it rebuilds first, and keeps every acknowledged value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_its_disk_failed_rebuilds_before_serving() {
    let test = "a_node_killed_after_its_disk_failed_rebuilds_before_serving";
    let Some(disk) = Tmpfs::or_skip(test) else {
        return;
    };
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = cluster_with_node1_on(&disk).await;
    let http = http();
    let mut acked = Acked::default();
    for i in 0..5 {
        let answer = acked
            .put(&http, &cluster.url(1), &format!("before/{i}"), b"b")
            .await;
        assert!(
            matches!(answer, Answer::Status(201, _)),
            "{}",
            text(&answer)
        );
    }
    disk.fill();
    let s = write_until_node1_fails(&http, &cluster, &mut acked).await;
    eprintln!("node 1 after its write failed: {s}");
    // The failed database is set aside (renames: no space needed) at once;
    // that folder is what a restart goes by. (A SIGKILL in the few
    // milliseconds between the failure and the set-aside would reopen the
    // failed database in place: nothing durable can be written there first.)
    let dir = cluster.nodes[0].config.data_dir.clone();
    let until = Instant::now() + DEADLINE;
    while !std::fs::read_dir(&dir)
        .expect("node 1 dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("failed-"))
    {
        assert!(
            Instant::now() < until,
            "no failed-* folder in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.node(1).kill();
    disk.free();
    cluster
        .node(1)
        .start_up()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = wait_serving(&http, &cluster.nodes[0]).await;
    assert!(
        s["incarnation"].as_u64().is_some_and(|i| i >= 2),
        "after a failed write, node 1 serves only as a rebuilt incarnation: {s}\n{}",
        cluster.nodes[0].log_tail(4000)
    );
    acked.all_kept(&http, &cluster, 1).await;
}
