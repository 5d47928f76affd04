//! One storage suite, written once over `paxos_kv::storage::Storage` and run
//! against both implementations: `SledStorage` (real sled in a temp dir) and
//! `MemoryStorage` (the in-memory twin the simulations rely on). Plus the
//! sled-only checks of docs/design.md invariants 1 (no unsynced blob files) and 7
//! (a data directory of another format version is refused).
//!
//! Each suite function says which contract of `src/storage/mod.rs` or which
//! invariant it checks; the `suite!` macro at the bottom instantiates every
//! function once per backend (`sled::name` and `memory::name`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use support::tmpfs::Tmpfs;

use bytes::Bytes;
use paxos_kv::paxos::{Accepted, Ballot};
use paxos_kv::storage::{MemoryStorage, SledStorage, State, Storage, StorageError};
use paxos_kv::value::Value;
use tempfile::TempDir;

/// How a suite function gets a store of one kind, and the same store again
/// after a "restart".
trait Backend {
    type S: Storage;
    fn new() -> Self;
    /// A handle on this backend's data. Dropping it and calling `open` again
    /// is a restart: what was stored must still be there.
    fn open(&self) -> Self::S;
}

/// Real sled in a fresh temporary directory, removed at the end.
struct SledBackend {
    dir: TempDir,
}

impl Backend for SledBackend {
    type S = SledStorage;
    fn new() -> Self {
        SledBackend {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    /// Retries for a while: the previous handle's last sled thread may
    /// still hold the directory's lock for a moment after it was dropped
    /// (a new process, as in production, never sees that).
    fn open(&self) -> SledStorage {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match SledStorage::open(self.dir.path()) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("reopening sled storage: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("open sled storage: {e}"),
            }
        }
    }
}

/// Runs `open` again while it fails on the directory's lock, within 30 s:
/// a handle just dropped may keep the lock for a moment through its last
/// sled thread (see [`SledBackend::open`]). Any other outcome is returned
/// as it is, so an expected refusal is still seen.
fn past_the_lock<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open() {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                eprintln!("reopening: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            outcome => return outcome,
        }
    }
}

/// The in-memory store; a clone shares the state, as a restart would find it.
struct MemoryBackend {
    shared: MemoryStorage,
}

impl Backend for MemoryBackend {
    type S = MemoryStorage;
    fn new() -> Self {
        MemoryBackend {
            shared: MemoryStorage::new(),
        }
    }
    fn open(&self) -> MemoryStorage {
        self.shared.clone()
    }
}

fn b(round: u64, node: u32) -> Ballot {
    Ballot::new(round, node)
}

fn value(writer: u64, bytes: impl Into<Bytes>) -> Value {
    Value {
        writer,
        bytes: bytes.into(),
    }
}

fn voted(promised: Ballot, ballot: Ballot, value: Value, decided: bool) -> State {
    State {
        promised,
        accepted: Some(Accepted { ballot, value }),
        decided,
    }
}

fn promised_only(promised: Ballot) -> State {
    State {
        promised,
        accepted: None,
        decided: false,
    }
}

/// `len` deterministic pseudo-random bytes from `seed`.
fn noise(len: usize, seed: u64) -> Bytes {
    support::seed::noise(seed, len).into()
}

fn load<S: Storage>(s: &S, key: &str) -> State {
    s.load(key).unwrap_or_else(|e| panic!("load {key:?}: {e}"))
}

async fn store<S: Storage>(s: &S, key: &str, state: &State) {
    s.store(key, state)
        .await
        .unwrap_or_else(|e| panic!("store {key:?}: {e}"));
}

