//! Client tokens and TLS with real `paxos-kv serve` processes (`docs/api.md`,
//! "Access control and TLS").
//!
//! What each test shows:
//! - every 401 and 403 path of client tokens, prefix edges (`app` vs `app/`),
//!   routes that stay open, and peer routes that keep the cluster token;
//! - SIGHUP re-reads the token file, a bad file keeps the old tokens, a bad
//!   file at start is one line and exit non-zero, and no secret ever reaches
//!   a node's log;
//! - a 3-node cluster over HTTPS with the peer CA enforced serves PUT and
//!   GET to the CLI given `--ca`, refuses peer calls without a client
//!   certificate, and answers plain HTTP with a clean 400;
//! - a node whose certificate comes from another CA is refused by its peers;
//! - the console of a TLS node relays its peers' events over mutual TLS,
//!   and its peer-side routes want a client certificate like every peer
//!   route (issue 12).
//!
//! Certificates are made in the test with rcgen. Every wait polls with a
//! 60 s deadline.

mod support;

use support::net::{poll, PATIENCE};
use support::procs;
use support::sse::EventReader;

use std::path::{Path, PathBuf};
use std::time::Duration;

use procs::{Cluster, ONE_CLUSTER_AT_A_TIME, TOKEN};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sha256_hex(secret: &str) -> String {
    paxos_kv::auth::hash_secret(secret)
}

// ---------------------------------------------------------------- tokens

const ADMIN: &str = "admin-secret-5f1c9a";
const APP: &str = "app-secret-8d2e47";
const PREFIX_NO_SLASH: &str = "bare-app-secret-31b0";
const WRITE_ONLY: &str = "write-only-secret-c7a2";
const UNKNOWN: &str = "never-configured-secret-e19d";

fn tokens_json(entries: &[(&str, &str, &[&str], &[&str])]) -> String {
    let tokens: Vec<_> = entries
        .iter()
        .map(|(name, secret, read, write)| {
            serde_json::json!({
                "name": name, "sha256": sha256_hex(secret), "read": read, "write": write,
            })
        })
        .collect();
    serde_json::json!({ "tokens": tokens }).to_string()
}

fn standard_tokens() -> String {
    tokens_json(&[
        ("admin", ADMIN, &[""], &[""]),
        ("app", APP, &["app/"], &["app/"]),
        ("bare", PREFIX_NO_SLASH, &["app"], &[]),
        ("writer", WRITE_ONLY, &[], &["app/"]),
    ])
}

/// A one-node cluster (a majority of one) with `--client-tokens FILE`.
async fn token_node(tokens: &str) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::new(1, |_, ports| procs::peers_string(ports));
    let file = cluster.path().join("tokens.json");
    std::fs::write(&file, tokens).expect("write tokens");
    cluster
        .node(1)
        .config
        .extra
        .extend(["--client-tokens".to_string(), file.display().to_string()]);
    cluster.start_all().await;
    (cluster, file)
}

