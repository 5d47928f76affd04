//! Changing the members online (issue 10; docs/api.md and the contract's
//! "Cluster identity and membership"), with real `paxos-kv serve` processes:
//!
//! 1. the CLI (`paxos-kv members list|add|remove`) and HTTP
//!    (`GET/POST/DELETE /v1/members`): every status of the contract, two
//!    changes started at once on two nodes (one wins, the other gets 409 and
//!    nothing is lost), and a removed node that comes back is refused;
//! 2. Jepsen-style runs under concurrent PUT/GET load, each history checked
//!    by the exact write-once register checker (`tests/support/history.rs`)
//!    and every acknowledged write read back through every current member:
//!    grow 3 -> 5, shrink 5 -> 3, replace a SIGKILLed node, and SIGKILL the
//!    node coordinating a change in the middle of its sweep.
//!
//! Seeded with `PAXOS_KV_SEED` (the clients' keys, values and nodes, and
//! which member receives each change); process timing stays real. Every
//! load loop is bounded in count and time; every wait polls with a deadline.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use support::history::{self, Call, Ret};
use support::net;
use support::procs::{self, Answer, Cluster, TOKEN};

const FILE: &str = "membership";

/// A client for membership changes: a change sweeps every key before it
/// answers (and may keep trying for a minute before a 503).
fn change_client() -> reqwest::Client {
    net::client(Duration::from_secs(150))
}

/// The stable membership `base` holds: its epoch and member ids (an error
/// while a change is in progress there, or it does not answer).
async fn stable_view(http: &reqwest::Client, base: &str) -> Result<(u64, Vec<u32>), String> {
    let (status, view) = procs::members(http, base).await?;
    if status != 200 {
        return Err(format!("{base}: GET /v1/members answered {status}: {view}"));
    }
    if view["changing"] != json!(false) {
        return Err(format!("{base}: a change is in progress: {view}"));
    }
    let epoch = view["epoch"].as_u64().ok_or(format!("no epoch: {view}"))?;
    let ids = view["members"]
        .as_array()
        .ok_or(format!("no members: {view}"))?
        .iter()
        .map(|m| m["id"].as_u64().unwrap_or(0) as u32)
        .collect();
    Ok((epoch, ids))
}

/// Whether every node of `urls` holds the same stable membership of exactly
/// `ids`; its epoch.
async fn same_stable(http: &reqwest::Client, urls: &[String], ids: &[u32]) -> Result<u64, String> {
    let mut epochs = BTreeSet::new();
    for url in urls {
        let (epoch, got) = stable_view(http, url).await?;
        if got != ids {
            return Err(format!(
                "{url} has members {got:?} at epoch {epoch}, not {ids:?}"
            ));
        }
        epochs.insert(epoch);
    }
    match epochs.len() {
        1 => Ok(epochs.into_iter().next().expect("one")),
        _ => Err(format!("the nodes hold different epochs: {epochs:?}")),
    }
}

/// Polls until every node of `urls` holds the stable membership `ids`
/// (within [`PATIENCE`]); its epoch.
async fn await_members(http: &reqwest::Client, urls: &[String], ids: &[u32]) -> u64 {
    net::poll(&format!("the members {ids:?} everywhere"), || {
        same_stable(http, urls, ids)
    })
    .await
}

/// `GET /ready` on `base`: its status and body.
async fn ready(http: &reqwest::Client, base: &str) -> Result<(u16, String), String> {
    let r = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

/// Polls until `base` says it was removed: `/ready` 503 naming it, and the
/// state `removed` in `/v1/status`.
async fn await_removed(http: &reqwest::Client, base: &str) {
    net::poll(&format!("{base} to say it was removed"), || async {
        let (status, body) = ready(http, base).await?;
        if status != 503 || !body.contains("removed") {
            return Err(format!("/ready answered {status} {body:?}"));
        }
        let s = procs::status(http, base).await?;
        match s["state"].as_str() {
            Some("removed") => Ok(()),
            other => Err(format!("/v1/status state {other:?}")),
        }
    })
    .await
}

/// A membership change the test expects to succeed: 201/200, or 503 when it
/// could not finish while the client waited (it then finishes in the
/// background; the caller polls for the new members).
async fn expect_change(http: &reqwest::Client, via: &str, id: u32, url: Option<&str>) -> u16 {
    let (status, body) = procs::change_members(http, via, id, url)
        .await
        .unwrap_or_else(|e| panic!("change of node {id} via {via}: {e}"));
    let ok = if url.is_some() { 201 } else { 200 };
    assert!(
        status == ok || status == 503,
        "change of node {id} via {via}: {status} {body}"
    );
    status
}

/// PUTs `n` fresh keys `{prefix}{i}` through the nodes of `urls`, 16 at a
/// time; the recorded operations (every one expected to be created).
async fn preload(urls: &[String], prefix: &str, n: usize) -> Vec<Rec> {
    let http = net::client(Duration::from_secs(10));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (http, next, urls, prefix) =
            (http.clone(), next.clone(), urls.to_vec(), prefix.to_owned());
        tasks.spawn(async move {
            let mut recs = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return recs;
                }
                let key = format!("{prefix}{i}");
                let value = Bytes::from(format!("pre-{i}-{}", "v".repeat(i % 64)));
                let url = &urls[i % urls.len()];
                let invoked = Instant::now();
                let answer = procs::put(&http, url, &key, value.clone()).await;
                recs.push(Rec {
                    key,
                    client: 1000 + worker,
                    node: url.clone(),
                    call: Call::Put(value),
                    ret: procs::put_ret(&answer),
                    invoked,
                    completed: Instant::now(),
                });
            }
        });
    }
    let mut recs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        recs.extend(r.expect("preload task"));
    }
    let created = recs.iter().filter(|r| r.ret == Ret::Created).count();
    assert_eq!(
        created, n,
        "preload: only {created} of {n} keys were created"
    );
    recs
}

