//! Strict parsing and semantic validation. Every error names the field path and the value.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::json_template::JsonTemplate;
use crate::keys::{PROBE_ENV, PROBE_INSTALLER_NAME, PROBE_VOLUME_NAME};
use crate::model::{API_VERSION, KIND, Label, PolicySpec};
use crate::names::{check_dns_label, check_env_name, check_label_value, check_qualified_name};
use crate::template::{ALL_VARS, Template, Var, Vars};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `zones[1]` or `sidecar.container.name`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: cannot read policy: {message}")]
    Read { origin: String, message: String },
    #[error("{origin}{}: {}{message}", location_suffix(*line, *column), path_prefix(path))]
    Parse {
        origin: String,
        /// Field path where parsing stopped (empty at the top level).
        path: String,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
    #[error("{origin}: invalid policy:{}", list(errors))]
    Invalid {
        origin: String,
        errors: Vec<FieldError>,
    },
}

impl PolicyError {
    /// The individual field errors (one for parse errors).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Read { message, .. } => vec![FieldError {
                path: String::new(),
                message: message.clone(),
            }],
            Self::Parse { path, message, .. } => vec![FieldError {
                path: path.clone(),
                message: message.clone(),
            }],
            Self::Invalid { errors, .. } => errors.clone(),
        }
    }
}

fn location_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

/// YAML text → spec, with unknown keys and type errors reported at their field path.
pub(crate) fn parse(yaml: &str, origin: &str) -> Result<PolicySpec, PolicyError> {
    if yaml.trim().is_empty() {
        return Err(PolicyError::Parse {
            origin: origin.to_owned(),
            path: String::new(),
            line: None,
            column: None,
            message: "the policy document is empty".to_owned(),
        });
    }
    let mut path = String::new();
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::with_deserializer_from_str_with_options(yaml, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let loc = e.location();
        PolicyError::Parse {
            origin: origin.to_owned(),
            path: if path == "." { String::new() } else { path },
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message: strip_location(&e.to_string()),
        }
    })
}

/// serde-saphyr appends " at line L column C"; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
    .trim_end()
    .to_owned()
}

/// What validation compiles along the way.
pub(crate) struct Compiled {
    pub racks: Vec<String>,
    pub rack_format: Template,
    pub listener: Template,
    pub sidecar_container: JsonTemplate,
    pub sidecar_volumes: Vec<JsonTemplate>,
    pub sidecar_name: String,
    pub sidecar_volume_names: Vec<String>,
    pub broker_state_url: Option<Template>,
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.push(path, m);
        }
    }

    fn label(&mut self, path: &str, l: &Label) {
        self.check(format!("{path}.key"), check_qualified_name(&l.key));
        self.check(format!("{path}.value"), check_label_value(&l.value));
    }
}

