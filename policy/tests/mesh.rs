//! The `mesh` section: the Kafka cluster's loopback address, one port per broker id, the
//! sidecar's ports and identities; every error names the field.

use std::net::Ipv4Addr;

use kpool_policy::mesh::{check_disjoint, port_range};
use kpool_policy::{DEFAULT_POLICY_YAML, Policy, PolicyError};

const K8S_B: &str = include_str!("../../examples/policy-k8s-b.yaml");

fn with(replace: &str, by: &str) -> String {
    assert!(
        DEFAULT_POLICY_YAML.contains(replace),
        "fixture text {replace:?} not in the policy"
    );
    DEFAULT_POLICY_YAML.replacen(replace, by, 1)
}

fn messages(yaml: &str) -> Vec<String> {
    let e: PolicyError = Policy::from_yaml(yaml, "policy.yaml").expect_err("must be rejected");
    e.field_errors().iter().map(ToString::to_string).collect()
}

#[test]
fn example_mesh_section_loads_with_its_defaults() {
    let p = Policy::builtin().expect("valid");
    let m = &p.spec().mesh;
    assert_eq!(m.kafka_cluster, "stretch");
    assert_eq!(m.address, Ipv4Addr::new(127, 0, 0, 5));
    assert_eq!((m.base_port, m.max_brokers_per_cluster), (9091, 100));
    assert_eq!(
        (m.mtls_port, m.broker_port, m.admin_port),
        (9443, 9094, 9901)
    );
    assert_eq!(m.allowed_sans, ["spiffe://kpool.io/kafka/stretch/client/*"]);
    assert_eq!(m.broker_san(), "spiffe://kpool.io/kafka/stretch/broker");
    assert_eq!(m.tls.dir, "/etc/kpool-proxy/certs");
    assert_eq!(
        (
            m.tls.certificate.as_str(),
            m.tls.private_key.as_str(),
            m.tls.ca.as_str()
        ),
        ("tls.crt", "tls.key", "ca.crt")
    );

    // Only the required fields: everything else takes the documented default.
    let start = DEFAULT_POLICY_YAML.find("mesh:\n").expect("mesh section");
    let end = start
        + DEFAULT_POLICY_YAML[start..]
            .find("\n\n")
            .expect("section end");
    let minimal = DEFAULT_POLICY_YAML.replacen(
        &DEFAULT_POLICY_YAML[start..end],
        "mesh:\n  kafkaCluster: stretch\n  basePort: 9091\n  allowedSans: [\"spiffe://c\"]",
        1,
    );
    let q = Policy::from_yaml(&minimal, "minimal").expect("valid");
    assert_eq!(q.spec().mesh.address, m.address);
    assert_eq!(q.spec().mesh.tls, m.tls);
    assert_eq!(q.spec().mesh.mtls_port, 9443);
}

#[test]
fn both_clusters_share_the_address_and_get_disjoint_ports_by_broker_id() {
    let a = Policy::builtin().expect("k8s-a");
    let b = Policy::from_yaml(K8S_B, "policy-k8s-b.yaml").expect("k8s-b");
    assert_eq!(
        a.spec().mesh,
        b.spec().mesh,
        "the mesh names the Kafka cluster"
    );
    let listener = |p: &Policy, ordinal| {
        let id = p
            .identity("kafka-1", "streaming", ordinal)
            .expect("identity");
        (id.broker_id, id.port, p.advertised_listener(&id))
    };
    let (id, port, l) = listener(&a, 1);
    assert_eq!((id, port), (1, 9092));
    assert!(l.ends_with(",CLIENT://127.0.0.5:9092"), "{l}");
    let (id, port, l) = listener(&b, 1);
    assert_eq!((id, port), (101, 9192));
    assert!(l.ends_with(",CLIENT://127.0.0.5:9192"), "{l}");
    assert_eq!(port_range(a.spec()), Some(9091..=9190));
    assert_eq!(port_range(b.spec()), Some(9191..=9290));
    check_disjoint(&a, &b).expect("the example policies are disjoint");
    check_disjoint(&b, &a).expect("either way round");
}

