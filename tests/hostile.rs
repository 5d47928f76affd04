//! Bad input and hostile peers (issue 4, part 5).
//!
//! - Property tests over the decoders a stranger can reach: key parsing
//!   (`paxos_kv::key`) and peer messages (`paxos_kv::transport::wire`).
//! - The same over real HTTP: malformed requests get the right 4xx with a
//!   JSON `{"error":...}` body (docs/api.md "Errors") and store nothing.
//! - Forged peer messages without the cluster token: 401, state unchanged.
//! - Slow or stalled clients cannot hold a node (`config::Limits`).
//! - A failing disk gives 5xx, never a false success.
//!
//! Every randomized test is seeded; the seed is printed (shown on failure)
//! and `PAXOS_KV_SEED=<seed>` replays it.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::tmpfs::Tmpfs;

use bytes::Bytes;
use paxos_kv::config::{ServeArgs, TimingArgs};
use paxos_kv::key::{encode_key, parse_key, validate_key, KeyError, MAX_KEY_BYTES};
use paxos_kv::node::{Node, NodeError, PutOutcome, Timing};
use paxos_kv::paxos::ballot::MAX_ROUND;
use paxos_kv::paxos::{Accepted, Ballot, Fence, Members, Reply, Request};
use paxos_kv::server::{prepare, Limits, ProdNode, RunningServer};
use paxos_kv::storage::{MemoryStorage, Storage};
use paxos_kv::transport::wire::{
    BatchMessage, BatchReply, BatchResponse, Op, PeerBatch, LAZY_HEADER, MAX_BATCH_MESSAGES,
    PROTOCOL_VERSION,
};
use paxos_kv::transport::Envelope;
use paxos_kv::transport::MemoryNetwork;
use paxos_kv::value::Value;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngSeed, TestCaseError, TestRunner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ======================================================================
// Seeds and the property runner
// ======================================================================

/// Runs `cases` cases of `property` over `strategy` with a seeded RNG; on
/// failure, panics with the seed and the shrunk input.
fn check<S: Strategy>(
    test: &str,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: Debug,
{
    let seed = support::seed::seed("hostile", test);
    let mut runner = TestRunner::new(PropConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..PropConfig::default()
    });
    if let Err(e) = runner.run(&strategy, property) {
        panic!(
            "{test} failed: {}: {e}",
            support::seed::replay(seed, "hostile", test)
        );
    }
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ======================================================================
// Keys: pure properties
// ======================================================================

/// The control characters of docs/api.md: U+0000..U+001F and U+007F..U+009F.
fn is_control(c: char) -> bool {
    c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// An independent percent-decoder: `%` and two hex digits is a byte; any
/// other `%` stays as it is (the WHATWG/percent-encoding crate rule).
fn percent_decode(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// What docs/api.md says about a raw key: the error it deserves, if any.
fn key_oracle(raw: &str) -> Result<String, KeyError> {
    let key = String::from_utf8(percent_decode(raw)).map_err(|_| KeyError::NotUtf8)?;
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_BYTES {
        Err(KeyError::TooLong(key.len()))
    } else if key.chars().any(is_control) {
        Err(KeyError::Control)
    } else {
        Ok(key)
    }
}

/// Any char but the control characters.
fn key_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => prop::sample::select(vec!['/', '%', '.', '-', '_', '~', ' ', '?', '#', '+', '&', '=', ':', '\\', '"', '\'', '<', '>', '[', ']', '{', '}', '@', '!', '*', '(', ')', ';', ',', '$', '|', '^', '`']),
        1 => any::<char>().prop_filter("no control characters", |c| !is_control(*c)),
        1 => prop::sample::select(vec!['é', 'ß', 'ж', '値', '€', '\u{a0}', '\u{ad}', '\u{200b}', '\u{feff}', '😀', '\u{10ffff}']),
    ]
}

/// Valid keys: 1..=1024 bytes of UTF-8 without control characters, biased
/// towards the length limit.
fn valid_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(key_char(), 1..40),
        1 => proptest::collection::vec(key_char(), 200..400),
        1 => (1000usize..=1024).prop_map(|n| vec!['k'; n]),
    ]
    .prop_map(|chars| {
        let mut key = String::new();
        for c in chars {
            if key.len() + c.len_utf8() > MAX_KEY_BYTES {
                break;
            }
            key.push(c);
        }
        key
    })
}

/// Raw path text a client could send: fragments that stress the decoder.
fn raw_key() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        4 => "[a-z0-9/._~-]{1,6}",
        2 => "%[0-9a-fA-F]{2}",
        1 => "%[0-9a-fA-F]?",
        1 => "%[g-zG-Z%]{0,2}",
        1 => prop::sample::select(vec![
            "%FF", "%C3%28", "%80", "%E2%82", "%F0%9F%98", "%ED%A0%80", "%C0%AF",
            "%00", "%0A", "%1F", "%7F", "%C2%80", "%C2%9F", "%C2%A0", "%E2%82%AC",
            "%F4%8F%BF%BF", "%F4%90%80%80",
        ]).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => (0usize..1100).prop_map(|n| "k".repeat(n)),
        1 => (0usize..360).prop_map(|n| "%41".repeat(n)),
    ];
    proptest::collection::vec(fragment, 0..8).prop_map(|parts| parts.concat())
}

/// Key round trip (docs/api.md "Client API": keys are the percent-decoded rest of
/// the path): every valid key survives `encode_key` then `parse_key`, and the
/// encoding is plain ASCII made of unreserved characters, `/` and `%XX`.
#[test]
fn valid_keys_round_trip_through_the_path_encoding() {
    check(
        "valid_keys_round_trip_through_the_path_encoding",
        2000,
        valid_key(),
        |key| {
            prop_assert!(validate_key(&key).is_ok(), "generator made a bad key");
            let encoded = encode_key(&key);
            prop_assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)),
                "encoding {encoded:?} has characters that need escaping"
            );
            prop_assert_eq!(parse_key(&encoded), Ok(key));
            Ok(())
        },
    );
}

/// Key validation is total and exact (docs/api.md: 1..=1024 bytes of UTF-8 with
/// no control characters, after percent-decoding): an arbitrary raw string
/// never panics the parser and is accepted iff an independent decoder says
/// it is valid, with the same reason when refused.
#[test]
fn raw_keys_are_accepted_iff_valid() {
    check("raw_keys_are_accepted_iff_valid", 4000, raw_key(), |raw| {
        let expected = key_oracle(&raw);
        prop_assert_eq!(parse_key(&raw), expected.clone());
        if let Ok(key) = expected {
            prop_assert_eq!(validate_key(&key), Ok(()));
        }
        Ok(())
    });
}

/// The client's URLs address the key it meant: for every valid key without a
/// `.` or `..` path segment, the URL built from `encode_key` and parsed by
/// the URL crate that reqwest uses still decodes to the same key.
#[test]
fn encoded_keys_survive_url_parsing() {
    check(
        "encoded_keys_survive_url_parsing",
        2000,
        valid_key().prop_filter("dot segments are rewritten by URL parsers", |k| {
            !has_dot_segment(k)
        }),
        |key| {
            let url =
                reqwest::Url::parse(&format!("http://127.0.0.1:7001/v1/kv/{}", encode_key(&key)))
                    .map_err(|e| TestCaseError::fail(format!("unparsable URL: {e}")))?;
            let raw = url.path().strip_prefix("/v1/kv/").unwrap_or_default();
            prop_assert_eq!(parse_key(raw), Ok(key));
            Ok(())
        },
    );
}

fn has_dot_segment(key: &str) -> bool {
    key.split('/').any(|s| s == "." || s == "..")
}

/// Documents the one class of valid keys that URL-based clients cannot
/// address: a `.` or `..` segment (even escaped as `%2E`) is removed by
/// WHATWG URL parsing (reqwest, curl without --path-as-is, browsers), so the
/// request reaches another key. The server itself keeps such keys exactly
/// (see `dot_segments_reach_the_server_verbatim`).
#[test]
fn url_clients_rewrite_dot_segments() {
    for key in ["a/../b", "a/./b", "..", "a/.."] {
        assert!(validate_key(key).is_ok());
        let url = reqwest::Url::parse(&format!("http://h/v1/kv/{}", encode_key(key))).expect("URL");
        let raw = url.path().strip_prefix("/v1/kv/").unwrap_or(url.path());
        assert_ne!(
            parse_key(raw).ok().as_deref(),
            Some(key),
            "{key:?} survived"
        );
        let escaped = key.replace('.', "%2E");
        let url = reqwest::Url::parse(&format!("http://h/v1/kv/{escaped}")).expect("URL");
        let raw = url.path().strip_prefix("/v1/kv/").unwrap_or(url.path());
        assert_ne!(
            parse_key(raw).ok().as_deref(),
            Some(key),
            "{key:?} survived as %2E"
        );
    }
}

// ======================================================================
// Peer messages: pure properties
// ======================================================================

/// Ballots an honest node may send: rounds 1..=MAX_ROUND.
fn ballot() -> impl Strategy<Value = Ballot> {
    let round = prop_oneof![
        3 => 1..=MAX_ROUND,
        1 => prop::sample::select(vec![1, 2, MAX_ROUND - 1, MAX_ROUND]),
    ];
    (round, any::<u32>()).prop_map(|(round, node)| Ballot::new(round, node))
}

/// Rounds no honest node sends.
fn bad_round() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), MAX_ROUND + 1..=u64::MAX]
}

fn value() -> impl Strategy<Value = Value> {
    (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(writer, bytes)| {
        Value {
            writer,
            bytes: Bytes::from(bytes),
        }
    })
}

fn request() -> impl Strategy<Value = Request<Value>> {
    prop_oneof![
        ballot().prop_map(|ballot| Request::Prepare { ballot }),
        (ballot(), value()).prop_map(|(ballot, value)| Request::Accept { ballot, value }),
        Just(Request::Read),
        (ballot(), value()).prop_map(|(ballot, value)| Request::Decide { ballot, value }),
    ]
}

fn vote() -> impl Strategy<Value = Option<Accepted<Value>>> {
    proptest::option::of((ballot(), value()).prop_map(|(ballot, value)| Accepted { ballot, value }))
}

