//! Client tokens: who may read and who may write which keys (`docs/api.md`,
//! "Access control and TLS").
//!
//! `--client-tokens FILE` names tokens by the SHA-256 of their secret:
//!
//! ```json
//! {"tokens":[{"name":"deployer","sha256":"<64 hex digits>","read":["app/"],"write":["app/"]}]}
//! ```
//!
//! `read` and `write` are key prefixes; `""` is every key. With a file, every
//! `/v1/kv` request must carry `Authorization: Bearer <secret>`: a missing or
//! unknown secret is a 401 ([`AuthError::Missing`], [`AuthError::Unknown`]),
//! a known one without the right prefix a 403 ([`AuthError::Forbidden`]).
//! Without a file the client API is open.
//!
//! The node keeps only hashes. A presented secret is hashed and compared with
//! every token's hash in constant time, without stopping at a match, so the
//! time an answer takes says nothing about which bytes were right. Secrets
//! are never logged; names are (they are not secret).
//!
//! A token that may write a key but not read it still learns the chosen value
//! from a conflicting PUT (409 carries it): grant write where read is fine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// What a request wants to do with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// GET, list, wait, events.
    Read,
    /// PUT.
    Write,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Why a client request is refused: 401 for the first two, 403 for the last
/// (mapped in `api.rs`). The messages never contain the secret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this node requires a client token: Authorization: Bearer <token>")]
    Missing,
    /// A bearer token that matches no configured token.
    #[error("the client token is not known to this node")]
    Unknown,
    /// A known token without the prefix the request needs.
    #[error("token {name:?} may not {verb} {what:?}", verb = access.verb())]
    Forbidden {
        /// The token's name.
        name: String,
        /// What was asked.
        access: Access,
        /// The key or prefix (a list names the prefix).
        what: String,
    },
    /// A known token with no read prefix at all, asking for what shows
    /// keys (the console, its event stream).
    #[error("token {name:?} may read no key, so the console has nothing to show it")]
    ReadsNothing {
        /// The token's name.
        name: String,
    },
}

impl AuthError {
    /// Whether this is a 401 (the caller is not identified) rather than a
    /// 403 (identified, not allowed).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, AuthError::Missing | AuthError::Unknown)
    }
}

/// One token as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// One configured token: a name, the hash of its secret, its prefixes.
#[derive(Debug, Clone)]
pub struct Token {
    name: String,
    sha256: [u8; 32],
    read: Vec<String>,
    write: Vec<String>,
}

impl Token {
    /// The token's name (safe to log).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn prefixes(&self, access: Access) -> &[String] {
        match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        }
    }

    /// Whether this token may `access` `key`: one of its prefixes starts the key.
    pub fn may(&self, access: Access, key: &str) -> bool {
        self.prefixes(access).iter().any(|p| key.starts_with(p))
    }

    /// Whether this token may read every key that starts with `prefix`:
    /// one of its read prefixes is itself a prefix of `prefix`. A token that
    /// may read `app/` may list `app/` and `app/db/`, not `app` (which would
    /// include `apple`) nor `""`.
    pub fn may_read_all_of(&self, prefix: &str) -> bool {
        self.read.iter().any(|p| prefix.starts_with(p))
    }

    /// Whether this token may read at least one key.
    pub fn reads_anything(&self) -> bool {
        !self.read.is_empty()
    }
}

/// The tokens of one version of the file.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    tokens: Vec<Arc<Token>>,
}

