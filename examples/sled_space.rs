//! Where sled's disk space goes for a registry of many small decided keys.
//!
//! Writes N registers the way a node does for a fast PUT (one record with
//! the 256-byte value when the accept lands, the same record again with the
//! decided flag when the decide lands), with a group commit (`flush`) every
//! FLUSH_EVERY writes (default 32), then prints the directory size, sled's
//! own size and the live bytes (keys and values), so the amplification can
//! be read off. HEADER_BYTES sets the record header (38 by default).
//!
//! Usage: cargo run --release --example sled_space -- N [VARIANT] [SEGMENT_KIB]
//! VARIANT: `rewrite` (as the node does), `once` (accept only: no decide
//! rewrite), `flag` (the decided flag as its own small key).
//! Or: `sled_space inspect DIR`: entries, live bytes and size of a node's
//! data directory (stopped first: sled locks it).

use std::path::Path;

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            use std::os::unix::fs::MetadataExt;
            meta.blocks() * 512
        };
    }
    total
}

/// The number of entries in `db` and the bytes of their keys and values.
fn live(db: &sled::Db) -> (u64, u64) {
    db.iter().fold((0, 0), |(count, bytes), kv| {
        let (k, v) = kv.expect("entry");
        (count + 1, bytes + (k.len() + v.len()) as u64)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("inspect") {
        let dir = Path::new(&args[2]);
        let (count, live) = live(&sled::open(dir).expect("open"));
        println!(
            "{}: {count} entries, live {:.1} MB, dir {:.1} MB",
            dir.display(),
            live as f64 / 1e6,
            du(dir) as f64 / 1e6
        );
        return;
    }
    let n: usize = args.get(1).map_or(100_000, |a| a.parse().expect("N"));
    let variant = args.get(2).map_or("rewrite", String::as_str);
    let segment_kib: usize = args.get(3).map_or(512, |a| a.parse().expect("KiB"));
    let flush_every: usize =
        std::env::var("FLUSH_EVERY").map_or(32, |v| v.parse().expect("FLUSH_EVERY"));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(128 * 1024 * 1024)
        .segment_size(segment_kib * 1024)
        .open()
        .expect("open");
    let header: usize =
        std::env::var("HEADER_BYTES").map_or(38, |v| v.parse().expect("HEADER_BYTES"));
    let value = vec![7u8; header + 256];
    // The decided record: same size, other bytes (their content does not
    // matter to space).
    let mut flagged = value.clone();
    flagged[0] ^= 1;
    let started = std::time::Instant::now();
    // 32 writers in flight: keys interleave as the bench's workers do, and a
    // key's decide lands a little after its accept.
    const WORKERS: usize = 32;
    let key = |i: usize| format!("sbench/1234/{}/{}", i % WORKERS, i / WORKERS).into_bytes();
    let lag = WORKERS * 2;
    for i in 0..n + lag {
        if i < n {
            db.insert(key(i), &value[..]).expect("insert");
        }
        if i >= lag {
            let k = key(i - lag);
            match variant {
                "rewrite" => {
                    db.insert(k, &flagged[..]).expect("decide");
                }
                "flag" => {
                    let mut d = b"d".to_vec();
                    d.extend_from_slice(&k);
                    db.insert(d, &[]).expect("flag");
                }
                _ => {}
            }
        }
        if i % flush_every == flush_every - 1 {
            db.flush().expect("flush");
        }
    }
    db.flush().expect("flush");
    let (_, live) = live(&db);
    let sled_size = db.size_on_disk().expect("size");
    drop(db);
    let disk = du(dir.path());
    println!(
        "variant {variant} segment {segment_kib} KiB keys {n}: dir {:.1} MB, sled {:.1} MB, live {:.1} MB, dir/live {:.2}, {:.0} s",
        disk as f64 / 1e6,
        sled_size as f64 / 1e6,
        live as f64 / 1e6,
        disk as f64 / live as f64,
        started.elapsed().as_secs_f64()
    );
}
