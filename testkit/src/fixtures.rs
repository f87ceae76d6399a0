//! The repository's captured fixtures (`tests/fixtures/`), the only copy.

use std::path::PathBuf;

/// `tests/fixtures/admission/`: AdmissionReviews captured from a real kube-apiserver v1.32.
pub fn admission_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/admission")
}

/// The captured AdmissionReview `name` (e.g. `000-create-kafka-0.json`), parsed.
///
/// # Panics
/// When the file is missing or not JSON: a test fixture that cannot be read is a broken
/// checkout, not a case to handle.
#[allow(clippy::panic)]
pub fn admission(name: &str) -> serde_json::Value {
    let path = admission_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
