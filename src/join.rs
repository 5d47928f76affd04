//! `serve --join URL`: a node added to a running cluster learns the cluster
//! and its members from any member (docs/api.md, "Cluster identity and
//! membership"; docs/design.md, "Changing the members").
//!
//! The operator first runs `paxos-kv members add ID URL`, which starts a
//! transitional epoch with the new node in it, then starts the node. A node
//! that finds itself among the members the current change adds starts with
//! an empty state and votes at once: it never voted before, so it forgot
//! nothing (the sweep of the change then copies every key to it). A node
//! whose id is a member but not one being added has lost its disk: it
//! rebuilds from the others like any node that did (`src/rejoin.rs`).
//! A data directory that already has an identity ignores `--join`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Config;
use crate::identity::{Identity, META_NAME};
use crate::membership::MemberConfig;
use crate::node::{Health, Node, NodeError};
use crate::storage::Storage;
use crate::transport::wire::{ConfigReply, ConfigRequest, PROTOCOL_VERSION};
use crate::transport::Transport;

/// What a joining node learnt.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The cluster's id.
    pub cluster: String,
    /// The membership it is in.
    pub config: MemberConfig,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The member could not be asked.
    #[error("cannot ask {url} for the cluster's members: {reason}")]
    Ask {
        /// The `--join` URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Whether `config`'s data directory already belongs to a cluster.
pub fn has_identity(config: &Config) -> bool {
    config
        .data_dir
        .join(format!("paxos-kv.{META_NAME}"))
        .exists()
}

/// Asks `config.join` for the membership until this node is in it, then
/// makes its members `config.peers`. Waits (logging why) while the node has
/// not been added yet; fails on an unusable answer.
pub async fn learn(
    config: &mut Config,
    tls: Option<rustls::ClientConfig>,
) -> Result<Joined, JoinError> {
    let Some(url) = config.join.clone() else {
        unreachable!("learn is called with --join")
    };
    let ask_err = |reason: String| JoinError::Ask {
        url: url.to_string(),
        reason,
    };
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy();
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    let client = builder.build().map_err(|e| ask_err(e.to_string()))?;
    let auth = config
        .token
        .as_deref()
        .map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()
        .map_err(|_| ask_err("the cluster token is not a valid header".into()))?;
    let route = url
        .join("v1/paxos/config")
        .map_err(|e| ask_err(e.to_string()))?;
    let body = ConfigRequest {
        version: PROTOCOL_VERSION,
        from: config.id,
    };
    let mut told = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let answer: Result<ConfigReply, _> =
            crate::transport::post_json(&client, route.clone(), auth.as_ref(), &body).await;
        match answer {
            Ok(reply) if reply.config.contains(config.id) && !reply.cluster.is_empty() => {
                let mut peers = BTreeMap::new();
                for (id, base) in &reply.config.members {
                    let parsed = reqwest::Url::parse(base)
                        .map_err(|e| ask_err(format!("member {id} has URL {base:?}: {e}")))?;
                    peers.insert(*id, parsed);
                }
                config.peers = peers;
                tracing::info!(
                    cluster = %reply.cluster,
                    epoch = reply.config.epoch,
                    members = ?reply.config.members.keys().collect::<Vec<_>>(),
                    "joined: learnt the cluster's members"
                );
                return Ok(Joined {
                    cluster: reply.cluster,
                    config: reply.config,
                });
            }
            Ok(reply) if reply.config.retired.contains(&config.id) => {
                return Err(ask_err(format!(
                    "node {} was removed from this cluster; ids are not reused, start the new \
                     node with a new id",
                    config.id
                )));
            }
            Ok(reply) => {
                if told.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(
                        id = config.id,
                        members = ?reply.config.members.keys().collect::<Vec<_>>(),
                        "not a member yet: run `paxos-kv members add {} URL` against the cluster; waiting",
                        config.id
                    );
                    told = std::time::Instant::now();
                }
            }
            Err(e) => {
                if told.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(url = %url, error = %e, "cannot reach the member to join through; retrying");
                    told = std::time::Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl<S: Storage, T: Transport> Node<S, T> {
    /// Takes the identity a join learnt, on a node that opened a blank
    /// directory (module docs): serving at once when the current change
    /// adds it, rebuilding otherwise.
    pub async fn accept_join(&self, joined: Joined) -> Result<(), NodeError> {
        if !matches!(self.health(), Health::Joining(_)) {
            // The directory had an identity after all: it wins.
            return Ok(());
        }
        let fresh = joined.config.catching_up().contains(&self.id);
        let mut identity = Identity::new(joined.cluster, self.id, &joined.config.members);
        identity.set_config(joined.config);
        identity.rebuilt = fresh;
        self.save_identity(identity).await?;
        if fresh {
            tracing::info!("a new member: serving with an empty state");
            self.set_health(Health::Serving);
        } else {
            self.set_health(Health::Recovering(
                "a member that lost its data: it rebuilds from a majority of the other members"
                    .into(),
            ));
        }
        Ok(())
    }
}
