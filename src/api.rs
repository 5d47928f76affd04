//! The HTTP edge: client API, peer API, health, status and metrics on one
//! router. No Paxos logic lives here; [`ApiError`] is the one place where
//! failures become status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::key::{parse_key, validate_key, KeyError};
use crate::node::{Node, NodeError, PutOutcome};
use crate::paxos::{Members, NodeId};
use crate::server::ConnectionStats;
use crate::storage::Storage;
use crate::transport::wire::{
    Base64, BatchReply, BatchResponse, Op, PeerBatch, PeerRequest, PeerResponse, BATCH_VALUE_BYTES,
    MAX_BATCH_MESSAGES, PROTOCOL_VERSION,
};
use crate::transport::Transport;

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
    /// 400: a query parameter makes no sense.
    #[error("{0}")]
    BadQuery(String),
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
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadKey(_)
            | ApiError::BadBody(_)
            | ApiError::BadPeerMessage(_)
            | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Node(e) => node_status(e),
            ApiError::Overloaded | ApiError::TooManyViewers => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DevOnly | ApiError::NoSuchNode(_) => StatusCode::NOT_FOUND,
            ApiError::DevControl(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
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
            ApiError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
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
        NodeError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
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

/// A peer message carries at most one value, base64-encoded, plus JSON.
fn peer_body_limit(max_value_bytes: usize) -> usize {
    max_value_bytes.div_ceil(3) * 4 + 64 * 1024
}

/// A batch carries values of up to [`BATCH_VALUE_BYTES`] in all (or one
/// larger value), base64-encoded, plus JSON of up to
/// [`MAX_BATCH_MESSAGES`] messages with keys of up to 1024 bytes (twice that
/// when every character is escaped).
fn batch_body_limit(max_value_bytes: usize) -> usize {
    peer_body_limit(max_value_bytes.max(BATCH_VALUE_BYTES)) + MAX_BATCH_MESSAGES * 2304
}

/// The router of one node.
pub fn router<S: Storage, T: Transport>(state: Arc<AppState<S, T>>) -> Router {
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(get_value::<S, T>)
                .put(put_value::<S, T>)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/kv/",
            get(empty_key).put(empty_key).fallback(method_not_allowed),
        )
        .route(
            "/v1/kv",
            get(empty_key).put(empty_key).fallback(method_not_allowed),
        )
        .route(
            "/v1/paxos/{op}",
            post(peer::<S, T>).fallback(method_not_allowed),
        )
        .route("/health", get(health).fallback(method_not_allowed))
        .route(
            "/v1/status",
            get(status::<S, T>).fallback(method_not_allowed),
        )
        .route(
            "/metrics",
            get(metrics::<S, T>).fallback(method_not_allowed),
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

async fn empty_key() -> ApiError {
    ApiError::BadKey(KeyError::Empty)
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
    let key = key_of(&uri)?;
    let limit = state.max_value_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
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
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    match state.node.get(&key).await? {
        Some(value) => Ok(raw(StatusCode::OK, value)),
        None => Err(ApiError::NotFound),
    }
}

/// Reads a whole body of at most `limit` bytes within `timeout`; a slow or
/// oversized body is refused without buffering more than `limit`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiError::TooLarge(limit)
            } else {
                ApiError::BadBody(e.to_string())
            }
        })?;
    Ok(collected.to_bytes())
}

