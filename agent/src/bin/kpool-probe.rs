//! kpool-probe: the broker's readiness probe. Asks the kpool agent on this node whether the
//! broker may be ready, prints one line with the reason (Kubernetes shows it in the pod's
//! events) and exits 0 (ready), 1 (not ready) or 2 (could not ask).
//!
//! Standard library only, so it builds statically and needs no DNS: the agent is reached
//! at the node's IP (`HOST_IP`, from the downward API).
//!
//! `kpool-probe install DEST` copies this binary to DEST (the webhook's init container
//! uses it to put the probe into the broker pod).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: kpool-probe [--agent http://HOST:PORT | --agent-port PORT] [--namespace NS] [--pod NAME] [--timeout-ms N]
       kpool-probe install DEST

Asks the kpool agent whether this broker pod may be ready.
  --agent URL        agent address (default http://$HOST_IP:<agent port>)
  --agent-port PORT  agent port on $HOST_IP (default 8475)
  --namespace NS     pod namespace (default $POD_NAMESPACE)
  --pod NAME         pod name (default $POD_NAME)
  --timeout-ms N     total time allowed (default 1500; keep it under the probe's timeoutSeconds)
Exit: 0 ready, 1 not ready, 2 could not ask.";

struct Args {
    agent: Option<String>,
    agent_port: u16,
    namespace: Option<String>,
    pod: Option<String>,
    timeout: Duration,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("install") {
        return install(argv.get(1).map(String::as_str));
    }
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => return fail(&format!("{e}\n{USAGE}")),
    };
    match ask(&args) {
        Ok((ready, reason)) => {
            println!("{reason}");
            if ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    println!("kpool-probe: could not ask the agent: {msg}");
    ExitCode::from(2)
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        agent: std::env::var("KPOOL_AGENT_URL").ok(),
        agent_port: 8475,
        namespace: std::env::var("POD_NAMESPACE").ok(),
        pod: std::env::var("POD_NAME").ok(),
        timeout: Duration::from_millis(1500),
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--agent" => a.agent = Some(value()?),
            "--agent-port" => {
                let v = value()?;
                a.agent_port = v
                    .parse()
                    .map_err(|_| format!("--agent-port: expected a port, found {v:?}"))?;
            }
            "--namespace" => a.namespace = Some(value()?),
            "--pod" => a.pod = Some(value()?),
            "--timeout-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout-ms: expected milliseconds, found {v:?}"))?;
                a.timeout = Duration::from_millis(ms.max(1));
            }
            "-h" | "--help" => return Err("help".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn ask(args: &Args) -> Result<(bool, String), String> {
    let deadline = Instant::now() + args.timeout;
    let base = match &args.agent {
        Some(url) => url.clone(),
        None => {
            let ip = std::env::var("HOST_IP")
                .map_err(|_| "HOST_IP is not set (and no --agent URL)".to_owned())?;
            if ip.contains(':') {
                format!("http://[{ip}]:{}", args.agent_port)
            } else {
                format!("http://{ip}:{}", args.agent_port)
            }
        }
    };
    let ns = args
        .namespace
        .as_deref()
        .ok_or("POD_NAMESPACE is not set (and no --namespace)")?;
    let pod = args
        .pod
        .as_deref()
        .ok_or("POD_NAME is not set (and no --pod)")?;
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("--agent: expected an http:// URL, found {base:?}"))?
        .trim_end_matches('/');
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .map_err(|e| format!("agent address {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("agent address {authority:?} resolves to nothing"))?;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, remaining())
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_write_timeout(Some(remaining()))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET /v1/ready/{ns}/{pod} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(remaining()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!(
                    "read from {addr} (timeout {}ms): {e}",
                    args.timeout.as_millis()
                ));
            }
        }
        if buf.len() > 1 << 20 {
            return Err("answer larger than 1 MiB".to_owned());
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the agent's answer is not HTTP")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let reason = json["reasons"][0]
        .as_str()
        .or_else(|| json["error"].as_str())
        .unwrap_or("no reason given")
        .to_owned();
    match status {
        "200" => Ok((true, reason)),
        "503" => Ok((
            false,
            format!("not ready: {}", reasons(&json).unwrap_or(reason)),
        )),
        other => Err(format!("agent answered HTTP {other}: {reason}")),
    }
}

fn reasons(json: &serde_json::Value) -> Option<String> {
    let list: Vec<&str> = json["reasons"]
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    (!list.is_empty()).then(|| list.join("; "))
}

fn install(dest: Option<&str>) -> ExitCode {
    let Some(dest) = dest else {
        println!("kpool-probe install: missing DEST\n{USAGE}");
        return ExitCode::from(2);
    };
    let result = std::env::current_exe().and_then(|me| {
        let tmp = format!("{dest}.tmp");
        std::fs::copy(&me, &tmp)?;
        set_executable(&tmp)?;
        std::fs::rename(&tmp, dest)
    });
    match result {
        Ok(()) => {
            println!("kpool-probe installed at {dest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("kpool-probe install: cannot copy to {dest}: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(unix)]
fn set_executable(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_: &str) -> std::io::Result<()> {
    Ok(())
}
