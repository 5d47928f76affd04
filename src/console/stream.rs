//! `GET /v1/events`: Server-Sent Events, one JSON object per message
//! (`docs/api.md`, "Operations").
//!
//! By default the stream carries this node's events and its peers': for
//! each peer the node opens `GET /v1/events?scope=local` with the cluster
//! token and merges what arrives (a browser behind a port mapping reaches
//! only the node that served the page). `scope=local` is this node's events
//! only, a peer route: the cluster token when one is set, and a verified
//! client certificate under `--tls-ca` (relays present the node's own).
//!
//! With `--client-tokens`, the cluster scope needs a token that may read
//! some key (`Authorization: Bearer` or `?token=`), and carries only the
//! events of keys that token may read, relayed ones included
//! ([`super::access`]).
//!
//! Bounds: a watched node reports at most
//! [`crate::events::EVENTS_PER_SECOND`] events, and counts the rest as lost;
//! at most [`super::MAX_VIEWERS`] streams per node; each stream has
//! an outbox of [`OUTBOX`] messages; when it is full (the viewer reads
//! slower than the cluster runs), new messages are dropped and counted, and
//! the count goes to the viewer as
//! `{"kind":"lost","node":N,"lost":COUNT,"dropped":D}` (N: the node whose
//! stream lost them; COUNT: every event the viewer missed, D: those dropped
//! because the viewer read too slowly, the rest being over the node's
//! budget; counts only grow). A viewer
//! that stops reading altogether is cut by the connection's write timeout
//! (`src/server.rs`). Nothing here ever makes the node wait. Relays
//! reconnect with backoff ([`RELAY_BACKOFF_MIN`] doubling to
//! [`RELAY_BACKOFF_MAX`]) and report `{"kind":"relay","node":N,"up":BOOL}`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::access::{check_peer, viewer, visible};
use super::Console;
use crate::api::ApiError;
use crate::auth::{Access, Caller};
use crate::events::Subscription;
use crate::key::validate_key;
use crate::paxos::NodeId;
use crate::storage::Storage;
use crate::tls::PeerCertificate;
use crate::transport::Transport;

/// Messages a stream may hold for a slow viewer before it drops new ones.
pub const OUTBOX: usize = 2048;

/// First wait before a failed relay reconnects.
pub const RELAY_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest wait between relay reconnections.
pub const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A relay that hears nothing (not even a keep-alive) for this long
/// reconnects: the peer is gone or stopped.
const RELAY_SILENCE: Duration = Duration::from_secs(20);

/// How often an idle stream sends an SSE comment, so proxies and relays
/// know it lives.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A relay that sends more than this without a message boundary is cut.
const MAX_FRAME: usize = 64 * 1024;

/// Marks a stream's greeting message.
const HELLO: &[u8] = br#""kind":"hello""#;

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events of this key.
    pub key: Option<String>,
    /// `local` for this node's events only; `cluster` (the default) merges
    /// every member's.
    pub scope: Option<String>,
    /// A client token's secret, for a browser's `EventSource` (which cannot
    /// send headers); never logged.
    pub token: Option<String>,
}

