//! `kpool-certs mesh`: the mesh CA, the broker and client certificates, laid out as TLS
//! Secrets mount them, from the example policy; real certificates, checked with x509-parser
//! and rustls' webpki verifier.

mod bin;

use bin::{bin, run};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kpool_certs::create::Action;
use kpool_certs::inspect::{read_certificates, verify_chain, verify_client_chain};
use kpool_certs::mesh::{MeshOptions, MeshReport, Role, mesh, mesh_at};
use kpool_policy::Policy;
use kpool_policy::model::Mesh;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

const BROKER_SAN: &str = "spiffe://kpool.io/kafka/stretch/broker";
const APP_SAN: &str = "spiffe://kpool.io/kafka/stretch/client/example-app";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.yaml")
}

fn example() -> Mesh {
    Policy::from_file(&example_path())
        .expect("examples/policy.yaml loads")
        .spec()
        .mesh
        .clone()
}

fn opts(out: &Path, clients: &[&str]) -> MeshOptions {
    let mut o = MeshOptions::new(out);
    o.clients = clients.iter().map(|c| (*c).to_owned()).collect();
    o
}

/// Every file under `dir`, relative path → bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(rel.display().to_string(), std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn actions(r: &MeshReport) -> Vec<(String, Action, Action)> {
    r.leaves
        .iter()
        .map(|l| (l.role.dir_name(), l.certificate.clone(), l.ca_file.clone()))
        .collect()
}

fn renewed_because(a: &Action, why: &str) -> bool {
    matches!(a, Action::Renewed { reason } if reason.contains(why))
}

/// (URI SANs, DNS SANs, serverAuth, clientAuth, is CA) of a certificate file.
fn facts(path: &Path) -> (Vec<String>, Vec<String>, bool, bool, bool) {
    let der = read_certificates(path).expect("certificate").remove(0);
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    let (mut server, mut client) = (false, false);
    for ext in x509.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push((*u).to_owned()),
                        GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                        other => panic!("unexpected SAN {other:?}"),
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                server = eku.server_auth;
                client = eku.client_auth;
            }
            _ => {}
        }
    }
    (uris, dns, server, client, x509.is_ca())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn the_example_policy_gives_the_secret_layout_with_the_identities_it_checks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("mesh-certs");
    let policy = example();
    let r = mesh(&policy, &opts(&out, &["example-app"])).expect("mesh");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.ca, Action::Created);
    assert_eq!(
        actions(&r),
        vec![
            ("broker".to_owned(), Action::Created, Action::Created),
            (
                "client-example-app".to_owned(),
                Action::Created,
                Action::Created
            ),
        ]
    );
    assert_eq!(r.leaves[0].san, BROKER_SAN);
    assert_eq!(r.leaves[1].san, APP_SAN);
    assert_eq!(r.leaves[1].role, Role::Client("example-app".to_owned()));
    assert!(
        r.ca_info.subject.contains("kpool mesh CA"),
        "{}",
        r.ca_info.subject
    );

    let files: Vec<String> = snapshot(&out).into_keys().collect();
    assert_eq!(
        files,
        [
            "broker/ca.crt",
            "broker/tls.crt",
            "broker/tls.key",
            "ca/ca.crt",
            "ca/ca.key",
            "client-example-app/ca.crt",
            "client-example-app/tls.crt",
            "client-example-app/tls.key",
        ]
    );
    #[cfg(unix)]
    for (f, want) in [
        ("ca/ca.key", 0o600),
        ("ca/ca.crt", 0o644),
        ("broker/tls.key", 0o600),
        ("broker/tls.crt", 0o644),
        ("broker/ca.crt", 0o644),
        ("client-example-app/tls.key", 0o600),
        ("client-example-app/tls.crt", 0o644),
        ("client-example-app/ca.crt", 0o644),
    ] {
        assert_eq!(mode(&out.join(f)), want, "{f}");
    }
    // The CA beside each leaf is the mesh CA.
    let ca_pem = std::fs::read(out.join("ca/ca.crt")).expect("ca");
    for d in ["broker", "client-example-app"] {
        assert_eq!(
            std::fs::read(out.join(d).join("ca.crt")).expect("copy"),
            ca_pem
        );
    }

    // The identities and uses.
    assert_eq!(
        facts(&out.join("broker/tls.crt")),
        (vec![BROKER_SAN.to_owned()], vec![], true, true, false)
    );
    assert_eq!(
        facts(&out.join("client-example-app/tls.crt")),
        (vec![APP_SAN.to_owned()], vec![], false, true, false)
    );
    assert!(facts(&out.join("ca/ca.crt")).4, "the CA is a CA");
    assert!(policy.allows_client(APP_SAN));

    // Both chain to the mesh CA (webpki), the broker as a server and a client, the client as
    // a client only; neither chains to another CA.
    let now = OffsetDateTime::now_utc();
    let cas = read_certificates(&out.join("ca/ca.crt")).expect("ca");
    let broker = read_certificates(&out.join("broker/tls.crt")).expect("broker");
    let app = read_certificates(&out.join("client-example-app/tls.crt")).expect("app");
    verify_chain("broker", &broker, &cas, None, now).expect("broker as a server");
    verify_client_chain("broker", &broker, &cas, now).expect("broker as a client");
    verify_client_chain("client", &app, &cas, now).expect("client as a client");
    let e = verify_chain("client", &app, &cas, None, now).expect_err("not a server");
    assert!(e.to_string().contains("extended key usage"), "{e}");
    let other = tempfile::tempdir().expect("other");
    mesh(&policy, &opts(other.path(), &[])).expect("another mesh");
    let foreign = read_certificates(&other.path().join("ca/ca.crt")).expect("other ca");
    let e = verify_client_chain("client", &app, &foreign, now).expect_err("foreign CA");
    assert!(e.to_string().contains("does not chain"), "{e}");
}

