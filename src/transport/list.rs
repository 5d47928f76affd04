//! The peer message behind `GET /v1/kv/{prefix}?keys` (docs/api.md,
//! "list"): one member's page of the registers it holds a vote for.
//!
//! A node POSTs a [`ListRequest`] to a member's `/v1/paxos/list` (with the
//! cluster token, as on every peer route) and gets a [`ListPage`]: up to
//! `limit` keys that start with `prefix` and sort after `after`, bytewise,
//! each with the ballot of this member's vote and whether it knows the value
//! is chosen (with the value itself when `values` is asked and it is
//! decided). Registers where the member only promised and never voted are
//! skipped: no value can be chosen without votes. The member reads only what
//! it sends, out of a sled range scan ([`Storage::scan`]).
//!
//! `more` is false only when the member holds no further voted key after its
//! last entry; the lister relies on that (see `src/list.rs`).
//!
//! ```json
//! {"version":2,"from":2,"cluster":"9f..-01..","epoch":1,"prefix":"app/","after":"app/a","limit":1000,"values":false}
//! {"version":2,"from":1,"entries":[{"key":"app/b","ballot":{"round":0,"node":0},"decided":true}],"more":false}
//! ```

use std::collections::BTreeMap;

use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use super::wire::{Base64, PROTOCOL_VERSION};
use super::TransportError;
use crate::paxos::{Ballot, NodeId};
use crate::storage::{Storage, StorageError};

/// Most keys one list request may ask for (docs/api.md: at most 10000).
pub const MAX_LIST_LIMIT: usize = 10_000;

/// A member stops its page after the entry whose values pass this many
/// bytes (and says `more`), so a page of large values stays bounded.
pub const PAGE_VALUE_BYTES: usize = 16 << 20;

/// Registers a member reads from storage per scan while filling a page.
const SCAN_CHUNK: usize = 1024;

/// Body of `/v1/paxos/list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sending node.
    pub from: NodeId,
    /// The sender's cluster (a member of another cluster is refused).
    pub cluster: String,
    /// The sender's membership epoch.
    pub epoch: u64,
    /// Every listed key starts with it (`""`: every key).
    pub prefix: String,
    /// Only keys sorting after it (exclusive), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries, 1..=[`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Whether decided entries carry their value.
    #[serde(default)]
    pub values: bool,
}

/// One register in a [`ListPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEntry {
    /// The register's key.
    pub key: String,
    /// The ballot of this member's vote.
    pub ballot: Ballot,
    /// This member knows its vote's value is chosen.
    pub decided: bool,
    /// The chosen value, when decided and the request asked for values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Base64>,
}

/// Answer to a [`ListRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListPage {
    /// [`PROTOCOL_VERSION`] of the member.
    pub version: u32,
    /// The member that answered.
    pub from: NodeId,
    /// Voted registers in key order, at most the request's `limit`.
    pub entries: Vec<ListEntry>,
    /// The member may hold voted keys after the last entry. When false, it
    /// holds none.
    pub more: bool,
}

impl ListRequest {
    /// Checks the fields a member relies on; the reason when they are wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "peer protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                self.version
            ));
        }
        if !(1..=MAX_LIST_LIMIT).contains(&self.limit) {
            return Err(format!(
                "a list limit of {} is outside 1..={MAX_LIST_LIMIT}",
                self.limit
            ));
        }
        Ok(())
    }
}

/// The page `me` answers to `request` from its `storage` (the acceptor side
/// of `/v1/paxos/list`). Changes nothing.
pub fn answer<S: Storage>(
    storage: &S,
    me: NodeId,
    request: &ListRequest,
) -> Result<ListPage, StorageError> {
    let mut entries = Vec::new();
    let mut value_bytes = 0usize;
    let mut cursor = request.after.clone();
    loop {
        let chunk = storage.scan(&request.prefix, cursor.as_deref(), SCAN_CHUNK)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (key, state) in chunk {
            cursor = Some(key.clone());
            if crate::membership::is_internal(&key) {
                continue; // the cluster's own registers are not client keys
            }
            let Some(vote) = &state.accepted else {
                continue; // a promise alone: nothing can be chosen here yet
            };
            let value = (request.values && state.decided).then(|| Base64(vote.value.bytes.clone()));
            value_bytes += value.as_ref().map_or(0, |v| v.0.len());
            entries.push(ListEntry {
                key,
                ballot: vote.ballot,
                decided: state.decided,
                value,
            });
            if entries.len() >= request.limit || value_bytes >= PAGE_VALUE_BYTES {
                return Ok(page(me, entries, true));
            }
        }
        if exhausted {
            return Ok(page(me, entries, false));
        }
    }
}

fn page(me: NodeId, entries: Vec<ListEntry>, more: bool) -> ListPage {
    ListPage {
        version: PROTOCOL_VERSION,
        from: me,
        entries,
        more,
    }
}

