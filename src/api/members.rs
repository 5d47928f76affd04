//! `GET/POST /v1/members` and `DELETE /v1/members/{id}` (docs/api.md,
//! "Cluster identity and membership"): the membership and its changes.
//! They need the cluster token when one is set: a change of members is an
//! operator's act, like a peer's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::peer::authorized;
use super::{read_body, ApiError, AppState};
use crate::membership::{Change, ChangeRefused, MemberConfig};
use crate::node::{Health, Node};
use crate::paxos::NodeId;
use crate::reconfigure::ReconfigureError;
use crate::storage::Storage;
use crate::transport::Transport;

/// The body of `POST /v1/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: NodeId,
    url: String,
}

/// The status of a refused or failed change.
pub(super) fn change_status(error: &ReconfigureError) -> StatusCode {
    match error {
        ReconfigureError::Refused(ChangeRefused::BadId | ChangeRefused::BadUrl(_)) => {
            StatusCode::BAD_REQUEST
        }
        ReconfigureError::Refused(ChangeRefused::NotMember(_)) => StatusCode::NOT_FOUND,
        ReconfigureError::Refused(_) | ReconfigureError::Raced { .. } => StatusCode::CONFLICT,
        ReconfigureError::Node(e) => super::node_status(e),
        ReconfigureError::Unfinished(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The membership as `GET /v1/members` shows it, each member with its state:
/// this node's own (`serving`, `recovering`, ...), `joining` for a member
/// the change in progress adds (until the sweep has copied every key to
/// the new members' quorums), else `reachable` or `unreachable` as seen
/// from this node.
pub fn view<S: Storage, T: Transport>(
    node: &Node<S, T>,
    config: &MemberConfig,
) -> serde_json::Value {
    let seen = node.last_seen();
    let recent = node.timing().reachable_within();
    let joining = config.catching_up();
    let health = node.health();
    let members: Vec<_> = config
        .members
        .iter()
        .map(|(id, url)| {
            let state = if joining.contains(id) && (*id != node.id() || health == Health::Serving) {
                "joining"
            } else if *id == node.id() {
                health.name()
            } else if seen.get(id).is_some_and(|d| *d < recent) {
                "reachable"
            } else {
                "unreachable"
            };
            json!({ "id": id, "url": url.trim_end_matches('/'), "state": state })
        })
        .collect();
    json!({
        "epoch": config.epoch,
        "members": members,
        "changing": !config.is_stable(),
    })
}

fn check_token<S, T>(state: &AppState<S, T>, headers: &HeaderMap) -> Result<(), ApiError> {
    if authorized(state.token.as_deref(), headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

pub(super) async fn list<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&state, &headers)?;
    let config = state.node.config();
    Ok(Json(view(&state.node, &config)))
}

pub(super) async fn add<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_token(&state, &headers)?;
    let body = read_body(body, 64 * 1024, state.body_timeout).await?;
    let add: AddMember = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadBody(format!("expected {{\"id\":N,\"url\":\"http://...\"}}: {e}"))
    })?;
    let change = Change::Add {
        id: add.id,
        url: add.url,
    };
    run(&state, change, StatusCode::CREATED).await
}

pub(super) async fn remove<S: Storage, T: Transport>(
    State(state): State<Arc<AppState<S, T>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_token(&state, &headers)?;
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::BadQuery(format!("{id:?} is not a node id")))?;
    run(&state, Change::Remove { id }, StatusCode::OK).await
}

async fn run<S: Storage, T: Transport>(
    state: &AppState<S, T>,
    change: Change,
    success: StatusCode,
) -> Result<Response, ApiError> {
    if let Some(why) = state.node.health().reason() {
        return Err(ApiError::NotReady(format!(
            "this node is {}: {why}; ask another member",
            state.node.health().name()
        )));
    }
    let config = state.node.change_members(change).await?;
    Ok((success, Json(view(&state.node, &config))).into_response())
}
