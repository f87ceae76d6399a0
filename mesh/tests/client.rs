//! The client sidecar's configuration: one listener per broker on the Kafka cluster's
//! address, one mTLS cluster per broker sidecar; bad input named clearly.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Command;

use common::{BROKER_SAN, policy_with, write_certs};
use kpool_mesh::MeshError;
use kpool_mesh::client::{self, ClientOptions, Endpoint, parse_broker_ids, parse_endpoint_flag};
use kpool_policy::Policy;
use serde_json::{Value, json};

const K8S_B: &str = include_str!("../../examples/policy-k8s-b.yaml");

fn both() -> Vec<Policy> {
    vec![
        policy_with(&[]),
        Policy::from_yaml(K8S_B, "policy-k8s-b.yaml").expect("valid"),
    ]
}

fn options(brokers: &[i32]) -> ClientOptions {
    ClientOptions {
        brokers: brokers.to_vec(),
        ..ClientOptions::default()
    }
}

fn pointer<'a>(v: &'a Value, path: &str) -> &'a Value {
    v.pointer(path)
        .unwrap_or_else(|| panic!("{path} not in {v:#}"))
}

fn usage(policies: &[Policy], o: &ClientOptions) -> String {
    match client::render(policies, o) {
        Err(e @ (MeshError::Usage(_) | MeshError::Policies { .. })) => e.to_string(),
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn every_broker_of_the_stretch_cluster_is_one_port_on_one_address() {
    let routes = client::routes(&both(), &options(&[0, 1, 2, 100, 101, 102])).expect("routes");
    let got: Vec<(i32, SocketAddrV4, &str, u16)> = routes
        .iter()
        .map(|r| {
            (
                r.broker_id,
                r.listen,
                r.upstream_host.as_str(),
                r.upstream_port,
            )
        })
        .collect();
    let addr = |p| SocketAddrV4::new([127, 0, 0, 5].into(), p);
    assert_eq!(
        got,
        [
            (
                0,
                addr(9091),
                "kafka-0.kafka-headless.streaming.k8s-a.kafka.internal",
                9443
            ),
            (
                1,
                addr(9092),
                "kafka-1.kafka-headless.streaming.k8s-a.kafka.internal",
                9443
            ),
            (
                2,
                addr(9093),
                "kafka-2.kafka-headless.streaming.k8s-a.kafka.internal",
                9443
            ),
            (
                100,
                addr(9191),
                "kafka-0.kafka-headless.streaming.k8s-b.kafka.internal",
                9443
            ),
            (
                101,
                addr(9192),
                "kafka-1.kafka-headless.streaming.k8s-b.kafka.internal",
                9443
            ),
            (
                102,
                addr(9193),
                "kafka-2.kafka-headless.streaming.k8s-b.kafka.internal",
                9443
            ),
        ]
    );
    assert!(routes.iter().all(|r| r.broker_san == BROKER_SAN));
    // Each listener is where the broker advertises its CLIENT listener: the same template.
    let p = policy_with(&[]);
    let id = p.identity("kafka-1", "streaming", 1).expect("identity");
    assert!(
        p.advertised_listener(&id)
            .contains("CLIENT://127.0.0.5:9092"),
        "{}",
        p.advertised_listener(&id)
    );
}

#[test]
fn the_bootstrap_listens_per_broker_and_dials_its_sidecar_over_mtls() {
    let bundle = client::render(&both(), &options(&[0, 100])).expect("renders");
    let b = &bundle.bootstrap;
    assert_eq!(
        pointer(b, "/node"),
        &json!({"id": "kpool-mesh-client.stretch", "cluster": "stretch"})
    );
    assert_eq!(
        pointer(b, "/admin/address/socket_address/address"),
        "127.0.0.1"
    );
    let listeners = pointer(b, "/static_resources/listeners")
        .as_array()
        .expect("list");
    let clusters = pointer(b, "/static_resources/clusters")
        .as_array()
        .expect("list");
    assert_eq!(listeners.len(), 2);
    assert_eq!(clusters.len(), 2);
    let l = &listeners[1];
    assert_eq!(pointer(l, "/name"), "kafka-stretch-100");
    assert_eq!(
        pointer(l, "/address/socket_address"),
        &json!({"address": "127.0.0.5", "port_value": 9191})
    );
    assert_eq!(
        pointer(l, "/filter_chains/0/filters/0/typed_config/cluster"),
        "kafka-stretch-100"
    );
    assert!(
        l.pointer("/filter_chains/0/transport_socket").is_none(),
        "plaintext from the application on loopback"
    );
    let c = &clusters[1];
    assert_eq!(pointer(c, "/name"), "kafka-stretch-100");
    assert_eq!(pointer(c, "/type"), "STRICT_DNS");
    assert_eq!(
        pointer(
            c,
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address"
        ),
        &json!({"address": "kafka-0.kafka-headless.streaming.k8s-b.kafka.internal", "port_value": 9443})
    );
    let tls = pointer(c, "/transport_socket/typed_config");
    assert_eq!(pointer(tls, "/@type"), kpool_mesh::envoy::UPSTREAM_TLS);
    assert_eq!(
        pointer(tls, "/sni"),
        "kafka-0.kafka-headless.streaming.k8s-b.kafka.internal"
    );
    let common = pointer(tls, "/common_tls_context");
    assert_eq!(
        pointer(common, "/tls_params/tls_minimum_protocol_version"),
        "TLSv1_2"
    );
    assert_eq!(
        pointer(
            common,
            "/combined_validation_context/default_validation_context/match_typed_subject_alt_names"
        ),
        &json!([{"san_type": "URI", "matcher": {"exact": BROKER_SAN}}]),
        "the broker's identity, exactly"
    );
    assert_eq!(
        pointer(
            common,
            "/tls_certificate_sds_secret_configs/0/sds_config/path_config_source/path"
        ),
        "/etc/kpool-proxy/sds-certificate.yaml"
    );
    // The SDS files name the client's own mounted Secret.
    let files: BTreeMap<&str, &Value> = bundle.sds_files.iter().map(|(n, v)| (*n, v)).collect();
    assert_eq!(
        pointer(
            files["sds-certificate.yaml"],
            "/resources/0/tls_certificate/certificate_chain/filename"
        ),
        "/etc/kpool-proxy/certs/tls.crt"
    );
}

#[test]
fn a_pinned_endpoint_replaces_the_internal_host_and_an_ip_needs_no_dns() {
    let mut o = options(&[0, 1]);
    o.endpoints.insert(
        1,
        Endpoint {
            host: "10.1.2.3".to_owned(),
            port: 19443,
        },
    );
    let bundle = client::render(&both(), &o).expect("renders");
    let c = pointer(&bundle.bootstrap, "/static_resources/clusters/1");
    assert_eq!(pointer(c, "/type"), "STATIC");
    assert_eq!(
        pointer(
            c,
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address"
        ),
        &json!({"address": "10.1.2.3", "port_value": 19443})
    );
    assert!(
        c.pointer("/transport_socket/typed_config/sni").is_none(),
        "no SNI for an IP"
    );
    // The broker's identity is still required.
    assert_eq!(
        pointer(
            c,
            "/transport_socket/typed_config/common_tls_context/combined_validation_context/default_validation_context/match_typed_subject_alt_names/0/matcher/exact"
        ),
        BROKER_SAN
    );
}

#[test]
fn template_choices_reach_the_host() {
    let p = policy_with(&[(
        "kafka-headless.{namespace}.{cluster}.kafka.internal:9092",
        "brokers.{namespace}.svc:9092",
    )]);
    let mut o = options(&[4]);
    o.statefulset = "kafka-eu".to_owned();
    o.namespace = Some("data".to_owned());
    let r = client::routes(&[p], &o).expect("routes");
    assert_eq!(r[0].upstream_host, "kafka-eu-4.brokers.data.svc");
    o.listener = "REPLICATION".to_owned();
    assert_eq!(
        usage(&[policy_with(&[])], &o),
        "policy.yaml: listener.template has no REPLICATION listener (\"INTERNAL://kafka-eu-4.kafka-headless.data.k8s-a.kafka.internal:9092,CLIENT://127.0.0.5:9095\"); pass --listener NAME or --endpoint 4=HOST:PORT"
    );
}

#[test]
fn bad_choices_are_named() {
    let two = both();
    assert_eq!(
        usage(&two, &options(&[0, 250])),
        "--brokers: no policy's broker ids (brokers.idBase + mesh.maxBrokersPerCluster) hold broker 250: policy.yaml (cluster k8s-a): 0..=99; policy-k8s-b.yaml (cluster k8s-b): 100..=199"
    );
    assert_eq!(
        usage(&two, &options(&[1, 1])),
        "--brokers: broker 1 is named twice"
    );
    assert_eq!(
        usage(&two, &options(&[])),
        "--brokers: name at least one broker id"
    );
    let mut o = options(&[0]);
    o.endpoints.insert(
        5,
        Endpoint {
            host: "h".to_owned(),
            port: 1,
        },
    );
    assert_eq!(
        usage(&two, &o),
        "--endpoint 5=...: broker 5 is not in --brokers"
    );
    let same = vec![policy_with(&[]), policy_with(&[])];
    assert!(
        usage(&same, &options(&[0])).starts_with(
            "policies policy.yaml and policy.yaml: brokers.idBase: broker ids 0..=99 (cluster k8s-a) and 0..=99 (cluster k8s-a) overlap"
        ),
        "{}",
        usage(&same, &options(&[0]))
    );
    let many = policy_with(&[("namespaces: [streaming]", "namespaces: [streaming, batch]")]);
    assert_eq!(
        usage(&[many], &options(&[0])),
        "policy.yaml: brokers.namespaces lists 2 namespaces (streaming, batch); pass --namespace"
    );
}

#[test]
fn flag_values_are_parsed_or_named() {
    assert_eq!(
        parse_broker_ids("0-2,100-102"),
        Ok(vec![0, 1, 2, 100, 101, 102])
    );
    assert_eq!(parse_broker_ids(" 7 "), Ok(vec![7]));
    for (bad, why) in [
        ("", "expected broker ids, e.g. 0,1,2 or 0-2,100-102"),
        ("a", "\"a\": \"a\" is not a broker id"),
        (
            "3-1",
            "\"3-1\": expected FIRST-LAST with FIRST <= LAST, at most 10000 ids",
        ),
        (
            "0-99999",
            "\"0-99999\": expected FIRST-LAST with FIRST <= LAST, at most 10000 ids",
        ),
    ] {
        assert_eq!(parse_broker_ids(bad), Err(why.to_owned()), "{bad}");
    }
    assert_eq!(
        parse_endpoint_flag("3=10.0.0.1:9443"),
        Ok((
            3,
            Endpoint {
                host: "10.0.0.1".to_owned(),
                port: 9443
            }
        ))
    );
    assert_eq!(
        parse_endpoint_flag("3=[::1]:9443").map(|(_, e)| e.host),
        Ok("::1".to_owned())
    );
    for (bad, why) in [
        (
            "10.0.0.1:9443",
            "\"10.0.0.1:9443\": expected BROKER_ID=HOST:PORT",
        ),
        ("x=h:1", "\"x=h:1\": \"x\" is not a broker id"),
        ("1=h", "\"h\": expected HOST:PORT"),
        ("1=h:0", "\"h:0\": \"0\" is not a port (1-65535)"),
        ("1=:80", "\":80\": the host is empty"),
    ] {
        assert_eq!(parse_endpoint_flag(bad), Err(why.to_owned()), "{bad}");
    }
}

#[test]
fn certs_dir_must_hold_the_client_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut o = options(&[0]);
    o.certs_dir = Some(tmp.path().to_path_buf());
    match client::render(&both(), &o) {
        Err(MeshError::MissingCertFiles { missing, .. }) => assert_eq!(
            missing.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            ["tls.crt", "tls.key", "ca.crt"]
        ),
        other => panic!("{other:?}"),
    }
    write_certs(tmp.path(), common::CLIENT_SAN);
    let bundle = client::render(&both(), &o).expect("renders");
    let ca = bundle.sds_files[1]
        .1
        .pointer("/resources/0/validation_context/trusted_ca/filename")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .expect("ca path");
    assert_eq!(ca, tmp.path().join("ca.crt"));
}

#[test]
fn cli_renders_both_policies_and_names_bad_flags() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(args)
            .output()
            .expect("run kpool-mesh")
    };
    let out = run(&[
        "client-config",
        "--policy",
        "examples/policy.yaml",
        "--policy",
        "examples/policy-k8s-b.yaml",
        "--brokers",
        "0-2,100-102",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        pointer(&v, "/static_resources/listeners")
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    let out = run(&[
        "client-config",
        "--policy",
        "examples/policy.yaml",
        "--brokers",
        "0",
        "--endpoint",
        "0=10.0.0.1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--endpoint <ID=HOST:PORT>") && err.contains("expected HOST:PORT"),
        "{err}"
    );
    let help = run(&["client-config", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--policy",
        "--brokers",
        "--endpoint",
        "--certs-dir",
        "KPOOL_MESH_BROKERS",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
}
