//! An in-memory network of nodes for deterministic tests and simulation.
//!
//! Every call goes through a [`Fate`] chosen by an optional, caller-supplied
//! function (seed its randomness for replayable runs), and through the set of
//! cut links, so tests can inject loss, delay, duplication, reordering (by
//! unequal delays) and partitions. Delays use `tokio::time`, so a runtime
//! with paused time runs them instantly and deterministically.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::value::Value;

use super::{Answer, Control, ControlReply, Transport, TransportError};
use crate::paxos::{Fence, NodeId, Request};

/// The acceptor side of a node, as the in-memory network sees it.
pub trait PeerHandler: Send + Sync + 'static {
    /// Handles one request from `from`; the reply leaves only once the
    /// acceptor's new state is durable.
    fn handle(
        self: Arc<Self>,
        from: NodeId,
        key: String,
        request: Request<Value>,
        fence: Fence,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, TransportError>> + Send>>;

    /// Handles one node-level message from `from`.
    fn control(
        self: Arc<Self>,
        from: NodeId,
        message: Control,
    ) -> Pin<Box<dyn Future<Output = Result<ControlReply, TransportError>> + Send>>;
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after `delay`; the reply comes back at once.
    Deliver {
        /// Time before the peer sees the request.
        delay: Duration,
    },
    /// Lost on the way; the caller times out after `after`.
    DropRequest {
        /// How long the caller waits before giving up.
        after: Duration,
    },
    /// Delivered after `delay` and acted on, but the reply is lost.
    DropReply {
        /// Time before the peer sees the request.
        delay: Duration,
    },
    /// Delivered after `delay`, and once more after `again`.
    Duplicate {
        /// Time before the first copy arrives.
        delay: Duration,
        /// Time before the second copy arrives.
        again: Duration,
    },
}

type FateFn = Box<dyn FnMut(NodeId, NodeId, &Request<Value>) -> Fate + Send>;

#[derive(Default)]
struct Net {
    /// Weak, so a node and the network it holds through its transport do
    /// not keep each other alive: dropping the last `Arc` of a node is a crash.
    nodes: BTreeMap<NodeId, Weak<dyn PeerHandler>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    fate: Option<FateFn>,
}

/// A set of in-memory nodes and the links between them. Clones share it.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    net: Arc<Mutex<Net>>,
}

impl MemoryNetwork {
    /// An empty network with perfect links.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport node `me` uses on this network.
    pub fn transport(&self, me: NodeId) -> MemoryTransport {
        MemoryTransport {
            me,
            net: self.clone(),
        }
    }

    /// Attaches (or re-attaches, after a restart) node `id`. The network
    /// keeps only a weak reference: the caller owns the node.
    pub fn register(&self, id: NodeId, node: Arc<dyn PeerHandler>) {
        self.lock().nodes.insert(id, Arc::downgrade(&node));
    }

    /// Detaches node `id`, as if it crashed: calls to it fail.
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts (or heals) the one-way link `from -> to`.
    pub fn set_link(&self, from: NodeId, to: NodeId, up: bool) {
        let mut net = self.lock();
        if up {
            net.cut.remove(&(from, to));
        } else {
            net.cut.insert((from, to));
        }
    }

    /// Isolates `id` from every node registered now (both directions), or
    /// heals those links. A node registered later is not cut off from `id`.
    pub fn isolate(&self, id: NodeId, isolated: bool) {
        let others: Vec<NodeId> = self.lock().nodes.keys().copied().collect();
        for other in others.into_iter().filter(|o| *o != id) {
            self.set_link(id, other, !isolated);
            self.set_link(other, id, !isolated);
        }
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Decides the fate of every later message with `f(from, to, request)`.
    pub fn set_fate(
        &self,
        f: impl FnMut(NodeId, NodeId, &Request<Value>) -> Fate + Send + 'static,
    ) {
        self.lock().fate = Some(Box::new(f));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().expect("network lock poisoned")
    }

    fn route(
        &self,
        from: NodeId,
        to: NodeId,
        request: &Request<Value>,
    ) -> Result<(Arc<dyn PeerHandler>, Fate), TransportError> {
        let mut net = self.lock();
        if net.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable(format!(
                "link {from}->{to} is cut"
            )));
        }
        let node = net
            .nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| TransportError::Unreachable(format!("node {to} is down")))?;
        let fate = match net.fate.as_mut() {
            Some(f) => f(from, to, request),
            None => Fate::Deliver {
                delay: Duration::ZERO,
            },
        };
        Ok((node, fate))
    }

    fn node(&self, from: NodeId, to: NodeId) -> Result<Arc<dyn PeerHandler>, TransportError> {
        let net = self.lock();
        if net.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable(format!(
                "link {from}->{to} is cut"
            )));
        }
        net.nodes
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| TransportError::Unreachable(format!("node {to} is down")))
    }

    fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.lock().cut.contains(&(from, to))
    }
}

/// One node's view of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    me: NodeId,
    net: MemoryNetwork,
}

impl Transport for MemoryTransport {
    async fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
        fence: Fence,
    ) -> Result<Answer, TransportError> {
        let (node, fate) = self.net.route(self.me, to, &request)?;
        let reply = match fate {
            Fate::Deliver { delay } => {
                tokio::time::sleep(delay).await;
                node.handle(self.me, key.to_owned(), request, fence).await
            }
            Fate::DropRequest { after } => {
                tokio::time::sleep(after).await;
                return Err(TransportError::Timeout);
            }
            Fate::DropReply { delay } => {
                tokio::time::sleep(delay).await;
                let _ = node.handle(self.me, key.to_owned(), request, fence).await;
                return Err(TransportError::Timeout);
            }
            Fate::Duplicate { delay, again } => {
                let (twin, me, key2, req2, fence2) = (
                    node.clone(),
                    self.me,
                    key.to_owned(),
                    request.clone(),
                    fence.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(again).await;
                    let _ = twin.handle(me, key2, req2, fence2).await;
                });
                tokio::time::sleep(delay).await;
                node.handle(self.me, key.to_owned(), request, fence).await
            }
        };
        if self.net.link_up(to, self.me) {
            reply
        } else {
            Err(TransportError::Timeout)
        }
    }

    /// Node-level messages see cut links and down nodes, but no fate: they
    /// are rare and idempotent, and the tests that perturb messages aim at
    /// the acceptor protocol.
    async fn control(&self, to: NodeId, message: Control) -> Result<ControlReply, TransportError> {
        let node = self.net.node(self.me, to)?;
        let reply = node.control(self.me, message).await;
        if self.net.link_up(to, self.me) {
            reply
        } else {
            Err(TransportError::Timeout)
        }
    }
}
