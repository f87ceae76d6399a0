//! The policy file as written by operators (`kind: PoolPolicy`).
//!
//! Field names are camelCase like Kubernetes objects. Every struct rejects unknown keys so
//! a typo fails loudly instead of silently falling back to a default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// API version accepted in `apiVersion`.
pub const API_VERSION: &str = "kpool.io/v1alpha1";
/// Kind accepted in `kind`.
pub const KIND: &str = "PoolPolicy";

/// The pool policy: what a broker pod on the Kafka pool must look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    pub api_version: String,
    pub kind: String,
    /// `enforce` denies/evicts violators; `audit` only reports them.
    #[serde(default)]
    pub mode: Mode,
    /// Name of this Kubernetes cluster (one of the clusters the Kafka cluster stretches over).
    pub cluster: String,
    /// Availability zones, in order: broker `n` lives in `zones[n mod len]`.
    pub zones: Vec<String>,
    /// Rack string per broker; placeholders `{cluster}` and `{zone}`.
    #[serde(default = "default_rack_format")]
    pub rack_format: String,
    pub brokers: Brokers,
    #[serde(default)]
    pub injection: Injection,
    pub pool: Pool,
    pub listener: Listener,
    /// The broker mesh: how clients reach this Kafka cluster's brokers through sidecars.
    pub mesh: Mesh,
    pub sidecar: Sidecar,
    #[serde(default)]
    pub readiness: Readiness,
    #[serde(default)]
    pub identity: IdentityEnv,
    #[serde(default)]
    pub spread: Spread,
    #[serde(default)]
    pub conflicts: Conflicts,
    #[serde(default)]
    pub guard: Guard,
    /// Healing the rack distribution (report only unless `racks.selfHealing`).
    #[serde(default)]
    pub racks: Racks,
    /// How the agent reaches Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSettings>,
}

/// How the agent reaches the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSettings {
    /// `host:port` of brokers to bootstrap from (`--kafka-bootstrap` overrides).
    pub bootstrap: Vec<String>,
}

fn default_rack_format() -> String {
    "{cluster}-{zone}".to_owned()
}

/// Enforcement mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

impl Mode {
    /// The mode as written in the policy and in audit lines: `enforce` or `audit`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

/// How broker pods are recognised and numbered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Brokers {
    /// Labels a broker pod carries; all must match.
    pub selector: BTreeMap<String, String>,
    /// Namespaces broker pods live in: a pod with the selector's labels anywhere else is
    /// foreign (labels alone prove nothing).
    pub namespaces: Vec<String>,
    /// Name of the Kafka container in the broker pod.
    #[serde(default = "default_broker_container")]
    pub container: String,
    /// Broker id = `idBase + ordinal`; give each Kubernetes cluster its own base.
    #[serde(default)]
    pub id_base: u32,
}

fn default_broker_container() -> String {
    "kafka".to_owned()
}

/// Opt-in and opt-out switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Injection {
    /// Namespaces carrying this label (key=value) get injection.
    #[serde(default = "default_namespace_label")]
    pub namespace_label: Label,
    /// A pod annotated `<this>: "false"` is left alone.
    #[serde(default = "default_opt_out_annotation")]
    pub opt_out_annotation: String,
}

impl Default for Injection {
    fn default() -> Self {
        Self {
            namespace_label: default_namespace_label(),
            opt_out_annotation: default_opt_out_annotation(),
        }
    }
}

fn default_namespace_label() -> Label {
    Label {
        key: "kpool.io/injection".to_owned(),
        value: "enabled".to_owned(),
    }
}

fn default_opt_out_annotation() -> String {
    "kpool.io/inject".to_owned()
}

/// A label key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// The dedicated worker pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pool {
    /// Label every pool node carries.
    pub node_label: Label,
    /// Taint every pool node carries.
    pub taint: Taint,
    /// Node label holding the zone.
    #[serde(default = "default_zone_label")]
    pub zone_label: String,
}

fn default_zone_label() -> String {
    "topology.kubernetes.io/zone".to_owned()
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// Kubernetes taint effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl Taint {
    /// True when `toleration` (a Kubernetes Toleration as JSON) tolerates this taint, by the
    /// scheduler's rules: an empty key with `Exists` tolerates everything, an empty effect
    /// matches every effect, `Equal` (the default operator) compares values.
    pub fn is_tolerated_by(&self, toleration: &serde_json::Value) -> bool {
        let field = |k: &str| {
            toleration
                .get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
        };
        self.is_tolerated(
            field("key"),
            field("operator"),
            field("value"),
            field("effect"),
        )
    }

    /// [`Taint::is_tolerated_by`] on a toleration's fields (absent ones empty).
    pub fn is_tolerated(&self, key: &str, operator: &str, value: &str, effect: &str) -> bool {
        if !effect.is_empty() && effect != self.effect.as_str() {
            return false;
        }
        let operator = match operator {
            "" => "Equal",
            op => op,
        };
        if key.is_empty() {
            return operator == "Exists";
        }
        if key != self.key {
            return false;
        }
        match operator {
            "Exists" => true,
            "Equal" => value == self.value.as_deref().unwrap_or(""),
            _ => false,
        }
    }
}