/// `GET /v1/events`.
pub async fn events<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
    certificate: Option<Extension<PeerCertificate>>,
) -> Result<Response, ApiError> {
    let local = match query.scope.as_deref() {
        None | Some("cluster") => false,
        Some("local") => true,
        Some(other) => {
            return Err(ApiError::BadQuery(format!(
                "scope must be local or cluster, not {other:?}"
            )))
        }
    };
    // A relay shows what it gets to its own viewer, filtered there.
    let sight = if local {
        check_peer(&console, &headers, certificate)?;
        Caller::Open
    } else {
        viewer(&console, &headers, query.token.as_deref())?
    };
    if let Some(key) = &query.key {
        validate_key(key)?;
        sight.check_key(Access::Read, key)?;
    }
    let permit = console
        .viewers
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyViewers)?;
    let me = console.node.id();
    let key: Option<Arc<str>> = query.key.map(Arc::from);
    let (tx, rx) = mpsc::channel::<Bytes>(OUTBOX);
    let lost = Arc::new(Lost::new(console.node.events().dropped_counter()));
    let subscription = console.node.events().subscribe();
    tokio::spawn(forward_local(
        subscription,
        Filter {
            key: key.clone(),
            sight: sight.clone(),
        },
        tx.clone(),
        lost.clone(),
    ));
    let mut relayed = Vec::new();
    if !local {
        for (id, url) in console.peers.iter().filter(|(id, _)| *id != me) {
            relayed.push(*id);
            tokio::spawn(relay(
                Relay {
                    client: console.client.clone(),
                    peer: *id,
                    url: format!("{url}/v1/events"),
                    token: console.token.clone(),
                    key: key.clone(),
                    sight: sight.clone(),
                },
                tx.clone(),
                lost.clone(),
            ));
        }
    }
    drop(tx);
    let hello = json!({
        "kind": "hello",
        "node": me,
        "scope": if local { "local" } else { "cluster" },
        "relayed": relayed,
        "key": key.as_deref(),
        "dev": console.dev.is_some(),
    });
    let outbox = Outbox {
        me,
        hello: Some(frame(hello.to_string().as_bytes())),
        rx,
        lost,
        reported: 0,
        closing: console.closing.clone(),
        _permit: permit,
    };
    let body = Body::from_stream(futures_util::stream::unfold(outbox, Outbox::next));
    Ok((
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// One SSE message carrying `json`.
fn frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Queues `message` for the viewer, or counts it lost when the outbox is
/// full. `false` when the viewer is gone.
fn offer(tx: &mpsc::Sender<Bytes>, lost: &Lost, message: Bytes) -> bool {
    match tx.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            lost.drop_some(1);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// What one stream's viewer missed.
#[derive(Debug)]
struct Lost {
    /// Dropped because the viewer read too slowly (outbox full, or the bus
    /// moved on).
    dropped: AtomicU64,
    /// Not reported by this node: over its event budget.
    skipped: AtomicU64,
    /// This node's count of drops, for `/metrics`.
    node_dropped: Arc<AtomicU64>,
}

impl Lost {
    fn new(node_dropped: Arc<AtomicU64>) -> Self {
        Lost {
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            node_dropped,
        }
    }

    fn drop_some(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.node_dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn total(&self) -> (u64, u64) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        (dropped + self.skipped.load(Ordering::Relaxed), dropped)
    }
}

/// Which of this node's events a stream shows.
struct Filter {
    /// Only this key's (`?key=`).
    key: Option<Arc<str>>,
    /// Only keys the viewer may read.
    sight: Caller,
}

impl Filter {
    fn shows(&self, key: &str) -> bool {
        self.key.as_deref().is_none_or(|k| k == key) && self.sight.may(Access::Read, key)
    }
}

/// Moves this node's events into the outbox until the viewer leaves.
async fn forward_local(
    mut subscription: Subscription,
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    lost: Arc<Lost>,
) {
    let mut skipped = 0;
    loop {
        let received = tokio::select! {
            () = tx.closed() => return,
            received = subscription.rx.recv() => received,
        };
        // Events the node did not build (over its budget) count as lost too.
        let now_skipped = subscription.skipped();
        lost.skipped
            .fetch_add(now_skipped - skipped, Ordering::Relaxed);
        skipped = now_skipped;
        match received {
            Ok(event) => {
                if !filter.shows(&event.key) {
                    continue;
                }
                let json = serde_json::to_vec(&*event).expect("events serialize");
                if !offer(&tx, &lost, frame(&json)) {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                lost.drop_some(n);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Where one relay reads from.
struct Relay {
    client: reqwest::Client,
    peer: NodeId,
    url: String,
    token: Option<String>,
    key: Option<Arc<str>>,
    /// The viewer the relayed events are for: only keys it may read pass.
    sight: Caller,
}

/// Relays one peer's local stream into the outbox, reconnecting with
/// backoff, until the viewer leaves.
async fn relay(relay: Relay, tx: mpsc::Sender<Bytes>, lost: Arc<Lost>) {
    let mut backoff = RELAY_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let why = tokio::select! {
            () = tx.closed() => return,
            why = relay_once(&relay, &tx, &lost) => why,
        };
        let note = json!({ "kind": "relay", "node": relay.peer, "up": false, "detail": why });
        if !offer(&tx, &lost, frame(note.to_string().as_bytes())) {
            return;
        }
        if started.elapsed() > RELAY_BACKOFF_MAX * 2 {
            backoff = RELAY_BACKOFF_MIN;
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RELAY_BACKOFF_MAX);
    }
}

/// One relay connection; returns why it ended.
async fn relay_once(relay: &Relay, tx: &mpsc::Sender<Bytes>, lost: &Lost) -> String {
    let mut request = relay.client.get(&relay.url).query(&[("scope", "local")]);
    if let Some(key) = &relay.key {
        request = request.query(&[("key", &**key)]);
    }
    if let Some(token) = &relay.token {
        request = request.bearer_auth(token);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return format!("cannot connect: {e}"),
    };
    if !response.status().is_success() {
        return format!("the peer answered {}", response.status());
    }
    let up = json!({ "kind": "relay", "node": relay.peer, "up": true });
    if !offer(tx, lost, frame(up.to_string().as_bytes())) {
        return "the viewer left".into();
    }
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(RELAY_SILENCE, response.chunk()).await {
            Err(_) => return "the peer's stream went silent".into(),
            Ok(Err(e)) => return format!("the peer's stream broke: {e}"),
            Ok(Ok(None)) => return "the peer's stream ended".into(),
            Ok(Ok(Some(chunk))) => chunk,
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = pending.drain(..end + 2).collect();
            for line in message.split(|b| *b == b'\n') {
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                // The peer's greeting is for its own viewers. (Inside a JSON
                // string the quotes would be escaped: no false match.)
                if data.windows(HELLO.len()).any(|w| w == HELLO) || !visible(&relay.sight, data) {
                    continue;
                }
                if !offer(tx, lost, frame(data)) {
                    return "the viewer left".into();
                }
            }
        }
        if pending.len() > MAX_FRAME {
            return "the peer sent an oversized message".into();
        }
    }
}

/// The viewer's side of a stream: greeting, then queued messages, with the
/// lost count whenever it grew, and keep-alives while idle.
struct Outbox {
    me: NodeId,
    hello: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    lost: Arc<Lost>,
    reported: u64,
    closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Outbox {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(hello) = self.hello.take() {
            return Some((Ok(hello), self));
        }
        let (lost, dropped) = self.lost.total();
        if lost != self.reported {
            self.reported = lost;
            let note = json!({ "kind": "lost", "node": self.me, "lost": lost, "dropped": dropped });
            return Some((Ok(frame(note.to_string().as_bytes())), self));
        }
        if *self.closing.borrow() {
            return None;
        }
        let message = tokio::select! {
            _ = self.closing.changed() => return None,
            received = tokio::time::timeout(KEEP_ALIVE, self.rx.recv()) => match received {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            },
        };
        Some((Ok(message), self))
    }
}
