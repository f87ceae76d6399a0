//! The whole data path on loopback, with real parts: a Kafka client (confluent-kafka, i.e.
//! librdkafka) → the client sidecar (real Envoy, `kpool-mesh client-config`) on the Kafka
//! cluster's mesh address → mTLS → the broker sidecar (real Envoy, `kpool-mesh
//! broker-config`) → tansu, which advertises the mesh address and port.
//!
//! Skips without Envoy or tansu unless `KPOOL_REQUIRE_ENVOY=1` / `KPOOL_REQUIRE_TANSU=1`.

mod common;

use std::path::Path;

use common::{
    BROKER_SAN, CLIENT_SAN, LoopbackMesh, TestCa, envoy, kubelet_volume, policy_with,
    produce_consume, python, served_serial, wait_for,
};
use kpool_certs::mesh::MeshOptions;
use kpool_testkit::tansu::{self, NODE_ID};

/// Sends one Kafka ApiVersions request to host:port, over TLS with the given client
/// certificate (`tls`) or in plaintext (`plain`); prints `answered` when a Kafka answer
/// came back, `refused: why` when the peer closed or failed the connection.
const PROBE: &str = r#"
import socket, ssl, struct, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
try:
    if mode == "tls":
        cert, key, ca = sys.argv[4:7]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(ca)
        ctx.load_cert_chain(cert, key)
        s = ctx.wrap_socket(s)
    client = b"probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    head = s.recv(8)
    if len(head) == 8 and struct.unpack(">i", head[4:])[0] == 7:
        print("answered")
    else:
        print("refused: closed after", len(head), "bytes")
except (OSError, ssl.SSLError) as e:
    print("refused:", type(e).__name__, e)
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

fn probe_tls(port: u16, certs: &Path) -> String {
    let file = |n: &str| certs.join(n).display().to_string();
    let (_, out) = python(
        PROBE,
        &[
            "tls",
            "127.0.0.1",
            &port.to_string(),
            &file("tls.crt"),
            &file("tls.key"),
            &file("ca.crt"),
        ],
    );
    out.trim().to_owned()
}

#[test]
fn a_kafka_client_produces_and_consumes_through_both_sidecars() {
    let Some(envoy) = envoy() else { return };
    let Some(tansu_bin) = tansu::available() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    // The certificates `kpool-certs mesh --client orders` writes; the broker's mounted the
    // kubelet's way, so it can be rotated like a Secret.
    let issued = tmp.path().join("mesh-certs");
    let mut opts = MeshOptions::new(&issued);
    opts.clients = vec!["orders".to_owned()];
    kpool_certs::mesh::mesh(&policy_with(&[]).spec().mesh, &opts).expect("kpool-certs mesh");
    let ca = TestCa::from_dir(&issued.join("ca"));
    let broker_certs = tmp.path().join("broker-certs");
    kubelet_volume(&broker_certs, 1, |d| {
        copy_dir(&issued.join("broker"), d);
    });
    let client_certs = issued.join("client-orders");

    let mesh = LoopbackMesh::start(&envoy, &tansu_bin, tmp.path(), &broker_certs, &client_certs);
    let (advertised, mtls, admin_broker, mesh_port) = (
        mesh.bootstrap.clone(),
        mesh.mtls_port,
        mesh.broker_admin,
        mesh.mesh_port,
    );

    let (ok, out) = produce_consume(&advertised, 20);
    assert!(ok, "through the mesh:\n{out}\n{}", mesh.logs());
    assert!(
        out.contains(&format!("brokers {NODE_ID}={advertised}")),
        "Metadata sends the client to its sidecar: {out}"
    );
    assert!(out.contains("ok 20 20"), "{out}");

    // The broker sidecar checks the client: the mesh CA and an allowed SAN.
    assert_eq!(probe_tls(mtls, &client_certs), "answered");
    let wrong_san = tmp.path().join("wrong-san");
    ca.issue(&wrong_san, "spiffe://kpool.io/kafka/other/client/orders");
    let refused = probe_tls(mtls, &wrong_san);
    assert!(
        refused.starts_with("refused"),
        "a SAN not allowed: {refused}"
    );
    let other_ca = tmp.path().join("other-ca");
    TestCa::new("another CA").issue(&other_ca, CLIENT_SAN);
    std::fs::copy(client_certs.join("ca.crt"), other_ca.join("ca.crt")).expect("trust the mesh CA");
    let refused = probe_tls(mtls, &other_ca);
    assert!(refused.starts_with("refused"), "another CA: {refused}");

    // The broker certificate replaced the kubelet's way is served to the next connection,
    // by the same Envoy.
    let first = wait_for("the broker certificate served", || {
        served_serial(admin_broker)
    });
    kubelet_volume(&broker_certs, 2, |d| {
        ca.issue(d, BROKER_SAN);
    });
    wait_for("the rotated broker certificate served", || {
        served_serial(admin_broker).filter(|s| *s != first)
    });
    let (ok, out) = produce_consume(&advertised, 5);
    assert!(ok && out.contains("ok 5 5"), "after rotation: {out}");

    // The client sidecar checks the broker: a broker certificate without the brokers'
    // identity is refused, and the path works again once it is right.
    let plain = |port: u16| python(PROBE, &["plain", "127.0.0.5", &port.to_string()]).1;
    let second = served_serial(admin_broker).expect("served");
    kubelet_volume(&broker_certs, 3, |d| {
        ca.issue(d, "spiffe://kpool.io/kafka/other/broker");
    });
    wait_for("the wrong broker certificate served", || {
        served_serial(admin_broker).filter(|s| *s != second)
    });
    let refused = plain(mesh_port);
    assert!(
        refused.trim().starts_with("refused"),
        "a broker with another identity: {refused}"
    );
    kubelet_volume(&broker_certs, 4, |d| {
        ca.issue(d, BROKER_SAN);
    });
    wait_for("the broker identity restored", || {
        (plain(mesh_port).trim() == "answered").then_some(())
    });
    assert!(
        Path::new(&format!("/proc/{}", mesh.broker_envoy.pid())).exists(),
        "no restart"
    );
}
