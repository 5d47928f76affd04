//! The HTTP contract of docs/api.md, end to end: in-process clusters
//! of real nodes (sled in temp dirs, HTTP on 127.0.0.1 ephemeral ports),
//! driven over real sockets with reqwest or, where reqwest cannot say it
//! (an oversized Content-Length, a chunked body), with hand-written HTTP/1.1.

mod support;

use support::inproc as harness;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use harness::{encode, poll, Cluster, Options, PATIENCE};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// One HTTP answer, fully read.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("<binary>").to_string(),
                )
            })
            .collect();
        let content_type = header(&headers, "content-type");
        let body = response.bytes().await.expect("read the response body");
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    Answer::of(request.send().await.expect("send the request")).await
}

async fn put(c: &Cluster, id: u32, raw_key: &str, value: impl Into<Vec<u8>>) -> Answer {
    send(c.client().put(c.kv(id, raw_key)).body(value.into())).await
}

async fn get(c: &Cluster, id: u32, raw_key: &str) -> Answer {
    send(c.client().get(c.kv(id, raw_key))).await
}

/// docs/api.md "Errors": every 4xx/5xx but 409 is `application/json` with a body
/// that is exactly `{"error": "<one human sentence>"}`.
#[track_caller]
fn assert_json_error(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: status (body {:?})", a.text());
    let ct = a.content_type.as_deref().unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content type {ct:?}, want application/json"
    );
    let body = a.json();
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: body {body} is not an object"));
    assert_eq!(object.len(), 1, "{what}: body {body} has extra fields");
    let message = object["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: body {body} has no error string"));
    assert!(!message.trim().is_empty(), "{what}: empty error message");
    assert!(
        !message.contains('\n'),
        "{what}: error message is not one line"
    );
}

#[track_caller]
fn assert_created(a: &Answer, key: &str, created: bool, what: &str) {
    let status = if created { 201 } else { 200 };
    assert_eq!(a.status, status, "{what}: status (body {:?})", a.text());
    let ct = a.content_type.as_deref().unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content type {ct:?}"
    );
    assert_eq!(
        a.json(),
        json!({ "key": key, "created": created }),
        "{what}: body"
    );
}

#[track_caller]
fn assert_raw(a: &Answer, status: u16, value: &[u8], what: &str) {
    assert_eq!(a.status, status, "{what}: status (body {:?})", a.text());
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/octet-stream"),
        "{what}: content type"
    );
    assert!(
        a.body == value,
        "{what}: body of {} bytes differs from the expected {} bytes",
        a.body.len(),
        value.len()
    );
}

/// Reads one HTTP/1.1 response (status, headers, Content-Length body).
async fn read_response(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read the response");
        assert!(
            n > 0,
            "connection closed before a full response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read the body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Answer {
        status,
        content_type: header(&headers, "content-type"),
        headers,
        body: Bytes::from(body),
    }
}

/// Sends `head` then `parts` on a fresh connection and reads the answer.
async fn raw_exchange(c: &Cluster, id: u32, head: String, parts: Vec<Vec<u8>>) -> Answer {
    let addr = c.addr(id);
    tokio::time::timeout(PATIENCE, async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write head");
        for part in parts {
            stream.write_all(&part).await.expect("write body");
        }
        stream.flush().await.expect("flush");
        read_response(&mut stream).await
    })
    .await
    .expect("raw HTTP exchange timed out")
}

async fn peer(c: &Cluster, id: u32, op: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = c
        .client()
        .post(format!("{}/v1/paxos/{op}", c.url(id)))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// A well-formed acceptor message of a batch (protocol version 2,
/// src/transport/wire.rs): operation `op` on `key` in ballot (`round`,
/// `from`), with a value and its writer when `vote` is given.
fn peer_message(op: &str, from: u32, key: &str, round: u64, vote: Option<(&[u8], u64)>) -> Json {
    let mut m = json!({
        "op": op,
        "key": key,
        "ballot": { "round": round, "node": from },
    });
    if let Some((value, writer)) = vote {
        m["value"] = json!(STANDARD.encode(value));
        m["writer"] = json!(writer);
    }
    m
}

/// Sends `message` to node `on` as a batch of one from member `from`, with
/// the token; the batch must be answered 200 and the acceptor's reply is
/// returned.
async fn one(c: &Cluster, on: u32, from: u32, message: Json) -> Json {
    let body = c.batch_to(on, from, vec![message]).await;
    let a = peer(c, on, "batch", c.token(), body.to_string().into()).await;
    assert_eq!(a.status, 200, "batch: {}", a.text());
    let reply = a.json()["replies"][0].clone();
    assert!(reply["ok"].is_object(), "the acceptor answered: {reply}");
    reply["ok"].clone()
}

/// Plants a vote for `value` in ballot (`round`, `from`) on node `on` only,
/// through the peer API: prepare, then accept.
async fn plant_vote(c: &Cluster, on: u32, from: u32, key: &str, round: u64, value: &[u8]) {
    let promise = one(c, on, from, peer_message("prepare", from, key, round, None)).await;
    assert_eq!(promise["type"], "promise", "{promise}");
    assert_eq!(promise["accepted"], Json::Null, "{promise}");
    let accepted = one(
        c,
        on,
        from,
        peer_message("accept", from, key, round, Some((value, 7))),
    )
    .await;
    assert_eq!(accepted["type"], "accepted", "{accepted}");
}

/// The vote node `id` holds for `key`, as its peer read reports it.
async fn vote_on(c: &Cluster, id: u32, key: &str) -> Json {
    one(c, id, 1, json!({ "op": "read", "key": key })).await
}

const GET_LOCAL: &str = "paxos_kv_get_total{path=\"local\"}";
const GET_QUORUM: &str = "paxos_kv_get_total{path=\"quorum\"}";
const GET_RECOVERED: &str = "paxos_kv_get_total{path=\"recovered\"}";
const GET_NOT_FOUND: &str = "paxos_kv_get_total{path=\"not_found\"}";

/// docs/api.md `PUT`: 201 with `{"key":K,"created":true}` for the first write,
/// 200 with `{"key":K,"created":false}` for the same value again (through
/// another node), 409 with the chosen value's raw bytes for another value;
/// `GET` then answers 200 `application/octet-stream` with the chosen bytes on
/// every node. Guarantee 1 (one value per key) seen from the client side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_is_201_then_200_then_409_and_get_returns_the_chosen_bytes() {
    let c = Cluster::start(Options::default()).await;
    let first = put(&c, 1, "color", "blue").await;
    assert_created(&first, "color", true, "first PUT");
    let again = put(&c, 2, "color", "blue").await;
    assert_created(&again, "color", false, "same value again, other node");
    let other = put(&c, 3, "color", "red").await;
    assert_raw(&other, 409, b"blue", "other value");
    let other_again = put(&c, 1, "color", "red").await;
    assert_raw(&other_again, 409, b"blue", "other value, other node");
    for id in c.ids() {
        assert_raw(&get(&c, id, "color").await, 200, b"blue", "GET");
    }
    let missing = get(&c, 2, "never-written").await;
    assert_json_error(&missing, 404, "GET of a key never written");
    c.shutdown().await;
}

