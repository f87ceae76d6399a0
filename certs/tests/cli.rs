//! The `kpool-certs` binary: create (flags and env vars), idempotence, inspect.

mod bin;

use bin::{bin, run};

use std::path::Path;
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn create_args(dir: &Path) -> Vec<String> {
    [
        "create",
        "--service",
        "kpool-webhook",
        "--namespace",
        "kpool-system",
        "--dns",
        "webhook.example.com",
        "--ip",
        "127.0.0.1",
        "--out",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([dir.display().to_string()])
    .collect()
}

#[test]
fn create_is_idempotent_and_env_vars_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let first = run(bin().args(create_args(&dir)));
    let text = stdout(&first);
    assert!(text.contains("— created"), "{text}");
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let second = run(bin().args(create_args(&dir)));
    assert_eq!(
        stdout(&second).matches("— kept").count(),
        2,
        "{}",
        stdout(&second)
    );

    // The same through environment variables, with JSON output.
    let out = run(bin()
        .arg("create")
        .env("KPOOL_CERTS_SERVICE", "kpool-webhook")
        .env("KPOOL_CERTS_NAMESPACE", "kpool-system")
        .env("KPOOL_CERTS_DNS", "webhook.example.com")
        .env("KPOOL_CERTS_IP", "127.0.0.1")
        .env("KPOOL_CERTS_OUT", &dir)
        .env("KPOOL_CERTS_JSON", "true"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ca"]["action"], "kept");
    assert_eq!(report["serving"]["action"], "kept");
    assert_eq!(
        report["serving_info"]["ip_addresses"],
        serde_json::json!(["127.0.0.1"])
    );
    assert!(
        report["serving_info"]["dns_names"]
            .as_array()
            .expect("names")
            .contains(&"kpool-webhook.kpool-system.svc".into())
    );

    // A different SAN list renews the serving certificate and keeps the CA.
    let out = run(bin()
        .args(create_args(&dir))
        .args(["--dns", "other.example.com", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ca"]["action"], "kept");
    assert_eq!(report["serving"]["action"], "renewed");
    assert!(
        report["serving"]["reason"]
            .as_str()
            .expect("reason")
            .contains("SANs differ")
    );
}

#[test]
fn inspect_reports_facts_chain_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    run(bin().args(create_args(dir)));
    let files = ["ca.crt", "tls.crt", "tls.key"].map(|f| dir.join(f).display().to_string());

    let out = run(bin().arg("inspect").args(&files).arg("--json"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ca = &report[0]["certificates"][0];
    let leaf = &report[1]["certificates"][0];
    assert_eq!(ca["is_ca"], true);
    assert_eq!(leaf["is_ca"], false);
    assert_eq!(leaf["chains_to"], ca["subject"]);
    assert_eq!(leaf["expired"], false);
    assert!(leaf["remaining_seconds"].as_i64().expect("secs") > 364 * 86_400);
    assert_eq!(leaf["dns_names"][4], "webhook.example.com");
    assert!(leaf["not_after"].as_str().expect("rfc3339").ends_with('Z'));
    assert_eq!(report[2]["key_for"][0], leaf["subject"]);

    let out = run(bin().arg("inspect").args(&files));
    let text = stdout(&out);
    assert!(
        text.contains("chains to:   O=kpool, CN=kpool-certs CA"),
        "{text}"
    );
    assert!(
        text.contains(
            "dns names:   kpool-webhook, kpool-webhook.kpool-system, kpool-webhook.kpool-system.svc"
        ),
        "{text}"
    );
    assert!(
        text.contains("private key for: O=kpool, CN=kpool-webhook.kpool-system.svc"),
        "{text}"
    );

    // A leaf inspected with a foreign CA says it does not chain.
    let other = tempfile::tempdir().expect("other");
    run(bin().args(create_args(other.path())));
    let out = run(bin()
        .arg("inspect")
        .arg(other.path().join("ca.crt"))
        .arg(&files[1]));
    assert!(
        stdout(&out).contains("chains to:   NONE of the inspected CAs"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn errors_exit_non_zero_and_name_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.crt");
    std::fs::write(&bad, "hello").expect("write");
    let out = bin().arg("inspect").arg(&bad).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: expected one or more PEM CERTIFICATE blocks",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.starts_with("kpool-certs: error: ") && err.trim_end().lines().count() == 1,
        "one line, no backtrace, no repeated causes: {err}"
    );

    let out = bin()
        .args([
            "create",
            "--service",
            "Bad_Name",
            "--namespace",
            "ns",
            "--out",
        ])
        .arg(tmp.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a DNS label"));
}

/// Runs `c` and returns its output, failing the test if it has not exited within 30 s (a run
/// that blocks on a FIFO would otherwise hang the test suite).
fn run_with_deadline(c: &mut Command) -> Output {
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kpool-certs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kpool-certs still running after 30 s: {c:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_refused(out: &Output, expected: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

#[cfg(unix)]
#[test]
fn inspect_refuses_a_fifo_instead_of_hanging() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fifo = tmp.path().join("ca.crt");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let out = run_with_deadline(bin().arg("inspect").arg(&fifo));
    assert_refused(
        &out,
        &format!(
            "kpool-certs: error: cannot read {}: expected a regular PEM file, found a FIFO (named pipe)",
            fifo.display()
        ),
    );
}

#[cfg(target_os = "linux")]
#[test]
fn inspect_refuses_dev_zero_instead_of_reading_forever() {
    // Under a 2 GiB address-space limit, so that a regression fails the test (the allocation
    // aborts) instead of taking the machine's memory at 1.5 GB/s.
    let out = run_with_deadline(
        Command::new("sh")
            .args(["-c", "ulimit -v 2097152 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_kpool-certs"))
            .args(["inspect", "/dev/zero"]),
    );
    assert_refused(
        &out,
        "kpool-certs: error: cannot read /dev/zero: expected a regular PEM file, found a character device",
    );
}

#[test]
fn inspect_and_create_refuse_a_file_over_1_mib() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = tmp.path().join("big.crt");
    // A valid PEM certificate padded with 2 MiB of blank lines: the cap, not the parser, refuses.
    run(bin().args(create_args(tmp.path())));
    let mut text = std::fs::read(tmp.path().join("ca.crt")).expect("ca");
    text.resize(text.len() + 2 * 1024 * 1024, b'\n');
    std::fs::write(&big, &text).expect("write");
    let out = run_with_deadline(bin().arg("inspect").arg(&big));
    assert_refused(
        &out,
        &format!(
            "cannot read {}: expected a PEM file of at most 1048576 bytes (1 MiB), found {} bytes",
            big.display(),
            text.len()
        ),
    );
    // The same rule on every path the tool reads: create's existing material too.
    std::fs::write(tmp.path().join("ca.crt"), &text).expect("pad ca.crt");
    let out = run_with_deadline(bin().args(create_args(tmp.path())));
    assert_refused(
        &out,
        &format!(
            "cannot read {}: expected a PEM file of at most 1048576 bytes (1 MiB)",
            tmp.path().join("ca.crt").display()
        ),
    );
}

#[test]
fn create_refuses_to_replace_a_ca_whose_key_is_foreign_or_missing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let other = tmp.path().join("other");
    run(bin().args(create_args(&dir)));
    run(bin().args(create_args(&other)));
    let files = ["ca.crt", "ca.key", "tls.crt", "tls.key"];
    let snapshot = || -> Vec<Option<Vec<u8>>> {
        files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).ok())
            .collect()
    };
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    for (what, expected) in [
        (
            "another CA's key",
            format!(
                "expected {} to be the private key of the CA O=kpool, CN=kpool-certs CA",
                key.display()
            ),
        ),
        (
            "no key",
            format!("expected {} beside {}", key.display(), crt.display()),
        ),
    ] {
        if what == "no key" {
            std::fs::remove_file(&key).expect("rm");
        } else {
            std::fs::copy(other.join("ca.key"), &key).expect("copy");
        }
        let before = snapshot();
        let out = run_with_deadline(bin().args(create_args(&dir)));
        assert_refused(
            &out,
            "kpool-certs: error: refusing to replace the CA without --force: ",
        );
        assert_refused(&out, &expected);
        assert_refused(&out, "pass --force to generate a new CA");
        assert_eq!(snapshot(), before, "{what}: no file was written");
    }
    let out = run(bin().args(create_args(&dir)).args(["--force", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ca"]["reason"], "--force");
}

#[cfg(unix)]
#[test]
fn create_warns_about_a_key_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    run(bin().args(create_args(dir)));
    std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = run(bin().args(create_args(dir)).arg("--json"));
    let err = String::from_utf8_lossy(&out.stderr);
    let warning = format!(
        "{} is readable by group or others (mode 0644)",
        dir.join("ca.key").display()
    );
    assert!(
        err.contains("WARN") && err.contains(&warning),
        "stderr: {err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        report["warnings"][0]
            .as_str()
            .expect("warning")
            .starts_with(&warning),
        "{report}"
    );
}