pub(crate) fn validate(spec: &PolicySpec) -> Result<Compiled, Vec<FieldError>> {
    let mut e = Errors::default();

    if spec.api_version != API_VERSION {
        e.push(
            "apiVersion",
            format!("expected {API_VERSION:?}, found {:?}", spec.api_version),
        );
    }
    if spec.kind != KIND {
        e.push("kind", format!("expected {KIND:?}, found {:?}", spec.kind));
    }
    if spec.cluster.is_empty() {
        e.push("cluster", "must not be empty");
    } else {
        e.check("cluster", check_label_value(&spec.cluster));
    }

    // zones (rack checks below only run when zones and rackFormat are sound)
    let errors_before_racks = e.0.len();
    if spec.zones.is_empty() {
        e.push("zones", "must list at least one zone");
    }
    let mut seen = BTreeSet::new();
    for (i, z) in spec.zones.iter().enumerate() {
        if z.is_empty() {
            e.push(format!("zones[{i}]"), "must not be empty");
        } else if !seen.insert(z.as_str()) {
            e.push(format!("zones[{i}]"), format!("duplicate zone {z:?}"));
        } else {
            e.check(format!("zones[{i}]"), check_label_value(z));
        }
    }

    // rack format
    let rack_format = match Template::compile(&spec.rack_format, &[Var::Cluster, Var::Zone], false)
    {
        Ok(t) => t,
        Err(err) => {
            e.push("rackFormat", format!("{:?}: {err}", spec.rack_format));
            Template::empty()
        }
    };
    let racks: Vec<String> = spec
        .zones
        .iter()
        .map(|z| {
            rack_format.render(&ClusterZone {
                cluster: &spec.cluster,
                zone: z,
            })
        })
        .collect();
    let mut seen_racks = BTreeSet::new();
    let racks_checkable = e.0.len() == errors_before_racks;
    for (z, r) in spec
        .zones
        .iter()
        .zip(&racks)
        .take_while(|_| racks_checkable)
    {
        if r.is_empty() {
            e.push("rackFormat", "renders an empty rack");
            break;
        }
        if let Err(m) = check_label_value(r) {
            e.push("rackFormat", format!("rack for zone {z:?}: {m}"));
        }
        if !seen_racks.insert(r.as_str()) {
            e.push(
                "rackFormat",
                format!("renders the same rack {r:?} for more than one zone; include {{zone}}"),
            );
            break;
        }
    }

    // brokers
    if spec.brokers.selector.is_empty() {
        e.push(
            "brokers.selector",
            "must have at least one label (an empty selector would match every pod)",
        );
    }
    for (k, v) in &spec.brokers.selector {
        e.check(format!("brokers.selector.{k}"), check_qualified_name(k));
        e.check(format!("brokers.selector.{k}"), check_label_value(v));
    }
    if spec.brokers.namespaces.is_empty() {
        e.push(
            "brokers.namespaces",
            "must name at least one namespace: a pod with the broker labels is a broker only there",
        );
    }
    let mut seen_ns = BTreeSet::new();
    for (i, ns) in spec.brokers.namespaces.iter().enumerate() {
        e.check(format!("brokers.namespaces[{i}]"), check_dns_label(ns));
        if !seen_ns.insert(ns.as_str()) {
            e.push(
                format!("brokers.namespaces[{i}]"),
                format!("duplicate namespace {ns:?}"),
            );
        }
    }
    e.check(
        "brokers.container",
        check_dns_label(&spec.brokers.container),
    );
    if i32::try_from(spec.brokers.id_base).is_err() {
        e.push(
            "brokers.idBase",
            format!("{} is beyond Kafka's int32 node.id", spec.brokers.id_base),
        );
    }

    // injection
    e.label("injection.namespaceLabel", &spec.injection.namespace_label);
    e.check(
        "injection.optOutAnnotation",
        check_qualified_name(&spec.injection.opt_out_annotation),
    );

    // pool
    e.label("pool.nodeLabel", &spec.pool.node_label);
    e.check("pool.taint.key", check_qualified_name(&spec.pool.taint.key));
    if let Some(v) = &spec.pool.taint.value {
        e.check("pool.taint.value", check_label_value(v));
    }
    e.check(
        "pool.zoneLabel",
        check_qualified_name(&spec.pool.zone_label),
    );

    // listener
    let listener = match Template::compile(&spec.listener.template, ALL_VARS, false) {
        Ok(t) => t,
        Err(err) => {
            e.push(
                "listener.template",
                format!("{:?}: {err}", spec.listener.template),
            );
            Template::empty()
        }
    };
    if spec.listener.template.trim().is_empty() {
        e.push("listener.template", "must not be empty");
    }

    validate_mesh(spec, &mut e);

    // env names: valid and distinct
    let mut env_names: Vec<(&str, &str)> = vec![
        ("listener.env", spec.listener.env.as_str()),
        ("identity.rack", spec.identity.rack.as_str()),
        ("identity.zone", spec.identity.zone.as_str()),
        ("identity.cluster", spec.identity.cluster.as_str()),
        ("identity.brokerId", spec.identity.broker_id.as_str()),
    ];
    if let Some(p) = &spec.listener.port_env {
        env_names.push(("listener.portEnv", p));
    }
    let mut seen_env: Vec<(&str, &str)> = PROBE_ENV
        .iter()
        .map(|n| ("the probe's downward-API env", *n))
        .collect();
    for (path, name) in env_names {
        if let Err(m) = check_env_name(name) {
            e.push(path, m);
        } else if let Some((other, _)) = seen_env.iter().find(|(_, n)| *n == name) {
            e.push(path, format!("env var {name:?} is already used by {other}"));
        } else {
            seen_env.push((path, name));
        }
    }

    // sidecar
    let (sidecar_container, sidecar_name) = validate_sidecar_container(spec, &mut e);
    let mut sidecar_volumes = Vec::new();
    let mut sidecar_volume_names = Vec::new();
    for (i, v) in spec.sidecar.volumes.iter().enumerate() {
        let path = format!("sidecar.volumes[{i}]");
        if typed_check::<k8s_openapi::api::core::v1::Volume>(v, &path, &mut e) {
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Err(m) = check_dns_label(name) {
                e.push(format!("{path}.name"), m);
            } else if name == PROBE_VOLUME_NAME {
                e.push(
                    format!("{path}.name"),
                    format!("{name:?} is reserved for the probe binary volume"),
                );
            } else if sidecar_volume_names.iter().any(|n| n == name) {
                e.push(format!("{path}.name"), format!("duplicate volume {name:?}"));
            } else {
                sidecar_volume_names.push(name.to_owned());
            }
        }
        match JsonTemplate::compile(v, &path) {
            Ok(t) => sidecar_volumes.push(t),
            Err(err) => e.push(err.path, err.error.to_string()),
        }
    }

    // readiness
    let r = &spec.readiness;
    if r.agent_port == 0 {
        e.push(
            "readiness.agentPort",
            "must be between 1 and 65535, found 0",
        );
    }
    for (path, v) in [
        ("readiness.periodSeconds", r.period_seconds),
        ("readiness.timeoutSeconds", r.timeout_seconds),
        ("readiness.failureThreshold", r.failure_threshold),
    ] {
        if v == 0 {
            e.push(path, "must be at least 1, found 0");
        }
    }
    if r.stale_after_seconds == 0 {
        e.push("readiness.staleAfterSeconds", "must be at least 1, found 0");
    }
    let mut broker_state_url = None;
    if let Some(b) = &r.broker_state {
        match Template::compile(&b.url_template, ALL_VARS, false) {
            Err(err) => e.push(
                "readiness.brokerState.urlTemplate",
                format!("{:?}: {err}", b.url_template),
            ),
            Ok(t) => broker_state_url = Some(t),
        }
        if broker_state_url.is_some() && !b.url_template.starts_with("http://") {
            e.push(
                "readiness.brokerState.urlTemplate",
                format!(
                    "{:?}: expected an http:// URL (the JMX exporter's plain-HTTP endpoint)",
                    b.url_template
                ),
            );
        }
        if b.metric.is_empty() {
            e.push("readiness.brokerState.metric", "must not be empty");
        }
    }
    if r.probe_image.trim().is_empty() {
        e.push("readiness.probeImage", "must not be empty");
    }

    if spec.spread.max_skew == 0 {
        e.push("spread.maxSkew", "must be at least 1, found 0");
    }

    if let Some(k) = &spec.kafka {
        if k.bootstrap.is_empty() {
            e.push("kafka.bootstrap", "must list at least one host:port");
        }
        for (i, b) in k.bootstrap.iter().enumerate() {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                e.push(
                    format!("kafka.bootstrap[{i}]"),
                    format!("expected host:port, found {b:?}"),
                );
            }
        }
    }
    for (i, ns) in spec.guard.allow_namespaces.iter().enumerate() {
        e.check(format!("guard.allowNamespaces[{i}]"), check_dns_label(ns));
    }
    if spec.guard.daemon_set_controller.trim().is_empty() {
        e.push(
            "guard.daemonSetController",
            "must name the DaemonSet controller's user (default system:serviceaccount:kube-system:daemon-set-controller)",
        );
    }
    for (field, value) in [
        ("racks.persistPolls", spec.racks.persist_polls),
        ("racks.movesPerRun", spec.racks.moves_per_run),
        ("racks.maxMovesPerBroker", spec.racks.max_moves_per_broker),
    ] {
        if value == 0 {
            e.push(field, "must be at least 1, found 0");
        }
    }
    if spec.guard.delete_after_refusals == Some(0) {
        e.push(
            "guard.deleteAfterRefusals",
            "must be at least 1, found 0 (leave it out to never delete)",
        );
    }
    for (i, sa) in spec.guard.allow_service_accounts.iter().enumerate() {
        let path = format!("guard.allowServiceAccounts[{i}]");
        match sa.split_once('/') {
            Some((ns, name)) if check_dns_label(ns).is_ok() && !name.is_empty() => {}
            _ => e.push(path, format!("expected \"namespace/name\", found {sa:?}")),
        }
    }

    if e.0.is_empty() {
        Ok(Compiled {
            racks,
            rack_format,
            listener,
            sidecar_container,
            sidecar_volumes,
            sidecar_name,
            sidecar_volume_names,
            broker_state_url,
        })
    } else {
        Err(e.0)
    }
}