impl std::fmt::Display for Taint {
    /// `key=value:Effect`, as `kubectl taint` writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}:{}", self.key, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

impl TaintEffect {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

/// The advertised listener of each broker: one loopback address per Kafka cluster on the
/// client side, one port per broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    /// Env var of the broker container that receives the rendered template.
    #[serde(default = "default_listener_env")]
    pub env: String,
    /// e.g. `CLIENT://{mesh_address}:{port}`; every identity placeholder is available
    /// (`{port}` is the broker's mesh port, `mesh.basePort + broker id`).
    pub template: String,
    /// Optional env var that receives the broker's port on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_env: Option<String>,
}

/// The broker mesh. The loopback `address` names the *Kafka* cluster (the same in the
/// policies of every Kubernetes cluster it stretches over); each broker of it is one port
/// there, `basePort + broker id`, so brokers of both Kubernetes clusters get disjoint ports
/// as long as their broker ids are disjoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mesh {
    /// Name of the Kafka cluster (the same in every Kubernetes cluster's policy).
    pub kafka_cluster: String,
    /// Loopback address that stands for this Kafka cluster on every client sidecar.
    #[serde(default = "default_mesh_address")]
    pub address: std::net::Ipv4Addr,
    /// Mesh port of broker id 0; broker id `n` gets `basePort + n`.
    pub base_port: u16,
    /// Ordinals this Kubernetes cluster may run: broker ids `brokers.idBase` up to
    /// `idBase + maxBrokersPerCluster - 1`; a pod with a higher ordinal gets no identity.
    #[serde(default = "default_max_brokers")]
    pub max_brokers_per_cluster: u32,
    /// Port the broker's sidecar accepts mTLS on (on the pod IP).
    #[serde(default = "default_mtls_port")]
    pub mtls_port: u16,
    /// The broker's plaintext client listener on 127.0.0.1, where the sidecar forwards.
    #[serde(default = "default_broker_port")]
    pub broker_port: u16,
    /// The sidecar's Envoy admin port, bound to 127.0.0.1 only.
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    /// Subject alternative names (URI or DNS) a client certificate must carry, one of. A
    /// URI ending in `/*` allows every URI under it (`spiffe://kpool.io/kafka/stretch/client/*`
    /// is every client identity `kpool-certs mesh --client` issues for the Kafka cluster).
    pub allowed_sans: Vec<String>,
    /// The identity a client sidecar requires of every broker sidecar of this Kafka cluster
    /// (a SAN of the broker certificate); default [`Mesh::broker_san`]'s
    /// `spiffe://kpool.io/kafka/<kafkaCluster>/broker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_san: Option<String>,
    /// Where the sidecar finds its certificate, key and CA in the pod.
    #[serde(default)]
    pub tls: MeshTls,
}

/// The mesh certificate files: a Kubernetes TLS Secret mounted at `dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTls {
    /// The mounted Secret's directory (watched: a rotated Secret applies without restart).
    #[serde(default = "default_tls_dir")]
    pub dir: String,
    /// Certificate chain file name in `dir`.
    #[serde(default = "default_tls_certificate")]
    pub certificate: String,
    /// Private key file name in `dir`.
    #[serde(default = "default_tls_private_key")]
    pub private_key: String,
    /// CA bundle file name in `dir`: the peer's certificate must chain to it.
    #[serde(default = "default_tls_ca")]
    pub ca: String,
}

impl Default for MeshTls {
    fn default() -> Self {
        Self {
            dir: default_tls_dir(),
            certificate: default_tls_certificate(),
            private_key: default_tls_private_key(),
            ca: default_tls_ca(),
        }
    }
}

fn default_mesh_address() -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, 5)
}
fn default_max_brokers() -> u32 {
    100
}
fn default_mtls_port() -> u16 {
    9443
}
fn default_broker_port() -> u16 {
    9094
}
fn default_admin_port() -> u16 {
    9901
}
fn default_tls_dir() -> String {
    "/etc/kpool-proxy/certs".to_owned()
}
fn default_tls_certificate() -> String {
    "tls.crt".to_owned()
}
fn default_tls_private_key() -> String {
    "tls.key".to_owned()
}
fn default_tls_ca() -> String {
    "ca.crt".to_owned()
}