/// Compares states without printing megabytes when they differ.
#[track_caller]
fn assert_state(got: &State, want: &State, what: &str) {
    if got != want {
        let brief = |s: &State| {
            format!(
                "promised {} decided {} vote {:?}",
                s.promised,
                s.decided,
                s.accepted.as_ref().map(|a| (
                    a.ballot,
                    a.value.writer,
                    a.value.bytes.len(),
                    first_diff_hint(&a.value.bytes)
                ))
            )
        };
        let where_differ = match (&got.accepted, &want.accepted) {
            (Some(g), Some(w)) => g
                .value
                .bytes
                .iter()
                .zip(w.value.bytes.iter())
                .position(|(x, y)| x != y)
                .map(|i| format!(", first differing byte at {i}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        panic!(
            "{what}: got {} / want {}{where_differ}",
            brief(got),
            brief(want)
        );
    }
}

fn first_diff_hint(bytes: &Bytes) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------

/// Storage contract: a key never written loads as the default state (nothing
/// promised, nothing accepted, not decided); the round mark starts at 0.
async fn unknown_keys_load_the_default_state<B: Backend>(backend: &B) {
    let s = backend.open();
    for key in ["never-written", "a/b", "", "x"] {
        assert_state(&load(&s, key), &State::default(), key);
    }
    assert_eq!(s.load_round_mark().unwrap(), 0);
    store(&s, "written", &promised_only(b(1, 1))).await;
    assert_state(&load(&s, "written-not"), &State::default(), "neighbour key");
    assert_state(&load(&s, "writte"), &State::default(), "prefix key");
}

/// Inv. 1 (what is stored is what the acceptor decided on): store then load
/// returns exactly the state stored: promise, vote ballot, writer id, bytes
/// and the decided flag, for every shape of state.
async fn store_then_load_returns_exactly_the_state<B: Backend>(backend: &B) {
    let s = backend.open();
    let cases: Vec<(&str, State)> = vec![
        ("promise only", promised_only(b(7, 3))),
        ("max ballot", promised_only(b(u64::MAX, u32::MAX))),
        (
            "vote",
            voted(
                b(4, 2),
                b(4, 2),
                value(0xDEAD_BEEF_0102_0304, "hello"),
                false,
            ),
        ),
        (
            "vote below promise",
            voted(b(9, 1), b(3, 2), value(1, "older vote"), false),
        ),
        (
            "decided",
            voted(b(5, 1), b(5, 1), value(u64::MAX, "chosen"), true),
        ),
        (
            "decided, promise above vote",
            voted(b(12, 3), b(2, 2), value(0, "v"), true),
        ),
        (
            "writer zero",
            voted(b(1, 1), b(1, 1), value(0, "zero writer"), false),
        ),
    ];
    for (key, state) in &cases {
        store(&s, key, state).await;
        assert_state(&load(&s, key), state, key);
    }
    // Every key still holds its own state once all are written.
    for (key, state) in &cases {
        assert_state(&load(&s, key), state, key);
    }
}

/// Inv. 1: a later store fully replaces the earlier one, whatever the sizes:
/// big value -> small value -> big value -> promise change with the same
/// vote -> no vote at all; no stale chunk of an older value leaks through,
/// before or after a restart.
async fn overwrites_replace_values_of_any_size<B: Backend>(backend: &B) {
    let key = "register/overwritten";
    let big1 = voted(b(1, 1), b(1, 1), value(11, noise(300_000, 1)), false);
    let small = voted(b(2, 1), b(2, 1), value(22, "tiny"), false);
    let big2 = voted(b(3, 2), b(3, 2), value(33, noise(200_003, 2)), false);
    // A promise above the vote: the acceptor persists it with the same vote.
    let big2_promised = voted(b(4, 3), b(3, 2), value(33, noise(200_003, 2)), false);
    let smaller_big = voted(b(5, 1), b(5, 1), value(44, noise(150_000, 3)), true);
    let no_vote = promised_only(b(6, 1));
    {
        let s = backend.open();
        for (what, state) in [
            ("big", &big1),
            ("big -> small", &small),
            ("small -> big", &big2),
            ("promise change, same vote", &big2_promised),
            ("big -> smaller big, decided", &smaller_big),
        ] {
            store(&s, key, state).await;
            assert_state(&load(&s, key), state, what);
        }
    }
    let s = backend.open();
    assert_state(&load(&s, key), &smaller_big, "after restart");
    store(&s, key, &no_vote).await;
    assert_state(&load(&s, key), &no_vote, "vote -> no vote");
    store(&s, key, &big1).await;
    drop(s);
    let s = backend.open();
    assert_state(&load(&s, key), &big1, "no vote -> big, after restart");
}

/// Values are 0..=1 MiB (docs/api.md): an empty value is a real vote, distinct
/// from "no vote", and keeps its writer id.
async fn empty_value_is_a_vote<B: Backend>(backend: &B) {
    let s = backend.open();
    let empty = voted(b(2, 1), b(2, 1), value(77, Bytes::new()), false);
    store(&s, "empty", &empty).await;
    let got = load(&s, "empty");
    assert_state(&got, &empty, "empty value");
    assert!(
        got.accepted.is_some(),
        "an empty value must not read back as 'no vote'"
    );
    // A non-empty value replaced by an empty one.
    store(
        &s,
        "shrinks",
        &voted(b(1, 1), b(1, 1), value(1, noise(10_000, 9)), false),
    )
    .await;
    store(&s, "shrinks", &empty).await;
    assert_state(&load(&s, "shrinks"), &empty, "value -> empty");
    let decided_empty = voted(b(3, 1), b(2, 1), value(77, Bytes::new()), true);
    store(&s, "empty", &decided_empty).await;
    drop(s);
    let s = backend.open();
    assert_state(
        &load(&s, "empty"),
        &decided_empty,
        "empty decided, after restart",
    );
}

/// Values are raw bytes: every byte value (NUL, 0xFF, invalid UTF-8)
/// survives, at every size around the sled chunk boundary (4096).
async fn binary_values_survive_at_chunk_boundaries<B: Backend>(backend: &B) {
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(256 * 60 + 5).collect();
    let mut states = Vec::new();
    {
        let s = backend.open();
        for (i, len) in [
            1usize,
            255,
            4095,
            4096,
            4097,
            8191,
            8192,
            8193,
            3 * 4096 + 1,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = Bytes::from(all_bytes[all_bytes.len() - len..].to_vec());
            let key = format!("bin/{len}");
            let state = voted(
                b(i as u64 + 1, 2),
                b(i as u64 + 1, 2),
                value(i as u64, bytes),
                false,
            );
            store(&s, &key, &state).await;
            assert_state(&load(&s, &key), &state, &key);
            states.push((key, state));
        }
        let invalid_utf8 = voted(
            b(1, 1),
            b(1, 1),
            value(5, vec![0xC3, 0x28, 0x00, 0xFF, 0xFE]),
            false,
        );
        store(&s, "bin/utf8", &invalid_utf8).await;
        states.push(("bin/utf8".into(), invalid_utf8));
    }
    let s = backend.open();
    for (key, state) in &states {
        assert_state(&load(&s, key), state, &format!("{key} after restart"));
    }
}

/// docs/api.md keys: `/`, spaces, non-ASCII, 1024 bytes, and names that look like
/// the store's own metadata or are prefixes of each other never collide.
async fn keys_with_special_characters_are_independent<B: Backend>(backend: &B) {
    let long = "k".repeat(1024);
    let keys = [
        "app/db/url",
        "app/db",
        "app",
        "with space",
        " leading and trailing ",
        "ünïcødé/日本語/ключ",
        "emoji 🦀",
        "%2F not decoded here",
        "mformat",
        "mround",
        "s",
        "v",
        "sapp",
        "vapp",
        long.as_str(),
    ];
    let mut want = BTreeMap::new();
    {
        let s = backend.open();
        for (i, key) in keys.iter().enumerate() {
            let i = i as u64;
            // Values big enough to take several chunks, distinct per key.
            let state = voted(
                b(i + 10, 1),
                b(i + 1, 2),
                value(i, noise(5_000 + i as usize * 1_000, i)),
                i % 2 == 0,
            );
            store(&s, key, &state).await;
            want.insert(key.to_string(), state);
        }
        for (key, state) in &want {
            assert_state(&load(&s, key), state, key);
        }
        assert_eq!(
            s.load_round_mark().unwrap(),
            0,
            "key 'mround' must not touch the round mark"
        );
    }
    let s = backend.open();
    for (key, state) in &want {
        assert_state(&load(&s, key), state, &format!("{key:?} after restart"));
    }
}

/// Inv. 2: the ballot reservation mark is stored and loaded exactly, and
/// survives a restart.
async fn round_mark_round_trips<B: Backend>(backend: &B) {
    {
        let s = backend.open();
        assert_eq!(s.load_round_mark().unwrap(), 0);
        for mark in [1, 1 << 20, (1 << 40) + 7] {
            s.store_round_mark(mark).await.unwrap();
            assert_eq!(s.load_round_mark().unwrap(), mark);
        }
        store(&s, "some/key", &promised_only(b(3, 3))).await;
        assert_eq!(
            s.load_round_mark().unwrap(),
            (1 << 40) + 7,
            "a register store must not touch the mark"
        );
    }
    let s = backend.open();
    assert_eq!(s.load_round_mark().unwrap(), (1 << 40) + 7, "after restart");
    s.store_round_mark(u64::MAX).await.unwrap();
    drop(s);
    assert_eq!(backend.open().load_round_mark().unwrap(), u64::MAX);
}

/// Inv. 1, group commit path: 200 concurrent stores to different keys (and
/// interleaved round marks) on a multi-thread runtime all resolve Ok, and
/// every one of them is there, before and after a restart.
async fn concurrent_stores_are_all_durable<B: Backend>(backend: &B) {
    const N: u64 = 200;
    let state_of = |i: u64| {
        voted(
            b(i + 2, 1),
            b(i + 1, (i % 5) as u32 + 1),
            value(i, noise((i as usize * 131) % 9_000, i)),
            i % 7 == 0,
        )
    };
    {
        let s = Arc::new(backend.open());
        let mut tasks = Vec::new();
        for i in 0..N {
            let s = s.clone();
            let state = state_of(i);
            tasks.push(tokio::spawn(async move {
                s.store(&format!("concurrent/{i}"), &state).await?;
                if i % 50 == 0 {
                    s.store_round_mark(1000 + i).await?;
                }
                Ok::<(), StorageError>(())
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            task.await
                .expect("task panicked")
                .unwrap_or_else(|e| panic!("store {i}: {e}"));
        }
        for i in 0..N {
            assert_state(
                &load(&*s, &format!("concurrent/{i}")),
                &state_of(i),
                "before restart",
            );
        }
    }
    let s = backend.open();
    for i in 0..N {
        assert_state(
            &load(&s, &format!("concurrent/{i}")),
            &state_of(i),
            "after restart",
        );
    }
    let mark = s.load_round_mark().unwrap();
    assert!(
        [1000, 1050, 1100, 1150].contains(&mark),
        "round mark {mark}"
    );
}

/// Storage contract ("survives a crash of the process"): after the store is
/// dropped and opened again (sled: same dir; memory: a clone), every state
/// and the round mark are back.
async fn state_survives_a_restart<B: Backend>(backend: &B) {
    let states = [
        ("r/1", promised_only(b(3, 1))),
        (
            "r/2",
            voted(b(4, 2), b(4, 2), value(42, "forty-two"), false),
        ),
        ("r/3", voted(b(9, 3), b(8, 1), value(43, "decided"), true)),
    ];
    {
        let s = backend.open();
        for (key, state) in &states {
            store(&s, key, state).await;
        }
        s.store_round_mark(1 << 21).await.unwrap();
        s.flush().unwrap();
    }
    for restart in 1..=2 {
        let s = backend.open();
        for (key, state) in &states {
            assert_state(
                &load(&s, key),
                state,
                &format!("{key} after restart {restart}"),
            );
        }
        assert_eq!(s.load_round_mark().unwrap(), 1 << 21);
    }
}

/// Inv. 1 note on blob files: a 1 MiB value (the largest allowed) survives a
/// restart byte for byte.
async fn one_mib_value_survives_a_restart<B: Backend>(backend: &B) {
    let big = voted(
        b(2, 3),
        b(2, 3),
        value(0x1234, noise(1 << 20, 0xC0FFEE)),
        false,
    );
    {
        let s = backend.open();
        store(&s, "big/one-mib", &big).await;
        assert_state(&load(&s, "big/one-mib"), &big, "before restart");
    }
    let s = backend.open();
    let got = load(&s, "big/one-mib");
    assert_state(&got, &big, "after restart");
    assert_eq!(got.accepted.unwrap().value.bytes.len(), 1 << 20);
}

/// `scan` lists registers by prefix, bytewise, in pages that start after a
/// key; chunked values come back whole; node metadata is not a register.
async fn scan_pages_by_prefix_in_key_order<B: Backend>(backend: &B) {
    let s = backend.open();
    assert!(s.is_blank().unwrap(), "a new store is blank");
    let keys = [
        "app/a",
        "app/b/c",
        "app/b/d",
        "app0",
        "apq",
        "ap",
        "b",
        "app/\u{e9}t\u{e9}",
    ];
    for (i, key) in keys.iter().enumerate() {
        let size = if *key == "app/b/c" { 3 * 4096 + 5 } else { 3 };
        let state = voted(
            b(1, 1),
            b(1, 1),
            value(i as u64, noise(size, i as u64)),
            false,
        );
        store(&s, key, &state).await;
    }
    s.store_meta("test", b"meta".to_vec()).await.unwrap();
    assert!(!s.is_blank().unwrap());
    let names = |page: Vec<(String, State)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        names(s.scan("app/", None, 100).unwrap()),
        ["app/a", "app/b/c", "app/b/d", "app/\u{e9}t\u{e9}"]
    );
    assert_eq!(
        names(s.scan("app/", None, 2).unwrap()),
        ["app/a", "app/b/c"]
    );
    assert_eq!(
        names(s.scan("app/", Some("app/b/c"), 2).unwrap()),
        ["app/b/d", "app/\u{e9}t\u{e9}"]
    );
    assert!(s
        .scan("app/", Some("app/\u{e9}t\u{e9}"), 2)
        .unwrap()
        .is_empty());
    assert!(s.scan("app/", Some("zzz"), 2).unwrap().is_empty());
    // `after` before the prefix starts at the prefix.
    assert_eq!(names(s.scan("app/", Some("a"), 1).unwrap()), ["app/a"]);
    assert_eq!(names(s.scan("", None, 100).unwrap()).len(), keys.len());
    assert!(s.scan("zz", None, 10).unwrap().is_empty());
    let big = s.scan("app/b/c", None, 1).unwrap();
    assert_eq!(
        big[0].1.accepted.as_ref().unwrap().value.bytes.len(),
        3 * 4096 + 5
    );
    assert_eq!(s.load_meta("test").unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(s.load_meta("other").unwrap(), None);
}

/// `store_lazy` (an announced decide, docs/design.md "Durability: what is
/// synced before a reply"): the state is visible to the next load at once;
/// lazy and durable writes of one key stay in order, whatever their sizes
/// (a lazy chunked value replaced by a durable inline one, and back); after
/// `settle` everything is durable and survives a restart.
async fn lazy_writes_are_visible_at_once_and_kept_in_order<B: Backend>(backend: &B) {
    let big = |w: u64| value(w, noise(10_000, w));
    let decided = voted(b(3, 1), b(3, 1), big(1), true);
    let small = voted(b(4, 2), b(4, 2), value(2, "small"), false);
    let big_again = voted(b(5, 3), b(5, 3), big(3), true);
    // Twenty more decided keys, stored lazily, then settled.
    let many = |i: u64| voted(b(i + 1, 1), b(i + 1, 1), value(i, noise(100, i)), true);
    {
        let s = backend.open();
        s.store_lazy("lazy/a", &decided).await.unwrap();
        assert_state(&load(&s, "lazy/a"), &decided, "after a lazy store");
        store(&s, "lazy/a", &small).await;
        assert_state(
            &load(&s, "lazy/a"),
            &small,
            "a durable store after a lazy one",
        );
        s.store_lazy("lazy/a", &big_again).await.unwrap();
        assert_state(
            &load(&s, "lazy/a"),
            &big_again,
            "a lazy store after a durable one",
        );
        for i in 0..20u64 {
            s.store_lazy(&format!("lazy/many/{i}"), &many(i))
                .await
                .unwrap();
        }
        s.settle().await.unwrap();
    }
    let s = backend.open();
    assert_state(
        &load(&s, "lazy/a"),
        &big_again,
        "after settle and a restart",
    );
    for i in 0..20u64 {
        assert_state(
            &load(&s, &format!("lazy/many/{i}")),
            &many(i),
            "after a restart",
        );
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        /// The suite over real sled in a temp dir.
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&<super::SledBackend as super::Backend>::new()).await;
                }
            )*
        }
        /// The same suite over the in-memory twin.
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&<super::MemoryBackend as super::Backend>::new()).await;
                }
            )*
        }
    };
}

