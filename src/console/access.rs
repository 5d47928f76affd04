//! Who may use the console's routes, and which events a viewer sees
//! (`docs/api.md`, "Events and console").
//!
//! - Client side (the page, `/v1/events`, `/v1/console/acceptors`): open
//!   without `--client-tokens`; with it, a token that may read some key
//!   (401 without or with an unknown token, 403 for a token that may read
//!   nothing or not the `?key=` asked). The page and the stream also take
//!   the token as `?token=`, because a browser's `EventSource` cannot send
//!   headers; the query is never logged. A viewer sees only the events of
//!   keys its token may read ([`visible`]).
//! - Peer side (`/v1/events?scope=local`, `/v1/console/acceptor`): the
//!   cluster token, and with `--tls-ca` a verified client certificate, as
//!   on every peer route.

use std::borrow::Cow;

use axum::http::HeaderMap;
use axum::Extension;
use serde::Deserialize;

use super::Console;
use crate::api::{authorized, ApiError};
use crate::auth::{Access, Caller};
use crate::tls::PeerCertificate;

/// The `?token=` of the page and the event stream.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    /// A client token's secret, for a browser that cannot send headers.
    pub token: Option<String>,
}

/// The viewer of a client-side console route: identified by its
/// `Authorization` header or, where `query_secret` is given, `?token=`,
/// and allowed to read some key.
pub fn viewer<S, T>(
    console: &Console<S, T>,
    headers: &HeaderMap,
    query_secret: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = console.clients.identify_with(headers, query_secret)?;
    caller.check_reads_something()?;
    Ok(caller)
}

/// Ok when a peer-side console route may answer: the connection showed a
/// verified certificate when peers need one, and the cluster token is there.
pub fn check_peer<S, T>(
    console: &Console<S, T>,
    headers: &HeaderMap,
    certificate: Option<Extension<PeerCertificate>>,
) -> Result<(), ApiError> {
    if console.peers_need_certificate && !certificate.is_some_and(|c| c.verified) {
        return Err(ApiError::PeerCertificateRequired);
    }
    if !authorized(console.token.as_deref(), headers) {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

#[derive(Deserialize)]
struct Keyed<'a> {
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
}

/// Whether a relayed message (the JSON of one SSE message) may go to
/// `viewer`: a message about a key only when the viewer may read that key;
/// a note about no key (a lost count, a relay's state) always; a message
/// that does not parse never.
pub fn visible(viewer: &Caller, json: &[u8]) -> bool {
    if viewer.reads_everything() {
        return true;
    }
    match serde_json::from_slice::<Keyed>(json) {
        Ok(Keyed { key: Some(key) }) => viewer.may(Access::Read, &key),
        Ok(Keyed { key: None }) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_messages_pass_only_for_keys_the_viewer_may_read() {
        let open = Caller::Open;
        assert!(visible(&open, br#"{"key":"secret/x"}"#));
        assert!(visible(&open, b"not json"));
        let tokens = crate::auth::TokenSet::parse(&format!(
            r#"{{"tokens":[{{"name":"r","sha256":"{}","read":["app/"]}}]}}"#,
            crate::auth::hash_secret("s")
        ))
        .unwrap();
        let app = Caller::Token(tokens.find(b"s").unwrap().clone());
        assert!(visible(
            &app,
            br#"{"kind":"accept","key":"app/x","node":1}"#
        ));
        assert!(visible(&app, br#"{"kind":"accept","key":"app\/x"}"#));
        assert!(!visible(&app, br#"{"kind":"accept","key":"secret/x"}"#));
        assert!(visible(&app, br#"{"kind":"lost","node":2,"lost":3}"#));
        assert!(!visible(&app, b"{broken"));
    }
}