fn default_listener_env() -> String {
    "KAFKA_ADVERTISED_LISTENERS".to_owned()
}

/// The security (mTLS) sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    /// Inject as a native sidecar (init container with `restartPolicy: Always`, Kubernetes
    /// 1.29+) so it starts before and stops after the broker.
    #[serde(default = "yes")]
    pub native: bool,
    /// A full container spec; strings may use identity placeholders.
    pub container: serde_json::Value,
    /// Volumes the sidecar mounts; strings may use identity placeholders.
    #[serde(default)]
    pub volumes: Vec<serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// The readiness probe that asks the agent on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Readiness {
    /// Port the kpool agent listens on at the node's IP.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// `broker`: ready when this broker is back and in sync and nothing is offline or under
    /// min ISR. `cluster`: also no under-replicated partition anywhere.
    #[serde(default)]
    pub verdict: VerdictMode,
    /// A Kafka poll older than this makes every verdict not-ready (`stale`).
    #[serde(default = "default_stale_after")]
    pub stale_after_seconds: u32,
    /// Where the agent reads a broker's state (JMX exporter), if anywhere; otherwise
    /// registration in Metadata stands for "running".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_state: Option<BrokerStateSource>,
    /// Image holding `/usr/local/bin/kpool-probe` (kpool's image holds every kpool binary);
    /// an init container copies it into the pod.
    #[serde(default = "default_probe_image")]
    pub probe_image: String,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            agent_port: default_agent_port(),
            period_seconds: default_period(),
            timeout_seconds: default_timeout(),
            failure_threshold: default_failure_threshold(),
            initial_delay_seconds: 0,
            verdict: VerdictMode::default(),
            stale_after_seconds: default_stale_after(),
            broker_state: None,
            probe_image: default_probe_image(),
        }
    }
}

/// How strict readiness is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictMode {
    #[default]
    Broker,
    Cluster,
}

/// A Prometheus JMX exporter endpoint per broker pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerStateSource {
    /// URL of the exporter, e.g. `http://{pod}.kafka-headless.{namespace}.svc:5556/metrics`.
    pub url_template: String,
    /// The BrokerState gauge.
    #[serde(default = "default_broker_state_metric")]
    pub metric: String,
}

fn default_broker_state_metric() -> String {
    "kafka_server_kafkaserver_brokerstate".to_owned()
}

fn default_stale_after() -> u32 {
    30
}

fn default_agent_port() -> u16 {
    8475
}
fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    2
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_probe_image() -> String {
    concat!("ghcr.io/kpool/kpool:", env!("CARGO_PKG_VERSION")).to_owned()
}

/// Names of the env vars that carry the broker's identity into the broker container.
/// The defaults are the ones the `apache/kafka` image maps to `server.properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityEnv {
    #[serde(default = "default_rack_env")]
    pub rack: String,
    #[serde(default = "default_zone_env")]
    pub zone: String,
    #[serde(default = "default_cluster_env")]
    pub cluster: String,
    #[serde(default = "default_broker_id_env")]
    pub broker_id: String,
}

impl Default for IdentityEnv {
    fn default() -> Self {
        Self {
            rack: default_rack_env(),
            zone: default_zone_env(),
            cluster: default_cluster_env(),
            broker_id: default_broker_id_env(),
        }
    }
}

fn default_rack_env() -> String {
    "KAFKA_BROKER_RACK".to_owned()
}
fn default_zone_env() -> String {
    "KPOOL_ZONE".to_owned()
}
fn default_cluster_env() -> String {
    "KPOOL_CLUSTER".to_owned()
}
fn default_broker_id_env() -> String {
    "KAFKA_NODE_ID".to_owned()
}

/// Topology spread of brokers over zones (belt and braces on top of zone pinning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spread {
    #[serde(default = "one")]
    pub max_skew: u32,
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

impl Default for Spread {
    fn default() -> Self {
        Self {
            max_skew: 1,
            when_unsatisfiable: WhenUnsatisfiable::default(),
        }
    }
}

fn one() -> u32 {
    1
}

/// `whenUnsatisfiable` of a topology spread constraint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhenUnsatisfiable {
    #[default]
    DoNotSchedule,
    ScheduleAnyway,
}

impl WhenUnsatisfiable {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoNotSchedule => "DoNotSchedule",
            Self::ScheduleAnyway => "ScheduleAnyway",
        }
    }
}

