//! The node's own routes: `/health` (the process answers), `/ready` (the
//! node serves), `/v1/status` (membership, reachability, notes on refused
//! peers) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};
use crate::storage::Storage;
use crate::transport::Transport;

pub(super) async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while this node serves clients and counts in quorums; 503 with the
/// reason while its cluster forms, it rebuilds, or its disk failed.
pub(super) async fn ready<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let health = state.node.health();
    match health.reason() {
        None => Ok(Json(json!({ "status": "ready" }))),
        Some(why) => Err(ApiError::NotReady(format!(
            "this node is {}: {why}",
            health.name()
        ))),
    }
}

pub(super) async fn status<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
) -> Json<serde_json::Value> {
    let node = &state.node;
    let seen = node.last_seen();
    let recent = node.timing().reachable_within();
    let config = node.config();
    let members: Vec<_> = config
        .members
        .iter()
        .map(|(id, url)| {
            let this = *id == node.id();
            let ago = seen.get(id);
            json!({
                "id": id,
                "url": url.trim_end_matches('/'),
                "self": this,
                "reachable": this || ago.is_some_and(|d| *d < recent),
                "last_answer_ms_ago": ago.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let identity = node.identity();
    let health = node.health();
    let notes: serde_json::Map<String, serde_json::Value> = node
        .peer_notes()
        .into_iter()
        .map(|(id, why)| (id.to_string(), json!(why)))
        .collect();
    Json(json!({
        "id": node.id(),
        "version": env!("CARGO_PKG_VERSION"),
        "state": health.name(),
        "reason": health.reason(),
        "cluster": (!identity.cluster.is_empty()).then_some(&identity.cluster),
        "epoch": identity.epoch,
        "incarnation": identity.incarnation,
        "known_incarnations": identity.known,
        "quorum": node.members().quorum(),
        "members": members,
        "membership": super::members::view(node, &config),
        "refused_peers": notes,
    }))
}

pub(super) async fn metrics<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
) -> impl IntoResponse {
    let node = &state.node;
    let text = crate::metrics::render(
        node.metrics(),
        &state.latency,
        &[
            (
                "paxos_kv_group_commits",
                "fdatasync rounds of the storage since start.",
                node.storage().sync_count(),
            ),
            (
                "paxos_kv_waiters",
                "Readers waiting for a value to be chosen (GET ?wait) now.",
                node.waiters().count() as u64,
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
        ],
    );
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
