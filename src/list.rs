//! `GET /v1/kv/{prefix}?keys` and `?recurse` (docs/api.md, "list"): a
//! linearizable page of the chosen keys under a prefix.
//!
//! How one page is made:
//! 1. Ask every member (this node from its own storage, the others over
//!    `/v1/paxos/list`, see `src/transport/list.rs`) for its first `limit`
//!    voted keys after `after`; go on with a majority of answers (and any
//!    other that comes within the straggler wait).
//! 2. Merge them (union). A member whose page was full may hold keys beyond
//!    its last one that it did not send, so cut the union at the smallest
//!    last key of any full page: up to there, every answering member sent
//!    every voted key it holds.
//! 3. A key some answer shows decided is chosen. Every other key is settled
//!    exactly as a GET settles it ([`Node::get`], which may finish a pending
//!    instance); a key no value is chosen for (404) is left out.
//!
//! Why every key chosen before the request started is listed: a chosen
//! value was accepted by a majority, which shares a member with the
//! majority that answered; that member holds a vote for the key and, below
//! the cut, sent it; step 3 then finds it chosen. A key is listed only when
//! a decide or a GET showed its value chosen, so nothing unchosen is listed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::node::{Node, NodeError};
use crate::paxos::NodeId;
use crate::storage::{Storage, StorageError};
use crate::transport::list::{
    answer, ListPage, ListPeers, ListRequest, MAX_LIST_LIMIT, PAGE_VALUE_BYTES,
};
use crate::transport::wire::PROTOCOL_VERSION;
use crate::transport::{Transport, TransportError};

/// Keys a page holds when the request names no `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// Undecided keys of one page settled (by a GET each) at once.
pub const SETTLE_CONCURRENCY: usize = 32;

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Every listed key starts with it; `""` lists every key.
    pub prefix: String,
    /// Only keys sorting after it (exclusive, bytewise).
    pub after: Option<String>,
    /// At most this many keys, 1..=[`MAX_LIST_LIMIT`] (clamped into it).
    pub limit: usize,
    /// Whether to return the values too (`?recurse`).
    pub values: bool,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Chosen keys in bytewise order, with their values when asked for.
    pub entries: Vec<(String, Option<Bytes>)>,
    /// Where the next page starts (`after`) when more keys may remain: the
    /// last key this page considered (normally its last key). `None`: the
    /// listing is complete.
    pub next: Option<String>,
}

/// A key of the merged page: its value when some answer showed it decided
/// (an empty `Bytes` when values were not asked), else `None`: to settle.
type Candidates = BTreeMap<String, Option<Bytes>>;

/// Lists one page of `query` through `node`, asking its peers with `peers`
/// (see the module docs). `Unavailable` without a majority of answers, or
/// when an undecided key cannot be settled in time.
pub async fn list<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    peers: &Arc<ListPeers>,
    query: &ListQuery,
) -> Result<Listing, NodeError> {
    // The API refuses other limits (400); a library caller gets the nearest.
    let limit = query.limit.clamp(1, MAX_LIST_LIMIT);
    let identity = node.identity();
    let request = Arc::new(ListRequest {
        version: PROTOCOL_VERSION,
        from: node.id(),
        cluster: identity.cluster,
        epoch: identity.epoch,
        prefix: query.prefix.clone(),
        after: query.after.clone(),
        limit,
        values: query.values,
    });
    let pages = gather(node, peers, &request).await?;
    let (candidates, more) = merge(&pages, limit);
    // The last key considered: the next page starts after it even when it
    // turns out not to be chosen.
    let mut next = candidates.keys().next_back().cloned().filter(|_| more);
    let mut entries = settle(node, candidates, query.values).await?;
    if query.values {
        // Bound the answer: stop after the entry whose values pass the budget.
        let mut bytes = 0usize;
        let over = entries.iter().position(|(_, v)| {
            bytes += v.as_ref().map_or(0, Bytes::len);
            bytes >= PAGE_VALUE_BYTES
        });
        if let Some(last) = over.filter(|last| last + 1 < entries.len()) {
            entries.truncate(last + 1);
            next = Some(entries[last].0.clone());
        }
    }
    Ok(Listing { entries, next })
}

/// This node's own page for `request` (the acceptor side of
/// `/v1/paxos/list`), read on the blocking pool: a page of 10,000 keys is a
/// sled range scan the async workers should not wait on.
pub async fn local_page<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    request: &ListRequest,
) -> Result<ListPage, StorageError> {
    // A node that rebuilds may not hold its votes yet: its page could miss
    // a chosen key that the majority's union must show.
    if let Some(why) = node.health().reason() {
        return Err(StorageError::Io(format!("this node is not serving: {why}")));
    }
    let (node, request) = (node.clone(), request.clone());
    tokio::task::spawn_blocking(move || answer(node.storage(), node.id(), &request))
        .await
        .map_err(|e| StorageError::Io(format!("the list task failed: {e}")))?
}

