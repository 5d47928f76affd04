//! The peer protocol's routes, `POST /v1/paxos/{op}` (docs/api.md, "Peer
//! protocol"): `batch` (the only shape of acceptor messages on the wire; a
//! single message is a batch of one), `hello`, `fence`, `scan`, `list` and
//! `config`.
//! Each checks the cluster token (and with `--tls-ca` the peer's
//! certificate), the protocol version and the sender's membership before
//! the node sees the message.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{read_body, ApiError, AppState};
use crate::key::validate_key;
use crate::list::local_page;
use crate::node::{Node, NodeError};
use crate::paxos::{Members, NodeId};
use crate::storage::Storage;
use crate::tls::PeerCertificate;
use crate::transport::list::ListRequest;
use crate::transport::wire::{
    parse_lazy_header, Base64, BatchReply, BatchResponse, ConfigRequest, FenceReply, FenceRequest,
    HelloRequest, PeerBatch, ScanReply, ScanRequest, BATCH_VALUE_BYTES, LAZY_HEADER,
    MAX_BATCH_MESSAGES, PROTOCOL_VERSION,
};
use crate::transport::{Control, ControlReply, Transport};

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

pub(super) async fn peer<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    uri: Uri,
    headers: HeaderMap,
    certificate: Option<axum::Extension<PeerCertificate>>,
    body: Body,
) -> Result<Response, ApiError> {
    if state.peers_need_certificate && !certificate.is_some_and(|c| c.verified) {
        return Err(ApiError::PeerCertificateRequired);
    }
    if !authorized(state.token.as_deref(), &headers) {
        return Err(ApiError::Unauthorized);
    }
    match uri.path().strip_prefix("/v1/paxos/").unwrap_or_default() {
        "batch" => peer_batch(&state, &headers, body)
            .await
            .map(IntoResponse::into_response),
        "hello" => {
            let hello: HelloRequest = control_body(&state, body).await?;
            check_version(hello.version)?;
            check_sender(&state.node.members(), hello.from)?;
            let reply = control(
                &state,
                hello.from,
                Control::Hello {
                    digest: hello.digest,
                    nonce: hello.nonce,
                },
            )
            .await?;
            match reply {
                ControlReply::Hello(reply) => Ok(Json(reply).into_response()),
                other => Err(unexpected(other)),
            }
        }
        "fence" => {
            let fence: FenceRequest = control_body(&state, body).await?;
            admit(
                &state.node,
                fence.version,
                fence.from,
                &fence.cluster,
                fence.epoch,
            )?;
            let message = Control::Fence {
                incarnation: fence.incarnation,
            };
            match control(&state, fence.from, message).await? {
                ControlReply::Fenced(recorded) => Ok(Json(FenceReply {
                    version: PROTOCOL_VERSION,
                    from: state.node.id(),
                    recorded,
                })
                .into_response()),
                other => Err(unexpected(other)),
            }
        }
        "scan" => {
            let scan: ScanRequest = control_body(&state, body).await?;
            admit(
                &state.node,
                scan.version,
                scan.from,
                &scan.cluster,
                scan.epoch,
            )?;
            let message = Control::Scan {
                after: scan.after,
                limit: scan.limit,
            };
            match control(&state, scan.from, message).await? {
                ControlReply::Keys { keys, more } => Ok(Json(ScanReply {
                    version: PROTOCOL_VERSION,
                    from: state.node.id(),
                    keys,
                    more,
                })
                .into_response()),
                other => Err(unexpected(other)),
            }
        }
        "config" => {
            // Token (and certificate) checked above; no membership check:
            // see `ConfigRequest`.
            let ask: ConfigRequest = control_body(&state, body).await?;
            check_version(ask.version)?;
            match control(&state, ask.from, Control::Config).await? {
                ControlReply::Config(reply) => Ok(Json(reply).into_response()),
                other => Err(unexpected(other)),
            }
        }
        "list" => peer_list(&state, body).await,
        _ => Err(ApiError::NoRoute),
    }
}

/// The body of a node-level message (small JSON).
async fn control_body<S, T, M: serde::de::DeserializeOwned>(
    state: &AppState<S, T>,
    body: Body,
) -> Result<M, ApiError> {
    let body = read_body(body, 64 * 1024, state.body_timeout).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadPeerMessage(e.to_string()))
}