impl TokenSet {
    /// Parses a token file. The error is one line that names the problem
    /// (and the token by name or position) but never quotes a value of the
    /// file: a secret pasted into the wrong field must not reach a log.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = serde_json::from_str(text).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                // Syntax messages never quote values.
                Category::Syntax | Category::Eof | Category::Io => e.to_string(),
                Category::Data => format!(
                    "a field is missing, unknown or of the wrong type at line {} column {}; \
                     expected {{\"tokens\":[{{\"name\":N,\"sha256\":HEX,\"read\":[PREFIX],\"write\":[PREFIX]}}]}}",
                    e.line(),
                    e.column()
                ),
            }
        })?;
        let mut tokens: Vec<Arc<Token>> = Vec::with_capacity(file.tokens.len());
        for (i, entry) in file.tokens.into_iter().enumerate() {
            if entry.name.is_empty() {
                return Err(format!("token #{} has an empty name", i + 1));
            }
            if tokens.iter().any(|t| t.name == entry.name) {
                return Err(format!("token name {:?} appears twice", entry.name));
            }
            let sha256 = parse_hex32(&entry.sha256).ok_or_else(|| {
                format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the secret, \
                     e.g. from `printf %s SECRET | sha256sum`)",
                    entry.name
                )
            })?;
            tokens.push(Arc::new(Token {
                name: entry.name,
                sha256,
                read: entry.read,
                write: entry.write,
            }));
        }
        Ok(TokenSet { tokens })
    }

    /// Reads and parses `path`; the error is one line naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--client-tokens {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--client-tokens {}: {e}", path.display()))
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The names of the tokens (safe to log).
    pub fn names(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.name()).collect()
    }

    /// Whether there is no token (every request is then refused with 401).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose hash is the SHA-256 of `secret`. Every token is
    /// compared, in constant time, whatever matches.
    pub fn find(&self, secret: &[u8]) -> Option<&Arc<Token>> {
        let presented: [u8; 32] = Sha256::digest(secret).into();
        let mut index = 0u32;
        let mut any = Choice::from(0);
        for (i, token) in self.tokens.iter().enumerate() {
            let hit = token.sha256.ct_eq(&presented);
            index.conditional_assign(&(i as u32), hit);
            any |= hit;
        }
        bool::from(any).then(|| &self.tokens[index as usize])
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `secret` in lowercase hex: what the token file stores.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who a request is, once its token is checked.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `--client-tokens`: everyone may do everything.
    Open,
    /// A configured token (shared with the token set, no copy per request).
    Token(Arc<Token>),
}

