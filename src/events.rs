//! Protocol events: what a node did, message by message, for the live console
//! (`docs/api.md`, "Operations": `GET /v1/events`).
//!
//! Every node has one [`EventBus`]. The node's driver reports each message it
//! sends and each reply it gets (as the proposer or reader), each request its
//! acceptor handles, and each client request's start and end. Viewers
//! subscribe; the bus is a bounded [`tokio::sync::broadcast`] channel, so a
//! viewer that falls behind loses the oldest events (it is told how many)
//! and never slows the node. With no subscriber, every report is one relaxed
//! atomic load and returns: no event is built, nothing is allocated.
//!
//! While watched, a node reports at most [`EVENTS_PER_SECOND`] events (in
//! windows of [`WINDOW_MS`]); the rest are not built, only counted
//! ([`Subscription::skipped`]), and viewers are told the count. A person
//! cannot follow more, and building, serializing and relaying every event of
//! a busy node costs it about half its throughput (measured with
//! `paxos-kv bench`); with the budget one viewer costs a few percent. A
//! message's reply is reported only when its sending was, so the pairs a
//! viewer sees are whole.
//!
//! Linking events to client requests: a PUT's request id is the writer id of
//! its value (`src/value.rs`), so the acceptors of every node, which see the
//! value in an accept, report the same id. A GET gets a fresh id. The
//! proposer side carries the id of the request it works for through a
//! task-local ([`in_request`]); prepares and reads carry no value, so on the
//! acceptor side they are linked by key and ballot only.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use tokio::sync::broadcast;

use crate::node::{AcceptorError, NodeError, PutOutcome};
use crate::paxos::{Ballot, NodeId, Reply, Request};
use crate::transport::Answer;
use crate::value::Value;

/// How many events a viewer may fall behind before it loses the oldest.
pub const BUS_CAPACITY: usize = 4096;

/// Most events a watched node reports per second; see the module docs.
pub const EVENTS_PER_SECOND: u64 = 1000;

/// The budget is counted in windows this long (ms).
pub const WINDOW_MS: u64 = 100;

const EVENTS_PER_WINDOW: u64 = EVENTS_PER_SECOND * WINDOW_MS / 1000;

/// How many bytes of a value an event shows (lossy UTF-8, then `…`).
pub const VALUE_PREVIEW_BYTES: usize = 32;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Phase 1a: a proposer asks for a promise.
    Prepare,
    /// Phase 1b: an acceptor promised.
    Promise,
    /// Phase 2a: a proposer asks acceptors to accept a value.
    Accept,
    /// Phase 2b: an acceptor accepted (voted).
    Accepted,
    /// An acceptor refused: it promised a higher ballot.
    Rejected,
    /// The proposer tells every node the value is chosen.
    Decide,
    /// An acceptor answered that the key is already decided.
    Decided,
    /// A quorum read asks an acceptor for its vote.
    Read,
    /// An acceptor's answer to a read: its vote, if any.
    Vote,
    /// An acceptor recorded a decide notice.
    Ack,
    /// A call to a peer failed (down, timed out, refused).
    Unreachable,
    /// A client PUT arrived at this node, which coordinates it.
    PutStart,
    /// The client PUT was answered (`status` 201, 200, 409, 503 or 500).
    PutEnd,
    /// A client GET arrived at this node.
    GetStart,
    /// The client GET was answered (`status` 200, 404, 503 or 500).
    GetEnd,
    /// A GET found disagreeing votes and runs a recovery round (the two
    /// classic phases with no value of its own) to finish the key.
    Recovery,
}

/// Which side of the protocol reported the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The node serving a client request.
    Client,
    /// The node running a round or a read, sending and hearing back.
    Proposer,
    /// The node whose acceptor handled a request (after it was durable).
    Acceptor,
}

/// One protocol event, serialized as one JSON object per SSE message.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch, by this node's clock.
    pub t: u64,
    /// Strictly increasing per node (from 1 at start): orders a node's events.
    pub seq: u64,
    /// The node that reports the event.
    pub node: NodeId,
    /// Which side reported it.
    pub role: Role,
    /// What happened.
    pub kind: Kind,
    /// The key (the Paxos instance).
    pub key: Arc<str>,
    /// The client request that caused it (16 hex digits), when known.
    #[serde(serialize_with = "hex_id", skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
    /// The ballot (`round.node`; `0.0` is the fast ballot).
    #[serde(
        serialize_with = "ballot_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub ballot: Option<Ballot>,
    /// Whether the round is the fast ballot rather than a classic one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<bool>,
    /// Sender of the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeId>,
    /// Receiver of the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<NodeId>,
    /// HTTP status of a finished client request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The value carried or chosen, shortened to [`VALUE_PREVIEW_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A short human note (the promise a rejection cites, an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn hex_id<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(&format!("{id:016x}")),
        None => s.serialize_none(),
    }
}