fn validate_mesh(spec: &PolicySpec, e: &mut Errors) {
    let m = &spec.mesh;
    if m.kafka_cluster.is_empty() {
        e.push("mesh.kafkaCluster", "must name the Kafka cluster");
    } else {
        e.check("mesh.kafkaCluster", check_dns_label(&m.kafka_cluster));
    }
    if !m.address.is_loopback() {
        e.push(
            "mesh.address",
            format!(
                "{} is not a loopback address: the mesh address lives on every client pod's loopback (127.0.0.0/8)",
                m.address
            ),
        );
    } else if m.address == std::net::Ipv4Addr::LOCALHOST {
        e.push(
            "mesh.address",
            "127.0.0.1 would share the application's own localhost ports; use another 127/8 address such as 127.0.0.5",
        );
    }
    if m.base_port == 0 {
        e.push("mesh.basePort", "must be between 1 and 65535, found 0");
    }
    if m.max_brokers_per_cluster == 0 {
        e.push("mesh.maxBrokersPerCluster", "must be at least 1, found 0");
    }
    if let Some(ids) = crate::mesh::id_range(spec) {
        if *ids.end() > i32::MAX as u64 {
            e.push(
                "mesh.maxBrokersPerCluster",
                format!(
                    "broker ids {}..={} (brokers.idBase + mesh.maxBrokersPerCluster) go beyond Kafka's int32 node.id",
                    ids.start(),
                    ids.end()
                ),
            );
        } else if let Some(ports) = crate::mesh::port_range(spec)
            && *ports.end() > u64::from(u16::MAX)
        {
            e.push(
                "mesh.basePort",
                format!(
                    "{} + broker ids {}..={} (brokers.idBase {} + up to mesh.maxBrokersPerCluster {}) gives ports up to {}, beyond 65535",
                    m.base_port,
                    ids.start(),
                    ids.end(),
                    spec.brokers.id_base,
                    m.max_brokers_per_cluster,
                    ports.end()
                ),
            );
        }
    }
    // The sidecar (mTLS on the pod IP, admin on 127.0.0.1) and the broker's plaintext
    // listener (127.0.0.1) share the pod's network namespace: their ports must differ.
    let pod_ports = [
        ("mesh.mtlsPort", m.mtls_port),
        ("mesh.brokerPort", m.broker_port),
        ("mesh.adminPort", m.admin_port),
    ];
    for (i, (path, port)) in pod_ports.iter().enumerate() {
        if *port == 0 {
            e.push(*path, "must be between 1 and 65535, found 0");
        } else if let Some((other, _)) = pod_ports[..i].iter().find(|(_, p)| p == port) {
            e.push(
                *path,
                format!("{port} is already {other}: both listen in the broker pod"),
            );
        }
    }
    // The sidecar's declared `mtls` port is the one its Envoy listens on.
    let ports = spec
        .sidecar
        .container
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, p) in ports.iter().enumerate() {
        let declared = p.get("containerPort").and_then(Value::as_u64);
        if m.mtls_port != 0
            && p.get("name").and_then(Value::as_str) == Some("mtls")
            && let Some(declared) = declared
            && declared != u64::from(m.mtls_port)
        {
            e.push(
                format!("sidecar.container.ports[{i}].containerPort"),
                format!(
                    "{declared} is the sidecar's `mtls` port, but mesh.mtlsPort (where its Envoy listens) is {}",
                    m.mtls_port
                ),
            );
        }
    }
    if m.allowed_sans.is_empty() {
        e.push(
            "mesh.allowedSans",
            "must list at least one subject alternative name a client certificate may carry (empty would refuse every client)",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, san) in m.allowed_sans.iter().enumerate() {
        let path = format!("mesh.allowedSans[{i}]");
        if san.trim().is_empty() {
            e.push(path, "must not be empty");
        } else if san.chars().any(|c| c.is_whitespace() || c.is_control()) {
            e.push(path, format!("{san:?} contains whitespace"));
        } else if !seen.insert(san.as_str()) {
            e.push(path, format!("duplicate SAN {san:?}"));
        } else if san.contains('*')
            && !matches!(crate::mesh::SanPattern::parse(san), crate::mesh::SanPattern::Prefix(p) if !p.contains('*'))
        {
            e.push(
                path,
                format!(
                    "{san:?}: a wildcard is only allowed as the last segment of a URI (\"spiffe://kpool.io/kafka/{}/client/*\")",
                    m.kafka_cluster
                ),
            );
        }
    }
    if let Some(san) = &m.broker_san
        && (san.trim().is_empty()
            || san.contains('*')
            || san.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        e.push(
            "mesh.brokerSan",
            format!("{san:?}: expected one SAN (no wildcard, no whitespace), or leave it out for spiffe://kpool.io/kafka/<kafkaCluster>/broker"),
        );
    }
    let t = &m.tls;
    if !t.dir.starts_with('/') {
        e.push(
            "mesh.tls.dir",
            format!("{:?}: expected an absolute path in the pod", t.dir),
        );
    }
    let files = [
        ("mesh.tls.certificate", &t.certificate),
        ("mesh.tls.privateKey", &t.private_key),
        ("mesh.tls.ca", &t.ca),
    ];
    for (i, (path, f)) in files.iter().enumerate() {
        if f.is_empty() || f.contains('/') || *f == "." || *f == ".." {
            e.push(
                *path,
                format!("{f:?}: expected a file name in mesh.tls.dir (a Secret key)"),
            );
        } else if let Some((other, _)) = files[..i].iter().find(|(_, g)| g == f) {
            e.push(*path, format!("{f:?} is already {other}"));
        }
    }
}

