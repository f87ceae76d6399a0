//! Resource overhead: how much of the node Kubernetes itself takes, next to the brokers.
//!
//! - [`cgroup`]: reading cgroup v2 trees (systemd and cgroupfs layouts);
//! - [`split`]: the split of one sample, pure;
//! - [`Sampler`]: the I/O around them (sysinfo for the node, the cgroup tree, the clock).

pub mod cgroup;
pub mod split;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use cgroup::{CgroupError, Layout, Scan};
pub use split::{Allocatable, NodeTotals, Overhead};

/// Why a sample cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum OverheadError {
    #[error("cannot read node CPU and memory (sysinfo): {0}")]
    System(String),
    #[error(
        "cgroup root {root} is not a directory (in a pod, mount the host's /sys/fs/cgroup and point --cgroup-root / KPOOL_CGROUP_ROOT at it)"
    )]
    NoRoot { root: PathBuf },
    #[error("cgroup tree under {root}: {source}")]
    Cgroup {
        root: PathBuf,
        #[source]
        source: CgroupError,
    },
}

/// Takes samples: keeps the previous cgroup scan so CPU time becomes a rate.
#[derive(Debug)]
pub struct Sampler {
    root: PathBuf,
    system: sysinfo::System,
    previous: Scan,
    previous_at: Instant,
}

impl Sampler {
    /// A sampler reading the cgroup tree under `root`; takes the first reading now, so the
    /// first [`Sampler::sample`] already has an interval to measure over.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, OverheadError> {
        let mut root: PathBuf = root.into();
        // A hybrid host (cgroup v1 controllers, v2 at `unified/`) keeps the v2 tree one
        // level down; follow it rather than reading an empty tree.
        if !root.join("cgroup.controllers").exists()
            && root.join("unified/cgroup.controllers").exists()
        {
            root = root.join("unified");
        }
        if !root.is_dir() {
            return Err(OverheadError::NoRoot { root });
        }
        let mut system =
            sysinfo::System::new().map_err(|e| OverheadError::System(e.to_string()))?;
        // CPU usage is a difference between two refreshes: prime the first.
        system.refresh_cpu_usage();
        let previous = cgroup::scan(&root).map_err(|source| OverheadError::Cgroup {
            root: root.clone(),
            source,
        })?;
        Ok(Self {
            root,
            system,
            previous,
            previous_at: Instant::now(),
        })
    }

    /// The cgroup root read.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// One sample: node totals, the cgroup tree, split between the pods in `brokers` (uids)
    /// and the rest.
    pub fn sample(
        &mut self,
        brokers: &BTreeSet<String>,
        allocatable: Option<Allocatable>,
    ) -> Result<Overhead, OverheadError> {
        let current = cgroup::scan(&self.root).map_err(|source| OverheadError::Cgroup {
            root: self.root.clone(),
            source,
        })?;
        let now = Instant::now();
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cores = self.system.cpus().len();
        let total_memory = self.system.total_memory();
        let node = NodeTotals {
            cpu_cores: cores as f64,
            memory_bytes: total_memory,
            cpu_used_cores: f64::from(self.system.global_cpu_usage()) / 100.0 * cores as f64,
            memory_used_bytes: total_memory.saturating_sub(self.system.available_memory()),
        };
        let out = split::split(split::Inputs {
            previous: &self.previous,
            current: &current,
            elapsed: now.saturating_duration_since(self.previous_at),
            brokers,
            node,
            allocatable,
        });
        self.previous = current;
        self.previous_at = now;
        Ok(out)
    }
}

/// The default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Capacity and allocatable of a Node object, when both CPU and memory are present.
pub fn allocatable_of(node: &k8s_openapi::api::core::v1::Node) -> Option<Allocatable> {
    let status = node.status.as_ref()?;
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    Some(Allocatable {
        capacity_cpu_cores: split::parse_cpu(&get(&status.capacity, "cpu")?)?,
        capacity_memory_bytes: split::parse_bytes(&get(&status.capacity, "memory")?)?,
        allocatable_cpu_cores: split::parse_cpu(&get(&status.allocatable, "cpu")?)?,
        allocatable_memory_bytes: split::parse_bytes(&get(&status.allocatable, "memory")?)?,
    })
}