async fn control<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    from: NodeId,
    message: Control,
) -> Result<ControlReply, ApiError> {
    Ok(state.node.handle_control(from, message).await?)
}

fn unexpected(reply: ControlReply) -> ApiError {
    ApiError::BadPeerMessage(format!("internal: unexpected answer {reply:?}"))
}

fn check_version(version: u32) -> Result<(), ApiError> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ApiError::BadPeerMessage(format!(
            "peer protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})"
        )))
    }
}

/// `/v1/paxos/batch`: every message is checked before any is applied, so a
/// malformed batch changes nothing (400); then all run concurrently and the
/// reply lists each acceptor's answer in order. Its [`LAZY_HEADER`] names
/// the announced decides, recorded without a sync; without it (a sender of
/// a release before the header) every message is durable. A malformed
/// header value is refused like a malformed body (see
/// [`parse_lazy_header`] for why it is not read as "all durable").
async fn peer_batch<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    headers: &HeaderMap,
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
    admit(node, batch.version, batch.from, &batch.cluster, batch.epoch)?;
    if batch.messages.len() > MAX_BATCH_MESSAGES {
        return Err(ApiError::BadPeerMessage(format!(
            "a batch of {} messages is over the limit of {MAX_BATCH_MESSAGES}",
            batch.messages.len()
        )));
    }
    let mut marks = headers.get_all(LAZY_HEADER).iter();
    let mark = marks.next();
    if marks.next().is_some() {
        return Err(ApiError::BadPeerMessage(format!(
            "header {LAZY_HEADER}: more than one"
        )));
    }
    let lazy = parse_lazy_header(mark.map(|v| v.as_bytes()), &batch.messages)
        .map_err(ApiError::BadPeerMessage)?;
    let mut requests = Vec::with_capacity(batch.messages.len());
    for (message, lazy) in batch.messages.into_iter().zip(lazy) {
        check_message(state, &message.key, message.value.as_ref())?;
        let (key, request, fence) = message
            .into_request(batch.version)
            .map_err(ApiError::BadPeerMessage)?;
        requests.push((key, request, fence, lazy));
    }
    let incarnation = node.incarnation();
    let replies = node
        .handle_acceptor_batch(requests, batch.epoch)
        .await
        .into_iter()
        .map(|answer| match answer {
            Ok(answer) => BatchReply::reply(answer.reply),
            Err(e) => BatchReply::Error(e.to_string()),
        })
        .collect();
    Ok(Json(BatchResponse {
        version: PROTOCOL_VERSION,
        from: node.id(),
        incarnation,
        replies,
    }))
}

/// `/v1/paxos/list`: this node's page of voted registers
/// (`src/transport/list.rs`). Changes nothing.
async fn peer_list<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    body: Body,
) -> Result<Response, ApiError> {
    // A prefix and an `after` of at most 1024 bytes each, escaped, and JSON.
    let body = read_body(body, 16 * 1024, state.body_timeout).await?;
    let request: ListRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadPeerMessage(e.to_string()))?;
    check_sender(&state.node.members(), request.from)?;
    request.check().map_err(ApiError::BadPeerMessage)?;
    state
        .node
        .admit_peer(request.from, &request.cluster, request.epoch)
        .map_err(ApiError::OtherCluster)?;
    let page = local_page(&state.node, &request)
        .await
        .map_err(NodeError::from)?;
    Ok(Json(page).into_response())
}

/// The envelope every peer message after `hello` carries: a protocol this
/// node speaks, a sender that is a member, and this cluster and epoch
/// (docs/design.md invariant 10); checked in that order.
fn admit<S: Storage, T: Transport>(
    node: &Node<S, T>,
    version: u32,
    from: NodeId,
    cluster: &str,
    epoch: u64,
) -> Result<(), ApiError> {
    check_version(version)?;
    check_sender(&node.members(), from)?;
    node.admit_peer(from, cluster, epoch)
        .map_err(ApiError::OtherCluster)
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
    // The cluster's own registers (`src/membership.rs`) travel like keys.
    if !crate::membership::is_internal(key) {
        validate_key(key).map_err(|e| ApiError::BadPeerMessage(e.to_string()))?;
    }
    match value {
        Some(value) if value.0.len() > state.max_value_bytes => {
            Err(ApiError::TooLarge(state.max_value_bytes))
        }
        _ => Ok(()),
    }
}
