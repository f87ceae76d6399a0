//! The broker sidecar's configuration: its structure, and bad input named clearly.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{CLIENT_PREFIX, policy_file, policy_with, write_certs};
use kpool_mesh::broker::{self, BrokerOptions};
use kpool_mesh::{Format, MeshError, envoy};
use serde_json::{Value, json};

fn pointer<'a>(v: &'a Value, path: &str) -> &'a Value {
    v.pointer(path)
        .unwrap_or_else(|| panic!("{path} not in {v:#}"))
}

#[test]
fn broker_bootstrap_terminates_mtls_and_forwards_to_the_broker_on_loopback() {
    let policy = policy_with(&[]);
    let bundle = broker::render(&policy, &BrokerOptions::default()).expect("renders");
    let b = &bundle.bootstrap;
    assert_eq!(
        pointer(b, "/node"),
        &json!({"id": "kpool-mesh-broker.stretch", "cluster": "stretch"})
    );
    assert_eq!(
        pointer(b, "/admin/address/socket_address"),
        &json!({"address": "127.0.0.1", "port_value": 9901}),
        "admin on loopback only"
    );
    let listeners = pointer(b, "/static_resources/listeners")
        .as_array()
        .expect("list");
    assert_eq!(listeners.len(), 1);
    let l = &listeners[0];
    assert_eq!(
        pointer(l, "/address/socket_address"),
        &json!({"address": "0.0.0.0", "port_value": 9443})
    );
    let chain = pointer(l, "/filter_chains/0");
    let proxy = pointer(chain, "/filters/0/typed_config");
    assert_eq!(proxy["@type"], envoy::TCP_PROXY);
    assert_eq!(proxy["cluster"], broker::BROKER_CLUSTER);
    assert!(!proxy["stat_prefix"].as_str().unwrap_or("").is_empty());
    let tls = pointer(chain, "/transport_socket/typed_config");
    assert_eq!(tls["@type"], envoy::DOWNSTREAM_TLS);
    assert_eq!(tls["require_client_certificate"], json!(true));
    let common = &tls["common_tls_context"];
    assert_eq!(
        pointer(common, "/tls_certificate_sds_secret_configs/0"),
        &json!({
            "name": broker::CERTIFICATE_SECRET,
            "sds_config": {
                "path_config_source": {
                    "path": "/etc/kpool-proxy/sds-certificate.yaml",
                    "watched_directory": {"path": "/etc/kpool-proxy"},
                },
                "resource_api_version": "V3",
            },
        })
    );
    let validation = pointer(common, "/combined_validation_context");
    assert_eq!(
        pointer(
            validation,
            "/default_validation_context/match_typed_subject_alt_names"
        ),
        &json!([{"san_type": "URI", "matcher": {"prefix": CLIENT_PREFIX}}])
    );
    assert_eq!(
        pointer(
            validation,
            "/validation_context_sds_secret_config/sds_config/path_config_source/path"
        ),
        "/etc/kpool-proxy/sds-validation.yaml"
    );
    let clusters = pointer(b, "/static_resources/clusters")
        .as_array()
        .expect("list");
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["name"], broker::BROKER_CLUSTER);
    assert_eq!(
        pointer(
            &clusters[0],
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address"
        ),
        &json!({"address": "127.0.0.1", "port_value": 9094})
    );

    // The SDS files read the mounted Secret and watch its directory.
    let files: Vec<_> = bundle.sds_files.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        files,
        [broker::CERTIFICATE_SDS_FILE, broker::VALIDATION_SDS_FILE]
    );
    let cert = pointer(&bundle.sds_files[0].1, "/resources/0");
    assert_eq!(cert["@type"], envoy::SECRET);
    assert_eq!(cert["name"], broker::CERTIFICATE_SECRET);
    assert_eq!(
        cert["tls_certificate"],
        json!({
            "certificate_chain": {"filename": "/etc/kpool-proxy/certs/tls.crt"},
            "private_key": {"filename": "/etc/kpool-proxy/certs/tls.key"},
            "watched_directory": {"path": "/etc/kpool-proxy/certs"},
        })
    );
    let ca = pointer(&bundle.sds_files[1].1, "/resources/0");
    assert_eq!(ca["name"], broker::VALIDATION_SECRET);
    assert_eq!(
        ca["validation_context"],
        json!({
            "trusted_ca": {"filename": "/etc/kpool-proxy/certs/ca.crt"},
            "watched_directory": {"path": "/etc/kpool-proxy/certs"},
        })
    );
}

#[test]
fn policy_fields_reach_the_bootstrap() {
    let policy = policy_with(&[
        ("mtlsPort: 9443", "mtlsPort: 19443"),
        ("containerPort: 9443", "containerPort: 19443"),
        ("brokerPort: 9094", "brokerPort: 19094"),
        ("adminPort: 9901", "adminPort: 19901"),
        (
            "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
            "allowedSans: [\"spiffe://a/b\", app.streaming.svc, 10.0.0.1, ops@example.com]",
        ),
        ("dir: /etc/kpool-proxy/certs", "dir: /var/run/mesh"),
        ("certificate: tls.crt", "certificate: chain.pem"),
    ]);
    let options = BrokerOptions {
        config_dir: PathBuf::from("/config/"),
        certs_dir: None,
    };
    let bundle = broker::render(&policy, &options).expect("renders");
    let b = &bundle.bootstrap;
    assert_eq!(
        pointer(
            b,
            "/static_resources/listeners/0/address/socket_address/port_value"
        ),
        19443
    );
    assert_eq!(
        pointer(b, "/admin/address/socket_address/port_value"),
        19901
    );
    assert_eq!(
        pointer(
            b,
            "/static_resources/clusters/0/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"
        ),
        19094
    );
    let sans: Vec<_> = pointer(
        b,
        "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config/common_tls_context/combined_validation_context/default_validation_context/match_typed_subject_alt_names",
    )
    .as_array()
    .expect("list")
    .iter()
    .map(|m| (m["san_type"].as_str().unwrap_or(""), m["matcher"]["exact"].as_str().unwrap_or("")))
    .collect();
    assert_eq!(
        sans,
        [
            ("URI", "spiffe://a/b"),
            ("DNS", "app.streaming.svc"),
            ("IP_ADDRESS", "10.0.0.1"),
            ("EMAIL", "ops@example.com"),
        ]
    );
    assert_eq!(
        pointer(
            b,
            "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config/common_tls_context/tls_certificate_sds_secret_configs/0/sds_config/path_config_source"
        ),
        &json!({"path": "/config/sds-certificate.yaml", "watched_directory": {"path": "/config"}})
    );
    assert_eq!(
        pointer(
            &bundle.sds_files[0].1,
            "/resources/0/tls_certificate/certificate_chain/filename"
        ),
        "/var/run/mesh/chain.pem"
    );
}

