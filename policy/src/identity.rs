//! Broker identity math: ordinal → zone, rack, broker id, port, advertised listener.

use std::fmt::Write as _;

use crate::template::{Var, Vars};

/// The label the StatefulSet controller puts on each pod (Kubernetes 1.28+).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Everything that makes one broker pod distinct from its siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerIdentity<'a> {
    pub pod: &'a str,
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub ordinal: u32,
    pub broker_id: i32,
    pub zone: &'a str,
    pub rack: &'a str,
    /// The broker's mesh port: `mesh.basePort + broker id`.
    pub port: u16,
    /// The Kafka cluster's mesh loopback address (`mesh.address`).
    pub mesh_address: std::net::Ipv4Addr,
}

impl Vars for BrokerIdentity<'_> {
    fn write_var(&self, var: Var, out: &mut String) {
        match var {
            Var::Pod => out.push_str(self.pod),
            Var::Namespace => out.push_str(self.namespace),
            Var::Cluster => out.push_str(self.cluster),
            Var::Zone => out.push_str(self.zone),
            Var::Rack => out.push_str(self.rack),
            Var::Ordinal => {
                let _ = write!(out, "{}", self.ordinal);
            }
            Var::BrokerId => {
                let _ = write!(out, "{}", self.broker_id);
            }
            Var::Port => {
                let _ = write!(out, "{}", self.port);
            }
            Var::MeshAddress => {
                let _ = write!(out, "{}", self.mesh_address);
            }
        }
    }
}

/// Why no identity can be given to a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "ordinal {ordinal} is beyond the mesh's {max} brokers per Kubernetes cluster (mesh.maxBrokersPerCluster)"
    )]
    TooManyBrokers { ordinal: u32, max: u32 },
    #[error(
        "ordinal {ordinal} gives broker id {id_base} + {ordinal}, beyond Kafka's int32 node.id (brokers.idBase)"
    )]
    BrokerIdOverflow { id_base: u32, ordinal: u32 },
}

/// Why a pod has no ordinal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrdinalError {
    #[error("label {POD_INDEX_LABEL}={value:?} is not a non-negative integer")]
    BadLabel { value: String },
    #[error("no ordinal: no {POD_INDEX_LABEL} label and {what} has no numeric -N suffix")]
    Missing { what: String },
}

/// The ordinal of a StatefulSet pod: the `apps.kubernetes.io/pod-index` label, else the
/// numeric suffix of its name. `generate_name` only improves the error message.
pub fn ordinal_of(
    pod_index_label: Option<&str>,
    name: Option<&str>,
    generate_name: Option<&str>,
) -> Result<u32, OrdinalError> {
    if let Some(v) = pod_index_label {
        return parse_ordinal(v).ok_or_else(|| OrdinalError::BadLabel {
            value: v.to_owned(),
        });
    }
    if let Some(n) = name.and_then(name_suffix_ordinal) {
        return Ok(n);
    }
    let what = match (name, generate_name) {
        (Some(n), _) if !n.is_empty() => format!("name {n:?}"),
        (_, Some(g)) => format!("the pod has only generateName {g:?} (no name yet), which"),
        _ => "the pod has no name and no generateName, which".to_owned(),
    };
    Err(OrdinalError::Missing { what })
}

/// The `N` of `name-N`.
pub fn name_suffix_ordinal(name: &str) -> Option<u32> {
    let (_, suffix) = name.rsplit_once('-')?;
    parse_ordinal(suffix)
}

fn parse_ordinal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_prefers_label() {
        assert_eq!(ordinal_of(Some("4"), Some("kafka-0"), None), Ok(4));
        assert_eq!(ordinal_of(None, Some("kafka-12"), None), Ok(12));
    }

    #[test]
    fn ordinal_errors_name_the_problem() {
        let e = ordinal_of(Some("x"), Some("kafka-0"), None).expect_err("bad label");
        assert_eq!(
            e.to_string(),
            "label apps.kubernetes.io/pod-index=\"x\" is not a non-negative integer"
        );
        let e = ordinal_of(None, None, Some("kafka-")).expect_err("no name");
        assert!(
            e.to_string().contains("only generateName \"kafka-\""),
            "{e}"
        );
        let e = ordinal_of(None, Some("toolbox"), None).expect_err("no suffix");
        assert!(
            e.to_string()
                .contains("name \"toolbox\" has no numeric -N suffix")
        );
        assert!(ordinal_of(None, Some("kafka-01"), None).is_err());
    }
}