#[test]
fn a_rerun_keeps_every_byte_and_adding_a_client_keeps_the_ca_and_the_broker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path();
    let policy = example();
    let now = OffsetDateTime::now_utc();
    mesh_at(&policy, &opts(out, &["example-app"]), now).expect("first");
    let before = snapshot(out);

    let again = mesh_at(
        &policy,
        &opts(out, &["example-app"]),
        now + time::Duration::days(30),
    )
    .expect("again");
    assert_eq!(again.ca, Action::Kept);
    assert!(
        actions(&again)
            .iter()
            .all(|(_, c, f)| (c, f) == (&Action::Kept, &Action::Kept)),
        "{:?}",
        actions(&again)
    );
    assert_eq!(snapshot(out), before, "a re-run writes nothing");

    // A second client (repeated, and the first again): the CA, the broker and the first
    // client stay byte for byte; the new one is signed by the same CA.
    let more = mesh_at(
        &policy,
        &opts(out, &["example-app", "billing", "billing"]),
        now,
    )
    .expect("add a client");
    assert_eq!(more.ca, Action::Kept);
    assert_eq!(
        actions(&more),
        vec![
            ("broker".to_owned(), Action::Kept, Action::Kept),
            ("client-example-app".to_owned(), Action::Kept, Action::Kept),
            (
                "client-billing".to_owned(),
                Action::Created,
                Action::Created
            ),
        ]
    );
    let after = snapshot(out);
    for (f, bytes) in &before {
        assert_eq!(after.get(f), Some(bytes), "{f} kept");
    }
    let cas = read_certificates(&out.join("ca/ca.crt")).expect("ca");
    verify_client_chain(
        "billing",
        &read_certificates(&out.join("client-billing/tls.crt")).expect("billing"),
        &cas,
        now,
    )
    .expect("same CA");

    // 250 of 365 days on: the leaves are due (less than a third left), the CA is not.
    let later = mesh_at(
        &policy,
        &opts(out, &["example-app"]),
        now + time::Duration::days(250),
    )
    .expect("later");
    assert_eq!(later.ca, Action::Kept);
    for (dir, cert, ca_file) in actions(&later) {
        assert!(renewed_because(&cert, "less than 33%"), "{dir}: {cert:?}");
        assert_eq!(ca_file, Action::Kept, "{dir}");
    }
    assert_eq!(snapshot(out)["ca/ca.key"], before["ca/ca.key"]);
}

