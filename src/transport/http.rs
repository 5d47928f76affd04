//! The production [`Transport`]: JSON over HTTP(S) with reqwest.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::value::Value;
use reqwest::header::{HeaderValue, AUTHORIZATION};

use super::wire::{Op, PeerRequest, PeerResponse};
use super::{Transport, TransportError};
use crate::paxos::{NodeId, Reply, Request};

/// Calls peers' `/v1/paxos/...` routes over pooled keep-alive connections.
pub struct HttpTransport {
    me: NodeId,
    client: reqwest::Client,
    /// Per peer: the URL of each route, built once.
    routes: BTreeMap<NodeId, [reqwest::Url; 4]>,
    auth: Option<HeaderValue>,
}

impl HttpTransport {
    /// A transport for node `me` reaching `peers` (base URLs such as
    /// `http://10.0.0.2:7001`), sending `token` as a bearer token when set,
    /// and giving up on any call after `timeout`.
    pub fn new(
        me: NodeId,
        peers: &BTreeMap<NodeId, reqwest::Url>,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut routes = BTreeMap::new();
        for (&id, base) in peers {
            let route = |op: Op| {
                base.join(&format!("v1/paxos/{}", op.name()))
                    .map_err(|e| format!("bad URL for node {id}: {e}"))
            };
            routes.insert(
                id,
                [
                    route(Op::Prepare)?,
                    route(Op::Accept)?,
                    route(Op::Read)?,
                    route(Op::Decide)?,
                ],
            );
        }
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "the cluster token must be printable ASCII".to_string())?;
        Ok(HttpTransport {
            me,
            client,
            routes,
            auth,
        })
    }
}

impl Transport for HttpTransport {
    async fn call(
        &self,
        to: NodeId,
        key: &str,
        request: Request<Value>,
    ) -> Result<Reply<Value>, TransportError> {
        let urls = self
            .routes
            .get(&to)
            .ok_or(TransportError::UnknownPeer(to))?;
        let op = Op::of(&request);
        let url = urls[op as usize].clone();
        let body = PeerRequest::new(self.me, key, request);
        let mut builder = self.client.post(url).json(&body);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = builder.send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(TransportError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let reply: PeerResponse = response.json().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Protocol(e.to_string())
            }
        })?;
        if reply.from != to {
            return Err(TransportError::Protocol(format!(
                "expected node {to}, node {} answered (check --peers)",
                reply.from
            )));
        }
        reply.into_reply().map_err(TransportError::Protocol)
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Unreachable(e.to_string())
    }
}