suite!(
    unknown_keys_load_the_default_state,
    store_then_load_returns_exactly_the_state,
    overwrites_replace_values_of_any_size,
    empty_value_is_a_vote,
    binary_values_survive_at_chunk_boundaries,
    keys_with_special_characters_are_independent,
    round_mark_round_trips,
    concurrent_stores_are_all_durable,
    state_survives_a_restart,
    one_mib_value_survives_a_restart,
    scan_pages_by_prefix_in_key_order,
    lazy_writes_are_visible_at_once_and_kept_in_order,
);

// ---------------------------------------------------------------------------
// Sled only.
// ---------------------------------------------------------------------------

fn blob_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("blobs")) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list blobs/: {e}"),
    }
}

/// Inv. 1, second trap: sled writes big items to `blobs/` files it never
/// syncs. After storing 1 MiB values (and overwriting one) and syncing, the
/// `blobs/` folder is empty or absent: chunking keeps every write inline in
/// the log that the group commit fdatasyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_one_mib_values_out_of_blob_files() {
    let backend = SledBackend::new();
    {
        let s = backend.open();
        for (i, key) in ["blob/a", "blob/b", "blob/a"].into_iter().enumerate() {
            let state = voted(
                b(i as u64 + 1, 1),
                b(i as u64 + 1, 1),
                value(i as u64, noise(1 << 20, i as u64 + 7)),
                false,
            );
            store(&s, key, &state).await;
            assert_eq!(
                blob_files(backend.dir.path()),
                Vec::<String>::new(),
                "after storing {key}"
            );
        }
        s.flush().unwrap();
        assert_eq!(
            blob_files(backend.dir.path()),
            Vec::<String>::new(),
            "after flush"
        );
    }
    assert_eq!(
        blob_files(backend.dir.path()),
        Vec::<String>::new(),
        "after close"
    );
    // And the values are whole.
    let s = backend.open();
    let a = load(&s, "blob/a");
    assert_eq!(a.accepted.unwrap().value.bytes, noise(1 << 20, 9));

    // Control: the check can fail. Plain sled with one 1 MiB item does
    // spill it to `blobs/`, which is exactly what chunking avoids.
    let raw_dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(raw_dir.path()).unwrap();
        db.insert(b"one-item", noise(1 << 20, 1).to_vec()).unwrap();
        db.flush().unwrap();
    }
    assert!(
        !blob_files(raw_dir.path()).is_empty(),
        "control failed: raw sled no longer writes big items to blobs/, so the check above proves nothing"
    );
}