fn reply() -> impl Strategy<Value = Reply<Value>> {
    prop_oneof![
        (ballot(), vote()).prop_map(|(ballot, accepted)| Reply::Promise { ballot, accepted }),
        ballot().prop_map(|ballot| Reply::Accepted { ballot }),
        (ballot(), ballot()).prop_map(|(ballot, promised)| Reply::Rejected { ballot, promised }),
        (ballot(), value()).prop_map(|(ballot, value)| Reply::Decided { ballot, value }),
        vote().prop_map(|accepted| Reply::Vote { accepted }),
        Just(Reply::Ack),
    ]
}

/// JSON built from the field names of the peer protocol, so that random
/// documents get deep into the decoders instead of failing at the first byte.
fn wire_json() -> impl Strategy<Value = serde_json::Value> {
    let name = prop_oneof![
        8 => prop::sample::select(vec![
            "version", "from", "cluster", "epoch", "incarnation", "messages", "op", "key",
            "ballot", "round", "node", "value", "writer", "fence", "replies", "ok", "error",
            "type", "accepted", "promised", "1",
        ]).prop_map(str::to_owned),
        1 => "[a-z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![0u64, 1, 2, 3, u32::MAX as u64, u64::MAX])
            .prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        prop::sample::select(vec![
            "promise", "accepted", "rejected", "decided", "vote", "ack", "aGk=", "", "!!", "a/b",
            "AAAA", "====", "prepare", "accept", "read", "decide",
        ])
        .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((name.clone(), inner), 0..8)
                .prop_map(|fields| { serde_json::Value::Object(fields.into_iter().collect()) }),
        ]
    })
}

/// The envelope a batch in these properties carries.
fn envelope() -> impl Strategy<Value = Envelope> {
    ("[0-9a-f]{0,8}", any::<u64>(), any::<u64>()).prop_map(|(cluster, epoch, incarnation)| {
        Envelope {
            cluster,
            epoch,
            incarnation,
        }
    })
}

/// The fence a request carries: promisers and their incarnations on an
/// accept, nothing on any other operation.
fn fence_for(request: &Request<Value>, promisers: BTreeMap<u32, u64>) -> Fence {
    match request {
        Request::Accept { .. } => Fence(promisers),
        _ => Fence::default(),
    }
}

/// A batch of one message (protocol version 2), as a sender encodes it.
fn batch_of_one(
    from: u32,
    envelope: &Envelope,
    key: &str,
    request: Request<Value>,
    fence: Fence,
) -> PeerBatch {
    PeerBatch::new(from, envelope, vec![BatchMessage::new(key, request, fence)])
}

/// Decodes the only message of a batch document the way `/v1/paxos/batch`
/// does: the batch, then the message under the batch's version.
fn decode_one(doc: serde_json::Value) -> Result<(String, Request<Value>, Fence), String> {
    let batch: PeerBatch = serde_json::from_value(doc).map_err(|e| e.to_string())?;
    let version = batch.version;
    let message = batch.messages.into_iter().next().ok_or("no message")?;
    message.into_request(version)
}

/// A batch answer re-encoded from its decoded replies.
fn response_of(
    from: u32,
    incarnation: u64,
    replies: Vec<Result<Reply<Value>, String>>,
) -> BatchResponse {
    BatchResponse {
        version: PROTOCOL_VERSION,
        from,
        incarnation,
        replies: replies
            .into_iter()
            .map(|r| match r {
                Ok(reply) => BatchReply::reply(reply),
                Err(e) => BatchReply::Error(e),
            })
            .collect(),
    }
}

/// Decodes `bytes` as a batch and as a batch answer and, where that
/// succeeds, runs every conversion; none may panic, and anything accepted
/// must re-encode to the same message.
fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(batch) = serde_json::from_slice::<PeerBatch>(bytes) {
        let envelope = Envelope {
            cluster: batch.cluster.clone(),
            epoch: batch.epoch,
            incarnation: batch.incarnation,
        };
        for message in batch.messages.clone() {
            if let Ok((key, request, fence)) = message.into_request(batch.version) {
                prop_assert_eq!(batch.version, PROTOCOL_VERSION);
                let again =
                    batch_of_one(batch.from, &envelope, &key, request.clone(), fence.clone());
                let json = serde_json::to_value(&again).expect("encodes");
                prop_assert_eq!(decode_one(json), Ok((key, request, fence)));
            }
        }
    }
    if let Ok(response) = serde_json::from_slice::<BatchResponse>(bytes) {
        let (from, incarnation, sent) =
            (response.from, response.incarnation, response.replies.len());
        if let Ok(replies) = response.into_replies(sent) {
            let json = serde_json::to_vec(&response_of(from, incarnation, replies.clone()))
                .expect("encodes");
            let back: BatchResponse = serde_json::from_slice(&json).expect("decodes");
            prop_assert_eq!(back.into_replies(sent), Ok(replies));
        }
    }
    Ok(())
}

/// The peer decoders are total (docs/design.md invariant 7: a bad message is
/// refused with an error, not misread): arbitrary bytes never panic them.
#[test]
fn peer_decoders_survive_arbitrary_bytes() {
    check(
        "peer_decoders_survive_arbitrary_bytes",
        3000,
        proptest::collection::vec(any::<u8>(), 0..512),
        |bytes| decode_everything(&bytes),
    );
}

/// The same for arbitrary JSON documents shaped like peer messages, which
/// reach the field-level checks (types, versions, base64, tags).
#[test]
fn peer_decoders_survive_arbitrary_json() {
    check(
        "peer_decoders_survive_arbitrary_json",
        3000,
        wire_json(),
        |doc| decode_everything(&serde_json::to_vec(&doc).expect("JSON")),
    );
}

/// How a well-formed batch of one message is broken.
#[derive(Clone, Debug)]
enum Break {
    /// Removes a field every batch needs.
    DropBatch(&'static str),
    /// Removes a field every message needs.
    DropMessage(&'static str),
    /// Removes a field this operation needs.
    DropOpField,
    /// Another protocol version.
    Version(u32),
    /// A field the protocol does not know, in the batch or in the message.
    Unknown { in_batch: bool },
    /// The value is not base64.
    NotBase64,
    /// A ballot round outside 1..=MAX_ROUND.
    Round(u64),
    /// A fence where none belongs (any operation but accept), or a fence
    /// that is not a map of incarnations (accept).
    Fence,
}

fn breakage() -> impl Strategy<Value = Break> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "from",
            "cluster",
            "epoch",
            "incarnation",
            "messages"
        ])
        .prop_map(Break::DropBatch),
        prop::sample::select(vec!["op", "key"]).prop_map(Break::DropMessage),
        Just(Break::DropOpField),
        any::<u32>()
            .prop_filter("another version", |v| *v != PROTOCOL_VERSION)
            .prop_map(Break::Version),
        any::<bool>().prop_map(|in_batch| Break::Unknown { in_batch }),
        Just(Break::NotBase64),
        bad_round().prop_map(Break::Round),
        Just(Break::Fence),
    ]
}

/// Breaks the one-message batch `doc` (of operation `op`) as `broken` says.
fn apply_break(doc: &mut serde_json::Value, op: Op, broken: &Break, pick: usize) {
    let batch = doc.as_object_mut().expect("an object");
    match broken {
        Break::DropBatch(name) => {
            batch.remove(*name);
            return;
        }
        Break::Version(v) => {
            batch.insert("version".into(), json!(v));
            return;
        }
        Break::Unknown { in_batch: true } => {
            batch.insert("leader".into(), json!(true));
            return;
        }
        _ => {}
    }
    let message = batch["messages"][0].as_object_mut().expect("a message");
    match broken {
        Break::DropMessage(name) => {
            message.remove(*name);
        }
        Break::DropOpField => {
            let needed: &[&str] = match op {
                Op::Prepare => &["ballot"],
                Op::Accept | Op::Decide => &["ballot", "value", "writer"],
                // A read needs only what every message needs.
                Op::Read => &["key"],
            };
            message.remove(needed[pick % needed.len()]);
        }
        Break::Unknown { .. } => {
            message.insert("leader".into(), json!(true));
        }
        Break::NotBase64 => {
            message.insert("value".into(), json!("not base64!"));
        }
        Break::Round(round) if op != Op::Read => {
            message.insert("ballot".into(), json!({"round": round, "node": 1}));
        }
        // A read carries no ballot: break it another way.
        Break::Round(_) => {
            message.insert("op".into(), json!("write"));
        }
        Break::Fence if op == Op::Accept => {
            message.insert("fence".into(), json!({"one": "first"}));
        }
        Break::Fence => {
            message.insert("fence".into(), json!({"1": 1}));
        }
        Break::DropBatch(_) | Break::Version(_) => unreachable!("handled above"),
    }
}

/// Peer batches (docs/design.md invariants 2, 7 and 8): a well-formed batch of
/// one message round-trips exactly, fence and envelope included; one with a
/// missing field, another version, an unknown field, a non-base64 value, a
/// ballot round outside 1..=MAX_ROUND or a misplaced fence is refused with
/// an error, never decoded into some other request.
#[test]
fn peer_requests_round_trip_and_broken_ones_are_refused() {
    let strategy = (
        any::<u32>(),
        envelope(),
        valid_key(),
        request(),
        proptest::collection::btree_map(1u32..8, 1u64..1000, 0..4),
        breakage(),
    );
    check(
        "peer_requests_round_trip_and_broken_ones_are_refused",
        3000,
        strategy,
        |(from, envelope, key, request, promisers, broken)| {
            let op = Op::of(&request);
            let fence = fence_for(&request, promisers);
            let good = batch_of_one(from, &envelope, &key, request.clone(), fence.clone());
            let mut doc = serde_json::to_value(&good).expect("encodes");
            let back: PeerBatch = serde_json::from_value(doc.clone()).expect("decodes");
            prop_assert_eq!(back.from, from);
            prop_assert_eq!(&back.cluster, &envelope.cluster);
            prop_assert_eq!(back.epoch, envelope.epoch);
            prop_assert_eq!(back.incarnation, envelope.incarnation);
            prop_assert_eq!(
                decode_one(doc.clone()),
                Ok((key.clone(), request.clone(), fence))
            );
            apply_break(&mut doc, op, &broken, from as usize);
            let result = decode_one(doc.clone());
            prop_assert!(result.is_err(), "{broken:?} was accepted: {doc}");
            Ok(())
        },
    );
}