/// docs/api.md "Client API": a key is 1..=1024 bytes of UTF-8 without control
/// characters, after percent-decoding; anything else is 400 with a JSON
/// error on both PUT and GET, and writes nothing. The bounds are exact: 1024
/// bytes (also as 512 two-byte characters) is a key, 1025 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_with_a_json_error() {
    let c = Cluster::start(Options::default()).await;
    let long = "k".repeat(1025);
    let long_wide = encode(&"é".repeat(513));
    let bad: [(&str, &str); 8] = [
        ("", "empty key"),
        (&long, "key of 1025 bytes"),
        (&long_wide, "key of 513 two-byte characters (1026 bytes)"),
        ("line%0Abreak", "control character %0A"),
        ("nul%00", "control character %00"),
        ("del%7F", "control character %7F"),
        ("c1%C2%85", "C1 control character U+0085"),
        ("bad%FFutf8", "invalid UTF-8 %FF"),
    ];
    for (raw, what) in bad {
        assert_json_error(&put(&c, 1, raw, "v").await, 400, &format!("PUT, {what}"));
        assert_json_error(&get(&c, 2, raw).await, 400, &format!("GET, {what}"));
    }
    // No trailing slash at all is an empty key too.
    let bare = send(c.client().get(format!("{}/v1/kv", c.url(3)))).await;
    assert_json_error(&bare, 400, "GET /v1/kv");
    let bare = send(c.client().put(format!("{}/v1/kv", c.url(3))).body("v")).await;
    assert_json_error(&bare, 400, "PUT /v1/kv");

    // The largest keys are fine.
    let max = "k".repeat(1024);
    assert_created(&put(&c, 1, &max, "v").await, &max, true, "1024-byte key");
    assert_raw(&get(&c, 3, &max).await, 200, b"v", "1024-byte key");
    let max_wide = "é".repeat(512);
    assert_created(
        &put(&c, 2, &encode(&max_wide), "w").await,
        &max_wide,
        true,
        "512 two-byte characters",
    );
    // A refused key wrote nothing: its 1024-byte prefix is still its own key.
    assert_json_error(
        &get(&c, 1, &"k".repeat(1023)).await,
        404,
        "untouched neighbour",
    );
    c.shutdown().await;
}

/// docs/api.md: values larger than `--max-value-bytes` (1 MiB by default) are
/// refused with 413 and a JSON error, whether the client announces the size
/// (Content-Length, refused before the body is read) or streams it chunked
/// without a length; neither writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_limit_are_413_with_and_without_content_length() {
    let c = Cluster::start(Options::default()).await;

    // Announced size one byte over the limit; the body is never sent, so a
    // server that waited for it instead of refusing would time out.
    let head = format!(
        "PUT /v1/kv/big HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.addr(1),
        MIB + 1
    );
    let a = raw_exchange(&c, 1, head, vec![]).await;
    assert_json_error(&a, 413, "Content-Length over the limit");

    // Chunked, no Content-Length: exactly the limit, then one more byte. The
    // server can only tell once it has read the last chunk, so nothing is
    // left unread when it answers.
    let head = format!(
        "PUT /v1/kv/big HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        c.addr(2)
    );
    let mut parts = Vec::new();
    let piece = 64 * 1024;
    for _ in 0..MIB / piece {
        let mut chunk = format!("{piece:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', piece));
        chunk.extend_from_slice(b"\r\n");
        parts.push(chunk);
    }
    parts.push(b"1\r\nx\r\n".to_vec());
    let a = raw_exchange(&c, 2, head, parts).await;
    assert_json_error(&a, 413, "chunked body over the limit");

    // A chunked body within the limit is fine (the same path, not refused
    // for being chunked).
    let head = format!(
        "PUT /v1/kv/small HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        c.addr(3)
    );
    let a = raw_exchange(&c, 3, head, vec![b"3\r\nabc\r\n0\r\n\r\n".to_vec()]).await;
    assert_created(&a, "small", true, "small chunked body");

    for id in c.ids() {
        assert_json_error(
            &get(&c, id, "big").await,
            404,
            "a refused value was not written",
        );
    }
    c.shutdown().await;
}