/// Inv. 7: a data directory whose format byte (`mformat`) is not this
/// release's is refused with `StorageError::Version`, not misread.
#[test]
fn sled_refuses_a_directory_of_another_format_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.insert(b"mformat", &[3u8]).unwrap();
        db.flush().unwrap();
    }
    match past_the_lock(|| SledStorage::open(dir.path())) {
        Err(StorageError::Version {
            found: 3,
            supported: 2,
        }) => {}
        Err(e) => panic!("wrong error: {e:?}"),
        Ok(_) => panic!("a format-3 directory was opened"),
    }
}

/// Inv. 7: a fresh directory is stamped with format 2, and a register header
/// written by another format version is refused on load, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_stamps_its_format_and_refuses_foreign_headers() {
    let backend = SledBackend::new();
    {
        let s = backend.open();
        store(&s, "k", &voted(b(1, 1), b(1, 1), value(1, "v"), false)).await;
    }
    {
        let db = past_the_lock(|| ::sled::open(backend.dir.path())).unwrap();
        assert_eq!(db.get(b"mformat").unwrap().as_deref(), Some(&[2u8][..]));
        let header = db
            .get(b"sk")
            .unwrap()
            .expect("header of key k under 's' + key");
        assert_eq!(header[0], 2, "the header starts with its format version");
        let mut foreign = header.to_vec();
        foreign[0] = 3;
        db.insert(b"sk", foreign).unwrap();
        db.flush().unwrap();
    }
    let s = backend.open();
    assert_eq!(
        s.load("k"),
        Err(StorageError::Version {
            found: 3,
            supported: 2
        })
    );
    assert_state(
        &load(&s, "other"),
        &State::default(),
        "other keys still load",
    );
}