/// Fetches pages from members' `/v1/paxos/list` over HTTP(S).
pub struct ListPeers {
    me: NodeId,
    client: reqwest::Client,
    urls: BTreeMap<NodeId, reqwest::Url>,
    auth: Option<HeaderValue>,
}

impl ListPeers {
    /// Node `me`'s client of the members' list routes at `urls`, sending
    /// `auth` (the cluster token) when set, over `client`: the peer
    /// transport's ([`super::HttpTransport::list_peers`]).
    pub(crate) fn new(
        me: NodeId,
        client: reqwest::Client,
        urls: BTreeMap<NodeId, reqwest::Url>,
        auth: Option<HeaderValue>,
    ) -> Self {
        ListPeers {
            me,
            client,
            urls,
            auth,
        }
    }

    /// This node's id, the `from` of its requests.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Asks member `to` for its page; checks that `to` answered and that the
    /// page keeps the promises of [`ListPage`] (at most `limit` entries, in
    /// strictly increasing key order, all under the prefix).
    pub async fn fetch(
        &self,
        to: NodeId,
        request: &ListRequest,
    ) -> Result<ListPage, TransportError> {
        let url = self.urls.get(&to).ok_or(TransportError::UnknownPeer(to))?;
        let page: ListPage =
            super::http::post_json(&self.client, url.clone(), self.auth.as_ref(), request).await?;
        check_page(to, request, &page).map_err(TransportError::Protocol)?;
        Ok(page)
    }
}

/// Whether `page` is a well-formed answer of `from` to `request`.
pub fn check_page(from: NodeId, request: &ListRequest, page: &ListPage) -> Result<(), String> {
    if page.from != from {
        return Err(format!(
            "expected node {from}, node {} answered (check --peers)",
            page.from
        ));
    }
    if page.version != PROTOCOL_VERSION {
        return Err(format!(
            "node {from} speaks protocol version {}",
            page.version
        ));
    }
    if page.entries.len() > request.limit {
        return Err(format!("node {from} sent more entries than asked"));
    }
    let mut last = request.after.as_deref();
    for entry in &page.entries {
        if !entry.key.starts_with(&request.prefix) || last.is_some_and(|l| entry.key.as_str() <= l)
        {
            return Err(format!(
                "node {from} sent key {:?} out of order or outside the prefix",
                entry.key
            ));
        }
        last = Some(&entry.key);
    }
    if page.more && page.entries.is_empty() {
        return Err(format!("node {from} said more but sent nothing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{Accepted, AcceptorState};
    use crate::storage::MemoryStorage;
    use crate::value::Value;

    fn state(round: u64, decided: bool) -> AcceptorState<Value> {
        AcceptorState {
            promised: Ballot { round, node: 1 },
            accepted: Some(Accepted {
                ballot: Ballot { round, node: 1 },
                value: Value {
                    writer: 1,
                    bytes: bytes::Bytes::from_static(b"v"),
                },
            }),
            decided,
        }
    }

    fn request(prefix: &str, after: Option<&str>, limit: usize) -> ListRequest {
        ListRequest {
            version: PROTOCOL_VERSION,
            from: 2,
            cluster: "c".into(),
            epoch: 1,
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit,
            values: true,
        }
    }

    /// A member skips promise-only registers, stops at `limit` saying
    /// `more`, and says no more only when its scan ran out.
    #[tokio::test]
    async fn a_member_pages_its_voted_registers() {
        let storage = MemoryStorage::new();
        let promised_only = AcceptorState {
            promised: Ballot { round: 3, node: 2 },
            ..AcceptorState::default()
        };
        storage.store("app/a", &state(1, true)).await.unwrap();
        storage.store("app/b", &promised_only).await.unwrap();
        storage.store("app/c", &state(2, false)).await.unwrap();
        storage.store("apq", &state(2, true)).await.unwrap();

        let all = answer(&storage, 1, &request("app/", None, 10)).unwrap();
        let keys: Vec<_> = all.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["app/a", "app/c"]);
        assert!(!all.more);
        assert_eq!(all.entries[0].value, Some(Base64("v".into())));
        assert_eq!(all.entries[1].value, None, "undecided: no value");
        check_page(1, &request("app/", None, 10), &all).unwrap();

        let first = answer(&storage, 1, &request("app/", None, 1)).unwrap();
        assert_eq!(first.entries.len(), 1);
        assert!(first.more);
        let rest = answer(&storage, 1, &request("app/", Some("app/a"), 1)).unwrap();
        assert_eq!(rest.entries[0].key, "app/c");
        assert!(rest.more, "a full page may have more");
        let end = answer(&storage, 1, &request("app/", Some("app/c"), 1)).unwrap();
        assert!(end.entries.is_empty() && !end.more);
    }

    #[test]
    fn limits_outside_the_contract_are_refused() {
        assert!(request("", None, 0).check().is_err());
        assert!(request("", None, MAX_LIST_LIMIT + 1).check().is_err());
        assert!(request("", None, MAX_LIST_LIMIT).check().is_ok());
    }
}