impl Caller {
    /// Ok when this caller may `access` `key`, else [`AuthError::Forbidden`].
    pub fn check_key(&self, access: Access, key: &str) -> Result<(), AuthError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Token(t) if t.may(access, key) => Ok(()),
            Caller::Token(t) => Err(AuthError::Forbidden {
                name: t.name.clone(),
                access,
                what: key.to_string(),
            }),
        }
    }

    /// Whether this caller may `access` `key` (a filter, not an error).
    pub fn may(&self, access: Access, key: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Token(t) => t.may(access, key),
        }
    }

    /// Whether this caller may read every key (no filter is needed).
    pub fn reads_everything(&self) -> bool {
        self.check_prefix("").is_ok()
    }

    /// Ok when this caller may read some key: what the console and its
    /// event stream ask (they then show only the keys it may read), else
    /// [`AuthError::ReadsNothing`].
    pub fn check_reads_something(&self) -> Result<(), AuthError> {
        match self {
            Caller::Token(t) if !t.reads_anything() => Err(AuthError::ReadsNothing {
                name: t.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Ok when this caller may read every key under `prefix` (a list, or an
    /// event stream of those keys); see [`Token::may_read_all_of`].
    pub fn check_prefix(&self, prefix: &str) -> Result<(), AuthError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Token(t) if t.may_read_all_of(prefix) => Ok(()),
            Caller::Token(t) => Err(AuthError::Forbidden {
                name: t.name.clone(),
                access: Access::Read,
                what: prefix.to_string(),
            }),
        }
    }
}

/// The client-token check of one node: open, or a token set read from a
/// file and replaceable at run time ([`ClientAuth::reload`], on SIGHUP).
#[derive(Debug, Default)]
pub struct ClientAuth {
    file: Option<PathBuf>,
    tokens: RwLock<Arc<TokenSet>>,
}

impl ClientAuth {
    /// No tokens: the client API is open.
    pub fn open() -> Self {
        ClientAuth::default()
    }

    /// Tokens from `path`; fails (one line) when the file is unusable.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let tokens = TokenSet::load(path)?;
        Ok(ClientAuth {
            file: Some(path.to_path_buf()),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// The token file, when tokens are required.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Whether requests need a token.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// The tokens in force now.
    pub fn tokens(&self) -> Arc<TokenSet> {
        self.tokens.read().expect("poisoned").clone()
    }

    /// Reads the file again. On success the new tokens replace the old ones
    /// for every later request and their count is returned; on failure the
    /// old tokens stay and the error says why (without quoting the file).
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let tokens = TokenSet::load(path)?;
        let n = tokens.len();
        *self.tokens.write().expect("poisoned") = Arc::new(tokens);
        Ok(n)
    }

    /// Identifies the caller from `Authorization: Bearer <secret>`: 401
    /// errors when tokens are required and the header is missing or unknown.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.identify_with(headers, None)
    }

    /// [`ClientAuth::identify`], also accepting the secret from a query
    /// parameter (`?token=`) when no `Authorization` header carries one:
    /// only for the console page and its event stream, which a browser
    /// opens without headers (`EventSource`). The header wins when both
    /// are present; an empty parameter counts as none.
    pub fn identify_with(
        &self,
        headers: &HeaderMap,
        query_secret: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if !self.is_enabled() {
            return Ok(Caller::Open);
        }
        let from_query = query_secret
            .map(|s| s.trim().as_bytes())
            .filter(|s| !s.is_empty());
        let secret = bearer(headers).or(from_query).ok_or(AuthError::Missing)?;
        self.tokens()
            .find(secret)
            .cloned()
            .map(Caller::Token)
            .ok_or(AuthError::Unknown)
    }

    /// The whole check for a request on one key (GET, PUT, wait).
    pub fn authorize_key(
        &self,
        headers: &HeaderMap,
        access: Access,
        key: &str,
    ) -> Result<Caller, AuthError> {
        let caller = self.identify(headers)?;
        caller.check_key(access, key)?;
        Ok(caller)
    }

    /// The whole check for reading every key under `prefix`: a list
    /// (`?keys`, `?recurse`).
    pub fn authorize_prefix(&self, headers: &HeaderMap, prefix: &str) -> Result<Caller, AuthError> {
        let caller = self.identify(headers)?;
        caller.check_prefix(prefix)?;
        Ok(caller)
    }
}

/// Says at start whether the client API is open or which tokens guard it
/// (names and count, never secrets), and with a token file, re-reads it on
/// every SIGHUP from then on: the returned task logs each reload's outcome
/// and runs until aborted. Fails only if the signal cannot be watched.
pub fn announce_and_reload_on_sighup(
    auth: Arc<ClientAuth>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(file) = auth.file() else {
        tracing::warn!(
            "no --client-tokens: the client API /v1/kv is open to anyone who can reach this port"
        );
        return Ok(None);
    };
    let tokens = auth.tokens();
    tracing::info!(
        file = %file.display(),
        tokens = tokens.len(),
        names = ?tokens.names(),
        "client tokens required on /v1/kv; SIGHUP re-reads the file"
    );
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Registered now, before the node serves, so no SIGHUP sent after
        // that can kill the process.
        let mut hangups = signal(SignalKind::hangup())
            .map_err(|e| format!("cannot watch SIGHUP for --client-tokens: {e}"))?;
        Ok(Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match auth.reload() {
                    Ok(n) => tracing::info!(
                        tokens = n,
                        names = ?auth.tokens().names(),
                        "SIGHUP: client tokens reloaded"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        tokens = auth.tokens().len(),
                        "SIGHUP: client tokens NOT reloaded; the previous tokens stay in force"
                    ),
                }
            }
        })))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// The secret of an `Authorization: Bearer <secret>` header (scheme
