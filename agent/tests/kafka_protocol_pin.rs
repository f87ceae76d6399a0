//! `agent/src/kafka/wire.rs` walks every response body before kafka-protocol decodes it, by
//! mirroring that crate's decoders field for field, so that a hostile array count cannot make
//! kafka-protocol allocate without bound. A mirror of another crate goes wrong silently when
//! that crate changes: this test fails whenever the kafka-protocol version Cargo.lock resolves
//! is not the one the mirror names in its module doc ("mirrors kafka-protocol X's decoders"),
//! so the walk is revisited (and perhaps retired, see the upstream pull requests cited there)
//! at every upgrade.

use std::path::{Path, PathBuf};

const WIRE: &str = "agent/src/kafka/wire.rs";
const MARKER_BEFORE: &str = "mirrors kafka-protocol ";
const MARKER_AFTER: &str = "'s decoders";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The version the mirror names: "... mirrors kafka-protocol 0.18.0's decoders ...".
fn mirrored_version() -> String {
    let text = std::fs::read_to_string(root().join(WIRE)).expect("agent/src/kafka/wire.rs");
    // The module doc wraps lines with `//! `; join them so the sentence can be found whole.
    let doc = text
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let start = doc.find(MARKER_BEFORE).unwrap_or_else(|| {
        panic!("{WIRE}'s module doc must say which version it mirrors: \"{MARKER_BEFORE}X{MARKER_AFTER}\"")
    }) + MARKER_BEFORE.len();
    let len = doc[start..].find(MARKER_AFTER).unwrap_or_else(|| {
        panic!("{WIRE}'s module doc: \"{MARKER_BEFORE}\" is not followed by \"X{MARKER_AFTER}\"")
    });
    let version = doc[start..start + len].to_owned();
    assert!(
        !version.is_empty()
            && version.split('.').count() == 3
            && version.split('.').all(|p| p.parse::<u64>().is_ok()),
        "{WIRE}: the mirrored version must be exact (major.minor.patch), found {version:?}"
    );
    version
}

/// Every version of `name` a Cargo.lock resolves.
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let want = format!("name = \"{name}\"");
    lock.split("[[package]]")
        .filter(|block| block.lines().any(|l| l.trim() == want))
        .filter_map(|block| {
            block.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("version = \"")
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned)
            })
        })
        .collect()
}

#[test]
fn locked_versions_are_read_from_a_cargo_lock() {
    let lock = "version = 4\n\n[[package]]\nname = \"kafka-protocol\"\nversion = \"0.18.0\"\n\
                source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
                [[package]]\nname = \"kafka-protocol-extra\"\nversion = \"9.9.9\"\n";
    assert_eq!(locked_versions(lock, "kafka-protocol"), ["0.18.0"]);
    assert!(locked_versions(lock, "absent").is_empty());
}

#[test]
fn kafka_protocol_is_the_version_the_wire_walk_mirrors() {
    let mirrored = mirrored_version();
    // The workspace's lock, and the fuzz workspace's (it builds the same walk on its own
    // resolution of kafka-protocol).
    let mut checked = 0;
    for lock_path in ["Cargo.lock", "fuzz/Cargo.lock"] {
        let path = root().join(lock_path);
        let Ok(lock) = std::fs::read_to_string(&path) else {
            assert_ne!(
                lock_path, "Cargo.lock",
                "the workspace Cargo.lock is missing"
            );
            continue;
        };
        let versions = locked_versions(&lock, "kafka-protocol");
        assert!(
            !versions.is_empty(),
            "{lock_path} resolves no kafka-protocol: is {WIRE} still needed?"
        );
        for v in versions {
            assert!(
                v == mirrored,
                "revisit {WIRE}: it mirrors kafka-protocol {mirrored}'s decoders, but {lock_path} \
                 resolves kafka-protocol {v}. Check the walk against {v}'s decoders (same fields, \
                 version gates, compact switch; and whether Array/CompactArray in \
                 src/protocol/types.rs still pre-allocate from the wire, which is the only reason \
                 the walk exists: see the pull requests its module doc cites), then write {v} into \
                 its module doc."
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}
