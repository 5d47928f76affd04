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
//!
//! With `--tls-cert` every connection is TLS (`tls.rs`): the handshake must
//! finish within the header timeout; a connection whose first byte is not a
//! TLS handshake is answered a plain-HTTP 400 ("this port speaks HTTPS") and
//! closed. The write deadline sits under TLS, on the socket itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
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
use crate::auth::ClientAuth;
use crate::config::{Config, ConfigError};
use crate::connections::{ConnectionStats, OpenConnection};
use crate::metrics::Latency;
use crate::node::{Node, StartError};
use crate::paxos::Request;
use crate::storage::{SledStorage, Storage, StorageError};
use crate::tls::{NodeTls, PeerCertificate, TLS_HANDSHAKE_RECORD};
use crate::transport::list::ListPeers;
use crate::transport::{HttpTransport, PeerClientError, PeerClientOptions, Transport};

/// Why a node cannot start, or stopped short of a clean stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client token file cannot be read.
    #[error("{0}")]
    ClientTokens(String),
    /// The TLS files cannot be loaded.
    #[error("{0}")]
    Tls(String),
    /// `--join` could not learn the cluster, or store what it learnt.
    #[error("--join: {0}")]
    Join(crate::node::NodeError),
    /// `--join` could not ask the member.
    #[error("--join: {0}")]
    JoinAsk(#[from] crate::join::JoinError),
    /// The database cannot be opened.
    #[error("--data-dir {}: {source}", dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: StorageError,
    },
    /// The node's identity refuses the directory.
    #[error("--data-dir {}: {source}", dir.display())]
    Node {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: StartError,
    },
    /// The peer client cannot be built.
    #[error(transparent)]
    PeerClient(#[from] PeerClientError),
    /// SIGHUP cannot be watched.
    #[error("{0}")]
    Signals(String),
    /// The console cannot start.
    #[error("{0}")]
    Console(String),
    /// The port cannot be taken.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The listener has no address.
    #[error("the listener has no address: {0}")]
    Listener(io::Error),
    /// The last flush failed: what was acknowledged may not be durable.
    #[error("flush at shutdown failed: {0}")]
    Flush(StorageError),
    /// The serving task panicked or was cancelled.
    #[error("the node's task failed: {0}")]
    Task(String),
}

/// For callers that report one line (the console's dev controls).
impl From<ServeError> for String {
    fn from(e: ServeError) -> String {
        e.to_string()
    }
}

/// The production node type.
pub type ProdNode = Node<SledStorage, HttpTransport>;

pub use crate::config::Limits;

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

/// A node with its storage open, ready to serve.
pub struct Prepared {
    config: Config,
    node: Arc<ProdNode>,
    list_peers: ListPeers,
    stats: Arc<ConnectionStats>,
    clients: Arc<ClientAuth>,
    tls: Option<NodeTls>,
    latency: Latency,
    /// Console controls of a `paxos-kv dev` cluster, when this node is in one.
    dev: Option<Arc<crate::console::DevControl>>,
    /// What `--join` learnt, taken before the node's lifecycle starts.
    joined: Option<crate::join::Joined>,
}

/// Opens the data directory and builds the node. Binds nothing, so every
/// configuration or disk problem surfaces before the port is taken.
pub fn prepare(config: Config) -> Result<Prepared, ServeError> {
    config.timing.validate(&config.limits)?;
    let clients = match &config.client_tokens {
        Some(path) => ClientAuth::from_file(path).map_err(ServeError::ClientTokens)?,
        None => ClientAuth::open(),
    };
    let tls = config
        .tls
        .as_ref()
        .map(|files| files.load())
        .transpose()
        .map_err(ServeError::Tls)?;
    let latency = Latency::default();
    let storage = SledStorage::open(&config.data_dir).map_err(|source| ServeError::Storage {
        dir: config.data_dir.clone(),
        source,
    })?;
    let observer = latency.clone();
    storage.observe_syncs(Arc::new(move |took| observer.observe_sync(took)));
    let transport = HttpTransport::with_options(
        config.id,
        &config.peers,
        config.token.as_deref(),
        config.timing.peer_timeout,
        PeerClientOptions {
            tls: tls.as_ref().and_then(|t| t.peer_client.clone()),
            latency: Some(latency.clone()),
            pool_idle: config.limits.peer_pool_idle(),
        },
    )?;
    let list_peers = transport.list_peers()?;
    let urls = config
        .peers
        .iter()
        .map(|(id, url)| (*id, url.as_str().to_owned()))
        .collect();
    let node = Node::open(
        config.id,
        &urls,
        config.timing.clone(),
        storage,
        transport,
        None,
    )
    .map_err(|source| ServeError::Node {
        dir: config.data_dir.clone(),
        source,
    })?;
    Ok(Prepared {
        config,
        node,
        list_peers,
        stats: Arc::default(),
        clients: Arc::new(clients),
        tls,
        latency,
        dev: None,
        joined: None,
    })
}