/// Batch answers (docs/design.md invariants 2 and 7): every reply round-trips
/// exactly, an acceptor's error included; another version, a count that
/// does not match the batch, a reply without its `type`, or one carrying a
/// ballot round above MAX_ROUND is an error.
#[test]
fn peer_responses_round_trip_and_broken_ones_are_refused() {
    let strategy = (
        any::<u32>(),
        reply(),
        any::<u32>().prop_filter("another version", |v| *v != PROTOCOL_VERSION),
        MAX_ROUND + 1..=u64::MAX,
        ".{0,20}",
    );
    check(
        "peer_responses_round_trip_and_broken_ones_are_refused",
        3000,
        strategy,
        |(from, reply, version, huge_round, error)| {
            let sent = vec![Ok(reply.clone()), Err(error.clone())];
            let doc = serde_json::to_value(response_of(from, 3, sent.clone())).expect("encodes");
            let back: BatchResponse = serde_json::from_value(doc.clone()).expect("decodes");
            prop_assert_eq!(back.from, from);
            prop_assert_eq!(back.incarnation, 3);
            prop_assert_eq!(back.into_replies(2), Ok(sent));
            let back: BatchResponse = serde_json::from_value(doc.clone()).expect("decodes");
            prop_assert!(back.into_replies(1).is_err(), "a count mismatch");
            let mut other = doc.clone();
            other["version"] = json!(version);
            let decoded: BatchResponse = serde_json::from_value(other).expect("still JSON");
            prop_assert!(decoded.into_replies(2).is_err());
            let mut untyped = doc.clone();
            untyped["replies"][0]["ok"]
                .as_object_mut()
                .expect("object")
                .remove("type");
            prop_assert!(serde_json::from_value::<BatchResponse>(untyped).is_err());
            // A ballot above MAX_ROUND anywhere in the reply is refused.
            let mut high = doc;
            let mut raised = false;
            let ok = &mut high["replies"][0]["ok"];
            for field in ["ballot", "promised"] {
                if let Some(b) = ok.get_mut(field) {
                    b["round"] = json!(huge_round);
                    raised = true;
                }
            }
            if let Some(b) = ok.get_mut("accepted").and_then(|a| a.get_mut("ballot")) {
                b["round"] = json!(huge_round);
                raised = true;
            }
            let decoded: BatchResponse = serde_json::from_value(high).expect("still JSON");
            prop_assert_eq!(decoded.into_replies(2).is_err(), raised);
            Ok(())
        },
    );
}

// ======================================================================
// In-process nodes over real HTTP and sled
// ======================================================================

/// The cluster token of every test cluster.
const TOKEN: &str = "hostile-test-token-0123456789abcdef";

/// How a test cluster is configured.
#[derive(Clone)]
struct Setup {
    nodes: u32,
    token: Option<&'static str>,
    max_value_bytes: usize,
    body_timeout: Duration,
    request_timeout: Duration,
    limits: Limits,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            nodes: 1,
            token: Some(TOKEN),
            max_value_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

/// One node of a test cluster.
struct TestNode {
    id: u32,
    addr: SocketAddr,
    dir: PathBuf,
    node: Arc<ProdNode>,
    server: Option<RunningServer>,
}

impl TestNode {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kv(&self, key: &str) -> String {
        self.url(&format!("/v1/kv/{}", encode_key(key)))
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    async fn stop(&mut self) -> Result<(), String> {
        match self.server.take() {
            Some(server) => Ok(server.stop().await?),
            None => Ok(()),
        }
    }
}

/// A cluster of in-process nodes on 127.0.0.1 ephemeral ports, each with its
/// own sled directory under `root`.
struct Cluster {
    setup: Setup,
    peers: String,
    nodes: Vec<TestNode>,
}

impl Cluster {
    async fn start(setup: Setup, root: &Path) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..setup.nodes {
            listeners.push(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            );
        }
        let peers = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}=http://{}", i + 1, l.local_addr().expect("addr")))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            setup,
            peers,
            nodes: Vec::new(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let dir = root.join(format!("node{}", i + 1));
            let node = cluster
                .launch(i as u32 + 1, dir, listener)
                .expect("node starts");
            cluster.nodes.push(node);
        }
        for id in 1..=cluster.nodes.len() as u32 {
            cluster.serving(id).await;
        }
        cluster
    }