struct Answer {
    status: u16,
    body: String,
    www_authenticate: Option<String>,
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    body: &'static str,
) -> Answer {
    let mut request = client.request(method, &url).body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let body = response.text().await.unwrap_or_default();
    Answer {
        status,
        body,
        www_authenticate,
    }
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// Client tokens: 401 without or with an unknown token (before the key is
/// even judged), 403 for a known token outside its prefixes, prefixes
/// compared bytewise (`app` covers `apple`, `app/` does not cover `app`),
/// read and write separate; health, status and metrics stay open; peer
/// routes still need the cluster token, not a client token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_guard_every_kv_request() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (cluster, _file) = token_node(&standard_tokens()).await;
    let base = cluster.url(1);
    let c = procs::client(Duration::from_secs(30));
    let kv = |key: &str| format!("{base}/v1/kv/{key}");
    use reqwest::Method as M;

    // 401: no header, an unknown secret, another scheme, an empty bearer.
    for (method, url) in [
        (M::PUT, kv("app/a")),
        (M::GET, kv("app/a")),
        (M::GET, format!("{base}/v1/kv/")),
        (M::GET, format!("{base}/v1/kv")),
        (M::GET, kv("%00bad")),
    ] {
        for auth in [
            None,
            Some(bearer(UNKNOWN)),
            Some(format!("Basic {ADMIN}")),
            Some("Bearer ".to_string()),
            Some(ADMIN.to_string()),
        ] {
            let a = call(&c, method.clone(), url.clone(), auth.as_deref(), "v").await;
            assert_eq!(a.status, 401, "{method} {url} with {auth:?}: {}", a.body);
            assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"), "{url}");
            let e: serde_json::Value = serde_json::from_str(&a.body).expect("JSON error");
            assert!(
                e["error"].as_str().is_some_and(|m| m.contains("token")),
                "{e}"
            );
        }
    }

    // Known tokens: what each may and may not do.
    let cases: &[(&str, M, &str, u16)] = &[
        (APP, M::PUT, "app/a", 201),
        (APP, M::PUT, "app/a", 200),
        (APP, M::GET, "app/a", 200),
        (APP, M::GET, "app/missing", 404),
        // `app/` does not cover `app`, `apple`, or `ap`.
        (APP, M::PUT, "app", 403),
        (APP, M::PUT, "apple", 403),
        (APP, M::GET, "apple", 403),
        (APP, M::GET, "ap", 403),
        (APP, M::GET, "other/x", 403),
        // `app` (no slash) covers `app`, `apple` and `app/...`, read only.
        (PREFIX_NO_SLASH, M::GET, "apple", 404),
        (PREFIX_NO_SLASH, M::GET, "app", 404),
        (PREFIX_NO_SLASH, M::GET, "app/a", 200),
        (PREFIX_NO_SLASH, M::GET, "ap", 403),
        (PREFIX_NO_SLASH, M::PUT, "apple", 403),
        // Write without read.
        (WRITE_ONLY, M::PUT, "app/w", 201),
        (WRITE_ONLY, M::GET, "app/w", 403),
        (WRITE_ONLY, M::GET, "app/a", 403),
        (WRITE_ONLY, M::PUT, "apple", 403),
        // `""` is every key.
        (ADMIN, M::PUT, "zzz/any", 201),
        (ADMIN, M::GET, "app/w", 200),
        (ADMIN, M::GET, "apple", 404),
        // A known token with a bad key: the key's 400, not a 403.
        (ADMIN, M::GET, "%00bad", 400),
        (APP, M::PUT, "%00bad", 400),
    ];
    for (secret, method, key, want) in cases {
        let a = call(&c, method.clone(), kv(key), Some(&bearer(secret)), "v").await;
        assert_eq!(a.status, *want, "{method} {key} as {secret}: {}", a.body);
        if *want == 403 {
            let e: serde_json::Value = serde_json::from_str(&a.body).expect("JSON error");
            let m = e["error"].as_str().unwrap_or_default();
            assert!(m.contains("may not"), "{m}");
            assert!(!m.contains(secret), "the secret in an answer: {m}");
        }
    }
    // The scheme is case-insensitive (RFC 6750).
    let a = call(&c, M::GET, kv("app/a"), Some(&format!("bearer {APP}")), "").await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Open routes.
    for path in ["/health", "/metrics", "/v1/status"] {
        let a = call(&c, M::GET, format!("{base}{path}"), None, "").await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    // Peer routes keep the cluster token: a client token is not enough.
    let peer = format!("{base}/v1/paxos/batch");
    let a = call(&c, M::POST, peer.clone(), Some(&bearer(ADMIN)), "{}").await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(&c, M::POST, peer, Some(&bearer(TOKEN)), "{}").await;
    assert_eq!(a.status, 400, "the cluster token passes: {}", a.body);

    // The CLI sends --token (and PAXOS_KV_TOKEN); exit 2 on 401/403.
    let (code, _, err) = cli(&["get", "--url", &base, "app/a"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = cli(&["get", "--url", &base, "--token", APP, "app/a"], &[]).await;
    assert_eq!((code, out.as_str()), (0, "v"), "{err}");
    let (code, _, err) = cli(
        &["put", "--url", &base, "app/b", "x"],
        &[("PAXOS_KV_TOKEN", APP)],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &["put", "--url", &base, "apple", "x"],
        &[("PAXOS_KV_TOKEN", APP)],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("403"), "{err}");

    let log = cluster.nodes[0].log_tail(1 << 24);
    assert!(log.contains("client tokens required"), "{log}");
    assert_no_secret(&log);
}

fn assert_no_secret(log: &str) {
    for secret in [ADMIN, APP, PREFIX_NO_SLASH, WRITE_ONLY, UNKNOWN] {
        assert!(
            !log.contains(secret),
            "secret {secret:?} in the log:\n{log}"
        );
    }
}

/// Runs the `paxos-kv` binary with `args`; (exit code, stdout, stderr).
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paxos-kv"));
    command
        .args(args)
        .env_remove("PAXOS_KV_TOKEN")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the CLI finishes within 60 s")
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn sighup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP {pid}");
}

/// SIGHUP re-reads the token file: a new token works and a removed one is
/// refused; a broken file keeps the tokens in force and says so in the log;
/// a broken file at start is one line and exit non-zero before binding. No
/// secret, known or unknown, reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tokens_and_a_bad_file_keeps_the_old_ones() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (mut cluster, file) = token_node(&tokens_json(&[("admin", ADMIN, &[""], &[""])])).await;
    let base = cluster.url(1);
    let c = procs::client(Duration::from_secs(30));
    let url = format!("{base}/v1/kv/k");
    let status = |secret: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.get(&url)
                .header("authorization", bearer(secret))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(status(ADMIN).await, Ok(404));
    assert_eq!(status(APP).await, Ok(401));

    // Swap admin for app.
    std::fs::write(&file, tokens_json(&[("app", APP, &[""], &[])])).unwrap();
    let pid = cluster.node(1).pid().expect("running");
    sighup(pid);
    poll("the new token is accepted", || async {
        match status(APP).await? {
            404 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    assert_eq!(
        status(ADMIN).await,
        Ok(401),
        "the removed token still works"
    );

    // A broken file (with a secret pasted where the hash goes) changes nothing.
    std::fs::write(
        &file,
        format!(r#"{{"tokens":[{{"name":"oops","sha256":"{UNKNOWN}"}}]}}"#),
    )
    .unwrap();
    sighup(pid);
    let node = &cluster.nodes[0];
    poll("the failed reload is logged", || async {
        let log = node.log_tail(1 << 24);
        if log.contains("NOT reloaded") {
            Ok(())
        } else {
            Err("no reload failure in the log yet".to_string())
        }
    })
    .await;
    assert_eq!(status(APP).await, Ok(404), "the old tokens stay in force");
    // Still alive and serving after two SIGHUPs.
    assert!(cluster.node(1).pid().is_some());

    let log = cluster.nodes[0].log_tail(1 << 24);
    assert!(log.contains("SIGHUP: client tokens reloaded"), "{log}");
    assert_no_secret(&log);

    // At start, a bad file is one line and a non-zero exit.
    let bad = cluster.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(r#"{{"tokens":[{{"name":"x","sha256":"{ADMIN}"}}]}}"#),
    )
    .unwrap();
    let data = cluster.path().join("other");
    let port = procs::free_port();
    let listen = format!("127.0.0.1:{port}");
    let peers = format!("1=http://{listen}");
    let args = [
        "serve",
        "--id",
        "1",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
        "--peers",
        &peers,
        "--client-tokens",
        bad.to_str().unwrap(),
    ];
    let (code, _, err) = cli(&args, &[]).await;
    assert_ne!(code, 0, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--client-tokens") && err.contains("sha256"),
        "{err}"
    );
    assert!(!err.contains(ADMIN), "{err}");
    let missing = cluster.path().join("missing.json").display().to_string();
    let mut args = args;
    args[10] = &missing;
    let (code, _, err) = cli(&args, &[]).await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("missing.json"), "{err}");
}

// ---------------------------------------------------------------- TLS

/// TLS configuration problems stop `serve` before it binds, with one line
/// naming the flag: a missing file, a certificate without its key, a key that
/// is not a key, and `http://` peers on a node that speaks only HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_configuration_errors_are_one_line_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("start-error CA");
    let (cert, key) = ca.write_node(dir.path(), "n1");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").unwrap();
    let port = procs::free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let (cert, key, garbage) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        garbage.to_str().unwrap(),
    );
    let https = format!("1=https://{listen}");
    let http = format!("1=http://{listen}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--peers", &https, "--tls-cert", cert], "--tls-key"),
        (
            vec![
                "--peers",
                &https,
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                key,
            ],
            "--tls-cert",
        ),
        (
            vec!["--peers", &https, "--tls-cert", cert, "--tls-key", garbage],
            "--tls-key",
        ),
        (
            vec!["--peers", &https, "--tls-cert", garbage, "--tls-key", key],
            "--tls-cert",
        ),
        (
            vec![
                "--peers",
                &https,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-ca",
                garbage,
            ],
            "--tls-ca",
        ),
        (
            vec!["--peers", &http, "--tls-cert", cert, "--tls-key", key],
            "https://",
        ),
    ];
    for (flags, names) in cases {
        let mut args = vec!["serve", "--id", "1", "--listen", &listen, "--data-dir"];
        args.push(data.to_str().unwrap());
        args.extend(flags.iter().copied());
        let (code, _, err) = cli(&args, &[]).await;
        assert_ne!(code, 0, "{flags:?} started: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{flags:?}: not one line: {err}"
        );
        assert!(err.contains(names), "{flags:?}: {err}");
    }
}