#[test]
fn a_changed_identity_or_a_leaf_from_another_ca_is_reissued_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path();
    let mut policy = example();
    mesh(&policy, &opts(out, &["example-app"])).expect("first");

    // brokerSan changed, to a DNS name (no "://").
    policy.broker_san = Some("Brokers.Stretch.Example.com".to_owned());
    let r = mesh(&policy, &opts(out, &["example-app"])).expect("dns san");
    assert!(
        renewed_because(
            &r.leaves[0].certificate,
            &format!("SANs differ: want DNS:brokers.stretch.example.com, have URI:{BROKER_SAN}")
        ),
        "{:?}",
        r.leaves[0].certificate
    );
    assert_eq!(r.leaves[1].certificate, Action::Kept);
    assert_eq!(
        facts(&out.join("broker/tls.crt")),
        (
            vec![],
            vec!["brokers.stretch.example.com".to_owned()],
            true,
            true,
            false
        )
    );
    assert_eq!(
        mesh(&policy, &opts(out, &[])).expect("kept").leaves[0].certificate,
        Action::Kept
    );

    // A client pair from another mesh CA: reissued; its ca.crt copy rewritten.
    let other = tempfile::tempdir().expect("other");
    mesh(&policy, &opts(other.path(), &["example-app"])).expect("other");
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(
            other.path().join("client-example-app").join(f),
            out.join("client-example-app").join(f),
        )
        .expect("copy");
    }
    let r = mesh(&policy, &opts(out, &["example-app"])).expect("foreign leaf");
    assert!(
        renewed_because(&r.leaves[1].certificate, "does not chain"),
        "{:?}",
        r.leaves[1].certificate
    );
    assert!(
        renewed_because(&r.leaves[1].ca_file, "it was not the mesh CA"),
        "{:?}",
        r.leaves[1].ca_file
    );

    // A bad brokerSan is refused before anything is written.
    policy.broker_san = Some("spiffe://kpool.io/ünicode".to_owned());
    let e = mesh(&policy, &opts(out, &[])).expect_err("bad san");
    assert!(e.to_string().contains("mesh.brokerSan"), "{e}");
}

#[test]
fn the_file_names_follow_mesh_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut policy = example();
    policy.tls.certificate = "cert.pem".to_owned();
    policy.tls.private_key = "key.pem".to_owned();
    policy.tls.ca = "bundle.pem".to_owned();
    mesh(&policy, &opts(tmp.path(), &["app"])).expect("mesh");
    let files: Vec<String> = snapshot(tmp.path()).into_keys().collect();
    assert_eq!(
        files,
        [
            "broker/bundle.pem",
            "broker/cert.pem",
            "broker/key.pem",
            "ca/ca.crt",
            "ca/ca.key",
            "client-app/bundle.pem",
            "client-app/cert.pem",
            "client-app/key.pem",
        ]
    );
    let r = mesh(&policy, &opts(tmp.path(), &["app"])).expect("again");
    assert_eq!(r.ca, Action::Kept);
    assert!(actions(&r).iter().all(|(_, c, _)| *c == Action::Kept));
}

#[test]
fn a_foreign_or_missing_ca_key_is_refused_naming_the_files_and_force_replaces() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path();
    let policy = example();
    let first = mesh(&policy, &opts(out, &["example-app", "billing"])).expect("first");
    let (crt, key) = (out.join("ca/ca.crt"), out.join("ca/ca.key"));

    let other = tempfile::tempdir().expect("other");
    mesh(&policy, &opts(other.path(), &[])).expect("other");
    std::fs::copy(other.path().join("ca/ca.key"), &key).expect("foreign key");
    let before = snapshot(out);
    let e = mesh(&policy, &opts(out, &["example-app"])).expect_err("foreign ca.key");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "refusing to replace the CA without --force: expected {} to be the private key of \
             the CA {} in {}, found a key of another key pair; every broker and client sidecar",
            key.display(),
            first.ca_info.subject,
            crt.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("pass --force"), "{msg}");
    assert_eq!(snapshot(out), before, "nothing is written");

    std::fs::remove_file(&key).expect("rm ca.key");
    let e = mesh(&policy, &opts(out, &[])).expect_err("missing ca.key");
    assert!(
        e.to_string().contains(&format!(
            "expected {} beside {}",
            key.display(),
            crt.display()
        )),
        "{e}"
    );

    // Not PEM: an error naming the file.
    std::fs::copy(other.path().join("ca/ca.key"), &key).expect("key back");
    std::fs::write(&crt, "not a certificate\n").expect("garbage");
    let e = mesh(&policy, &opts(out, &[])).expect_err("not pem");
    assert!(
        e.to_string().starts_with(&format!(
            "{}: expected one or more PEM CERTIFICATE blocks",
            crt.display()
        )),
        "{e}"
    );

    // --force replaces the CA and reissues what it is asked for; the client left out is
    // named in a warning (its certificate is from the old CA).
    let mut forced = opts(out, &["example-app"]);
    forced.force = true;
    let r = mesh(&policy, &forced).expect("forced");
    assert!(renewed_because(&r.ca, "--force"), "{:?}", r.ca);
    for (dir, cert, ca_file) in actions(&r) {
        assert!(
            renewed_because(&cert, "the CA was replaced"),
            "{dir}: {cert:?}"
        );
        assert!(
            matches!(ca_file, Action::Renewed { .. }),
            "{dir}: {ca_file:?}"
        );
    }
    assert_ne!(r.ca_info.subject, first.ca_info.subject);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].starts_with(&format!(
            "{}: signed by the replaced CA",
            out.join("client-billing").display()
        )) && r.warnings[0].contains("--client billing"),
        "{:?}",
        r.warnings
    );
    let r = mesh(&policy, &opts(out, &["example-app"])).expect("then kept");
    assert_eq!(r.ca, Action::Kept);
}

