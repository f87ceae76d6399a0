//! `kpool-mesh`: the command line over the kpool-mesh library. Every flag can also be set by
//! an environment variable `KPOOL_MESH_*`. Results go to stdout, errors to stderr.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kpool_agent::kafka::{KafkaClient, KafkaConfig, TlsSettings, parse_bootstrap};
use kpool_mesh::apply;
use kpool_mesh::broker::{self, BrokerOptions};
use kpool_mesh::client::{self, ClientOptions};
use kpool_mesh::serve::pods::KubePods;
use kpool_mesh::serve::{self, MembershipOptions, MeshMetrics, ServeConfig};
use kpool_mesh::xds::bootstrap::{self, XdsBootstrapOptions};
use kpool_policy::Policy;

#[derive(Parser, Debug)]
#[command(
    name = "kpool-mesh",
    version,
    about = "The kpool broker mesh: Envoy configurations rendered from the pool policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Envoy bootstrap of the broker sidecar (mTLS on mesh.mtlsPort, forwarded to
    /// the broker on 127.0.0.1:mesh.brokerPort); with --out, write it and its SDS files.
    BrokerConfig(BrokerConfigArgs),
    /// Print the Envoy bootstrap of an application's client sidecar: for every broker named,
    /// a listener on mesh.address:basePort+id forwarding over mTLS to that broker's sidecar
    /// (its INTERNAL host name at mesh.mtlsPort); with --out, write it and its SDS files.
    ///
    /// A Kafka client in the pod bootstraps from any broker's address:port and Metadata
    /// sends it to the same address with each broker's port, so every connection goes
    /// through this sidecar.
    ClientConfig(ClientConfigArgs),
    /// Serve the client sidecars' configuration over xDS (ADS, state of the world): one
    /// listener, one mTLS cluster and its endpoints per broker of the Kafka cluster,
    /// following Kafka Metadata (brokers added, removed) and the brokers' addresses (pins,
    /// DNS), pushed to every sidecar without a restart.
    Serve(Box<ServeArgs>),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The pool policies of the Kubernetes clusters the brokers run in (repeat).
    #[arg(
        long,
        env = "KPOOL_MESH_POLICY",
        value_delimiter = ',',
        required = true
    )]
    policy: Vec<PathBuf>,
    /// Where ADS (gRPC) listens.
    #[arg(long, env = "KPOOL_MESH_LISTEN", default_value = "0.0.0.0:18000")]
    listen: SocketAddr,
    /// Sidecars connected at once (one connection each); past it new ones wait in the
    /// accept queue. Lowered at start to fit the open-file limit.
    #[arg(long, env = "KPOOL_MESH_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Where /readyz, /healthz and /metrics listen; none without it.
    #[arg(long, env = "KPOOL_MESH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The Kafka cluster to follow (host:port,...): its Metadata's brokers are the
    /// membership. Without it, the pinned brokers are.
    #[arg(long, env = "KPOOL_MESH_KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// Take endpoints from pins and DNS only, never from the Kubernetes API.
    #[arg(long, env = "KPOOL_MESH_STANDALONE")]
    standalone: bool,
    /// The policy `cluster` whose broker pods this Kubernetes API shows (their running
    /// pods' IPs are served; other brokers are resolved by name); default: the first
    /// policy's.
    #[arg(long, env = "KPOOL_MESH_KUBERNETES_CLUSTER")]
    kubernetes_cluster: Option<String>,
    /// Reach broker ID's sidecar at HOST:PORT instead of its INTERNAL host at
    /// mesh.mtlsPort. Repeat for several brokers.
    #[arg(long = "endpoint", env = "KPOOL_MESH_ENDPOINTS", value_delimiter = ',', value_name = "ID=HOST:PORT", value_parser = parse_endpoint)]
    endpoints: Vec<(i32, client::Endpoint)>,
    /// A file of ID=HOST:PORT lines pinning endpoints like --endpoint (its entries win),
    /// re-read when it changes: a change is a membership change.
    #[arg(long, env = "KPOOL_MESH_ENDPOINTS_FILE")]
    endpoints_file: Option<PathBuf>,
    #[command(flatten)]
    pods: BrokerPodArgs,
    /// Where the client sidecars read their SDS files (what `client-config --xds` was
    /// given as --config-dir).
    #[arg(long, env = "KPOOL_MESH_CONFIG_DIR", default_value = client::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Between two Kafka Metadata polls (and DNS resolutions).
    #[arg(long, env = "KPOOL_MESH_POLL_INTERVAL", default_value = "5s", value_parser = kpool_cli::duration::parse_duration)]
    poll_interval: Duration,
    /// The bound on each Kafka network step (connect, each request).
    #[arg(long, env = "KPOOL_MESH_KAFKA_TIMEOUT", default_value = "5s", value_parser = kpool_cli::duration::parse_duration)]
    kafka_timeout: Duration,
    /// Serve ADS over TLS with this certificate chain (PEM; with --tls-key).
    #[arg(long, env = "KPOOL_MESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "KPOOL_MESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS to Kafka: the agent's flags and variables (KPOOL_KAFKA_TLS_*).
    #[command(flatten)]
    kafka_tls: kpool_cli::kafka::KafkaTlsArgs,
    #[command(flatten)]
    logging: kpool_cli::LogArgs,
}

