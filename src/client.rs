//! The small command-line client: `paxos-kv put`, `get` and `list`.
//!
//! Exit codes (docs/api.md): 0 on 200/201, 1 on 404/409 (why on stderr), 2 on
//! any other failure.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::error_chain::error_chain;
use crate::key::{encode_key, validate_key};
use crate::transport::wire::Base64;

/// Exit code: success.
pub const OK: u8 = 0;
/// Exit code: 404 or 409.
pub const REFUSED: u8 = 1;
/// Exit code: anything else.
pub const FAILED: u8 = 2;

/// How a command-line client reaches a node that uses TLS or client tokens
/// (`docs/api.md`, "Access control and TLS"): flags of `put`, `get` and
/// `bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientAccess {
    /// PEM CA certificate to trust for https:// URLs (besides the public roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client token, sent as Authorization: Bearer TOKEN.
    #[arg(long, env = "PAXOS_KV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientAccess {
    /// A reqwest builder that trusts `--ca` and sends `--token` on every
    /// request; the error is one line naming the flag.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(path) = &self.ca {
            let pem = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "--ca {}: no PEM certificate in the file",
                    path.display()
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "--token must be printable ASCII".to_string())?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        Ok(builder)
    }
}

fn client(access: &ClientAccess) -> Result<reqwest::Client, String> {
    client_for(access, Duration::ZERO)
}

/// A client whose requests may take `extra` longer than the usual 30 s
/// (a `get --wait`).
fn client_for(access: &ClientAccess, extra: Duration) -> Result<reqwest::Client, String> {
    access
        .builder()?
        .timeout(Duration::from_secs(30) + extra)
        .build()
        .map_err(|e| e.to_string())
}

fn url_for(base: &str, key: &str) -> Result<String, String> {
    validate_key(key).map_err(|e| e.to_string())?;
    // URL parsers remove `.` and `..` path segments (even percent-encoded),
    // so `a/../b` would silently become key `b`. Refuse instead.
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!(
            "the key {key:?} has a '.' or '..' segment, which URL clients rewrite; \
             this client refuses to send it (a raw HTTP client can, e.g. curl --path-as-is)"
        ));
    }
    Ok(format!(
        "{}/v1/kv/{}",
        base.trim_end_matches('/'),
        encode_key(key)
    ))
}

/// The JSON error message of a response body, or the body itself.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Sends `request` to the node at `base`: its status and body, or why it
/// could not be reached.
async fn exchange(base: &str, request: reqwest::RequestBuilder) -> Result<(u16, Bytes), String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {}", error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("paxos-kv: {message}");
    FAILED
}

/// `paxos-kv put`: writes `value` to `key` once.
pub async fn put(base: &str, key: &str, value: Vec<u8>, access: &ClientAccess) -> u8 {
    let result = async {
        let url = url_for(base, key)?;
        exchange(base, client(access)?.put(url).body(value)).await
    }
    .await;
    match result {
        Err(e) => fail(e),
        Ok((201, _)) => {
            println!("created");
            OK
        }
        Ok((200, _)) => {
            println!("unchanged: {key:?} already holds this value");
            OK
        }
        Ok((409, body)) => {
            eprintln!(
                "conflict: {key:?} already holds a different value ({} bytes): {}",
                body.len(),
                preview(&body)
            );
            REFUSED
        }
        Ok((status, body)) => fail(format!("HTTP {status}: {}", reason(&body))),
    }
}

/// `paxos-kv get`: prints the value of `key` to stdout.
/// `paxos-kv get [--wait D]`: prints the value of `key` to stdout; with
/// `wait`, the server waits up to that long for a value to be chosen.
pub async fn get(base: &str, key: &str, wait: Option<Duration>, access: &ClientAccess) -> u8 {
    let result = async {
        let mut url = url_for(base, key)?;
        if let Some(wait) = wait {
            url.push_str(&format!("?wait={}ms", wait.as_millis()));
        }
        exchange(base, client_for(access, wait.unwrap_or_default())?.get(url)).await
    }
    .await;
    match result {
        Err(e) => fail(e),
        Ok((200, body)) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&body).and_then(|_| out.flush()).is_err() {
                return FAILED;
            }
            OK
        }
        Ok((404, _)) => {
            eprintln!("not found: no value is chosen for {key:?}");
            REFUSED
        }
        Ok((status, body)) => fail(format!("HTTP {status}: {}", reason(&body))),
    }
}

