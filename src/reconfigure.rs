//! Changing the members online (docs/design.md, "Changing the members";
//! the data and the rules are in `src/membership.rs`).
//!
//! A change, run by whichever node received `POST /v1/members` or
//! `DELETE /v1/members/{id}`:
//! 1. the transitional configuration of epoch `E + 1` is proposed for the
//!    register `membership::register(E + 1)`, by the members of epoch `E`;
//!    a concurrent change loses that race and is refused (409);
//! 2. every node that learns it chose adopts it (durably, before it answers
//!    in it): the proposer at once, the others from the decide it announces
//!    or from [`reconcile`], which asks the members what they hold;
//! 3. every key is swept through the new members' quorums
//!    (`Coordinator::sweep`);
//! 4. the stable configuration of epoch `E + 2` is proposed and adopted.
//!
//! Every step is idempotent, and every node runs [`reconcile`]: if the node
//! running a change dies at any point, another node (or the same one when
//! it comes back) finds the half-done change and finishes it. A register
//! proposed but not known to be chosen is finished by the quorum read of
//! `register(E + 1)` that [`reconcile`] makes (recovery completes it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use crate::membership::{self, Change, ChangeRefused, MemberConfig};
use crate::node::{Health, Node, NodeError, PutOutcome};
use crate::paxos::{Coordinator, NodeId, Outcome};
use crate::storage::Storage;
use crate::transport::{Control, ControlReply, Transport};

/// How often a node compares its membership with its peers'.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// How long a transitional epoch may stand before a node other than the one
/// running the change finishes it.
pub const TAKE_OVER_AFTER: Duration = Duration::from_secs(3);

/// How often a node reads the next epoch's register itself.
pub const READ_NEXT_EVERY: Duration = Duration::from_secs(30);

/// How long `POST /v1/members` and `DELETE /v1/members/{id}` keep trying to
/// finish their change before answering 503 (the change then finishes in
/// the background).
pub const CHANGE_WAIT: Duration = Duration::from_secs(60);

/// Keys swept at once.
const SWEEP_IN_FLIGHT: usize = 16;

/// Why a change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    /// The change itself is refused (400/404/409).
    #[error("{0}")]
    Refused(#[from] ChangeRefused),
    /// Another change won the race for the next epoch (409).
    #[error(
        "another membership change won the race for epoch {epoch}; the members are now {members:?}"
    )]
    Raced {
        /// The epoch raced for.
        epoch: u64,
        /// The members the winner chose.
        members: Vec<NodeId>,
    },
    /// No majority answered; the change may or may not have started, and
    /// will be finished if it did (503).
    #[error("{0}")]
    Node(#[from] NodeError),
    /// The sweep could not finish; the change stays in progress and is
    /// finished later (503).
    #[error(
        "the change is under way but could not finish yet: {0}; it is finished in the background"
    )]
    Unfinished(String),
}

impl<S: Storage, T: Transport> Node<S, T> {
    /// The membership this node holds.
    pub fn config(&self) -> MemberConfig {
        self.identity().config()
    }

    /// Takes `config`, a chosen configuration, if it is newer than the one
    /// held: durably first (invariant 10: this node then refuses the old
    /// epoch's messages). A node that is not in it is removed.
    pub async fn adopt(&self, config: MemberConfig) -> Result<bool, NodeError> {
        let _write = self.identity_write.lock().await;
        let mut identity = self.identity();
        if config.epoch <= identity.epoch {
            return Ok(false);
        }
        let removed = !config.contains(self.id);
        tracing::info!(
            epoch = config.epoch,
            members = ?config.members.keys().collect::<Vec<_>>(),
            transitional = !config.is_stable(),
            "adopting the membership of a new epoch"
        );
        identity.set_config(config.clone());
        self.save_identity(identity).await?;
        if removed {
            tracing::warn!(
                epoch = config.epoch,
                "this node was removed from the cluster: it serves nothing; stop it"
            );
            self.set_health(Health::Removed(format!(
                "removed from the cluster at membership epoch {}; stop this process",
                config.epoch
            )));
        }
        Ok(true)
    }

