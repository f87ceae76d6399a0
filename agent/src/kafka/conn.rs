//! One connection to one broker: framing, correlation ids, per-call timeouts.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KafkaError;
use super::tls::Tls;
use super::wire::Schema;

/// The largest response frame accepted. A full Metadata response for 100,000 partitions
/// at RF 6 is around 10 MiB; anything near this cap is garbage (an HTTP or TLS peer on a
/// plaintext port announces a length in the gigabytes).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

// Sync so that `KafkaClient` is Sync and futures holding `&KafkaClient` stay Send.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// An open, framed connection to one broker.
pub(crate) struct Connection {
    addr: String,
    /// The socket's peer address, to recognise which broker this is in Metadata.
    pub(crate) peer: Option<std::net::SocketAddr>,
    stream: Box<dyn Stream>,
    timeout: Duration,
    client_id: StrBytes,
    next_correlation_id: i32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A request label for messages: `Metadata v12`.
pub(crate) fn label(key: ApiKey, version: i16) -> String {
    format!("{key:?} v{version}")
}

impl Connection {
    /// The bound on each network step of this connection.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Open TCP (and TLS when configured) to `addr`, each step bounded by `timeout`.
    pub(crate) async fn open(
        addr: &str,
        timeout: Duration,
        tls: Option<&Tls>,
        client_id: &str,
    ) -> Result<Self, KafkaError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::Timeout {
                addr: addr.to_owned(),
                api: "connect".to_owned(),
                after: timeout,
            })?
            .map_err(|source| KafkaError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        // Requests are small and strictly request/response: Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().ok();
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = tls.server_name_for(addr)?;
                let tls_stream = tokio::time::timeout(timeout, tls.connector.connect(name, tcp))
                    .await
                    .map_err(|_| KafkaError::Timeout {
                        addr: addr.to_owned(),
                        api: "TLS handshake".to_owned(),
                        after: timeout,
                    })?
                    .map_err(|source| KafkaError::TlsHandshake {
                        addr: addr.to_owned(),
                        source,
                    })?;
                Box::new(tls_stream)
            }
        };
        Ok(Self {
            addr: addr.to_owned(),
            peer,
            stream,
            timeout,
            client_id: StrBytes::from_string(client_id.to_owned()),
            next_correlation_id: 1,
        })
    }

    /// The address this connection was opened to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Send one request and read its response, the whole exchange bounded by the timeout.
    /// The body is checked structurally (see `wire`) before kafka-protocol decodes it, and
    /// must be consumed exactly.
    pub(crate) async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        schema: &Schema,
    ) -> Result<Resp, KafkaError> {
        let body = self.exchange(key, version, request).await?;
        self.decode(key, version, schema, body)
    }

    /// Send one request and return the raw response body (after the response header).
    pub(crate) async fn exchange<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Bytes, KafkaError> {
        let api = label(key, version);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(key, version, correlation_id, &self.client_id, request)
            .map_err(|detail| KafkaError::Encode {
                api: api.clone(),
                detail,
            })?;

        let timeout = self.timeout;
        let addr = self.addr.clone();
        let mut payload =
            match tokio::time::timeout(timeout, self.write_then_read(&frame, &api)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(KafkaError::Timeout {
                        addr,
                        api,
                        after: timeout,
                    });
                }
            };

        let header_version = key.response_header_version(version);
        let header = ResponseHeader::decode(&mut payload, header_version).map_err(|e| {
            KafkaError::Decode {
                addr: self.addr.clone(),
                api: api.clone(),
                detail: format!("response header v{header_version}: {e:#}"),
            }
        })?;
        if header.correlation_id != correlation_id {
            return Err(KafkaError::Decode {
                addr: self.addr.clone(),
                api,
                detail: format!(
                    "expected correlation id {correlation_id}, found {}",
                    header.correlation_id
                ),
            });
        }
        Ok(payload)
    }

    /// Decode a response body as `Resp` at `version`, after the structural walk.
    pub(crate) fn decode<Resp: Decodable>(
        &self,
        key: ApiKey,
        version: i16,
        schema: &Schema,
        body: Bytes,
    ) -> Result<Resp, KafkaError> {
        super::decode::decode_body(schema, version, body).map_err(|detail| KafkaError::Decode {
            addr: self.addr.clone(),
            api: label(key, version),
            detail,
        })
    }

    async fn write_then_read(&mut self, frame: &[u8], api: &str) -> Result<Bytes, KafkaError> {
        let addr = self.addr.clone();
        let io_err = |source| KafkaError::Io {
            addr: addr.clone(),
            api: api.to_owned(),
            source,
        };
        self.stream.write_all(frame).await.map_err(io_err)?;
        self.stream.flush().await.map_err(io_err)?;

        let mut len = [0u8; 4];
        if let Err(e) = self.stream.read_exact(&mut len).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                KafkaError::Closed {
                    addr: self.addr.clone(),
                    api: api.to_owned(),
                    detail: "before answering".to_owned(),
                }
            } else {
                io_err(e)
            });
        }
        let size = i32::from_be_bytes(len);
        // A response holds at least the 4-byte correlation id.
        if size < 4 || size as usize > MAX_FRAME_BYTES {
            return Err(KafkaError::FrameSize {
                addr: self.addr.clone(),
                api: api.to_owned(),
                size: i64::from(size),
                max: MAX_FRAME_BYTES,
            });
        }
        let size = size as usize;
        // Grow the buffer as bytes arrive instead of trusting the announced size up front.
        let mut payload = Vec::with_capacity(size.min(64 * 1024));
        (&mut self.stream)
            .take(size as u64)
            .read_to_end(&mut payload)
            .await
            .map_err(io_err)?;
        if payload.len() < size {
            return Err(KafkaError::Closed {
                addr: self.addr.clone(),
                api: api.to_owned(),
                detail: format!("after {} of {size} bytes", payload.len()),
            });
        }
        Ok(Bytes::from(payload))
    }
}

/// A complete request frame: size prefix, header (in the version the API requires for
/// `version`), body.
fn encode_request<Req: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    request: &Req,
) -> Result<Vec<u8>, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    let header_version = key.request_header_version(version);

    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("request header v{header_version}: {e:#}"))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| format!("{e:#}"))?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| "request too large".to_owned())?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}