/// docs/api.md "Values are raw bytes ... 0..=1 MiB": every byte value 0..=255
/// and the empty value round-trip exactly, through every node, with
/// `application/octet-stream`; the empty value is a value (a second PUT of
/// it is 200, another value is 409 with an empty body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_empty_values_round_trip_exactly() {
    let c = Cluster::start(Options::default()).await;
    let all: Vec<u8> = (0..=255u8).collect();
    assert_created(&put(&c, 1, "bin", all.clone()).await, "bin", true, "PUT");
    let reversed: Vec<u8> = all.iter().rev().copied().collect();
    assert_raw(&put(&c, 2, "bin", reversed).await, 409, &all, "409 body");
    for id in c.ids() {
        assert_raw(&get(&c, id, "bin").await, 200, &all, "GET all bytes");
    }

    assert_created(&put(&c, 2, "empty", "").await, "empty", true, "empty PUT");
    assert_created(&put(&c, 3, "empty", "").await, "empty", false, "again");
    let conflict = put(&c, 1, "empty", "not empty").await;
    assert_raw(&conflict, 409, b"", "409 with the empty value");
    for id in c.ids() {
        let a = get(&c, id, "empty").await;
        assert_raw(&a, 200, b"", "GET empty");
        assert_eq!(a.header("content-length").as_deref(), Some("0"));
    }
    c.shutdown().await;
}

/// docs/api.md: keys are the rest of the path, percent-decoded, and may contain
/// `/`. So `a/b`, `a%2Fb` name the same register, `%252F` is the literal
/// text `%2F`, and spaces, reserved characters and non-ASCII UTF-8 travel
/// percent-encoded; the JSON answer names the decoded key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_slashes_spaces_escapes_and_unicode() {
    let c = Cluster::start(Options::default()).await;
    let keys = [
        "app/db/url",
        "dir/",
        "with space",
        "percent%2Fliteral",
        "q?x#y&z=1",
        "ключ/値/🔑",
        "+plus+",
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value of {key}");
        let raw = encode(key);
        let id = (i % 3) as u32 + 1;
        assert_created(&put(&c, id, &raw, value.clone()).await, key, true, key);
        for id in c.ids() {
            assert_raw(&get(&c, id, &raw).await, 200, value.as_bytes(), key);
        }
    }
    // A raw `+` in a path is a plus, not a space.
    assert_created(&put(&c, 2, "a+b", "plus").await, "a+b", true, "a+b");
    assert_raw(&get(&c, 3, "a%2Bb").await, 200, b"plus", "a%2Bb");
    assert_json_error(&get(&c, 3, "a%20b").await, 404, "a b");
    // `%2F` decodes to `/`: one register, two spellings.
    assert_created(&put(&c, 1, "x%2Fy", "slash").await, "x/y", true, "x%2Fy");
    assert_raw(&get(&c, 2, "x/y").await, 200, b"slash", "x/y");
    assert_created(&put(&c, 3, "x/y", "slash").await, "x/y", false, "x/y");
    // ... and the literal text "x%2Fy" is another key, still empty.
    assert_json_error(&get(&c, 1, "x%252Fy").await, 404, "literal x%2Fy");
    // Decoding happens once: "percent%2Fliteral" is not "percent/literal".
    assert_json_error(&get(&c, 1, "percent/literal").await, 404, "decoded once");
    c.shutdown().await;
}

/// docs/api.md: values up to 1 MiB (inclusive) are stored; a value of exactly
/// 1 MiB round-trips byte for byte through every node, and (docs/design.md
/// invariant 1's large-value trap) still does after every node restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_value_round_trips_and_survives_restarts() {
    let mut c = Cluster::start(Options::default()).await;
    let value = support::seed::noise(0x5eed_1a26e, MIB);
    assert_created(&put(&c, 2, "big", value.clone()).await, "big", true, "PUT");
    for id in c.ids() {
        assert_raw(&get(&c, id, "big").await, 200, &value, "GET 1 MiB");
    }
    for id in c.ids() {
        c.stop(id).await;
    }
    for id in c.ids() {
        c.restart(id).await;
    }
    for id in c.ids() {
        assert_raw(&get(&c, id, "big").await, 200, &value, "after restart");
    }
    let other = put(&c, 3, "big", "small").await;
    assert_raw(&other, 409, &value, "409 carries the whole 1 MiB");
    c.shutdown().await;
}

