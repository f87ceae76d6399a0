//! tansu, a real Kafka-compatible broker (`scripts/install-tansu`), and a real Kafka client
//! (Python confluent-kafka, librdkafka), for the interop tests.
//!
//! Without them a test explains why and passes, unless `KPOOL_REQUIRE_TANSU=1` (CI), when
//! it fails.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kpool_agent::kafka::{KafkaClient, KafkaConfig};
use kpool_agent::snapshot::Snapshot;
use tokio::runtime::Runtime;

/// The env var that makes a missing tansu or confluent-kafka a failure.
pub const REQUIRE: &str = "KPOOL_REQUIRE_TANSU";

/// The node id tansu gives itself (it has no flag to change it).
pub const NODE_ID: i32 = 111;

fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| v == "1")
}

/// Skip (print why) or, when [`REQUIRE`]d, fail.
pub fn skip_or_fail(why: &str) {
    assert!(!required(), "{REQUIRE}=1 but {why}");
    eprintln!("skipping a tansu interop test: {why} (set {REQUIRE}=1 to make this a failure)");
}

/// `tansu` on PATH, else in cargo's bin directory.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    on_path
        .chain(cargo_home.map(|h| h.join("bin").join("tansu")))
        .find(|p| p.is_file())
}

/// tansu and confluent-kafka, or `None` after [`skip_or_fail`].
pub fn available() -> Option<PathBuf> {
    let Some(tansu) = find() else {
        skip_or_fail("no tansu binary on PATH or in ~/.cargo/bin (run scripts/install-tansu)");
        return None;
    };
    if let Err(why) = ensure_confluent_kafka() {
        skip_or_fail(&why);
        return None;
    }
    Some(tansu)
}

/// A running `tansu broker` with in-memory storage, killed when dropped.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
}

impl Tansu {
    /// Starts tansu listening on `listen` and advertising `advertised` (host:port), logging
    /// to `dir/tansu.log`, and waits until it accepts connections (30 s at most).
    pub fn start(tansu: &Path, listen: SocketAddr, advertised: &str, dir: &Path) -> Self {
        let log = dir.join("tansu.log");
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{listen}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu.display()));
        let mut broker = Self { child, log, listen };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "tansu exited with {status} before listening:\n{}",
                    broker.log()
                );
            }
            if TcpStream::connect(listen).is_ok() {
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {listen} within 30s:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Tansu::start`] on a free port of 127.0.0.1, advertising that address.
    pub fn start_local(tansu: &Path, dir: &Path) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start(tansu, listen, &listen.to_string(), dir)
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The agent's Kafka client bootstrapping from this broker (5 s per network step) and
    /// a current-thread runtime to drive it, once a snapshot satisfies `ready` (20 s at
    /// most, else the test fails with tansu's log); with that snapshot.
    pub fn client_when(
        &self,
        ready: impl Fn(&Snapshot) -> bool,
    ) -> (Runtime, KafkaClient, Snapshot) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut client = KafkaClient::new(KafkaConfig {
            bootstrap: vec![self.listen.to_string()],
            timeout: Duration::from_secs(5),
            ..KafkaConfig::default()
        })
        .expect("client");
        // What was created may take a moment to show in Metadata.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match runtime.block_on(client.snapshot()) {
                Ok(s) if ready(&s) => return (runtime, client, s),
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no snapshot as expected from tansu within 20s; last: {other:#?}\nbroker log:\n{}",
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// What tansu logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes sure `confluent_kafka` imports, installing it with pip if missing.
pub fn ensure_confluent_kafka() -> Result<(), String> {
    let imports = || {
        Command::new("python3")
            .args(["-c", "import confluent_kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports() {
        return Ok(());
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "confluent-kafka",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !out.status.success() || !imports() {
        return Err(format!(
            "pip install confluent-kafka failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