    /// Waits until node `id` serves (`/ready` is 200): a new cluster forms
    /// only once every member answers.
    async fn serving(&self, id: u32) {
        let client = http();
        let url = self.node(id).url("/ready");
        eventually(
            &format!("node {id} serves (/ready 200)"),
            Duration::from_secs(60),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let r = client.get(url).send().await.ok()?;
                    (r.status() == 200).then_some(())
                }
            },
        )
        .await;
    }

    fn launch(
        &self,
        id: u32,
        dir: PathBuf,
        listener: tokio::net::TcpListener,
    ) -> Result<TestNode, String> {
        let addr = listener.local_addr().expect("addr");
        let args = ServeArgs {
            id,
            listen: addr.to_string(),
            data_dir: dir.clone(),
            peers: Some(self.peers.clone()),
            join: None,
            cluster_token: self.setup.token.map(str::to_owned),
            max_value_bytes: self.setup.max_value_bytes,
            timing: TimingArgs {
                request_timeout: self.setup.request_timeout,
                peer_timeout: Some(Duration::from_secs(1)),
                ..TimingArgs::default()
            },
            security: Default::default(),
        };
        let mut config = args.validate().map_err(|e| e.to_string())?;
        config.body_timeout = self.setup.body_timeout;
        config.limits = self.setup.limits.clone();
        let prepared = prepare(config)?;
        let node = prepared.node().clone();
        let server = prepared.spawn(listener)?;
        Ok(TestNode {
            id,
            addr,
            dir,
            node,
            server: Some(server),
        })
    }

    fn node(&self, id: u32) -> &TestNode {
        &self.nodes[(id - 1) as usize]
    }

    /// Restarts node `id` (already stopped) on its old port and directory,
    /// and waits until it serves.
    async fn restart(&mut self, id: u32) {
        self.restart_unready(id).await;
        self.serving(id).await;
    }

    /// Restarts node `id` (already stopped) on its old port and directory,
    /// once every handle on its old sled database is gone, without waiting
    /// for it to serve.
    async fn restart_unready(&mut self, id: u32) {
        let index = (id - 1) as usize;
        assert!(self.nodes[index].server.is_none(), "stop node {id} first");
        let old = self.nodes.remove(index);
        let (addr, dir) = (old.addr, old.dir.clone());
        let weak = Arc::downgrade(&old.node);
        drop(old);
        eventually("the old node is dropped", Duration::from_secs(20), || {
            let gone = weak.strong_count() == 0;
            async move { gone.then_some(()) }
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let node = loop {
            let last = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => match self.launch(id, dir.clone(), listener) {
                    Ok(node) => break node,
                    Err(e) => e,
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "node {id} does not restart: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.nodes.insert(index, node);
    }

    async fn stop(mut self) {
        for node in &mut self.nodes {
            let _ = node.stop().await;
        }
    }
}

fn http() -> reqwest::Client {
    support::net::client(Duration::from_secs(30))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A response as read off the socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body).
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "closed before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                rest.extend_from_slice(&chunk[..n]);
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .map_err(std::io::Error::other)?;
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
    } else {
        let len: usize = find("content-length")
            .map(|v| v.parse().map_err(std::io::Error::other))
            .transpose()?
            .unwrap_or(0);
        while rest.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Sends `request` on a fresh connection and reads the response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        read_response(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| std::io::Error::other("no response within 30 s"))?
}

/// docs/api.md "Errors": a 4xx/5xx other than 409 has a JSON body that is
/// exactly `{"error": "<sentence>"}`.
fn json_error(response: &RawResponse) -> Result<String, String> {
    let content_type = response.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "status {} with content-type {content_type:?}, body {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })?;
    let fields = doc
        .as_object()
        .ok_or_else(|| format!("not an object: {doc}"))?;
    match fields.get("error").and_then(|e| e.as_str()) {
        Some(message) if fields.len() == 1 && !message.is_empty() => Ok(message.to_owned()),
        _ => Err(format!("not {{\"error\": \"...\"}}: {doc}")),
    }
}

// ======================================================================
// Malformed requests over HTTP
// ======================================================================

/// The largest value of the node under test in the malformed-request
/// property, small so that oversized bodies are cheap.
const SMALL_LIMIT: usize = 1000;

/// A request that breaks one rule of docs/api.md, and the status it deserves.
#[derive(Clone, Debug)]
enum Bad {
    /// 400: a key that is empty, too long, not UTF-8 or has a control
    /// character after percent-decoding.
    Key { method: &'static str, raw: String },
    /// 413: a value over the limit, declared or chunked.
    TooLarge {
        key: String,
        len: usize,
        chunked: bool,
    },
    /// 405: a method the route does not serve.
    Method { method: &'static str, path: String },
    /// 404: no such route.
    Route { method: &'static str, path: String },
    /// 401: a peer route without the right token; the body is a
    /// well-formed forged request or junk.
    Forged {
        op: &'static str,
        auth: Option<String>,
        body: Vec<u8>,
    },
    /// 400: the right token, a broken batch.
    PeerBody { body: Vec<u8> },
    /// 413: the right token, a value over the limit.
    PeerTooLarge {
        op: &'static str,
        key: String,
        len: usize,
    },
    /// 404: the right token, an operation that does not exist (the single
    /// message routes of protocol 1 included).
    PeerOp { op: String },
    /// 409: the right token, a well-formed batch of another cluster or
    /// membership epoch.
    OtherCluster { body: Vec<u8> },
}

impl Bad {
    fn status(&self) -> u16 {
        match self {
            Bad::Key { .. } | Bad::PeerBody { .. } => 400,
            Bad::Forged { .. } => 401,
            Bad::Route { .. } | Bad::PeerOp { .. } => 404,
            Bad::Method { .. } => 405,
            Bad::TooLarge { .. } | Bad::PeerTooLarge { .. } => 413,
            Bad::OtherCluster { .. } => 409,
        }
    }

    /// Valid keys this request names; each must still be empty afterwards.
    fn keys(&self) -> Vec<String> {
        match self {
            Bad::TooLarge { key, .. } | Bad::PeerTooLarge { key, .. } => vec![key.clone()],
            Bad::Key { raw, .. } => parse_key(raw).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn request(&self, host: SocketAddr) -> Vec<u8> {
        let plain = |method: &str, path: &str, headers: &[String], body: &[u8]| {
            let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
            for h in headers {
                r.push_str(h);
                r.push_str("\r\n");
            }
            r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut r = r.into_bytes();
            r.extend_from_slice(body);
            r
        };
        let bearer = format!("Authorization: Bearer {TOKEN}");
        let json = "Content-Type: application/json".to_owned();
        match self {
            Bad::Key { method, raw } => plain(method, &format!("/v1/kv/{raw}"), &[], b"v"),
            Bad::TooLarge {
                key,
                len,
                chunked: false,
            } => plain(
                "PUT",
                &format!("/v1/kv/{}", encode_key(key)),
                &[],
                &vec![b'x'; *len],
            ),
            Bad::TooLarge {
                key,
                len,
                chunked: true,
            } => {
                let mut r = format!(
                    "PUT /v1/kv/{} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n",
                    encode_key(key)
                )
                .into_bytes();
                for part in vec![b'x'; *len].chunks(300) {
                    r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    r.extend_from_slice(part);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            }
            Bad::Method { method, path } | Bad::Route { method, path } => {
                plain(method, path, &[], b"")
            }
            Bad::Forged { op, auth, body } => {
                let mut headers = vec![json];
                headers.extend(auth.iter().map(|a| format!("Authorization: {a}")));
                plain("POST", &format!("/v1/paxos/{op}"), &headers, body)
            }
            Bad::PeerBody { body } | Bad::OtherCluster { body } => {
                plain("POST", "/v1/paxos/batch", &[bearer, json], body)
            }
            Bad::PeerTooLarge { op, key, len } => {
                let ballot = Ballot::new(1, 1);
                let value = Value {
                    writer: 1,
                    bytes: Bytes::from(vec![7u8; *len]),
                };
                let request = if *op == "decide" {
                    Request::Decide { ballot, value }
                } else {
                    Request::Accept { ballot, value }
                };
                let message = batch_of_one(1, &self_envelope(), key, request, Fence::default());
                let body = serde_json::to_vec(&message).expect("encodes");
                plain("POST", "/v1/paxos/batch", &[bearer, json], &body)
            }
            Bad::PeerOp { op } => plain("POST", &format!("/v1/paxos/{op}"), &[bearer, json], b"{}"),
        }
    }
}

/// Keys that can travel in a request line as they are: ASCII, no spaces.
fn plain_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_~-][a-zA-Z0-9/._~-]{0,30}"
        .prop_filter("URL clients rewrite dot segments", |k| !has_dot_segment(k))
}

/// Raw keys that percent-decode to something invalid.
fn invalid_raw_key() -> impl Strategy<Value = String> {
    let affix = || "[a-zA-Z0-9/_~-]{0,8}";
    prop_oneof![
        Just(String::new()),
        (MAX_KEY_BYTES + 1..MAX_KEY_BYTES + 80).prop_map(|n| "k".repeat(n)),
        (MAX_KEY_BYTES / 3 + 1..MAX_KEY_BYTES / 3 + 40).prop_map(|n| "%E2%82%AC".repeat(n)),
        (
            affix(),
            prop::sample::select(vec![
                "%FF",
                "%C3%28",
                "%80",
                "%E2%82",
                "%ED%A0%80",
                "%C0%AF"
            ]),
            affix()
        )
            .prop_map(|(a, bad, b)| format!("{a}{bad}{b}")),
        (
            affix(),
            prop_oneof![
                (0u8..0x20).prop_map(|b| format!("%{b:02X}")),
                Just("%7F".to_owned()),
                (0x80u8..0xa0).prop_map(|b| format!("%C2%{b:02X}")),
            ],
            affix()
        )
            .prop_map(|(a, bad, b)| format!("{a}{bad}{b}")),
    ]
}

/// The envelope of the one-node cluster the malformed-request property runs
/// against (set once it serves): a batch must carry its cluster id and
/// epoch to get past the 409 and reach the checks under test.
static SELF_ENVELOPE: std::sync::OnceLock<Envelope> = std::sync::OnceLock::new();

fn self_envelope() -> Envelope {
    SELF_ENVELOPE
        .get()
        .cloned()
        .expect("the node under test set its envelope")
}

/// The peer routes of protocol 2.
const PEER_ROUTES: [&str; 4] = ["batch", "hello", "fence", "scan"];

/// A forged but well-formed peer batch (from member 1), for any peer route.
fn forged_body() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    (
        plain_key(),
        request(),
        prop::sample::select(PEER_ROUTES.to_vec()),
    )
        .prop_map(|(key, request, op)| {
            let batch = batch_of_one(1, &self_envelope(), &key, request, Fence::default());
            (op, serde_json::to_vec(&batch).expect("encodes"))
        })
}

/// A batch body that must be refused with 400 by a one-node cluster
/// (member 1).
fn broken_peer_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Not JSON at all.
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut bytes| {
            bytes.insert(0, b'<');
            bytes
        }),
        // JSON, but not a batch: anything the decoder takes would be obeyed
        // (or refused with 409 for its envelope), so only refusals count.
        wire_json().prop_filter_map("a decodable batch", |doc| {
            let bytes = serde_json::to_vec(&doc).ok()?;
            serde_json::from_slice::<PeerBatch>(&bytes)
                .is_err()
                .then_some(bytes)
        }),
        // A good batch broken in one place.
        (plain_key(), request(), breakage(), any::<usize>()).prop_map(
            |(key, request, broken, pick)| {
                let op = Op::of(&request);
                let fence = fence_for(&request, BTreeMap::from([(1, 1)]));
                let batch = batch_of_one(1, &self_envelope(), &key, request, fence);
                let mut doc = serde_json::to_value(batch).expect("encodes");
                apply_break(&mut doc, op, &broken, pick);
                serde_json::to_vec(&doc).expect("JSON")
            }
        ),
        // Well-formed, but from a stranger, about a bad key, or too many.
        (
            request(),
            prop_oneof![Just(0u32), 2u32..],
            invalid_raw_key(),
            0..3u8,
        )
            .prop_map(|(request, stranger, raw, how)| {
                let mut batch = batch_of_one(1, &self_envelope(), "k", request, Fence::default());
                match how {
                    0 => batch.from = stranger,
                    // The key travels decoded in JSON: use the decoded form
                    // when it is UTF-8, else a control character.
                    1 => {
                        batch.messages[0].key = String::from_utf8(percent_decode(&raw))
                            .unwrap_or_else(|_| "a\u{7}b".to_owned())
                    }
                    _ => {
                        let one = batch.messages[0].clone();
                        batch.messages = vec![one; MAX_BATCH_MESSAGES + 1];
                    }
                }
                serde_json::to_vec(&batch).expect("encodes")
            }),
    ]
}

/// A well-formed batch whose envelope names another cluster or epoch.
fn other_cluster_body() -> impl Strategy<Value = Vec<u8>> {
    (plain_key(), request(), any::<bool>(), 1u64..1000).prop_map(
        |(key, request, other_cluster, bump)| {
            let mut envelope = self_envelope();
            if other_cluster {
                envelope.cluster = format!("not-{}", envelope.cluster);
            } else {
                envelope.epoch += bump;
            }
            let batch = batch_of_one(1, &envelope, &key, request, Fence::default());
            serde_json::to_vec(&batch).expect("encodes")
        },
    )
}

fn bad_request() -> impl Strategy<Value = Bad> {
    let suffix = "([0-9][a-z0-9]{0,6})?";
    prop_oneof![
        3 => (prop::sample::select(vec!["GET", "PUT"]), invalid_raw_key())
            .prop_map(|(method, raw)| Bad::Key { method, raw }),
        2 => (plain_key(), SMALL_LIMIT + 1..SMALL_LIMIT * 3, any::<bool>())
            .prop_map(|(key, len, chunked)| Bad::TooLarge { key, len, chunked }),
        2 => prop_oneof![
            (
                prop::sample::select(vec!["POST", "DELETE", "PATCH", "OPTIONS", "FOO", "PROPFIND"]),
                plain_key().prop_map(|k| format!("/v1/kv/{k}")),
            ),
            (
                prop::sample::select(vec!["POST", "DELETE"]),
                prop::sample::select(vec!["/v1/kv/".to_owned(), "/v1/kv".to_owned()]),
            ),
            (
                prop::sample::select(vec!["PUT", "POST", "DELETE", "PATCH"]),
                prop::sample::select(vec!["/health".to_owned(), "/ready".to_owned(), "/v1/status".to_owned(), "/metrics".to_owned()]),
            ),
            (
                prop::sample::select(vec!["GET", "PUT", "DELETE"]),
                prop::sample::select(vec!["batch", "hello", "prepare", "accept", "x"])
                    .prop_map(|op| format!("/v1/paxos/{op}")),
            ),
        ]
        .prop_map(|(method, path)| Bad::Method { method, path }),
        2 => (
            prop::sample::select(vec!["GET", "PUT", "POST"]),
            prop::sample::select(vec![
                "/index.html", "/v2/kv/x", "/v1/kvx", "/v1/kv2/", "/healthz", "/health/", "/metrics/",
                "/v1/status/", "/v1/statusx", "/v1/paxos", "/v1/paxos/batch/", "/readyz",
                "/kv/", "/v1//kv/x",
            ]),
            suffix,
        )
            .prop_map(|(method, prefix, suffix)| Bad::Route {
                method,
                path: format!("{prefix}{suffix}"),
            }),
        3 => (
            forged_body(),
            prop::sample::select(vec![0usize, 1, 2, 3, 4, 5, 6]),
            proptest::collection::vec(any::<u8>(), 0..32),
            any::<bool>(),
        )
            .prop_map(|((op, body), auth, junk, use_junk)| {
                let auth = match auth {
                    0 => None,
                    1 => Some("Bearer wrong".to_owned()),
                    2 => Some(format!("Bearer {TOKEN}x")),
                    3 => Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
                    4 => Some(format!("Basic {TOKEN}")),
                    5 => Some(TOKEN.to_owned()),
                    _ => Some("Bearer ".to_owned()),
                };
                Bad::Forged { op, auth, body: if use_junk { junk } else { body } }
            }),
        3 => broken_peer_body().prop_map(|body| Bad::PeerBody { body }),
        1 => (
            prop::sample::select(vec!["accept", "decide"]),
            plain_key(),
            SMALL_LIMIT + 1..SMALL_LIMIT * 2,
        )
            .prop_map(|(op, key, len)| Bad::PeerTooLarge { op, key, len }),
        1 => prop_oneof![
            prop::sample::select(vec!["prepare", "accept", "read", "decide"]).prop_map(str::to_owned),
            "[a-z]{1,10}",
        ]
            .prop_filter("an existing operation", |op| !PEER_ROUTES.contains(&op.as_str()))
            .prop_map(|op| Bad::PeerOp { op }),
        1 => other_cluster_body().prop_map(|body| Bad::OtherCluster { body }),
    ]
}

/// docs/api.md "Errors" and the status tables: a random malformed request (bad
/// key, oversized value, wrong method, unknown route, forged or broken peer
/// message) gets exactly the right 4xx, with `Content-Type:
/// application/json` and a body `{"error": ...}` (axum's own rejections
/// included), and stores nothing: the storage never syncs, and a GET of
/// every valid key it named is 404.
#[test]
fn malformed_requests_get_json_errors_and_store_nothing() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        max_value_bytes: SMALL_LIMIT,
        ..Setup::default()
    };
    let cluster = rt.block_on(Cluster::start(setup, root.path()));
    let node = cluster.node(1);
    let identity = node.node.identity();
    SELF_ENVELOPE
        .set(Envelope {
            cluster: identity.cluster,
            epoch: identity.epoch,
            incarnation: identity.incarnation,
        })
        .expect("set once");
    let syncs_at_start = node.node.storage().sync_count();
    let client = http();
    check(
        "malformed_requests_get_json_errors_and_store_nothing",
        400,
        bad_request(),
        |bad| {
            rt.block_on(async {
                let response = exchange(node.addr, &bad.request(node.addr))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("no response: {e}")))?;
                prop_assert_eq!(response.status, bad.status(), "{:?}", response);
                json_error(&response).map_err(TestCaseError::fail)?;
                if response.status == 401 {
                    prop_assert_eq!(response.header("www-authenticate"), Some("Bearer"));
                }
                prop_assert_eq!(
                    node.node.storage().sync_count(),
                    syncs_at_start,
                    "something was written"
                );
                for key in bad.keys() {
                    prop_assert_eq!(
                        node.node.storage().load(&key).expect("load"),
                        Default::default()
                    );
                    let get = client.get(node.kv(&key)).send().await.expect("GET");
                    prop_assert_eq!(get.status().as_u16(), 404, "{} was stored", key);
                }
                Ok(())
            })
        },
    );
    rt.block_on(cluster.stop());
}

