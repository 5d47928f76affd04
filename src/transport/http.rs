//! The production [`Transport`]: JSON over HTTP(S) with reqwest.
//!
//! Calls to one peer are batched: each peer has a sender task that takes
//! every call queued for that peer and POSTs them together to
//! `/v1/paxos/batch`, with up to [`IN_FLIGHT`] batches outstanding. No timer
//! holds a call back: an idle link sends a call at once, alone; a busy one
//! sends whatever queued while its batches were in flight. Under load one
//! HTTP exchange then carries many keys, and the peer's acceptor makes them
//! all durable in one group commit. Announced decides in a batch are
//! listed in its `x-paxos-kv-lazy` header ([`LAZY_HEADER`]), never in
//! the body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::config::Limits;
use crate::metrics::Latency;
use crate::value::Value;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::list::ListPeers;
use super::wire::{
    lazy_header, BatchMessage, BatchResponse, ConfigReply, ConfigRequest, Envelope, FenceReply,
    FenceRequest, HelloRequest, PeerBatch, ScanReply, ScanRequest, BATCH_VALUE_BYTES, LAZY_HEADER,
    MAX_BATCH_MESSAGES, PROTOCOL_VERSION,
};
use super::{Answer, Control, ControlReply, Transport, TransportError};
use crate::paxos::{Ballot, Fence, NodeId, Request};

/// Batches in flight to one peer at a time.
pub const IN_FLIGHT: usize = 2;

type CallResult = Result<Answer, TransportError>;

/// A call waiting for its batch.
struct Queued {
    message: BatchMessage,
    /// An announced decide: listed in the batch's [`LAZY_HEADER`].
    lazy: bool,
    done: oneshot::Sender<CallResult>,
}

/// What the sender tasks share.
struct Shared {
    me: NodeId,
    client: reqwest::Client,
    auth: Option<HeaderValue>,
    /// What every message says of its sender (set by the node).
    envelope: RwLock<Envelope>,
    latency: Option<Latency>,
}

/// Optional parts of an [`HttpTransport`] beyond [`HttpTransport::new`]'s.
pub struct PeerClientOptions {
    /// TLS for `https://` peers: the roots to trust and the client
    /// certificate to present (see `tls.rs`). Without it, `https://` peers
    /// are verified against the public roots reqwest bundles.
    pub tls: Option<rustls::ClientConfig>,
    /// Where to record the duration of each batch exchange.
    pub latency: Option<Latency>,
    /// How long an idle pooled connection to a peer is kept
    /// ([`Limits::peer_pool_idle`]).
    pub pool_idle: Duration,
}

impl Default for PeerClientOptions {
    fn default() -> Self {
        PeerClientOptions {
            tls: None,
            latency: None,
            pool_idle: Limits::default().peer_pool_idle(),
        }
    }
}

/// Why a peer client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PeerClientError {
    /// reqwest refused the client (typically its TLS configuration).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// A member's base URL cannot take a route.
    #[error("bad URL for node {id}: {reason}")]
    Url {
        /// The member.
        id: NodeId,
        /// Why.
        reason: String,
    },
    /// The cluster token is no valid header value.
    #[error("the cluster token must be printable ASCII")]
    Token,
}

