//! The repository's copies of the captured AdmissionReviews must stay byte-for-byte what
//! the API server sent (the originals live in ../shared when this checkout has it).

use std::path::Path;

#[test]
fn admission_fixtures_are_unmodified_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ours = root.join("tests/fixtures/admission");
    let shared = root.join("../shared/fixtures/admission");
    let mut checked = 0;
    for entry in std::fs::read_dir(&ours).expect("tests/fixtures/admission exists") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        let bytes = std::fs::read(&path).expect("readable");
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
            assert_eq!(v["kind"], "AdmissionReview", "{}", path.display());
        }
        if let Ok(original) = std::fs::read(shared.join(&name)) {
            assert!(
                original == bytes,
                "{} differs from ../shared",
                path.display()
            );
            checked += 1;
        }
    }
    if shared.exists() {
        assert!(
            checked >= 3,
            "only {checked} fixtures compared with ../shared"
        );
    }
}