fn raw(status: StatusCode, bytes: Bytes) -> Response {
    (status, [(CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry the cluster token (always, when none is set).
pub(crate) fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

async fn peer<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !authorized(state.token.as_deref(), &headers) {
        return Err(ApiError::Unauthorized);
    }
    let op = match uri.path().strip_prefix("/v1/paxos/").unwrap_or_default() {
        "prepare" => Op::Prepare,
        "accept" => Op::Accept,
        "read" => Op::Read,
        "decide" => Op::Decide,
        "batch" => {
            return peer_batch(&state, body)
                .await
                .map(IntoResponse::into_response)
        }
        _ => return Err(ApiError::NoRoute),
    };
    let body = read_body(
        body,
        peer_body_limit(state.max_value_bytes),
        state.body_timeout,
    )
    .await?;
    let message: PeerRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadPeerMessage(e.to_string()))?;
    let node = &state.node;
    check_sender(node.members(), message.from)?;
    check_message(&state, &message.key, message.value.as_ref())?;
    let key = message.key.clone();
    let request = message.into_request(op).map_err(ApiError::BadPeerMessage)?;
    let reply = node
        .handle_acceptor(&key, request)
        .await
        .map_err(NodeError::from)?;
    Ok(Json(PeerResponse::new(node.id(), reply)).into_response())
}

/// `/v1/paxos/batch`: every message is checked before any is applied, so a
/// malformed batch changes nothing (400); then all run concurrently and the
/// reply lists each acceptor's answer in order.
async fn peer_batch<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let body = read_body(
        body,
        batch_body_limit(state.max_value_bytes),
        state.body_timeout,
    )
    .await?;
    let batch: PeerBatch =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadPeerMessage(e.to_string()))?;
    let node = &state.node;
    check_sender(node.members(), batch.from)?;
    if batch.messages.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::BadPeerMessage(format!(
            "a batch of {} messages is over the limit of {MAX_BATCH_MESSAGES}",
            batch.messages.len()
        )));
    }
    let mut requests = Vec::with_capacity(batch.messages.len());
    for message in batch.messages {
        check_message(state, &message.key, message.value.as_ref())?;
        requests.push(
            message
                .into_request(batch.version)
                .map_err(ApiError::BadPeerMessage)?,
        );
    }
    let replies = node
        .handle_acceptor_batch(requests)
        .await
        .into_iter()
        .map(|reply| match reply {
            Ok(reply) => BatchReply::Ok(PeerResponse::new(node.id(), reply).reply),
            Err(e) => BatchReply::Error(e.to_string()),
        })
        .collect();
    Ok(Json(BatchResponse {
        version: PROTOCOL_VERSION,
        from: node.id(),
        replies,
    }))
}

fn check_sender(members: &Members, from: NodeId) -> Result<(), ApiError> {
    if members.contains(from) {
        Ok(())
    } else {
        Err(ApiError::BadPeerMessage(format!(
            "node {from} is not a member of this cluster"
        )))
    }
}

fn check_message<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    key: &str,
    value: Option<&Base64>,
) -> Result<(), ApiError> {
    validate_key(key).map_err(|e| ApiError::BadPeerMessage(e.to_string()))?;
    match value {
        Some(value) if value.0.len() > state.max_value_bytes => {
            Err(ApiError::TooLarge(state.max_value_bytes))
        }
        _ => Ok(()),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// How recently a peer must have answered to count as reachable.
const RECENT: Duration = Duration::from_secs(10);

async fn status<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
) -> Json<serde_json::Value> {
    let node = &state.node;
    let seen = node.last_seen();
    let members: Vec<_> = state
        .peer_urls
        .iter()
        .map(|(id, url)| {
            let this = *id == node.id();
            let ago = seen.get(id);
            json!({
                "id": id,
                "url": url,
                "self": this,
                "reachable": this || ago.is_some_and(|d| *d < RECENT),
                "last_answer_ms_ago": ago.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    Json(json!({
        "id": node.id(),
        "version": env!("CARGO_PKG_VERSION"),
        "quorum": node.members().quorum(),
        "members": members,
    }))
}

async fn metrics<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
) -> impl IntoResponse {
    let node = &state.node;
    let text = node.metrics().render(&[
        (
            "paxos_kv_group_commits",
            "fdatasync rounds of the storage since start.",
            node.storage().sync_count(),
        ),
        (
            "paxos_kv_accepted_connections",
            "Connections accepted since start, shed ones included.",
            state.connections.accepted(),
        ),
        (
            "paxos_kv_open_connections",
            "Client and peer connections being served now.",
            state.connections.open(),
        ),
        (
            "paxos_kv_shed_connections",
            "Connections refused with 503 at the connection limit since start.",
            state.connections.shed(),
        ),
        (
            "paxos_kv_console_events_dropped",
            "Protocol events dropped for console viewers that read too slowly, since start.",
            node.events().dropped(),
        ),
        (
            "paxos_kv_console_events_skipped",
            "Protocol events not reported, over the budget of a watched node, since start.",
            node.events().skipped(),
        ),
    ]);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}