#[test]
fn overlapping_id_ranges_of_one_kafka_cluster_are_refused() {
    let a = Policy::builtin().expect("k8s-a");
    // idBase 50 with 100 brokers per cluster: ids 50..=149 overlap k8s-a's 0..=99.
    let b = Policy::from_yaml(
        &K8S_B.replacen("\n  idBase: 100\n", "\n  idBase: 50\n", 1),
        "b",
    )
    .expect("b");
    let e = check_disjoint(&a, &b).expect_err("overlap");
    assert_eq!(
        e,
        "brokers.idBase: broker ids 0..=99 (cluster k8s-a) and 50..=149 (cluster k8s-b) overlap (brokers.idBase + mesh.maxBrokersPerCluster)"
    );
    // Disjoint ids but a different base port: ports 9191.. (a) and 9141+100.. overlap.
    let b =
        Policy::from_yaml(&K8S_B.replacen("basePort: 9091", "basePort: 9041", 1), "b").expect("b");
    let e = check_disjoint(&a, &b).expect_err("port overlap");
    assert!(e.starts_with("mesh.basePort: ports 9091..=9190 (cluster k8s-a) and 9141..=9240 (cluster k8s-b) overlap on 127.0.0.5"), "{e}");
    // The same Kafka cluster at two addresses is a mistake, ...
    let b = Policy::from_yaml(
        &K8S_B.replacen("address: 127.0.0.5", "address: 127.0.0.6", 1),
        "b",
    )
    .expect("b");
    let e = check_disjoint(&a, &b).expect_err("address differs");
    assert!(e.starts_with("mesh.address: Kafka cluster \"stretch\" is 127.0.0.5 in cluster k8s-a but 127.0.0.6 in cluster k8s-b"), "{e}");
    // ...and so are two Kafka clusters at one address.
    let b = Policy::from_yaml(
        &K8S_B.replacen("kafkaCluster: stretch", "kafkaCluster: other", 1),
        "b",
    )
    .expect("b");
    let e = check_disjoint(&a, &b).expect_err("shared address");
    assert!(e.starts_with("mesh.address: Kafka clusters"), "{e}");
    let b = Policy::from_yaml(
        &K8S_B
            .replacen("kafkaCluster: stretch", "kafkaCluster: other", 1)
            .replacen("address: 127.0.0.5", "address: 127.0.0.6", 1),
        "b",
    )
    .expect("b");
    check_disjoint(&a, &b).expect("another Kafka cluster at its own address");
}