/// Every member's page: a majority at least, with whatever else comes
/// within the straggler wait after that.
async fn gather<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    peers: &Arc<ListPeers>,
    request: &Arc<ListRequest>,
) -> Result<Vec<ListPage>, NodeError> {
    let deadline = Instant::now() + node.timing().request_timeout;
    let members: Vec<NodeId> = node.members().iter().collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<ListPage, TransportError>>();
    for member in members.iter().copied() {
        let (node, peers, request, tx) = (node.clone(), peers.clone(), request.clone(), tx.clone());
        tokio::spawn(async move {
            let page = if member == node.id() {
                local_page(&node, &request)
                    .await
                    .map_err(|e| TransportError::Status {
                        status: 500,
                        body: e.to_string(),
                    })
            } else {
                peers.fetch(member, &request).await
            };
            let _ = tx.send(page);
        });
    }
    drop(tx);
    let quorum = node.members().quorum();
    let mut pages = Vec::with_capacity(members.len());
    let mut straggler_deadline: Option<Instant> = None;
    loop {
        let until = straggler_deadline.map_or(deadline, |s| s.min(deadline));
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Ok(page))) => {
                pages.push(page);
                if pages.len() >= quorum && straggler_deadline.is_none() {
                    straggler_deadline = Some(Instant::now() + node.timing().straggler_wait);
                }
            }
            Ok(Some(Err(e))) => tracing::debug!(error = %e, "a member did not list"),
            // Every member answered or failed, or the wait is over.
            Ok(None) | Err(_) => break,
        }
    }
    if pages.len() >= quorum {
        Ok(pages)
    } else {
        Err(NodeError::Unavailable)
    }
}

/// The union of `pages` up to the cut (module docs, step 2), at most
/// `limit` keys, and whether keys may remain after the last one.
pub fn merge(pages: &[ListPage], limit: usize) -> (Candidates, bool) {
    let cut = pages
        .iter()
        .filter(|p| p.more)
        .filter_map(|p| p.entries.last().map(|e| e.key.as_str()))
        .min();
    let mut candidates = Candidates::new();
    for entry in pages.iter().flat_map(|p| &p.entries) {
        if cut.is_some_and(|cut| entry.key.as_str() > cut) {
            continue;
        }
        let known = candidates.entry(entry.key.clone()).or_default();
        if entry.decided && known.is_none() {
            *known = Some(
                entry
                    .value
                    .as_ref()
                    .map(|v| v.0.clone())
                    .unwrap_or_default(),
            );
        }
    }
    let mut more = cut.is_some();
    while candidates.len() > limit {
        candidates.pop_last();
        more = true;
    }
    (candidates, more)
}

/// The chosen keys among `candidates`, in order: decided ones as they are,
/// the others by a GET each, [`SETTLE_CONCURRENCY`] at a time.
async fn settle<S: Storage, T: Transport>(
    node: &Arc<Node<S, T>>,
    candidates: Candidates,
    values: bool,
) -> Result<Vec<(String, Option<Bytes>)>, NodeError> {
    let undecided: Vec<String> = candidates
        .iter()
        .filter(|(_, known)| known.is_none())
        .map(|(key, _)| key.clone())
        .collect();
    let mut settled: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
    let mut gets = tokio::task::JoinSet::new();
    let mut pending = undecided.into_iter();
    loop {
        while gets.len() < SETTLE_CONCURRENCY {
            let Some(key) = pending.next() else { break };
            let node = node.clone();
            gets.spawn(async move {
                let value = node.get(&key).await;
                (key, value)
            });
        }
        let Some(done) = gets.join_next().await else {
            break;
        };
        let (key, value) =
            done.map_err(|e| StorageError::Io(format!("a settling read failed: {e}")))?;
        settled.insert(key, value?);
    }
    Ok(candidates
        .into_iter()
        .filter_map(|(key, known)| {
            let value = match known {
                Some(value) => value,
                None => settled.remove(&key).flatten()?,
            };
            Some((key, values.then_some(value)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::Ballot;
    use crate::transport::list::ListEntry;
    use crate::transport::wire::Base64;

    fn page(from: NodeId, keys: &[(&str, bool)], more: bool) -> ListPage {
        ListPage {
            version: PROTOCOL_VERSION,
            from,
            entries: keys
                .iter()
                .map(|(key, decided)| ListEntry {
                    key: key.to_string(),
                    ballot: Ballot::FAST,
                    decided: *decided,
                    value: decided.then(|| Base64(Bytes::from(format!("v{key}")))),
                })
                .collect(),
            more,
        }
    }

    fn keys(c: &Candidates) -> Vec<&str> {
        c.keys().map(String::as_str).collect()
    }

    /// Step 2: beyond the smallest last key of a full page, a member may
    /// hold keys it did not send, so the page stops there.
    #[test]
    fn the_union_is_cut_at_the_smallest_full_page_end() {
        let pages = [
            page(1, &[("a", true), ("c", false)], true),
            page(2, &[("a", false), ("b", true), ("d", true)], true),
            page(3, &[("e", true)], false),
        ];
        let (c, more) = merge(&pages, 10);
        assert_eq!(keys(&c), ["a", "b", "c"]);
        assert!(more);
        assert_eq!(c["a"], Some(Bytes::from("va")), "decided by member 1");
        assert_eq!(c["c"], None, "to settle");
    }

    #[test]
    fn without_full_pages_the_union_is_complete() {
        let pages = [
            page(1, &[("a", true)], false),
            page(2, &[("b", false)], false),
        ];
        let (c, more) = merge(&pages, 10);
        assert_eq!(keys(&c), ["a", "b"]);
        assert!(!more);
        let (c, more) = merge(&pages, 1);
        assert_eq!(keys(&c), ["a"]);
        assert!(more, "cut by the limit");
        let (c, more) = merge(&[page(1, &[], false), page(2, &[], false)], 1);
        assert!(c.is_empty() && !more);
    }
}
