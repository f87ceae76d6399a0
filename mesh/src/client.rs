//! The client sidecar: plaintext in on the Kafka cluster's loopback address, one port per
//! broker, mTLS out to that broker's sidecar.
//!
//! A Kafka client bootstraps from `mesh.address:port` of any broker; Metadata answers with
//! every broker's advertised CLIENT listener, which is that same address and the broker's
//! own port, so every connection the client opens lands on this sidecar's listener for the
//! broker it wants. Each listener forwards to a cluster of one host: the broker pod's
//! INTERNAL host name (the policy's listener template, resolved by DNS) at the broker
//! sidecar's `mesh.mtlsPort`, over TLS that presents the client certificate and requires the
//! brokers' identity (`mesh.brokerSan`) from the mesh CA.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;

use kpool_policy::Policy;
use kpool_policy::mesh::{broker_port, check_disjoint, id_range};
use serde_json::{Value, json};

use crate::MeshError;
use crate::bundle::{Bundle, certs_dir, dir_string};
use crate::envoy::{UPSTREAM_TLS, common_tls_context, sds_files, socket_address, tcp_proxy};

/// Where the client sidecar's ConfigMap is mounted in the example application
/// (`examples/app-deployment.yaml`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/kpool-proxy";
/// The StatefulSet whose pods are the brokers, by default (`examples/kafka-statefulset.yaml`).
pub const DEFAULT_STATEFULSET: &str = "kafka";
/// The advertised listener whose host names a broker pod across clusters, by default.
pub const DEFAULT_LISTENER: &str = "INTERNAL";

/// Where a broker's sidecar is reached instead of its INTERNAL host (`--endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// `HOST:PORT`, `[IPv6]:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: {port:?} is not a port (1-65535)"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Parses `ID=HOST:PORT` (the `--endpoint` flag).
pub fn parse_endpoint_flag(s: &str) -> Result<(i32, Endpoint), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected BROKER_ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| format!("{s:?}: {id:?} is not a broker id"))?;
    Ok((id, addr.parse()?))
}

/// Rendering options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The broker ids to reach; each must be in exactly one policy's id range.
    pub brokers: Vec<i32>,
    /// Brokers reached at a given address instead of their INTERNAL host and the mTLS port.
    pub endpoints: BTreeMap<i32, Endpoint>,
    /// The brokers' StatefulSet (their pods are `<statefulset>-<ordinal>`).
    pub statefulset: String,
    /// The brokers' namespace; default: the policy's only `brokers.namespaces` entry.
    pub namespace: Option<String>,
    /// The advertised listener whose host reaches a broker pod.
    pub listener: String,
    /// Where the bootstrap and SDS files live when Envoy runs (absolute).
    pub config_dir: PathBuf,
    /// Read the client certificate from here instead of `mesh.tls.dir`; the files must exist.
    pub certs_dir: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            endpoints: BTreeMap::new(),
            statefulset: DEFAULT_STATEFULSET.to_owned(),
            namespace: None,
            listener: DEFAULT_LISTENER.to_owned(),
            config_dir: PathBuf::from(DEFAULT_CONFIG_DIR),
            certs_dir: None,
        }
    }
}

/// One broker as a client sidecar sees it: where the client connects and where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRoute {
    pub broker_id: i32,
    /// `mesh.kafkaCluster` of the broker's policy.
    pub kafka_cluster: String,
    /// Where the client connects: `mesh.address:mesh.basePort + id`.
    pub listen: SocketAddrV4,
    /// The broker sidecar: its INTERNAL host (or the `--endpoint` host)...
    pub upstream_host: String,
    /// ...and its mTLS port.
    pub upstream_port: u16,
    /// What the broker sidecar's certificate must carry.
    pub broker_san: String,
}

impl BrokerRoute {
    /// The Envoy cluster (and listener) name of this broker.
    pub fn name(&self) -> String {
        format!("kafka-{}-{}", self.kafka_cluster, self.broker_id)
    }
}

