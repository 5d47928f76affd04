//! Wiring one production node: sled storage, HTTP transport, the axum
//! router, a peer heartbeat, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{router, AppState};
use crate::config::Config;
use crate::node::Node;
use crate::paxos::{Members, Request};
use crate::storage::{SledStorage, Storage};
use crate::transport::{HttpTransport, Transport};

/// The production node type.
pub type ProdNode = Node<SledStorage, HttpTransport>;

/// A node with its storage open, ready to serve.
pub struct Prepared {
    config: Config,
    node: Arc<ProdNode>,
}

/// Opens the data directory and builds the node. Binds nothing, so every
/// configuration or disk problem surfaces before the port is taken.
pub fn prepare(config: Config) -> Result<Prepared, String> {
    let storage = SledStorage::open(&config.data_dir)
        .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?;
    let transport = HttpTransport::new(
        config.id,
        &config.peers,
        config.token.as_deref(),
        config.peer_timeout,
    )?;
    let members = Members::new(config.peers.keys().copied());
    let node = Node::new(
        config.id,
        members,
        config.timing.clone(),
        storage,
        transport,
        None,
    )
    .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?;
    Ok(Prepared { config, node })
}

impl Prepared {
    /// The node.
    pub fn node(&self) -> &Arc<ProdNode> {
        &self.node
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the
    /// requests in flight (for up to 10 s) and flushes storage.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let Prepared { config, node } = self;
        if config.token.is_none() {
            tracing::warn!(
                "no --cluster-token: peer routes /v1/paxos/* are open to anyone who can reach this port"
            );
        }
        let state = Arc::new(AppState {
            node: node.clone(),
            token: config.token.clone(),
            max_value_bytes: config.max_value_bytes,
            body_timeout: config.body_timeout,
            peer_urls: config
                .peers
                .iter()
                .map(|(id, url)| (*id, url.as_str().trim_end_matches('/').to_string()))
                .collect(),
        });
        let heartbeat = tokio::spawn(heartbeat(node.clone()));
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(id = config.id, %addr, members = config.peers.len(), "serving");
        let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stopping_tx.send(());
        };
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(signal);
        let server = async move { server.await.map_err(|e| e.to_string()) };
        // Stop waiting for stragglers 10 s after the signal.
        let grace = async move {
            let _ = stopping_rx.await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        };
        let result = tokio::select! {
            r = server => r,
            _ = grace => {
                tracing::warn!("requests still in flight after 10 s; stopping anyway");
                Ok(())
            }
        };
        heartbeat.abort();
        node.storage()
            .flush()
            .map_err(|e| format!("flush at shutdown failed: {e}"))?;
        tracing::info!("stopped");
        result
    }

    /// Starts serving in the background (for `dev` and tests).
    pub fn spawn(self, listener: TcpListener) -> Result<RunningServer, String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            stop: Some(stop),
            task,
        })
    }
}

/// A node serving in the background.
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully and waits until storage is flushed.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| e.to_string())?
    }
}

/// Binds `addr` with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Every 2 s, asks each peer not heard from lately for a read, so
/// `/v1/status` knows who answers even on an idle cluster. A read changes
/// no state.
async fn heartbeat<S: Storage, T: Transport>(node: Arc<Node<S, T>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.ping_quiet_peers(Duration::from_secs(2), "paxos-kv/heartbeat", Request::Read)
            .await;
    }
}