#[derive(Args, Debug)]
struct ClientConfigArgs {
    /// The pool policies of the Kubernetes clusters the brokers run in (repeat; a stretch
    /// cluster has one per Kubernetes cluster). A broker belongs to the policy whose ids
    /// (brokers.idBase + mesh.maxBrokersPerCluster) hold it; the policies must not overlap.
    #[arg(
        long,
        env = "KPOOL_MESH_POLICY",
        value_delimiter = ',',
        required = true
    )]
    policy: Vec<PathBuf>,
    /// The broker ids to reach: 0,1,2 or ranges, 0-2,100-102 (not with --xds).
    #[arg(long, env = "KPOOL_MESH_BROKERS", value_parser = parse_brokers, required_unless_present = "xds", conflicts_with = "xds")]
    brokers: Option<BrokerIds>,
    /// Take listeners and clusters from `kpool-mesh serve` at HOST:PORT (ADS) instead of
    /// listing brokers: the bootstrap holds only the way to the control plane.
    #[arg(long, env = "KPOOL_MESH_XDS", value_name = "HOST:PORT", value_parser = parse_xds)]
    xds: Option<client::Endpoint>,
    /// With --xds: the CA of the control plane's certificate, as a path in the sidecar
    /// (TLS to the control plane, its host name or IP required in the certificate);
    /// plaintext gRPC without it.
    #[arg(long, env = "KPOOL_MESH_XDS_CA", requires = "xds")]
    xds_ca: Option<String>,
    /// Reach broker ID's sidecar at HOST:PORT instead of its INTERNAL host at mesh.mtlsPort
    /// (tests; networks without cross-cluster DNS). Repeat for several brokers.
    #[arg(long = "endpoint", env = "KPOOL_MESH_ENDPOINTS", value_delimiter = ',', value_name = "ID=HOST:PORT", value_parser = parse_endpoint, conflicts_with = "xds")]
    endpoints: Vec<(i32, client::Endpoint)>,
    #[command(flatten)]
    pods: BrokerPodArgs,
    /// Read the client certificate from this directory instead of the policy's mesh.tls.dir
    /// (a local run, a test); every file the policy names must be there.
    #[arg(long, env = "KPOOL_MESH_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Where Envoy finds the bootstrap's SDS files (the client sidecar's ConfigMap mount).
    #[arg(long, env = "KPOOL_MESH_CONFIG_DIR", default_value = client::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Write the bootstrap and its SDS files into this directory instead of printing the
    /// bootstrap.
    #[arg(long, env = "KPOOL_MESH_OUT")]
    out: Option<PathBuf>,
    /// Output format of the bootstrap (Envoy reads both).
    #[arg(long, env = "KPOOL_MESH_FORMAT", value_enum, default_value_t = FormatArg::Yaml)]
    format: FormatArg,
}

/// How a broker's pod is named and reached: `client-config` and `serve` read it the same.
#[derive(Args, Debug)]
struct BrokerPodArgs {
    /// The brokers' StatefulSet: broker idBase+N is pod <statefulset>-N.
    #[arg(long, env = "KPOOL_MESH_STATEFULSET", default_value = client::DEFAULT_STATEFULSET)]
    statefulset: String,
    /// The brokers' namespace; default: the policy's brokers.namespaces when it lists one.
    #[arg(long, env = "KPOOL_MESH_BROKER_NAMESPACE")]
    namespace: Option<String>,
    /// The advertised listener (in listener.template) whose host reaches a broker pod.
    #[arg(long, env = "KPOOL_MESH_LISTENER", default_value = client::DEFAULT_LISTENER)]
    listener: String,
}