/// `paxos-kv list [--values] PREFIX`: prints every chosen key under
/// `prefix`, one per line (`key<TAB>value` with `values`), following `next`
/// page by page. Exit 0 when at least one key is listed, 1 when none is, 2
/// on any failure (a page already printed stays printed).
pub async fn list(base: &str, prefix: &str, values: bool, access: &ClientAccess) -> u8 {
    if !prefix.is_empty() {
        if let Err(e) = url_for(base, prefix) {
            return fail(e);
        }
    }
    let client = match client(access) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut after: Option<String> = None;
    let mut listed = 0usize;
    let mut out = std::io::stdout().lock();
    loop {
        let mut url = match reqwest::Url::parse(&format!(
            "{}/v1/kv/{}",
            base.trim_end_matches('/'),
            encode_key(prefix)
        )) {
            Ok(url) => url,
            Err(e) => return fail(format!("bad --url {base}: {e}")),
        };
        url.query_pairs_mut()
            .append_pair(if values { "recurse" } else { "keys" }, "");
        if let Some(after) = &after {
            url.query_pairs_mut().append_pair("after", after);
        }
        let response = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot reach {base}: {e}")),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        if status != 200 {
            return fail(format!("HTTP {status}: {}", reason(&body)));
        }
        let page: ListPage = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return fail(format!("unexpected answer from {base}: {e}")),
        };
        for (key, value) in page.lines() {
            let written = match value {
                Some(value) => out
                    .write_all(key.as_bytes())
                    .and_then(|_| out.write_all(b"\t"))
                    .and_then(|_| out.write_all(&value))
                    .and_then(|_| out.write_all(b"\n")),
                None => writeln!(out, "{key}"),
            };
            if written.is_err() {
                return FAILED;
            }
            listed += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if out.flush().is_err() {
        return FAILED;
    }
    if listed == 0 {
        eprintln!("not found: no chosen key starts with {prefix:?}");
        return REFUSED;
    }
    OK
}

/// A page of `?keys` or `?recurse` as docs/api.md "list" writes it.
#[derive(serde::Deserialize)]
struct ListPage {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    entries: Vec<ListEntry>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct ListEntry {
    key: String,
    value: Base64,
}

impl ListPage {
    fn lines(&self) -> Vec<(&str, Option<Bytes>)> {
        let keys = self.keys.iter().map(|k| (k.as_str(), None));
        let entries = self
            .entries
            .iter()
            .map(|e| (e.key.as_str(), Some(e.value.0.clone())));
        keys.chain(entries).collect()
    }
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::url_for;

    #[test]
    fn dot_segments_are_refused_not_rewritten() {
        for key in ["a/../b", "..", ".", "a/./b", "a/.."] {
            let err = url_for("http://127.0.0.1:7001", key).unwrap_err();
            assert!(err.contains("segment"), "{key}: {err}");
        }
        for key in ["a..b", ".hidden", "a/.b/c", "..."] {
            assert!(url_for("http://127.0.0.1:7001", key).is_ok(), "{key}");
        }
    }
}

/// What `paxos-kv members` does.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MembersCommand {
    /// Print the epoch and each member: id, URL, state.
    List,
    /// Add node ID, reachable at URL; then start it with `serve --join`.
    Add {
        /// The new node's id (never used before in this cluster).
        id: u32,
        /// Its base URL, as the other members reach it.
        url: String,
    },
    /// Remove node ID; its process can then be stopped.
    Remove {
        /// The node to remove.
        id: u32,
    },
}

/// `paxos-kv members`: lists or changes the members (docs/api.md, "Cluster
/// identity and membership") through the node at `base`, with the cluster
/// token. Exit 0 on success, 1 when the change is refused (404/409), 2
/// otherwise.
pub async fn members(
    base: &str,
    command: &MembersCommand,
    cluster_token: Option<&str>,
    ca: Option<PathBuf>,
) -> u8 {
    let access = ClientAccess {
        ca,
        token: cluster_token.map(str::to_owned),
    };
    let result = async {
        // A change sweeps every key before it answers: allow it time.
        let client = access
            .builder()?
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| e.to_string())?;
        let root = base.trim_end_matches('/');
        let request = match command {
            MembersCommand::List => client.get(format!("{root}/v1/members")),
            MembersCommand::Add { id, url } => client
                .post(format!("{root}/v1/members"))
                .json(&serde_json::json!({ "id": id, "url": url })),
            MembersCommand::Remove { id } => client.delete(format!("{root}/v1/members/{id}")),
        };
        exchange(base, request).await
    }
    .await;
    match result {
        Err(e) => fail(e),
        Ok((200 | 201, body)) => {
            let Ok(view) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return fail("the node's answer is not JSON");
            };
            let mut out = format!(
                "epoch {}{}\n",
                view["epoch"],
                if view["changing"].as_bool() == Some(true) {
                    " (a change is in progress)"
                } else {
                    ""
                }
            );
            for member in view["members"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}\t{}\t{}\n",
                    member["id"],
                    member["url"].as_str().unwrap_or_default(),
                    member["state"].as_str().unwrap_or_default()
                ));
            }
            print!("{out}");
            OK
        }
        Ok((status @ (404 | 409), body)) => {
            eprintln!("paxos-kv: refused (HTTP {status}): {}", reason(&body));
            REFUSED
        }
        Ok((status, body)) => fail(format!("HTTP {status}: {}", reason(&body))),
    }
}
