//! The live console (issue 12; docs/api.md "Operations": `GET /v1/events`,
//! `GET /`), over real HTTP and in a real browser.
//!
//! - The event stream: a PUT through node 1 shows up, message by message,
//!   in the stream of node 2, from all three nodes (node 2 relays its
//!   peers), in order per node; the cluster token guards `scope=local`.
//! - A slow viewer never slows the cluster: a stream read far slower than
//!   the cluster runs is cut or skips (and says how much), while PUTs keep
//!   completing.
//! - Client tokens: the page, the stream and the console's views need a
//!   token that may read (401, 403, JSON errors; a browser still gets the
//!   page, which asks for a token); `?token=` works for the page and the
//!   stream and never reaches a log; a viewer sees only the events of keys
//!   its token may read, relayed ones included.
//! - The page: headless Chromium (Debian's `chromium` + `chromium-driver`)
//!   driven over WebDriver with fantoccini, against a `paxos-kv dev`
//!   cluster: a PUT through the form, its round and chosen value, a 409, a
//!   node stopped from the page and shown down. Saves `docs/console.png`.
//!   Without Chromium it fails when `CI` is set and skips loudly otherwise.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value as Json;
use support::inproc::{encode, poll, Cluster, Options, PATIENCE, TOKEN};
use support::sse::EventReader;
use support::{net, procs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn is(m: &Json, node: u64, role: &str, kind: &str) -> bool {
    m["node"] == node && m["role"] == role && m["kind"] == kind
}

/// docs/api.md "Operations": one node's stream carries every node's
/// messages of a PUT (relayed), each node's in its own order, linked to the
/// client request; a key filter holds; the local scope needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_shows_every_nodes_messages_through_one_nodes_stream() {
    let cluster = Cluster::start(Options::default()).await;
    let response = EventReader::open(&format!("{}/v1/events", cluster.url(2)), None).await;
    let mut stream = EventReader::new(response);
    let hello = stream.next().await.expect("a greeting");
    assert_eq!(hello["kind"], "hello");
    assert_eq!(hello["node"], 2);
    assert_eq!(hello["relayed"], serde_json::json!([1, 3]));
    // Both relays connect before the PUT, so none of its messages is missed.
    stream.relays_up(&[1, 3]).await;

    let key = "watched/key";
    let put = cluster
        .client()
        .put(cluster.kv(1, &encode(key)))
        .body("the value")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    let mine = |m: &Json| m["key"] == key;
    let seen = stream
        .until("the PUT's messages from all three nodes", |seen| {
            let seen: Vec<&Json> = seen.iter().filter(|m| mine(m)).collect();
            seen.iter().any(|m| is(m, 1, "client", "put_end"))
                && (1..=3).all(|n| seen.iter().any(|m| is(m, n, "acceptor", "accepted")))
                && (1..=3).all(|n| seen.iter().any(|m| is(m, n, "acceptor", "ack")))
        })
        .await;
    let seen: Vec<&Json> = seen.iter().filter(|m| mine(m)).collect();

    // The client request, start to end, at the node that served it.
    let start = seen
        .iter()
        .find(|m| is(m, 1, "client", "put_start"))
        .expect("put_start");
    assert_eq!(start["value"], "the value");
    let req = start["req"].as_str().expect("a request id").to_string();
    let end = seen.iter().find(|m| is(m, 1, "client", "put_end")).unwrap();
    assert_eq!(end["status"], 201);
    assert_eq!(end["req"], req.as_str());
    // Node 1 asked every member to accept, and heard every vote back
    // (fast or classic: both end in accept/accepted from a majority).
    for n in 1..=3u64 {
        assert!(
            seen.iter().any(|m| is(m, 1, "proposer", "accept")
                && m["to"] == n
                && m["req"] == req.as_str()),
            "node 1 sent no accept to node {n}: {seen:#?}"
        );
    }
    let votes = seen
        .iter()
        .filter(|m| is(m, 1, "proposer", "accepted") && m["req"] == req.as_str())
        .count();
    assert!(votes >= 2, "node 1 heard {votes} accepted replies");
    // Every acceptor's vote carries the PUT's id and its value.
    for n in 1..=3u64 {
        let vote = seen
            .iter()
            .find(|m| is(m, n, "acceptor", "accepted"))
            .unwrap();
        assert_eq!(vote["req"], req.as_str(), "node {n}'s vote");
        assert_eq!(vote["value"], "the value");
    }
    // In order per node: each node's sequence numbers only grow.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for m in &seen {
        let (node, seq) = (m["node"].as_u64().unwrap(), m["seq"].as_u64().unwrap());
        if let Some(before) = last.insert(node, seq) {
            assert!(seq > before, "node {node}: seq {seq} after {before}");
        }
    }
    // Per node, the messages come in protocol order.
    let at = |pred: &dyn Fn(&Json) -> bool| seen.iter().position(|m| pred(m)).unwrap();
    assert!(at(&|m| is(m, 1, "client", "put_start")) < at(&|m| is(m, 1, "proposer", "accept")));
    assert!(at(&|m| is(m, 1, "proposer", "accept")) < at(&|m| is(m, 1, "client", "put_end")));

    // A key filter holds, and the local scope is for members only.
    let other = EventReader::open(
        &format!("{}/v1/events?scope=local&key=other", cluster.url(3)),
        Some(TOKEN),
    )
    .await;
    let mut other = EventReader::new(other);
    assert_eq!(other.next().await.unwrap()["scope"], "local");
    let anonymous =
        EventReader::open(&format!("{}/v1/events?scope=local", cluster.url(3)), None).await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.json::<Json>().await.unwrap()["error"].is_string());
    for value in ["x", "y"] {
        let put = cluster
            .client()
            .put(cluster.kv(1, &encode("other")))
            .body(value)
            .send()
            .await
            .unwrap();
        assert!(put.status() == 201 || put.status() == 409);
        let put = cluster
            .client()
            .put(cluster.kv(1, "not-this-one"))
            .body(value)
            .send()
            .await
            .unwrap();
        assert!(put.status() == 201 || put.status() == 409);
    }
    let filtered = other
        .until("node 3's acks of key other", |seen| {
            seen.iter()
                .filter(|m| is(m, 3, "acceptor", "ack") || is(m, 3, "acceptor", "decided"))
                .count()
                >= 1
        })
        .await;
    assert!(
        filtered
            .iter()
            .all(|m| m["key"] == "other" || m["key"].is_null()),
        "the key filter let other keys through: {filtered:#?}"
    );

    // Every member's acceptor state of the key, through node 2.
    let state: Json = cluster
        .client()
        .get(format!(
            "{}/v1/console/acceptors?key=watched/key",
            cluster.url(2)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acceptors = state["acceptors"].as_array().unwrap();
    assert_eq!(acceptors.len(), 3);
    for a in acceptors {
        assert_eq!(a["accepted"]["value"], "the value", "{a}");
    }
    // Outside `paxos-kv dev`, nodes cannot be stopped over HTTP.
    let refused = cluster
        .client()
        .post(format!("{}/v1/dev/nodes/3/stop", cluster.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert!(refused.json::<Json>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("paxos-kv dev"));
    drop((stream, other));
    cluster.shutdown().await;
}

/// Finds, in the raw (chunked) bytes of an event stream fed to it piece by
/// piece, a lost note of node 1 that counts dropped events.
#[derive(Default)]
struct DropNotes {
    tail: Vec<u8>,
    /// Bytes fed, and node 1's last lost note: for the failure message.
    fed: usize,
    last: Option<Json>,
}

impl DropNotes {
    fn feed(&mut self, bytes: &[u8]) -> Option<Json> {
        self.tail.extend_from_slice(bytes);
        self.fed += bytes.len();
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        let mut found = None;
        for note in text
            .split("\n\n")
            .filter(|m| m.contains(r#""kind":"lost""#) && m.ends_with('}'))
            // The body is chunked: skip each chunk's size line.
            .filter_map(|m| m.split_once("data: ").map(|(_, json)| json))
            .filter_map(|m| serde_json::from_str::<Json>(m).ok())
            .filter(|m| m["node"] == 1)
        {
            if note["dropped"].as_u64().unwrap_or(0) > 0 {
                found = Some(note.clone());
            }
            self.last = Some(note);
        }
        // Keep only a tail: a note may straddle two reads.
        if self.tail.len() > 4096 {
            self.tail.drain(..self.tail.len() - 256);
        }
        found
    }
}

/// Issue 12 "Cost": a viewer that reads far slower than the cluster runs
/// is skipped (told how many events it lost) or cut, and never holds the
/// cluster back: PUTs keep completing while its stream lags.
///
/// The viewer reads 4 KiB every half second: too slow for a node under
/// load, but often enough that the node's write never stalls for its write
/// timeout, so under any load the node must drop events for it (a viewer
/// that stopped reading altogether could be cut before its outbox filled,
/// and the test would wait for drops that never come). Its being cut still
/// counts. Bounded in PUTs and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_reads_too_slowly_is_cut_or_skips_and_puts_go_on() {
    let cluster = Cluster::start(Options::default()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // Small, not tiny: with a window below the loopback MSS, TCP's
    // zero-window probes back off until the stream stalls for a minute
    // (seen under load), which no node can help.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut slow = socket.connect(cluster.addr(1)).await.unwrap();
    slow.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = tokio::time::timeout(PATIENCE, slow.read(&mut first))
        .await
        .expect("a greeting in time")
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("200 OK"));

    // Load, 8 clients at a time, until node 1 drops events for the viewer
    // or cuts it. Every PUT must succeed: the viewer never holds the node.
    const MAX_PUTS: usize = 60_000;
    let deadline = Instant::now() + PATIENCE * 3;
    let client = cluster.client().clone();
    let url = cluster.url(1);
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let (client, url, stop, finished) =
            (client.clone(), url.clone(), stop.clone(), finished.clone());
        workers.spawn(async move {
            let mut statuses = Vec::new();
            for i in (w..MAX_PUTS).step_by(8) {
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                let status = client
                    .put(format!("{url}/v1/kv/load/{i}"))
                    .body(Bytes::from(vec![b'v'; 200]))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
            }
            finished.fetch_add(1, Ordering::Relaxed);
            statuses
        });
    }
    // The viewer, in a task of its own so its pace never depends on the
    // test's other work: a trickle every half second until told to read
    // fast; then up to the deadline for the lost note or the end. Every
    // byte it reads is searched (the last note may come in the trickle).
    let fast = Arc::new(AtomicBool::new(false));
    let viewer = tokio::spawn({
        let fast = fast.clone();
        async move {
            let mut notes = DropNotes::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut told = None;
            while !fast.load(Ordering::Relaxed) {
                // Pacing the slow reader (not waiting for anything).
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                match slow.try_read(&mut buf[..4096]) {
                    Ok(0) => return "cut by the node".to_string(),
                    Ok(n) => told = told.or(notes.feed(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "cut by the node".to_string(),
                }
            }
            let read_deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(note) = &told {
                    return format!("dropped: {note}");
                }
                match tokio::time::timeout_at(read_deadline, slow.read(&mut buf)).await {
                    Err(_) => panic!(
                        "the slow viewer was neither told of dropped events nor cut; it read \
                         {} bytes, node 1's last lost note: {:?}; tail: {:?}",
                        notes.fed,
                        notes.last,
                        String::from_utf8_lossy(&notes.tail)
                    ),
                    Ok(Ok(0)) | Ok(Err(_)) => return "cut by the node".to_string(),
                    Ok(Ok(n)) => told = notes.feed(&buf[..n]),
                }
            }
        }
    });
    let dropped = loop {
        let dropped = cluster.metric(1, "paxos_kv_console_events_dropped").await;
        if dropped > 0 || viewer.is_finished() {
            break dropped;
        }
        assert!(
            finished.load(Ordering::Relaxed) < 8,
            "the load ended (deadline or {MAX_PUTS} PUTs) and node 1 never dropped an \
             event for the slow viewer, nor cut it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    while let Some(statuses) = workers.join_next().await {
        answered.extend(statuses.unwrap());
    }
    fast.store(true, Ordering::Relaxed);
    eprintln!(
        "{} PUTs; node 1 had dropped {dropped} events for the slow viewer",
        answered.len()
    );
    assert!(
        answered.iter().all(|s| *s == 201),
        "some PUTs failed while a viewer lagged: {:?}",
        answered.iter().filter(|s| **s != 201).collect::<Vec<_>>()
    );

    let outcome = viewer.await.expect("the viewer's verdict");
    eprintln!("the slow viewer: {outcome}");
    let chosen = cluster
        .client()
        .get(cluster.kv(3, "load/0"))
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.status(), 200);
    cluster.shutdown().await;
}

// ----- client tokens -----

const ADMIN: &str = "console-admin-secret-2b7e";
const APP: &str = "console-app-secret-91c4";
const WRITER: &str = "console-writer-secret-5d08";

/// Status, `www-authenticate` and body of a GET on `url`, with `bearer`.
async fn answer(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    accept: Option<&str>,
) -> (u16, bool, String) {
    let mut request = client.get(url);
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let challenge = response.headers().contains_key("www-authenticate");
    if status == 200 && url.contains("/v1/events") {
        // A stream: its greeting is enough.
        return (status, challenge, String::new());
    }
    (status, challenge, response.text().await.unwrap_or_default())
}

/// Three serving nodes with `--client-tokens`: "admin" reads and writes
/// everything, "app" reads and writes `app/`, "writer" only writes `app/`.
async fn token_cluster() -> procs::Cluster {
    let mut cluster = procs::Cluster::new(3, |_, ports| procs::peers_string(ports));
    let file = cluster.dir.path().join("tokens.json");
    let entry = |name: &str, secret: &str, read: &[&str], write: &[&str]| {
        serde_json::json!({"name": name, "sha256": paxos_kv::auth::hash_secret(secret),
                           "read": read, "write": write})
    };
    let tokens = serde_json::json!({"tokens": [
        entry("admin", ADMIN, &[""], &[""]),
        entry("app", APP, &["app/"], &["app/"]),
        entry("writer", WRITER, &[], &["app/"]),
    ]});
    std::fs::write(&file, tokens.to_string()).unwrap();
    for id in 1..=3 {
        // Generous deadlines: no request here should see a 503.
        cluster.node(id).config.extra = [
            "--request-timeout",
            "30s",
            "--peer-timeout",
            "5s",
            "--client-tokens",
            file.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    cluster.start_all().await;
    cluster
}

/// Issue 12: "When client tokens are on, the page and the stream need a
/// read token." 401 without or with an unknown token, 403 for a token that
/// may read nothing (or not the key asked), JSON bodies; `?token=` for the
/// page and the stream; a restricted viewer sees its keys' events from
/// every node and never another key's, while an unrestricted one sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_guard_the_console_and_a_viewer_sees_only_its_keys() {
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = token_cluster().await;
    let client = procs::client(std::time::Duration::from_secs(30));
    let u2 = cluster.url(2);

    // The page: 401 (JSON, with a Bearer challenge) without or with an
    // unknown token; a browser gets the page itself under the 401, to ask
    // for a token; 403 for a token that may read nothing; 200 with a
    // token that may read, as header or as ?token=.
    let (status, challenge, body) = answer(&client, &format!("{u2}/"), None, None).await;
    assert_eq!((status, challenge), (401, true), "{body}");
    assert!(serde_json::from_str::<Json>(&body).unwrap()["error"].is_string());
    let (status, _, body) = answer(&client, &format!("{u2}/"), None, Some("text/html")).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("watch Paxos") && body.contains("id=\"login\""),
        "{body}"
    );
    let (status, _, _) = answer(&client, &format!("{u2}/?token=not-a-token"), None, None).await;
    assert_eq!(status, 401);
    let (status, _, body) = answer(&client, &format!("{u2}/?token={WRITER}"), None, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may read no key"), "{body}");
    for (url, bearer) in [
        (format!("{u2}/?token={APP}"), None),
        (format!("{u2}/"), Some(APP)),
    ] {
        let (status, _, body) = answer(&client, &url, bearer, None).await;
        assert_eq!(status, 200, "{url}");
        assert!(body.contains("watch Paxos"));
    }

    // The stream and the console's views, the same way.
    let events = format!("{u2}/v1/events");
    assert_eq!(answer(&client, &events, None, None).await.0, 401);
    assert_eq!(
        answer(&client, &format!("{events}?token={WRITER}"), None, None)
            .await
            .0,
        403
    );
    let (status, _, body) = answer(
        &client,
        &format!("{events}?key=secret/x&token={APP}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 403, "a key the token may not read: {body}");
    assert!(serde_json::from_str::<Json>(&body).unwrap()["error"].is_string());
    // A client token is no cluster token: the local scope is for members.
    let (status, _, _) = answer(&client, &format!("{events}?scope=local"), Some(ADMIN), None).await;
    assert_eq!(status, 401);
    let acceptors = format!("{u2}/v1/console/acceptors?key=secret/x");
    assert_eq!(answer(&client, &acceptors, None, None).await.0, 401);
    assert_eq!(answer(&client, &acceptors, Some(APP), None).await.0, 403);
    assert_eq!(answer(&client, &acceptors, Some(ADMIN), None).await.0, 200);
    let members = format!("{u2}/v1/console/members");
    assert_eq!(answer(&client, &members, None, None).await.0, 401);
    let (status, _, body) = answer(&client, &members, Some(APP), None).await;
    assert_eq!(status, 200);
    let members: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");

    // Two viewers of node 2: "app" (?token=, as a browser) and "admin".
    let open = |secret: &str| {
        let url = format!("{events}?token={secret}");
        async move { EventReader::new(EventReader::open(&url, None).await) }
    };
    let mut app = open(APP).await;
    let mut admin = open(ADMIN).await;
    for stream in [&mut app, &mut admin] {
        stream.relays_up(&[1, 3]).await;
    }
    let put = |key: &'static str, secret: &'static str| {
        let (client, url) = (client.clone(), format!("{}/v1/kv/{key}", cluster.url(1)));
        async move {
            let r = client
                .put(url)
                .bearer_auth(secret)
                .body("v")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "PUT {key}");
        }
    };
    let acked_everywhere = |key: &'static str| {
        move |seen: &[Json]| {
            (1..=3).all(|n| {
                seen.iter().any(|m| {
                    m["key"] == key
                        && (is(m, n, "acceptor", "ack") || is(m, n, "acceptor", "decided"))
                })
            })
        }
    };
    put("secret/x", ADMIN).await;
    // Every node handled secret/x (the admin viewer sees it, relayed too)
    // before app/last is written: each node's stream is in order, so an
    // unfiltered app viewer would see secret/x before app/last.
    let mut admin_saw = admin
        .until("secret/x on every node", acked_everywhere("secret/x"))
        .await;
    put("app/last", APP).await;
    admin_saw.extend(
        admin
            .until("app/last on every node", acked_everywhere("app/last"))
            .await,
    );
    let app_saw = app
        .until("app/last on every node", acked_everywhere("app/last"))
        .await;
    let keys: Vec<&str> = app_saw.iter().filter_map(|m| m["key"].as_str()).collect();
    assert!(
        keys.iter().all(|k| k.starts_with("app/")),
        "the app viewer saw another key: {keys:?}"
    );
    assert!(
        app_saw
            .iter()
            .any(|m| m["node"] == 1 && m["role"] == "proposer"),
        "node 1's messages reach the app viewer through the relay"
    );
    assert!(admin_saw
        .iter()
        .any(|m| m["key"] == "secret/x" && m["node"] == 3));

    // Secrets given as ?token= never reach a log.
    drop((app, admin));
    let logs = cluster.logs(1 << 24);
    for secret in [ADMIN, APP, WRITER] {
        assert!(!logs.contains(secret), "a secret reached a node's log");
    }
}

// ----- the browser -----

/// Kills a child process when dropped, so a failing test leaves none.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

async fn text_of(browser: &fantoccini::Client, css: &str) -> Result<String, String> {
    let element = browser
        .find(fantoccini::Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?;
    element.text().await.map_err(|e| format!("{css}: {e}"))
}

/// Polls until the text of `css` contains `needle`.
async fn wait_text(browser: &fantoccini::Client, css: &str, needle: &str) -> String {
    poll(&format!("{css} showing {needle:?}"), || async {
        let text = text_of(browser, css).await?;
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(format!("{css} shows {text:?}"))
        }
    })
    .await
}

async fn fill(browser: &fantoccini::Client, css: &str, text: &str) {
    let input = browser
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(browser: &fantoccini::Client, css: &str) {
    poll(&format!("click {css}"), || async {
        let button = browser
            .find(fantoccini::Locator::Css(css))
            .await
            .map_err(|e| e.to_string())?;
        button.click().await.map_err(|e| e.to_string())
    })
    .await;
}

/// Polls until a GET of `url` answers 2xx.
async fn wait_ok(http: &reqwest::Client, url: &str) {
    poll(&format!("{url} answers 2xx"), || async {
        let r = http.get(url).send().await.map_err(|e| e.to_string())?;
        r.status()
            .is_success()
            .then_some(())
            .ok_or_else(|| format!("{}", r.status()))
    })
    .await;
}

/// Chromium and chromedriver, or `None` (the test then skips loudly),
/// unless `CI` is set: then their absence fails the test.
fn chromium_or_skip() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (Some(chromium), Some(driver)) = (
        which("chromium").or_else(|| which("chromium-browser")),
        which("chromedriver"),
    ) else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but chromium/chromedriver are missing: .ci/run installs them");
        }
        eprintln!(
            "\n!!! SKIPPED a console browser test: chromium and chromedriver are not \
             installed (apt-get install -y chromium chromium-driver) !!!\n"
        );
        return None;
    };
    Some((chromium, driver))
}

/// A headless Chromium session through a chromedriver of our own (killed
/// when the returned guard drops).
async fn chromium_session(
    chromium: &std::path::Path,
    driver: &std::path::Path,
) -> (fantoccini::Client, Reaped) {
    let http = support::inproc::http_client();
    let driver_port = net::free_port();
    let chromedriver = Command::new(driver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let reaped = Reaped(chromedriver);
    let driver_url = format!("http://127.0.0.1:{driver_port}");
    wait_ok(&http, &format!("{driver_url}/status")).await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1500,1080",
                     "--no-proxy-server"],
        }),
    );
    let browser =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a Chromium session");

    (browser, reaped)
}

