//! The overhead split, pure: two cgroup scans, the node's totals and its capacity versus
//! allocatable in; how the node's CPU and memory divide between brokers, other pods,
//! Kubernetes' daemons and the rest out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::cgroup::{Layout, Scan, Usage};

/// The node as the OS sees it (sysinfo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NodeTotals {
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    pub cpu_used_cores: f64,
    pub memory_used_bytes: u64,
}

/// `status.capacity` and `status.allocatable` of the Node object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Allocatable {
    pub capacity_cpu_cores: f64,
    pub capacity_memory_bytes: u64,
    pub allocatable_cpu_cores: f64,
    pub allocatable_memory_bytes: u64,
}

/// CPU (cores, averaged over the sample interval) and memory (bytes, now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Share {
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

impl Share {
    fn add(&mut self, o: Share) {
        self.cpu_cores += o.cpu_cores;
        self.memory_bytes = self.memory_bytes.saturating_add(o.memory_bytes);
    }
}

/// What kube-reserved, system-reserved and the eviction thresholds withhold from pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Reserved {
    pub cpu_cores: f64,
    pub memory_bytes: u64,
    /// Of capacity, 0..=1.
    pub cpu_share: f64,
    pub memory_share: f64,
}

/// Share of used resources not used by brokers, 0..=1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Ratio {
    pub cpu: f64,
    pub memory: f64,
}

/// The split of one sample (what `GET /v1/overhead` returns).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overhead {
    pub node: NodeTotals,
    /// Absent without a Node object (standalone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Reserved>,
    pub brokers: Share,
    pub broker_pods: usize,
    pub other_pods: Share,
    pub other_pod_count: usize,
    /// kubelet and container runtime together.
    pub kubernetes: Share,
    pub daemons: BTreeMap<String, Share>,
    /// Used by the node but by none of the above (the OS, other services).
    pub rest: Share,
    pub overhead_ratio: Ratio,
    pub cgroup_layout: Option<Layout>,
    /// Seconds between the two cgroup reads the CPU rates come from.
    pub interval_seconds: f64,
}

/// The inputs of [`split`].
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub previous: &'a Scan,
    pub current: &'a Scan,
    pub elapsed: Duration,
    /// Uids of the broker pods on the node.
    pub brokers: &'a BTreeSet<String>,
    pub node: NodeTotals,
    pub allocatable: Option<Allocatable>,
}

/// CPU cores between two cumulative readings; a cgroup recreated in between (counter went
/// down) or an empty interval gives 0 rather than a nonsense rate.
fn rate(prev: Option<&Usage>, cur: &Usage, elapsed: Duration) -> Share {
    let us = elapsed.as_secs_f64() * 1e6;
    let cpu_cores = match prev {
        Some(p) if us > 0.0 && cur.cpu_usec >= p.cpu_usec => {
            (cur.cpu_usec - p.cpu_usec) as f64 / us
        }
        _ => 0.0,
    };
    Share {
        cpu_cores,
        memory_bytes: cur.memory_bytes,
    }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Splits the node's use. Pure.
pub fn split(i: Inputs<'_>) -> Overhead {
    let mut o = Overhead {
        node: i.node,
        cgroup_layout: i.current.layout,
        interval_seconds: i.elapsed.as_secs_f64(),
        ..Overhead::default()
    };
    for (uid, u) in &i.current.pods {
        let s = rate(i.previous.pods.get(uid), u, i.elapsed);
        if i.brokers.contains(uid) {
            o.brokers.add(s);
            o.broker_pods += 1;
        } else {
            o.other_pods.add(s);
            o.other_pod_count += 1;
        }
    }
    for (name, u) in &i.current.daemons {
        let s = rate(i.previous.daemons.get(name), u, i.elapsed);
        o.kubernetes.add(s);
        o.daemons.insert(name.clone(), s);
    }
    let accounted_cpu = o.brokers.cpu_cores + o.other_pods.cpu_cores + o.kubernetes.cpu_cores;
    let accounted_mem = o
        .brokers
        .memory_bytes
        .saturating_add(o.other_pods.memory_bytes)
        .saturating_add(o.kubernetes.memory_bytes);
    o.rest = Share {
        cpu_cores: (i.node.cpu_used_cores - accounted_cpu).max(0.0),
        memory_bytes: i.node.memory_used_bytes.saturating_sub(accounted_mem),
    };
    // cgroup memory includes page cache the OS does not count as used, so the whole is at
    // least what the parts add up to.
    let used_cpu = i.node.cpu_used_cores.max(accounted_cpu);
    let used_mem = i.node.memory_used_bytes.max(accounted_mem) as f64;
    o.overhead_ratio = Ratio {
        cpu: ratio(used_cpu - o.brokers.cpu_cores, used_cpu),
        memory: ratio(used_mem - o.brokers.memory_bytes as f64, used_mem),
    };
    o.reserved = i.allocatable.map(|a| {
        let cpu = (a.capacity_cpu_cores - a.allocatable_cpu_cores).max(0.0);
        let mem = a
            .capacity_memory_bytes
            .saturating_sub(a.allocatable_memory_bytes);
        Reserved {
            cpu_cores: cpu,
            memory_bytes: mem,
            cpu_share: ratio(cpu, a.capacity_cpu_cores),
            memory_share: ratio(mem as f64, a.capacity_memory_bytes as f64),
        }
    });
    o
}

/// A Kubernetes CPU quantity (`4`, `3500m`, `0.5`) in cores.
pub fn parse_cpu(q: &str) -> Option<f64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some(n) = q.strip_suffix('n') {
        return n.parse::<f64>().ok().map(|v| v / 1e9);
    }
    if let Some(u) = q.strip_suffix('u') {
        return u.parse::<f64>().ok().map(|v| v / 1e6);
    }
    q.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// A Kubernetes memory quantity (`16Gi`, `16318908Ki`, `1G`, `128974848`, `1e9`) in bytes.
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mult) = SUFFIXES
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1.0));
    let v = num.parse::<f64>().ok()? * mult;
    (v.is_finite() && v >= 0.0).then_some(v.round() as u64)
}