impl Prepared {
    /// The node.
    pub fn node(&self) -> &Arc<ProdNode> {
        &self.node
    }

    /// The cluster `--join` learnt (`src/join.rs`).
    pub fn with_joined(mut self, joined: crate::join::Joined) -> Self {
        self.joined = Some(joined);
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
    ) -> Result<(), ServeError> {
        let Prepared {
            config,
            node,
            list_peers,
            stats,
            clients,
            tls,
            latency,
            dev,
            joined,
        } = self;
        if let Some(joined) = joined {
            node.accept_join(joined).await.map_err(ServeError::Join)?;
        }
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
            list_peers: Arc::new(list_peers),
            clients: clients.clone(),
            latency,
            peers_need_certificate: tls.as_ref().is_some_and(|t| t.peers_need_certificate),
        });
        let reloader =
            crate::auth::announce_and_reload_on_sighup(clients).map_err(ServeError::Signals)?;
        let security = crate::console::Security {
            cluster_token: config.token.clone(),
            clients: state.clients.clone(),
            peer_tls: tls.as_ref().and_then(|t| t.peer_client.clone()),
            peers_need_certificate: state.peers_need_certificate,
        };
        let (console, console_closing) =
            crate::console::Console::new(node.clone(), security, state.peer_urls.clone(), dev)
                .map_err(ServeError::Console)?;
        let app = router(state).merge(crate::console::router(console));
        // Event streams never end by themselves: end them when the node stops.
        let shutdown = async move {
            shutdown.await;
            let _ = console_closing.send(true);
        };
        let heartbeat = tokio::spawn(heartbeat(node.clone()));
        let lifecycle = tokio::spawn(crate::rejoin::run(node.clone()));
        let reconcile = tokio::spawn(crate::reconfigure::reconcile(node.clone()));
        let addr = listener.local_addr().map_err(ServeError::Listener)?;
        tracing::info!(id = config.id, %addr, members = config.peers.len(), "serving");
        // Waiting readers (GET ?wait) answer at once when the stop begins.
        let waiters_of = node.clone();
        let shutdown = async move {
            shutdown.await;
            waiters_of.waiters().close();
        };
        let tls = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server));
        let limits = config.limits.clone();
        serve(listener, app, limits, stats, tls, shutdown).await;
        heartbeat.abort();
        lifecycle.abort();
        reconcile.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        node.storage().flush().map_err(ServeError::Flush)?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Starts serving in the background (for `dev` and tests).
    pub fn spawn(self, listener: TcpListener) -> Result<RunningServer, ServeError> {
        let addr = listener.local_addr().map_err(ServeError::Listener)?;
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
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
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
        stats.count_accepted();
        let _ = stream.set_nodelay(true);
        let stopping = stopping_rx.clone();
        let alive = alive_rx.clone();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, limits, open) =
                    (app.clone(), limits.clone(), OpenConnection::new(&stats));
                let tls = tls.clone();
                tokio::spawn(async move {
                    serve_connection(stream, app, &limits, stopping, tls).await;
                    drop((slot, open, alive));
                });
            }
            Err(_) => {
                stats.count_shed();
                if let Ok(slot) = shed_slots.clone().try_acquire_owned() {
                    let write_timeout = limits.write_timeout;
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        shed_connection(stream, write_timeout, tls).await;
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
}

/// Serves one connection with the router until the client leaves, a limit
/// trips, or the node stops (then after the request in flight). On a TLS
/// node the handshake comes first; see the module docs.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    stopping: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Some(acceptor) = tls else {
        let io = WriteDeadline::new(stream, limits.write_timeout);
        return serve_http(io, app, limits, stopping).await;
    };
    match handshake(
        stream,
        &acceptor,
        limits.header_timeout,
        limits.write_timeout,
    )
    .await
    {
        Handshake::Tls(io, certificate) => {
            let app = app.layer(axum::Extension(certificate));
            serve_http(io, app, limits, stopping).await;
        }
        Handshake::PlainHttp(stream) => {
            answer_once(stream, limits.write_timeout, || ApiError::HttpsRequired).await;
        }
        Handshake::Failed => {}
    }
}

