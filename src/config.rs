//! `serve` flags and their environment twins, validated into a [`Config`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::node::Timing;
use crate::paxos::NodeId;

/// The flags of `paxos-kv serve` (docs/api.md, "Command line").
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// This node's id; must appear in --peers.
    #[arg(long, env = "PAXOS_KV_ID")]
    pub id: u32,
    /// Address to listen on for clients and peers, e.g. 0.0.0.0:7001.
    #[arg(long, env = "PAXOS_KV_LISTEN")]
    pub listen: String,
    /// Directory of this node's sled database (created if missing).
    #[arg(long, env = "PAXOS_KV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Every member, this node included, as ID=URL,ID=URL,... (the same on every node).
    #[arg(long, env = "PAXOS_KV_PEERS")]
    pub peers: String,
    /// Shared secret that peer routes require (Authorization: Bearer T).
    #[arg(long, env = "PAXOS_KV_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Largest value a PUT may store, in bytes.
    #[arg(long, env = "PAXOS_KV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Deadline of every client request (503 after it), e.g. 5s or 800ms.
    #[arg(long, env = "PAXOS_KV_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Deadline of one call to a peer.
    #[arg(long, env = "PAXOS_KV_PEER_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub peer_timeout: Duration,
    /// Client tokens and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// The access-control and TLS flags of `serve` (`docs/api.md`, "Access
/// control and TLS"); all off by default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// JSON file of client tokens (SHA-256 hashes with read/write key
    /// prefixes); every /v1/kv request then needs one. Re-read on SIGHUP.
    #[arg(long, env = "PAXOS_KV_CLIENT_TOKENS")]
    pub client_tokens: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (clients and peers) on --listen.
    #[arg(long, env = "PAXOS_KV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PAXOS_KV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that peers' certificates must chain to: peers present their
    /// certificate to each other, and peer routes require one.
    #[arg(long, env = "PAXOS_KV_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The sled directory.
    pub data_dir: PathBuf,
    /// Every member's base URL (ending in `/`), this node included.
    pub peers: BTreeMap<NodeId, reqwest::Url>,
    /// The cluster token, if any.
    pub token: Option<String>,
    /// Largest value a PUT may store.
    pub max_value_bytes: usize,
    /// Request deadlines and backoff.
    pub timing: Timing,
    /// Deadline of one peer call.
    pub peer_timeout: Duration,
    /// How long a client may take to send a body.
    pub body_timeout: Duration,
    /// The client token file, when client requests need a token.
    pub client_tokens: Option<PathBuf>,
    /// TLS files, when the node speaks HTTPS.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// Parses `5s`, `250ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 250ms"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?}; use ms, s or m"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses `ID=URL,ID=URL,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, reqwest::Url>, String> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("--peers entry {entry:?} is not ID=URL"))?;
        let id: NodeId =
            id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                format!("--peers entry {entry:?}: the id must be a positive integer")
            })?;
        let mut url = reqwest::Url::parse(url.trim())
            .map_err(|e| format!("--peers entry {entry:?}: bad URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "--peers entry {entry:?}: the URL must be http:// or https:// with a host"
            ));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if peers.insert(id, url).is_some() {
            return Err(format!("--peers names node {id} twice"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty; list every member as ID=URL,ID=URL,...".into());
    }
    Ok(peers)
}

impl ServeArgs {
    /// Validates every flag; the error is one line for the user.
    pub fn validate(self) -> Result<Config, String> {
        let peers = parse_peers(&self.peers)?;
        if !peers.contains_key(&self.id) {
            let ids: Vec<String> = peers.keys().map(|id| id.to_string()).collect();
            return Err(format!(
                "--id {} is not in --peers (members: {})",
                self.id,
                ids.join(", ")
            ));
        }
        let listen = self
            .listen
            .to_socket_addrs()
            .map_err(|e| format!("--listen {:?}: {e}", self.listen))?
            .next()
            .ok_or_else(|| format!("--listen {:?} resolves to no address", self.listen))?;
        if let Some(token) = &self.cluster_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "--cluster-token must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        let tls = match (self.security.tls_cert, self.security.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert,
                key,
                ca: self.security.tls_ca,
            }),
            (None, None) if self.security.tls_ca.is_some() => {
                return Err("--tls-ca needs --tls-cert and --tls-key".into())
            }
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        if tls.is_some() {
            if let Some((id, url)) = peers.iter().find(|(_, u)| u.scheme() != "https") {
                return Err(format!(
                    "with --tls-cert every node speaks HTTPS: --peers URL of node {id} ({url}) must be https://"
                ));
            }
        }
        check_data_dir(&self.data_dir)?;
        let timing = Timing {
            request_timeout: self.request_timeout,
            ..Timing::default()
        };
        Ok(Config {
            id: self.id,
            listen,
            data_dir: self.data_dir,
            peers,
            token: self.cluster_token,
            max_value_bytes: self.max_value_bytes,
            timing,
            peer_timeout: self.peer_timeout,
            body_timeout: Duration::from_secs(30),
            client_tokens: self.security.client_tokens,
            tls,
        })
    }
}

/// Creates the directory if needed and proves it writable.
fn check_data_dir(dir: &std::path::Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("--data-dir {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".paxos-kv-write-test");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn peers_parse_and_refuse_nonsense() {
        let p = parse_peers("1=http://a:7001, 2=http://b:7001/x").unwrap();
        assert_eq!(p[&1].as_str(), "http://a:7001/");
        assert_eq!(p[&2].as_str(), "http://b:7001/x/");
        assert!(parse_peers("").is_err());
        assert!(parse_peers("1=http://a,1=http://b").is_err());
        assert!(parse_peers("0=http://a").is_err());
        assert!(parse_peers("x=http://a").is_err());
        assert!(parse_peers("1=ftp://a").is_err());
        assert!(parse_peers("1").is_err());
    }
}