impl BrokerPodArgs {
    /// Client options with these names, the rest default.
    fn options(self) -> ClientOptions {
        ClientOptions {
            statefulset: self.statefulset,
            namespace: self.namespace,
            listener: self.listener,
            ..ClientOptions::default()
        }
    }
}

#[derive(Clone, Debug)]
struct BrokerIds(Vec<i32>);

fn parse_brokers(s: &str) -> Result<BrokerIds, String> {
    client::parse_broker_ids(s).map(BrokerIds)
}

fn parse_xds(s: &str) -> Result<client::Endpoint, String> {
    s.parse()
}

fn parse_endpoint(s: &str) -> Result<(i32, client::Endpoint), String> {
    client::parse_endpoint_flag(s)
}

#[derive(Args, Debug)]
struct BrokerConfigArgs {
    /// The pool policy (its `mesh` section).
    #[arg(long, env = "KPOOL_MESH_POLICY")]
    policy: PathBuf,
    /// Read the certificates from this directory instead of the policy's mesh.tls.dir (a
    /// local run, a test); every file the policy names must be there.
    #[arg(long, env = "KPOOL_MESH_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Where Envoy finds the bootstrap's SDS files (the sidecar's ConfigMap mount).
    #[arg(long, env = "KPOOL_MESH_CONFIG_DIR", default_value = broker::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Write the bootstrap and its SDS files into this directory instead of printing the
    /// bootstrap.
    #[arg(long, env = "KPOOL_MESH_OUT")]
    out: Option<PathBuf>,
    /// Output format of the bootstrap (Envoy reads both).
    #[arg(long, env = "KPOOL_MESH_FORMAT", value_enum, default_value_t = FormatArg::Yaml)]
    format: FormatArg,
    /// Apply the bootstrap and its SDS files as this ConfigMap (server-side apply, field
    /// manager kpool-mesh) in every namespace of --namespace, instead of printing them.
    #[arg(long, env = "KPOOL_MESH_APPLY_CONFIGMAP", conflicts_with = "out")]
    apply_configmap: Option<String>,
    /// Namespaces to apply the ConfigMap in (repeat, or comma-separated in the env var);
    /// default: the policy's brokers.namespaces.
    #[arg(
        long,
        env = "KPOOL_MESH_NAMESPACE",
        value_delimiter = ',',
        requires = "apply_configmap"
    )]
    namespace: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Yaml,
    Json,
}

