//! Server-Sent Events as the tests read them (docs/api.md "Events and
//! console"): one JSON object per `data:` line, messages ended by a blank
//! line, comments (keep-alives) skipped.

use serde_json::Value as Json;
use tokio::time::Instant;

use super::net::PATIENCE;

/// Reads SSE messages from a streaming response.
pub struct EventReader {
    response: reqwest::Response,
    pending: Vec<u8>,
}

impl EventReader {
    pub async fn open(url: &str, token: Option<&str>) -> reqwest::Response {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("open the event stream")
    }

    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventReader {
            response,
            pending: Vec::new(),
        }
    }

    /// The next JSON message, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Json> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let message: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8(message).expect("UTF-8 stream");
                if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some(serde_json::from_str(data).expect("each message is JSON"));
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream stayed silent too long")
                .ok()??;
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// Reads until `done` says so, keeping every message; panics after
    /// [`PATIENCE`].
    pub async fn until(&mut self, what: &str, mut done: impl FnMut(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while !done(&seen) {
            assert!(
                Instant::now() < deadline,
                "{what}: not seen in {PATIENCE:?}; got {seen:#?}"
            );
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(message)) => seen.push(message),
                Ok(None) => panic!("{what}: the stream ended; got {seen:#?}"),
                Err(_) => {}
            }
        }
        seen
    }

    /// Reads until the relay of every node of `peers` said it is up.
    pub async fn relays_up(&mut self, peers: &[u64]) {
        self.until("the relays up", |seen| {
            peers.iter().all(|n| {
                seen.iter()
                    .any(|m| m["kind"] == "relay" && m["node"] == *n && m["up"] == true)
            })
        })
        .await;
    }
}