#[test]
fn yaml_and_json_print_the_same_document() {
    let bundle = broker::render(&policy_with(&[]), &BrokerOptions::default()).expect("renders");
    let yaml = Format::Yaml.print(&bundle.bootstrap).expect("yaml");
    let json = Format::Json.print(&bundle.bootstrap).expect("json");
    let from_yaml: Value = serde_saphyr::from_str(&yaml).expect("YAML parses");
    let from_json: Value = serde_json::from_str(&json).expect("JSON parses");
    assert_eq!(from_yaml, bundle.bootstrap);
    assert_eq!(from_json, bundle.bootstrap);
    assert!(!yaml.contains(">-"), "no folded scalars:\n{yaml}");
}

#[test]
fn certs_dir_replaces_the_pod_path_and_must_hold_every_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    let policy = policy_with(&[]);
    let options = BrokerOptions {
        certs_dir: Some(certs.clone()),
        ..BrokerOptions::default()
    };
    let e = broker::render(&policy, &options).expect_err("no files yet");
    assert!(matches!(e, MeshError::MissingCertFiles { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "--certs-dir {}: missing tls.crt (mesh.tls.certificate), tls.key (mesh.tls.privateKey), ca.crt (mesh.tls.ca)",
            certs.display()
        )
    );
    write_certs(&certs, common::BROKER_SAN);
    std::fs::remove_file(certs.join("ca.crt")).expect("rm");
    let e = broker::render(&policy, &options).expect_err("no CA");
    assert!(
        e.to_string().ends_with(": missing ca.crt (mesh.tls.ca)"),
        "{e}"
    );
    write_certs(&certs, common::BROKER_SAN);
    let bundle = broker::render(&policy, &options).expect("renders");
    assert_eq!(
        pointer(
            &bundle.sds_files[0].1,
            "/resources/0/tls_certificate/watched_directory/path"
        ),
        certs.to_str().expect("utf-8")
    );

    let relative = BrokerOptions {
        config_dir: PathBuf::from("config"),
        certs_dir: None,
    };
    let e = broker::render(&policy, &relative).expect_err("relative config dir");
    assert_eq!(
        e.to_string(),
        "--config-dir \"config\": expected an absolute path (where Envoy reads it)"
    );
}

fn kpool_mesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
        .args(args)
        .env_remove("KPOOL_MESH_CERTS_DIR")
        .env_remove("KPOOL_MESH_CONFIG_DIR")
        .env_remove("KPOOL_MESH_OUT")
        .output()
        .expect("run kpool-mesh")
}

#[test]
fn cli_prints_the_bootstrap_and_refuses_bad_input_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = policy_file(tmp.path(), &[]);
    let policy = policy.to_str().expect("utf-8");
    let out = kpool_mesh(&["broker-config", "--policy", policy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    let expected = broker::render(&policy_with(&[]), &BrokerOptions::default()).expect("renders");
    assert_eq!(printed, expected.bootstrap);
    let out = kpool_mesh(&["broker-config", "--policy", policy, "--format", "json"]);
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, expected.bootstrap);

    // --out writes the bootstrap and its SDS files.
    let out_dir = tmp.path().join("out");
    let out = kpool_mesh(&[
        "broker-config",
        "--policy",
        policy,
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["envoy.yaml", "sds-certificate.yaml", "sds-validation.yaml"] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }

    // Missing certificate files.
    let out = kpool_mesh(&[
        "broker-config",
        "--policy",
        policy,
        "--certs-dir",
        "/nonexistent/certs",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kpool-mesh: error: --certs-dir /nonexistent/certs: missing tls.crt (mesh.tls.certificate), tls.key (mesh.tls.privateKey), ca.crt (mesh.tls.ca)\n"
    );

    // An empty SAN list, and ports that collide, are refused naming the field.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    let bad_policy = policy_file(
        &bad,
        &[
            (
                "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
                "allowedSans: []",
            ),
            ("brokerPort: 9094", "brokerPort: 9443"),
        ],
    );
    let out = kpool_mesh(&[
        "broker-config",
        "--policy",
        bad_policy.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mesh.brokerPort: 9443 is already mesh.mtlsPort"),
        "{err}"
    );
    assert!(
        err.contains("mesh.allowedSans: must list at least one"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Ports beyond 65535 for the id range.
    let big = tmp.path().join("big");
    std::fs::create_dir_all(&big).expect("dir");
    let big_policy = policy_file(&big, &[("basePort: 9091", "basePort: 65500")]);
    let out = kpool_mesh(&[
        "broker-config",
        "--policy",
        big_policy.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mesh.basePort: 65500 + broker ids 0..=99"),
        "{err}"
    );
}
