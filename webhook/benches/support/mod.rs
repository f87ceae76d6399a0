//! What the process-level harnesses (`load`, `memory`) share: a server process on loopback,
//! started and stopped, and its numbers from `/proc`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A line of `/proc/<pid>/status` in MiB (`VmHWM`: the peak resident set so far).
    pub fn status_mib(&self, field: &str) -> Result<f64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("{}: /proc status: {e}", self.name))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{}: no {field} in /proc status", self.name))?;
        Ok(kib / 1024.0)
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `/readyz` on `metrics` answers 200 (20 s at most).
pub fn wait_ready(metrics: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(mut s) = TcpStream::connect(metrics) {
            let _ = write!(
                s,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("kpool-webhook did not become ready within 20 s".into())
}

/// The release `kpool-webhook serve` with the certificates in `dir` and a file audit log
/// there, plus the flags in the env var `extra_args_env`; ready when this returns.
pub fn start_webhook(dir: &Path, extra_args_env: &str) -> Result<Server, String> {
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new(env!("CARGO_BIN_EXE_kpool-webhook"))
        .arg("serve")
        .args(["--listen", &addr.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .args(["--log", "warn"])
        .args(
            std::env::var(extra_args_env)
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start kpool-webhook: {e}"))?;
    let server = Server {
        name: "kpool-webhook",
        addr,
        child,
    };
    wait_ready(metrics)?;
    Ok(server)
}
