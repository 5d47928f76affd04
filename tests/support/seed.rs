//! `PAXOS_KV_SEED`: the one variable that replays any randomized test.
//!
//! A randomized test takes its seed from [`seed`], which prints it with the
//! command that replays it. The test harness shows a test's output when it
//! fails, so every failure carries its seed.

/// The environment variable that fixes the seed of every randomized test.
pub const VAR: &str = "PAXOS_KV_SEED";

/// The seed fixed by `PAXOS_KV_SEED`, if set. Anything but a `u64` panics,
/// so a typo cannot silently run a fresh seed instead of the replay.
pub fn fixed() -> Option<u64> {
    let text = std::env::var(VAR).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{VAR}={text:?} is not a u64 seed")),
    )
}

/// The seed of `test` in test file `file` (`tests/<file>.rs`): the fixed one
/// or a fresh one, printed with the command that replays it.
pub fn seed(file: &str, test: &str) -> u64 {
    let seed = fixed().unwrap_or_else(rand::random);
    eprintln!("{test}: {}", replay(seed, file, test));
    seed
}

/// `seed N (replay: PAXOS_KV_SEED=N cargo test ...)`, for a failure message.
pub fn replay(seed: u64, file: &str, test: &str) -> String {
    format!("seed {seed} (replay: {VAR}={seed} cargo test --release --test {file} {test} -- --nocapture)")
}

/// `len` deterministic pseudo-random bytes (xorshift64 from `seed`), for
/// values whose content must not compress or repeat.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
