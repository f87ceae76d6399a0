//! The kpool pool policy, read the same way by the webhook and the agent.
//!
//! [`Policy::from_yaml`] parses strictly (unknown keys are errors), validates every field
//! and compiles the templates once, so per-pod work is only rendering.

mod identity;
mod json_template;
pub mod keys;
pub mod mesh;
pub mod model;
pub mod names;
pub mod pool;
mod template;
mod validate;

pub use identity::{
    BrokerIdentity, IdentityError, OrdinalError, POD_INDEX_LABEL, name_suffix_ordinal, ordinal_of,
};
pub use json_template::{JsonTemplate, push_json_str};
pub use model::PolicySpec;
pub use template::{ALL_VARS, Template, TemplateError, Var, Vars};
pub use validate::{FieldError, PolicyError};

use sha2::{Digest, Sha256};

/// The documented default policy (`examples/policy.yaml`), used when no policy file is given.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../examples/policy.yaml");

/// A loaded, validated and compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    spec: PolicySpec,
    origin: String,
    hash: String,
    racks: Vec<String>,
    rack_patterns: Vec<RackPattern>,
    listener: Template,
    sidecar_container: JsonTemplate,
    sidecar_volumes: Vec<JsonTemplate>,
    sidecar_name: String,
    sidecar_volume_names: Vec<String>,
    broker_state_url: Option<Template>,
}

impl Policy {
    /// Parses and validates a policy document; `origin` (a file name) prefixes errors.
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self, PolicyError> {
        let spec = validate::parse(yaml, origin)?;
        Self::from_spec(spec, origin)
    }