/// Guarantee 1 (agreement) and the exactness of 201: 12 concurrent PUTs of
/// different values to one key, spread over all 3 nodes (no leader), give
/// exactly one 201; the other 11 are 409 carrying the winner's bytes, and a
/// GET through every node returns the winner. Repeated on several keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_to_one_key_choose_exactly_one_value() {
    let c = Arc::new(Cluster::start(Options::default()).await);
    for round in 0..3 {
        let key = format!("contended-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(12));
        let mut tasks = Vec::new();
        for i in 0..12u32 {
            let (c, key, barrier) = (c.clone(), key.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let value = format!("value {i} of {key}");
                let request = c.client().put(c.kv(i % 3 + 1, &key)).body(value.clone());
                barrier.wait().await;
                (value, send(request).await)
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("PUT task"));
        }
        let winners: Vec<&(String, Answer)> =
            answers.iter().filter(|(_, a)| a.status == 201).collect();
        let summary: Vec<(u16, String)> = answers
            .iter()
            .map(|(v, a)| (a.status, format!("{v} -> {}", a.text())))
            .collect();
        assert_eq!(winners.len(), 1, "{key}: exactly one 201: {summary:#?}");
        let (winner, a) = winners[0];
        assert_created(a, &key, true, "the winner");
        for (value, a) in &answers {
            if value != winner {
                assert_raw(a, 409, winner.as_bytes(), &format!("{key}: loser {value}"));
            }
        }
        for id in c.ids() {
            assert_raw(&get(&c, id, &key).await, 200, winner.as_bytes(), "GET");
        }
    }
    Arc::into_inner(c).expect("tasks done").shutdown().await;
}

/// The exactness of 201 for identical values (src/value.rs): 12 concurrent
/// PUTs of the SAME bytes to one key, over all 3 nodes, give exactly one
/// 201 ("this request's value is now chosen") and eleven 200s, never two
/// 201s and never a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_the_same_value_give_one_201_and_200s() {
    let c = Arc::new(Cluster::start(Options::default()).await);
    for round in 0..3 {
        let key = format!("same-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(12));
        let mut tasks = Vec::new();
        for i in 0..12u32 {
            let (c, key, barrier) = (c.clone(), key.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let request = c.client().put(c.kv(i % 3 + 1, &key)).body("identical");
                barrier.wait().await;
                send(request).await
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            let a = t.await.expect("PUT task");
            let created = a.status == 201;
            assert_created(&a, &key, created, &key);
            statuses.push(a.status);
        }
        let created = statuses.iter().filter(|s| **s == 201).count();
        assert_eq!(created, 1, "{key}: exactly one 201: {statuses:?}");
        for id in c.ids() {
            assert_raw(&get(&c, id, &key).await, 200, b"identical", "GET");
        }
    }
    Arc::into_inner(c).expect("tasks done").shutdown().await;
}

/// Guarantee 5 (availability with a majority) and 3 (durability): with one
/// node of three down, PUT and GET still complete through the other two
/// (201, 409, 200, and a 404 that a majority confirms); the restarted node
/// then returns the value chosen while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_puts_and_gets_still_succeed() {
    let mut c = Cluster::start(Options::default()).await;
    c.stop(3).await;
    assert_created(&put(&c, 1, "k", "v1").await, "k", true, "PUT, 3 down");
    assert_raw(&put(&c, 2, "k", "v2").await, 409, b"v1", "409, 3 down");
    assert_raw(&get(&c, 2, "k").await, 200, b"v1", "GET, 3 down");
    assert_raw(&get(&c, 1, "k").await, 200, b"v1", "GET, 3 down");
    assert_json_error(&get(&c, 1, "nothing").await, 404, "404 with 3 down");
    c.restart(3).await;
    assert_raw(&get(&c, 3, "k").await, 200, b"v1", "restarted node");
    assert_created(&put(&c, 3, "k2", "w").await, "k2", true, "restarted node");
    c.stop(1).await;
    assert_raw(&get(&c, 2, "k2").await, 200, b"w", "GET, 1 down");
    c.shutdown().await;
}

/// docs/api.md 503 and docs/design.md invariant 5: with two nodes of three down, a PUT
/// ends in 503 (not a hang, not a guess) and a GET of an unknown key is 503,
/// never 404, since no majority can confirm that nothing is chosen. A key
/// this node knows is decided is still served locally. The 503 is honest:
/// after a restart, retrying the same value succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_down_put_and_unknown_get_are_503_never_404() {
    let mut c = Cluster::start(Options::impatient()).await;
    let cr = &c;
    let first = past_503(move || put(cr, 1, "known", "yes")).await;
    assert!(
        first.status == 201 || first.status == 200,
        "PUT: {} {}",
        first.status,
        first.text()
    );
    // Wait until node 1 has recorded the decision (fire and forget).
    poll("node 1 serves `known` locally", || async move {
        let c = cr;
        let before = c.metric(1, GET_LOCAL).await;
        let a = get(c, 1, "known").await;
        if a.status == 503 {
            return Err("503 on a slow machine".to_string());
        }
        assert_raw(&a, 200, b"yes", "GET");
        if c.metric(1, GET_LOCAL).await > before {
            Ok(())
        } else {
            Err("not local yet".to_string())
        }
    })
    .await;
    c.stop(2).await;
    c.stop(3).await;
    assert_json_error(&put(&c, 1, "new", "v").await, 503, "PUT, 2 down");
    assert_json_error(&put(&c, 1, "new", "v").await, 503, "PUT retry, 2 down");
    assert_json_error(&get(&c, 1, "new").await, 503, "GET unknown, 2 down");
    assert_json_error(&get(&c, 1, "other").await, 503, "GET unknown, 2 down");
    assert_raw(&get(&c, 1, "known").await, 200, b"yes", "decided, local");
    let unavailable = c.metric(1, "paxos_kv_unavailable_total").await;
    assert!(unavailable >= 4, "503s are counted: {unavailable}");

    c.restart(2).await;
    let cr = &c;
    let retry = past_503(move || put(cr, 1, "new", "v")).await;
    assert!(
        retry.status == 201 || retry.status == 200,
        "retry after 503: {} {}",
        retry.status,
        retry.text()
    );
    let a = past_503(move || get(cr, 2, "new")).await;
    assert_raw(&a, 200, b"v", "after the retry");
    let a = past_503(move || get(cr, 2, "other")).await;
    assert_json_error(&a, 404, "a majority again");
    c.shutdown().await;
}