    /// Runs `change` to its end (docs/api.md, `POST /v1/members`): returns
    /// the stable membership that has it.
    pub async fn change_members(
        self: &Arc<Self>,
        change: Change,
    ) -> Result<MemberConfig, ReconfigureError> {
        let current = self.config();
        let next = current.change(&change)?;
        // The other members adopt it from this node's announce: a moment
        // later, not before this line.
        let chosen = self.propose(&next).await?;
        if chosen != next {
            return Err(ReconfigureError::Raced {
                epoch: next.epoch,
                members: chosen.members.keys().copied().collect(),
            });
        }
        // Finish it here while the client waits; a change that cannot finish
        // in time is finished in the background (`reconcile`).
        let started = Instant::now();
        if !next.contains(self.id) {
            return self.await_removal(&next, started).await;
        }
        loop {
            match self.finish_change().await {
                Err(ReconfigureError::Unfinished(why)) if started.elapsed() < CHANGE_WAIT => {
                    tracing::debug!(reason = %why, "the change is not finished yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// This node removed itself: it no longer runs the change, the
    /// remaining members of `next` finish it (`reconcile`). Waits until one
    /// of them holds the stable epoch after `next`, and returns it.
    async fn await_removal(
        self: &Arc<Self>,
        next: &MemberConfig,
        started: Instant,
    ) -> Result<MemberConfig, ReconfigureError> {
        loop {
            let stable = peer_configs(self, next.members.keys().copied())
                .await
                .into_iter()
                .filter(|c| c.epoch > next.epoch && c.is_stable())
                .max_by_key(|c| c.epoch);
            if let Some(stable) = stable {
                return Ok(stable);
            }
            if started.elapsed() >= CHANGE_WAIT {
                return Err(ReconfigureError::Unfinished(
                    "this node removed itself; the remaining members finish the change".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sweeps the transitional epoch this node is in and proposes the stable
    /// one after it, until this node holds a stable membership.
    pub async fn finish_change(self: &Arc<Self>) -> Result<MemberConfig, ReconfigureError> {
        let _running = self.reconfiguring.lock().await;
        loop {
            let config = self.config();
            if config.is_stable() {
                return Ok(config);
            }
            if !config.contains(self.id) {
                return Err(ReconfigureError::Unfinished(
                    "this node was removed; the remaining members finish the change".into(),
                ));
            }
            self.sweep(&config).await?;
            if self.config().epoch != config.epoch {
                continue;
            }
            // Only the stable successor is ever proposed for this epoch,
            // but `propose` adopts what is chosen, whatever it is.
            self.propose(&config.stabilized()).await?;
        }
    }

    /// Proposes `config` for its epoch's register and adopts whichever
    /// configuration is chosen there (this one, or a concurrent change's),
    /// which it returns.
    async fn propose(
        self: &Arc<Self>,
        config: &MemberConfig,
    ) -> Result<MemberConfig, ReconfigureError> {
        let outcome = self
            .put(
                &membership::register(config.epoch),
                Bytes::from(config.encode()),
            )
            .await?;
        let chosen = match outcome {
            PutOutcome::Created | PutOutcome::AlreadyChosen => config.clone(),
            PutOutcome::Conflict(other) => MemberConfig::decode(&other)
                .map_err(|e| ReconfigureError::Unfinished(format!("bad register: {e}")))?,
        };
        self.adopt(chosen.clone()).await?;
        Ok(chosen)
    }

    /// Every key through the quorums of `config` (module docs, step 3).
    async fn sweep(self: &Arc<Self>, config: &MemberConfig) -> Result<(), ReconfigureError> {
        let members = config.quorums();
        let ids: Vec<NodeId> = members.iter().collect();
        let keys = crate::rejoin::scan_majority(self, &ids, members.quorum())
            .await
            .ok_or_else(|| {
                ReconfigureError::Unfinished(
                    "no majority of the members could list its keys".into(),
                )
            })?;
        let started = Instant::now();
        tracing::info!(
            epoch = config.epoch,
            keys = keys.len(),
            "sweeping every key into the new members' quorums"
        );
        let keys: Vec<String> = keys.into_iter().collect();
        let mut pending = keys.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < SWEEP_IN_FLIGHT {
                let Some(key) = pending.next() else { break };
                let node = self.clone();
                let epoch = config.epoch;
                running.spawn(async move { node.sweep_key(&key, epoch).await });
            }
            match running.join_next().await {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(ReconfigureError::Unfinished(e.to_string())),
            }
        }
        tracing::info!(
            epoch = config.epoch,
            ms = started.elapsed().as_millis() as u64,
            "swept"
        );
        Ok(())
    }

    /// One key's sweep, retried until it ends (or the epoch moves on).
    async fn sweep_key(self: &Arc<Self>, key: &str, epoch: u64) -> Result<(), ReconfigureError> {
        for attempt in 0u32..20 {
            if attempt > 0 {
                let pause = 10u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let (now, members) = self.view();
            if now != epoch {
                return Ok(());
            }
            let coord = Coordinator::sweep(members.clone(), self.limits());
            match self
                .execute(key, coord, tokio::time::Instant::now(), epoch, &members)
                .await
            {
                Ok(Outcome::Chosen { .. } | Outcome::Empty { .. }) => return Ok(()),
                Err(NodeError::EpochChanged) => return Ok(()),
                Ok(Outcome::Unavailable) | Err(NodeError::Unavailable) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReconfigureError::Unfinished(format!(
            "the key {key:?} could not be swept through a majority"
        )))
    }
}

impl<S: Storage, T: Transport> Node<S, T> {
    /// A quorum read of one of the cluster's own registers (finishing it
    /// when its votes disagree), without the client metrics of a GET.
    async fn read_register(self: &Arc<Self>, key: &str) -> Option<Bytes> {
        if let Ok(Some(state)) = self.storage.load(key).map(|s| s.decided_value().cloned()) {
            return Some(state.value.bytes);
        }
        let get = |members| Coordinator::get(members, self.limits());
        match self
            .execute_in_epoch(key, get, tokio::time::Instant::now())
            .await
        {
            Ok(Outcome::Chosen { value, .. }) => Some(value.bytes),
            _ => None,
        }
    }
}

/// What each member holds, asked over the transport.
async fn peer_configs<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    peers: impl Iterator<Item = NodeId>,
) -> Vec<MemberConfig> {
    let mut calls = tokio::task::JoinSet::new();
    for peer in peers.filter(|p| *p != node.id) {
        let node = node.clone();
        calls.spawn(async move { node.transport.control(peer, Control::Config).await });
    }
    let cluster = node.identity().cluster;
    let mut configs = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok(Ok(ControlReply::Config(reply))) = joined {
            if reply.cluster == cluster {
                configs.push(reply.config);
            }
        }
    }
    configs
}

/// Keeps this node's membership current and finishes half-done changes
/// (module docs), until the task is dropped.
pub async fn reconcile<S: Storage, T: Transport>(node: Arc<Node<S, T>>) {
    let mut transitional_since: Option<(u64, Instant)> = None;
    let mut last_read: Option<Instant> = None;
    loop {
        let jitter = rand::rng().random_range(0..RECONCILE_EVERY.as_millis() as u64 / 2);
        tokio::time::sleep(RECONCILE_EVERY + Duration::from_millis(jitter)).await;
        let health = node.health();
        if matches!(health, Health::Removed(_) | Health::Joining(_)) {
            continue;
        }
        // 1. A newer membership held by any member (this epoch's or the
        //    previous one's: a removed node learns of its removal here).
        let config = node.config();
        let mut ask: BTreeMap<NodeId, ()> = config.members.keys().map(|id| (*id, ())).collect();
        if let Some(previous) = &config.previous {
            ask.extend(previous.iter().map(|id| (*id, ())));
        }
        if let Some(newest) = peer_configs(&node, ask.into_keys())
            .await
            .into_iter()
            .max_by_key(|c| c.epoch)
        {
            if let Err(e) = node.adopt(newest).await {
                tracing::warn!(error = %e, "cannot adopt a newer membership");
            }
        }
        if health != Health::Serving {
            continue;
        }
        // 2. A change chosen (or half-proposed) that nobody adopted: the
        //    quorum read of the next register finishes it. Once when this
        //    node starts serving (the node that ran the change, back from a
        //    crash), then now and then.
        let config = node.config();
        let due = last_read.is_none_or(|at| at.elapsed() >= READ_NEXT_EVERY);
        if !due {
        } else if let Some(bytes) = {
            last_read = Some(Instant::now());
            node.read_register(&membership::register(config.epoch + 1))
                .await
        } {
            match MemberConfig::decode(&bytes) {
                Ok(next) => {
                    if let Err(e) = node.adopt(next).await {
                        tracing::warn!(error = %e, "cannot adopt a newer membership");
                    }
                }
                Err(e) => tracing::error!(error = %e, "a membership register does not decode"),
            }
        }
        // 3. A transitional epoch left standing: finish it.
        let config = node.config();
        if config.is_stable() {
            transitional_since = None;
            continue;
        }
        let since = match transitional_since {
            Some((epoch, at)) if epoch == config.epoch => at,
            _ => {
                transitional_since = Some((config.epoch, Instant::now()));
                continue;
            }
        };
        if since.elapsed() >= TAKE_OVER_AFTER && node.reconfiguring.try_lock().is_ok() {
            tracing::info!(
                epoch = config.epoch,
                "finishing a membership change left half-done"
            );
            if let Err(e) = node.finish_change().await {
                tracing::warn!(error = %e, "the membership change is not finished yet");
            }
        }
    }
}
