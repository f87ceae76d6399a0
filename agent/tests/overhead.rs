//! Resource overhead: cgroup v2 fixture trees (systemd and cgroupfs layouts) in tempdirs,
//! the split as a pure function, a live sample of this machine, and `GET /v1/overhead`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use kpool_agent::overhead::cgroup::{self, Layout, Scan, Usage};
use kpool_agent::overhead::split::{self, Allocatable, Inputs, NodeTotals};
use kpool_agent::overhead::{OverheadError, Sampler};
use kpool_agent::pods::Standalone;
use kpool_agent::service::Agent;
use kpool_policy::Policy;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

const BROKER: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const OTHER: &str = "0a1b2c3d-0000-4000-8000-000000000002";
const BESTEFFORT: &str = "0a1b2c3d-0000-4000-8000-000000000003";

fn cg(dir: &Path, usage_usec: u64, memory: Option<u64>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("cpu.stat"),
        format!("usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\nnr_periods 0\n"),
    )
    .expect("cpu.stat");
    if let Some(m) = memory {
        std::fs::write(dir.join("memory.current"), format!("{m}\n")).expect("memory.current");
    }
}

/// A systemd-driver tree: a Guaranteed broker, a Burstable pod, a BestEffort pod, kubelet,
/// containerd. `scale` multiplies CPU so two trees make a rate.
fn systemd_tree(root: &Path, scale: u64) {
    let us = |u: &str| u.replace('-', "_");
    let k = root.join("kubepods.slice");
    cg(&k, 1, Some(1));
    cg(
        &k.join(format!("kubepods-pod{}.slice", us(BROKER))),
        2_000_000 * scale,
        Some(4 << 30),
    );
    cg(
        &k.join(format!(
            "kubepods-pod{}.slice/cri-containerd-abc.scope",
            us(BROKER)
        )),
        1,
        Some(1),
    );
    let b = k.join("kubepods-burstable.slice");
    cg(&b, 1, Some(1));
    cg(
        &b.join(format!("kubepods-burstable-pod{}.slice", us(OTHER))),
        500_000 * scale,
        Some(100 << 20),
    );
    let be = k.join("kubepods-besteffort.slice");
    cg(
        &be.join(format!("kubepods-besteffort-pod{}.slice", us(BESTEFFORT))),
        100_000 * scale,
        None,
    );
    daemons(root, scale);
    cg(&root.join("system.slice/sshd.service"), 999, Some(999));
}

/// kubelet and containerd, where systemd puts them in both layouts.
fn daemons(root: &Path, scale: u64) {
    cg(
        &root.join("system.slice/kubelet.service"),
        300_000 * scale,
        Some(200 << 20),
    );
    cg(
        &root.join("system.slice/containerd.service"),
        200_000 * scale,
        Some(300 << 20),
    );
}

fn cgroupfs_tree(root: &Path, scale: u64) {
    let k = root.join("kubepods");
    cg(
        &k.join(format!("pod{BROKER}")),
        2_000_000 * scale,
        Some(4 << 30),
    );
    cg(
        &k.join(format!("burstable/pod{OTHER}")),
        500_000 * scale,
        Some(100 << 20),
    );
    cg(
        &k.join(format!("besteffort/pod{BESTEFFORT}")),
        100_000 * scale,
        None,
    );
    daemons(root, scale);
}

fn expected_scan(layout: Layout, scale: u64) -> Scan {
    Scan {
        layout: Some(layout),
        pods: BTreeMap::from([
            (
                BROKER.to_owned(),
                Usage {
                    cpu_usec: 2_000_000 * scale,
                    memory_bytes: 4 << 30,
                },
            ),
            (
                OTHER.to_owned(),
                Usage {
                    cpu_usec: 500_000 * scale,
                    memory_bytes: 100 << 20,
                },
            ),
            (
                BESTEFFORT.to_owned(),
                Usage {
                    cpu_usec: 100_000 * scale,
                    memory_bytes: 0,
                },
            ),
        ]),
        daemons: BTreeMap::from([
            (
                "containerd".to_owned(),
                Usage {
                    cpu_usec: 200_000 * scale,
                    memory_bytes: 300 << 20,
                },
            ),
            (
                "kubelet".to_owned(),
                Usage {
                    cpu_usec: 300_000 * scale,
                    memory_bytes: 200 << 20,
                },
            ),
        ]),
    }
}

#[test]
fn systemd_layout_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    systemd_tree(dir.path(), 1);
    assert_eq!(
        cgroup::scan(dir.path()).expect("scan"),
        expected_scan(Layout::Systemd, 1)
    );
}

#[test]
fn cgroupfs_layout_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    cgroupfs_tree(dir.path(), 1);
    assert_eq!(
        cgroup::scan(dir.path()).expect("scan"),
        expected_scan(Layout::Cgroupfs, 1)
    );
}