/// Repeats `attempt` while it answers 503, as docs/api.md tells clients to ("retry
/// the same value"): on the 2-second-deadline cluster a slow machine alone
/// can cause a 503 where the test expects success.
async fn past_503<F, Fut>(mut attempt: F) -> Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let a = attempt().await;
        if a.status != 503 || tokio::time::Instant::now() >= deadline {
            return a;
        }
    }
}

/// docs/design.md GET step 5 (recovery) and guarantee 4: a value accepted by ONE
/// acceptor only (planted through the peer API) is not chosen yet. A GET
/// through another node whose quorum cannot rule it out (the third node is
/// down, so the majority is {planted, empty}) must finish the instance
/// rather than fail: it returns that value, counted as `recovered`, and
/// from then on every node returns it and a PUT of another value is 409.
/// (With all three up, two empty replies would correctly give 404.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_finished_instance_is_completed_by_a_get() {
    let mut c = Cluster::start(Options::default()).await;
    plant_vote(&c, 1, 2, "half", 1000, b"planted").await;
    let vote = vote_on(&c, 1, "half").await;
    assert_eq!(vote["type"], "vote", "{vote}");
    assert_eq!(vote["accepted"]["value"], STANDARD.encode("planted"));
    assert_eq!(vote_on(&c, 2, "half").await["accepted"], Json::Null);

    c.stop(3).await;
    let recovered_before = c.metric(2, GET_RECOVERED).await;
    assert_raw(&get(&c, 2, "half").await, 200, b"planted", "GET via 2");
    assert_eq!(
        c.metric(2, GET_RECOVERED).await,
        recovered_before + 1,
        "the GET ran a recovery round"
    );
    c.restart(3).await;
    for id in c.ids() {
        assert_raw(&get(&c, id, "half").await, 200, b"planted", "afterwards");
    }
    assert_raw(&put(&c, 3, "half", "mine").await, 409, b"planted", "PUT");
    c.shutdown().await;
}

/// docs/design.md invariant 4: "chosen" means a majority accepted the SAME
/// ballot; equal values under different ballots prove nothing. With the same
/// value (same bytes, same writer) accepted on node 1 in ballot 10.1 and on
/// node 2 in ballot 11.2, a GET through node 3 must run recovery (the
/// `recovered` counter moves, `quorum` does not), then return the value.
/// A second key with different values in the two ballots: any node's answer
/// is one of them, and all agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_values_in_different_ballots_still_need_recovery() {
    let c = Cluster::start(Options::default()).await;
    plant_vote(&c, 1, 1, "twins", 10, b"same").await;
    plant_vote(&c, 2, 2, "twins", 11, b"same").await;
    let recovered = c.metric(3, GET_RECOVERED).await;
    let quorum = c.metric(3, GET_QUORUM).await;
    assert_raw(&get(&c, 3, "twins").await, 200, b"same", "GET via 3");
    assert_eq!(
        c.metric(3, GET_RECOVERED).await,
        recovered + 1,
        "equal values in different ballots went through recovery"
    );
    assert_eq!(
        c.metric(3, GET_QUORUM).await,
        quorum,
        "equal values in different ballots were not taken as chosen"
    );
    for id in c.ids() {
        assert_raw(&get(&c, id, "twins").await, 200, b"same", "afterwards");
    }

    plant_vote(&c, 1, 1, "rivals", 20, b"first").await;
    plant_vote(&c, 2, 2, "rivals", 21, b"second").await;
    let a = get(&c, 3, "rivals").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        a.body == "first" || a.body == "second",
        "recovered a value nobody proposed: {:?}",
        a.text()
    );
    for id in c.ids() {
        assert_raw(&get(&c, id, "rivals").await, 200, &a.body, "all agree");
    }
    c.shutdown().await;
}

