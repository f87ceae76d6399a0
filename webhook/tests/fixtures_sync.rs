//! The captured AdmissionReviews in `tests/fixtures/admission/` are the only copy kpool keeps
//! of what a real kube-apiserver sent, so they must stay exactly that. Everything checked
//! here is in the repository: each `.json` is an `admission.k8s.io/v1` AdmissionReview with a
//! request uid, the folder's README lists exactly the files present, and each file's SHA-256
//! is the one recorded in `SHA256SUMS` when it was captured (an accidental edit, reformat or
//! line-ending change fails).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Files in the folder that are not captures.
const NOT_CAPTURES: [&str; 2] = ["README.md", "SHA256SUMS"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/admission")
}

fn read_text(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capture files present (everything but the README and the digest list).
fn present() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir()).expect("tests/fixtures/admission exists") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !NOT_CAPTURES.contains(&name.as_str()) {
            names.insert(name);
        }
    }
    names
}

/// `SHA256SUMS` as `sha256sum` writes it: `<64 hex>  <name>` per line.
fn recorded_digests() -> Vec<(String, String)> {
    read_text("SHA256SUMS")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (hex, name) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("SHA256SUMS: not `<sha256>  <file>`: {line:?}"));
            assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "SHA256SUMS: not a SHA-256 in hex: {line:?}"
            );
            (name.to_owned(), hex.to_ascii_lowercase())
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_capture_is_an_admission_review_v1_with_a_request_uid() {
    let names = present();
    assert!(
        names.len() >= 3,
        "expected the captured reviews, found {names:?}"
    );
    for name in &names {
        assert!(
            name.ends_with(".json"),
            "{name}: only captured AdmissionReviews (.json), README.md and SHA256SUMS belong here"
        );
        let v: serde_json::Value = serde_json::from_str(&read_text(name))
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1", "{name}: apiVersion");
        assert_eq!(v["kind"], "AdmissionReview", "{name}: kind");
        let uid = v["request"]["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{name}: request.uid missing or empty");
        assert!(
            v["request"]["object"].is_object(),
            "{name}: request.object missing"
        );
    }
}

#[test]
fn readme_lists_exactly_the_captures_present() {
    // Each capture is described by a list item that starts with its name: "- `NAME.json` — ...".
    let listed: BTreeSet<String> = read_text("README.md")
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert_eq!(
        listed,
        present(),
        "tests/fixtures/admission/README.md must list exactly the captures present"
    );
}

#[test]
fn captures_match_their_recorded_sha256() {
    let recorded = recorded_digests();
    let names: BTreeSet<String> = recorded.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.len(), recorded.len(), "SHA256SUMS names a file twice");
    assert_eq!(
        names,
        present(),
        "SHA256SUMS must hold a digest for exactly the captures present"
    );
    for (name, want) in &recorded {
        let bytes = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = sha256_hex(&bytes);
        assert_eq!(
            &got, want,
            "{name} is no longer the capture recorded in SHA256SUMS: the API server's bytes are \
             the point of these fixtures, so restore the file (or record a new capture as \
             tests/fixtures/admission/README.md says)"
        );
    }
}
