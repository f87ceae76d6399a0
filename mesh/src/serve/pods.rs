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
    /// Watches the pods of `namespaces` (read-only: list and watch), calling
    /// `changed.notify_one()` whenever a pod's address appears, changes or goes. The task
    /// runs until aborted; a broken watch starts over after a backoff, keeping the last
    /// addresses meanwhile.
    pub fn watch(
        client: kube::Client,
        namespaces: Vec<String>,
        changed: Arc<Notify>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let pods = Self::default();
        let task = tokio::spawn(pods.clone().follow(client, namespaces, changed));
        (pods, task)
    }

    async fn follow(self, client: kube::Client, namespaces: Vec<String>, changed: Arc<Notify>) {
        // Every namespace's pods in one watch (what one read-only role allows); filtered
        // here.
        let api: kube::Api<Pod> = kube::Api::all(client);
        let mut retry =
            kpool_agent::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
            let mut fresh: Option<BTreeMap<(String, String), IpAddr>> = None;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error; keeping the last pod addresses, the watch starts over after a backoff");
                        break;
                    }
                };
                retry.reset();
                let key = |p: &Pod| {
                    (
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                    )
                };
                let wanted = |k: &(String, String)| namespaces.contains(&k.0);
                let mut ips = self.ips.write().unwrap_or_else(|e| e.into_inner());
                let before = ips.clone();
                match event {
                    watcher::Event::Init => fresh = Some(BTreeMap::new()),
                    watcher::Event::InitApply(p) => {
                        let k = key(&p);
                        if let (Some(map), Some(ip), true) =
                            (&mut fresh, running_ip(&p), wanted(&k))
                        {
                            map.insert(k, ip);
                        }
                    }
                    watcher::Event::InitDone => {
                        if let Some(map) = fresh.take() {
                            *ips = map;
                        }
                    }
                    watcher::Event::Apply(p) => {
                        let k = key(&p);
                        match (running_ip(&p), wanted(&k)) {
                            (Some(ip), true) => {
                                ips.insert(k, ip);
                            }
                            _ => {
                                ips.remove(&k);
                            }
                        }
                    }
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