/// docs/api.md "Peer protocol": every peer route needs the cluster token. A forged
/// accept batch sent to EVERY node (so that, were it taken, a majority would
/// hold it and a GET would return it) without the token or with a wrong one
/// is 401 and changes nothing; with the token, a malformed body, an unknown
/// protocol version (docs/design.md invariant 7), a `from` that is not a member,
/// an unknown field and an accept without a value are 400, a batch of
/// another cluster or membership epoch is 409 (invariant 10), and the
/// single-message routes of protocol 1 are 404: all change nothing. A later
/// GET is still 404 and every vote is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_refuse_unauthenticated_and_malformed_messages() {
    let c = Cluster::start(Options::default()).await;
    let forged_message = peer_message("accept", 3, "target", 99, Some((b"forged", 1)));
    for id in c.ids() {
        let forged = c.batch_to(id, 3, vec![forged_message.clone()]).await;
        for op in ["batch", "hello", "fence", "scan", "prepare", "accept"] {
            let body = forged.to_string().into_bytes();
            let a = peer(&c, id, op, None, body.clone()).await;
            assert_json_error(&a, 401, &format!("{op} without a token"));
            assert_eq!(a.header("www-authenticate").as_deref(), Some("Bearer"));
            let a = peer(&c, id, op, Some("wrong-token"), body.clone()).await;
            assert_json_error(&a, 401, &format!("{op} with a wrong token"));
            let a = send(
                c.client()
                    .post(format!("{}/v1/paxos/{op}", c.url(id)))
                    .header("authorization", harness::TOKEN)
                    .body(body),
            )
            .await;
            assert_json_error(&a, 401, &format!("{op}: token without Bearer"));
        }
        let token = c.token();
        let batch = |doc: &Json| doc.to_string().into_bytes();
        let a = peer(&c, id, "batch", token, b"{not json".to_vec()).await;
        assert_json_error(&a, 400, "malformed JSON");
        let a = peer(&c, id, "batch", token, b"".to_vec()).await;
        assert_json_error(&a, 400, "empty body");
        let mut v1 = forged.clone();
        v1["version"] = json!(1);
        let a = peer(&c, id, "batch", token, batch(&v1)).await;
        assert_json_error(&a, 400, "protocol version 1");
        assert!(a.text().contains("version"), "says why: {}", a.text());
        let mut stranger = forged.clone();
        stranger["from"] = json!(99);
        let a = peer(&c, id, "batch", token, batch(&stranger)).await;
        assert_json_error(&a, 400, "non-member from");
        let mut unknown_field = forged.clone();
        unknown_field["messages"][0]["extra"] = json!(true);
        let a = peer(&c, id, "batch", token, batch(&unknown_field)).await;
        assert_json_error(&a, 400, "unknown field in a message");
        let mut unknown_field = forged.clone();
        unknown_field["extra"] = json!(true);
        let a = peer(&c, id, "batch", token, batch(&unknown_field)).await;
        assert_json_error(&a, 400, "unknown field in the batch");
        let mut no_value = forged.clone();
        no_value["messages"][0]
            .as_object_mut()
            .expect("object")
            .remove("value");
        let a = peer(&c, id, "batch", token, batch(&no_value)).await;
        assert_json_error(&a, 400, "accept without a value");
        let mut other_cluster = forged.clone();
        other_cluster["cluster"] = json!("another-cluster");
        let a = peer(&c, id, "batch", token, batch(&other_cluster)).await;
        assert_eq!(a.status, 409, "another cluster: {}", a.text());
        assert!(a.text().contains("cluster"), "says why: {}", a.text());
        let mut other_epoch = forged.clone();
        other_epoch["epoch"] = json!(forged["epoch"].as_u64().expect("epoch") + 1);
        let a = peer(&c, id, "batch", token, batch(&other_epoch)).await;
        assert_eq!(a.status, 409, "another epoch: {}", a.text());
        assert!(a.text().contains("epoch"), "says why: {}", a.text());
        for op in ["prepare", "accept", "decide", "read"] {
            let single = json!({ "version": 1, "from": 3, "key": "target",
                "ballot": { "round": 99, "node": 3 }, "value": STANDARD.encode("forged"), "writer": 1 });
            let a = peer(&c, id, op, token, single.to_string().into()).await;
            assert_json_error(&a, 404, &format!("the protocol 1 route /v1/paxos/{op}"));
        }
        let a = peer(&c, id, "bogus", token, batch(&forged)).await;
        assert_json_error(&a, 404, "unknown peer route");
    }
    for id in c.ids() {
        assert_json_error(&get(&c, id, "target").await, 404, "state unchanged");
        let vote = vote_on(&c, id, "target").await;
        assert_eq!(vote["accepted"], Json::Null, "node {id}: {vote}");
    }
    // The genuine article still works, so the refusals above were not
    // refusals of everything.
    assert_created(&put(&c, 1, "target", "real").await, "target", true, "PUT");
    c.shutdown().await;
}

