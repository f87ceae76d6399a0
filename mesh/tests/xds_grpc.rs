//! The ADS server over real gRPC on loopback, with Rust clients that speak the protocol as
//! Envoy does (tonic's client from envoy-types): initial sync and ACKs, a NACK kept and not
//! retried, a stale nonce ignored, a broker moving (EDS only), added and removed (in make-
//! before-break order), a sidecar disconnecting mid-stream, many sidecars at once.

mod xds_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kpool_mesh::xds::server::{ads_limits, spawn};
use kpool_mesh::xds::{AdsService, ResourceType, Snapshot, XdsMetrics};
use tokio::sync::{mpsc, watch};
use xds_support::{
    CONFIG_DIR, FakeEnvoy, GrpcEnvoy, members_at, server_certs, snapshot, tls_channel,
};

struct Server {
    addr: SocketAddr,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<XdsMetrics>,
    serving: Option<kpool_serve::Serving>,
}

impl Server {
    async fn start(first: Option<Arc<Snapshot>>) -> Self {
        Self::start_with(first, None).await
    }

    async fn start_with(
        first: Option<Arc<Snapshot>>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        Self::start_limited(first, tls, ads_limits(2048)).await
    }

    async fn start_limited(
        first: Option<Arc<Snapshot>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: kpool_serve::Limits,
    ) -> Self {
        // serve's own bind: an accept queue for 1,000 sidecars connecting at once.
        let listener = kpool_mesh::serve::bind("--listen", "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (publish, snapshots) = watch::channel(first);
        let metrics = Arc::new(XdsMetrics::default());
        let service = AdsService::new(snapshots, metrics.clone());
        let serving = spawn(
            listener,
            service,
            tls,
            limits,
            &kpool_serve::ListenerMetrics::default(),
        );
        Self {
            addr,
            publish,
            metrics,
            serving: Some(serving),
        }
    }

    fn publish(&self, s: Arc<Snapshot>) {
        self.publish.send_replace(Some(s));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            // Stops accepting and closes what is open; nothing waits for it.
            tokio::spawn(serving.shutdown(Duration::ZERO));
        }
    }
}

fn types(seen: &[(ResourceType, String, usize)]) -> Vec<ResourceType> {
    seen.iter().map(|(t, _, _)| *t).collect()
}

async fn synced(server: &Server, node: &str, brokers: usize) -> GrpcEnvoy {
    let envoy = GrpcEnvoy::connect(server.addr, FakeEnvoy::new(node)).await;
    envoy
        .wait("the initial sync", |e| {
            e.listeners.len() == brokers && e.versions.len() == 3
        })
        .await;
    envoy
}

#[tokio::test]
async fn a_client_syncs_and_acks_over_grpc() {
    let server = Server::start(Some(snapshot(&[0, 1, 2]))).await;
    let envoy = synced(&server, "sidecar-a", 3).await;
    {
        let e = envoy.state.lock().expect("state");
        assert_eq!(
            types(&e.received),
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener
            ]
        );
        assert_eq!(e.endpoint_addrs()["kafka-stretch-2"], ["10.0.0.2:9443"]);
    }
    let s = server.publish.borrow().clone().expect("snapshot");
    wait_metric(|| server.metrics.synced(s.created).0 == 1).await;
    assert_eq!(server.metrics.streams(), 1);
    for t in ["cds", "eds", "lds"] {
        assert_eq!(server.metrics.pushes(t), 1, "{t}");
    }
}