/// Inv. 7: a directory written by format 1 (every record a bare 38-byte
/// header, every value in chunks) still reads, and is stamped format 2 so
/// that a format-1 release would refuse it after this one wrote to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_reads_and_upgrades_a_format_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.insert(b"mformat", &[1u8]).unwrap();
        // Key "k": promised (3, 2), vote (2, 1) by writer 7 of "hello", as
        // format 1 laid it out: header under 's' + key, value in chunk 0.
        let mut header = vec![1u8];
        header.extend_from_slice(&3u64.to_be_bytes());
        header.extend_from_slice(&2u32.to_be_bytes());
        header.push(0b01);
        header.extend_from_slice(&2u64.to_be_bytes());
        header.extend_from_slice(&1u32.to_be_bytes());
        header.extend_from_slice(&7u64.to_be_bytes());
        header.extend_from_slice(&5u32.to_be_bytes());
        db.insert(b"sk", header).unwrap();
        db.insert(b"vk\0\0\0\0\0", &b"hello"[..]).unwrap();
        db.flush().unwrap();
    }
    {
        let s = past_the_lock(|| SledStorage::open(dir.path())).unwrap();
        let expected = voted(b(3, 2), b(2, 1), value(7, "hello"), false);
        assert_state(&load(&s, "k"), &expected, "format-1 record");
        // Rewriting it in format 2 (inline) leaves no stale chunk behind.
        let promised = voted(b(4, 1), b(2, 1), value(7, "hello"), false);
        store(&s, "k", &promised).await;
        assert_state(&load(&s, "k"), &promised, "rewritten");
    }
    let db = past_the_lock(|| ::sled::open(dir.path())).unwrap();
    assert_eq!(db.get(b"mformat").unwrap().as_deref(), Some(&[2u8][..]));
    assert_eq!(
        db.get(b"vk\0\0\0\0\0").unwrap(),
        None,
        "stale chunk removed"
    );
}