/// One peer: its batch URL and, once the first call starts it, the queue of
/// its sender task.
struct Link {
    peer: NodeId,
    url: reqwest::Url,
    /// The peer's base URL, for node-level routes.
    base: reqwest::Url,
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

/// Calls peers' `/v1/paxos/batch` route over pooled keep-alive connections.
pub struct HttpTransport {
    shared: Arc<Shared>,
    /// One link per member; replaced when the membership changes
    /// ([`Transport::set_peers`]).
    links: RwLock<BTreeMap<NodeId, Arc<Link>>>,
    timeout: Duration,
}

impl HttpTransport {
    /// A transport for node `me` reaching `peers` (base URLs such as
    /// `http://10.0.0.2:7001`), sending `token` as a bearer token when set,
    /// and giving up on any call after `timeout`.
    pub fn new(
        me: NodeId,
        peers: &BTreeMap<NodeId, reqwest::Url>,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, PeerClientError> {
        Self::with_options(me, peers, token, timeout, PeerClientOptions::default())
    }

    /// [`HttpTransport::new`] with TLS settings and a latency histogram.
    pub fn with_options(
        me: NodeId,
        peers: &BTreeMap<NodeId, reqwest::Url>,
        token: Option<&str>,
        timeout: Duration,
        options: PeerClientOptions,
    ) -> Result<Self, PeerClientError> {
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = options.tls {
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .pool_max_idle_per_host(IN_FLIGHT * 4)
            .pool_idle_timeout(options.pool_idle)
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        let links = links_to(peers)?;
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| PeerClientError::Token)?;
        Ok(HttpTransport {
            shared: Arc::new(Shared {
                me,
                client,
                auth,
                envelope: RwLock::new(Envelope::default()),
                latency: options.latency,
            }),
            links: RwLock::new(links),
            timeout,
        })
    }

    /// The client of `/v1/paxos/list` pages: this transport's own HTTP
    /// client (one connection pool, the same TLS, timeout and token).
    pub fn list_peers(&self) -> Result<ListPeers, PeerClientError> {
        let mut urls = BTreeMap::new();
        for (&id, link) in self.links.read().expect("poisoned").iter() {
            urls.insert(id, peer_url(id, &link.base, "v1/paxos/list")?);
        }
        Ok(ListPeers::new(
            self.shared.me,
            self.shared.client.clone(),
            urls,
            self.shared.auth.clone(),
        ))
    }
}

/// A link to each of `peers`.
fn links_to(
    peers: &BTreeMap<NodeId, reqwest::Url>,
) -> Result<BTreeMap<NodeId, Arc<Link>>, PeerClientError> {
    let mut links = BTreeMap::new();
    for (&id, base) in peers {
        let url = peer_url(id, base, "v1/paxos/batch")?;
        links.insert(
            id,
            Arc::new(Link {
                peer: id,
                url,
                base: base.clone(),
                queue: OnceLock::new(),
            }),
        );
    }
    Ok(links)
}

impl HttpTransport {
    /// Queues `message` on `to`'s link (batched with others) and waits for
    /// its answer, at most the call timeout. `lazy`: an announced decide
    /// (see [`LAZY_HEADER`]).
    async fn send(&self, to: NodeId, message: BatchMessage, lazy: bool) -> CallResult {
        let link = self.link(to)?;
        let queue = link.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(
                self.shared.clone(),
                link.peer,
                link.url.clone(),
                rx,
            ));
            tx
        });
        let (done, reply) = oneshot::channel();
        queue
            .send(Queued {
                message,
                lazy,
                done,
            })
            .map_err(|_| TransportError::Unreachable("the peer link is closed".into()))?;
        match tokio::time::timeout(self.timeout, reply).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::Unreachable("the peer link closed".into())),
            Ok(Ok(result)) => result,
        }
    }

    fn link(&self, to: NodeId) -> Result<Arc<Link>, TransportError> {
        let links = self.links.read().expect("poisoned");
        links
            .get(&to)
            .cloned()
            .ok_or(TransportError::UnknownPeer(to))
    }
}

/// The URL of `route` on member `id` at `base`.
fn peer_url(id: NodeId, base: &reqwest::Url, route: &str) -> Result<reqwest::Url, PeerClientError> {
    base.join(route).map_err(|e| PeerClientError::Url {
        id,
        reason: e.to_string(),
    })
}

impl Transport for HttpTransport {
    async fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> CallResult {
        self.send(to, BatchMessage::new(key, request, fence), false)
            .await
    }

    async fn announce(&self, to: NodeId, key: &str, ballot: Ballot, value: Value) -> CallResult {
        let decide = Request::Decide { ballot, value };
        self.send(to, BatchMessage::new(key, decide, Fence::default()), true)
            .await
    }

