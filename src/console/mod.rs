//! The live console: a page every node serves at `GET /`, and the routes
//! that feed it (`docs/api.md`, "Operations").
//!
//! - [`stream`]: `GET /v1/events`, Server-Sent Events of this node's
//!   protocol events (`src/events.rs`) merged with its peers' (relayed), so
//!   a browser talks only to the node that served the page.
//! - [`acceptors`]: every member's raw acceptor state of one key.
//! - [`dev_control`]: stop and start the nodes of a `paxos-kv dev` cluster.
//! - `index.html`: the page itself, embedded in the binary (no CDN).

pub mod acceptors;
pub mod dev_control;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Semaphore};

use crate::api::ApiError;
use crate::node::Node;
use crate::paxos::NodeId;
use crate::storage::Storage;
use crate::transport::Transport;

pub use dev_control::DevControl;

/// The page, HTML, CSS and JavaScript in one file.
pub const PAGE: &str = include_str!("index.html");

/// Event streams (`/v1/events`) one node serves at once, relays to peers
/// included; one more is answered 503.
pub const MAX_VIEWERS: usize = 32;

/// Everything the console routes share.
pub struct Console<S, T> {
    /// This node.
    pub node: Arc<Node<S, T>>,
    /// The cluster token: required on `scope=local` streams and on
    /// `/v1/console/acceptor`, and sent to peers by relays.
    pub token: Option<String>,
    /// Every member's base URL (no trailing slash), this node included.
    pub peers: Vec<(NodeId, String)>,
    /// The client for relays and acceptor-state calls to peers.
    pub client: reqwest::Client,
    /// Bounds the event streams open at once ([`MAX_VIEWERS`]).
    pub viewers: Arc<Semaphore>,
    /// Turns `true` when the node stops: every event stream ends, so a
    /// graceful shutdown is not held by a viewer.
    pub closing: watch::Receiver<bool>,
    /// The dev cluster's controls, only under `paxos-kv dev`.
    pub dev: Option<Arc<DevControl>>,
}

impl<S, T> Console<S, T> {
    /// The console state of `node`; the returned sender ends every event
    /// stream when it sends `true` (or is dropped).
    pub fn new(
        node: Arc<Node<S, T>>,
        token: Option<String>,
        peers: Vec<(NodeId, String)>,
        dev: Option<Arc<DevControl>>,
    ) -> Result<(Arc<Self>, watch::Sender<bool>), String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("console HTTP client: {e}"))?;
        let (closing_tx, closing) = watch::channel(false);
        let console = Console {
            node,
            token,
            peers,
            client,
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
            closing,
            dev,
        };
        Ok((Arc::new(console), closing_tx))
    }
}

/// The console's routes, to merge into the node's router.
pub fn router<S: Storage, T: Transport>(console: Arc<Console<S, T>>) -> Router {
    Router::new()
        .route("/", get(page).fallback(wrong_method))
        .route(
            "/v1/events",
            get(stream::events::<S, T>).fallback(wrong_method),
        )
        .route(
            "/v1/console/acceptor",
            get(acceptors::local::<S, T>).fallback(wrong_method),
        )
        .route(
            "/v1/console/acceptors",
            get(acceptors::all::<S, T>).fallback(wrong_method),
        )
        .route(
            "/v1/dev/nodes",
            get(dev_control::list::<S, T>).fallback(wrong_method),
        )
        .route(
            "/v1/dev/nodes/{id}/{action}",
            post(dev_control::act::<S, T>).fallback(wrong_method),
        )
        .with_state(console)
}

async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
