//! The HTTP edge: client API, peer API, health, status and metrics on one
//! router. No Paxos logic lives here; [`ApiError`] is the one place where
//! failures become status codes. This file holds the router and the client
//! routes (`/v1/kv`); the peer protocol's routes are in `api/peer.rs`, the
//! node's own (`/health`, `/ready`, `/v1/status`, `/metrics`) in
//! `api/observe.rs`; connections are served by `server.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::json;

use crate::admission::PeerRefused;
use crate::auth::{Access, AuthError, ClientAuth};
use crate::connections::ConnectionStats;
use crate::key::{parse_key, KeyError};
use crate::list::{list, ListQuery};
use crate::metrics::{Latency, Op as TimedOp};
use crate::node::{AcceptorError, Node, NodeError, PutOutcome};
use crate::query::{parse_read_query, ReadQuery};
use crate::storage::Storage;
use crate::transport::list::ListPeers;
use crate::transport::wire::Base64;
use crate::transport::Transport;
use crate::waiters::get_or_wait;

mod members;
mod observe;
mod peer;

pub(crate) use peer::authorized;

/// Everything the handlers share.
pub struct AppState<S, T> {
    /// The node behind the API.
    pub node: Arc<Node<S, T>>,
    /// Required on peer routes as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Largest value a PUT may carry.
    pub max_value_bytes: usize,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// Base URL of every member, for `/v1/status`.
    pub peer_urls: Vec<(u32, String)>,
    /// The connection layer's counters, for `/metrics`.
    pub connections: Arc<ConnectionStats>,
    /// Asks members for their pages of a list (`?keys`, `?recurse`).
    pub list_peers: Arc<ListPeers>,
    /// Who may read and write which keys (`auth.rs`); open without
    /// `--client-tokens`.
    pub clients: Arc<ClientAuth>,
    /// Latency histograms, for `/metrics`.
    pub latency: Latency,
    /// Peer routes require a verified TLS client certificate (`--tls-ca`).
    pub peers_need_certificate: bool,
}