/// docs/api.md `PUT`: values are 0..=max-value-bytes; a value up to the limit is
/// stored exactly (201, then GET returns it), one byte more is 413 JSON and
/// stores nothing (GET 404), whether the length is declared or chunked.
#[test]
fn values_are_stored_iff_within_the_limit() {
    let rt = runtime();
    let root = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        max_value_bytes: SMALL_LIMIT,
        ..Setup::default()
    };
    let cluster = rt.block_on(Cluster::start(setup, root.path()));
    let node = cluster.node(1);
    let client = http();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let lengths = prop_oneof![
        SMALL_LIMIT - 3..=SMALL_LIMIT + 3,
        0..SMALL_LIMIT * 2,
        Just(0),
    ];
    check(
        "values_are_stored_iff_within_the_limit",
        120,
        (lengths, any::<bool>(), any::<u8>()),
        |(len, chunked, fill)| {
            let key = format!(
                "limit/{}",
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let value = vec![fill; len];
            rt.block_on(async {
                let status = if chunked {
                    let mut raw = format!(
                        "PUT /v1/kv/{} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                        encode_key(&key)
                    )
                    .into_bytes();
                    for piece in value.chunks(100) {
                        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        raw.extend_from_slice(piece);
                        raw.extend_from_slice(b"\r\n");
                    }
                    raw.extend_from_slice(b"0\r\n\r\n");
                    let response = exchange(node.addr, &raw).await.expect("PUT answered");
                    if response.status >= 400 {
                        json_error(&response).map_err(TestCaseError::fail)?;
                    }
                    response.status
                } else {
                    let response = client
                        .put(node.kv(&key))
                        .body(value.clone())
                        .send()
                        .await
                        .expect("PUT answered");
                    let status = response.status().as_u16();
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    prop_assert!(content_type.starts_with("application/json"));
                    status
                };
                if len <= SMALL_LIMIT {
                    prop_assert_eq!(status, 201);
                    let got = client.get(node.kv(&key)).send().await.expect("GET");
                    prop_assert_eq!(got.status().as_u16(), 200);
                    prop_assert_eq!(got.bytes().await.expect("body").to_vec(), value);
                } else {
                    prop_assert_eq!(status, 413);
                    let got = client.get(node.kv(&key)).send().await.expect("GET");
                    prop_assert_eq!(got.status().as_u16(), 404);
                }
                Ok(())
            })
        },
    );
    rt.block_on(cluster.stop());
}

// ======================================================================
// Forged peer messages
// ======================================================================

/// Authorization headers that must not open the peer routes.
fn wrong_credentials() -> Vec<Option<String>> {
    vec![
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {TOKEN}0")),
        Some(format!("Bearer {}", &TOKEN[1..])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer".to_owned()),
    ]
}

/// The envelope node `node` sends under: its cluster, epoch, incarnation.
fn envelope_of(node: &TestNode) -> Envelope {
    let identity = node.node.identity();
    Envelope {
        cluster: identity.cluster,
        epoch: identity.epoch,
        incarnation: identity.incarnation,
    }
}

/// Sends a batch of one request, from node 2 under `envelope`, to `to` with
/// `auth` as the Authorization header.
async fn send_peer(
    client: &reqwest::Client,
    to: &TestNode,
    auth: Option<&str>,
    envelope: &Envelope,
    key: &str,
    request: Request<Value>,
) -> reqwest::Response {
    let mut builder = client.post(to.url("/v1/paxos/batch")).json(&batch_of_one(
        2,
        envelope,
        key,
        request,
        Fence::default(),
    ));
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder.send().await.expect("peer route answers")
}

/// docs/api.md "Peer protocol": with a cluster token, every peer route refuses a
/// request without exactly `Authorization: Bearer <token>` with 401 JSON;
/// with the token, a batch of another cluster or membership epoch is 409
/// and the single-message routes of protocol 1 are 404; and the acceptor
/// state is unchanged: forged prepares, accepts and decides
/// (which could otherwise break agreement) leave every node empty, a later
/// GET on every node is 404, and a real PUT still succeeds. The control at
/// the end shows the check can fail: the same forged decide *with* the token
/// is obeyed, so the token is what stands between a stranger and the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_messages_are_refused_and_change_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        Setup {
            nodes: 3,
            ..Setup::default()
        },
        root.path(),
    )
    .await;
    let client = http();
    let key = "forged/target";
    let evil = Value {
        writer: 666,
        bytes: Bytes::from_static(b"evil"),
    };
    let huge = Ballot::new(MAX_ROUND, 2);
    let forged = [
        Request::Prepare { ballot: huge },
        Request::Accept {
            ballot: huge,
            value: evil.clone(),
        },
        Request::Decide {
            ballot: huge,
            value: evil.clone(),
        },
        Request::Read,
    ];
    let syncs: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.node.storage().sync_count())
        .collect();
    for to in &cluster.nodes {
        for auth in wrong_credentials() {
            for request in &forged {
                let envelope = envelope_of(to);
                let response = send_peer(
                    &client,
                    to,
                    auth.as_deref(),
                    &envelope,
                    key,
                    request.clone(),
                )
                .await;
                assert_eq!(response.status().as_u16(), 401, "{auth:?} {request:?}");
                assert_eq!(
                    response
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok()),
                    Some("Bearer")
                );
                let raw = RawResponse {
                    status: 401,
                    headers: response
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
                        .collect(),
                    body: response.bytes().await.expect("body").to_vec(),
                };
                json_error(&raw).expect("JSON error");
            }
        }
        // With the token: a batch of another cluster, or of another
        // membership epoch, is refused whole (409, docs/design.md invariant 10).
        let bearer = format!("Bearer {TOKEN}");
        let mine = envelope_of(to);
        let strangers = [
            Envelope {
                cluster: format!("{}-other", mine.cluster),
                ..mine.clone()
            },
            Envelope {
                cluster: "another-cluster".into(),
                ..mine.clone()
            },
            Envelope {
                epoch: mine.epoch + 1,
                ..mine.clone()
            },
        ];
        for stranger in &strangers {
            for request in &forged {
                let response =
                    send_peer(&client, to, Some(&bearer), stranger, key, request.clone()).await;
                let raw = to_raw(response).await;
                assert_eq!(raw.status, 409, "{stranger:?} {request:?}: {raw:?}");
            }
        }
        // The single-message routes of protocol 1 are gone.
        for op in ["prepare", "accept", "read", "decide"] {
            let body = serde_json::json!({"version": 1, "from": 2, "key": key,
                "ballot": {"round": MAX_ROUND, "node": 2}, "value": "ZXZpbA==", "writer": 666});
            let response = client
                .post(to.url(&format!("/v1/paxos/{op}")))
                .header("authorization", &bearer)
                .json(&body)
                .send()
                .await
                .expect("answers");
            let raw = to_raw(response).await;
            assert_eq!(raw.status, 404, "/v1/paxos/{op}: {raw:?}");
            json_error(&raw).expect("JSON error");
        }
    }
    for (node, synced) in cluster.nodes.iter().zip(&syncs) {
        assert_eq!(
            node.node.storage().sync_count(),
            *synced,
            "node {} wrote",
            node.id
        );
        assert_eq!(
            node.node.storage().load(key).expect("load"),
            Default::default()
        );
        let get = client.get(node.kv(key)).send().await.expect("GET");
        assert_eq!(
            get.status().as_u16(),
            404,
            "node {} shows a forged value",
            node.id
        );
    }
    // The cluster still works, and the forged huge promise did not stick.
    let put = client
        .put(cluster.node(1).kv(key))
        .body("honest")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 201);
    for node in &cluster.nodes {
        let get = client.get(node.kv(key)).send().await.expect("GET");
        assert_eq!(get.status().as_u16(), 200);
        assert_eq!(get.bytes().await.expect("body").as_ref(), b"honest");
    }

    // Control: with the token the same forgery is obeyed.
    let control = "forged/control";
    let bearer = format!("Bearer {TOKEN}");
    let response = send_peer(
        &client,
        cluster.node(3),
        Some(&bearer),
        &envelope_of(cluster.node(2)),
        control,
        Request::Decide {
            ballot: huge,
            value: evil,
        },
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let get = client
        .get(cluster.node(3).kv(control))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.bytes().await.expect("body").as_ref(), b"evil");
    cluster.stop().await;
}

