//! Stable-Rust fallback driver for the fuzz targets (no libFuzzer, no sanitizer, no
//! coverage feedback): runs a target's body over every file of its corpus, then over
//! random and mutated inputs (byte flips, insertions, deletions, splices of corpus
//! entries) until the time is up. A panic aborts the run with the input saved to
//! `fuzz/artifacts/<target>/crash-<n>` so it can become a regression test.
//!
//! Usage: drive TARGET SECONDS [CORPUS_DIR]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: small, deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [&[u8]; 12] = [
    b"\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"null",
    b"[]",
    b"{}",
    b"\"",
    b"-1",
    b"1e999",
    b"\xf0\x9f\x92\xa9",
    b"&a [*a, *a]",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = if corpus.is_empty() || rng.below(8) == 0 {
        let len = rng.below(256);
        (0..len).map(|_| rng.next() as u8).collect()
    } else {
        corpus[rng.below(corpus.len())].clone()
    };
    for _ in 0..=rng.below(8) {
        let len = data.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(i..i, piece.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                data.drain(a..b);
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + rng.below(256)).min(other.len());
                    let i = rng.below(len + 1);
                    data.splice(i..i, other[a..b].iter().copied());
                }
            }
            _ if len > 0 => data.truncate(rng.below(len)),
            _ => {}
        }
    }
    data
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn save_crash(target: &str, data: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let mut n = 0;
    loop {
        let p = dir.join(format!("crash-{n}"));
        if !p.exists() {
            let _ = std::fs::write(&p, data);
            return p;
        }
        n += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(secs)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: drive TARGET SECONDS [CORPUS_DIR]");
        std::process::exit(2);
    };
    if !kpool_fuzz::TARGETS.contains(&target.as_str()) {
        eprintln!(
            "unknown target {target}; targets: {}",
            kpool_fuzz::TARGETS.join(", ")
        );
        std::process::exit(2);
    }
    let Ok(secs) = secs.parse::<u64>() else {
        eprintln!("SECONDS must be a whole number: {secs}");
        std::process::exit(2);
    };
    let corpus_dir = args.get(3).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
    });
    let corpus = load_corpus(&corpus_dir);
    // Silence the default hook's output for caught panics; we report them ourselves.
    std::panic::set_hook(Box::new(|_| {}));
    let one = |data: &[u8]| -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kpool_fuzz::run(target, data);
        }))
        .is_ok()
    };
    let start = Instant::now();
    let deadline = Duration::from_secs(secs);
    for data in &corpus {
        if !one(data) {
            let p = save_crash(target, data);
            eprintln!(
                "{target}: CRASH on a corpus entry, saved to {}",
                p.display()
            );
            std::process::exit(1);
        }
    }
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9)
                | 1
        });
    let mut rng = Rng(seed);
    let mut runs: u64 = corpus.len() as u64;
    while start.elapsed() < deadline {
        let data = mutate(&mut rng, &corpus);
        runs += 1;
        if !one(&data) {
            let p = save_crash(target, &data);
            eprintln!(
                "{target}: CRASH after {runs} inputs (seed {seed}), saved to {}",
                p.display()
            );
            std::process::exit(1);
        }
    }
    println!(
        "{target}: {runs} inputs in {:.0} s ({} corpus entries, seed {seed}), no crash",
        start.elapsed().as_secs_f64(),
        corpus.len()
    );
}
