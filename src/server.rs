//! Wiring one production node: sled storage, HTTP transport, the axum
//! router, a peer heartbeat, and graceful shutdown.
//!
//! Connections are served by hyper's HTTP/1 connection builder under
//! [`Limits`], so that slow or stalled clients cannot hold a node:
//! - at most [`Limits::max_connections`] connections are served at once; a
//!   connection over the limit is answered `503` (JSON) and closed;
//! - a request's headers must arrive within [`Limits::header_timeout`], and a
//!   keep-alive connection idle for that long is closed (hyper starts the
//!   same timer whenever it waits for the next request head);
//! - a request body must arrive within the body timeout of the [`Config`]
//!   (`408`, see `api.rs`);
//! - a client that stops reading its response for [`Limits::write_timeout`]
//!   is disconnected.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::api::{router, ApiError, AppState};
use crate::config::Config;
use crate::node::Node;
use crate::paxos::{Members, Request};
use crate::storage::{SledStorage, Storage};
use crate::transport::{HttpTransport, Transport};

/// The production node type.
pub type ProdNode = Node<SledStorage, HttpTransport>;

/// How much a client may take from a node; see the module docs.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline to receive a request's headers, counted from when the
    /// connection is ready for a request; also the longest a keep-alive
    /// connection may sit idle.
    pub header_timeout: Duration,
    /// Longest a client may leave a response unread (no write progress)
    /// before the node drops the connection.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest request head (request line and headers) a connection may send;
/// a larger one is answered 431 and the connection closed. Keys are at most
/// 1024 bytes (3 KiB percent-encoded), so honest heads are far smaller, and
/// the cap bounds what each of the 1024 connections can make the node hold.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Connections over [`Limits::max_connections`] that are still answered 503;
/// beyond these, an extra connection is closed without an answer.
const MAX_SHED_CONNECTIONS: usize = 64;

/// The longest an over-limit connection may take to send its request head
/// before its 503.
const SHED_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the shutdown signal the node stops waiting for requests
/// in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Counters of the connection layer, rendered by `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    open: AtomicU64,
    shed: AtomicU64,
}

impl ConnectionStats {
    /// Connections accepted since start, shed ones included.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections being served now (the 503 answers to shed ones excluded).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections refused with 503 (or closed) because the node was at its
    /// connection limit, since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Counts one open connection for as long as it lives.
struct OpenConnection(Arc<ConnectionStats>);

impl OpenConnection {
    fn new(stats: &Arc<ConnectionStats>) -> Self {
        stats.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(stats.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A node with its storage open, ready to serve.
pub struct Prepared {
    config: Config,
    node: Arc<ProdNode>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    /// Console controls of a `paxos-kv dev` cluster, when this node is in one.
    dev: Option<Arc<crate::console::DevControl>>,
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
    Ok(Prepared {
        config,
        node,
        limits: Limits::default(),
        stats: Arc::default(),
        dev: None,
    })
}

impl Prepared {
    /// The node.
    pub fn node(&self) -> &Arc<ProdNode> {
        &self.node
    }

    /// Serves under `limits` instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Lets this node's console stop and start the nodes of `dev`
    /// (`paxos-kv dev` only).
    pub fn with_dev(mut self, dev: Arc<crate::console::DevControl>) -> Self {
        self.dev = Some(dev);
        self
    }

    /// The connection counters of this node.
    pub fn connection_stats(&self) -> &Arc<ConnectionStats> {
        &self.stats
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting,
    /// finishes the requests in flight (for up to 10 s) and flushes storage.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let Prepared {
            config,
            node,
            limits,
            stats,
            dev,
        } = self;
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
            connections: stats.clone(),
        });
        let (console, console_closing) = crate::console::Console::new(
            node.clone(),
            config.token.clone(),
            state.peer_urls.clone(),
            dev,
        )?;
        let app = router(state).merge(crate::console::router(console));
        // Event streams never end by themselves: end them when the node stops.
        let shutdown = async move {
            shutdown.await;
            let _ = console_closing.send(true);
        };
        let heartbeat = tokio::spawn(heartbeat(node.clone()));
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(id = config.id, %addr, members = config.peers.len(), "serving");
        let result = serve(listener, app, limits, stats, shutdown).await;
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
        let stats = self.stats.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            stats,
            stop: Some(stop),
            task,
        })
    }
}

/// The accept loop: serves every connection under `limits` until `shutdown`
/// resolves, then lets connections finish their requests for up to
/// [`SHUTDOWN_GRACE`].
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shed_slots = Arc::new(Semaphore::new(MAX_SHED_CONNECTIONS));
    // `stopping` tells connections to finish; every connection task holds a
    // clone of `alive`, so `alive_tx.closed()` resolves when all are gone.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: wait for some to close
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let stopping = stopping_rx.clone();
        let alive = alive_rx.clone();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, limits, open) =
                    (app.clone(), limits.clone(), OpenConnection::new(&stats));
                tokio::spawn(async move {
                    serve_connection(stream, app, &limits, stopping).await;
                    drop((slot, open, alive));
                });
            }
            Err(_) => {
                stats.shed.fetch_add(1, Ordering::Relaxed);
                if let Ok(slot) = shed_slots.clone().try_acquire_owned() {
                    let write_timeout = limits.write_timeout;
                    tokio::spawn(async move {
                        shed_connection(stream, write_timeout).await;
                        drop((slot, alive));
                    });
                }
                // else: dropping `stream` closes it unanswered.
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stopping_tx.send(true);
    drop(alive_rx);
    if tokio::time::timeout(SHUTDOWN_GRACE, alive_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 10 s; stopping anyway");
    }
    Ok(())
}

/// Serves one connection with the router until the client leaves, a limit
/// trips, or the node stops (then after the request in flight).
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        // An error means the server is gone: stop as well.
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // Finish the request in flight, then close.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answers the request of a connection over the limit with 503 and closes it.
async fn shed_connection(stream: TcpStream, write_timeout: Duration) {
    let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(SHED_HEADER_TIMEOUT)
        .keep_alive(false);
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(ApiError::Overloaded.into_response())
    });
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "shed connection ended with an error");
    }
}

/// A stream whose writes fail with `TimedOut` once they have made no progress
/// for `limit`: a client that stops reading cannot pin a connection.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Running while a write is pending.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes `poll` through, starting the stall timer when it is pending and
    /// failing once the timer fires.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

/// A node serving in the background.
pub struct RunningServer {
    addr: SocketAddr,
    stats: Arc<ConnectionStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its connection counters.
    pub fn connection_stats(&self) -> &Arc<ConnectionStats> {
        &self.stats
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