/// Issue 12 "Tests": the page served by node 2 of a running `paxos-kv dev`
/// cluster, in headless Chromium: a PUT through the form shows its round
/// and the chosen value, a second value shows 409 with the chosen one, and
/// a node stopped from the page is shown down while a majority still
/// writes. Saves the screenshot the README shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_round_a_conflict_and_a_stopped_node_in_chromium() {
    let Some((chromium, driver)) = chromium_or_skip() else {
        return;
    };

    let data = tempfile::tempdir().unwrap();
    let base = net::free_port_range(0);
    let dev = Command::new(env!("CARGO_BIN_EXE_paxos-kv"))
        .args([
            "dev",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paxos-kv dev");
    let _dev = Reaped(dev);
    let http = support::inproc::http_client();
    for port in base..base + 3 {
        wait_ok(&http, &format!("http://127.0.0.1:{port}/health")).await;
    }

    let (browser, _chromedriver) = chromium_session(&chromium, &driver).await;
    let result = drive(&browser, base).await;
    let _ = browser.close().await;
    result.unwrap();
}

async fn drive(browser: &fantoccini::Client, base: u16) -> Result<(), String> {
    let page = format!("http://127.0.0.1:{}/", base + 1);
    browser.goto(&page).await.map_err(|e| e.to_string())?;
    wait_text(browser, "#self", "node 2").await;
    wait_text(browser, "#stream", "live").await;
    wait_text(browser, "#relays", "2/2").await;
    wait_text(browser, "#card-3", "serving").await;

    // A PUT through the form: 201, and the page shows the round and the value.
    fill(browser, "#key", "app/db/url").await;
    fill(browser, "#value", "postgres://db:5432").await;
    click(browser, "#put").await;
    wait_text(browser, "#result", "201 Created").await;
    wait_text(browser, "#chosen", "postgres://db:5432").await;
    let story = wait_text(browser, "#story", "is chosen").await;
    assert!(story.contains("becomes the proposer"), "{story}");
    let timeline = wait_text(browser, "#timeline", "accepted").await;
    assert!(timeline.contains("accept"), "{timeline}");
    wait_text(browser, "#acceptors", "postgres://db:5432").await;

    // A second value: 409 with the chosen one, explained.
    fill(browser, "#value", "mysql://other").await;
    click(browser, "#put").await;
    let result = wait_text(browser, "#result", "409 Conflict").await;
    assert!(result.contains("postgres://db:5432"), "{result}");
    wait_text(browser, "#story", "409 Conflict").await;

    // Stop node 3 from the page: shown down; a majority still writes.
    click(browser, "#stop-3").await;
    wait_text(browser, "#card-3", "down").await;
    poll("node 3 drawn down", || async {
        let node = browser
            .find(fantoccini::Locator::Css("#node-3"))
            .await
            .map_err(|e| e.to_string())?;
        match node.attr("data-state").await.map_err(|e| e.to_string())? {
            Some(state) if state == "down" => Ok(()),
            other => Err(format!("node 3 drawn as {other:?}")),
        }
    })
    .await;
    fill(browser, "#key", "app/feature-flags").await;
    fill(browser, "#value", "{\"beta\":true}").await;
    click(browser, "#put").await;
    wait_text(browser, "#result", "201 Created").await;
    wait_text(browser, "#story", "did not answer").await;

    let png = browser.screenshot().await.map_err(|e| e.to_string())?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
    std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&path, png).map_err(|e| e.to_string())?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

/// The page with client tokens on, in Chromium: refused without a token,
/// it still loads and asks for one; with a token that may read `app/` it
/// goes live, relays every peer and writes through the form (a key outside
/// the token's prefixes is a 403); a token given as `?token=` is used and
/// dropped from the address bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_and_uses_it_in_chromium() {
    let Some((chromium, driver)) = chromium_or_skip() else {
        return;
    };
    let _one = procs::ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = token_cluster().await;
    let (browser, _chromedriver) = chromium_session(&chromium, &driver).await;
    let result = drive_with_token(&browser, &cluster.url(2)).await;
    let _ = browser.close().await;
    result.unwrap();
}

async fn drive_with_token(browser: &fantoccini::Client, base: &str) -> Result<(), String> {
    browser
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| e.to_string())?;
    wait_text(browser, "#login-why", "needs a client token").await;
    fill(browser, "#token", APP).await;
    click(browser, "#use-token").await;
    wait_text(browser, "#stream", "live").await;
    wait_text(browser, "#relays", "2/2").await;
    fill(browser, "#key", "app/console").await;
    fill(browser, "#value", "through the form").await;
    click(browser, "#put").await;
    wait_text(browser, "#result", "201 Created").await;
    wait_text(browser, "#chosen", "through the form").await;
    fill(browser, "#key", "secret/y").await;
    click(browser, "#put").await;
    wait_text(browser, "#result", "403 Forbidden").await;

    browser
        .goto(&format!("{base}/?token={APP}"))
        .await
        .map_err(|e| e.to_string())?;
    wait_text(browser, "#stream", "live").await;
    let url = browser.current_url().await.map_err(|e| e.to_string())?;
    assert!(
        !url.as_str().contains("token"),
        "the address bar kept the token: {url}"
    );
    Ok(())
}