/// Every failure the API reports, mapped to a status code in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the key breaks the rules.
    #[error("{0}")]
    BadKey(#[from] KeyError),
    /// 413: the value is over the limit.
    #[error("the value is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 400: the body could not be read.
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    /// 400: a query parameter of a GET is wrong (`limit`, `after`, `wait`).
    #[error("{0}")]
    BadQuery(String),
    /// 404 on GET: a majority confirmed no value is chosen.
    #[error("no value is chosen for this key")]
    NotFound,
    /// 503 or 500, from the node.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// 401 on a peer route.
    #[error("peer routes need the cluster token: Authorization: Bearer <token>")]
    Unauthorized,
    /// 400 on a peer route.
    #[error("bad peer message: {0}")]
    BadPeerMessage(String),
    /// 404 for unknown paths.
    #[error("no such route; the API is under /v1/kv/<key>")]
    NoRoute,
    /// 405.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 503: as many console event streams are open as a node serves.
    #[error(
        "this node serves as many event streams as it may; close a console or ask another node"
    )]
    TooManyViewers,
    /// 404: a route of `paxos-kv dev` only.
    #[error("stopping and starting nodes is only possible in a `paxos-kv dev` cluster")]
    DevOnly,
    /// 404: the dev cluster has no such node.
    #[error("the dev cluster has no node {0}")]
    NoSuchNode(u32),
    /// 409: a dev node cannot change state now (already down, already up).
    #[error("{0}")]
    DevControl(String),
    /// 503: the node serves as many connections as it may.
    #[error("this node has too many open connections; retry later or ask another node")]
    Overloaded,
    /// 409 on a peer route: the sender belongs to another cluster or
    /// membership epoch (docs/design.md, invariant 10).
    #[error(transparent)]
    OtherCluster(#[from] PeerRefused),
    /// 503 (or 500) on a peer route: the acceptor gave no answer.
    #[error(transparent)]
    Acceptor(#[from] AcceptorError),
    /// A membership change refused or unfinished (`src/api/members.rs`).
    #[error(transparent)]
    Members(#[from] crate::reconfigure::ReconfigureError),
    /// 503 on `/ready`: the node does not serve clients.
    #[error("not ready: {0}")]
    NotReady(String),
    /// 401 or 403 on a client route: no, an unknown, or an insufficient
    /// client token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 403 on a peer route of a node with `--tls-ca`: the connection showed
    /// no client certificate of the cluster's CA.
    #[error("peer routes need a client certificate signed by the cluster CA (--tls-ca)")]
    PeerCertificateRequired,
    /// 400: plain HTTP sent to a port that speaks TLS.
    #[error("this port speaks HTTPS; use an https:// URL")]
    HttpsRequired,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadKey(_)
            | ApiError::BadBody(_)
            | ApiError::BadPeerMessage(_)
            | ApiError::BadQuery(_)
            | ApiError::HttpsRequired => StatusCode::BAD_REQUEST,
            ApiError::Auth(e) if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            ApiError::Auth(_) | ApiError::PeerCertificateRequired => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Node(
                NodeError::Unavailable | NodeError::NotServing(_) | NodeError::EpochChanged,
            )
            | ApiError::Overloaded
            | ApiError::NotReady(_)
            | ApiError::Acceptor(
                AcceptorError::NotServing(_) | AcceptorError::Overloaded | AcceptorError::Fenced(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Node(NodeError::Storage(_))
            | ApiError::Acceptor(AcceptorError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::OtherCluster(_) | ApiError::Acceptor(AcceptorError::OtherEpoch { .. }) => {
                StatusCode::CONFLICT
            }
            ApiError::TooManyViewers => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DevOnly | ApiError::NoSuchNode(_) => StatusCode::NOT_FOUND,
            ApiError::DevControl(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Members(e) => members::change_status(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            ApiError::Auth(e) if e.is_unauthenticated() => {
                headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            ApiError::HttpsRequired => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::TooLarge(_) => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// The status a node failure maps to (the one place, with [`ApiError`]).
pub fn node_status(error: &NodeError) -> StatusCode {
    match error {
        NodeError::Unavailable | NodeError::NotServing(_) | NodeError::EpochChanged => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        NodeError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status a PUT outcome maps to (docs/api.md, `PUT /v1/kv/{key}`).
pub fn put_status(outcome: &PutOutcome) -> StatusCode {
    match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::AlreadyChosen => StatusCode::OK,
        PutOutcome::Conflict(_) => StatusCode::CONFLICT,
    }
}

/// The router of one node.
pub fn router<S: Storage, T: Transport>(state: Arc<AppState<S, T>>) -> Router {
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(get_value::<S, T>)
                .put(put_value::<S, T>)
                .fallback(method_not_allowed)
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    time_kv::<S, T>,
                )),
        )
        .route(
            "/v1/kv/",
            get(list_all::<S, T>)
                .put(empty_key::<S, T>)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/kv",
            get(list_all::<S, T>)
                .put(empty_key::<S, T>)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/paxos/{op}",
            post(peer::peer::<S, T>).fallback(method_not_allowed),
        )
        .route(
            "/v1/members",
            get(members::list::<S, T>)
                .post(members::add::<S, T>)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/members/{id}",
            axum::routing::delete(members::remove::<S, T>).fallback(method_not_allowed),
        )
        .route("/health", get(observe::health).fallback(method_not_allowed))
        .route(
            "/ready",
            get(observe::ready::<S, T>).fallback(method_not_allowed),
        )
        .route(
            "/v1/status",
            get(observe::status::<S, T>).fallback(method_not_allowed),
        )
        .route(
            "/metrics",
            get(observe::metrics::<S, T>).fallback(method_not_allowed),
        )
        .fallback(no_route)
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `/v1/kv` without a key: the token check comes first, as on every
/// `/v1/kv` request.
async fn empty_key<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    headers: HeaderMap,
) -> ApiError {
    match state.clients.identify(&headers) {
        Err(e) => e.into(),
        Ok(_) => ApiError::BadKey(KeyError::Empty),
    }
}

/// Records the latency of every `/v1/kv/{key}` request in the histogram of
/// its operation: PUT; GET with `?keys`/`?recurse` (list), with `?wait=`
/// (wait), or plain (get).
async fn time_kv<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let op = if request.method() == axum::http::Method::PUT {
        TimedOp::Put
    } else {
        let query = request.uri().query().unwrap_or_default();
        let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
        if has("keys") || has("recurse") {
            TimedOp::List
        } else if has("wait") {
            TimedOp::Wait
        } else {
            TimedOp::Get
        }
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.latency.observe(op, started.elapsed());
    response
}

/// The key from the raw path, so that `%2F` and invalid UTF-8 are ours to judge.
fn key_of(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/v1/kv/").unwrap_or_default();
    Ok(parse_key(raw)?)
}

async fn put_value<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = state.clients.identify(&headers)?;
    let key = key_of(&uri)?;
    caller.check_key(Access::Write, &key)?;
    let limit = state.max_value_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body).await;
        return Err(ApiError::TooLarge(limit));
    }
    let value = read_body(body, limit, state.body_timeout).await?;
    let outcome = state.node.put(&key, value).await?;
    let status = put_status(&outcome);
    Ok(match outcome {
        PutOutcome::Created => {
            (status, Json(json!({ "key": key, "created": true }))).into_response()
        }
        PutOutcome::AlreadyChosen => {
            (status, Json(json!({ "key": key, "created": false }))).into_response()
        }
        PutOutcome::Conflict(chosen) => raw(status, chosen),
    })
}

async fn get_value<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.clients.identify(&headers)?;
    let key = key_of(&uri)?;
    let found = match parse_read_query(&uri).map_err(ApiError::BadQuery)? {
        ReadQuery::Plain => {
            caller.check_key(Access::Read, &key)?;
            state.node.get(&key).await?
        }
        ReadQuery::Wait(wait) => {
            caller.check_key(Access::Read, &key)?;
            get_or_wait(&state.node, &key, wait).await?
        }
        ReadQuery::List {
            after,
            limit,
            values,
        } => {
            // A list answers only a prefix the token may read entirely.
            caller.check_prefix(&key)?;
            return list_response(&state, key, after, limit, values).await;
        }
    };
    match found {
        Some(value) => Ok(raw(StatusCode::OK, value)),
        None => Err(ApiError::NotFound),
    }
}

/// `GET /v1/kv/?keys`: a list of every key; without `?keys` or `?recurse`
/// the key is missing (400).
async fn list_all<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.clients.identify(&headers)?;
    match parse_read_query(&uri).map_err(ApiError::BadQuery)? {
        ReadQuery::List {
            after,
            limit,
            values,
        } => {
            caller.check_prefix("")?;
            let started = std::time::Instant::now();
            let page = list_response(&state, String::new(), after, limit, values).await;
            state.latency.observe(TimedOp::List, started.elapsed());
            page
        }
        _ => Err(ApiError::BadKey(KeyError::Empty)),
    }
}

/// The JSON page of docs/api.md "list": `{"keys":[..],"next":..}`, or
/// `{"entries":[{"key":..,"value":BASE64}],"next":..}` with values.
async fn list_response<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    prefix: String,
    after: Option<String>,
    limit: usize,
    values: bool,
) -> Result<Response, ApiError> {
    let query = ListQuery {
        prefix,
        after,
        limit,
        values,
    };
    let page = list(&state.node, &state.list_peers, &query).await?;
    let body = if values {
        let entries: Vec<_> = page
            .entries
            .into_iter()
            .map(|(key, value)| json!({ "key": key, "value": Base64(value.unwrap_or_default()) }))
            .collect();
        json!({ "entries": entries, "next": page.next })
    } else {
        let keys: Vec<_> = page.entries.into_iter().map(|(key, _)| key).collect();
        json!({ "keys": keys, "next": page.next })
    };
    Ok(Json(body).into_response())
}

/// Reads a whole body of at most `limit` bytes within `timeout`; a slow or
/// oversized body is refused without buffering more than `limit` (an
/// oversized one is drained first, see [`drain`]).
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::BadBody(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(ApiError::TooLarge(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(ApiError::TooLarge(limit))) => {
            drain(body).await;
            Err(ApiError::TooLarge(limit))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(buf.freeze()),
    }
}

/// Most bytes of a refused body read and thrown away before the answer.
const DRAIN_BYTES: usize = 8 << 20;

/// Longest a refused body is drained before the answer.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what is left of a refused body (up to
/// [`DRAIN_BYTES`] within [`DRAIN_TIME`]) before the 413 goes out and the
/// connection closes. Closing a socket with unread data makes the kernel
/// send a reset, which can destroy the answer before the client reads it;
/// draining a bounded amount, as nginx's lingering close does, lets a client
/// that sends a little too much see its 413.
async fn drain(mut body: Body) {
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                drained += data.len();
                if drained > DRAIN_BYTES {
                    break;
                }
            }
        }
    })
    .await;
}

fn raw(status: StatusCode, bytes: Bytes) -> Response {
    (status, [(CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}