async fn serve_http<I>(io: I, app: Router, limits: &Limits, mut stopping: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
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

type TlsIo = tokio_rustls::server::TlsStream<WriteDeadline<TcpStream>>;

/// How the start of a connection to a TLS node went.
enum Handshake {
    /// A TLS session, and whether the client showed a verified certificate.
    Tls(Box<TlsIo>, PeerCertificate),
    /// The client speaks something else (plain HTTP, presumably).
    PlainHttp(TcpStream),
    /// Closed, timed out, or refused (e.g. a certificate of another CA).
    Failed,
}

/// Peeks at the first byte, then runs the TLS handshake; all within `limit`.
async fn handshake(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    limit: Duration,
    write_timeout: Duration,
) -> Handshake {
    let start = async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(1) => return Handshake::PlainHttp(stream),
            _ => return Handshake::Failed,
        }
        match acceptor
            .accept(WriteDeadline::new(stream, write_timeout))
            .await
        {
            Ok(io) => {
                let verified = io
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                Handshake::Tls(Box::new(io), PeerCertificate { verified })
            }
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                Handshake::Failed
            }
        }
    };
    tokio::time::timeout(limit, start)
        .await
        .unwrap_or(Handshake::Failed)
}

/// Answers the request of a connection over the limit with 503 and closes it.
async fn shed_connection(
    stream: TcpStream,
    write_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Some(acceptor) = tls else {
        return answer_once(stream, write_timeout, || ApiError::Overloaded).await;
    };
    match handshake(stream, &acceptor, SHED_HEADER_TIMEOUT, write_timeout).await {
        Handshake::Tls(io, _) => {
            answer_once(io, write_timeout, || ApiError::Overloaded).await;
        }
        Handshake::PlainHttp(stream) => {
            answer_once(stream, write_timeout, || ApiError::HttpsRequired).await;
        }
        Handshake::Failed => {}
    }
}

/// Answers one request with `error` (whatever it asked) and closes.
async fn answer_once<I>(io: I, write_timeout: Duration, error: fn() -> ApiError)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteDeadline::new(io, write_timeout));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(SHED_HEADER_TIMEOUT)
        .keep_alive(false);
    let service = hyper::service::service_fn(move |_request| async move {
        Ok::<_, std::convert::Infallible>(error().into_response())
    });
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "connection answered once ended with an error");
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
    task: JoinHandle<Result<(), ServeError>>,
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
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?
    }
}

/// Binds `addr` with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
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

/// Asks each peer not heard from lately for a read, so `/v1/status` knows
/// who answers even on an idle cluster, and a PUT on an idle healthy
/// cluster still finds every peer fresh enough for the fast ballot. A read
/// changes no state.
///
/// The timing derives from the fast-path window W: a tick every W/3, pinging
/// peers quiet for W/3 or more, so a peer that answers is never more than
/// about 2W/3 (plus one round trip) stale: inside W. (With a 2 s tick that
/// pinged peers quiet for 2 s, an idle peer was pinged every other tick and
/// reached 4 s, over the 3 s window, in about a fifth of the samples.)
async fn heartbeat<S: Storage, T: Transport>(node: Arc<Node<S, T>>) {
    let every = node.timing().heartbeat_every();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.ping_quiet_peers(every, "paxos-kv/heartbeat", Request::Read)
            .await;
    }
}