/// The in-memory twin's failure injection: while failing, a store errors
/// and changes nothing (the caller must not reply; docs/design.md inv. 1).
#[tokio::test]
async fn memory_failed_store_changes_nothing() {
    let s = MemoryStorage::new();
    let before = voted(b(1, 1), b(1, 1), value(1, "kept"), false);
    store(&s, "k", &before).await;
    s.set_failing(true);
    assert!(matches!(
        s.store("k", &promised_only(b(9, 9))).await,
        Err(StorageError::Io(_))
    ));
    assert!(matches!(
        s.store_round_mark(5).await,
        Err(StorageError::Io(_))
    ));
    assert_state(&load(&s, "k"), &before, "after a failed store");
    assert_eq!(s.load_round_mark().unwrap(), 0);
    s.set_failing(false);
    store(&s, "k", &promised_only(b(9, 9))).await;
    assert_eq!(s.snapshot().get("k"), Some(&promised_only(b(9, 9))));
}

/// Inv. 7 with a corrupt record: a format-1 directory is checked record by
/// record before it is stamped format 2; one record that does not read
/// stops the open with `StorageError::Corrupt` naming it, and the directory
/// is left exactly as it was (still format 1, the record untouched), never
/// half converted.
#[test]
fn sled_refuses_a_corrupt_format_one_directory_and_does_not_restamp_it() {
    let dir = tempfile::tempdir().unwrap();
    let broken = vec![1u8, 0, 0, 7];
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.insert(b"mformat", &[1u8]).unwrap();
        db.insert(b"sbroken", broken.clone()).unwrap();
        db.flush().unwrap();
    }
    match past_the_lock(|| SledStorage::open(dir.path())) {
        Err(StorageError::Corrupt(why)) => {
            assert!(why.contains("broken"), "names the record: {why}")
        }
        Err(e) => panic!("wrong error: {e:?}"),
        Ok(_) => panic!("a directory with a corrupt record was opened"),
    }
    let db = past_the_lock(|| ::sled::open(dir.path())).unwrap();
    assert_eq!(
        db.get(b"mformat").unwrap().as_deref(),
        Some(&[1u8][..]),
        "restamped although a record does not read"
    );
    assert_eq!(db.get(b"sbroken").unwrap().as_deref(), Some(&broken[..]));
}