    /// Reads a policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Self::from_yaml(&text, &origin)
    }

    /// The built-in default policy.
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::from_yaml(DEFAULT_POLICY_YAML, "<built-in default policy>")
    }

    /// Validates and compiles an already parsed spec.
    pub fn from_spec(spec: PolicySpec, origin: &str) -> Result<Self, PolicyError> {
        let compiled = validate::validate(&spec).map_err(|errors| PolicyError::Invalid {
            origin: origin.to_owned(),
            errors,
        })?;
        let hash = hash_spec(&spec);
        Ok(Self {
            hash,
            origin: origin.to_owned(),
            rack_patterns: rack_patterns(&compiled.rack_format, &spec),
            racks: compiled.racks,
            listener: compiled.listener,
            sidecar_container: compiled.sidecar_container,
            sidecar_volumes: compiled.sidecar_volumes,
            sidecar_name: compiled.sidecar_name,
            sidecar_volume_names: compiled.sidecar_volume_names,
            broker_state_url: compiled.broker_state_url,
            spec,
        })
    }

    /// The policy as written (with defaults filled in).
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Where the policy came from (a file name), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Stable hash of the policy's meaning: formatting, comments and key order do not count.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The rack of each zone, in zone order.
    pub fn racks(&self) -> &[String] {
        &self.racks
    }

    /// Name of the injected sidecar container.
    pub fn sidecar_name(&self) -> &str {
        &self.sidecar_name
    }

    /// Names of the sidecar's volumes.
    pub fn sidecar_volume_names(&self) -> &[String] {
        &self.sidecar_volume_names
    }

    /// The JMX exporter URL of a broker (`readiness.brokerState.urlTemplate`), compiled.
    pub fn broker_state_url(&self) -> Option<&Template> {
        self.broker_state_url.as_ref()
    }

    /// The compiled sidecar container template.
    pub fn sidecar_container(&self) -> &JsonTemplate {
        &self.sidecar_container
    }

    /// The compiled sidecar volume templates.
    pub fn sidecar_volumes(&self) -> &[JsonTemplate] {
        &self.sidecar_volumes
    }

    /// True when the sidecar (container or volumes) differs between brokers.
    pub fn sidecar_is_per_pod(&self) -> bool {
        self.sidecar_container.is_per_pod() || self.sidecar_volumes.iter().any(|v| v.is_per_pod())
    }

    /// The zone of broker `ordinal`: `zones[ordinal mod n]`.
    pub fn zone_index(&self, ordinal: u32) -> usize {
        // zones is never empty after validation
        ordinal as usize % self.spec.zones.len().max(1)
    }

    /// The identity of broker pod `pod` in `namespace` with `ordinal`.
    pub fn identity<'a>(
        &'a self,
        pod: &'a str,
        namespace: &'a str,
        ordinal: u32,
    ) -> Result<BrokerIdentity<'a>, IdentityError> {
        let mesh = &self.spec.mesh;
        if ordinal >= mesh.max_brokers_per_cluster {
            return Err(IdentityError::TooManyBrokers {
                ordinal,
                max: mesh.max_brokers_per_cluster,
            });
        }
        let id_base = self.spec.brokers.id_base;
        let broker_id = id_base
            .checked_add(ordinal)
            .and_then(|id| i32::try_from(id).ok())
            .ok_or(IdentityError::BrokerIdOverflow { id_base, ordinal })?;
        // validation bounds basePort + idBase + maxBrokersPerCluster - 1 by 65535
        let port =
            mesh::broker_port(&self.spec, broker_id).ok_or(IdentityError::TooManyBrokers {
                ordinal,
                max: mesh.max_brokers_per_cluster,
            })?;
        let z = self.zone_index(ordinal);
        Ok(BrokerIdentity {
            pod,
            namespace,
            cluster: &self.spec.cluster,
            ordinal,
            broker_id,
            zone: &self.spec.zones[z],
            rack: &self.racks[z],
            port,
            mesh_address: mesh.address,
        })
    }

    /// The advertised listener of a broker.
    pub fn advertised_listener(&self, id: &BrokerIdentity<'_>) -> String {
        self.listener.render(id)
    }

    /// Splits a rack string back into (cluster, zone). The zone must be one of the policy's
    /// zones; the cluster may be any (brokers of the other Kubernetes cluster have racks too).
    pub fn parse_rack<'r>(&'r self, rack: &'r str) -> Option<(&'r str, &'r str)> {
        self.rack_patterns
            .iter()
            .zip(&self.spec.zones)
            .find_map(|(pattern, zone)| {
                let cluster = match pattern {
                    RackPattern::Exact(r) => (r == rack).then_some(self.spec.cluster.as_str())?,
                    RackPattern::Around(prefix, suffix) => {
                        let mid = rack
                            .strip_prefix(prefix.as_str())?
                            .strip_suffix(suffix.as_str())?;
                        (!mid.is_empty()).then_some(mid)?
                    }
                };
                Some((cluster, zone.as_str()))
            })
    }
}

/// A rack format rendered for one zone, with the cluster left open.
#[derive(Debug, Clone)]
enum RackPattern {
    Exact(String),
    Around(String, String),
}

fn rack_patterns(format: &Template, spec: &PolicySpec) -> Vec<RackPattern> {
    struct Open<'a>(&'a str);
    impl Vars for Open<'_> {
        fn write_var(&self, var: Var, out: &mut String) {
            match var {
                Var::Zone => out.push_str(self.0),
                _ => out.push('\0'),
            }
        }
    }
    spec.zones
        .iter()
        .map(|z| {
            let r = format.render(&Open(z));
            match r.split_once('\0') {
                Some((p, s)) if !s.contains('\0') => {
                    RackPattern::Around(p.to_owned(), s.to_owned())
                }
                _ => RackPattern::Exact(r),
            }
        })
        .collect()
}

fn hash_spec(spec: &PolicySpec) -> String {
    // Sort every map so key order in the file (kept by serde_json's preserve_order) does
    // not change the hash.
    let canonical = sorted(serde_json::to_value(spec).unwrap_or_default());
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut out = String::with_capacity(7 + 16);
    out.push_str("sha256:");
    for b in &digest[..8] {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}
