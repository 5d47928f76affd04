//! The live console: a page every node serves at `GET /`, and the routes
//! that feed it (`docs/api.md`, "Operations").
//!
//! - [`stream`]: `GET /v1/events`, Server-Sent Events of this node's
//!   protocol events (`src/events.rs`) merged with its peers' (relayed), so
//!   a browser talks only to the node that served the page.
//! - [`acceptors`]: every member's raw acceptor state of one key.
//! - [`members`]: every member's own `/v1/status` state.
//! - [`dev_control`]: stop and start the nodes of a `paxos-kv dev` cluster.
//! - [`access`]: who may use these routes and which events a viewer sees.
//! - `index.html`: the page itself, embedded in the binary (no CDN).

pub mod acceptors;
pub mod access;
pub mod dev_control;
pub mod members;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Semaphore};

use crate::api::ApiError;
use crate::auth::ClientAuth;
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

/// How long a console fan-out waits for each member.
pub const PEER_DEADLINE: Duration = Duration::from_secs(2);

/// Everything the console routes share.
pub struct Console<S, T> {
    /// This node.
    pub node: Arc<Node<S, T>>,
    /// The cluster token: required on `scope=local` streams and on
    /// `/v1/console/acceptor`, and sent to peers by relays.
    pub token: Option<String>,
    /// The client tokens: who may open the page and the stream, and which
    /// keys' events each viewer sees ([`access`]).
    pub clients: Arc<ClientAuth>,
    /// Whether peer-side routes need a verified client certificate
    /// (`--tls-ca`), as every peer route does.
    pub peers_need_certificate: bool,
    /// Every member's base URL (no trailing slash), this node included.
    pub peers: Vec<(NodeId, String)>,
    /// The client for relays and acceptor-state calls to peers: the node's
    /// peer TLS configuration (CA, client certificate) when TLS is on.
    pub client: reqwest::Client,
    /// Bounds the event streams open at once ([`MAX_VIEWERS`]).
    pub viewers: Arc<Semaphore>,
    /// Turns `true` when the node stops: every event stream ends, so a
    /// graceful shutdown is not held by a viewer.
    pub closing: watch::Receiver<bool>,
    /// The dev cluster's controls, only under `paxos-kv dev`.
    pub dev: Option<Arc<DevControl>>,
}

/// How a node's console authenticates, as the rest of the node does.
pub struct Security {
    /// The cluster token (`--cluster-token`).
    pub cluster_token: Option<String>,
    /// The client tokens (`--client-tokens`), shared with the client API.
    pub clients: Arc<ClientAuth>,
    /// The peer client's TLS configuration (`--tls-ca`): relays and
    /// acceptor-state calls present the node's certificate and trust only
    /// the cluster CA. `None`: reqwest's defaults (public roots).
    pub peer_tls: Option<rustls::ClientConfig>,
    /// Whether peer routes need a verified client certificate.
    pub peers_need_certificate: bool,
}

impl<S, T> Console<S, T> {
    /// The console state of `node`; the returned sender ends every event
    /// stream when it sends `true` (or is dropped).
    pub fn new(
        node: Arc<Node<S, T>>,
        security: Security,
        peers: Vec<(NodeId, String)>,
        dev: Option<Arc<DevControl>>,
    ) -> Result<(Arc<Self>, watch::Sender<bool>), String> {
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = security.peer_tls {
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("console HTTP client: {e}"))?;
        let (closing_tx, closing) = watch::channel(false);
        let console = Console {
            node,
            token: security.cluster_token,
            clients: security.clients,
            peers_need_certificate: security.peers_need_certificate,
            peers,
            client,
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
            closing,
            dev,
        };
        Ok((Arc::new(console), closing_tx))
    }
}

impl<S, T> Console<S, T> {
    /// GETs `path` with `query` from the member at `url` (with the cluster
    /// token, over the peer TLS configuration), within [`PEER_DEADLINE`]:
    /// its JSON, or a short reason it gave none.
    pub async fn ask_peer(
        &self,
        url: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let mut request = self
            .client
            .get(format!("{url}{path}"))
            .query(query)
            .timeout(PEER_DEADLINE);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                "unreachable".to_string()
            }
        })?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }
}

/// The console's routes, to merge into the node's router.
pub fn router<S: Storage, T: Transport>(console: Arc<Console<S, T>>) -> Router {
    Router::new()
        .route("/", get(page::<S, T>).fallback(wrong_method))
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
            "/v1/console/members",
            get(members::all::<S, T>).fallback(wrong_method),
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

/// `GET /`: the page, to a viewer whose token (header or `?token=`) may
/// read some key. Refused, a browser (`Accept: text/html`) still gets the
/// page, under the refusal's status (401, 403), so it can ask for a token;
/// other clients get the JSON error. The page holds no data of its own.
async fn page<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    Query(query): Query<access::TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let html = || {
        (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CACHE_CONTROL, "no-cache"),
            ],
            PAGE,
        )
    };
    let Err(refused) = access::viewer(&console, &headers, query.token.as_deref()) else {
        return html().into_response();
    };
    let mut response = refused.into_response();
    if wants_html(&headers) {
        let headers = response.headers_mut();
        headers.remove(CONTENT_LENGTH);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        *response.body_mut() = Body::from(PAGE);
    }
    response
}

/// Whether the request is a browser's navigation (it accepts HTML).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