fn validate_sidecar_container(spec: &PolicySpec, e: &mut Errors) -> (JsonTemplate, String) {
    let c = &spec.sidecar.container;
    let path = "sidecar.container";
    let empty = JsonTemplate::Static("null".to_owned());
    if !c.is_object() {
        e.push(
            path,
            format!("expected a container spec (a mapping), found {c}"),
        );
        return (empty, String::new());
    }
    typed_check::<k8s_openapi::api::core::v1::Container>(c, path, e);
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.contains('{') {
        e.push(
            format!("{path}.name"),
            format!("{name:?}: the sidecar name must be the same in every pod; no placeholders"),
        );
    } else if let Err(m) = check_dns_label(name) {
        e.push(format!("{path}.name"), m);
    } else if name == spec.brokers.container {
        e.push(
            format!("{path}.name"),
            format!("{name:?} is the broker container's name (brokers.container)"),
        );
    } else if name == PROBE_INSTALLER_NAME {
        e.push(
            format!("{path}.name"),
            format!("{name:?} is reserved for the probe installer"),
        );
    }
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        e.push(format!("{path}.image"), "must be set");
    }
    if let Some(rp) = c.get("restartPolicy") {
        e.push(
            format!("{path}.restartPolicy"),
            format!("{rp} must not be set: kpool sets it from sidecar.native"),
        );
    }
    // A native sidecar is an init container that keeps running.
    let mut rendered = c.clone();
    if spec.sidecar.native
        && let Some(obj) = rendered.as_object_mut()
    {
        obj.insert("restartPolicy".to_owned(), Value::from("Always"));
    }
    let template = match JsonTemplate::compile(&rendered, path) {
        Ok(t) => t,
        Err(err) => {
            e.push(err.path, err.error.to_string());
            empty
        }
    };
    (template, name.to_owned())
}