/// docs/api.md "Peer protocol": the `x-paxos-kv-lazy` header of a batch
/// (which of its messages are announced decides, recorded without a sync)
/// is checked like the body. A malformed value (not a list of indexes, not
/// ascending, past the batch, naming a prepare, or a second header) is
/// refused whole with a 400 JSON error naming the header, and nothing of
/// the batch is applied: no write, no sync. A batch without the header (as
/// the previous release sends it) and one with a good header are obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_lazy_header_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        Setup {
            nodes: 3,
            ..Setup::default()
        },
        root.path(),
    )
    .await;
    let client = http();
    let bearer = format!("Bearer {TOKEN}");
    let to = cluster.node(3);
    let envelope = envelope_of(cluster.node(2));
    let batch = |key: &str| {
        let decide = Request::Decide {
            ballot: Ballot::new(1, 2),
            value: Value {
                writer: 5,
                bytes: Bytes::from(format!("{key}-value")),
            },
        };
        let prepare = Request::Prepare {
            ballot: Ballot::new(1, 2),
        };
        PeerBatch::new(
            2,
            &envelope,
            vec![
                BatchMessage::new(key, decide, Fence::default()),
                BatchMessage::new(&format!("{key}-p"), prepare, Fence::default()),
            ],
        )
    };
    let post = |key: &str, headers: &[&str]| {
        let mut builder = client
            .post(to.url("/v1/paxos/batch"))
            .header("authorization", &bearer)
            .json(&batch(key));
        for value in headers {
            builder = builder.header(LAZY_HEADER, *value);
        }
        builder.send()
    };
    let syncs = to.node.storage().sync_count();
    let malformed: [&[&str]; 8] = [
        &[""],
        &["x"],
        &["0,"],
        &["-0"],
        &["2"],
        &["1"],
        &["0,0"],
        &["0", "0"],
    ];
    for headers in malformed {
        let raw = to_raw(post("lazy/bad", headers).await.expect("answers")).await;
        assert_eq!(raw.status, 400, "{headers:?}: {raw:?}");
        let error = json_error(&raw).expect("JSON error");
        assert!(error.contains(LAZY_HEADER), "{headers:?}: {error}");
    }
    assert_eq!(
        to.node.storage().sync_count(),
        syncs,
        "a refused batch wrote"
    );
    for key in ["lazy/bad", "lazy/bad-p"] {
        assert_eq!(
            to.node.storage().load(key).expect("load"),
            Default::default()
        );
    }
    // Control: the same batch without the header, and with a good one.
    for (key, headers) in [("lazy/durable", &[][..]), ("lazy/lazy", &["0"][..])] {
        let response = post(key, headers).await.expect("answers");
        assert_eq!(response.status().as_u16(), 200, "{headers:?}");
        let answer: BatchResponse = response.json().await.expect("a batch answer");
        let replies = answer.into_replies(2).expect("two replies");
        assert!(replies.iter().all(Result::is_ok), "{replies:?}");
        assert!(to.node.storage().load(key).expect("load").decided, "{key}");
    }
    cluster.stop().await;
}

// ======================================================================
// Slow and stalled clients
// ======================================================================

/// Tight limits so that the tests see them trip quickly.
fn tight() -> Setup {
    Setup {
        body_timeout: Duration::from_secs(1),
        limits: Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
        },
        ..Setup::default()
    }
}

/// How long past a limit a connection may still be open on a loaded machine.
const SLACK: Duration = Duration::from_secs(15);

/// Waits until the node has closed `stream`: reads (and discards anything
/// the node still sends) until EOF or a reset. Panics after `limit`.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Serves one PUT and GET through a fresh client, proving the node serves.
async fn still_serves(node: &TestNode, key: &str) {
    let client = http();
    let put = client
        .put(node.kv(key))
        .body("fine")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 201, "PUT {key}");
    let get = client.get(node.kv(key)).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 200, "GET {key}");
}

/// Slow clients (issue 4 part 5): connections that never send a request
/// do not stop the node from serving others, and each is closed within the
/// header timeout (plus slack), so they cannot pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_others_are_served() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = tight();
    let limit = setup.limits.header_timeout + SLACK;
    let cluster = Cluster::start(setup, root.path()).await;
    let node = cluster.node(1);
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(node.addr).await.expect("connect"));
    }
    let stats = node.server().connection_stats().clone();
    eventually("the node accepts the silent connections", SLACK, || {
        let accepted = stats.accepted();
        async move { (accepted >= 10).then_some(()) }
    })
    .await;
    still_serves(node, "silent/served").await;
    for (i, stream) in silent.iter_mut().enumerate() {
        closed_within(stream, limit, &format!("silent connection {i}")).await;
    }
    eventually("every connection is released", limit, || {
        let open = stats.open();
        async move { (open == 0).then_some(()) }
    })
    .await;
    cluster.stop().await;
}

/// Oversized request heads (issue 4 part 5): a head over the 32 KiB cap is
/// answered 431 (hyper's own answer, without a JSON body: the request never
/// reaches the router) and stores nothing, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(tight(), root.path()).await;
    let node = cluster.node(1);
    let response =
        put_with_filler(node.addr, "huge", paxos_kv::server::MAX_HEAD_BYTES + 1024).await;
    assert_eq!(
        response.status,
        431,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    // Just under the cap is an ordinary request.
    let response =
        put_with_filler(node.addr, "big-head", paxos_kv::server::MAX_HEAD_BYTES / 2).await;
    assert_eq!(
        response.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let client = http();
    let get = client.get(node.kv("huge")).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 404, "the refused PUT stored nothing");
    still_serves(node, "after/huge").await;
    cluster.stop().await;
}

/// A one-byte PUT of `key` whose head carries a header of `filler` bytes,
/// on a fresh connection that closes after the answer.
async fn put_with_filler(addr: SocketAddr, key: &str, filler: usize) -> RawResponse {
    let filler = "x".repeat(filler);
    let request = format!(
        "PUT /v1/kv/{key} HTTP/1.1\r\nHost: n\r\nX-Filler: {filler}\r\n\
         Content-Length: 1\r\nConnection: close\r\n\r\nv"
    );
    exchange(addr, request.as_bytes())
        .await
        .expect("an answer, not a reset")
}

/// Slowloris (issue 4 part 5): a client that sends its headers one byte at
/// a time forever is cut off within the header timeout (plus slack), while
/// the node keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_byte_by_byte_are_cut_off() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = tight();
    let limit = setup.limits.header_timeout + SLACK;
    let cluster = Cluster::start(setup, root.path()).await;
    let node = cluster.node(1);
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    stream.write_all(head).await.expect("write");
    let started = Instant::now();
    let mut served = false;
    let mut buf = [0u8; 1024];
    let closed = loop {
        assert!(
            started.elapsed() < limit,
            "a byte-by-byte client is still connected after {limit:?}"
        );
        if stream.write_all(b"a").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) | Err(_) => {}
        }
        if !served {
            still_serves(node, "slowloris/served").await;
            served = true;
        }
    };
    assert!(closed && served);
    cluster.stop().await;
}

/// Slow bodies (issue 4 part 5, docs/api.md errors are JSON): a PUT whose body
/// trickles in slower than the body timeout gets 408 with a JSON error, the
/// connection is then closed, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_store_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = tight();
    let limit = setup.body_timeout + SLACK;
    let cluster = Cluster::start(setup, root.path()).await;
    let node = cluster.node(1);
    let syncs = node.node.storage().sync_count();
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    stream
        .write_all(b"PUT /v1/kv/slow/body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let response = {
        let read = read_response(&mut reader);
        let mut read = std::pin::pin!(read);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                response = &mut read => break response.expect("a response"),
                _ = tick.tick() => {
                    assert!(started.elapsed() < limit, "no answer to a slow body after {limit:?}");
                    let _ = writer.write_all(b"x").await;
                }
            }
        }
    };
    assert_eq!(response.status, 408, "{response:?}");
    json_error(&response).expect("JSON error");
    closed_within(&mut reader, limit, "the slow-body connection").await;
    assert_eq!(
        node.node.storage().sync_count(),
        syncs,
        "something was written"
    );
    let get = http().get(node.kv("slow/body")).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 404);
    cluster.stop().await;
}

/// Connection limit (issue 4 part 5): with every connection slot held (by
/// uploads that never finish), one more connection is answered 503 with a
/// JSON error and `Retry-After` at once instead of waiting in line; when the
/// slots are freed, the node serves normally again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_and_service_resumes() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        body_timeout: Duration::from_secs(120),
        ..tight()
    };
    let max = setup.limits.max_connections;
    let cluster = Cluster::start(setup, root.path()).await;
    let node = cluster.node(1);
    let stats = node.server().connection_stats().clone();
    let mut holders = Vec::new();
    for i in 0..max {
        holders.push(half_sent_put(node.addr, &format!("held/{i}"), &[b'h'; 100]).await);
    }
    assert_eq!(stats.open() as usize, max, "every slot is taken");
    let response = exchange(node.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(response.status, 503, "{response:?}");
    json_error(&response).expect("JSON error");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(stats.shed() >= 1);
    drop(holders);
    eventually("the slots are free again", SLACK, || {
        let open = stats.open();
        async move { (open == 0).then_some(()) }
    })
    .await;
    still_serves(node, "limit/served").await;
    cluster.stop().await;
}

/// Stalled readers (issue 4 part 5): a client that pipelines requests for a
/// large value and never reads the answers is disconnected once the node's
/// writes make no progress for the write timeout, so it gets far less than
/// it asked for; meanwhile the node keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_disconnected() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = tight();
    let limit = setup.limits.write_timeout + SLACK;
    let cluster = Cluster::start(setup, root.path()).await;
    let node = cluster.node(1);
    let value = vec![b'v'; 512 * 1024];
    let put = http()
        .put(node.kv("big"))
        .body(value.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 201);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(node.addr).await.expect("connect");
    let requests = 64;
    let pipeline = b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    stream.write_all(&pipeline).await.expect("write");
    // The node serves others while this client reads nothing.
    still_serves(node, "stalled/served").await;
    // Wait past the write timeout without reading, then drain what came.
    let stats = node.server().connection_stats().clone();
    eventually("the stalled connection is dropped", limit, || {
        let open = stats.open();
        async move { (open == 0).then_some(()) }
    })
    .await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the stalled connection was not closed"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
        }
    }
    assert!(
        received < requests * value.len() / 2,
        "the node wrote {received} bytes to a client that never read"
    );
    cluster.stop().await;
}

