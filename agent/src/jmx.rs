//! BrokerState from a Prometheus JMX exporter: a plain-HTTP GET and a text-format scan.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::health::BrokerState;

/// Largest exporter page read (a JMX exporter page is typically a few hundred KB).
const MAX_PAGE: usize = 16 * 1024 * 1024;

/// Finds `metric` (with or without labels) in Prometheus text and reads its value.
pub fn parse_broker_state(text: &str, metric: &str) -> Result<BrokerState, String> {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => match rest.find('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            },
            Some(' ' | '\t') => rest,
            _ => continue, // a longer metric name with this prefix
        };
        let value = rest.split_whitespace().next().unwrap_or_default();
        let v: f64 = value
            .parse()
            .map_err(|_| format!("{metric}: expected a number, found {value:?}"))?;
        return Ok(BrokerState::from_code(v as i64));
    }
    Err(format!("metric {metric} not found on the exporter page"))
}

/// GETs `url` (http:// only) and reads the broker state, all within `timeout`.
pub async fn fetch_broker_state(
    url: &str,
    metric: &str,
    timeout: Duration,
) -> Result<BrokerState, String> {
    let page = tokio::time::timeout(timeout, get(url))
        .await
        .map_err(|_| format!("{url}: no answer within {}ms", timeout.as_millis()))??;
    parse_broker_state(&page, metric).map_err(|e| format!("{url}: {e}"))
}

async fn get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut s = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("{url}: cannot connect: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_PAGE as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("{url}: HTTP status {status}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// Joins a chunked body; good enough to scan for one metric line.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "kafka_server_kafkaserver_brokerstate";

    #[test]
    fn reads_the_gauge_with_or_without_labels() {
        let page = "# HELP x\nkafka_server_kafkaserver_brokerstate_extra 9\nkafka_server_kafkaserver_brokerstate{job=\"kafka\"} 3.0\n";
        assert_eq!(parse_broker_state(page, M), Ok(BrokerState::Running));
        assert_eq!(
            parse_broker_state(&format!("{M} 2\n"), M),
            Ok(BrokerState::Recovery)
        );
        assert!(
            parse_broker_state("other 1\n", M)
                .expect_err("absent")
                .contains("not found")
        );
        assert!(
            parse_broker_state(&format!("{M} NaNx\n"), M)
                .expect_err("bad")
                .contains("expected a number")
        );
    }

    #[tokio::test]
    async fn fetches_from_a_real_http_endpoint() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for body in [
                "# TYPE x gauge\nkafka_server_kafkaserver_brokerstate 6.0\n",
                "",
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = if body.is_empty() {
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                s.write_all(resp.as_bytes()).await.expect("write");
            }
        });
        let url = format!("http://{addr}/metrics");
        let t = Duration::from_secs(2);
        assert_eq!(
            fetch_broker_state(&url, M, t).await,
            Ok(BrokerState::PendingControlledShutdown)
        );
        let e = fetch_broker_state(&url, M, t).await.expect_err("500");
        assert!(e.contains("HTTP status 500"), "{e}");
        let e = fetch_broker_state("https://x/metrics", M, t)
            .await
            .expect_err("https");
        assert!(e.contains("expected an http:// URL"), "{e}");
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
