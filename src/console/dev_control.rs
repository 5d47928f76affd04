//! Stopping and starting the nodes of a `paxos-kv dev` cluster from the
//! console, to watch a majority keep working and a recovery round repair a
//! half-done key.
//!
//! - `GET /v1/dev/nodes`: `{"nodes":[{"id":N,"url":U,"state":S},...]}`,
//!   S one of `running`, `stopping`, `stopped`, `starting`.
//! - `POST /v1/dev/nodes/{id}/stop` and `.../start`: 202 with the new state;
//!   the change happens in the background (a node may be asked to stop
//!   itself: its graceful shutdown waits for requests in flight, this one
//!   included). 409 when the node is not in a state to do so.
//!
//! Outside `paxos-kv dev` every route answers 404 with a JSON error: a
//! production node cannot be stopped over HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::Mutex;

use super::Console;
use crate::api::ApiError;
use crate::config::Config;
use crate::paxos::NodeId;
use crate::server::{bind, prepare, Prepared, RunningServer};
use crate::storage::Storage;
use crate::transport::Transport;

/// How long a start may retry reopening the data directory (sled's lock is
/// released once the stopped node's last tasks end) and binding the port.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Where one dev node stands.
enum Slot {
    Running(RunningServer),
    Stopping,
    Stopped,
    Starting,
}

impl Slot {
    fn name(&self) -> &'static str {
        match self {
            Slot::Running(_) => "running",
            Slot::Stopping => "stopping",
            Slot::Stopped => "stopped",
            Slot::Starting => "starting",
        }
    }
}

struct DevNode {
    config: Config,
    slot: Slot,
}

/// The nodes of one dev cluster, each of which can be stopped and started.
pub struct DevControl {
    nodes: Mutex<BTreeMap<NodeId, DevNode>>,
}

impl DevControl {
    /// No nodes yet; add them with [`DevControl::launch`].
    pub fn new() -> Arc<Self> {
        Arc::new(DevControl {
            nodes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Binds and starts `prepared`, the node of `config`, whose console can
    /// then stop and start every node of this cluster. Errors are one line.
    pub async fn launch(
        self: &Arc<Self>,
        config: Config,
        prepared: Prepared,
    ) -> Result<RunningInfo, String> {
        let listener = bind(config.listen).await?;
        let server = prepared.with_dev(self.clone()).spawn(listener)?;
        let info = RunningInfo {
            id: config.id,
            addr: server.addr(),
        };
        self.nodes.lock().await.insert(
            config.id,
            DevNode {
                config,
                slot: Slot::Running(server),
            },
        );
        Ok(info)
    }

    async fn open(self: &Arc<Self>, config: &Config) -> Result<RunningServer, String> {
        let prepared = prepare(config.clone())?.with_dev(self.clone());
        let listener = bind(config.listen).await?;
        Ok(prepared.spawn(listener)?)
    }

    /// Every node's id, URL and state.
    pub async fn states(&self) -> Vec<(NodeId, String, &'static str)> {
        let nodes = self.nodes.lock().await;
        nodes
            .iter()
            .map(|(id, n)| (*id, format!("http://{}", n.config.listen), n.slot.name()))
            .collect()
    }

    /// Begins stopping node `id` (gracefully: requests in flight finish,
    /// storage is flushed).
    pub async fn stop(self: &Arc<Self>, id: NodeId) -> Result<&'static str, ApiError> {
        let mut nodes = self.nodes.lock().await;
        let node = nodes.get_mut(&id).ok_or(ApiError::NoSuchNode(id))?;
        let Slot::Running(_) = node.slot else {
            return Err(ApiError::DevControl(format!(
                "node {id} is {}, not running",
                node.slot.name()
            )));
        };
        let Slot::Running(server) = std::mem::replace(&mut node.slot, Slot::Stopping) else {
            unreachable!("checked above");
        };
        let control = self.clone();
        tokio::spawn(async move {
            if let Err(e) = server.stop().await {
                tracing::warn!(node = id, error = %e, "dev node stopped with an error");
            }
            if let Some(node) = control.nodes.lock().await.get_mut(&id) {
                node.slot = Slot::Stopped;
            }
            tracing::info!(node = id, "dev node stopped from the console");
        });
        Ok("stopping")
    }

    /// Begins starting the stopped node `id` over its data directory.
    pub async fn start(self: &Arc<Self>, id: NodeId) -> Result<&'static str, ApiError> {
        let mut nodes = self.nodes.lock().await;
        let node = nodes.get_mut(&id).ok_or(ApiError::NoSuchNode(id))?;
        if !matches!(node.slot, Slot::Stopped) {
            return Err(ApiError::DevControl(format!(
                "node {id} is {}, not stopped",
                node.slot.name()
            )));
        }
        node.slot = Slot::Starting;
        let config = node.config.clone();
        let control = self.clone();
        tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + START_DEADLINE;
            let slot = loop {
                match control.open(&config).await {
                    Ok(server) => break Slot::Running(server),
                    Err(e) if tokio::time::Instant::now() >= give_up => {
                        tracing::warn!(node = id, error = %e, "dev node did not start");
                        break Slot::Stopped;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if let Some(node) = control.nodes.lock().await.get_mut(&id) {
                node.slot = slot;
            }
        });
        Ok("starting")
    }

    /// Stops every running node and waits until each has flushed.
    pub async fn stop_all(&self) -> Result<(), String> {
        let servers: Vec<RunningServer> = {
            let mut nodes = self.nodes.lock().await;
            nodes
                .values_mut()
                .filter_map(|n| match std::mem::replace(&mut n.slot, Slot::Stopped) {
                    Slot::Running(server) => Some(server),
                    _ => None,
                })
                .collect()
        };
        let mut result = Ok(());
        for server in servers {
            if let Err(e) = server.stop().await {
                result = Err(e.into());
            }
        }
        result
    }
}

/// A node [`DevControl::launch`] started.
#[derive(Debug, Clone, Copy)]
pub struct RunningInfo {
    /// Its id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

/// `GET /v1/dev/nodes`.
pub async fn list<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dev = console.dev.as_ref().ok_or(ApiError::DevOnly)?;
    let nodes: Vec<_> = dev
        .states()
        .await
        .into_iter()
        .map(|(id, url, state)| json!({ "id": id, "url": url, "state": state }))
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// `POST /v1/dev/nodes/{id}/{stop|start}`.
pub async fn act<S: Storage, T: Transport>(
    State(console): State<Arc<Console<S, T>>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let dev = console.dev.as_ref().ok_or(ApiError::DevOnly)?;
    let id: NodeId = id.parse().map_err(|_| ApiError::NoRoute)?;
    let state = match action.as_str() {
        "stop" => dev.stop(id).await?,
        "start" => dev.start(id).await?,
        _ => return Err(ApiError::NoRoute),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "state": state })),
    )
        .into_response())
}