#[test]
fn bad_client_names_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let long = "a".repeat(64);
    for bad in [
        "Example-App",
        "app_1",
        "-app",
        "app-",
        "a.b",
        "",
        long.as_str(),
    ] {
        let e = mesh(&example(), &opts(&out, &["ok", bad])).expect_err(bad);
        assert!(
            e.to_string().starts_with(&format!(
                "invalid options: --client {bad:?}: expected a DNS label"
            )),
            "{e}"
        );
    }
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn a_client_the_brokers_do_not_allow_is_issued_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut policy = example();
    policy.allowed_sans = vec![APP_SAN.to_owned()];
    let r = mesh(&policy, &opts(tmp.path(), &["example-app", "intruder"])).expect("mesh");
    assert_eq!(r.leaves[2].certificate, Action::Created);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].starts_with(
            "client intruder: the broker sidecars will refuse its certificate \
             (spiffe://kpool.io/kafka/stretch/client/intruder) until mesh.allowedSans lists it"
        ),
        "{:?}",
        r.warnings
    );
}

// The binary.

#[test]
fn the_command_line_reports_each_file_and_takes_env_vars() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("mesh-certs");
    let first = run(bin()
        .args(["mesh", "--policy"])
        .arg(example_path())
        .arg("--out")
        .arg(&out)
        .args(["--client", "example-app"]));
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines.iter().all(|l| l.ends_with("— created")), "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "{}: mesh CA O=kpool, CN=kpool mesh CA ",
            out.join("ca").display()
        )),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}: broker certificate for {BROKER_SAN} valid until ",
            out.join("broker").display()
        )),
        "{text}"
    );
    assert_eq!(
        lines[2],
        format!(
            "{}: the mesh CA — created",
            out.join("broker/ca.crt").display()
        )
    );
    assert!(
        lines[3].starts_with(&format!(
            "{}: client certificate of example-app for {APP_SAN} valid until ",
            out.join("client-example-app").display()
        )),
        "{text}"
    );
    assert!(!String::from_utf8_lossy(&first.stderr).contains("warning"));

    // Through env vars, as JSON: everything kept.
    let again = run(bin()
        .arg("mesh")
        .env("KPOOL_CERTS_POLICY", example_path())
        .env("KPOOL_CERTS_OUT", &out)
        .env("KPOOL_CERTS_CLIENT", "example-app")
        .env("KPOOL_CERTS_JSON", "true"));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(report["ca"]["action"], "kept");
    assert_eq!(report["leaves"][0]["role"], "broker");
    assert_eq!(report["leaves"][1]["role"], "client");
    assert_eq!(report["leaves"][1]["name"], "example-app");
    assert_eq!(report["leaves"][1]["san"], APP_SAN);
    assert_eq!(report["leaves"][1]["certificate"]["action"], "kept");
    assert_eq!(report["leaves"][1]["info"]["uris"][0], APP_SAN);
}

#[test]
fn the_command_line_warns_on_stderr_and_fails_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The example policy, allowing one client only.
    let text = std::fs::read_to_string(example_path()).expect("example");
    let narrowed = text.replace(
        "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
        &format!("allowedSans: [\"{APP_SAN}\"]"),
    );
    assert_ne!(narrowed, text, "the example's allowedSans line moved");
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, narrowed).expect("write policy");
    let out = tmp.path().join("out");
    let o = run(bin()
        .args(["mesh", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .args(["--client", "example-app,intruder"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "kpool-certs: warning: client intruder: the broker sidecars will refuse its \
             certificate (spiffe://kpool.io/kafka/stretch/client/intruder) until \
             mesh.allowedSans lists it"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("client example-app"), "{stderr}");
    assert!(out.join("client-intruder/tls.crt").is_file());

    let o = bin()
        .args(["mesh", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .args(["--client", "Bad_Name"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--client \"Bad_Name\": expected a DNS label"),
        "{stderr}"
    );
}