    async fn control(&self, to: NodeId, message: Control) -> Result<ControlReply, TransportError> {
        let link = self.link(to)?;
        let link = &*link;
        let envelope = self.shared.envelope.read().expect("poisoned").clone();
        let me = self.shared.me;
        match message {
            Control::Hello { digest, nonce } => {
                let body = HelloRequest {
                    version: PROTOCOL_VERSION,
                    from: me,
                    digest,
                    nonce,
                };
                let reply: super::HelloReply = self.post(link, "v1/paxos/hello", &body).await?;
                check_version(reply.version)?;
                Ok(ControlReply::Hello(reply))
            }
            Control::Fence { incarnation } => {
                let body = FenceRequest {
                    version: PROTOCOL_VERSION,
                    from: me,
                    cluster: envelope.cluster,
                    epoch: envelope.epoch,
                    incarnation,
                };
                let reply: FenceReply = self.post(link, "v1/paxos/fence", &body).await?;
                check_version(reply.version)?;
                Ok(ControlReply::Fenced(reply.recorded))
            }
            Control::Config => {
                let body = ConfigRequest {
                    version: PROTOCOL_VERSION,
                    from: me,
                };
                let reply: ConfigReply = self.post(link, "v1/paxos/config", &body).await?;
                check_version(reply.version)?;
                Ok(ControlReply::Config(reply))
            }
            Control::Scan { after, limit } => {
                let body = ScanRequest {
                    version: PROTOCOL_VERSION,
                    from: me,
                    cluster: envelope.cluster,
                    epoch: envelope.epoch,
                    after,
                    limit,
                };
                let reply: ScanReply = self.post(link, "v1/paxos/scan", &body).await?;
                check_version(reply.version)?;
                Ok(ControlReply::Keys {
                    keys: reply.keys,
                    more: reply.more,
                })
            }
        }
    }

    fn set_envelope(&self, envelope: Envelope) {
        *self.shared.envelope.write().expect("poisoned") = envelope;
    }

    fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        let mut links = self.links.write().expect("poisoned");
        for (&id, base) in peers {
            let same = links.get(&id).is_some_and(|l| {
                l.base.as_str().trim_end_matches('/') == base.trim_end_matches('/')
            });
            if same {
                continue;
            }
            let link = reqwest::Url::parse(base)
                .map_err(|e| e.to_string())
                .and_then(|u| links_to(&BTreeMap::from([(id, u)])).map_err(|e| e.to_string()));
            match link {
                Ok(mut one) => {
                    links.extend(std::mem::take(&mut one));
                }
                Err(e) => {
                    tracing::error!(peer = id, url = %base, error = %e, "unusable member URL")
                }
            }
        }
        links.retain(|id, _| peers.contains_key(id));
    }
}

impl HttpTransport {
    /// POSTs `body` to `path` of `link`'s peer and decodes the JSON answer.
    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        link: &Link,
        path: &str,
        body: &B,
    ) -> Result<R, TransportError> {
        let url = link
            .base
            .join(path)
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        post_json(&self.shared.client, url, self.shared.auth.as_ref(), body).await
    }
}

/// POSTs `body` as JSON to a peer's `url` with the cluster token (`auth`),
/// and decodes the JSON answer: the one exchange every peer route shares.
/// A non-2xx answer is [`TransportError::Status`] with its body.
pub(crate) async fn post_json<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: reqwest::Url,
    auth: Option<&HeaderValue>,
    body: &B,
) -> Result<R, TransportError> {
    post_json_with(client, url, auth, None, body).await
}

/// [`post_json`] with one more request header (`extra`).
async fn post_json_with<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: reqwest::Url,
    auth: Option<&HeaderValue>,
    extra: Option<(HeaderName, HeaderValue)>,
    body: &B,
) -> Result<R, TransportError> {
    let mut builder = client.post(url).json(body);
    if let Some(auth) = auth {
        builder = builder.header(AUTHORIZATION, auth.clone());
    }
    if let Some((name, value)) = extra {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(classify)?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(TransportError::Status {
            status: status.as_u16(),
            body,
        });
    }
    response.json().await.map_err(|e| {
        if e.is_timeout() {
            TransportError::Timeout
        } else {
            TransportError::Protocol(e.to_string())
        }
    })
}