/// What to do when the pod already sets something kpool wants to set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Conflicts {
    /// An existing readiness probe on the broker container.
    #[serde(default)]
    pub readiness_probe: OnConflict,
    /// An existing env var of the same name on the broker container.
    #[serde(default)]
    pub env: OnConflict,
}

/// Keep the pod's value, or replace it with the policy's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    #[default]
    Keep,
    Replace,
}

/// Who may run on the pool besides brokers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Guard {
    /// Namespaces whose pods may tolerate the pool taint.
    #[serde(default)]
    pub allow_namespaces: Vec<String>,
    /// Service accounts (`namespace/name`) whose pods may tolerate the pool taint.
    #[serde(default)]
    pub allow_service_accounts: Vec<String>,
    /// The user the API server names when the DaemonSet controller creates a pod: at
    /// admission, a DaemonSet pod is exempt only when created by it.
    #[serde(default = "default_daemon_set_controller")]
    pub daemon_set_controller: String,
    /// Enforce mode: once a PodDisruptionBudget has refused this many evictions of one
    /// foreign pod, the agent deletes that pod (a DELETE with a uid precondition, which no
    /// budget holds back). Absent: never delete, only report the breach. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_refusals: Option<u32>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            allow_namespaces: Vec::new(),
            allow_service_accounts: Vec::new(),
            daemon_set_controller: default_daemon_set_controller(),
            delete_after_refusals: None,
        }
    }
}

/// Healing the two-dimensional rack distribution: every partition balanced over zones and
/// Kubernetes clusters (2 replicas per zone and 3 per cluster at RF 6 over 3 x 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Racks {
    /// What balanced means: `perDimension` (default), replicas per zone and per
    /// Kubernetes cluster each within floor/ceil of RF over them (RF 6 over 3 x 2: 2 per
    /// zone, 3 per cluster); `perCell`, also every (cluster, zone) cell within floor/ceil of
    /// RF over the cells (RF 6: exactly 1 per cell).
    #[serde(default)]
    pub rule: RackRule,
    /// Plan and apply fixes for offending partitions, one agent at a time (a Lease). Off:
    /// the agents only report offenders.
    #[serde(default)]
    pub self_healing: bool,
    /// A partition is fixed only after it offends in this many polls in a row (a topic being
    /// created, a reassignment someone else runs, settle first). At least 1.
    #[serde(default = "default_persist_polls")]
    pub persist_polls: u32,
    /// At most this many replica moves per healing run; the rest wait for the next. At least 1.
    #[serde(default = "default_moves_per_run")]
    pub moves_per_run: u32,
    /// At most this many moves into or out of one broker at once. At least 1.
    #[serde(default = "default_max_moves_per_broker")]
    pub max_moves_per_broker: u32,
    /// Replication throttle on the brokers and replicas a move involves, bytes per second;
    /// 0: none.
    #[serde(default = "default_throttle")]
    pub throttle_bytes_per_second: u64,
}

/// What a balanced partition is (`racks.rule`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RackRule {
    #[default]
    PerDimension,
    PerCell,
}

impl Default for Racks {
    fn default() -> Self {
        Self {
            rule: RackRule::PerDimension,
            self_healing: false,
            persist_polls: default_persist_polls(),
            moves_per_run: default_moves_per_run(),
            max_moves_per_broker: default_max_moves_per_broker(),
            throttle_bytes_per_second: default_throttle(),
        }
    }
}

fn default_persist_polls() -> u32 {
    2
}
fn default_moves_per_run() -> u32 {
    10
}
fn default_max_moves_per_broker() -> u32 {
    5
}
fn default_throttle() -> u64 {
    50 * 1024 * 1024
}

fn default_daemon_set_controller() -> String {
    "system:serviceaccount:kube-system:daemon-set-controller".to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn toleration_matching_follows_the_scheduler() {
        let taint = Taint {
            key: "kpool.io/pool".into(),
            value: Some("kafka".into()),
            effect: TaintEffect::NoSchedule,
        };
        let yes = [
            json!({"key": "kpool.io/pool", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}),
            json!({"key": "kpool.io/pool", "value": "kafka"}),
            json!({"key": "kpool.io/pool", "operator": "Exists"}),
            json!({"operator": "Exists"}),
        ];
        let no = [
            json!({"key": "kpool.io/pool", "value": "other"}),
            json!({"key": "kpool.io/pool", "operator": "Exists", "effect": "NoExecute"}),
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}),
            json!({"operator": "Equal"}),
        ];
        for t in &yes {
            assert!(taint.is_tolerated_by(t), "{t}");
        }
        for t in &no {
            assert!(!taint.is_tolerated_by(t), "{t}");
        }
    }
}