/// The batch route nodes use between themselves (src/transport/wire.rs):
/// one reply per message in order; the same refusals as any peer message;
/// and a batch with one bad message changes nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_batches_answer_in_order_and_bad_batches_change_nothing() {
    let c = Cluster::start(Options::default()).await;
    let token = c.token();
    let message = |op: &str, key: &str, round: u64, value: Option<&[u8]>| {
        let mut m = json!({ "op": op, "key": key });
        if round > 0 {
            m["ballot"] = json!({ "round": round, "node": 2 });
        }
        if let Some(v) = value {
            m["value"] = json!(STANDARD.encode(v));
            m["writer"] = json!(5);
        }
        m
    };
    let template = c.batch_to(1, 2, Vec::new()).await;
    let batch_doc = |messages: Vec<Json>| {
        let mut doc = template.clone();
        doc["messages"] = Json::Array(messages);
        doc
    };
    let batch = |messages: Vec<Json>| batch_doc(messages).to_string().into_bytes();

    // Refused whole: no token, a wrong one, one malformed message among good
    // ones, too many messages, another protocol version, another cluster.
    let good = || {
        vec![
            message("prepare", "b/one", 5, None),
            message("accept", "b/two", 5, Some(b"x")),
        ]
    };
    let a = peer(&c, 1, "batch", None, batch(good())).await;
    assert_json_error(&a, 401, "batch without a token");
    let a = peer(&c, 1, "batch", Some("wrong"), batch(good())).await;
    assert_json_error(&a, 401, "batch with a wrong token");
    let mut bad = good();
    bad.push(message("accept", "b/three", 5, None));
    let a = peer(&c, 1, "batch", token, batch(bad)).await;
    assert_json_error(&a, 400, "a batch with an accept without a value");
    let mut bad = good();
    bad.push(message("prepare", "bad\u{1}key", 5, None));
    let a = peer(&c, 1, "batch", token, batch(bad)).await;
    assert_json_error(&a, 400, "a batch with a control character in a key");
    let mut bad = good();
    let mut fenced_prepare = message("prepare", "b/five", 5, None);
    fenced_prepare["fence"] = json!({ "1": 1 });
    bad.push(fenced_prepare);
    let a = peer(&c, 1, "batch", token, batch(bad)).await;
    assert_json_error(&a, 400, "a batch with a fence on a prepare");
    let many: Vec<Json> = (0..257)
        .map(|i| message("read", &format!("b/{i}"), 0, None))
        .collect();
    let a = peer(&c, 1, "batch", token, batch(many)).await;
    assert_json_error(&a, 400, "257 messages");
    let mut other = batch_doc(good());
    other["version"] = json!(3);
    let a = peer(&c, 1, "batch", token, other.to_string().into()).await;
    assert_json_error(&a, 400, "protocol version 3");
    let mut other = batch_doc(good());
    other["from"] = json!(99);
    let a = peer(&c, 1, "batch", token, other.to_string().into()).await;
    assert_json_error(&a, 400, "a non-member sender");
    let mut other = batch_doc(good());
    other["cluster"] = json!(format!("{}x", template["cluster"].as_str().expect("id")));
    let a = peer(&c, 1, "batch", token, other.to_string().into()).await;
    assert_eq!(a.status, 409, "another cluster: {}", a.text());
    let mut other = batch_doc(good());
    other["epoch"] = json!(template["epoch"].as_u64().expect("epoch") + 1);
    let a = peer(&c, 1, "batch", token, other.to_string().into()).await;
    assert_eq!(a.status, 409, "another epoch: {}", a.text());
    for key in ["b/one", "b/two"] {
        let vote = vote_on(&c, 1, key).await;
        assert_eq!(vote["accepted"], Json::Null, "{key} untouched: {vote}");
    }
    let probe = one(&c, 1, 2, message("prepare", "b/one", 1, None)).await;
    assert_eq!(probe["type"], "promise", "b/one promised nothing: {probe}");

    // Accepted: replies in order, one per message, each the acceptor's own.
    // (Messages of one batch run concurrently, as separate requests would:
    // the promise that the rejection below needs is made by an earlier batch.)
    let replies = |a: &Answer| {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["version"], json!(2), "{}", a.text());
        assert_eq!(a.json()["from"], json!(1), "{}", a.text());
        let replies = a.json()["replies"].clone();
        let types: Vec<String> = replies
            .as_array()
            .expect("replies")
            .iter()
            .map(|r| r["ok"]["type"].as_str().unwrap_or("?").to_owned())
            .collect();
        (types, replies)
    };
    let first = peer(
        &c,
        1,
        "batch",
        token,
        batch(vec![message("prepare", "b/one", 5, None)]),
    )
    .await;
    assert_eq!(replies(&first).0, ["promise"]);
    let second = peer(
        &c,
        1,
        "batch",
        token,
        batch(vec![
            message("accept", "b/two", 5, Some(b"x")),
            message("prepare", "b/one", 4, None),
            message("read", "b/three", 0, None),
            message("prepare", "b/four", 1, None),
        ]),
    )
    .await;
    let (types, all) = replies(&second);
    assert_eq!(types, ["accepted", "rejected", "vote", "promise"], "{all}");
    assert_eq!(all[1]["ok"]["promised"]["round"], json!(5), "{all}");
    let vote = vote_on(&c, 1, "b/two").await;
    assert_eq!(
        vote["accepted"]["value"],
        json!(STANDARD.encode(b"x")),
        "{vote}"
    );
    c.shutdown().await;
}

/// docs/api.md "Errors" for what is not in the tables: unknown routes are 404 and
/// wrong methods 405, both as JSON errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_json_errors() {
    let c = Cluster::start(Options::default()).await;
    let base = c.url(1);
    let client = c.client();
    assert_json_error(
        &send(client.get(format!("{base}/nope"))).await,
        404,
        "GET /nope",
    );
    assert_json_error(
        &send(client.delete(c.kv(1, "k"))).await,
        405,
        "DELETE /v1/kv/k",
    );
    assert_json_error(
        &send(client.post(c.kv(1, "k")).body("v")).await,
        405,
        "POST /v1/kv/k",
    );
    assert_json_error(
        &send(client.get(format!("{base}/v1/paxos/accept"))).await,
        405,
        "GET /v1/paxos/accept",
    );
    c.shutdown().await;
}

