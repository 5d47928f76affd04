//! A node's lifecycle: starting a new cluster, finding out that the cluster
//! already exists, and rebuilding after a lost disk (docs/design.md,
//! invariant 8). The pure rules it follows are in `src/paxos/rejoin.rs`.
//!
//! **Genesis.** A node with no identity and no data asks every member who
//! it is (`hello`). If any member answers with a cluster id, the cluster
//! exists and this node may have lost its disk: it rebuilds. If *every*
//! member answers that it is new too, the cluster is new: each founder
//! computes the same cluster id (the membership's digest and the nonce of the
//! lowest-numbered member) and serves. Requiring every member, not a
//! majority, is what makes this safe: a majority of blank nodes could be a
//! majority that lost its disks, and a new cluster would then forget what
//! the old one chose. (If every member lost its disk, the data is gone
//! whatever the protocol does.)
//!
//! **Rebuild.** A node that lost its disk (or whose disk failed: it rebuilds
//! into a fresh directory, invariant 9) votes in nothing until it has:
//! 1. learnt from a majority of the *other* members, all serving, the newest
//!    incarnation they recorded for it, and taken the next one (durably);
//! 2. recorded that new incarnation at a majority of the others (`fence`):
//!    from then on they refuse accepts of rounds that relied on a promise of
//!    its old incarnation;
//! 3. listed the keys of a majority of the others (`scan`), and for each
//!    one run a phase 1 at the others with a fresh ballot of its own and
//!    stored the vote phase 2 would have to keep (`rebuilt_vote`), with
//!    that ballot as its promise (decided keys are copied as decided);
//! 4. marked its identity rebuilt, and only then serves.
//!
//! Why it is safe: any value chosen with the old incarnation's vote was
//! accepted by a majority, so by at least a majority less one of the others,
//! and every majority of the others meets that set: the rebuilt node holds
//! the value (or a higher vote for the same value). Accepts of the old
//! incarnation's rounds that are still in flight reach members that have
//! promised the rebuild's higher ballot and are refused; rounds that relied
//! on its old promises are fenced. The rebuild's ballots also move this
//! node's clock past every round its old incarnation used where an accept
//! could be in flight, since some member of every majority promised it.
//! Where no majority of the others serves (a majority lost their disks), the
//! node waits and says so: it never answers from a forgotten state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::identity::{self, Identity, GENESIS_META};
use crate::node::{AcceptorError, Health, Node};
use crate::paxos::{rebuilt_vote, NodeId, Reply, Request};
use crate::storage::{State, Storage};
use crate::transport::wire::{HelloReply, MAX_SCAN_KEYS, PROTOCOL_VERSION};
use crate::transport::{Control, ControlReply, Transport};

/// How long a node waits between attempts to reach its peers while joining
/// or rebuilding.
const RETRY: Duration = Duration::from_millis(300);

/// Keys asked for in one scan page.
const SCAN_PAGE: usize = 1000;

/// Keys rebuilt at once.
const REBUILD_CONCURRENCY: usize = 32;

/// Answers a node-level message (see `src/transport/wire.rs`).
pub async fn handle_control<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    from: NodeId,
    message: Control,
) -> Result<ControlReply, AcceptorError> {
    match message {
        Control::Hello {
            digest,
            nonce: theirs,
        } => {
            let identity = node.identity();
            let health = node.health();
            let nonce = match health {
                Health::Joining(_) => node
                    .storage
                    .load_meta(GENESIS_META)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_be_bytes),
                _ => None,
            };
            let mine = identity::members_digest(&identity.members);
            if digest != mine {
                node.note_peer(
                    from,
                    &format!("node {from} was started with another member list (--peers)"),
                );
            }
            Ok(ControlReply::Hello(HelloReply {
                version: PROTOCOL_VERSION,
                from: node.id,
                digest: mine,
                cluster: (!identity.cluster.is_empty()).then_some(identity.cluster.clone()),
                epoch: identity.epoch,
                state: health.name().to_owned(),
                incarnation: identity.incarnation,
                yours: identity.known().of(from),
                nonce,
                founder: theirs.is_some() && identity.founders.get(&from) == theirs.as_ref(),
            }))
        }
        Control::Fence { incarnation } => {
            let _write = node.identity_write.lock().await;
            let mut identity = node.identity();
            let mut known = identity.known();
            if known.record(from, incarnation) {
                identity.known = known.0.clone();
                // In memory first (refusing more, earlier, is safe), then
                // durable before the answer.
                node.identity.write().expect("poisoned").known = known.0;
                node.save_identity(identity.clone()).await?;
                tracing::warn!(
                    peer = from,
                    incarnation,
                    "peer lost its disk and rebuilds: its earlier promises are fenced off"
                );
            }
            Ok(ControlReply::Fenced(identity.known().of(from)))
        }
        Control::Config => {
            let identity = node.identity();
            Ok(ControlReply::Config(crate::transport::wire::ConfigReply {
                version: PROTOCOL_VERSION,
                from: node.id,
                cluster: identity.cluster.clone(),
                config: identity.config(),
            }))
        }
        Control::Scan { after, limit } => {
            if let Some(why) = node.health().reason() {
                return Err(AcceptorError::NotServing(why.to_owned()));
            }
            let limit = limit.clamp(1, MAX_SCAN_KEYS);
            let page = node.storage.scan("", after.as_deref(), limit + 1)?;
            let more = page.len() > limit;
            let keys = page.into_iter().take(limit).map(|(k, _)| k).collect();
            Ok(ControlReply::Keys { keys, more })
        }
    }
}