/// The route to every broker of `options.brokers`, in the order given: each broker's policy
/// is the one whose id range (`brokers.idBase` + `mesh.maxBrokersPerCluster`) holds it.
pub fn routes(policies: &[Policy], options: &ClientOptions) -> Result<Vec<BrokerRoute>, MeshError> {
    if policies.is_empty() {
        return Err(MeshError::Usage(
            "at least one --policy is needed".to_owned(),
        ));
    }
    if options.brokers.is_empty() {
        return Err(MeshError::Usage(
            "--brokers: name at least one broker id".to_owned(),
        ));
    }
    for (i, a) in policies.iter().enumerate() {
        for b in &policies[i + 1..] {
            check_disjoint(a, b).map_err(|reason| MeshError::Policies {
                a: a.origin().to_owned(),
                b: b.origin().to_owned(),
                reason,
            })?;
        }
    }
    if let Some(id) = options
        .endpoints
        .keys()
        .find(|id| !options.brokers.contains(id))
    {
        return Err(MeshError::Usage(format!(
            "--endpoint {id}=...: broker {id} is not in --brokers"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(options.brokers.len());
    for &id in &options.brokers {
        if !seen.insert(id) {
            return Err(MeshError::Usage(format!(
                "--brokers: broker {id} is named twice"
            )));
        }
        let policy = owner(policies, id)?;
        out.push(route(policy, id, options)?);
    }
    Ok(out)
}

fn owner(policies: &[Policy], id: i32) -> Result<&Policy, MeshError> {
    let held = |p: &&Policy| {
        u64::try_from(id)
            .ok()
            .zip(id_range(p.spec()))
            .is_some_and(|(id, r)| r.contains(&id))
    };
    policies.iter().find(held).ok_or_else(|| {
        let ranges = policies
            .iter()
            .map(|p| match id_range(p.spec()) {
                Some(r) => format!(
                    "{} (cluster {}): {}..={}",
                    p.origin(),
                    p.spec().cluster,
                    r.start(),
                    r.end()
                ),
                None => format!("{}: none", p.origin()),
            })
            .collect::<Vec<_>>()
            .join("; ");
        MeshError::Usage(format!(
            "--brokers: no policy's broker ids (brokers.idBase + mesh.maxBrokersPerCluster) hold broker {id}: {ranges}"
        ))
    })
}

fn route(policy: &Policy, id: i32, options: &ClientOptions) -> Result<BrokerRoute, MeshError> {
    let spec = policy.spec();
    let mesh = &spec.mesh;
    // `owner` put id in idBase..idBase+max, so the ordinal is within u32 and the port
    // within the range validation checked.
    let ordinal = u32::try_from(i64::from(id) - i64::from(spec.brokers.id_base))
        .map_err(|_| MeshError::Usage(format!("broker {id} is below brokers.idBase")))?;
    let port = broker_port(spec, id).ok_or_else(|| {
        MeshError::Usage(format!("broker {id}: mesh.basePort + {id} is beyond 65535"))
    })?;
    let (upstream_host, upstream_port) = match options.endpoints.get(&id) {
        Some(e) => (e.host.clone(), e.port),
        None => (internal_host(policy, ordinal, options)?, mesh.mtls_port),
    };
    Ok(BrokerRoute {
        broker_id: id,
        kafka_cluster: mesh.kafka_cluster.clone(),
        listen: SocketAddrV4::new(mesh.address, port),
        upstream_host,
        upstream_port,
        broker_san: mesh.broker_san(),
    })
}

/// The host of the `options.listener` entry of the broker's advertised listeners, rendered
/// for pod `<statefulset>-<ordinal>` exactly as the webhook renders it at admission.
fn internal_host(
    policy: &Policy,
    ordinal: u32,
    options: &ClientOptions,
) -> Result<String, MeshError> {
    let spec = policy.spec();
    let namespace = match &options.namespace {
        Some(ns) => ns.clone(),
        None => match spec.brokers.namespaces.as_slice() {
            [only] => only.clone(),
            many => {
                return Err(MeshError::Usage(format!(
                    "{}: brokers.namespaces lists {} namespaces ({}); pass --namespace",
                    policy.origin(),
                    many.len(),
                    many.join(", ")
                )));
            }
        },
    };
    let pod = format!("{}-{ordinal}", options.statefulset);
    let identity = policy
        .identity(&pod, &namespace, ordinal)
        .map_err(|e| MeshError::Usage(format!("{}: pod {pod}: {e}", policy.origin())))?;
    let listeners = policy.advertised_listener(&identity);
    let prefix = format!("{}://", options.listener);
    let Some(entry) = listeners
        .split(',')
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix))
    else {
        return Err(MeshError::Usage(format!(
            "{}: listener.template has no {} listener ({listeners:?}); pass --listener NAME or --endpoint {}=HOST:PORT",
            policy.origin(),
            options.listener,
            identity.broker_id
        )));
    };
    let host = entry
        .rsplit_once(':')
        .map_or(entry, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(MeshError::Usage(format!(
            "{}: the {} listener {entry:?} of broker {} has no host",
            policy.origin(),
            options.listener,
            identity.broker_id
        )));
    }
    Ok(host.to_owned())
}

/// Renders the client sidecar's bootstrap: for every broker a listener on its mesh
/// `address:port` and a cluster reaching its sidecar over mTLS.
pub fn render(policies: &[Policy], options: &ClientOptions) -> Result<Bundle, MeshError> {
    let routes = routes(policies, options)?;
    // `routes` refused an empty list.
    let first = policies[0].spec();
    let config_dir = dir_string("--config-dir", &options.config_dir)?;
    let certs_dir = certs_dir(&first.mesh.tls, options.certs_dir.as_deref())?;
    let (listeners, clusters): (Vec<Value>, Vec<Value>) = routes
        .iter()
        .map(|r| (listener(r), cluster(r, &config_dir)))
        .unzip();
    let kafka_clusters: Vec<&str> = {
        let mut v: Vec<&str> = routes.iter().map(|r| r.kafka_cluster.as_str()).collect();
        v.dedup();
        v
    };
    let bootstrap = json!({
        "node": {
            "id": format!("kpool-mesh-client.{}", kafka_clusters.join("+")),
            "cluster": kafka_clusters.join("+"),
        },
        "admin": {"address": socket_address("127.0.0.1", first.mesh.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    });
    Ok(Bundle {
        bootstrap,
        sds_files: sds_files(&first.mesh.tls, &certs_dir),
    })
}

/// The listener a client connects to for one broker.
pub fn listener(r: &BrokerRoute) -> Value {
    let name = r.name();
    json!({
        "name": name,
        "address": socket_address(&r.listen.ip().to_string(), r.listen.port()),
        "filter_chains": [{"filters": tcp_proxy(&name, &name)}],
    })
}

/// The cluster that reaches one broker's sidecar over mTLS. A host name is resolved by DNS
/// (`STRICT_DNS`, so a broker pod's new IP is followed); an IP address is used as it is.
pub fn cluster(r: &BrokerRoute, config_dir: &str) -> Value {
    let name = r.name();
    let is_ip = r.upstream_host.parse::<IpAddr>().is_ok();
    let mut tls = json!({
        "@type": UPSTREAM_TLS,
        "common_tls_context": common_tls_context(config_dir, std::slice::from_ref(&r.broker_san)),
    });
    if !is_ip {
        tls["sni"] = json!(r.upstream_host);
    }
    json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address(&r.upstream_host, r.upstream_port),
            }}]}],
        },
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
    })
}

/// The broker ids a `--brokers` value names: `0,1,2`, ranges `0-2`, or both (`0-2,100-102`).
pub fn parse_broker_ids(s: &str) -> Result<Vec<i32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = |t: &str| {
            t.trim()
                .parse::<i32>()
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| format!("{part:?}: {t:?} is not a broker id"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if b < a || b - a >= 10_000 {
                    return Err(format!(
                        "{part:?}: expected FIRST-LAST with FIRST <= LAST, at most 10000 ids"
                    ));
                }
                out.extend(a..=b);
            }
            None => out.push(id(part)?),
        }
    }
    if out.is_empty() {
        return Err("expected broker ids, e.g. 0,1,2 or 0-2,100-102".to_owned());
    }
    Ok(out)
}