/// docs/api.md "Operations": /health is 200 on every node; /v1/status names the
/// node, every member with its URL, and (once the heartbeat has run) says
/// every peer answered recently; /metrics is Prometheus text whose counters
/// follow the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_status_and_metrics() {
    let c = Cluster::start(Options::default()).await;
    for id in c.ids() {
        let health = send(c.client().get(format!("{}/health", c.url(id)))).await;
        assert_eq!(health.status, 200, "health of {id}");

        let status = send(c.client().get(format!("{}/v1/status", c.url(id)))).await;
        assert_eq!(status.status, 200);
        let s = status.json();
        assert_eq!(s["id"], json!(id), "{s}");
        assert_eq!(s["quorum"], json!(2), "{s}");
        let members = s["members"].as_array().expect("members array");
        let ids: Vec<u64> = members.iter().filter_map(|m| m["id"].as_u64()).collect();
        assert_eq!(ids, vec![1, 2, 3], "{s}");
        for m in members {
            let mid = m["id"].as_u64().expect("id") as u32;
            assert_eq!(m["url"], json!(c.url(mid)), "{s}");
            assert_eq!(m["self"], json!(mid == id), "{s}");
        }
    }
    // The heartbeat reaches every peer even on an idle cluster.
    for id in c.ids() {
        let cr = &c;
        poll(&format!("node {id} sees every peer"), || async move {
            let c = cr;
            let s = send(c.client().get(format!("{}/v1/status", c.url(id)))).await;
            let s = s.json();
            let all = s["members"]
                .as_array()
                .expect("members")
                .iter()
                .all(|m| m["reachable"] == json!(true));
            if all {
                Ok(())
            } else {
                Err(format!("not all reachable: {s}"))
            }
        })
        .await;
    }

    let metrics = send(c.client().get(format!("{}/metrics", c.url(1)))).await;
    assert_eq!(metrics.status, 200);
    let ct = metrics.content_type.clone().unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content type {ct:?}");
    assert!(ct.contains("version=0.0.4"), "content type {ct:?}");
    check_exposition_format(&metrics.text());

    let created = "paxos_kv_put_total{outcome=\"created\"}";
    let same = "paxos_kv_put_total{outcome=\"same\"}";
    let conflict = "paxos_kv_put_total{outcome=\"conflict\"}";
    let rounds = "paxos_kv_rounds_total";
    let fast = "paxos_kv_fast_rounds_total{outcome=\"tried\"}";
    let before = [
        c.metric(1, created).await,
        c.metric(1, same).await,
        c.metric(1, conflict).await,
        c.metric(1, rounds).await + c.metric(1, fast).await,
        c.metric(2, GET_NOT_FOUND).await,
    ];
    assert_created(&put(&c, 1, "m", "1").await, "m", true, "PUT");
    assert_created(&put(&c, 1, "m", "1").await, "m", false, "PUT");
    assert_raw(&put(&c, 1, "m", "2").await, 409, b"1", "PUT");
    assert_json_error(&get(&c, 2, "absent").await, 404, "GET");
    let after = [
        c.metric(1, created).await,
        c.metric(1, same).await,
        c.metric(1, conflict).await,
        c.metric(1, rounds).await + c.metric(1, fast).await,
        c.metric(2, GET_NOT_FOUND).await,
    ];
    assert_eq!(after[0], before[0] + 1, "created");
    assert_eq!(after[1], before[1] + 1, "same");
    assert_eq!(after[2], before[2] + 1, "conflict");
    assert!(after[3] > before[3], "rounds, classic or fast");
    assert_eq!(after[4], before[4] + 1, "not_found");
    // Latency histograms: the PUTs and GETs above were timed, and node 1's
    // acceptor made its votes durable in timed group commits.
    for (id, series) in [
        (1, "paxos_kv_request_duration_seconds_count{op=\"put\"}"),
        (2, "paxos_kv_request_duration_seconds_count{op=\"get\"}"),
        (1, "paxos_kv_storage_sync_duration_seconds_count"),
    ] {
        assert!(c.metric(id, series).await > 0, "node {id}: {series}");
    }
    let cr = &c;
    poll("node 3 counts acceptor requests", || async move {
        let n = cr.metric(3, "paxos_kv_acceptor_requests_total").await;
        if n > 0 {
            Ok(())
        } else {
            Err("still 0")
        }
    })
    .await;
    c.shutdown().await;
}

/// Every line of a Prometheus text exposition is `# HELP name text`,
/// `# TYPE name kind`, or `name[{labels}] number`, and every sample's family
/// is declared by a TYPE line before it (a histogram's samples carry the
/// suffixes `_bucket`, `_sum` and `_count`).
fn check_exposition_format(text: &str) {
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "bad HELP line {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.insert(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            assert!(value.parse::<f64>().is_ok(), "bad sample value {line:?}");
            let name = series.split('{').next().expect("name");
            assert!(
                name.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
                "bad metric name {line:?}"
            );
            // A histogram's samples are its name plus _bucket, _sum, _count.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| typed.contains(*base))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line:?}");
            if series.contains('{') {
                assert!(series.ends_with('}'), "bad labels {line:?}");
            }
            samples += 1;
        }
    }
    assert!(samples >= 10, "too few samples:\n{text}");
}

/// docs/design.md invariant 5 and GET step 1: once a PUT is decided, the decision
/// reaches every node (the fire-and-forget decided notice, or the quorum
/// read's own notice), so each node eventually answers a GET from local
/// state without any quorum: the `path="local"` counter moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_key_is_eventually_served_locally_everywhere() {
    let c = Cluster::start(Options::default()).await;
    assert_created(&put(&c, 1, "settled", "v").await, "settled", true, "PUT");
    for id in c.ids() {
        let cr = &c;
        poll(&format!("node {id} answers locally"), || async move {
            let c = cr;
            let before = c.metric(id, GET_LOCAL).await;
            assert_raw(&get(c, id, "settled").await, 200, b"v", "GET");
            let after = c.metric(id, GET_LOCAL).await;
            if after == before + 1 {
                Ok(())
            } else {
                Err(format!("local counter {before} -> {after}"))
            }
        })
        .await;
    }
    c.shutdown().await;
}
