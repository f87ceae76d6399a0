//! cgroup v2 reading: per-pod and per-daemon CPU time and memory from a cgroup tree under a
//! configurable root (the chart mounts the host's at `/host/sys/fs/cgroup`).
//!
//! Two layouts, as the kubelet's cgroup driver makes them:
//! - systemd: `kubepods.slice/kubepods-pod<uid_>.slice` (Guaranteed) and
//!   `kubepods.slice/kubepods-{burstable,besteffort}.slice/kubepods-{qos}-pod<uid_>.slice`,
//!   with `-` of the uid written as `_`;
//! - cgroupfs: `kubepods/pod<uid>` and `kubepods/{burstable,besteffort}/pod<uid>`.
//!
//! Kubernetes' own daemons run as systemd services in both: `system.slice/kubelet.service`,
//! `system.slice/containerd.service` (or `crio.service`, `docker.service`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why the cgroup tree cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// Which layout the kubelet's cgroup driver produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Systemd,
    Cgroupfs,
    /// No `kubepods` hierarchy under the root (not a Kubernetes node, e.g. standalone).
    None,
}

/// Cumulative CPU time and current memory of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// `cpu.stat` `usage_usec`: CPU time since the cgroup was created.
    pub cpu_usec: u64,
    /// `memory.current`, bytes.
    pub memory_bytes: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.cpu_usec = self.cpu_usec.saturating_add(o.cpu_usec);
        self.memory_bytes = self.memory_bytes.saturating_add(o.memory_bytes);
    }
}

/// One read of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub layout: Option<Layout>,
    /// By pod uid (with `-`, as the API server writes it).
    pub pods: BTreeMap<String, Usage>,
    /// Kubernetes' daemons found, by service name (`kubelet`, `containerd`, ...).
    pub daemons: BTreeMap<String, Usage>,
}

/// The daemon services looked for under `system.slice`.
pub const DAEMONS: [&str; 4] = ["kubelet", "containerd", "crio", "docker"];

/// Parses `usage_usec` out of a `cpu.stat` file's text.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "usage_usec").then(|| v.trim().parse().ok())?
    })
}

/// Reads one cgroup directory. A missing `memory.current` (the memory controller not
/// enabled there) counts as 0; a missing `cpu.stat` is an error since cgroup v2 always has it.
pub fn read_usage(dir: &Path) -> Result<Usage, CgroupError> {
    let stat = dir.join("cpu.stat");
    let text = std::fs::read_to_string(&stat).map_err(|source| CgroupError::Read {
        path: stat.clone(),
        source,
    })?;
    let cpu_usec = parse_cpu_stat(&text).ok_or_else(|| CgroupError::Parse {
        path: stat,
        what: "no usage_usec line".to_owned(),
    })?;
    let mem = dir.join("memory.current");
    let memory_bytes = match std::fs::read_to_string(&mem) {
        Ok(t) => t.trim().parse().map_err(|_| CgroupError::Parse {
            path: mem.clone(),
            what: format!("expected a byte count, found {:?}", t.trim()),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(CgroupError::Read { path: mem, source }),
    };
    Ok(Usage {
        cpu_usec,
        memory_bytes,
    })
}

/// The pod uid a cgroup directory name stands for, in either layout.
pub fn pod_uid_of(dir_name: &str) -> Option<String> {
    // systemd: kubepods-pod<uid_>.slice, kubepods-burstable-pod<uid_>.slice
    if let Some(stem) = dir_name.strip_suffix(".slice") {
        let (_, uid) = stem.rsplit_once("-pod")?;
        return (!uid.is_empty()).then(|| uid.replace('_', "-"));
    }
    // cgroupfs: pod<uid>
    let uid = dir_name.strip_prefix("pod")?;
    (!uid.is_empty() && uid.contains('-')).then(|| uid.to_owned())
}

/// Reads the whole tree under `root`. Pod cgroups that vanish mid-read (a pod ending) are
/// skipped rather than failing the sample.
pub fn scan(root: &Path) -> Result<Scan, CgroupError> {
    let mut out = Scan::default();
    let systemd = root.join("kubepods.slice");
    let cgroupfs = root.join("kubepods");
    let (layout, top) = if systemd.is_dir() {
        (Layout::Systemd, Some(systemd))
    } else if cgroupfs.is_dir() {
        (Layout::Cgroupfs, Some(cgroupfs))
    } else {
        (Layout::None, None)
    };
    out.layout = Some(layout);
    if let Some(top) = top {
        collect_pods(&top, 0, &mut out.pods)?;
    }
    let services = root.join("system.slice");
    for name in DAEMONS {
        let dir = services.join(format!("{name}.service"));
        if dir.is_dir() {
            match read_usage(&dir) {
                Ok(u) => {
                    out.daemons.insert(name.to_owned(), u);
                }
                Err(CgroupError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Walks the QoS level (depth 0) and the pods below it (depth 1).
fn collect_pods(
    dir: &Path,
    depth: u8,
    pods: &mut BTreeMap<String, Usage>,
) -> Result<(), CgroupError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(uid) = pod_uid_of(name) {
            match read_usage(&entry.path()) {
                Ok(u) => pods.entry(uid).or_default().add(u),
                Err(CgroupError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else if depth == 0 && (name.contains("burstable") || name.contains("besteffort")) {
            collect_pods(&entry.path(), depth + 1, pods)?;
        }
    }
    Ok(())
}