// ---------------------------------------------------------------------------
// 1. CLI and HTTP.
// ---------------------------------------------------------------------------

/// Every status of `GET/POST/DELETE /v1/members` and every exit code of
/// `paxos-kv members`, a refused concurrent change, and a removed node that
/// comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_cli_and_http_answer_every_status_of_the_contract() {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    let http = change_client();
    let (u1, u2) = (cluster.url(1), cluster.url(2));
    // Keys for the sweeps to carry (and to make the concurrent changes overlap).
    let pre = preload(&cluster.urls(), "pre/", 300).await;

    // list, by the CLI and over HTTP.
    let listed = net::poll("members list shows every member up", || async {
        let (code, out, err) = procs::members_cli(&u1, true, &["list"]).await;
        if code != 0 {
            return Err(format!("exit {code}: {err}"));
        }
        let states: Vec<String> = out
            .lines()
            .skip(1)
            .map(|l| l.rsplit('\t').next().unwrap_or("").to_owned())
            .collect();
        if states != ["serving", "reachable", "reachable"] {
            return Err(format!("states {states:?} in {out:?}"));
        }
        Ok(out)
    })
    .await;
    let expected: String = format!(
        "epoch 1\n1\t{u1}\tserving\n2\t{u2}\treachable\n3\t{}\treachable\n",
        cluster.url(3)
    );
    assert_eq!(listed, expected);
    let (status, view) = procs::members(&http, &u2).await.unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["epoch"].clone(), view["changing"].clone()),
        (json!(1), json!(false))
    );
    assert_eq!(
        view["members"][1],
        json!({"id": 2, "url": u2, "state": "serving"})
    );
    let s = procs::status(&http, &u1).await.unwrap();
    assert_eq!(s["epoch"], json!(1), "{s}");
    assert_eq!(
        s["membership"]["members"].as_array().map(Vec::len),
        Some(3),
        "{s}"
    );

    // 401 without the cluster token (or with a wrong one); nothing changes.
    let unauthorized = [
        http.get(format!("{u1}/v1/members")),
        http.get(format!("{u1}/v1/members")).bearer_auth("wrong"),
        http.post(format!("{u1}/v1/members"))
            .json(&json!({"id": 9, "url": "http://127.0.0.1:9"})),
        http.delete(format!("{u1}/v1/members/3")),
    ];
    for request in unauthorized {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let (code, out, err) = procs::members_cli(&u1, false, &["remove", "3"]).await;
    assert_eq!(code, 2, "a 401 is neither success nor refusal: {out} {err}");
    assert!(err.contains("401"), "{err}");
    assert_eq!(
        same_stable(&http, std::slice::from_ref(&u1), &[1, 2, 3]).await,
        Ok(1)
    );

    // add: 201 once the change finished (two epochs), then start the node.
    let id4 = cluster.add_joining(&u2);
    let u4 = cluster.url(id4);
    let (code, out, err) = procs::members_cli(&u1, true, &["add", "4", &u4]).await;
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("epoch 3"), "{out}");
    let ids: Vec<&str> = lines.map(|l| l.split('\t').next().unwrap_or("")).collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "{out}");
    cluster
        .node(4)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all4 = cluster.urls();
    assert_eq!(await_members(&http, &all4, &[1, 2, 3, 4]).await, 3);
    // The new member holds (or finds) every key written before it came.
    let get = net::client(Duration::from_secs(5));
    for r in pre.iter().step_by(7) {
        let Call::Put(v) = &r.call else { continue };
        let answer = procs::get(&get, &u4, &r.key).await;
        assert_eq!(
            answer,
            Answer::Status(200, v.clone()),
            "{} via node 4",
            r.key
        );
    }

    // 409: already a member; the URL of another member.
    let refused = [(4, "http://127.0.0.1:9"), (9, u1.as_str())];
    for (id, url) in refused {
        let (status, body) = procs::change_members(&http, &u1, id, Some(url))
            .await
            .unwrap();
        assert_eq!(status, 409, "add {id} {url}: {body}");
    }
    let (code, _, err) = procs::members_cli(&u2, true, &["add", "4", "http://127.0.0.1:9"]).await;
    assert_eq!(code, 1, "a 409 is a refusal: {err}");
    assert!(
        err.contains("409") && err.contains("already a member"),
        "{err}"
    );

    // 400: a bad URL, id 0, a bad body, a bad id in the path.
    for (id, url) in [
        (9, "ftp://127.0.0.1:9"),
        (9, "not a url"),
        (0, "http://127.0.0.1:9"),
    ] {
        let (status, body) = procs::change_members(&http, &u1, id, Some(url))
            .await
            .unwrap();
        assert_eq!(status, 400, "add {id} {url}: {body}");
    }
    for body in [
        json!({"id": "x", "url": "http://127.0.0.1:9"}),
        json!({"id": 9}),
    ] {
        let r = http
            .post(format!("{u1}/v1/members"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
    }
    let r = http
        .delete(format!("{u1}/v1/members/abc"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (code, _, err) = procs::members_cli(&u1, true, &["add", "9", "ftp://127.0.0.1:9"]).await;
    assert_eq!(code, 2, "a 400 is neither success nor refusal: {err}");

    // 404: removing a node that is not a member.
    let (status, body) = procs::change_members(&http, &u1, 9, None).await.unwrap();
    assert_eq!(status, 404, "{body}");
    let (code, _, err) = procs::members_cli(&u1, true, &["remove", "9"]).await;
    assert_eq!(code, 1, "a 404 is a refusal: {err}");
    assert_eq!(
        same_stable(&http, &all4, &[1, 2, 3, 4]).await,
        Ok(3),
        "a refused change changed something"
    );

    // Two changes at once on two nodes: exactly one wins, the other is
    // refused with 409, and nothing of either is lost or half-applied.
    let (id5, id6) = (cluster.add_joining(&u1), cluster.add_joining(&u1));
    let (u5, u6) = (cluster.url(id5), cluster.url(id6));
    let (a, b) = tokio::join!(
        procs::change_members(&http, &u1, id5, Some(&u5)),
        procs::change_members(&http, &u2, id6, Some(&u6)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (winner, loser, lost) = match (a.0, b.0) {
        (201, 409) => (id5, id6, b.1),
        (409, 201) => (id6, id5, a.1),
        _ => panic!("two concurrent adds: expected one 201 and one 409, got {a:?} and {b:?}"),
    };
    assert!(
        lost.to_string().contains("in progress") || lost.to_string().contains("won the race"),
        "the refusal says why: {lost}"
    );
    let epoch = await_members(&http, &all4, &[1, 2, 3, 4, winner]).await;
    assert_eq!(epoch, 5, "one change is exactly two epochs");
    // The refused change was not lost in the sense of being half-applied:
    // it can be made now, and undone.
    let loser_url = cluster.url(loser);
    assert_eq!(
        expect_change(&http, &u2, loser, Some(&loser_url)).await,
        201
    );
    let mut ids = vec![1, 2, 3, 4, winner, loser];
    ids.sort();
    assert_eq!(await_members(&http, &all4, &ids).await, 7);
    for id in [winner, loser] {
        let (code, out, err) = procs::members_cli(&u1, true, &["remove", &id.to_string()]).await;
        assert_eq!(code, 0, "remove {id}: {err}");
        assert!(!out.contains(&format!("\n{id}\t")), "{out}");
    }
    assert_eq!(await_members(&http, &all4, &[1, 2, 3, 4]).await, 11);

    // A removed id is never reused: 409, by HTTP and the CLI.
    let (status, body) = procs::change_members(&http, &u1, winner, Some("http://127.0.0.1:9"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let (code, _, err) = procs::members_cli(
        &u1,
        true,
        &["add", &loser.to_string(), "http://127.0.0.1:9"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("removed"), "{err}");

    // A removed node that comes back is refused. Node 4 is down while it is
    // removed, then restarted over its old data directory: it learns that
    // it was removed, says so, and its peers refuse its messages.
    cluster.node(4).kill();
    let (status, body) = procs::change_members(&http, &u2, 4, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let three: Vec<String> = (1..=3).map(|i| cluster.url(i)).collect();
    assert_eq!(await_members(&http, &three, &[1, 2, 3]).await, 13);
    cluster
        .node(4)
        .start_up()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    await_removed(&get, &u4).await;
    let (status, reply) =
        procs::peer_batch(&get, &u1, 4, vec![json!({"op": "read", "key": "pre/1"})])
            .await
            .unwrap();
    assert!(
        status == 400 || status == 409,
        "a removed node's message was taken: {status} {reply}"
    );
    let answer = procs::get(&get, &u4, "pre/1").await;
    assert!(
        matches!(answer, Answer::Status(503, _)),
        "a removed node answered a read: {answer:?}"
    );
    // The remaining members still take writes and agree on them.
    let value = Bytes::from_static(b"after-the-removal");
    let answer = procs::put(&get, &u2, "after/removal", value.clone()).await;
    assert!(matches!(answer, Answer::Status(201, _)), "{answer:?}");
    for url in &three {
        assert_eq!(
            procs::get(&get, url, "after/removal").await,
            Answer::Status(200, value.clone()),
            "via {url}"
        );
    }
    // And node 4's id stays retired.
    let (status, body) = procs::change_members(&http, &u1, 4, Some(&u4))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
}

// ---------------------------------------------------------------------------
// 2. Jepsen-style: the history under load and membership changes.
// ---------------------------------------------------------------------------

/// One recorded operation.
#[derive(Clone, Debug)]
struct Rec {
    key: String,
    client: usize,
    node: String,
    call: Call<Bytes>,
    ret: Ret<Bytes>,
    invoked: Instant,
    completed: Instant,
}

/// Concurrent clients PUTting and GETting contested keys through the nodes
/// of `targets` (changed as members come and go).
struct Load {
    stop: Arc<AtomicBool>,
    targets: Arc<RwLock<Vec<String>>>,
    done: Arc<AtomicUsize>,
    odd: Arc<RwLock<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Rec>>>,
}

/// Bounds of every client: operations, and time since the load started.
const MAX_OPS_PER_CLIENT: usize = 20_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(240);

impl Load {
    fn start(seed: u64, targets: Vec<String>, clients: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            targets: Arc::new(RwLock::new(targets)),
            done: Arc::new(AtomicUsize::new(0)),
            odd: Arc::new(RwLock::new(Vec::new())),
            tasks: Vec::new(),
        };
        let started = Instant::now();
        let http = net::client(Duration::from_secs(5));
        let tasks = (0..clients)
            .map(|id| {
                let (stop, targets, done, odd, http) = (
                    load.stop.clone(),
                    load.targets.clone(),
                    load.done.clone(),
                    load.odd.clone(),
                    http.clone(),
                );
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    let mut recs = Vec::new();
                    let mut retry: Option<(String, Bytes)> = None;
                    for seq in 0..MAX_OPS_PER_CLIENT {
                        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
                            break;
                        }
                        let mut generation = started.elapsed().as_millis() / 150;
                        if generation > 0 && rng.random_bool(0.2) {
                            generation -= 1;
                        }
                        let fresh = format!("load/{generation}/{}", rng.random_range(0..4));
                        let url = {
                            let t = targets.read().expect("targets");
                            t[rng.random_range(0..t.len())].clone()
                        };
                        let again = retry.take();
                        let key = again.as_ref().map_or(fresh, |(k, _)| k.clone());
                        let is_put = again.is_some() || rng.random_bool(0.5);
                        let invoked = Instant::now();
                        let (call, answer) = if is_put {
                            let value = again
                                .map_or_else(|| Bytes::from(format!("c{id}-{seq}")), |(_, v)| v);
                            let answer = procs::put(&http, &url, &key, value.clone()).await;
                            (Call::Put(value), answer)
                        } else {
                            (Call::Get, procs::get(&http, &url, &key).await)
                        };
                        let completed = Instant::now();
                        if let Answer::Status(s, body) = &answer {
                            if ![200, 201, 404, 409, 500, 503].contains(s) {
                                odd.write().expect("odd").push(format!(
                                    "client {id} {key} via {url}: {s} {}",
                                    procs::show(body)
                                ));
                            }
                        }
                        let ret = if is_put {
                            procs::put_ret(&answer)
                        } else {
                            procs::get_ret(&answer)
                        };
                        let unknown = ret == Ret::Unknown;
                        if let (true, Call::Put(v)) = (unknown, &call) {
                            if rng.random_bool(0.5) {
                                retry = Some((key.clone(), v.clone()));
                            }
                        }
                        recs.push(Rec {
                            key,
                            client: id,
                            node: url,
                            call,
                            ret,
                            invoked,
                            completed,
                        });
                        done.fetch_add(1, Ordering::SeqCst);
                        // Think time (pacing, not synchronization), longer
                        // after a failure: leaves the two cores to the nodes.
                        let pause = if unknown { 10..40 } else { 2..10 };
                        tokio::time::sleep(Duration::from_millis(rng.random_range(pause))).await;
                    }
                    recs
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    /// The nodes the clients talk to from now on.
    fn set_targets(&self, urls: Vec<String>) {
        *self.targets.write().expect("targets") = urls;
    }

    /// Waits until the clients have completed `more` operations more.
    async fn run_for(&self, more: usize) {
        let goal = self.done.load(Ordering::SeqCst) + more;
        net::poll(&format!("{more} more operations"), || async {
            let done = self.done.load(Ordering::SeqCst);
            if done >= goal {
                Ok(())
            } else {
                Err(format!("{done} of {goal}"))
            }
        })
        .await;
    }

    /// Stops the clients; their operations and the unexpected statuses seen.
    async fn stop(self) -> (Vec<Rec>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut recs = Vec::new();
        for t in self.tasks {
            recs.extend(t.await.expect("client task"));
        }
        let odd = self.odd.read().expect("odd").clone();
        (recs, odd)
    }
}

/// What a run did and what the checks found.
#[derive(Debug, Default)]
struct Report {
    ops: usize,
    puts: usize,
    gets: usize,
    acked_writes: usize,
    unknown: usize,
    preloaded: usize,
    final_reads: usize,
    keys: usize,
    epochs: Vec<u64>,
    violations: Vec<String>,
    elapsed: Duration,
}

impl Report {
    fn print(&self, title: &str, seed: u64) {
        eprintln!(
            "== {title} (seed {seed}) ==\n\
             ops under load: {} ({} PUT, {} GET), unknown {}; acked writes: {}\n\
             preloaded keys: {}; final reads: {} on {} keys\n\
             stable epochs: {:?}\n\
             violations: {}\n\
             wall time: {:.1}s",
            self.ops,
            self.puts,
            self.gets,
            self.unknown,
            self.acked_writes,
            self.preloaded,
            self.final_reads,
            self.keys,
            self.epochs,
            self.violations.len(),
            self.elapsed.as_secs_f64()
        );
        for v in self.violations.iter().take(20) {
            eprintln!("  VIOLATION {v}");
        }
    }

    /// Fails the test (with `seed` and the nodes' logs) on any violation.
    fn assert_clean(&self, title: &str, seed: u64, cluster: &Cluster) {
        self.print(title, seed);
        if !self.violations.is_empty() {
            eprintln!("{}", cluster.logs(4000));
        }
        assert!(
            self.violations.is_empty(),
            "{}: {} violations, first: {}",
            support::seed::replay(seed, FILE, title),
            self.violations.len(),
            self.violations[0]
        );
        assert!(
            self.acked_writes > 20,
            "{title}: almost nothing was written: {self:?}"
        );
    }
}

/// Reads every key of `recs` through every node of `members` (each read
/// retried a bounded number of times until it is definite), adds the reads
/// to the history, and checks it: the write-once register checker per key,
/// and every acknowledged write (201, or 200 to a PUT) read back with its
/// value through every member.
async fn final_check(
    mut recs: Vec<Rec>,
    odd: Vec<String>,
    members: &[String],
    preloaded: usize,
    started: Instant,
) -> Report {
    let ops: Vec<&Rec> = recs.iter().filter(|r| r.client < 1000).collect();
    let mut report = Report {
        ops: ops.len(),
        puts: ops
            .iter()
            .filter(|r| matches!(r.call, Call::Put(_)))
            .count(),
        gets: ops.iter().filter(|r| r.call == Call::Get).count(),
        unknown: ops.iter().filter(|r| r.ret == Ret::Unknown).count(),
        preloaded,
        ..Report::default()
    };
    let acked: BTreeMap<String, Bytes> = recs
        .iter()
        .filter_map(|r| match (&r.call, &r.ret) {
            (Call::Put(v), Ret::Created | Ret::AlreadyChosen) => Some((r.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    report.acked_writes = recs
        .iter()
        .filter(|r| r.client < 1000 && matches!(r.ret, Ret::Created | Ret::AlreadyChosen))
        .count();
    let keys: Vec<String> = recs
        .iter()
        .map(|r| r.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    report.keys = keys.len();
    let http = net::client(Duration::from_secs(5));
    let mut readers = tokio::task::JoinSet::new();
    for chunk in keys.chunks(keys.len().div_ceil(8).max(1)) {
        let (chunk, members, http) = (chunk.to_vec(), members.to_vec(), http.clone());
        readers.spawn(async move {
            let mut out = Vec::new();
            for key in chunk {
                for url in &members {
                    for attempt in 0..10 {
                        let invoked = Instant::now();
                        let answer = procs::get(&http, url, &key).await;
                        let ret = procs::get_ret(&answer);
                        let definite = ret != Ret::Unknown;
                        out.push(Rec {
                            key: key.clone(),
                            client: 2000,
                            node: url.clone(),
                            call: Call::Get,
                            ret,
                            invoked,
                            completed: Instant::now(),
                        });
                        if definite || attempt == 9 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            out
        });
    }
    let mut reads = Vec::new();
    while let Some(r) = readers.join_next().await {
        reads.extend(r.expect("final reader"));
    }
    report.final_reads = reads.len();
    // Every acknowledged write, through every member: its value.
    let mut last: BTreeMap<(&str, &str), &Ret<Bytes>> = BTreeMap::new();
    for r in &reads {
        last.insert((&r.key, &r.node), &r.ret);
    }
    for (key, value) in &acked {
        for url in members {
            match last.get(&(key.as_str(), url.as_str())) {
                Some(Ret::Found(v)) if v == value => {}
                other => report.violations.push(format!(
                    "acked write {key:?} = {} reads {other:?} through {url}",
                    procs::show(value)
                )),
            }
        }
    }
    recs.extend(reads);
    // The history, per key.
    let mut by_key: BTreeMap<&str, Vec<history::Op<Bytes, Instant>>> = BTreeMap::new();
    for r in &recs {
        by_key.entry(&r.key).or_default().push(history::Op {
            key: r.key.clone(),
            process: r.client,
            call: r.call.clone(),
            ret: r.ret.clone(),
            invoked: r.invoked,
            completed: Some(r.completed),
        });
    }
    for (key, ops) in &by_key {
        if let Err(v) = history::check(ops) {
            let t0 = started;
            let shown = history::render(
                &ops.iter()
                    .map(|o| history::Op {
                        key: o.key.clone(),
                        process: o.process,
                        call: o.call.clone(),
                        ret: o.ret.clone(),
                        invoked: o.invoked.saturating_duration_since(t0),
                        completed: o.completed.map(|c| c.saturating_duration_since(t0)),
                    })
                    .collect::<Vec<_>>(),
            );
            report.violations.push(format!("key {key:?}: {v}\n{shown}"));
        }
    }
    report
        .violations
        .extend(odd.into_iter().map(|o| format!("unexpected status: {o}")));
    report.elapsed = started.elapsed();
    report
}

/// A seeded pick of one of `ids`.
fn pick(rng: &mut StdRng, ids: &[u32]) -> u32 {
    ids[rng.random_range(0..ids.len())]
}

fn urls_of(cluster: &Cluster, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|id| cluster.url(*id)).collect()
}

/// Operations between two steps of a run.
const OPS_BETWEEN: usize = 300;

/// Grow 3 -> 5 under load: add node 4 and start it with `--join`, then 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_from_three_to_five_under_load() {
    let title = "grow_from_three_to_five_under_load";
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let seed = support::seed::seed(FILE, title);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let http = change_client();
    let mut ids = vec![1, 2, 3];
    let mut epochs = vec![await_members(&http, &cluster.urls(), &ids).await];
    let load = Load::start(seed, cluster.urls(), 4);
    load.run_for(OPS_BETWEEN).await;
    for _ in 0..2 {
        let via = cluster.url(pick(&mut rng, &ids));
        let id = cluster.add_joining(&via);
        let url = cluster.url(id);
        expect_change(&http, &via, id, Some(&url)).await;
        cluster
            .node(id)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ids.push(id);
        epochs.push(await_members(&http, &urls_of(&cluster, &ids), &ids).await);
        load.set_targets(urls_of(&cluster, &ids));
        load.run_for(OPS_BETWEEN).await;
    }
    let (recs, odd) = load.stop().await;
    let mut report = final_check(recs, odd, &urls_of(&cluster, &ids), 0, started).await;
    report.epochs = epochs;
    report.assert_clean(title, seed, &cluster);
    assert_eq!(report.epochs, [1, 3, 5]);
}

/// Shrink 5 -> 3 under load: remove two members (through a member that
/// stays), each stopped once it says it was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shrink_from_five_to_three_under_load() {
    let title = "shrink_from_five_to_three_under_load";
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let seed = support::seed::seed(FILE, title);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(5).await;
    let http = change_client();
    let mut ids = vec![1, 2, 3, 4, 5];
    let mut epochs = vec![await_members(&http, &cluster.urls(), &ids).await];
    let load = Load::start(seed, cluster.urls(), 4);
    load.run_for(OPS_BETWEEN).await;
    for round in 0..2 {
        let gone = pick(&mut rng, &ids);
        ids.retain(|id| *id != gone);
        let mut via = cluster.url(pick(&mut rng, &ids));
        if round == 1 {
            // The second removal goes through the removed node itself: it
            // answers once the remaining members finished the change.
            via = cluster.url(gone);
        }
        let status = expect_change(&http, &via, gone, None).await;
        if round == 1 {
            assert_eq!(status, 200, "node {gone} removing itself");
        }
        epochs.push(await_members(&http, &urls_of(&cluster, &ids), &ids).await);
        // The clients keep talking to it until it is stopped: a removed
        // node must not answer from its old state.
        await_removed(&http, &cluster.url(gone)).await;
        load.run_for(OPS_BETWEEN / 2).await;
        cluster.node(gone).kill();
        load.set_targets(urls_of(&cluster, &ids));
        load.run_for(OPS_BETWEEN / 2).await;
    }
    let (recs, odd) = load.stop().await;
    let mut report = final_check(recs, odd, &urls_of(&cluster, &ids), 0, started).await;
    report.epochs = epochs;
    report.assert_clean(title, seed, &cluster);
    assert_eq!(report.epochs, [1, 3, 5]);
}

/// Replace a SIGKILLed node under load: kill node 3, add node 4 (the change
/// needs it to finish: 3 of the 4 members), start it, remove node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_a_killed_node_under_load() {
    let title = "replace_a_killed_node_under_load";
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let seed = support::seed::seed(FILE, title);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let http = change_client();
    let mut epochs = vec![await_members(&http, &cluster.urls(), &[1, 2, 3]).await];
    let load = Load::start(seed, cluster.urls(), 4);
    load.run_for(OPS_BETWEEN).await;
    cluster.node(3).kill();
    load.set_targets(urls_of(&cluster, &[1, 2]));
    load.run_for(OPS_BETWEEN / 2).await;
    let via = cluster.url(pick(&mut rng, &[1, 2]));
    let id = cluster.add_joining(&via);
    let url = cluster.url(id);
    let adding = {
        let (http, via, url) = (http.clone(), via.clone(), url.clone());
        tokio::spawn(async move { expect_change(&http, &via, id, Some(&url)).await })
    };
    cluster
        .node(id)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    adding.await.expect("the add");
    let live = urls_of(&cluster, &[1, 2, id]);
    epochs.push(await_members(&http, &live, &[1, 2, 3, id]).await);
    load.set_targets(live.clone());
    load.run_for(OPS_BETWEEN).await;
    let via = cluster.url(pick(&mut rng, &[1, 2, id]));
    expect_change(&http, &via, 3, None).await;
    epochs.push(await_members(&http, &live, &[1, 2, id]).await);
    load.run_for(OPS_BETWEEN).await;
    let (recs, odd) = load.stop().await;
    let mut report = final_check(recs, odd, &live, 0, started).await;
    report.epochs = epochs;
    report.assert_clean(title, seed, &cluster);
    assert_eq!(report.epochs, [1, 3, 5]);
}

/// Keys written before the coordinator crash: enough that the sweep of the
/// change is still running when the coordinator is killed.
const PRELOAD_FOR_CRASH: usize = 2000;

/// SIGKILL the node running a change in the middle of its sweep: another
/// member finishes the change, and the killed node comes back in the new
/// membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_coordinator_of_a_change_is_killed_mid_change() {
    let title = "the_coordinator_of_a_change_is_killed_mid_change";
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let seed = support::seed::seed(FILE, title);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let http = change_client();
    let mut epochs = vec![await_members(&http, &cluster.urls(), &[1, 2, 3]).await];
    let pre = preload(&cluster.urls(), "pre/", PRELOAD_FOR_CRASH).await;
    let load = Load::start(seed, cluster.urls(), 3);
    load.run_for(OPS_BETWEEN).await;

    let coordinator = pick(&mut rng, &[1, 2, 3]);
    let others: Vec<u32> = [1, 2, 3]
        .into_iter()
        .filter(|i| *i != coordinator)
        .collect();
    let via = cluster.url(coordinator);
    let id = cluster.add_joining(&cluster.url(others[0]));
    let url = cluster.url(id);
    let adding = {
        let (http, via, url) = (http.clone(), via.clone(), url.clone());
        tokio::spawn(async move { procs::change_members(&http, &via, id, Some(&url)).await })
    };
    // Kill the coordinator once its sweep has started (its log says so; the
    // sweep of the preloaded keys takes a while).
    let watcher = cluster.url(others[0]);
    let poll_http = net::client(Duration::from_secs(2));
    net::poll("the coordinator to start its sweep", || async {
        let log = cluster.nodes[coordinator as usize - 1].log_tail(1 << 20);
        if log.contains("sweeping every key") {
            Ok(())
        } else {
            Err("not sweeping yet".to_owned())
        }
    })
    .await;
    cluster.node(coordinator).kill();
    load.set_targets(urls_of(&cluster, &others));
    let answer = adding.await.expect("the add");
    let log = cluster.node(coordinator).log_tail(1 << 20);
    assert!(
        !log.contains("swept"),
        "the sweep finished before its coordinator was killed: preload more keys"
    );
    // Node 4 is not up yet, so without the coordinator no majority of the
    // four members can finish the sweep: the change is left half-done.
    let (_, view) = procs::members(&poll_http, &watcher).await.unwrap();
    assert_eq!(
        (view["epoch"].clone(), view["changing"].clone()),
        (json!(2), json!(true)),
        "the change finished before its coordinator was killed (answer {answer:?}): \
         preload more keys\n{view}"
    );
    eprintln!("killed node {coordinator} in the sweep of its change; its client got {answer:?}");
    cluster
        .node(id)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let survivors = urls_of(&cluster, &[others[0], others[1], id]);
    epochs.push(await_members(&http, &survivors, &[1, 2, 3, id]).await);
    load.set_targets(survivors);
    load.run_for(OPS_BETWEEN).await;
    cluster
        .node(coordinator)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all = urls_of(&cluster, &[1, 2, 3, id]);
    await_members(&http, &all, &[1, 2, 3, id]).await;
    load.set_targets(all.clone());
    load.run_for(OPS_BETWEEN).await;
    let (mut recs, odd) = load.stop().await;
    recs.extend(pre);
    let mut report = final_check(recs, odd, &all, PRELOAD_FOR_CRASH, started).await;
    report.epochs = epochs;
    report.assert_clean(title, seed, &cluster);
    assert_eq!(report.epochs, [1, 3]);
}

/// Replace every member, one by one, under load, each the way a dead
/// machine is replaced: SIGKILL the old node, add the new one (the change
/// cannot finish without it: 3 of the 4 members), start it with `--join`
/// (it joins while the change is in progress, with an empty state), remove
/// the old one. At the end no original node is a member, so every value
/// written before (the preloaded keys, the early clients' writes) is
/// readable only because each change's sweep copied it to a majority of
/// the new members.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_every_member_one_by_one_under_load() {
    let title = "replace_every_member_one_by_one_under_load";
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let seed = support::seed::seed(FILE, title);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let http = change_client();
    let mut ids = vec![1, 2, 3];
    let mut epochs = vec![await_members(&http, &cluster.urls(), &ids).await];
    const PRELOAD: usize = 200;
    let pre = preload(&cluster.urls(), "pre/", PRELOAD).await;
    let load = Load::start(seed, cluster.urls(), 4);
    load.run_for(OPS_BETWEEN / 2).await;
    for old in 1..=3 {
        cluster.node(old).kill();
        let live: Vec<u32> = ids.iter().copied().filter(|i| *i != old).collect();
        load.set_targets(urls_of(&cluster, &live));
        load.run_for(OPS_BETWEEN / 4).await;
        let via = cluster.url(pick(&mut rng, &live));
        let id = cluster.add_joining(&via);
        let url = cluster.url(id);
        let adding = {
            let (http, via, url) = (http.clone(), via.clone(), url.clone());
            tokio::spawn(async move { expect_change(&http, &via, id, Some(&url)).await })
        };
        cluster
            .node(id)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        adding.await.expect("the add");
        ids.push(id);
        let live: Vec<u32> = ids.iter().copied().filter(|i| *i != old).collect();
        epochs.push(await_members(&http, &urls_of(&cluster, &live), &ids).await);
        load.set_targets(urls_of(&cluster, &live));
        load.run_for(OPS_BETWEEN / 4).await;
        let via = cluster.url(pick(&mut rng, &live));
        expect_change(&http, &via, old, None).await;
        ids = live;
        epochs.push(await_members(&http, &urls_of(&cluster, &ids), &ids).await);
        load.run_for(OPS_BETWEEN / 4).await;
    }
    assert_eq!(ids, [4, 5, 6]);
    let (mut recs, odd) = load.stop().await;
    recs.extend(pre);
    let mut report = final_check(recs, odd, &urls_of(&cluster, &ids), PRELOAD, started).await;
    report.epochs = epochs;
    report.assert_clean(title, seed, &cluster);
    assert_eq!(report.epochs, [1, 3, 5, 7, 9, 11, 13]);
}
