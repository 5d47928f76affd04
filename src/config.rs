//! `serve` flags and their environment twins, validated into a [`Config`];
//! the node's [`Timing`] and connection [`Limits`], whose dependent
//! defaults derive from each other; and the typed [`ConfigError`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::paxos::NodeId;

mod error;
mod timing;

pub use error::{ConfigError, DurationError};
pub use timing::{Limits, Timing, TimingArgs};

/// The flags of `paxos-kv serve` (docs/api.md, "Command line").
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// This node's id; must appear in --peers (or be added with
    /// `paxos-kv members add` before a node started with --join).
    #[arg(long, env = "PAXOS_KV_ID")]
    pub id: u32,
    /// Address to listen on for clients and peers, e.g. 0.0.0.0:7001.
    #[arg(long, env = "PAXOS_KV_LISTEN")]
    pub listen: String,
    /// Directory of this node's sled database (created if missing).
    #[arg(long, env = "PAXOS_KV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Every member, this node included, as ID=URL,ID=URL,... (the same on every node).
    /// The initial membership: once the cluster stores its own, that one wins.
    #[arg(long, env = "PAXOS_KV_PEERS", required_unless_present = "join")]
    pub peers: Option<String>,
    /// A node added to a running cluster (`paxos-kv members add ID URL`):
    /// the URL of any member to learn the cluster and its members from.
    #[arg(long, env = "PAXOS_KV_JOIN", conflicts_with = "peers")]
    pub join: Option<String>,
    /// Shared secret that peer routes require (Authorization: Bearer T).
    #[arg(long, env = "PAXOS_KV_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Largest value a PUT may store, in bytes.
    #[arg(long, env = "PAXOS_KV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Request, peer-call and fast-path deadlines.
    #[command(flatten)]
    pub timing: TimingArgs,
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
    /// Every member's base URL (ending in `/`), this node included: from
    /// `--peers`, or learnt from `--join` (`src/join.rs`).
    pub peers: BTreeMap<NodeId, reqwest::Url>,
    /// `--join`: a member to learn the cluster from.
    pub join: Option<reqwest::Url>,
    /// The cluster token, if any.
    pub token: Option<String>,
    /// Largest value a PUT may store.
    pub max_value_bytes: usize,
    /// Request and peer-call deadlines, backoff, fast-path window.
    pub timing: Timing,
    /// What a client may take from the node's connection layer.
    pub limits: Limits,
    /// How long a client may take to send a body.
    pub body_timeout: Duration,
    /// The client token file, when client requests need a token.
    pub client_tokens: Option<PathBuf>,
    /// TLS files, when the node speaks HTTPS.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// Parses `5s`, `250ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| DurationError::NotADuration(text.to_owned()))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|source| DurationError::OutOfRange {
        text: text.to_owned(),
        source,
    })
}

/// Parses `ID=URL,ID=URL,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, reqwest::Url>, ConfigError> {
    let mut peers = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, url) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::PeerNotIdUrl(entry.to_owned()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ConfigError::PeerId(entry.to_owned()))?;
        let mut url = reqwest::Url::parse(url.trim()).map_err(|e| ConfigError::PeerUrl {
            entry: entry.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::PeerScheme(entry.to_owned()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if peers.insert(id, url).is_some() {
            return Err(ConfigError::PeerTwice(id));
        }
    }
    if peers.is_empty() {
        return Err(ConfigError::NoPeers);
    }
    Ok(peers)
}

impl ServeArgs {
    /// Validates every flag and their combinations; the error is one line
    /// for the user.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let join = self
            .join
            .as_deref()
            .map(|url| {
                reqwest::Url::parse(url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| ConfigError::Join(url.to_owned()))
            })
            .transpose()?;
        let peers = match &self.peers {
            Some(peers) => parse_peers(peers)?,
            None => BTreeMap::new(),
        };
        if join.is_none() && !peers.contains_key(&self.id) {
            let ids: Vec<String> = peers.keys().map(|id| id.to_string()).collect();
            return Err(ConfigError::NotAMember {
                id: self.id,
                members: ids.join(", "),
            });
        }
        let listen = self
            .listen
            .to_socket_addrs()
            .map_err(|source| ConfigError::Listen {
                listen: self.listen.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| ConfigError::ListenNowhere(self.listen.clone()))?;
        if let Some(token) = &self.cluster_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::ClusterToken);
            }
        }
        let tls = match (self.security.tls_cert, self.security.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert,
                key,
                ca: self.security.tls_ca,
            }),
            (None, None) if self.security.tls_ca.is_some() => return Err(ConfigError::TlsCaAlone),
            (None, None) => None,
            _ => return Err(ConfigError::TlsHalf),
        };
        if tls.is_some() {
            if let Some((id, url)) = peers.iter().find(|(_, u)| u.scheme() != "https") {
                return Err(ConfigError::PeerNotHttps {
                    id: *id,
                    url: url.to_string(),
                });
            }
        }
        let timing = self.timing.timing();
        let limits = Limits::default();
        timing.validate(&limits)?;
        check_data_dir(&self.data_dir)?;
        Ok(Config {
            id: self.id,
            listen,
            data_dir: self.data_dir,
            peers,
            join,
            token: self.cluster_token,
            max_value_bytes: self.max_value_bytes,
            timing,
            limits,
            body_timeout: Duration::from_secs(30),
            client_tokens: self.security.client_tokens,
            tls,
        })
    }
}

/// Creates the directory if needed and proves it writable.
fn check_data_dir(dir: &std::path::Path) -> Result<(), ConfigError> {
    let fail = |source: std::io::Error| ConfigError::DataDir {
        dir: dir.to_path_buf(),
        source,
    };
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