fn ballot_text<S: Serializer>(b: &Option<Ballot>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.collect_str(b),
        None => s.serialize_none(),
    }
}

/// The first [`VALUE_PREVIEW_BYTES`] of `bytes` as lossy UTF-8, `…` when cut.
pub fn preview(bytes: &[u8]) -> String {
    let cut = bytes.len().min(VALUE_PREVIEW_BYTES);
    let mut text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        text.push('…');
    }
    text
}

tokio::task_local! {
    static REQUEST: u64;
}

/// The client request the current task works for (0: none).
pub fn current_request() -> u64 {
    REQUEST.try_with(|id| *id).unwrap_or(0)
}

/// Runs `work` on behalf of client request `id` (0: none), so events its
/// calls report carry that id.
pub fn in_request<F: Future>(id: u64, work: F) -> impl Future<Output = F::Output> {
    REQUEST.scope(id, work)
}

/// A message a proposer sent, remembered until its reply arrives. Only
/// built while someone watches.
#[derive(Debug)]
pub struct Sent {
    to: NodeId,
    key: Arc<str>,
    req: u64,
    ballot: Option<Ballot>,
}

/// A request an acceptor is handling, remembered until its reply is durable.
#[derive(Debug)]
pub struct Heard {
    key: Arc<str>,
    req: Option<u64>,
    ballot: Option<Ballot>,
    value: Option<String>,
}

/// One node's event channel; see the module docs. Cheap to share by
/// reference; every method returns at once.
#[derive(Debug)]
pub struct EventBus {
    node: NodeId,
    tx: broadcast::Sender<Arc<Event>>,
    /// Live subscriptions, counted by us: one relaxed load decides whether
    /// to build an event (the channel's own count takes a lock).
    watchers: Arc<AtomicUsize>,
    seq: AtomicU64,
    /// Source of GET request ids.
    next_request: AtomicU64,
    /// The budget window: its number (ms since `born` / [`WINDOW_MS`])
    /// and the events reported in it.
    born: std::time::Instant,
    window: AtomicU64,
    in_window: AtomicU64,
    /// Events over budget, not reported, since start.
    skipped: Arc<AtomicU64>,
    /// Events viewers' streams dropped (they read too slowly), since start.
    dropped: Arc<AtomicU64>,
}

/// A subscription to an [`EventBus`]; dropping it unsubscribes.
pub struct Subscription {
    /// The events, oldest first; `Lagged(n)` says `n` were lost.
    pub rx: broadcast::Receiver<Arc<Event>>,
    watchers: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
    skipped_before: u64,
}

