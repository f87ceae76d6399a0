//! Running the `kpool-certs` binary from a test.

#![allow(dead_code)]

use std::process::{Command, Output};

/// The binary, with the caller's `KPOOL_CERTS_*` kept out of the test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kpool-certs"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KPOOL_CERTS_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `c`, which must succeed (the failure shows both streams).
pub fn run(c: &mut Command) -> Output {
    let out = c.output().expect("run kpool-certs");
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
