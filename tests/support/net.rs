//! Loopback networking for the tests: free ports, an HTTP client, key
//! encoding, and polling with a deadline (never a sleep as synchronization).

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails. Long,
/// because the CI machine has two cores shared by many test binaries.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Ports [`free_port`] handed out in this process.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port on 127.0.0.1 that nothing listens on now, below the ephemeral
/// range, never handed out before by this process. A node keeps its port
/// across restarts, and outside the ephemeral range no outgoing connection
/// can take it while the node is down.
pub fn free_port() -> u16 {
    let high = ephemeral_low().clamp(12_000, 32_768);
    let low = high - 10_000;
    let mut seed = std::process::id() as u64;
    seed ^= std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = guard.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        // xorshift: any spread will do.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = low + (seed % u64::from(high - low)) as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Three consecutive free ports, outside the kernel's ephemeral range so
/// that client sockets do not take them meanwhile.
pub fn free_port_range(attempt: u32) -> u16 {
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(attempt.wrapping_mul(40_503))
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        );
    let mut base = 20_000 + (seed % 10_000) as u16;
    loop {
        let held: Vec<_> = (0..3)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == 3 {
            return base;
        }
        base = if base >= 29_990 { 20_000 } else { base + 3 };
    }
}

/// An HTTP client that ignores proxies from the environment and gives up
/// on a call after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("reqwest client")
}

/// Percent-encodes `key` for a `/v1/kv/` path, byte by byte: everything but
/// unreserved characters and `/` is escaped (written independently of the
/// crate's own encoder, so the tests check it rather than share its bugs).
pub fn key_path(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Calls `attempt` until it succeeds, pausing briefly between tries; panics
/// with the last error after [`PATIENCE`].
pub async fn poll<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: still failing after {PATIENCE:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