#[test]
fn pod_uids_come_out_of_both_layouts() {
    assert_eq!(
        cgroup::pod_uid_of("kubepods-burstable-poda_b_c.slice").as_deref(),
        Some("a-b-c")
    );
    assert_eq!(
        cgroup::pod_uid_of("kubepods-poda_b.slice").as_deref(),
        Some("a-b")
    );
    assert_eq!(cgroup::pod_uid_of("poda-b").as_deref(), Some("a-b"));
    assert_eq!(cgroup::pod_uid_of("kubepods-burstable.slice"), None);
    assert_eq!(cgroup::pod_uid_of("burstable"), None);
    assert_eq!(
        cgroup::parse_cpu_stat("user_usec 3\nusage_usec 42\n"),
        Some(42)
    );
    assert_eq!(cgroup::parse_cpu_stat("user_usec 3\n"), None);
}

#[test]
fn a_broken_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    cgroupfs_tree(dir.path(), 1);
    let f = dir
        .path()
        .join(format!("kubepods/pod{BROKER}/memory.current"));
    std::fs::write(&f, "lots\n").expect("write");
    let e = cgroup::scan(dir.path()).expect_err("broken");
    let text = e.to_string();
    assert!(
        text.contains(&f.display().to_string()) && text.contains("\"lots\""),
        "{text}"
    );
    let e = Sampler::new(dir.path().join("nope")).expect_err("no root");
    assert!(matches!(e, OverheadError::NoRoot { .. }));
    assert!(e.to_string().contains("KPOOL_CGROUP_ROOT"), "{e}");
}

#[test]
fn no_kubernetes_is_layout_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = cgroup::scan(dir.path()).expect("scan");
    assert_eq!(s.layout, Some(Layout::None));
    assert!(s.pods.is_empty() && s.daemons.is_empty());
}

fn node() -> NodeTotals {
    NodeTotals {
        cpu_cores: 8.0,
        memory_bytes: 32 << 30,
        cpu_used_cores: 2.0,
        memory_used_bytes: 6 << 30,
    }
}

#[test]
fn the_split_of_two_fixture_samples() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    systemd_tree(a.path(), 1);
    systemd_tree(b.path(), 2);
    let (prev, cur) = (
        cgroup::scan(a.path()).expect("a"),
        cgroup::scan(b.path()).expect("b"),
    );
    let brokers = BTreeSet::from([BROKER.to_owned()]);
    let o = split::split(Inputs {
        previous: &prev,
        current: &cur,
        elapsed: Duration::from_secs(2),
        brokers: &brokers,
        node: node(),
        allocatable: Some(Allocatable {
            capacity_cpu_cores: 8.0,
            capacity_memory_bytes: 32 << 30,
            allocatable_cpu_cores: 7.5,
            allocatable_memory_bytes: 30 << 30,
        }),
    });
    // 2 s of CPU time over 2 s = 1 core for the broker, and so on.
    assert_eq!(o.brokers.cpu_cores, 1.0);
    assert_eq!(o.brokers.memory_bytes, 4 << 30);
    assert_eq!(o.broker_pods, 1);
    assert_eq!(o.other_pods.cpu_cores, 0.3);
    assert_eq!(o.other_pod_count, 2);
    assert_eq!(o.kubernetes.cpu_cores, 0.25);
    assert_eq!(o.kubernetes.memory_bytes, 500 << 20);
    assert_eq!(o.daemons["kubelet"].cpu_cores, 0.15);
    assert!((o.rest.cpu_cores - 0.45).abs() < 1e-9, "{:?}", o.rest);
    assert!((o.overhead_ratio.cpu - 0.5).abs() < 1e-9);
    let reserved = o.reserved.expect("reserved");
    assert_eq!(reserved.cpu_cores, 0.5);
    assert_eq!(reserved.memory_bytes, 2 << 30);
    assert_eq!(reserved.cpu_share, 0.0625);
    let json = serde_json::to_value(&o).expect("json");
    assert_eq!(json["cgroup_layout"], "systemd");
    assert_eq!(json["daemons"]["containerd"]["memory_bytes"], 300u64 << 20);
}

#[test]
fn quantities_parse_like_kubernetes() {
    assert_eq!(split::parse_cpu("4"), Some(4.0));
    assert_eq!(split::parse_cpu("3500m"), Some(3.5));
    assert_eq!(split::parse_cpu("x"), None);
    assert_eq!(split::parse_bytes("16Gi"), Some(16 << 30));
    assert_eq!(split::parse_bytes("16318908Ki"), Some(16_318_908 * 1024));
    assert_eq!(split::parse_bytes("1G"), Some(1_000_000_000));
    assert_eq!(split::parse_bytes("128974848"), Some(128_974_848));
    assert_eq!(split::parse_bytes("-1"), None);
}