/// Runs the node's lifecycle until the node is dropped: joins or rebuilds as
/// its state requires, then watches its storage and, after a failed write,
/// rebuilds into a fresh directory (invariant 9).
pub async fn run<S: Storage, T: Transport>(node: Arc<Node<S, T>>) {
    loop {
        match node.health() {
            Health::Joining(_) => genesis(&node).await,
            Health::Recovering(_) => rebuild(&node).await,
            Health::Serving => {
                if node.identity().cluster.is_empty() {
                    unreachable!("a serving node has a cluster");
                }
                persist_legacy(&node).await;
                watch_storage(&node).await;
            }
            Health::Failed(_) => reset_storage(&node).await,
            // Removed from the cluster (src/reconfigure.rs): nothing more to
            // do; the operator stops the process.
            Health::Removed(_) => std::future::pending::<()>().await,
        }
    }
}

/// Stores the identity of a directory of an earlier release (given at
/// open), once.
async fn persist_legacy<S: Storage, T: Transport>(node: &Arc<Node<S, T>>) {
    if matches!(node.storage.load_meta(identity::META_NAME), Ok(None)) {
        let identity = node.identity();
        if let Err(e) = node.save_identity(identity).await {
            tracing::warn!(error = %e, "cannot store the identity yet");
        }
    }
}

