//! kpool-probe, the real binary, against a fake agent on a loopback port that writes
//! scripted raw bytes: the probe reads and checks the whole answer (status line, framing,
//! JSON, the pod it names), keeps one deadline for the whole exchange, and prints one
//! sanitised line. Exit codes: 0 ready, 1 not ready, 2 cannot tell.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use std::io::Write as _;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

/// Writes the script to every connection once it has read the request head: each piece
/// after its pause, then closes. A piece that cannot be written (the probe left) ends it.
async fn fake_agent(script: Vec<(Duration, Vec<u8>)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(
                    request.starts_with(b"GET /v1/ready/streaming/kafka-1 HTTP/1.1\r\n"),
                    "{}",
                    String::from_utf8_lossy(&request)
                );
                // The script from a blocking thread: std's sleep keeps sub-millisecond
                // pauses (tokio's timer rounds them up to a millisecond).
                let Ok(mut sock) = sock.into_std() else {
                    return;
                };
                let _ = sock.set_nonblocking(false);
                let _ = sock.set_nodelay(true);
                let _ = tokio::task::spawn_blocking(move || {
                    for (pause, bytes) in script {
                        std::thread::sleep(pause);
                        if sock.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                })
                .await;
            });
        }
    });
    addr
}

/// The whole answer at once.
async fn fake(bytes: impl Into<Vec<u8>>) -> SocketAddr {
    fake_agent(vec![(Duration::ZERO, bytes.into())]).await
}

/// An HTTP/1.1 answer with a Content-Length.
fn http(status: &str, content_type: &str, body: &str) -> String {
    with_status_line(&format!("HTTP/1.1 {status}"), content_type, body)
}

/// An answer with this exact status line and a Content-Length.
fn with_status_line(line: &str, content_type: &str, body: &str) -> String {
    format!(
        "{line}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n{body}",
        body.len()
    )
}

fn json_answer(status: &str, body: &str) -> String {
    http(status, "application/json", body)
}

const READY: &str = r#"{"namespace":"streaming","pod":"kafka-1","ready":true,"broker_id":1,"reasons":["ready: broker 1 registered, every replica in the ISR"],"poll_age_ms":12}"#;
const NOT_READY: &str = r#"{"namespace":"streaming","pod":"kafka-1","ready":false,"broker_id":1,"reasons":["broker 1 is not registered","stale"],"poll_age_ms":12}"#;

/// What one run of the probe did.
#[derive(Debug)]
struct Run {
    code: i32,
    /// Standard output as written (not trimmed).
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The one line printed, without its newline; fails unless exactly one line was.
    fn line(&self) -> &str {
        let line = self
            .stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("output ends with a newline: {self:?}"));
        assert!(
            !line.contains('\n') && self.stderr.is_empty(),
            "one line: {self:?}"
        );
        line
    }
}

/// Runs the probe for `streaming/kafka-1` against `addr`, off the runtime.
async fn probe(addr: SocketAddr, extra: &[&str]) -> Run {
    let mut args: Vec<String> = [
        "--agent",
        &format!("http://{addr}"),
        "--namespace",
        "streaming",
        "--pod",
        "kafka-1",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_kpool-probe"))
            .args(&args)
            .env_clear()
            .output()
            .expect("probe runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: start.elapsed(),
        }
    })
    .await
    .expect("join")
}