proptest! {
    /// Whatever the readings, shares stay within 0..=1, no part is negative, and counter
    /// resets never produce a rate.
    #[test]
    fn split_stays_in_bounds(
        prev in prop::collection::vec(0u64..1_000_000_000, 3),
        cur in prop::collection::vec(0u64..1_000_000_000, 3),
        used in 0.0f64..16.0,
        mem in 0u64..(64u64 << 30),
        ms in 0u64..20_000,
    ) {
        let scan = |v: &[u64]| Scan {
            layout: Some(Layout::Systemd),
            pods: v.iter().enumerate().map(|(i, c)| (format!("p{i}"), Usage { cpu_usec: *c, memory_bytes: *c })).collect(),
            daemons: BTreeMap::new(),
        };
        let (p, c) = (scan(&prev), scan(&cur));
        let brokers = BTreeSet::from(["p0".to_owned()]);
        let o = split::split(Inputs {
            previous: &p, current: &c, elapsed: Duration::from_millis(ms), brokers: &brokers,
            node: NodeTotals { cpu_cores: 16.0, memory_bytes: 64 << 30, cpu_used_cores: used, memory_used_bytes: mem },
            allocatable: None,
        });
        for r in [o.overhead_ratio.cpu, o.overhead_ratio.memory] {
            prop_assert!((0.0..=1.0).contains(&r));
        }
        prop_assert!(o.rest.cpu_cores >= 0.0 && o.brokers.cpu_cores >= 0.0 && o.other_pods.cpu_cores >= 0.0);
        if cur[0] < prev[0] || ms == 0 {
            prop_assert_eq!(o.brokers.cpu_cores, 0.0);
        }
    }
}

#[test]
fn a_live_sample_of_this_machine() {
    // This machine's own tree (the sampler follows a hybrid host's `unified/`); sysinfo's
    // node figures are live either way.
    let mut s = Sampler::new("/sys/fs/cgroup").expect("sampler");
    eprintln!("cgroup root read: {}", s.root().display());
    std::thread::sleep(Duration::from_millis(300));
    let o = s.sample(&BTreeSet::new(), None).expect("sample");
    assert!(o.node.cpu_cores >= 1.0, "{o:?}");
    assert!(o.node.memory_bytes > 64 << 20, "{o:?}");
    assert!(o.node.memory_used_bytes > 0 && o.node.memory_used_bytes <= o.node.memory_bytes);
    assert!(o.node.cpu_used_cores >= 0.0 && o.node.cpu_used_cores <= o.node.cpu_cores + 1e-6);
    assert!(o.interval_seconds >= 0.3);
    assert!(o.reserved.is_none());
    eprintln!("live sample: {}", serde_json::to_string(&o).expect("json"));
}

#[tokio::test]
async fn get_overhead_serves_the_last_sample_and_gauges() {
    let policy = Arc::new(Policy::builtin().expect("policy"));
    let agent = Agent::new(policy.clone(), Arc::new(Standalone::new(policy)));
    let app = kpool_agent::api::router(agent.clone());
    let get = |path: &'static str| {
        let app = app.clone();
        async move {
            let r = app
                .oneshot(Request::get(path).body(Body::empty()).expect("req"))
                .await
                .expect("resp");
            let status = r.status();
            let bytes = r.into_body().collect().await.expect("body").to_bytes();
            (status, bytes)
        }
    };
    let (status, body) = get("/v1/overhead").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("no overhead sample yet"));

    let dir = tempfile::tempdir().expect("tempdir");
    cgroupfs_tree(dir.path(), 1);
    let mut s = Sampler::new(dir.path()).expect("sampler");
    let o = s
        .sample(&BTreeSet::from([BROKER.to_owned()]), None)
        .expect("sample");
    agent.publish_overhead(o);
    let (status, body) = get("/v1/overhead").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["broker_pods"], 1);
    assert_eq!(v["brokers"]["memory_bytes"], 4u64 << 30);
    assert_eq!(v["cgroup_layout"], "cgroupfs");
    assert!(v["node"]["cpu_cores"].as_f64().expect("cores") >= 1.0);
    let (_, metrics) = get("/metrics").await;
    let m = String::from_utf8_lossy(&metrics);
    for needle in [
        "kpool_agent_overhead_memory_bytes{part=\"brokers\"} 4294967296",
        "kpool_agent_overhead_cpu_cores{part=\"kubernetes\"}",
        "kpool_agent_overhead_ratio{resource=\"cpu\"}",
        "kpool_agent_reserved_share{resource=\"memory\"}",
        "kpool_agent_node_cpu_cores",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
}