/// case-insensitive, RFC 6750).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = (value.get(..7)?, &value[7..]);
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = rest.trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn file(entries: &str) -> TokenSet {
        TokenSet::parse(&format!("{{\"tokens\":[{entries}]}}")).unwrap()
    }

    fn with_bearer(secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
        );
        h
    }

    #[test]
    fn finds_the_token_of_a_secret_and_only_it() {
        let set = file(&format!(
            r#"{{"name":"a","sha256":"{}","read":[""]}},{{"name":"b","sha256":"{}","write":["x/"]}}"#,
            hash_secret("alpha"),
            hash_secret("beta").to_uppercase()
        ));
        assert_eq!(set.find(b"alpha").map(|t| t.name()), Some("a"));
        assert_eq!(set.find(b"beta").map(|t| t.name()), Some("b"));
        assert!(set.find(b"gamma").is_none());
        assert!(set.find(b"").is_none());
    }

    #[test]
    fn prefixes_are_bytewise_and_list_needs_the_whole_prefix() {
        let set = file(&format!(
            r#"{{"name":"app","sha256":"{}","read":["app/"],"write":["app/db/"]}}"#,
            hash_secret("s")
        ));
        let t = set.find(b"s").unwrap();
        assert!(t.may(Access::Read, "app/x"));
        assert!(!t.may(Access::Read, "app"));
        assert!(!t.may(Access::Read, "apple"));
        assert!(t.may(Access::Write, "app/db/url"));
        assert!(!t.may(Access::Write, "app/x"));
        assert!(t.may_read_all_of("app/"));
        assert!(t.may_read_all_of("app/db"));
        assert!(!t.may_read_all_of("app"));
        assert!(!t.may_read_all_of(""));
    }

    #[test]
    fn bad_files_are_one_line_and_never_quote_values() {
        let secret = "hunter2-very-secret";
        for text in [
            format!(r#"{{"tokens":[{{"name":"a","sha256":"{secret}"}}]}}"#),
            format!(r#"{{"tokens":[{{"name":"a","sha256":"{secret}","read":"{secret}"}}]}}"#),
            format!(r#"{{"tokens":[{{"name":"a","secret":"{secret}"}}]}}"#),
            format!(r#"{{"tokens":[{{"name":{secret:?}}}"#),
        ] {
            let err = TokenSet::parse(&text).unwrap_err();
            assert!(!err.contains(secret), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let dup = format!(
            r#"{{"tokens":[{{"name":"a","sha256":"{h}"}},{{"name":"a","sha256":"{h}"}}]}}"#,
            h = hash_secret("x")
        );
        assert!(TokenSet::parse(&dup).unwrap_err().contains("twice"));
    }

    #[test]
    fn identify_gives_401_then_403() {
        let auth = ClientAuth {
            file: Some(PathBuf::from("unused")),
            tokens: RwLock::new(Arc::new(file(&format!(
                r#"{{"name":"r","sha256":"{}","read":["app/"]}}"#,
                hash_secret("s")
            )))),
        };
        assert_eq!(
            auth.identify(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.identify(&with_bearer("nope")).unwrap_err(),
            AuthError::Unknown
        );
        let mut lower = HeaderMap::new();
        lower.insert(AUTHORIZATION, HeaderValue::from_static("bearer s"));
        assert!(auth.authorize_key(&lower, Access::Read, "app/1").is_ok());
        let err = auth
            .authorize_key(&with_bearer("s"), Access::Write, "app/1")
            .unwrap_err();
        assert!(!err.is_unauthenticated());
        assert!(ClientAuth::open()
            .authorize_key(&HeaderMap::new(), Access::Write, "k")
            .is_ok());
    }

    #[test]
    fn the_console_takes_a_query_token_and_filters_by_read_prefixes() {
        let auth = ClientAuth {
            file: Some(PathBuf::from("unused")),
            tokens: RwLock::new(Arc::new(file(&format!(
                r#"{{"name":"r","sha256":"{}","read":["app/"]}},{{"name":"w","sha256":"{}","write":["app/"]}},{{"name":"all","sha256":"{}","read":[""]}}"#,
                hash_secret("s"),
                hash_secret("w"),
                hash_secret("a")
            )))),
        };
        let none = HeaderMap::new();
        assert_eq!(
            auth.identify_with(&none, None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.identify_with(&none, Some(" ")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.identify_with(&none, Some("nope")).unwrap_err(),
            AuthError::Unknown
        );
        // The header wins over the query.
        assert_eq!(
            auth.identify_with(&with_bearer("nope"), Some("s"))
                .unwrap_err(),
            AuthError::Unknown
        );
        let reader = auth.identify_with(&none, Some("s")).unwrap();
        assert!(reader.check_reads_something().is_ok());
        assert!(reader.may(Access::Read, "app/x"));
        assert!(!reader.may(Access::Read, "other"));
        assert!(!reader.reads_everything());
        let writer = auth.identify_with(&none, Some("w")).unwrap();
        let err = writer.check_reads_something().unwrap_err();
        assert!(!err.is_unauthenticated());
        assert!(auth
            .identify_with(&none, Some("a"))
            .unwrap()
            .reads_everything());
        assert!(Caller::Open.reads_everything());
    }
}