/// Waits until the storage reports a failed write, then fails the node.
async fn watch_storage<S: Storage, T: Transport>(node: &Arc<Node<S, T>>) {
    loop {
        if let Some(why) = node.storage.failure() {
            node.set_health(Health::Failed(format!(
                "a write to its disk failed ({why}); it never writes to that database again \
                 (a failed fsync can leave pages that read back as durable and then vanish) \
                 and rebuilds from the other members into a fresh one"
            )));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the failed database aside and opens a fresh one, retrying until the
/// disk allows; then the node rebuilds.
async fn reset_storage<S: Storage, T: Transport>(node: &Arc<Node<S, T>>) {
    // Record that this incarnation's state is gone, so that a process that
    // restarts over the fresh, blank database resumes the rebuild instead of
    // serving it. Best effort: on a full disk this write fails, and the
    // set-aside folder (a rename, which needs no space) and the database id
    // the identity names tell a restart the same (`Node::open`).
    if node.identity().rebuilt {
        let _write = node.identity_write.lock().await;
        let mut identity = node.identity();
        identity.rebuilt = false;
        if let Err(e) = node.save_identity(identity).await {
            tracing::warn!(error = %e, "cannot record the failed database in the identity; the set-aside folder will");
        }
    }
    loop {
        match node.storage.reset().await {
            Ok(()) => {
                node.set_health(Health::Recovering(
                    "its disk failed: rebuilding from a majority of the other members into a \
                     fresh database"
                        .into(),
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a fresh database yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Asks every other member who it is; the answers that came.
async fn hello_all<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    nonce: Option<u64>,
) -> BTreeMap<NodeId, Result<HelloReply, String>> {
    let digest = identity::members_digest(&node.identity().members);
    let mut calls = JoinSet::new();
    for peer in node.members().iter().filter(|p| *p != node.id) {
        let node = node.clone();
        calls.spawn(async move {
            let reply = node
                .transport
                .control(peer, Control::Hello { digest, nonce })
                .await;
            let reply = match reply {
                Ok(ControlReply::Hello(hello)) => Ok(hello),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (peer, reply)
        });
    }
    let mut replies = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((peer, reply)) = joined {
            replies.insert(peer, reply);
        }
    }
    replies
}

/// A new node with no data: starts the cluster with every other member, or
/// finds that it exists and turns to rebuilding.
async fn genesis<S: Storage, T: Transport>(node: &Arc<Node<S, T>>) {
    let nonce = match genesis_nonce(node).await {
        Ok(nonce) => nonce,
        Err(e) => {
            node.set_health(Health::Joining(format!(
                "cannot store its genesis nonce: {e}"
            )));
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    let mine = identity::members_digest(&node.identity().members);
    loop {
        let replies = hello_all(node, Some(nonce)).await;
        let mut waiting = Vec::new();
        let mut nonces = BTreeMap::from([(node.id, nonce)]);
        // A founder that recorded this node's nonce is heard first: another
        // member may have joined the cluster without recording the founders
        // (it adopted it, below), and its answer alone would send this
        // founder, which never voted, into a needless rebuild.
        let mut ordered: Vec<_> = replies.iter().collect();
        ordered.sort_by_key(|(_, r)| !matches!(r, Ok(h) if h.founder && h.cluster.is_some()));
        for (peer, reply) in ordered {
            match reply {
                Err(e) => waiting.push(format!("node {peer} does not answer ({e})")),
                Ok(hello) if hello.digest != mine => waiting.push(format!(
                    "node {peer} was started with another member list (--peers): they must be the same on every node"
                )),
                Ok(hello) => match (&hello.cluster, hello.nonce) {
                    (Some(cluster), _) if hello.founder => {
                        // A founder saw this node's nonce at genesis: this
                        // node crashed (or was slow) before it stored its
                        // identity, and has never voted. It joins as is.
                        let mut identity = node.identity();
                        identity.cluster = cluster.clone();
                        identity.epoch = hello.epoch;
                        identity.rebuilt = true;
                        match node.save_identity(identity).await {
                            Ok(()) => {
                                tracing::info!(%cluster, peer, "joined the cluster this node founded");
                                node.set_health(Health::Serving);
                            }
                            Err(e) => node.set_health(Health::Joining(format!(
                                "cannot store its identity: {e}"
                            ))),
                        }
                        return;
                    }
                    (Some(cluster), _) => {
                        // The cluster exists: this node is new in it, or lost
                        // its disk. Either way it rebuilds before it votes.
                        let mut identity = node.identity();
                        identity.cluster = cluster.clone();
                        identity.epoch = hello.epoch;
                        identity.rebuilt = false;
                        tracing::warn!(
                            peer,
                            %cluster,
                            "the cluster exists and this node has no data: rebuilding before it votes"
                        );
                        *node.identity.write().expect("poisoned") = identity;
                        node.set_health(Health::Recovering(format!(
                            "it has no data but cluster {cluster} exists (node {peer} says so): \
                             it may have lost its disk, so it rebuilds from a majority of the \
                             other members before it votes"
                        )));
                        return;
                    }
                    (None, Some(nonce)) => {
                        nonces.insert(*peer, nonce);
                    }
                    (None, None) => waiting.push(format!("node {peer} is starting")),
                },
            }
        }
        if waiting.is_empty() && nonces.len() == node.members().len() {
            let lowest = *nonces.keys().next().expect("this node is a member");
            let members = node.identity().members;
            let cluster = identity::cluster_id(&members, nonces[&lowest]);
            let mut identity = Identity::new(cluster.clone(), node.id, &members);
            identity.founders = nonces;
            match node.save_identity(identity).await {
                Ok(()) => {
                    tracing::info!(%cluster, "every member is new: a new cluster starts");
                    node.set_health(Health::Serving);
                }
                Err(e) => {
                    node.set_health(Health::Joining(format!("cannot store its identity: {e}")))
                }
            }
            return;
        }
        node.set_health(Health::Joining(format!(
            "new, with no data: a new cluster starts only when every member answers, and \
             waits for: {}",
            waiting.join("; ")
        )));
        tokio::time::sleep(RETRY).await;
    }
}

/// The nonce this node offers for the cluster id, stored before it is
/// first offered so a restart offers the same.
async fn genesis_nonce<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
) -> Result<u64, crate::storage::StorageError> {
    if let Some(bytes) = node.storage.load_meta(GENESIS_META)? {
        if let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) {
            return Ok(u64::from_be_bytes(raw));
        }
    }
    let nonce: u64 = rand::random();
    node.storage
        .store_meta(GENESIS_META, nonce.to_be_bytes().to_vec())
        .await?;
    Ok(nonce)
}

/// Rebuilds this node's acceptor state from a majority of the other members
/// (module docs); returns when it serves, or after a failed attempt (the
/// lifecycle calls again).
async fn rebuild<S: Storage, T: Transport>(node: &Arc<Node<S, T>>) {
    let quorum = node.members().quorum();
    let others = node.members().len() - 1;
    if others < quorum {
        node.set_health(Health::Recovering(format!(
            "it has lost its data, and a cluster of {} member(s) has no majority of other \
             members to rebuild from; restore its data directory from a backup",
            node.members().len()
        )));
        tokio::time::sleep(Duration::from_secs(5)).await;
        return;
    }
    // 1. The next incarnation, from a majority of the others, all serving.
    let (serving, incarnation) = loop {
        let replies = hello_all(node, None).await;
        let cluster = node.identity().cluster;
        let mut serving = Vec::new();
        let mut newest = node.identity().incarnation;
        let mut notes = Vec::new();
        for (peer, reply) in &replies {
            match reply {
                Ok(hello)
                    if hello.cluster.as_deref() == Some(&cluster) && hello.state == "serving" =>
                {
                    serving.push(*peer);
                    newest = newest.max(hello.yours);
                }
                Ok(hello) if hello.cluster.as_deref() == Some(&cluster) => {
                    notes.push(format!("node {peer} is {}", hello.state))
                }
                Ok(hello) => notes.push(format!(
                    "node {peer} belongs to cluster {:?}",
                    hello.cluster
                )),
                Err(e) => notes.push(format!("node {peer} does not answer ({e})")),
            }
        }
        if serving.len() >= quorum {
            break (serving, newest + 1);
        }
        node.set_health(Health::Recovering(format!(
            "rebuilding after losing its data needs {quorum} other members serving, and {} \
             are ({}); if a majority of the members lost their disks, the chosen values \
             cannot be rebuilt safely and this node stays unavailable",
            serving.len(),
            notes.join("; ")
        )));
        tokio::time::sleep(RETRY).await;
    };
    let mut identity = node.identity();
    identity.incarnation = incarnation;
    identity.rebuilt = false;
    if let Err(e) = node.save_identity(identity).await {
        tracing::warn!(error = %e, "cannot store the new incarnation; retrying");
        tokio::time::sleep(RETRY).await;
        return;
    }
    node.set_health(Health::Recovering(format!(
        "rebuilding as incarnation {incarnation}: recording it at the other members"
    )));
    // 2. The fence, at a majority of the others.
    let fenced = loop {
        let mut calls = JoinSet::new();
        for peer in node.members().iter().filter(|p| *p != node.id) {
            let node = node.clone();
            calls.spawn(async move {
                let reply = node
                    .transport
                    .control(peer, Control::Fence { incarnation })
                    .await;
                (peer, reply)
            });
        }
        let mut fenced = Vec::new();
        while let Some(joined) = calls.join_next().await {
            if let Ok((peer, Ok(ControlReply::Fenced(recorded)))) = joined {
                if recorded == incarnation {
                    fenced.push(peer);
                } else if recorded > incarnation {
                    // A newer incarnation of this node exists: start over.
                    return;
                }
            }
        }
        if fenced.len() >= quorum {
            break fenced;
        }
        tokio::time::sleep(RETRY).await;
    };
    tracing::info!(incarnation, ?fenced, "fenced; listing keys");
    // 3. Every key a majority of the others holds.
    let keys = match scan_majority(node, &serving, quorum).await {
        Some(keys) => keys,
        None => return,
    };
    node.set_health(Health::Recovering(format!(
        "rebuilding as incarnation {incarnation}: {} keys to read through a majority",
        keys.len()
    )));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut pending = keys.into_iter();
    let mut done = 0usize;
    loop {
        while tasks.len() < REBUILD_CONCURRENCY {
            let Some(key) = pending.next() else { break };
            let node = node.clone();
            tasks.spawn(async move { rebuild_key(&node, key).await });
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok(Ok(()))) => done += 1,
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "rebuild stopped; starting over");
                tasks.abort_all();
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "rebuild task failed; starting over");
                tasks.abort_all();
                return;
            }
        }
    }
    // 4. Serve, with the ballot clock durable in this database.
    if let Err(e) = node.persist_clock().await {
        tracing::warn!(error = %e, "cannot store the ballot clock; retrying the rebuild");
        return;
    }
    let mut identity = node.identity();
    identity.rebuilt = true;
    if let Err(e) = node.save_identity(identity).await {
        tracing::warn!(error = %e, "cannot mark the rebuild finished; retrying");
        return;
    }
    node.storage.discard_failed();
    tracing::info!(
        incarnation,
        keys = done,
        ms = started.elapsed().as_millis() as u64,
        "rebuilt from a majority of the other members; serving"
    );
    node.set_health(Health::Serving);
}

/// The union of the keys of `candidates` (fully listed), or `None` when
/// fewer than `quorum` of them could be listed.
pub(crate) async fn scan_majority<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    candidates: &[NodeId],
    quorum: usize,
) -> Option<BTreeSet<String>> {
    let mut calls = JoinSet::new();
    for &peer in candidates {
        let node = node.clone();
        calls.spawn(async move {
            let mut keys = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let scan = Control::Scan {
                    after: after.clone(),
                    limit: SCAN_PAGE,
                };
                match node.transport.control(peer, scan).await {
                    Ok(ControlReply::Keys { keys: page, more }) => {
                        after = page.last().cloned().or(after);
                        keys.extend(page);
                        if !more {
                            return Some(keys);
                        }
                    }
                    _ => return None,
                }
            }
        });
    }
    let mut listed = 0usize;
    let mut keys = BTreeSet::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok(Some(page)) = joined {
            listed += 1;
            keys.extend(page);
        }
    }
    (listed >= quorum).then_some(keys)
}

/// Phase 1 for `key` at the other members with a fresh ballot, until a
/// majority of them promised; stores what they hold (module docs, step 3).
async fn rebuild_key<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    key: String,
) -> Result<(), String> {
    let key: Arc<str> = Arc::from(key);
    let members = node.members();
    let quorum = members.quorum();
    let others: Vec<NodeId> = members.iter().filter(|p| *p != node.id).collect();
    let mut seen_round = 0u64;
    for attempt in 0u32.. {
        if attempt > 0 {
            let pause = Duration::from_millis(2u64 << attempt.min(8));
            tokio::time::sleep(pause).await;
        }
        let deadline = Instant::now() + node.timing.request_timeout;
        let ballot = node
            .next_ballot(seen_round, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let mut replies = node.send_to(
            others.iter().copied(),
            &key,
            Request::Prepare { ballot },
            Default::default(),
        );
        let mut promises = BTreeMap::new();
        let mut failed = 0usize;
        while let Ok(Some((from, result))) = tokio::time::timeout_at(deadline, replies.recv()).await
        {
            match result.map(|a| a.reply) {
                Ok(Reply::Promise {
                    ballot: b,
                    accepted,
                }) if b == ballot => {
                    promises.insert(from, accepted);
                }
                Ok(Reply::Decided { ballot, value }) => {
                    let state = State {
                        promised: ballot,
                        accepted: Some(crate::paxos::Accepted { ballot, value }),
                        decided: true,
                    };
                    return node.install(&key, &state).await.map_err(|e| e.to_string());
                }
                Ok(Reply::Rejected { promised, .. }) => {
                    seen_round = seen_round.max(promised.round);
                    failed += 1;
                }
                _ => failed += 1,
            }
            if promises.len() >= quorum {
                let state = State {
                    promised: ballot,
                    accepted: rebuilt_vote(&promises, &members),
                    decided: false,
                };
                return node.install(&key, &state).await.map_err(|e| e.to_string());
            }
            if others.len() - failed < quorum {
                break;
            }
        }
    }
    unreachable!("the attempt counter does not run out")
}