/// The `failed-*` folders of `dir`.
fn failed_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("failed-"))
        .map(|e| e.path())
        .collect()
}

/// Inv. 9 (fail-stop storage), on a real full disk (a tmpfs; needs root):
/// after a failed write the database is never used again: `failure()` says
/// why, and every later store AND load fails, even of a key stored before.
/// `reset()` fails while the disk is still full; once it has room, it sets
/// the failed files aside in `failed-*` (renames only), opens a fresh,
/// blank database (node metadata kept) that works and survives a reopen,
/// and `discard_failed()` deletes what was set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_fails_stop_and_resets_into_a_fresh_database() {
    let Some(disk) = Tmpfs::or_skip("sled_fails_stop_and_resets_into_a_fresh_database") else {
        return;
    };
    let dir = disk.mount.join("node");
    let s = SledStorage::open(&dir).expect("open");
    let kept = voted(b(1, 1), b(1, 1), value(1, "before"), true);
    store(&s, "before", &kept).await;
    s.store_meta("node", b"identity".to_vec())
        .await
        .expect("meta");
    assert_eq!(s.failure(), None);

    disk.fill();
    let mut failed = None;
    for i in 0..64u64 {
        let state = voted(b(2, 1), b(2, 1), value(i, noise(64 * 1024, i)), false);
        if let Err(e) = s.store(&format!("full/{i}"), &state).await {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a write on a full disk failed");
    assert!(matches!(failed, StorageError::Io(_)), "{failed:?}");
    let why = s.failure().expect("failure() reports the failed write");
    assert!(!why.is_empty());
    // Fail-stop: nothing is read from or written to that database again.
    assert!(matches!(s.load("before"), Err(StorageError::Io(_))));
    assert!(matches!(
        s.store("other", &promised_only(b(3, 1))).await,
        Err(StorageError::Io(_))
    ));
    assert!(s.reset().await.is_err(), "reset with the disk still full");
    assert!(s.failure().is_some(), "still failed");

    disk.free();
    s.reset().await.expect("reset once the disk has room");
    assert_eq!(s.failure(), None);
    assert_eq!(
        failed_dirs(&dir).len(),
        1,
        "the failed database is set aside"
    );
    assert!(s.is_blank().unwrap(), "the fresh database is blank");
    assert_state(&load(&s, "before"), &State::default(), "fresh database");
    assert_eq!(s.load_round_mark().unwrap(), 0);
    assert_eq!(
        s.load_meta("node").unwrap().as_deref(),
        Some(&b"identity"[..]),
        "node metadata outlives the reset"
    );
    let fresh = voted(b(4, 2), b(4, 2), value(9, "after"), false);
    store(&s, "after", &fresh).await;
    s.discard_failed();
    assert!(failed_dirs(&dir).is_empty(), "discard_failed deletes it");
    drop(s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let s = loop {
        match SledStorage::open(&dir) {
            Ok(s) => break s,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "reopen: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    };
    assert_state(&load(&s, "after"), &fresh, "after a reopen");
    assert_state(&load(&s, "before"), &State::default(), "still gone");
}

/// A sled store with lazy writes and nothing else to do syncs them by
/// itself (its idle group commit), without a `settle`: the sync count
/// grows with no further write (polled with a deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_syncs_lazy_writes_of_an_idle_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SledStorage::open(dir.path()).unwrap();
    let before = s.sync_count();
    let state = voted(b(1, 1), b(1, 1), value(1, "v"), true);
    s.store_lazy("idle", &state).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.sync_count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "lazy writes of an idle node never synced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_state(&load(&s, "idle"), &state, "after the idle sync");
}
