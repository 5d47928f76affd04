//! Every member's raw acceptor state of one key, for the console's key view.
//!
//! - `GET /v1/console/acceptor?key=K` (peer route: needs the cluster token
//!   when one is set, and a verified client certificate under `--tls-ca`):
//!   this node's state of `K`.
//! - `GET /v1/console/acceptors?key=K` (client route: with
//!   `--client-tokens`, a token that may read `K`): asks every member,
//!   concurrently, each within [`super::PEER_DEADLINE`], and lists what each said
//!   (or why it did not): `{"key":K,"acceptors":[{"node":N,"promised":B,
//!   "accepted":{"ballot":B,"fast":BOOL,"value":V,"writer":HEX}|null,
//!   "decided":BOOL},...]}`, or `{"node":N,"error":"..."}` for a member
//!   that did not answer. Values are shortened as in events.
//!
//! Reading state changes nothing, and is not a linearizable read: it is a
//! picture of what each acceptor stored when asked.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value as Json_};

use super::access::check_peer;
use super::Console;
use crate::api::ApiError;
use crate::auth::Access;
use crate::events::preview;
use crate::key::validate_key;
use crate::node::NodeError;
use crate::paxos::{AcceptorState, Ballot, NodeId};
use crate::storage::Storage;
use crate::tls::PeerCertificate;
use crate::transport::Transport;
use crate::value::Value;

/// The query of both routes.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    /// The key.
    pub key: String,
}

/// `state` of `key` at `node`, as the routes show it.
pub fn describe(node: NodeId, state: &AcceptorState<Value>) -> Json_ {
    json!({
        "node": node,
        "promised": state.promised.to_string(),
        "accepted": state.accepted.as_ref().map(|a| json!({
            "ballot": a.ballot.to_string(),
            "fast": a.ballot == Ballot::FAST,
            "value": preview(&a.value.bytes),
            "writer": format!("{:016x}", a.value.writer),
        })),
        "decided": state.decided,
    })
}

/// `GET /v1/console/acceptor?key=K`.
pub async fn local<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    certificate: Option<Extension<PeerCertificate>>,
) -> Result<Json<Json_>, ApiError> {
    check_peer(&console, &headers, certificate)?;
    validate_key(&query.key)?;
    let node = &console.node;
    let state = node.storage().load(&query.key).map_err(NodeError::from)?;
    Ok(Json(describe(node.id(), &state)))
}

/// `GET /v1/console/acceptors?key=K`.
pub async fn all<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    let caller = console.clients.identify(&headers)?;
    validate_key(&query.key)?;
    caller.check_key(Access::Read, &query.key)?;
    let me = console.node.id();
    let asks = console.peers.iter().map(|(id, url)| {
        let (console, key) = (console.clone(), query.key.clone());
        let (id, url) = (*id, url.clone());
        async move {
            if id == me {
                return match console.node.storage().load(&key) {
                    Ok(state) => describe(id, &state),
                    Err(e) => json!({ "node": id, "error": e.to_string() }),
                };
            }
            match console
                .ask_peer(&url, "/v1/console/acceptor", &[("key", &key)])
                .await
            {
                Ok(state) => state,
                Err(e) => json!({ "node": id, "error": e }),
            }
        }
    });
    let acceptors = futures_util::future::join_all(asks).await;
    Ok(Json(json!({ "key": query.key, "acceptors": acceptors })))
}
