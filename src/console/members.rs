//! `GET /v1/console/members`: every member's own view of itself, so the
//! page can draw a peer as serving, recovering (rebuilding after a lost
//! disk), joining or failed, not only as reachable or not.
//!
//! The node asks each peer's `GET /v1/status` concurrently, each within
//! [`super::PEER_DEADLINE`], and answers
//! `{"members":[{"id":N,"state":S,"reason":R},...]}`, or
//! `{"id":N,"error":"..."}` for a member that did not answer. Client
//! route: with `--client-tokens`, a token that may read some key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value as Json_};

use super::access::viewer;
use super::Console;
use crate::api::ApiError;
use crate::storage::Storage;
use crate::transport::Transport;

/// What the page needs of one `/v1/status`.
fn summary(id: u64, status: &Json_) -> Json_ {
    json!({ "id": id, "state": status["state"], "reason": status["reason"] })
}

/// `GET /v1/console/members`.
pub async fn all<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    headers: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    viewer(&console, &headers, None)?;
    let asks = console.peers.iter().map(|(id, url)| {
        let (console, url, id) = (console.clone(), url.clone(), u64::from(*id));
        async move {
            match console.ask_peer(&url, "/v1/status", &[]).await {
                Ok(status) => summary(id, &status),
                Err(e) => json!({ "id": id, "error": e }),
            }
        }
    });
    let members = futures_util::future::join_all(asks).await;
    Ok(Json(json!({ "members": members })))
}