/// A CA made with rcgen, and node certificates it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).expect("write CA");
    }

    /// A certificate for 127.0.0.1 and localhost, usable as server and
    /// client certificate: (cert PEM, key PEM).
    fn node_cert(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a node certificate and key under `dir`; their paths.
    fn write_node(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.node_cert(name);
        let (cp, kp) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cp, cert).unwrap();
        std::fs::write(&kp, key).unwrap();
        (cp, kp)
    }
}

fn https_peers(ports: &[(u32, u16)]) -> String {
    ports
        .iter()
        .map(|(id, port)| format!("{id}=https://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn https_url(cluster: &mut Cluster, id: u32) -> String {
    format!("https://127.0.0.1:{}", cluster.node(id).config.port)
}

fn tls_flags(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-ca",
        ca.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A client that trusts `ca` (and only public roots besides).
fn https_client(ca: &Path, identity: Option<(&str, &str)>) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    if let Some((cert, key)) = identity {
        let both = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(both.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Three TLS nodes with `--tls-ca` (node certificates from `ca`), started;
/// waits until each answers `/health` over HTTPS.
async fn tls_cluster(ca: &Ca) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::new(3, |_, ports| https_peers(ports));
    let dir = cluster.path().to_path_buf();
    let ca_path = dir.join("ca.pem");
    ca.write_ca(&ca_path);
    for id in 1..=3 {
        let (cert, key) = ca.write_node(&dir, &format!("node{id}"));
        cluster
            .node(id)
            .config
            .extra
            .extend(tls_flags(&cert, &key, &ca_path));
        cluster.node(id).spawn();
    }
    let client = https_client(&ca_path, None);
    for id in 1..=3 {
        wait_https(&mut cluster, &client, id).await;
    }
    (cluster, ca_path)
}

async fn wait_https(cluster: &mut Cluster, client: &reqwest::Client, id: u32) {
    // `/ready`: the node serves (a cluster forms only once every member has
    // answered, so a test must not replace a member before that).
    let url = format!("{}/ready", https_url(cluster, id));
    let node = &cluster.nodes[(id - 1) as usize];
    poll(&format!("node {id} answers /ready over HTTPS"), || async {
        if !node.is_up() {
            return Err("not running".into());
        }
        let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
}

/// A 3-node cluster over HTTPS with the peer CA enforced: the CLI with
/// `--ca` writes on one node and reads on another (the read is a quorum read
/// over mutual TLS between the nodes); without `--ca` it fails on the
/// unknown issuer; peer routes refuse a caller without a client certificate
/// even with the cluster token; plain HTTP gets a clean 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_with_peer_ca_serves_put_and_get_over_https() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let ca = Ca::new("paxos-kv test CA");
    let (mut cluster, ca_path) = tls_cluster(&ca).await;
    let ca_arg = ca_path.to_str().unwrap().to_string();
    let (u1, u2, u3) = (
        https_url(&mut cluster, 1),
        https_url(&mut cluster, 2),
        https_url(&mut cluster, 3),
    );

    // PUT on node 1 with the CLI, GET on nodes 2 and 3.
    let (code, out, err) = cli(
        &["put", "--url", &u1, "--ca", &ca_arg, "tls/k", "secure"],
        &[],
    )
    .await;
    assert_eq!(
        code,
        0,
        "put over HTTPS: {out}{err}\n{}",
        cluster.logs(4000)
    );
    for url in [&u2, &u3] {
        let (code, out, err) = cli(&["get", "--url", url, "--ca", &ca_arg, "tls/k"], &[]).await;
        assert_eq!((code, out.as_str()), (0, "secure"), "get from {url}: {err}");
    }
    // The read on a node that did not coordinate the PUT asked its peers.
    let client = https_client(&ca_path, None);
    let text = client
        .get(format!("{u2}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let peer_calls: u64 = text
        .lines()
        .filter(|l| l.starts_with("paxos_kv_peer_call_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(peer_calls > 0, "no peer call over TLS recorded:\n{text}");

    // Without --ca the CLI does not trust the node.
    let (code, _, err) = cli(&["get", "--url", &u1, "tls/k"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Peer routes: no client certificate → 403 even with the cluster token;
    // a certificate of the cluster CA passes to the message check.
    let no_cert = client
        .post(format!("{u1}/v1/paxos/batch"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_cert.status(), 403);
    let body = no_cert.text().await.unwrap();
    assert!(body.contains("client certificate"), "{body}");
    let (cert, key) = ca.node_cert("operator");
    let with_cert = https_client(&ca_path, Some((&cert, &key)));
    let r = with_cert
        .post(format!("{u1}/v1/paxos/batch"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a verified peer certificate passes the TLS check"
    );
    let r = with_cert
        .post(format!("{u1}/v1/paxos/batch"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "and the cluster token is still required");
    // Client routes need no certificate.
    let r = client
        .get(format!("{u3}/v1/kv/tls/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Plain HTTP to the TLS port: a short JSON 400, then the node closes.
    let port = cluster.node(1).config.port;
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    raw.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, raw.read_to_end(&mut answer))
        .await
        .expect("the node closes the plain connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains("speaks HTTPS"), "{answer}");
    let plain = procs::client(Duration::from_secs(30));
    let r = plain
        .get(format!("http://127.0.0.1:{port}/v1/kv/tls/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The node is unharmed.
    let r = client
        .get(format!("{u1}/v1/kv/tls/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The nodes said at start that the client API is open (no tokens).
    let log = cluster.nodes[0].log_tail(1 << 24);
    assert!(log.contains("client API /v1/kv is open"), "{log}");
}

/// A node whose certificate comes from another CA cannot take part: its
/// peers refuse its client certificate (and it theirs), so it alone is no
/// majority and its PUT is a 503, while the other two keep serving. A
/// client presenting that certificate to a peer route is refused at the
/// handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_of_another_ca_is_refused() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let ca = Ca::new("paxos-kv test CA");
    let (mut cluster, ca_path) = tls_cluster(&ca).await;
    let client = https_client(&ca_path, None);
    let (u1, u3) = (https_url(&mut cluster, 1), https_url(&mut cluster, 3));

    // A client certificate of another CA, at the TLS level.
    let other = Ca::new("some other CA");
    let (cert, key) = other.node_cert("intruder");
    let intruder = https_client(&ca_path, Some((&cert, &key)));
    let refused = intruder
        .post(format!("{u1}/v1/paxos/batch"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a foreign client certificate was accepted: {refused:?}"
    );

    // Node 3 comes back with a certificate of the other CA (it still trusts
    // the cluster CA, so it can check its peers; they refuse it).
    cluster.node(3).kill();
    let dir = cluster.path().to_path_buf();
    let (fcert, fkey) = other.write_node(&dir, "node3-foreign");
    let extra = &mut cluster.node(3).config.extra;
    extra.truncate(extra.len() - 6);
    extra.extend(tls_flags(&fcert, &fkey, &ca_path));
    cluster.node(3).spawn();
    let other_ca = dir.join("other-ca.pem");
    other.write_ca(&other_ca);
    let foreign_client = https_client(&other_ca, None);
    wait_https(&mut cluster, &foreign_client, 3).await;

    let r = foreign_client
        .put(format!("{u3}/v1/kv/foreign/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "node 3 found a majority with a foreign certificate:\n{}",
        cluster.logs(4000)
    );
    // Nodes 1 and 2 are a majority on their own. A 503 means "outcome
    // unknown, retry the same value" (docs/api.md): the first try can meet
    // node 3's last answers still counted as fresh; a retry must succeed.
    let status = poll("nodes 1 and 2 choose w without node 3", || async {
        let r = client
            .put(format!("{u1}/v1/kv/foreign/k"))
            .body("w")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            code @ (200 | 201) => Ok(code),
            503 => Err(format!("503: {}", r.text().await.unwrap_or_default())),
            other => panic!(
                "PUT through node 1: {other} {}",
                r.text().await.unwrap_or_default()
            ),
        }
    })
    .await;
    assert!(status == 201 || status == 200, "{status}");
    let r = client
        .get(format!("{u1}/v1/kv/foreign/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "w");
    // The others' logs say why they cannot reach node 3.
    let node1 = &cluster.nodes[0];
    poll("node 1 logs why calls to node 3 fail", || async {
        let log = node1.log_tail(1 << 20);
        if log.contains("calls to this peer fail") && log.contains("UnknownIssuer") {
            Ok(())
        } else {
            Err("no TLS reason in node 1's log yet".to_string())
        }
    })
    .await;
    // Node 3 counted its refused peer calls.
    let text = foreign_client
        .get(format!("{u3}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("paxos_kv_peer_errors_total ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    assert!(errors > 0, "node 3 saw no failed peer call:\n{text}");
}

/// Issue 12 over TLS: the console of node 2 relays nodes 1 and 3 over
/// mutual TLS (its peer client trusts the cluster CA and presents node 2's
/// certificate; a plain client would trust neither), and its acceptor view
/// asks them the same way; the peer side of both refuses a caller without
/// a client certificate, even with the cluster token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_nodes_console_relays_its_peers_over_mutual_tls() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let ca = Ca::new("paxos-kv test CA");
    let (mut cluster, ca_path) = tls_cluster(&ca).await;
    let client = https_client(&ca_path, None);
    let (u1, u2) = (https_url(&mut cluster, 1), https_url(&mut cluster, 2));

    // A stream lives as long as it is read: no whole-request timeout.
    let streaming = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let mut stream = EventReader::new(
        streaming
            .get(format!("{u2}/v1/events"))
            .send()
            .await
            .unwrap(),
    );
    stream
        .until("relays of 1 and 3 up", |seen| {
            [1, 3].iter().all(|n| {
                seen.iter()
                    .any(|m| m["kind"] == "relay" && m["node"] == *n && m["up"] == true)
            })
        })
        .await;

    // A 503 is "outcome unknown, retry the same value" (docs/api.md).
    poll("PUT tls/watched through node 1", || async {
        let r = client
            .put(format!("{u1}/v1/kv/tls/watched"))
            .body("seen")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200 | 201 => Ok(()),
            s => Err(format!("{s}")),
        }
    })
    .await;
    stream
        .until("the votes of nodes 1 and 3, relayed", |seen| {
            [1, 3].iter().all(|n| {
                seen.iter().any(|m| {
                    m["key"] == "tls/watched"
                        && m["node"] == *n
                        && m["role"] == "acceptor"
                        && m["kind"] == "accepted"
                })
            })
        })
        .await;
    drop(stream);

    let state: serde_json::Value = client
        .get(format!("{u2}/v1/console/acceptors?key=tls/watched"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for a in state["acceptors"].as_array().unwrap() {
        assert!(a["error"].is_null(), "{state}");
        assert!(a["promised"].is_string(), "{state}");
    }

    // The peer side: a verified client certificate and the cluster token.
    let (cert, key) = ca.node_cert("operator");
    let with_cert = https_client(&ca_path, Some((&cert, &key)));
    for path in [
        "/v1/events?scope=local",
        "/v1/console/acceptor?key=tls/watched",
    ] {
        let r = client
            .get(format!("{u1}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} without a client certificate");
        assert!(r.text().await.unwrap().contains("client certificate"));
        let r = with_cert.get(format!("{u1}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the cluster token");
        let r = with_cert
            .get(format!("{u1}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with both");
    }
}