#[tokio::test]
async fn requests_wait_for_the_first_snapshot() {
    let server = Server::start(None).await;
    let envoy = GrpcEnvoy::connect(server.addr, FakeEnvoy::new("early")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(envoy.state.lock().expect("state").received.is_empty());
    server.publish(snapshot(&[0]));
    envoy
        .wait("sync once published", |e| e.listeners.len() == 1)
        .await;
}

#[tokio::test]
async fn a_broker_moving_pushes_only_endpoints_and_added_or_removed_keep_the_order() {
    let server = Server::start(Some(snapshot(&[0, 1, 2]))).await;
    let envoy = synced(&server, "sidecar-b", 3).await;
    let moved = Snapshot::build(
        members_at(&[0, 1, 2], |id| {
            let host = if id == 1 { "10.1.1.1" } else { "10.0.0.0" };
            format!("{host}:9443").parse().expect("addr")
        }),
        CONFIG_DIR,
    )
    .expect("snapshot");
    let got = push(&server, &envoy, Arc::new(moved), "the new endpoint", |e| {
        e.endpoint_addrs()["kafka-stretch-1"] == ["10.1.1.1:9443"]
    })
    .await;
    assert_eq!(got, [ResourceType::Endpoint]);

    let got = push(
        &server,
        &envoy,
        snapshot(&[0, 1, 2, 3]),
        "the new listener",
        |e| e.listeners.len() == 4,
    )
    .await;
    assert_eq!(
        got,
        [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener
        ]
    );

    let got = push(
        &server,
        &envoy,
        snapshot(&[0, 1, 3]),
        "broker 2 gone",
        |e| e.listeners.len() == 3 && e.clusters.len() == 3,
    )
    .await;
    assert_eq!(
        got,
        [
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Cluster,
            ResourceType::Endpoint
        ],
        "the listener goes before its cluster"
    );
}

/// Publishes `snapshot` and waits until `envoy` shows `what` (and a moment more, for
/// anything pushed after it); returns the types of the resources it received, in order.
async fn push(
    server: &Server,
    envoy: &GrpcEnvoy,
    snapshot: Arc<Snapshot>,
    what: &str,
    done: impl Fn(&FakeEnvoy) -> bool,
) -> Vec<ResourceType> {
    envoy.state.lock().expect("state").received.clear();
    server.publish(snapshot);
    envoy.wait(what, done).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    types(&envoy.state.lock().expect("state").received)
}

#[tokio::test]
async fn a_nack_is_counted_and_not_retried() {
    let server = Server::start(Some(snapshot(&[0, 1]))).await;
    let envoy = synced(&server, "sidecar-c", 2).await;
    envoy.state.lock().expect("state").reject = vec![ResourceType::Listener];
    server.publish(snapshot(&[0, 1, 2]));
    wait_metric(|| server.metrics.nacks("lds") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.metrics.nacks("lds"), 1, "not resent in a loop");
    assert_eq!(server.metrics.pushes("lds"), 2);
    let e = envoy.state.lock().expect("state");
    assert_eq!(e.listeners.len(), 2, "the client keeps its listeners");
    assert_eq!(e.clusters.len(), 3);
}

#[tokio::test]
async fn a_stale_nonce_gets_no_answer() {
    let server = Server::start(Some(snapshot(&[0]))).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    let cds = |version: &str, nonce: &str| DiscoveryRequest {
        version_info: version.to_owned(),
        type_url: ResourceType::Cluster.type_url().to_owned(),
        response_nonce: nonce.to_owned(),
        ..DiscoveryRequest::default()
    };
    tx.send(cds("", "")).await.expect("send");
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let first = responses.message().await.expect("response").expect("one");
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    // A request echoing a nonce never sent on this stream is ignored...
    tx.send(cds("", "999")).await.expect("send");
    let next = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
    assert!(next.is_err(), "no answer to a stale nonce: {next:?}");
    // ...and the real ACK is taken.
    tx.send(cds(&first.version_info, &first.nonce))
        .await
        .expect("send");
    wait_metric(|| {
        server
            .metrics
            .synced(server.publish.borrow().clone().expect("s").created)
            .0
            == 1
    })
    .await;
}

#[tokio::test]
async fn a_sidecar_leaving_mid_stream_frees_its_stream() {
    let server = Server::start(Some(snapshot(&[0, 1]))).await;
    let stays = synced(&server, "stays", 2).await;
    let leaves = synced(&server, "leaves", 2).await;
    wait_metric(|| server.metrics.streams() == 2).await;
    leaves.disconnect();
    wait_metric(|| server.metrics.streams() == 1).await;
    server.publish(snapshot(&[0, 1, 2]));
    stays
        .wait("the remaining sidecar follows", |e| e.listeners.len() == 3)
        .await;
}

/// ADS over TLS (`serve --tls-cert/--tls-key`, what `client-config --xds-ca` expects): a
/// client trusting the control plane's CA and asking for the name in its certificate syncs
/// and follows; one trusting another CA, asking for another name, or speaking plaintext gets
/// no stream; a connection that never starts its handshake holds nobody up.
#[tokio::test]
async fn ads_over_tls_serves_the_clients_that_trust_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("xds");
    let ca = server_certs(&certs, "kpool-mesh.kpool-system.svc");
    let tls = kpool_mesh::serve::tls_config(&certs.join("tls.crt"), &certs.join("tls.key"))
        .expect("TLS config");
    let server = Server::start_with(Some(snapshot(&[0, 1, 2])), Some(tls)).await;
    // Says nothing: its handshake waits (bounded by TLS_HANDSHAKE_TIMEOUT) without
    // holding up the others.
    let _silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp");
    let envoy = GrpcEnvoy::connect_tls(
        server.addr,
        "kpool-mesh.kpool-system.svc",
        &ca,
        FakeEnvoy::new("tls"),
    )
    .await
    .expect("TLS to the control plane");
    envoy
        .wait("the initial sync over TLS", |e| {
            e.listeners.len() == 3 && e.versions.len() == 3
        })
        .await;
    server.publish(snapshot(&[0, 1, 2, 3]));
    envoy
        .wait("a broker added, over TLS", |e| e.listeners.len() == 4)
        .await;

    let other_ca = server_certs(&dir.path().join("other"), "kpool-mesh.kpool-system.svc");
    let refused = |what: &'static str, channel: Result<_, tonic::transport::Error>| async move {
        let Ok(channel) = channel else { return };
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let stream = client
            .stream_aggregated_resources(tokio_stream::iter(FakeEnvoy::new(what).initial()))
            .await;
        assert!(stream.is_err(), "{what}: expected no stream");
    };
    refused(
        "another CA",
        tls_channel(server.addr, "kpool-mesh.kpool-system.svc", &other_ca).await,
    )
    .await;
    refused(
        "another name",
        tls_channel(server.addr, "kpool-mesh.other.svc", &ca).await,
    )
    .await;
    refused(
        "plaintext",
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("endpoint")
            .connect()
            .await,
    )
    .await;
    assert_eq!(server.metrics.streams(), 1);
}

