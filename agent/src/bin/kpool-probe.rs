//! kpool-probe: the broker's readiness probe. Asks the kpool agent on this node whether the
//! broker may be ready, prints one line with the reason (Kubernetes shows it in the pod's
//! events) and exits 0 (ready), 1 (not ready) or 2 (cannot tell).
//!
//! It believes only a whole, well-formed answer about its own pod: an HTTP/1.x status line,
//! a body framed by Content-Length, chunked or the close, read completely within one
//! deadline for the whole exchange (connect, send, read), JSON naming the pod it asked
//! about, and `ready` agreeing with the status (200 true, 503 false). Anything else is
//! "cannot tell". The line printed has control characters escaped, whatever the agent said.
//!
//! Standard library (and serde_json) only, so it builds statically and needs no DNS: the
//! agent is reached at the node's IP (`HOST_IP`, from the downward API).
//!
//! `kpool-probe install DEST` copies this binary to DEST (the webhook's init container
//! uses it to put the probe into the broker pod).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

const USAGE: &str = "usage: kpool-probe [--agent http://HOST:PORT | --agent-port PORT] [--namespace NS] [--pod NAME] [--timeout-ms N]
       kpool-probe install DEST

Asks the kpool agent whether this broker pod may be ready.
  --agent URL        agent address (default http://$HOST_IP:<agent port>)
  --agent-port PORT  agent port on $HOST_IP (default 8475)
  --namespace NS     pod namespace (default $POD_NAMESPACE)
  --pod NAME         pod name (default $POD_NAME)
  --timeout-ms N     time allowed for the whole exchange: connect, send, read the answer
                     (default 1500; keep it under the probe's timeoutSeconds)

Prints one line (control characters escaped as \\n, \\u{1b}, ...) and exits:
  0  ready: the agent answered HTTP 200 with \"ready\": true for this pod
  1  not ready: the agent answered HTTP 503 with \"ready\": false for this pod
  2  cannot tell: bad arguments; the agent unreachable or its answer not complete within
     --timeout-ms; or the answer not a readiness answer for this pod (another status, a
     malformed status line or framing, a truncated or non-JSON body, another pod named,
     status and \"ready\" disagreeing)";

/// The most an answer may take, header and body.
const MAX_ANSWER: usize = 1 << 20;
/// The most its header may take.
const MAX_HEAD: usize = 64 << 10;

struct Args {
    agent: Option<String>,
    agent_port: u16,
    namespace: Option<String>,
    pod: Option<String>,
    timeout: Duration,
}

/// What the agent said about this pod.
enum Answer {
    Ready(String),
    NotReady(String),
}

/// Why the probe cannot tell (exit 2).
enum Problem {
    /// The agent could not be asked, or did not answer in time.
    Ask(String),
    /// It answered, but not with a readiness answer for this pod.
    Answer(String),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("install") {
        return install(argv.get(1).map(String::as_str));
    }
    let args = match parse(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = writeln!(std::io::stdout().lock(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            return say(
                2,
                &format!(
                    "kpool-probe: could not ask the agent: {e} (kpool-probe --help for usage)"
                ),
            );
        }
    };
    match ask(&args) {
        Ok(Answer::Ready(reason)) => say(0, &reason),
        Ok(Answer::NotReady(reasons)) => say(1, &format!("not ready: {reasons}")),
        Err(Problem::Ask(e)) => say(2, &format!("kpool-probe: could not ask the agent: {e}")),
        Err(Problem::Answer(e)) => say(2, &format!("kpool-probe: cannot tell: {e}")),
    }
}

/// Prints `line` as one line, control characters escaped, and exits with `code`.
fn say(code: u8, line: &str) -> ExitCode {
    // A closed stdout must not turn the answer into a panic (exit 101).
    let _ = writeln!(std::io::stdout().lock(), "{}", one_line(line));
    ExitCode::from(code)
}

/// `text` on one line: line breaks, tabs, other control characters (C0, DEL, C1), the
/// Unicode line and paragraph separators and bidirectional overrides escaped (`\n`, `\r`,
/// `\t`, `\u{1b}`), so an answer can neither add lines nor drive the terminal or the
/// event viewer.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_layout_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Line and paragraph separators, and the bidirectional embeddings, overrides and
/// isolates that reorder what a reader sees.
fn is_layout_control(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The arguments, or `None` for `--help`.
fn parse(argv: &[String]) -> Result<Option<Args>, String> {
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
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(a))
}

/// A namespace or pod name as it may appear in the request path.
fn name<'a>(value: Option<&'a str>, what: &str) -> Result<&'a str, Problem> {
    let v = value.ok_or_else(|| Problem::Ask(format!("{what} is not set")))?;
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(Problem::Ask(format!(
            "{what}: expected a Kubernetes name (a letter or digit, then letters, digits, '-', '.'), found {v:?}"
        )));
    }
    Ok(v)
}

fn ask(args: &Args) -> Result<Answer, Problem> {
    let deadline = Instant::now() + args.timeout;
    let base = match &args.agent {
        Some(url) => url.clone(),
        None => {
            let ip = std::env::var("HOST_IP")
                .map_err(|_| Problem::Ask("HOST_IP is not set (and no --agent URL)".to_owned()))?;
            if ip.contains(':') {
                format!("http://[{ip}]:{}", args.agent_port)
            } else {
                format!("http://{ip}:{}", args.agent_port)
            }
        }
    };
    let ns = name(args.namespace.as_deref(), "POD_NAMESPACE (or --namespace)")?;
    let pod = name(args.pod.as_deref(), "POD_NAME (or --pod)")?;
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| Problem::Ask(format!("--agent: expected an http:// URL, found {base:?}")))?
        .trim_end_matches('/');
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .map_err(|e| Problem::Ask(format!("agent address {authority:?}: {e}")))?
        .next()
        .ok_or_else(|| Problem::Ask(format!("agent address {authority:?} resolves to nothing")))?;
    let request = format!(
        "GET /v1/ready/{ns}/{pod} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let (head, body) = exchange(addr, request.as_bytes(), deadline, args.timeout)?;
    judge(&head, &body, ns, pod)
}

/// An answer's status line and the header fields the probe reads.
struct Head {
    status: u16,
    content_type: Option<String>,
    framing: Framing,
    /// Bytes from the status line to the blank line, included.
    len: usize,
}

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked,
    /// HTTP/1.0 style: the body ends when the agent closes the connection.
    Close,
}

