//! Broker pods of this Kubernetes cluster, from the Kubernetes API: a pod's address is
//! known as soon as it runs with an IP, so a rescheduled broker's new IP reaches the
//! sidecars at once (a watch event wakes the membership loop) instead of after a DNS TTL.
//! Brokers of the other Kubernetes cluster are still reached by their INTERNAL host name.
//!
//! Behind [`PodAddresses`], so `--standalone` runs without the Kubernetes API
//! ([`NoPods`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Where broker pods are right now.
pub trait PodAddresses: Send + Sync + std::fmt::Debug {
    /// The IP of pod `namespace/name` when it is running with one (and not being deleted).
    fn pod_ip(&self, namespace: &str, name: &str) -> Option<IpAddr>;
}

/// No Kubernetes API (`--standalone`): no pod is known, endpoints come from pins and DNS.
#[derive(Debug, Default)]
pub struct NoPods;

impl PodAddresses for NoPods {
    fn pod_ip(&self, _namespace: &str, _name: &str) -> Option<IpAddr> {
        None
    }
}

/// Pod addresses kept current by a watch.
#[derive(Debug, Clone, Default)]
pub struct KubePods {
    ips: Arc<RwLock<BTreeMap<(String, String), IpAddr>>>,
}

impl PodAddresses for KubePods {
    fn pod_ip(&self, namespace: &str, name: &str) -> Option<IpAddr> {
        self.ips
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }
}

/// The address a pod is reached at, if it is running with one and not going away.
pub fn running_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

impl KubePods {
    /// Watches the pods of each of `namespaces` (read-only: list and watch, one watch per
    /// namespace, so a Role in each broker namespace is all it needs), calling
    /// `changed.notify_one()` whenever a pod's address appears, changes or goes. The task
    /// runs until aborted; a broken watch starts over after a backoff, keeping the last
    /// addresses of its namespace meanwhile.
    pub fn watch(
        client: kube::Client,
        namespaces: Vec<String>,
        changed: Arc<Notify>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let pods = Self::default();
        let mut namespaces = namespaces;
        namespaces.sort();
        namespaces.dedup();
        let watches: Vec<_> = namespaces
            .into_iter()
            .map(|ns| pods.clone().follow(client.clone(), ns, changed.clone()))
            .collect();
        let task = tokio::spawn(async move {
            futures::future::join_all(watches).await;
        });
        (pods, task)
    }

    /// Follows the pods of one namespace; only that namespace's entries are touched.
    async fn follow(self, client: kube::Client, namespace: String, changed: Arc<Notify>) {
        let api: kube::Api<Pod> = kube::Api::namespaced(client, &namespace);
        let mut retry =
            kpool_agent::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
            let mut fresh: Option<BTreeMap<(String, String), IpAddr>> = None;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(namespace, error = %e, "pod watch error; keeping the last pod addresses, the watch starts over after a backoff");
                        break;
                    }
                };
                retry.reset();
                let key = |p: &Pod| {
                    (
                        namespace.clone(),
                        p.metadata.name.clone().unwrap_or_default(),
                    )
                };
                let mut ips = self.ips.write().unwrap_or_else(|e| e.into_inner());
                let before = ips.clone();
                match event {
                    watcher::Event::Init => fresh = Some(BTreeMap::new()),
                    watcher::Event::InitApply(p) => {
                        if let (Some(map), Some(ip)) = (&mut fresh, running_ip(&p)) {
                            map.insert(key(&p), ip);
                        }
                    }
                    watcher::Event::InitDone => {
                        if let Some(map) = fresh.take() {
                            ips.retain(|(ns, _), _| *ns != namespace);
                            ips.extend(map);
                        }
                    }
                    watcher::Event::Apply(p) => match running_ip(&p) {
                        Some(ip) => {
                            ips.insert(key(&p), ip);
                        }
                        None => {
                            ips.remove(&key(&p));
                        }
                    },
                    watcher::Event::Delete(p) => {
                        ips.remove(&key(&p));
                    }
                }
                if *ips != before {
                    drop(ips);
                    changed.notify_one();
                }
            }
            tokio::time::sleep(retry.next()).await;
        }
    }
}
