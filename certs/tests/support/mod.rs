//! Test support: a small stateful fake kube-apiserver behind kube-rs' `tower-test` mock, and
//! real rustls handshakes over loopback sockets.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kpool_certs::tls::{ReloadingResolver, server_config};
use kube::Client;
use kube::client::Body;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const NS: &str = "kpool-system";
pub const WEBHOOK: &str = "kpool-webhook";
pub const SECRET: &str = "kpool-webhook-tls";
pub const CA_SECRET: &str = "kpool-webhook-tls-ca";
pub const SERVICE: &str = "kpool-webhook";
pub const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kpool-webhook";
pub const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kpool-webhook";

pub fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}")
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Query pairs, sorted (their order in the URL carries no meaning).
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    log: Vec<Recorded>,
    writes: usize,
    fail_write: Option<usize>,
}

/// A fake API server holding objects by path. GET returns them (or a 404 Status); PATCH must be
/// a forced server-side apply by `kpool-certs` and is merged the way the real server merges an
/// apply from the only manager of those fields: Secret `data`/`type` are replaced, webhook
/// entries are matched by name and only `clientConfig.caBundle` changes.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response")
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake with both webhook configurations (one webhook each, no caBundle yet).
    pub fn with_webhooks() -> Self {
        let fake = Self::new();
        fake.put(
            MUTATING_PATH,
            webhook_config("MutatingWebhookConfiguration", "inject.kpool.io"),
        );
        fake.put(
            VALIDATING_PATH,
            webhook_config("ValidatingWebhookConfiguration", "guard.kpool.io"),
        );
        fake
    }

    pub fn put(&self, path: &str, v: Value) {
        self.state
            .lock()
            .expect("lock")
            .objects
            .insert(path.to_owned(), v);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().expect("lock").objects.get(path).cloned()
    }

    pub fn log(&self) -> Vec<Recorded> {
        self.state.lock().expect("lock").log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().expect("lock").log.clear();
    }

    pub fn writes(&self) -> usize {
        self.state.lock().expect("lock").writes
    }

    /// Makes the n-th write from now (1-based) fail with a 500, as if the process died there.
    pub fn fail_write(&self, n: usize) {
        let mut s = self.state.lock().expect("lock");
        s.fail_write = Some(s.writes + n);
    }

    /// A kube client talking to this fake.
    pub fn client(&self) -> Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            while let Some((request, send)) = handle.next_request().await {
                let response = fake.handle(request).await;
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("body");
        let path = parts.uri.path().to_owned();
        let mut query: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        query.sort();
        let content_type = parts
            .headers
            .get("content-type")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).expect("json body"))
        };
        let mut s = self.state.lock().expect("lock");
        s.log.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        match parts.method.as_str() {
            "GET" => match s.objects.get(&path) {
                Some(v) => ok(v),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{path} not found"),
                ),
            },
            "PATCH" => {
                let want = vec![
                    ("fieldManager".to_owned(), "kpool-certs".to_owned()),
                    ("force".to_owned(), "true".to_owned()),
                ];
                if query != want || content_type.as_deref() != Some("application/apply-patch+yaml")
                {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "not a forced apply by kpool-certs",
                    );
                }
                s.writes += 1;
                if s.fail_write == Some(s.writes) {
                    return status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "injected failure",
                    );
                }
                let Some(applied) = body else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "empty apply");
                };
                let merged = match applied["kind"].as_str() {
                    Some("Secret") => {
                        let mut obj = s.objects.get(&path).cloned().unwrap_or_else(|| json!({}));
                        obj["apiVersion"] = applied["apiVersion"].clone();
                        obj["kind"] = applied["kind"].clone();
                        obj["metadata"] = applied["metadata"].clone();
                        obj["type"] = applied["type"].clone();
                        obj["data"] = applied["data"].clone();
                        obj
                    }
                    Some(_) => {
                        let Some(mut obj) = s.objects.get(&path).cloned() else {
                            return status(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "Invalid",
                                "apply would create an incomplete webhook configuration",
                            );
                        };
                        for w in applied["webhooks"].as_array().cloned().unwrap_or_default() {
                            let Some(entry) = obj["webhooks"]
                                .as_array_mut()
                                .and_then(|ws| ws.iter_mut().find(|e| e["name"] == w["name"]))
                            else {
                                return status(
                                    StatusCode::UNPROCESSABLE_ENTITY,
                                    "Invalid",
                                    "apply names an unknown webhook",
                                );
                            };
                            entry["clientConfig"]["caBundle"] =
                                w["clientConfig"]["caBundle"].clone();
                        }
                        obj
                    }
                    None => return status(StatusCode::BAD_REQUEST, "BadRequest", "no kind"),
                };
                s.objects.insert(path, merged.clone());
                ok(&merged)
            }
            m => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", m),
        }
    }

    /// A Secret's data value, decoded.
    pub fn secret_data(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let v = self.get(&secret_path(name))?;
        let value = v["data"].get(key)?.clone();
        let s: k8s_openapi::ByteString = serde_json::from_value(value).ok()?;
        Some(s.0)
    }

    /// The caBundle of the first webhook of a configuration, decoded.
    pub fn ca_bundle(&self, path: &str) -> Vec<u8> {
        let v = self.get(path).expect("webhook config");
        let b = &v["webhooks"][0]["clientConfig"]["caBundle"];
        if b.is_null() {
            return Vec::new();
        }
        serde_json::from_value::<k8s_openapi::ByteString>(b.clone())
            .expect("base64")
            .0
    }
}

pub fn webhook_config(kind: &str, webhook: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": { "name": WEBHOOK, "resourceVersion": "1",
                      "labels": { "app.kubernetes.io/managed-by": "Helm" } },
        "webhooks": [{
            "name": webhook,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "clientConfig": { "service": { "name": SERVICE, "namespace": NS, "path": "/mutate", "port": 443 } },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }]
        }]
    })
}

/// Parses PEM certificates (panics on bad input: test helper).
pub fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    kpool_certs::pemio::parse_certificates("test", pem).expect("certificates")
}

/// A TLS server on 127.0.0.1 serving the resolver's pair; each connection gets "ok\n".
pub async fn serve(resolver: Arc<ReloadingResolver>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server_config(resolver)));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// What a successful handshake saw.
#[derive(Debug)]
pub struct Handshake {
    pub reply: String,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    pub leaf: CertificateDer<'static>,
}

/// Connects to `addr` as a client trusting exactly `bundle`, verifying `name`.
pub async fn handshake(
    addr: SocketAddr,
    bundle: &[CertificateDer<'static>],
    name: &str,
) -> Result<Handshake, String> {
    handshake_with(
        addr,
        bundle,
        name,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        vec![b"h2".to_vec()],
    )
    .await
}

pub async fn handshake_with(
    addr: SocketAddr,
    bundle: &[CertificateDer<'static>],
    name: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> Result<Handshake, String> {
    let mut roots = RootCertStore::empty();
    for c in bundle {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn;
    let connector = TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(server_name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let version = conn.protocol_version();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no peer certificate")?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Handshake {
        reply,
        alpn,
        version,
        leaf,
    })
}