/// `n` sidecars connect at once (each its own HTTP/2 connection), all sync, then all follow
/// a broker added; returns how long the latter took.
async fn many_sidecars_connect_at_once_and_follow(n: i64) -> Duration {
    let server = Server::start(Some(snapshot(&[0, 1, 2]))).await;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let addr = server.addr;
        clients.push(tokio::spawn(async move {
            GrpcEnvoy::connect(addr, FakeEnvoy::new(&format!("sidecar-{i}"))).await
        }));
    }
    let mut envoys = Vec::new();
    for c in clients {
        envoys.push(c.await.expect("client"));
    }
    let s = server.publish.borrow().clone().expect("snapshot");
    wait_metric(|| server.metrics.synced(s.created).0 == n).await;
    let synced = started.elapsed();
    let started = std::time::Instant::now();
    let next = snapshot(&[0, 1, 2, 3]);
    let created = next.created;
    server.publish(next);
    wait_metric(|| server.metrics.synced(created).0 == n).await;
    let followed = started.elapsed();
    println!(
        "{n} streams: connected and synced in {synced:?}; broker added, all in sync in {followed:?} (server: {:?})",
        server.metrics.synced(created).1
    );
    assert_eq!(server.metrics.streams(), n);
    for e in &envoys {
        assert_eq!(e.state.lock().expect("state").listeners.len(), 4);
    }
    followed
}