/// Checks that `v` is a valid `T` and has no field `T` does not know (k8s-openapi types
/// ignore unknown fields, so compare against a round trip). Returns true when valid.
fn typed_check<T: DeserializeOwned + serde::Serialize>(
    v: &Value,
    path: &str,
    e: &mut Errors,
) -> bool {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Err(err) => {
            let inner = err.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            e.push(at, err.into_inner().to_string());
            false
        }
        Ok(typed) => {
            let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
            match first_unknown(v, &back, path) {
                Some(unknown) => {
                    e.push(unknown, "unknown field");
                    false
                }
                None => true,
            }
        }
    }
}

fn first_unknown(orig: &Value, back: &Value, path: &str) -> Option<String> {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => o.iter().find_map(|(k, v)| match b.get(k) {
            // null and empty collections may be dropped by the round trip
            None if !is_emptyish(v) => Some(format!("{path}.{k}")),
            None => None,
            Some(bv) => first_unknown(v, bv, &format!("{path}.{k}")),
        }),
        (Value::Array(o), Value::Array(b)) => o
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, bv))| first_unknown(v, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_emptyish(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

struct ClusterZone<'a> {
    cluster: &'a str,
    zone: &'a str,
}

impl Vars for ClusterZone<'_> {
    fn write_var(&self, var: Var, out: &mut String) {
        match var {
            Var::Cluster => out.push_str(self.cluster),
            Var::Zone => out.push_str(self.zone),
            _ => {}
        }
    }
}
