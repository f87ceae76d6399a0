//! Broker mesh arithmetic: which port on the Kafka cluster's loopback address is whose.
//!
//! A broker's mesh port is `mesh.basePort + broker id`. One policy covers the broker ids
//! `brokers.idBase .. idBase + mesh.maxBrokersPerCluster`, so its ports are
//! `basePort + idBase ..= basePort + idBase + maxBrokersPerCluster - 1` (validation keeps
//! that within 65535). The policies of the Kubernetes clusters one Kafka cluster stretches
//! over share the address and base port and differ in `idBase`: disjoint id ranges give
//! disjoint ports, which [`check_disjoint`] verifies for a pair.

use std::ops::RangeInclusive;

use crate::Policy;
use crate::model::{Mesh, PolicySpec};

/// The trust domain of the identities kpool issues (`spiffe://kpool.io/...`).
pub const TRUST_DOMAIN: &str = "kpool.io";

/// How an `allowedSans` entry matches a certificate's SAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanPattern<'a> {
    /// The SAN must equal this.
    Exact(&'a str),
    /// A URI entry ending in `/*`: the SAN must start with this (which ends in `/`) and
    /// have more after it.
    Prefix(&'a str),
}

impl<'a> SanPattern<'a> {
    /// Reads an `allowedSans` entry.
    pub fn parse(entry: &'a str) -> Self {
        match entry.strip_suffix('*') {
            Some(prefix) if prefix.contains("://") && prefix.ends_with('/') => Self::Prefix(prefix),
            _ => Self::Exact(entry),
        }
    }

    /// Whether `san` matches.
    pub fn matches(self, san: &str) -> bool {
        match self {
            Self::Exact(e) => san == e,
            Self::Prefix(p) => san.len() > p.len() && san.starts_with(p),
        }
    }
}

impl Mesh {
    /// The SAN every broker sidecar's certificate carries and every client sidecar
    /// requires: `mesh.brokerSan`, else `spiffe://kpool.io/kafka/<kafkaCluster>/broker`.
    /// One Secret serves a whole StatefulSet, so the identity names the Kafka cluster's
    /// brokers, not one broker.
    pub fn broker_san(&self) -> String {
        self.broker_san.clone().unwrap_or_else(|| {
            format!(
                "spiffe://{TRUST_DOMAIN}/kafka/{}/broker",
                self.kafka_cluster
            )
        })
    }

    /// The SAN of application `name`'s client certificate:
    /// `spiffe://kpool.io/kafka/<kafkaCluster>/client/<name>`.
    pub fn client_san(&self, name: &str) -> String {
        format!(
            "spiffe://{TRUST_DOMAIN}/kafka/{}/client/{name}",
            self.kafka_cluster
        )
    }

    /// Whether a broker sidecar accepts a client certificate carrying `san`.
    pub fn allows_client(&self, san: &str) -> bool {
        self.allowed_sans
            .iter()
            .any(|entry| SanPattern::parse(entry).matches(san))
    }
}

/// The mesh port of `broker_id`, if it fits in a port number.
pub fn broker_port(spec: &PolicySpec, broker_id: i32) -> Option<u16> {
    let id = u32::try_from(broker_id).ok()?;
    u32::from(spec.mesh.base_port)
        .checked_add(id)
        .and_then(|p| u16::try_from(p).ok())
}

/// The broker ids this policy may give (`idBase` up to `idBase + maxBrokersPerCluster - 1`),
/// as u64 so no sum overflows; `None` when `maxBrokersPerCluster` is 0.
pub fn id_range(spec: &PolicySpec) -> Option<RangeInclusive<u64>> {
    let first = u64::from(spec.brokers.id_base);
    let n = u64::from(spec.mesh.max_brokers_per_cluster);
    (n > 0).then(|| first..=first + n - 1)
}

/// The mesh ports this policy's brokers may get, as u64 (validation refuses a policy whose
/// last port is beyond 65535).
pub fn port_range(spec: &PolicySpec) -> Option<RangeInclusive<u64>> {
    let ids = id_range(spec)?;
    let base = u64::from(spec.mesh.base_port);
    Some(base + ids.start()..=base + ids.end())
}

/// Checks that two policies can serve side by side: the same Kafka cluster (same
/// `mesh.kafkaCluster`) must share its address and have disjoint broker ids and ports;
/// different Kafka clusters must use different addresses. The error names the fields.
pub fn check_disjoint(a: &Policy, b: &Policy) -> Result<(), String> {
    let (sa, sb) = (a.spec(), b.spec());
    let (ma, mb) = (&sa.mesh, &sb.mesh);
    if ma.kafka_cluster != mb.kafka_cluster {
        if ma.address == mb.address {
            return Err(format!(
                "mesh.address: Kafka clusters {:?} (cluster {}) and {:?} (cluster {}) both use {}: each Kafka cluster needs its own loopback address",
                ma.kafka_cluster, sa.cluster, mb.kafka_cluster, sb.cluster, ma.address
            ));
        }
        return Ok(());
    }
    if ma.address != mb.address {
        return Err(format!(
            "mesh.address: Kafka cluster {:?} is {} in cluster {} but {} in cluster {}: the address names the Kafka cluster, so every Kubernetes cluster's policy must use the same",
            ma.kafka_cluster, ma.address, sa.cluster, mb.address, sb.cluster
        ));
    }
    if let (Some(ia), Some(ib)) = (id_range(sa), id_range(sb))
        && ia.start() <= ib.end()
        && ib.start() <= ia.end()
    {
        return Err(format!(
            "brokers.idBase: broker ids {}..={} (cluster {}) and {}..={} (cluster {}) overlap (brokers.idBase + mesh.maxBrokersPerCluster)",
            ia.start(),
            ia.end(),
            sa.cluster,
            ib.start(),
            ib.end(),
            sb.cluster
        ));
    }
    if let (Some(pa), Some(pb)) = (port_range(sa), port_range(sb))
        && pa.start() <= pb.end()
        && pb.start() <= pa.end()
    {
        return Err(format!(
            "mesh.basePort: ports {}..={} (cluster {}) and {}..={} (cluster {}) overlap on {}: give both the same mesh.basePort",
            pa.start(),
            pa.end(),
            sa.cluster,
            pb.start(),
            pb.end(),
            sb.cluster,
            ma.address
        ));
    }
    Ok(())
}
