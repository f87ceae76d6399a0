//! Shared by the overhead and steady-state benchmarks: a node with 110 pods (the kubelet's
//! default maximum), as Pod objects and as a systemd-layout cgroup tree.
#![allow(dead_code)]

use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

pub const PODS: usize = 110;

pub fn uid(i: usize) -> String {
    format!("0a1b2c3d-0000-4000-8000-{i:012}")
}

/// Pod 0 is the broker (ordinal 0, zone eu-west-1a); the others are DaemonSet pods and
/// kpool-system pods, so a compliant node has no violation and the guard's steady state is
/// the "nothing to do" path it runs all day.
pub fn pods() -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            let v = if i == 0 {
                json!({"metadata": {"name": "kafka-0", "namespace": "streaming", "uid": uid(0),
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {"app.kubernetes.io/name": "kafka", "app.kubernetes.io/component": "broker", "kpool.io/zone": "eu-west-1a"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "kafka", "uid": "s", "controller": true}]},
                    "spec": {"nodeName": "pool-1", "serviceAccountName": "kafka", "containers": [{"name": "kafka", "image": "apache/kafka"}]},
                    "status": {"phase": "Running"}})
            } else if i % 2 == 0 {
                json!({"metadata": {"name": format!("ds-{i}"), "namespace": "kube-system", "uid": uid(i),
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {"app": format!("ds-{i}")},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": format!("ds-{i}"), "uid": "d", "controller": true}]},
                    "spec": {"nodeName": "pool-1", "containers": [{"name": "c", "image": "x"}]},
                    "status": {"phase": "Running"}})
            } else {
                json!({"metadata": {"name": format!("tool-{i}"), "namespace": "kpool-system", "uid": uid(i),
                    "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "spec": {"nodeName": "pool-1", "containers": [{"name": "c", "image": "x"}]},
                    "status": {"phase": "Running"}})
            };
            serde_json::from_value(v).expect("pod")
        })
        .collect()
}

pub fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "pool-1", "labels": {"dedicated": "kafka", "topology.kubernetes.io/zone": "eu-west-1a"}},
        "spec": {"taints": [{"key": "dedicated", "value": "kafka", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "8", "memory": "32Gi"}, "allocatable": {"cpu": "7500m", "memory": "30Gi"}}
    }))
    .expect("node")
}

fn cg(dir: &Path, usec: u64, mem: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("cpu.stat"), format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")).expect("cpu.stat");
    std::fs::write(dir.join("memory.current"), format!("{mem}\n")).expect("memory.current");
}

/// A systemd-layout tree with the 110 pods spread over the three QoS classes, each with two
/// container scopes (read by nobody, but listed like on a real node), plus kubelet and
/// containerd.
pub fn cgroup_tree(root: &Path) {
    let k = root.join("kubepods.slice");
    cg(&k, 1, 1);
    for i in 0..PODS {
        let u = uid(i).replace('-', "_");
        let dir = match i % 3 {
            0 => k.join(format!("kubepods-pod{u}.slice")),
            1 => k.join(format!(
                "kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
            )),
            _ => k.join(format!(
                "kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
            )),
        };
        cg(&dir, 1_000_000 + i as u64, 1 << 20);
        for c in 0..2 {
            cg(&dir.join(format!("cri-containerd-{c}{i:062}.scope")), 1, 1);
        }
    }
    cg(
        &root.join("system.slice/kubelet.service"),
        5_000_000,
        100 << 20,
    );
    cg(
        &root.join("system.slice/containerd.service"),
        3_000_000,
        200 << 20,
    );
}