/// Asserts the run exited `code` with one line containing every one of `parts`.
fn expect(run: &Run, code: i32, parts: &[&str]) {
    let line = run.line();
    assert_eq!(run.code, code, "{line}");
    for part in parts {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_answers_still_decide() {
    let run = probe(fake(json_answer("200 OK", READY)).await, &[]).await;
    assert_eq!(
        (run.code, run.line()),
        (0, "ready: broker 1 registered, every replica in the ISR")
    );
    let run = probe(
        fake(json_answer("503 Service Unavailable", NOT_READY)).await,
        &[],
    )
    .await;
    assert_eq!(
        (run.code, run.line()),
        (1, "not ready: broker 1 is not registered; stale")
    );

    // In 3-byte pieces (the blank line after the header split across them): read whole.
    let answer = json_answer("200 OK", READY);
    let pieces = answer
        .as_bytes()
        .chunks(3)
        .map(|p| (Duration::from_micros(300), p.to_vec()))
        .collect();
    let run = probe(fake_agent(pieces).await, &[]).await;
    expect(&run, 0, &["ready: broker 1"]);

    // Chunked, with a chunk extension and a trailer; and HTTP/1.0 read to the close.
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n",
        10,
        &READY[..10],
        READY.len() - 10,
        &READY[10..]
    );
    let run = probe(fake(chunked).await, &[]).await;
    expect(&run, 0, &["ready: broker 1"]);
    let close = format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{READY}");
    let run = probe(fake(close).await, &[]).await;
    expect(&run, 0, &["ready: broker 1"]);

    // The agent's 404 for a pod it cannot map keeps its reason.
    let run = probe(
        fake(json_answer(
            "404 Not Found",
            r#"{"error":"pod streaming/kafka-1 has no -N ordinal suffix"}"#,
        ))
        .await,
        &[],
    )
    .await;
    expect(&run, 2, &["HTTP 404", "no -N ordinal suffix"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_is_not_enough_the_answer_must_say_ready_for_this_pod() {
    // 200 with ready:false: status and body disagree, so the probe cannot tell.
    let run = probe(fake(json_answer("200 OK", NOT_READY)).await, &[]).await;
    expect(&run, 2, &["HTTP 200", "\"ready\": false"]);
    // ... and the other way round.
    let run = probe(
        fake(json_answer("503 Service Unavailable", READY)).await,
        &[],
    )
    .await;
    expect(&run, 2, &["HTTP 503", "\"ready\": true"]);

    // An HTML page (a proxy, a captive portal, another service on the port).
    let html = "<html><head><title>Welcome</title></head>\n<body>It works!</body></html>\n";
    let run = probe(fake(http("200 OK", "text/html", html)).await, &[]).await;
    expect(&run, 2, &["HTTP 200", "not the agent's JSON", "text/html"]);
    let run = probe(
        fake(http("503 Service Unavailable", "text/html", html)).await,
        &[],
    )
    .await;
    expect(&run, 2, &["HTTP 503", "not the agent's JSON"]);

    // JSON, but not a readiness answer.
    for body in [
        r#"{"ok":true}"#,
        r#"{"namespace":"streaming","pod":"kafka-1","ready":"yes"}"#,
        "[true]",
        "true",
    ] {
        let run = probe(fake(json_answer("200 OK", body)).await, &[]).await;
        expect(&run, 2, &["HTTP 200"]);
    }

    // A readiness answer for another pod (or namespace): not this pod's.
    for (other, named) in [
        (READY.replace("kafka-1", "kafka-2"), "streaming/kafka-2"),
        (READY.replace("streaming", "batch"), "batch/kafka-1"),
        (READY.replace(r#""pod":"kafka-1","#, ""), "no pod"),
    ] {
        let run = probe(fake(json_answer("200 OK", &other)).await, &[]).await;
        expect(&run, 2, &[named, "expected streaming/kafka-1"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_status_lines_and_framing_cannot_tell() {
    for head in [
        "garbage 200 OK",
        "HTTP/1.1 2OO OK",
        "HTTP/1.1200 OK",
        "HTTP/2 200 OK",
        "HTTP/1.1 200OK",
        "http/1.1 200 OK",
        " HTTP/1.1 200 OK",
        "HTTP/1.1 1000 OK",
    ] {
        let answer = with_status_line(head, "application/json", READY);
        let run = probe(fake(answer).await, &[]).await;
        expect(&run, 2, &["status line", &format!("found {head:?}")]);
    }
    // Not HTTP at all, and no header end before the close.
    let run = probe(fake(READY).await, &[]).await;
    expect(&run, 2, &[]);
    let run = probe(fake("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n").await, &[]).await;
    expect(&run, 2, &["before the end of its header"]);

    // Framing that cannot be trusted.
    for (headers, what) in [
        ("content-length: 5\r\ncontent-length: 6", "content-length"),
        ("content-length: +5", "content-length"),
        ("content-length: 99999999999999999999999", "content-length"),
        ("transfer-encoding: gzip", "transfer-encoding"),
        ("transfer-encoding: chunked\r\ncontent-length: 5", "both"),
        ("no colon here", "header line"),
    ] {
        let answer = format!("HTTP/1.1 200 OK\r\n{headers}\r\n\r\n{READY}");
        let run = probe(fake(answer).await, &[]).await;
        expect(&run, 2, &[what]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_is_not_ready_even_when_its_prefix_parses() {
    // The server promised more than it sent, but what it sent is a whole JSON answer
    // (the rest would have been padding): the probe must not trust it.
    let promised = READY.len() + 64;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {promised}\r\n\r\n{READY}"
    );
    let run = probe(fake(answer).await, &[]).await;
    expect(
        &run,
        2,
        &[&format!("{} of {promised} body bytes", READY.len())],
    );

    // Cut in the middle of the JSON.
    let cut = &json_answer("200 OK", READY)[..READY.len() / 2 + 80];
    let run = probe(fake(cut).await, &[]).await;
    expect(&run, 2, &["body bytes"]);

    // Chunked, closed before the last chunk.
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{READY}\r\n",
        READY.len()
    );
    let run = probe(fake(chunked).await, &[]).await;
    expect(&run, 2, &["chunked body"]);

    // A chunk whose size line is not hex.
    let bad =
        format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{READY}\r\n0\r\n\r\n");
    let run = probe(fake(bad).await, &[]).await;
    expect(&run, 2, &["chunk size"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_server_cannot_hold_the_probe_past_its_timeout() {
    // Header at once, then the body one byte every 200 ms (the whole body would take
    // about 30 s): with --timeout-ms 1000 the probe gives up at its deadline.
    let answer = json_answer("200 OK", READY);
    let split = answer.len() - READY.len();
    let mut script = vec![(Duration::ZERO, answer.as_bytes()[..split].to_vec())];
    script.extend(
        answer.as_bytes()[split..]
            .iter()
            .map(|b| (Duration::from_millis(200), vec![*b])),
    );
    let addr = fake_agent(script).await;
    let run = probe(addr, &["--timeout-ms", "1000"]).await;
    expect(&run, 2, &["no complete answer within 1000 ms"]);
    // Generous: process start and a loaded 2-core machine; the drip alone is 30 s.
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);

    // The header itself dripped: the same deadline.
    let addr = fake_agent(
        answer
            .bytes()
            .map(|b| (Duration::from_millis(200), vec![b]))
            .collect(),
    )
    .await;
    let run = probe(addr, &["--timeout-ms", "1000"]).await;
    expect(&run, 2, &["no complete answer within 1000 ms"]);
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);

    // Faster than a per-read timeout: a byte every 100 µs of a body padded to 200 000
    // bytes (20 s or more). A timeout per read keeps being met while the bytes keep
    // coming; one deadline for the whole exchange stops it.
    let padded = READY.replacen('{', &format!("{{{}", " ".repeat(200_000)), 1);
    let answer = json_answer("200 OK", &padded);
    let split = answer.len() - padded.len();
    let mut script = vec![(Duration::ZERO, answer.as_bytes()[..split].to_vec())];
    script.extend(
        answer.as_bytes()[split..]
            .iter()
            .map(|b| (Duration::from_micros(100), vec![*b])),
    );
    let addr = fake_agent(script).await;
    let run = probe(addr, &["--timeout-ms", "1000"]).await;
    expect(&run, 2, &["no complete answer within 1000 ms"]);
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_with_newlines_and_escape_sequences_print_one_sanitised_line() {
    let hostile = r#"{"namespace":"streaming","pod":"kafka-1","ready":false,"broker_id":1,"reasons":["first\nsecond\r\nthird","\u001b[31mred\u001b[0m\u0007 tab\there","line\u2028sep \u202eevil \u0085nel \u009b31m"]}"#;
    let run = probe(
        fake(json_answer("503 Service Unavailable", hostile)).await,
        &[],
    )
    .await;
    let line = run.line();
    assert_eq!(run.code, 1, "{line}");
    assert_eq!(
        line,
        r"not ready: first\nsecond\r\nthird; \u{1b}[31mred\u{1b}[0m\u{7} tab\there; line\u{2028}sep \u{202e}evil \u{85}nel \u{9b}31m"
    );
    assert!(!line.chars().any(char::is_control), "{line:?}");

    // Ready, with the same in its reason; and an error text from a 404.
    let ready = READY.replace("ready: broker 1", "ready:\n\u{1b}[2Jbroker 1");
    let ready = ready.replace('\n', "\\n").replace('\u{1b}', "\\u001b");
    let run = probe(fake(json_answer("200 OK", &ready)).await, &[]).await;
    assert_eq!(
        (run.code, run.line()),
        (
            0,
            r"ready:\n\u{1b}[2Jbroker 1 registered, every replica in the ISR"
        )
    );
    let run = probe(
        fake(json_answer(
            "404 Not Found",
            r#"{"error":"no such pod\nkpool-probe: ready"}"#,
        ))
        .await,
        &[],
    )
    .await;
    expect(&run, 2, &[r"no such pod\nkpool-probe: ready"]);

    // A body that is not JSON is quoted, escaped, in the error.
    let run = probe(
        fake(http(
            "200 OK",
            "text/plain",
            "ok\n\u{1b}[32mREADY\u{1b}[0m\n",
        ))
        .await,
        &[],
    )
    .await;
    expect(&run, 2, &[r"ok\n\u{1b}[32mREADY"]);
}