/// Sends `request` and reads one whole answer, all before `deadline`.
fn exchange(
    addr: SocketAddr,
    request: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<(Head, Vec<u8>), Problem> {
    let late = |read: usize| {
        Problem::Ask(format!(
            "no complete answer within {} ms ({read} bytes read)",
            timeout.as_millis()
        ))
    };
    // Time left, or None once the deadline has passed.
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut s = TcpStream::connect_timeout(&addr, left().ok_or_else(|| late(0))?)
        .map_err(|e| Problem::Ask(format!("connect {addr}: {e}")))?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    s.set_write_timeout(Some(left().ok_or_else(|| late(0))?))
        .map_err(|e| Problem::Ask(format!("socket to {addr}: {e}")))?;
    s.write_all(request).map_err(|e| {
        if timed_out(&e) {
            late(0)
        } else {
            Problem::Ask(format!("send to {addr}: {e}"))
        }
    })?;

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut head: Option<Head> = None;
    // While the header is incomplete: whether the status line has been checked (it is,
    // as soon as it is whole), and how far the search for the blank line has gone (so a
    // header dripped byte by byte is not searched from the start each time).
    let mut status_checked = false;
    let mut scanned = 0;
    loop {
        if head.is_none() {
            if !status_checked && let Some(eol) = find(&buf, b"\r\n") {
                status(&buf[..eol])?;
                status_checked = true;
            }
            if let Some(end) = find(&buf[scanned..], b"\r\n\r\n") {
                head = Some(parse_head(&buf[..scanned + end + 4])?);
            } else if buf.len() > MAX_HEAD {
                return Err(Problem::Answer(format!(
                    "the agent's answer has no end of header in its first {MAX_HEAD} bytes"
                )));
            } else {
                scanned = buf.len().saturating_sub(3);
            }
        }
        if let Some(h) = head.take() {
            match complete_body(&h, &buf[h.len..])? {
                Some(body) => return Ok((h, body)),
                None => head = Some(h),
            }
        }
        let Some(wait) = left() else {
            return Err(late(buf.len()));
        };
        s.set_read_timeout(Some(wait))
            .map_err(|e| Problem::Ask(format!("socket to {addr}: {e}")))?;
        match s.read(&mut chunk) {
            Ok(0) => {
                let Some(h) = head else {
                    return Err(Problem::Answer(format!(
                        "the agent closed the connection before the end of its header ({} bytes read)",
                        buf.len()
                    )));
                };
                let body = body_at_close(&h, &buf[h.len..])?;
                return Ok((h, body));
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_ANSWER {
                    return Err(Problem::Answer(format!(
                        "the agent's answer is larger than {} KiB",
                        MAX_ANSWER >> 10
                    )));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(late(buf.len())),
            Err(e) => return Err(Problem::Ask(format!("read from {addr}: {e}"))),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn status(line: &[u8]) -> Result<u16, Problem> {
    let bad = || {
        let shown: String = String::from_utf8_lossy(line).chars().take(100).collect();
        Problem::Answer(format!(
            "the agent's answer does not start with an HTTP/1.x status line (\"HTTP/1.1 200 OK\"): found {shown:?}"
        ))
    };
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(bad)?;
    let (code, reason) = rest.split_at_checked(3).ok_or_else(bad)?;
    if !code.iter().all(u8::is_ascii_digit) || !(reason.is_empty() || reason[0] == b' ') {
        return Err(bad());
    }
    Ok(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// Parses the status line and header fields (`bytes` ends with the blank line).
fn parse_head(bytes: &[u8]) -> Result<Head, Problem> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status = status(lines.next().unwrap_or_default().as_bytes())?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut content_type = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let field = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']));
        let Some((name, value)) = field else {
            return Err(Problem::Answer(format!(
                "header line without a \"name: value\" field: found {line:?}"
            )));
        };
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Problem::Answer(format!(
                    "content-length: expected a decimal byte count, found {value:?}"
                )));
            }
            let n = value
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_ANSWER)
                .ok_or_else(|| {
                    Problem::Answer(format!(
                        "content-length: {value} is more than the {} KiB an answer may take",
                        MAX_ANSWER >> 10
                    ))
                })?;
            if let Some(before) = length.filter(|before| *before != n) {
                return Err(Problem::Answer(format!(
                    "conflicting content-length fields: {before} and {n}"
                )));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(Problem::Answer(format!(
                    "transfer-encoding: expected chunked, found {value:?}"
                )));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(Problem::Answer(
                "the answer has both transfer-encoding and content-length: its end is ambiguous"
                    .to_owned(),
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    Ok(Head {
        status,
        content_type,
        framing,
        len: bytes.len(),
    })
}

/// The body, once `rest` (the bytes after the header) holds all of it.
fn complete_body(head: &Head, rest: &[u8]) -> Result<Option<Vec<u8>>, Problem> {
    match head.framing {
        Framing::Length(n) => Ok(rest.get(..n).map(<[u8]>::to_vec)),
        Framing::Chunked => dechunk(rest),
        Framing::Close => Ok(None),
    }
}

/// The body when the agent has closed the connection: whole only if it was framed by the
/// close.
fn body_at_close(head: &Head, rest: &[u8]) -> Result<Vec<u8>, Problem> {
    match head.framing {
        Framing::Close => Ok(rest.to_vec()),
        Framing::Length(n) => Err(Problem::Answer(format!(
            "the agent closed the connection after {} of {n} body bytes (HTTP {})",
            rest.len(),
            head.status
        ))),
        Framing::Chunked => Err(Problem::Answer(format!(
            "the agent closed the connection before the end of its chunked body ({} bytes read after the header, HTTP {})",
            rest.len(),
            head.status
        ))),
    }
}

/// Decodes a chunked body: `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, Problem> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let digits = line
            .split_once(';')
            .map_or(line.as_ref(), |(size, _extension)| size)
            .trim_matches([' ', '\t']);
        let size = Some(digits)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| usize::from_str_radix(d, 16).ok())
            .filter(|n| *n <= MAX_ANSWER)
            .ok_or_else(|| {
                Problem::Answer(format!(
                    "chunk size: expected hex digits (at most {} KiB), found {line:?}",
                    MAX_ANSWER >> 10
                ))
            })?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailer fields, up to the blank line.
            loop {
                let Some(eol) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                rest = &rest[eol + 2..];
                if eol == 0 {
                    return Ok(Some(body));
                }
            }
        }
        let Some((data, after)) = rest.split_at_checked(size) else {
            return Ok(None);
        };
        match after.get(..2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => {
                return Err(Problem::Answer(format!(
                    "a chunk of {size} bytes is not followed by CRLF"
                )));
            }
        }
        body.extend_from_slice(data);
        rest = &after[2..];
    }
}

/// Reads the agent's answer: 200 with `"ready": true` or 503 with `"ready": false`, about
/// `ns/pod`.
fn judge(head: &Head, body: &[u8], ns: &str, pod: &str) -> Result<Answer, Problem> {
    let status = head.status;
    let json = serde_json::from_slice::<Value>(body);
    if status != 200 && status != 503 {
        let reason = json
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("body {}", snippet(body)));
        return Err(Problem::Answer(format!(
            "agent answered HTTP {status}: {reason}"
        )));
    }
    let value = json.map_err(|e| {
        Problem::Answer(format!(
            "agent answered HTTP {status} with a body that is not the agent's JSON answer ({}): {e}; body {}",
            head.content_type
                .as_deref()
                .map_or_else(|| "no content-type".to_owned(), |t| format!("content-type {t}")),
            snippet(body)
        ))
    })?;
    let Some(answer) = value.as_object() else {
        return Err(Problem::Answer(format!(
            "agent answered HTTP {status} with JSON {}, expected an object with \"namespace\", \"pod\" and \"ready\"",
            snippet(value.to_string().as_bytes())
        )));
    };
    let field = |key: &str| answer.get(key).and_then(Value::as_str);
    match (field("namespace"), field("pod")) {
        (Some(n), Some(p)) if n == ns && p == pod => {}
        (Some(n), Some(p)) => {
            return Err(Problem::Answer(format!(
                "agent answered HTTP {status} about pod {n}/{p}, expected {ns}/{pod}"
            )));
        }
        _ => {
            return Err(Problem::Answer(format!(
                "agent answered HTTP {status} naming no pod (no \"namespace\" and \"pod\" strings), expected {ns}/{pod}"
            )));
        }
    }
    let ready = match answer.get("ready") {
        Some(Value::Bool(ready)) => *ready,
        other => {
            return Err(Problem::Answer(format!(
                "agent answered HTTP {status} without a true or false \"ready\": found {}",
                other.map_or_else(|| "none".to_owned(), Value::to_string)
            )));
        }
    };
    let reasons: Vec<&str> = answer
        .get("reasons")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match (status, ready) {
        (200, true) => Ok(Answer::Ready(reasons.first().map_or_else(
            || "ready (no reason given)".to_owned(),
            |r| (*r).to_owned(),
        ))),
        (503, false) if reasons.is_empty() => Ok(Answer::NotReady("no reason given".to_owned())),
        (503, false) => Ok(Answer::NotReady(reasons.join("; "))),
        _ => Err(Problem::Answer(format!(
            "agent answered HTTP {status} but \"ready\": {ready} ({})",
            reasons.join("; ")
        ))),
    }
}

/// The start of `bytes`, quoted with escapes, for an error.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let shown: String = text.chars().take(80).collect();
    if shown.len() < text.len() {
        format!("{shown:?}...")
    } else {
        format!("{shown:?}")
    }
}

fn install(dest: Option<&str>) -> ExitCode {
    let Some(dest) = dest else {
        return say(
            2,
            "kpool-probe install: missing DEST (kpool-probe --help for usage)",
        );
    };
    let result = std::env::current_exe().and_then(|me| {
        let tmp = format!("{dest}.tmp");
        std::fs::copy(&me, &tmp)?;
        set_executable(&tmp)?;
        std::fs::rename(&tmp, dest)
    });
    match result {
        Ok(()) => say(0, &format!("kpool-probe installed at {dest}")),
        Err(e) => say(
            2,
            &format!("kpool-probe install: cannot copy to {dest}: {e}"),
        ),
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