// ======================================================================
// Storage failure
// ======================================================================

/// Everything clients were told about a key: a 201 for a value, or a 200
/// GET that returned it. Each must survive any restart (docs/api.md guarantee 3).
#[derive(Default)]
struct Promises(BTreeMap<String, Vec<u8>>);

impl Promises {
    /// Records a PUT's answer; it must be 201 or a 5xx with a JSON error.
    async fn put(
        &mut self,
        client: &reqwest::Client,
        node: &TestNode,
        key: &str,
        value: &[u8],
    ) -> u16 {
        let response = client
            .put(node.kv(key))
            .body(value.to_vec())
            .send()
            .await
            .expect("PUT answered");
        let status = response.status().as_u16();
        let raw = to_raw(response).await;
        match status {
            201 => {
                self.0.insert(key.to_owned(), value.to_vec());
            }
            500..=599 => {
                json_error(&raw).expect("5xx with a JSON error");
            }
            other => panic!("PUT {key} on node {}: {other} {:?}", node.id, raw),
        }
        status
    }

    /// Records a GET's answer; a 200 must match what was promised before.
    async fn get(&mut self, client: &reqwest::Client, node: &TestNode, key: &str) -> u16 {
        let response = client.get(node.kv(key)).send().await.expect("GET answered");
        let status = response.status().as_u16();
        let raw = to_raw(response).await;
        match status {
            200 => {
                if let Some(promised) = self.0.get(key) {
                    assert_eq!(&raw.body, promised, "GET {key} on node {}", node.id);
                }
                self.0.insert(key.to_owned(), raw.body);
            }
            404 => assert!(
                !self.0.contains_key(key),
                "GET {key} on node {} is 404 after a success",
                node.id
            ),
            500..=599 => {
                json_error(&raw).expect("5xx with a JSON error");
            }
            other => panic!("GET {key} on node {}: {other} {:?}", node.id, raw),
        }
        status
    }

    /// Every promised value is still there, on `node`.
    async fn all_kept(&self, client: &reqwest::Client, node: &TestNode) {
        for (key, value) in &self.0 {
            let response = client.get(node.kv(key)).send().await.expect("GET answered");
            assert_eq!(
                response.status().as_u16(),
                200,
                "{key} was answered with success before, but now node {} says {}",
                node.id,
                response.status()
            );
            assert_eq!(
                &response.bytes().await.expect("body")[..],
                &value[..],
                "{key}"
            );
        }
    }
}

async fn to_raw(response: reqwest::Response) -> RawResponse {
    RawResponse {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

/// `GET path` on `node`: status and JSON body.
async fn json_of(
    client: &reqwest::Client,
    node: &TestNode,
    path: &str,
) -> (u16, serde_json::Value) {
    let response = client.get(node.url(path)).send().await.expect("answered");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path} on node {}: not JSON ({e}): {body:?}", node.id));
    (status, json)
}

/// Waits until node `node`'s `/v1/status` satisfies `ready` (given its
/// "state" and "reason"), and returns that status.
async fn status_until(
    client: &reqwest::Client,
    node: &TestNode,
    what: &str,
    ready: impl Fn(&str, &str) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = json_of(client, node, "/v1/status").await;
        let state = status["state"].as_str().unwrap_or_default();
        let reason = status["reason"].as_str().unwrap_or_default();
        if ready(state, reason) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: {what} within 60 s; last status {status}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reason a node gives while its disk failed (and it rebuilds).
const DISK: &[&str] = &["disk"];

/// The reason a one-node cluster gives once it set its failed database
/// aside: it lost its data and has nobody to rebuild from.
const NOBODY: &[&str] = &["disk", "no majority of other members"];

/// Asserts that node `node` does not serve: `/ready` is 503 with a JSON
/// reason that mentions one of `why`, and a PUT and a GET are 503.
async fn refuses_with_reason(
    client: &reqwest::Client,
    node: &TestNode,
    promises: &mut Promises,
    why: &[&str],
) {
    let (status, body) = json_of(client, node, "/ready").await;
    assert_eq!(status, 503, "node {} /ready: {body}", node.id);
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        why.iter().any(|w| reason.contains(w)),
        "the reason names one of {why:?}: {body}"
    );
    assert_eq!(
        promises.put(client, node, "refused/put", b"no").await,
        503,
        "PUT on a node that does not serve"
    );
    assert_eq!(
        promises.get(client, node, "before/0").await,
        503,
        "GET on a node that does not serve"
    );
}

/// The `failed-*` folders in `dir`, where a failed database is set aside.
fn set_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("failed-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Fills the disk under node 1 and writes through it (and reads back)
/// until a write failed; every answer is recorded in `promises`, and each
/// must be a success or a 5xx with a JSON error, never a false success.
async fn fill_and_fail(
    client: &reqwest::Client,
    cluster: &Cluster,
    disk: &Tmpfs,
    promises: &mut Promises,
) {
    disk.fill();
    let big = vec![b'f'; 64 * 1024];
    for i in 0..8 {
        let key = format!("full/{i}");
        promises.put(client, cluster.node(1), &key, &big).await;
        // In a cluster, the healthy majority serves everything.
        if cluster.nodes.len() > 1 {
            let via = cluster.node(2 + (i % 2) as u32);
            let other = format!("healthy/{i}");
            assert_eq!(promises.put(client, via, &other, &big).await, 201);
        }
        for node in &cluster.nodes {
            promises.get(client, node, &key).await;
        }
    }
    let storage_errors = cluster.node(1).node.metrics().storage_errors.load(Relaxed);
    assert!(storage_errors > 0, "the full disk never made a write fail");
}

/// Storage failure, one node (docs/api.md guarantee 3, docs/design.md invariants 1
/// and 9): with its disk full, a node answers 5xx with a JSON error, never
/// a false success. Storage is fail-stop: after the failed write the node
/// never uses that database again (its memory may be ahead of its disk, and
/// after a failed fsync pages can read back as durable and vanish later), so
/// it stops serving: `/ready` is 503 with a reason that names the disk, and
/// even keys it stored before are 503. A one-node cluster has nobody to
/// rebuild from, so once the disk is freed it sets the failed database
/// aside (`failed-*`, kept for the operator to restore from) and stays
/// unavailable, also across a restart: it never serves the fresh, blank
/// database, where an acknowledged value would read as 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_5xx_and_no_answer_is_undone() {
    let test = "a_full_disk_gives_5xx_and_no_answer_is_undone";
    let Some(disk) = Tmpfs::or_skip(test) else {
        return;
    };
    let setup = Setup {
        request_timeout: Duration::from_secs(2),
        ..Setup::default()
    };
    let mut cluster = Cluster::start(setup, &disk.mount).await;
    let client = http();
    let mut promises = Promises::default();
    for i in 0..3 {
        let status = promises
            .put(
                &client,
                cluster.node(1),
                &format!("before/{i}"),
                &[b'b'; 1000],
            )
            .await;
        assert_eq!(status, 201, "with a disk that has room");
    }
    fill_and_fail(&client, &cluster, &disk, &mut promises).await;
    status_until(&client, cluster.node(1), "stops serving", |state, _| {
        state != "serving"
    })
    .await;
    refuses_with_reason(&client, cluster.node(1), &mut promises, NOBODY).await;

    // The disk recovers: the failed database is set aside, a fresh one is
    // opened, and the node waits for a majority of other members it does
    // not have.
    disk.free();
    let dir = cluster.node(1).dir.clone();
    let status = status_until(
        &client,
        cluster.node(1),
        "sets its database aside and says it cannot rebuild",
        |state, reason| state == "recovering" && reason.contains("no majority of other members"),
    )
    .await;
    assert_eq!(set_aside(&dir).len(), 1, "{status}: {:?}", set_aside(&dir));
    refuses_with_reason(&client, cluster.node(1), &mut promises, NOBODY).await;

    // A restart does not make the blank database serve.
    cluster.nodes[0].stop().await.expect("stops");
    cluster.restart_unready(1).await;
    status_until(
        &client,
        cluster.node(1),
        "resumes the rebuild",
        |state, reason| state == "recovering" && reason.contains("no majority of other members"),
    )
    .await;
    refuses_with_reason(&client, cluster.node(1), &mut promises, NOBODY).await;
    assert_eq!(set_aside(&dir).len(), 1, "the failed database is kept");
    cluster.stop().await;
}

/// Storage failure in a cluster (docs/api.md guarantees 3 and 5, docs/design.md
/// invariants 8 and 9): when node 1 of three has a full disk, it answers
/// only 5xx with a JSON error or a success the healthy majority made
/// durable, and then stops serving (`/ready` 503, the reason names the
/// disk), while the other two keep serving every request. Once its disk is
/// freed it sets the failed database aside (`failed-*`) and rebuilds by
/// itself from the other two, without a restart; while one of them is down
/// it cannot (it needs a majority of the *other* members) and waits. After
/// the rebuild the set-aside files are deleted, node 1 holds every value
/// answered before in its own store, every node returns them, and so does
/// node 1 after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_full_disk_leaves_the_cluster_available_and_consistent() {
    let test = "one_full_disk_leaves_the_cluster_available_and_consistent";
    let Some(disk) = Tmpfs::or_skip(test) else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    // Node 1 lives on the small disk.
    std::fs::create_dir(disk.mount.join("node1")).expect("mkdir");
    std::os::unix::fs::symlink(disk.mount.join("node1"), root.path().join("node1"))
        .expect("symlink");
    let setup = Setup {
        nodes: 3,
        request_timeout: Duration::from_secs(2),
        ..Setup::default()
    };
    let mut cluster = Cluster::start(setup, root.path()).await;
    let client = http();
    let mut promises = Promises::default();
    for i in 0..3 {
        let status = promises
            .put(
                &client,
                cluster.node(1),
                &format!("before/{i}"),
                &[b'b'; 1000],
            )
            .await;
        assert_eq!(status, 201);
    }
    fill_and_fail(&client, &cluster, &disk, &mut promises).await;
    status_until(&client, cluster.node(1), "stops serving", |state, _| {
        state != "serving"
    })
    .await;
    refuses_with_reason(&client, cluster.node(1), &mut promises, DISK).await;
    for id in 2..=3 {
        assert_eq!(
            promises
                .put(&client, cluster.node(id), &format!("failed/{id}"), b"ok")
                .await,
            201,
            "node {id} serves while node 1 has failed"
        );
    }

    // With node 3 down, node 1 cannot rebuild (one other member serves):
    // it sets the failed database aside and waits.
    cluster.nodes[2].stop().await.expect("node 3 stops");
    disk.free();
    let dir = cluster.node(1).dir.clone();
    let status = status_until(
        &client,
        cluster.node(1),
        "sets its database aside and waits for a majority of the others",
        |state, _| state == "recovering" && !set_aside(&dir).is_empty(),
    )
    .await;
    assert_eq!(set_aside(&dir).len(), 1, "{status}");
    let (ready, body) = json_of(&client, cluster.node(1), "/ready").await;
    assert_eq!(ready, 503, "node 1 while it cannot rebuild: {body}");

    // Node 3 is back: node 1 rebuilds from nodes 2 and 3 by itself.
    cluster.restart(3).await;
    cluster.serving(1).await;
    assert!(
        set_aside(&dir).is_empty(),
        "the failed database is deleted after the rebuild: {:?}",
        set_aside(&dir)
    );
    for (key, value) in &promises.0 {
        let state = cluster.node(1).node.storage().load(key).expect("load");
        let vote = state
            .accepted
            .unwrap_or_else(|| panic!("node 1 rebuilt no vote for {key}"));
        assert_eq!(&vote.value.bytes[..], &value[..], "node 1's vote for {key}");
    }
    for id in 1..=3 {
        promises.all_kept(&client, cluster.node(id)).await;
    }
    cluster.nodes[0].stop().await.expect("node 1 stops");
    cluster.restart(1).await;
    promises.all_kept(&client, cluster.node(1)).await;
    assert_eq!(
        promises
            .put(&client, cluster.node(1), "after/restart", b"a")
            .await,
        201
    );
    cluster.stop().await;
}