#[test]
fn ports_beyond_65535_for_the_id_range_are_refused() {
    assert_eq!(
        messages(&with("basePort: 9091", "basePort: 65500")),
        [
            "mesh.basePort: 65500 + broker ids 0..=99 (brokers.idBase 0 + up to mesh.maxBrokersPerCluster 100) gives ports up to 65599, beyond 65535"
        ]
    );
    // The last port exactly 65535 is fine.
    Policy::from_yaml(&with("basePort: 9091", "basePort: 65436"), "p").expect("fits");
    let m = messages(&with("idBase: 0", "idBase: 60000").replacen(
        "maxBrokersPerCluster: 100",
        "maxBrokersPerCluster: 10",
        1,
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("mesh.basePort: 9091 + broker ids 60000..=60009"),
        "{m:?}"
    );
    assert_eq!(
        messages(&with(
            "maxBrokersPerCluster: 100",
            "maxBrokersPerCluster: 0"
        )),
        ["mesh.maxBrokersPerCluster: must be at least 1, found 0"]
    );
    assert_eq!(
        messages(&with("basePort: 9091", "basePort: 0")),
        ["mesh.basePort: must be between 1 and 65535, found 0"]
    );
    let m = messages(&with(
        "maxBrokersPerCluster: 100",
        "maxBrokersPerCluster: 4000000000",
    ));
    assert!(
        m[0].starts_with("mesh.maxBrokersPerCluster: broker ids 0..=3999999999"),
        "{m:?}"
    );
}

#[test]
fn pod_ports_that_collide_are_refused() {
    assert_eq!(
        messages(&with("brokerPort: 9094", "brokerPort: 9443")),
        ["mesh.brokerPort: 9443 is already mesh.mtlsPort: both listen in the broker pod"]
    );
    assert_eq!(
        messages(&with("adminPort: 9901", "adminPort: 9094")),
        ["mesh.adminPort: 9094 is already mesh.brokerPort: both listen in the broker pod"]
    );
    assert_eq!(
        messages(&with("mtlsPort: 9443", "mtlsPort: 0")),
        ["mesh.mtlsPort: must be between 1 and 65535, found 0"]
    );
}

#[test]
fn the_sidecars_mtls_port_is_the_mesh_port() {
    assert_eq!(
        messages(&with("mtlsPort: 9443", "mtlsPort: 8443")),
        [
            "sidecar.container.ports[0].containerPort: 9443 is the sidecar's `mtls` port, but mesh.mtlsPort (where its Envoy listens) is 8443"
        ]
    );
    let both = with("mtlsPort: 9443", "mtlsPort: 8443").replacen(
        "containerPort: 9443",
        "containerPort: 8443",
        1,
    );
    Policy::from_yaml(&both, "p").expect("consistent");
}

#[test]
fn sans_must_be_listed() {
    assert_eq!(
        messages(&with(
            "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
            "allowedSans: []"
        )),
        [
            "mesh.allowedSans: must list at least one subject alternative name a client certificate may carry (empty would refuse every client)"
        ]
    );
    assert_eq!(
        messages(&with(
            "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
            "allowedSans: [a.example, \"\", a.example]"
        )),
        [
            "mesh.allowedSans[1]: must not be empty",
            "mesh.allowedSans[2]: duplicate SAN \"a.example\""
        ]
    );
    let e = Policy::from_yaml(
        &with(
            "  allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]\n",
            "",
        ),
        "p",
    )
    .expect_err("required");
    assert!(e.to_string().contains("allowedSans"), "{e}");
}

#[test]
fn address_names_must_be_loopback_and_fields_are_named() {
    assert_eq!(
        messages(&with("address: 127.0.0.5", "address: 10.0.0.5")),
        [
            "mesh.address: 10.0.0.5 is not a loopback address: the mesh address lives on every client pod's loopback (127.0.0.0/8)"
        ]
    );
    assert!(
        messages(&with("address: 127.0.0.5", "address: 127.0.0.1"))[0]
            .starts_with("mesh.address: 127.0.0.1 would share")
    );
    let e = Policy::from_yaml(&with("address: 127.0.0.5", "address: localhost"), "p")
        .expect_err("not an address");
    let PolicyError::Parse { path, .. } = &e else {
        panic!("expected a parse error, got {e:?}");
    };
    assert_eq!(path, "mesh.address");
    assert_eq!(
        messages(&with("kafkaCluster: stretch", "kafkaCluster: Stretch_1")).len(),
        1
    );
    assert!(
        messages(&with("kafkaCluster: stretch", "kafkaCluster: Stretch_1"))[0]
            .starts_with("mesh.kafkaCluster: ")
    );
}

#[test]
fn tls_paths_are_a_directory_and_file_names() {
    assert_eq!(
        messages(&with("dir: /etc/kpool-proxy/certs", "dir: certs")),
        ["mesh.tls.dir: \"certs\": expected an absolute path in the pod"]
    );
    assert_eq!(
        messages(&with("privateKey: tls.key", "privateKey: keys/tls.key")),
        [
            "mesh.tls.privateKey: \"keys/tls.key\": expected a file name in mesh.tls.dir (a Secret key)"
        ]
    );
    assert_eq!(
        messages(&with("ca: ca.crt", "ca: tls.crt")),
        ["mesh.tls.ca: \"tls.crt\" is already mesh.tls.certificate"]
    );
}

#[test]
fn the_old_listener_base_port_is_refused_by_name() {
    let e = Policy::from_yaml(
        &with(
            "  portEnv: KPOOL_BROKER_PORT",
            "  portEnv: KPOOL_BROKER_PORT\n  basePort: 9091",
        ),
        "p",
    )
    .expect_err("moved to mesh.basePort");
    let PolicyError::Parse { path, message, .. } = &e else {
        panic!("expected a parse error, got {e:?}");
    };
    assert_eq!(path, "listener.basePort");
    assert!(message.contains("unknown field `basePort`"), "{message}");
}

#[test]
fn a_wildcard_only_ends_a_uri_and_the_broker_san_is_one_name() {
    const SANS: &str = "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]";
    assert_eq!(
        messages(&with(
            SANS,
            "allowedSans: [\"*.apps.example\", \"spiffe://k/*/x\", \"spiffe://k/a*\", \"spiffe://k/c/*\"]"
        )),
        [
            "mesh.allowedSans[0]: \"*.apps.example\": a wildcard is only allowed as the last segment of a URI (\"spiffe://kpool.io/kafka/stretch/client/*\")",
            "mesh.allowedSans[1]: \"spiffe://k/*/x\": a wildcard is only allowed as the last segment of a URI (\"spiffe://kpool.io/kafka/stretch/client/*\")",
            "mesh.allowedSans[2]: \"spiffe://k/a*\": a wildcard is only allowed as the last segment of a URI (\"spiffe://kpool.io/kafka/stretch/client/*\")",
        ]
    );
    assert_eq!(
        messages(&with(
            SANS,
            &format!("{SANS}\n  brokerSan: \"spiffe://k/*\"")
        )),
        [
            "mesh.brokerSan: \"spiffe://k/*\": expected one SAN (no wildcard, no whitespace), or leave it out for spiffe://kpool.io/kafka/<kafkaCluster>/broker"
        ]
    );
    let p = Policy::from_yaml(
        &with(
            SANS,
            &format!("{SANS}\n  brokerSan: brokers.kafka.internal"),
        ),
        "p",
    )
    .expect("valid");
    assert_eq!(p.spec().mesh.broker_san(), "brokers.kafka.internal");
}

#[test]
fn clients_are_allowed_by_exact_name_or_uri_prefix() {
    let p = Policy::builtin().expect("valid");
    let m = &p.spec().mesh;
    assert_eq!(
        m.client_san("orders"),
        "spiffe://kpool.io/kafka/stretch/client/orders"
    );
    assert!(m.allows_client(&m.client_san("orders")));
    for refused in [
        "spiffe://kpool.io/kafka/stretch/client/",
        "spiffe://kpool.io/kafka/stretch/client",
        "spiffe://kpool.io/kafka/other/client/orders",
        "spiffe://kpool.io/kafka/stretch/broker",
    ] {
        assert!(!m.allows_client(refused), "{refused}");
    }
    let q = Policy::from_yaml(
        &with(
            "allowedSans: [\"spiffe://kpool.io/kafka/stretch/client/*\"]",
            "allowedSans: [app.streaming.svc]",
        ),
        "p",
    )
    .expect("valid");
    assert!(q.spec().mesh.allows_client("app.streaming.svc"));
    assert!(!q.spec().mesh.allows_client("other.streaming.svc"));
}