impl From<FormatArg> for kpool_mesh::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Yaml => Self::Yaml,
            FormatArg::Json => Self::Json,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BrokerConfig(a) => run_broker_config(a),
        Command::ClientConfig(a) => run_client_config(a),
        Command::Serve(a) => run_serve(*a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kpool-mesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_broker_config(a: BrokerConfigArgs) -> Result<()> {
    let policy = Policy::from_file(&a.policy)?;
    let options = BrokerOptions {
        config_dir: a.config_dir,
        certs_dir: a.certs_dir,
    };
    let bundle = broker::render(&policy, &options)?;
    let format = a.format.into();
    if let Some(name) = a.apply_configmap {
        let namespaces = if a.namespace.is_empty() {
            policy.spec().brokers.namespaces.clone()
        } else {
            a.namespace
        };
        let files = bundle.files(format)?;
        let bodies: Vec<_> = namespaces
            .iter()
            .map(|ns| apply::configmap_body(&name, ns, &files, policy.hash()))
            .collect();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        return runtime.block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("connect to the Kubernetes API")?;
            for body in &bodies {
                apply::apply_configmap(&client, body).await?;
                println!(
                    "applied ConfigMap {}/{name}",
                    body["metadata"]["namespace"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        });
    }
    emit(&bundle, a.out, format)
}

fn run_client_config(a: ClientConfigArgs) -> Result<()> {
    let policies = a
        .policy
        .iter()
        .map(|p| Policy::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(xds) = a.xds {
        let options = XdsBootstrapOptions {
            xds,
            xds_ca: a.xds_ca,
            config_dir: a.config_dir,
            certs_dir: a.certs_dir,
        };
        let bundle = bootstrap::render(&policies, &options)?;
        return emit(&bundle, a.out, a.format.into());
    }
    let endpoints = pins(a.endpoints)?;
    let options = ClientOptions {
        brokers: a.brokers.map(|b| b.0).unwrap_or_default(),
        endpoints,
        config_dir: a.config_dir,
        certs_dir: a.certs_dir,
        ..a.pods.options()
    };
    let bundle = client::render(&policies, &options)?;
    emit(&bundle, a.out, a.format.into())
}

fn pins(flags: Vec<(i32, client::Endpoint)>) -> Result<BTreeMap<i32, client::Endpoint>> {
    let mut endpoints = BTreeMap::new();
    for (id, e) in flags {
        if endpoints.insert(id, e).is_some() {
            anyhow::bail!("--endpoint: broker {id} is given twice");
        }
    }
    Ok(endpoints)
}

/// The ADS listener's bounds, its connection cap fitted to the open-file limit (one
/// descriptor per sidecar, a reserve for Kafka, the Kubernetes watches and the metrics port).
fn ads_limits(max_connections: usize) -> kpool_serve::Limits {
    let mut caps = [max_connections];
    if let Some(soft) = kpool_serve::fd_soft_limit()
        && kpool_serve::fit_caps(&mut caps, 256, soft)
    {
        tracing::warn!(
            fd_limit = soft,
            max_connections = caps[0],
            "ADS connection cap lowered to fit the open-file limit"
        );
    }
    kpool_mesh::xds::server::ads_limits(caps[0])
}

fn run_serve(a: ServeArgs) -> Result<()> {
    a.logging.init()?;
    kpool_cli::install_crypto_provider();
    let policies = a
        .policy
        .iter()
        .map(|p| Policy::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let pins = pins(a.endpoints)?;
    if a.kafka_tls.enabled() && a.kafka_bootstrap.is_none() {
        anyhow::bail!(
            "--kafka-tls-ca/--kafka-tls-cert configure the connection to Kafka: expected --kafka-bootstrap with them"
        );
    }
    let kafka = match &a.kafka_bootstrap {
        Some(b) => Some(KafkaClient::new(KafkaConfig {
            bootstrap: parse_bootstrap(b).context("--kafka-bootstrap")?,
            timeout: a.kafka_timeout,
            tls: TlsSettings::from_args(&a.kafka_tls),
            client_id: "kpool-mesh".to_owned(),
        })?),
        None if pins.is_empty() && a.endpoints_file.is_none() => anyhow::bail!(
            "expected --kafka-bootstrap (brokers from Kafka Metadata) or pinned brokers (--endpoint, --endpoints-file)"
        ),
        None => None,
    };
    let local_cluster =
        serve::local_cluster(a.standalone, a.kubernetes_cluster.as_deref(), &policies);
    let pod_namespaces = serve::pod_namespaces(
        a.pods.namespace.as_deref(),
        local_cluster.as_deref(),
        &policies,
    );
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls_config(cert, key)?),
        _ => None,
    };
    let config = ServeConfig {
        membership: MembershipOptions {
            policies,
            routes: a.pods.options(),
            config_dir: serve::config_dir(&a.config_dir)?,
            pins,
            endpoints_file: a.endpoints_file,
            poll_interval: a.poll_interval,
            backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            local_cluster: local_cluster.clone(),
        },
        kafka,
        tls,
        ads_limits: ads_limits(a.max_connections),
        pods: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let mut config = config;
    runtime.block_on(async {
        if local_cluster.is_some() {
            let client = kube::Client::try_default()
                .await
                .context("connect to the Kubernetes API (or pass --standalone)")?;
            let wake = Arc::new(tokio::sync::Notify::new());
            let (pods, _task) = KubePods::watch(client, pod_namespaces, wake.clone());
            config.pods = Some((Arc::new(pods), wake));
        }
        let xds = serve::bind("--listen", a.listen).await?;
        let http = match a.metrics_listen {
            Some(addr) => Some(serve::bind("--metrics-listen", addr).await?),
            None => None,
        };
        let metrics = Arc::new(MeshMetrics::default());
        let audit: serve::AuditSink = Arc::new(Mutex::new(std::io::stdout()));
        serve::run(
            config,
            xds,
            http,
            metrics,
            audit,
            kpool_cli::shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

/// Writes the bundle into `out`, listing the files, or prints the bootstrap.
fn emit(
    bundle: &kpool_mesh::Bundle,
    out: Option<PathBuf>,
    format: kpool_mesh::Format,
) -> Result<()> {
    match out {
        Some(dir) => {
            for path in bundle.write_to(&dir, format)? {
                println!("{}", path.display());
            }
        }
        None => print!("{}", format.print(&bundle.bootstrap)?),
    }
    Ok(())
}