/// A node of an in-memory cluster, with its storage.
type MemoryNode = (
    MemoryStorage,
    Arc<Node<MemoryStorage, paxos_kv::transport::MemoryTransport>>,
);

fn memory_cluster(n: u32, timing: Timing) -> (MemoryNetwork, Vec<MemoryNode>) {
    let net = MemoryNetwork::new();
    let members = Members::new(1..=n);
    let nodes = (1..=n)
        .map(|id| {
            let storage = MemoryStorage::new();
            let node = Node::new(
                id,
                members.clone(),
                timing.clone(),
                storage.clone(),
                net.transport(id),
                Some(u64::from(id)),
            )
            .expect("node");
            net.register(id, node.clone());
            (storage, node)
        })
        .collect();
    (net, nodes)
}

/// docs/design.md invariant 1 when writes fail (`MemoryStorage::set_failing`):
/// an acceptor whose store fails gives no reply at all (so nothing claims
/// durability) and keeps its state; a PUT with a majority of failing disks
/// never reports success, and at most a minority stores a vote; a healthy
/// majority still chooses; once the disks heal, the register is written
/// exactly once (with the new value, or the one whose outcome was unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_never_claim_durability() {
    let timing = Timing {
        request_timeout: Duration::from_millis(500),
        ..Timing::default()
    };
    let (_net, nodes) = memory_cluster(3, timing);
    let (failing, node1) = &nodes[0];
    failing.set_failing(true);
    let value = Value {
        writer: 1,
        bytes: Bytes::from_static(b"v"),
    };
    for request in [
        Request::Prepare {
            ballot: Ballot::new(5, 2),
        },
        Request::Accept {
            ballot: Ballot::new(5, 2),
            value: value.clone(),
        },
        Request::Decide {
            ballot: Ballot::new(5, 2),
            value: value.clone(),
        },
    ] {
        let result = node1
            .handle_acceptor("direct", request.clone(), Fence::default())
            .await;
        assert!(
            result.is_err(),
            "{request:?} answered {result:?} on a failing disk"
        );
        assert!(failing.snapshot().is_empty());
    }
    // One failing node of three: the others form the majority.
    let put = nodes[1].1.put("minority", Bytes::from_static(b"m")).await;
    assert_eq!(
        put.expect("a healthy majority answers"),
        PutOutcome::Created
    );
    assert!(!failing.snapshot().contains_key("minority"));
    // Two failing nodes of three: no success, and no majority of votes.
    nodes[2].0.set_failing(true);
    for (via, (_, node)) in nodes.iter().enumerate() {
        let result = node.put("majority", Bytes::from_static(b"x")).await;
        assert!(
            matches!(
                result,
                Err(NodeError::Unavailable) | Err(NodeError::Storage(_))
            ),
            "PUT via node {} answered {result:?} with two failing disks",
            via + 1
        );
    }
    let votes = nodes
        .iter()
        .filter(|(s, _)| {
            s.snapshot()
                .get("majority")
                .is_some_and(|st| st.accepted.is_some())
        })
        .count();
    assert!(votes <= 1, "{votes} nodes store a vote");
    // The disks heal: the register is written exactly once, either with a
    // new value or with the one whose PUT had an unknown outcome.
    failing.set_failing(false);
    nodes[2].0.set_failing(false);
    let first = nodes[0].1.put("majority", Bytes::from_static(b"y")).await;
    let chosen = match first.expect("healed") {
        PutOutcome::Created => Bytes::from_static(b"y"),
        PutOutcome::Conflict(v) if v.as_ref() == b"x" => v,
        other => panic!("after healing: {other:?}"),
    };
    let second = nodes[2].1.put("majority", Bytes::from_static(b"z")).await;
    assert_eq!(second.expect("healed"), PutOutcome::Conflict(chosen));
}

// ======================================================================
// Graceful shutdown with hostile clients around
// ======================================================================

/// Starts a PUT of `value` and sends only the first half of its body, once
/// the node's handler is reading it (it asked for the body with `100
/// Continue`), so the request is surely in flight; returns the stream to
/// finish it on.
async fn half_sent_put(addr: SocketAddr, key: &str, value: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /v1/kv/{} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        encode_key(key),
        value.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(SLACK, stream.read(&mut byte))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert_eq!(n, 1, "closed before 100 Continue");
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    stream
        .write_all(&value[..value.len() / 2])
        .await
        .expect("first half");
    stream
}

/// Opens connections that misbehave: silent ones and one sending its
/// headers byte by byte (the writes happen in a background task).
async fn hostile_crowd(addr: SocketAddr) -> (Vec<TcpStream>, tokio::task::JoinHandle<()>) {
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let trickle = tokio::spawn(async move {
        let _ = slow.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").await;
        for _ in 0..600 {
            if slow.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (silent, trickle)
}

/// Waits until `addr` refuses new connections (the node stopped accepting).
async fn refuses_connections(addr: SocketAddr, limit: Duration) {
    eventually("the node stops accepting", limit, || async move {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
}

/// docs/api.md "SIGTERM/SIGINT: stop accepting, finish in-flight requests, flush
/// sled, exit 0", with hostile clients connected: a PUT whose body is still
/// arriving when the node is told to stop is finished (201) and durable
/// after a restart, silent and byte-by-byte clients do not keep the node
/// from stopping, and new connections are refused once it stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_requests_in_flight_despite_hostile_clients() {
    let root = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        body_timeout: Duration::from_secs(20),
        limits: Limits {
            header_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..Setup::default()
    };
    let mut cluster = Cluster::start(setup, root.path()).await;
    let addr = cluster.node(1).addr;
    let (_silent, trickle) = hostile_crowd(addr).await;
    let value = b"finished during shutdown".to_vec();
    let mut put = half_sent_put(addr, "inflight", &value).await;
    let server = cluster.nodes[0].server.take().expect("running");
    let stopping = tokio::spawn(server.stop());
    refuses_connections(addr, SLACK).await;
    put.write_all(&value[value.len() / 2..])
        .await
        .expect("second half");
    let response = tokio::time::timeout(SLACK, read_response(&mut put))
        .await
        .expect("answered in time")
        .expect("a response");
    assert_eq!(response.status, 201, "{response:?}");
    let stopped = tokio::time::timeout(SLACK, stopping)
        .await
        .expect("the node stops in time")
        .expect("task");
    if let Err(e) = stopped {
        panic!("the node stops cleanly: {e}");
    }
    trickle.abort();
    cluster.restart(1).await;
    let get = http()
        .get(cluster.node(1).kv("inflight"))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.status().as_u16(), 200);
    assert_eq!(get.bytes().await.expect("body").to_vec(), value);
    cluster.stop().await;
}

/// A `paxos-kv serve` child process, killed on drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(addr: SocketAddr, dir: &Path) -> Serve {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_paxos-kv"))
        .args(["serve", "--id", "1", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--peers",
            &format!("1=http://{addr}"),
            "--cluster-token",
            TOKEN,
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn paxos-kv serve");
    Serve(child)
}

async fn healthy(addr: SocketAddr) {
    let client = http();
    eventually("the node serves (/ready)", SLACK, || {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{addr}/ready"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
}

/// docs/api.md SIGTERM on the real binary, with hostile clients connected (the
/// default limits): it stops accepting, finishes the PUT in flight (201),
/// exits 0 within its grace period, and the value is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hostile_clients_finishes_in_flight_and_exits_0() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let dir = root.path().join("node1");
    let mut child = serve(addr, &dir);
    healthy(addr).await;
    let (_silent, trickle) = hostile_crowd(addr).await;
    let value = b"finished after SIGTERM".to_vec();
    let mut put = half_sent_put(addr, "sigterm", &value).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    refuses_connections(addr, SLACK).await;
    put.write_all(&value[value.len() / 2..])
        .await
        .expect("second half");
    let response = tokio::time::timeout(SLACK, read_response(&mut put))
        .await
        .expect("answered in time")
        .expect("a response");
    assert_eq!(response.status, 201, "{response:?}");
    // Grace (10 s) plus slack.
    let exit = eventually("the process exits", Duration::from_secs(10) + SLACK, || {
        let exited = child.0.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    trickle.abort();
    let _again = serve(addr, &dir);
    healthy(addr).await;
    let get = http()
        .get(format!("http://{addr}/v1/kv/sigterm"))
        .send()
        .await
        .expect("GET");
    assert_eq!(get.status().as_u16(), 200);
    assert_eq!(get.bytes().await.expect("body").to_vec(), value);
}