fn check_version(version: u32) -> Result<(), TransportError> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(TransportError::Protocol(format!(
            "peer speaks protocol version {version}, this node {PROTOCOL_VERSION}"
        )))
    }
}

/// The sender task of one peer link: ends when the transport is dropped.
async fn send_batches(
    shared: Arc<Shared>,
    peer: NodeId,
    url: reqwest::Url,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let failing: Arc<Mutex<Option<String>>> = Arc::default();
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a free slot; calls queue up meanwhile and join this batch.
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut value_bytes = first.message.value_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES {
            let Ok(next) = queue.try_recv() else { break };
            if value_bytes + next.message.value_len() > BATCH_VALUE_BYTES {
                carried = Some(next);
                break;
            }
            value_bytes += next.message.value_len();
            batch.push(next);
        }
        // A caller that gave up (timed out) needs no message.
        batch.retain(|q| !q.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(send_batch(
            shared.clone(),
            peer,
            url.clone(),
            batch,
            permit,
            failing.clone(),
        ));
    }
}

async fn send_batch(
    shared: Arc<Shared>,
    peer: NodeId,
    url: reqwest::Url,
    batch: Vec<Queued>,
    _permit: OwnedSemaphorePermit,
    failing: Arc<Mutex<Option<String>>>,
) {
    let lazy: Vec<bool> = batch.iter().map(|q| q.lazy).collect();
    let (messages, waiters): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|q| (q.message, q.done)).unzip();
    let body = {
        let envelope = shared.envelope.read().expect("poisoned");
        PeerBatch::new(shared.me, &envelope, messages)
    };
    let started = std::time::Instant::now();
    let result = exchange(&shared, peer, url, &body, lazy_header(&lazy)).await;
    if let Some(latency) = &shared.latency {
        latency.observe_peer_call(peer, started.elapsed());
    }
    // One warning when a link starts failing or fails for another reason
    // (e.g. a TLS certificate the peer refuses), one note when it works
    // again: not one per call.
    {
        let mut last = failing.lock().expect("poisoned");
        match &result {
            Err(e) => {
                let why = e.to_string();
                if last.as_deref() != Some(why.as_str()) {
                    tracing::warn!(peer, error = %why, "calls to this peer fail");
                    *last = Some(why);
                }
            }
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!(peer, "calls to this peer work again");
                }
            }
        }
    }
    match result {
        Ok(replies) => {
            for (reply, done) in replies.into_iter().zip(waiters) {
                let _ = done.send(reply);
            }
        }
        Err(e) => {
            for done in waiters {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// One POST of a batch, with its [`LAZY_HEADER`] when `lazy` lists any
/// message; the replies in order, or why there are none.
async fn exchange(
    shared: &Shared,
    peer: NodeId,
    url: reqwest::Url,
    body: &PeerBatch,
    lazy: Option<String>,
) -> Result<Vec<CallResult>, TransportError> {
    let lazy = lazy
        .map(|marks| HeaderValue::from_str(&marks))
        .transpose()
        .map_err(|e| TransportError::Protocol(format!("{LAZY_HEADER}: {e}")))?
        .map(|marks| (HeaderName::from_static(LAZY_HEADER), marks));
    let reply: BatchResponse =
        post_json_with(&shared.client, url, shared.auth.as_ref(), lazy, body).await?;
    if reply.from != peer {
        return Err(TransportError::Protocol(format!(
            "expected node {peer}, node {} answered (check --peers)",
            reply.from
        )));
    }
    let incarnation = reply.incarnation;
    let replies = reply
        .into_replies(body.messages.len())
        .map_err(TransportError::Protocol)?;
    Ok(replies
        .into_iter()
        .map(|r| {
            r.map(|reply| Answer { reply, incarnation })
                .map_err(|body| TransportError::Status { status: 503, body })
        })
        .collect())
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // With its causes: the TLS reason (unknown issuer, a refused
        // certificate) is only in the sources.
        TransportError::Unreachable(crate::error_chain::error_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::wire::{BatchReply, Op};
    use axum::http::HeaderMap;
    use bytes::Bytes;
    use futures_util::FutureExt;

    /// One batch as the peer saw it: its `x-paxos-kv-lazy` header values
    /// and its body.
    type Seen = (Vec<String>, Bytes);

    /// A peer (node 2) that records every batch and answers it only when
    /// `gate` gives a permit.
    async fn capturing_peer(gate: Arc<Semaphore>) -> (reqwest::Url, mpsc::UnboundedReceiver<Seen>) {
        let (seen, batches) = mpsc::unbounded_channel::<Seen>();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (seen, gate) = (seen.clone(), gate.clone());
            async move {
                let marks = headers
                    .get_all(LAZY_HEADER)
                    .iter()
                    .map(|v| v.to_str().expect("ASCII").to_owned())
                    .collect();
                let batch: PeerBatch = serde_json::from_slice(&body).expect("a batch");
                let _ = seen.send((marks, body));
                gate.acquire().await.expect("open").forget();
                axum::Json(BatchResponse {
                    version: PROTOCOL_VERSION,
                    from: 2,
                    incarnation: 1,
                    replies: batch
                        .messages
                        .iter()
                        .map(|_| BatchReply::Error("captured".into()))
                        .collect(),
                })
            }
        };
        let app = axum::Router::new().route("/v1/paxos/batch", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (reqwest::Url::parse(&url).expect("URL"), batches)
    }

    async fn next(batches: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("a batch within 30 s")
            .expect("the peer runs")
    }

    /// Over real HTTP: announces batched with an accept and a durable
    /// decide are listed in the batch's header by their indexes (and only
    /// they: a durable decide marked lazy would let a counted answer
    /// precede the sync), a batch without an announce has no header, and
    /// no body carries a `lazy` field.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn announces_are_marked_in_the_header_by_index() {
        let gate = Arc::new(Semaphore::new(0));
        let (url, mut batches) = capturing_peer(gate.clone()).await;
        let transport = HttpTransport::new(
            1,
            &BTreeMap::from([(2, url)]),
            None,
            Duration::from_secs(30),
        )
        .expect("transport");
        let ballot = Ballot::new(3, 1);
        let value = Value {
            writer: 7,
            bytes: Bytes::from_static(b"v"),
        };
        let decide = || Request::Decide {
            ballot,
            value: value.clone(),
        };
        // Two prepares, one after the other, fill both in-flight slots; the
        // peer holds them.
        let t = &transport;
        let mut held = Vec::new();
        for key in ["p0", "p1"] {
            let mut call = t
                .call(2, key, Request::Prepare { ballot }, Fence::default())
                .boxed();
            assert!(call.as_mut().now_or_never().is_none());
            held.push(call);
            let (marks, _) = next(&mut batches).await;
            assert!(marks.is_empty(), "{marks:?}");
        }
        // Queued in this order while they wait (one poll queues each).
        let accept = Request::Accept {
            ballot,
            value: value.clone(),
        };
        let mixed = futures_util::future::join_all([
            t.announce(2, "k0", ballot, value.clone()).boxed(),
            t.call(2, "k1", accept, Fence::default()).boxed(),
            t.announce(2, "k2", ballot, value.clone()).boxed(),
            t.call(2, "k3", decide(), Fence::default()).boxed(),
        ]);
        let mut mixed = Box::pin(mixed);
        assert!(mixed.as_mut().now_or_never().is_none());
        gate.add_permits(3);
        let (marks, body) = next(&mut batches).await;
        assert_eq!(marks, ["0,2"]);
        let text = std::str::from_utf8(&body).expect("UTF-8");
        assert!(!text.contains("lazy"), "{text}");
        let batch: PeerBatch = serde_json::from_slice(&body).expect("a batch");
        let sent: Vec<(String, Op)> = batch
            .messages
            .iter()
            .map(|m| (m.key.clone(), m.op))
            .collect();
        assert_eq!(
            sent,
            [
                ("k0".into(), Op::Decide),
                ("k1".into(), Op::Accept),
                ("k2".into(), Op::Decide),
                ("k3".into(), Op::Decide)
            ]
        );
        futures_util::future::join_all(held).await;
        mixed.await;
    }
}