/// A sidecar that goes away with a response in flight (received, never ACKed), and one
/// whose connection is cut while the server pushes to it: the server frees both streams,
/// keeps serving the others, and a push to a gone stream blocks nobody.
#[tokio::test]
async fn a_sidecar_leaving_with_a_response_in_flight_blocks_nobody() {
    let server = Server::start(Some(snapshot(&[0, 1]))).await;
    let stays = synced(&server, "stays", 2).await;
    // Asks for clusters, gets them, then vanishes without an ACK.
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(4);
    for r in FakeEnvoy::new("vanishes").initial() {
        tx.send(r).await.expect("queue");
    }
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let first = responses.message().await.expect("response").expect("one");
    assert_eq!(
        ResourceType::from_type_url(&first.type_url),
        Some(ResourceType::Cluster)
    );
    wait_metric(|| server.metrics.streams() == 2).await;
    drop((tx, responses, client));
    wait_metric(|| server.metrics.streams() == 1).await;
    // Cut while a push is on its way: it subscribed, the server pushes on publish.
    let cut = synced(&server, "cut", 2).await;
    wait_metric(|| server.metrics.streams() == 2).await;
    server.publish(snapshot(&[0, 1, 2]));
    cut.disconnect();
    stays
        .wait("the remaining sidecar follows", |e| e.listeners.len() == 3)
        .await;
    wait_metric(|| server.metrics.streams() == 1).await;
    server.publish(snapshot(&[0, 1, 2, 3]));
    stays
        .wait("and keeps following", |e| e.listeners.len() == 4)
        .await;
}

#[tokio::test]
async fn a_hundred_sidecars_connecting_at_once_all_sync() {
    many_sidecars_connect_at_once_and_follow(100).await;
}

/// The 1,000 sidecars connecting at once, in process (2,000 sockets: needs an
/// open-file limit above that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sidecars_connecting_at_once_all_sync() {
    many_sidecars_connect_at_once_and_follow(1000).await;
}

async fn wait_metric(f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition within 20s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ADS listener is kpool's hardened one: a connection that never starts its stream
/// (silent TCP, no HTTP/2 preface) is closed at the first-request bound, idle connections
/// too, and no more than the cap are open at once; a synced sidecar's stream, which carries
/// no new request for as long as nothing changes, is not idle and keeps following.
#[tokio::test]
async fn silent_and_idle_connections_are_closed_but_a_live_stream_is_not() {
    use tokio::io::AsyncReadExt as _;
    let limits = kpool_serve::Limits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        max_connections: 3,
        ..ads_limits(3)
    };
    let server = Server::start_limited(Some(snapshot(&[0, 1, 2])), None, limits).await;
    let envoy = synced(&server, "sidecar-a", 3).await;

    // Silent: closed within the bound (EOF), not held forever.
    let mut silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("tcp");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "a silent connection must be closed");
    let stats = server.serving.as_ref().expect("serving").stats().clone();
    assert!(stats.closed_idle() >= 1);

    // Past the idle bound, the synced sidecar's stream still follows a change.
    tokio::time::sleep(Duration::from_millis(900)).await;
    server.publish(snapshot(&[0, 1, 2, 3]));
    envoy
        .wait("a live stream is not idle", |e| e.listeners.len() == 4)
        .await;

    // The cap: with three open, a fourth waits in the accept queue, unserved.
    let held: Vec<_> = hold(server.addr, 2).await;
    wait_metric(|| stats.open() == 3).await;
    assert!(stats.saturated());
    drop(held);
}

/// `n` TCP connections that send the HTTP/2 preface and stay (each counts as open).
async fn hold(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut v = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        v.push(s);
    }
    v
}