impl Subscription {
    /// Events the node did not report since this subscription began,
    /// because it was over its budget.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed) - self.skipped_before
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventBus {
    /// The bus of node `node`, with no subscriber.
    pub fn new(node: NodeId) -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        EventBus {
            node,
            tx,
            watchers: Arc::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
            next_request: AtomicU64::new(1),
            born: std::time::Instant::now(),
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            skipped: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts receiving every event reported from now on.
    pub fn subscribe(&self) -> Subscription {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            watchers: self.watchers.clone(),
            skipped: self.skipped.clone(),
            skipped_before: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// The counter of events viewers' streams dropped because they read
    /// too slowly; streams add to it.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Events viewers' streams dropped since start (`/metrics`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events not reported since start because the node was over its budget
    /// (`/metrics`).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether anyone watches; when not, reporting costs one atomic load.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Whether to report an event now: someone watches and the window's
    /// budget is not spent (else the event is counted as skipped).
    #[inline]
    fn admit(&self) -> bool {
        if !self.watched() {
            return false;
        }
        let now = self.born.elapsed().as_millis() as u64 / WINDOW_MS;
        if self.window.load(Ordering::Relaxed) != now {
            // Racy by design: two threads may both reset; the budget is a
            // rate, not an exact count.
            self.window.store(now, Ordering::Relaxed);
            self.in_window.store(0, Ordering::Relaxed);
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < EVENTS_PER_WINDOW {
            true
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// A new id for a GET: node id in the top 16 bits, a counter below
    /// (PUT ids are random 64-bit writer ids); 0 (none) while unwatched.
    pub fn request_id(&self) -> u64 {
        if !self.watched() {
            return 0;
        }
        (u64::from(self.node) << 48)
            | (self.next_request.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff)
    }

    fn event(&self, role: Role, kind: Kind, key: Arc<str>) -> Event {
        Event {
            t: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            seq: 0,
            node: self.node,
            role,
            kind,
            key,
            req: None,
            ballot: None,
            fast: None,
            from: None,
            to: None,
            status: None,
            value: None,
            detail: None,
        }
    }

    fn send(&self, mut event: Event) {
        event.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // An error only means the last viewer just left.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A client request `req` of `kind` (`PutStart`/`GetStart`) for `key` arrived.
    pub fn client_start(&self, kind: Kind, key: &str, req: u64, value: Option<&Bytes>) {
        if !self.admit() {
            return;
        }
        let mut e = self.event(Role::Client, kind, Arc::from(key));
        e.req = Some(req);
        e.value = value.map(|v| preview(v));
        self.send(e);
    }

    /// Client request `req` of `kind` (`PutEnd`/`GetEnd`) was answered with
    /// `status`; `value` is the chosen value when the answer carries one.
    pub fn client_end(&self, kind: Kind, key: &str, req: u64, status: u16, value: Option<&[u8]>) {
        if !self.admit() {
            return;
        }
        let mut e = self.event(Role::Client, kind, Arc::from(key));
        e.req = Some(req);
        e.status = Some(status);
        e.value = value.map(preview);
        self.send(e);
    }

    /// The PUT `req` of `key` was answered with `result`.
    pub fn put_ended(&self, key: &str, req: u64, result: &Result<PutOutcome, NodeError>) {
        if !self.watched() {
            return;
        }
        let (status, value) = match result {
            Ok(outcome) => (
                crate::api::put_status(outcome),
                match outcome {
                    PutOutcome::Conflict(chosen) => Some(&chosen[..]),
                    _ => None,
                },
            ),
            Err(e) => (crate::api::node_status(e), None),
        };
        self.client_end(Kind::PutEnd, key, req, status.as_u16(), value);
    }

    /// The GET `req` of `key` was answered with `result`.
    pub fn get_ended<P>(
        &self,
        key: &str,
        req: u64,
        result: &Result<(Option<Bytes>, P), NodeError>,
    ) {
        if !self.watched() {
            return;
        }
        let (status, value) = match result {
            Ok((Some(value), _)) => (200, Some(&value[..])),
            Ok((None, _)) => (404, None),
            Err(e) => (crate::api::node_status(e).as_u16(), None),
        };
        self.client_end(Kind::GetEnd, key, req, status, value);
    }

    /// A GET of `key` starts a recovery round.
    pub fn recovery(&self, key: &str) {
        if !self.admit() {
            return;
        }
        let mut e = self.event(Role::Proposer, Kind::Recovery, Arc::from(key));
        e.req = nonzero(current_request());
        self.send(e);
    }

    /// This node, as proposer or reader, sends `request` for `key` to `to`.
    /// Pass the result to [`EventBus::replied`] with the reply.
    pub fn sent(&self, to: NodeId, key: &str, request: &Request<Value>) -> Option<Sent> {
        if !self.admit() {
            return None;
        }
        let (kind, ballot, value) = describe_request(request);
        let key: Arc<str> = Arc::from(key);
        let req = current_request();
        let mut e = self.event(Role::Proposer, kind, key.clone());
        e.req = nonzero(req);
        e.ballot = ballot;
        e.fast = ballot.map(|b| b == Ballot::FAST);
        e.from = Some(self.node);
        e.to = Some(to);
        e.value = value;
        self.send(e);
        Some(Sent {
            to,
            key,
            req,
            ballot,
        })
    }

    /// The reply to a message reported by [`EventBus::sent`] arrived (or the
    /// call failed).
    pub fn replied(&self, sent: Option<Sent>, result: &Result<Answer, String>) {
        let Some(sent) = sent else { return };
        let (kind, ballot, value, detail) = match result {
            Ok(answer) => describe_reply(&answer.reply),
            Err(e) => (Kind::Unreachable, None, None, Some(shorten(e))),
        };
        let mut e = self.event(Role::Proposer, kind, sent.key);
        e.req = nonzero(sent.req);
        e.ballot = ballot.or(sent.ballot);
        e.fast = e.ballot.map(|b| b == Ballot::FAST);
        e.from = Some(sent.to);
        e.to = Some(self.node);
        e.value = value;
        e.detail = detail;
        self.send(e);
    }

    /// This node's acceptor got `request` for `key`. Pass the result to
    /// [`EventBus::stepped`] once the reply is durable.
    pub fn heard(&self, key: &str, request: &Request<Value>) -> Option<Heard> {
        if !self.admit() {
            return None;
        }
        let (_, ballot, value) = describe_request(request);
        let req = match request {
            Request::Accept { value, .. } | Request::Decide { value, .. } => Some(value.writer),
            _ => nonzero(current_request()),
        };
        Some(Heard {
            key: Arc::from(key),
            req,
            ballot,
            value,
        })
    }

    /// This node's acceptor answered a request reported by
    /// [`EventBus::heard`] (its state, if changed, is durable).
    pub fn stepped(&self, heard: Option<Heard>, result: &Result<Answer, AcceptorError>) {
        let Some(heard) = heard else { return };
        let (kind, ballot, value, detail) = match result {
            Ok(answer) => describe_reply(&answer.reply),
            Err(e) => (Kind::Unreachable, None, None, Some(shorten(&e.to_string()))),
        };
        let mut e = self.event(Role::Acceptor, kind, heard.key);
        e.req = heard.req;
        e.ballot = ballot.or(heard.ballot);
        e.fast = e.ballot.map(|b| b == Ballot::FAST);
        e.from = Some(self.node);
        // The proposer of a classic ballot is its node part; the fast
        // ballot is shared, so its sender is unknown here.
        e.to = heard.ballot.map(|b| b.node).filter(|n| *n != 0);
        e.value = value.or(heard.value);
        e.detail = detail;
        self.send(e);
    }
}

fn nonzero(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

fn shorten(text: &str) -> String {
    preview(text.as_bytes())
}

fn describe_request(request: &Request<Value>) -> (Kind, Option<Ballot>, Option<String>) {
    match request {
        Request::Prepare { ballot } => (Kind::Prepare, Some(*ballot), None),
        Request::Accept { ballot, value } => {
            (Kind::Accept, Some(*ballot), Some(preview(&value.bytes)))
        }
        Request::Read => (Kind::Read, None, None),
        Request::Decide { ballot, value } => {
            (Kind::Decide, Some(*ballot), Some(preview(&value.bytes)))
        }
    }
}

type Described = (Kind, Option<Ballot>, Option<String>, Option<String>);

fn describe_reply(reply: &Reply<Value>) -> Described {
    match reply {
        Reply::Promise { ballot, accepted } => (
            Kind::Promise,
            Some(*ballot),
            accepted.as_ref().map(|a| preview(&a.value.bytes)),
            accepted
                .as_ref()
                .map(|a| format!("already voted in {}", a.ballot)),
        ),
        Reply::Accepted { ballot } => (Kind::Accepted, Some(*ballot), None, None),
        Reply::Rejected { ballot, promised } => (
            Kind::Rejected,
            Some(*ballot),
            None,
            Some(format!("promised {promised}")),
        ),
        Reply::Decided { ballot, value } => (
            Kind::Decided,
            Some(*ballot),
            Some(preview(&value.bytes)),
            None,
        ),
        Reply::Vote { accepted } => (
            Kind::Vote,
            accepted.as_ref().map(|a| a.ballot),
            accepted.as_ref().map(|a| preview(&a.value.bytes)),
            accepted.is_none().then(|| "no vote".to_string()),
        ),
        Reply::Ack => (Kind::Ack, None, None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwatched_bus_builds_nothing() {
        let bus = EventBus::new(1);
        assert!(!bus.watched());
        assert!(bus.sent(2, "k", &Request::Read).is_none());
        let sub = bus.subscribe();
        assert!(bus.watched());
        drop(sub);
        assert!(!bus.watched());
    }

    #[test]
    fn values_are_shortened() {
        assert_eq!(preview(b"abc"), "abc");
        let long = vec![b'x'; 100];
        assert_eq!(preview(&long), format!("{}…", "x".repeat(32)));
    }

    /// A viewer that falls behind loses the oldest events and is told how
    /// many; the sender never waits.
    #[tokio::test]
    async fn a_slow_subscriber_lags() {
        let bus = EventBus::new(1);
        let mut sub = bus.subscribe();
        for _ in 0..BUS_CAPACITY + 10 {
            bus.send(bus.event(Role::Proposer, Kind::Recovery, Arc::from("k")));
        }
        match sub.rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = sub.rx.recv().await.unwrap();
        assert_eq!(next.seq, 11);
    }

    /// Over its budget a watched node builds no event, and says how many
    /// it skipped.
    #[test]
    fn a_busy_node_reports_within_its_budget() {
        let bus = EventBus::new(1);
        let mut sub = bus.subscribe();
        let tries = EVENTS_PER_WINDOW * 3;
        let reported = (0..tries)
            .filter(|_| bus.sent(2, "k", &Request::Read).is_some())
            .count() as u64;
        // The loop may straddle a window boundary: at most two windows' worth.
        assert!((EVENTS_PER_WINDOW..=2 * EVENTS_PER_WINDOW).contains(&reported));
        assert_eq!(sub.skipped(), tries - reported);
        let mut received = 0;
        while sub.rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, reported);
    }
}
