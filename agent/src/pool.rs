//! The agent's side of the pool rules ([`kpool_policy::pool`]): Pod objects as the rules
//! read them, and the evidence only the agent has, whether the controller a pod names is
//! real. A pod writes its own `ownerReferences`; a DaemonSet exemption or a broker's
//! StatefulSet counts once the agent has read that object from the API with that uid.
//!
//! [`Owners`] caches those answers (by controller uid, for the pods on this node only) and
//! [`verify_loop`] keeps them current in the background, so no decision waits on the API.
//! A controller not read yet, or unreadable (API outage, missing RBAC), is unknown, and
//! the rules give unknown the benefit of the doubt: the agent never evicts on a guess.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kpool_policy::pool::{Evidence, OwnerRef, PoolPod};
use kube::runtime::reflector::Store;

/// A Pod object as the pool rules read it, with what the agent knows of its controller.
#[derive(Debug, Clone, Copy)]
pub struct KubePod<'a> {
    pub pod: &'a Pod,
    /// Whether its controller exists with that uid (see [`Owners::known`]).
    pub controller_exists: Option<bool>,
}

impl<'a> KubePod<'a> {
    /// `pod`, its controller checked against `owners`.
    pub fn new(pod: &'a Pod, owners: &Owners) -> Self {
        let controller_exists = controller_of(pod).and_then(|o| owners.known(o.uid));
        Self {
            pod,
            controller_exists,
        }
    }
}

fn controller_of(pod: &Pod) -> Option<OwnerRef<'_>> {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            api_version: &o.api_version,
            kind: &o.kind,
            name: &o.name,
            uid: &o.uid,
        })
}

impl PoolPod for KubePod<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.pod
            .metadata
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.pod
            .metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    fn controller(&self) -> Option<OwnerRef<'_>> {
        controller_of(self.pod)
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn node_name(&self) -> Option<&str> {
        self.pod.spec.as_ref()?.node_name.as_deref()
    }

    fn service_account(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or_default()
    }
}

impl Evidence for KubePod<'_> {
    fn owner_exists(&self, _namespace: &str, _owner: &OwnerRef<'_>) -> Option<bool> {
        self.controller_exists
    }

    /// Pods come from the API: a broker must have a StatefulSet controller at all.
    fn checks_owners(&self) -> bool {
        true
    }
}

/// A confirmed controller is re-read this often; a missing one sooner, so a DaemonSet
/// created just after its pod is seen does not stay "forged" for long.
const CONFIRMED_TTL: Duration = Duration::from_secs(600);
const MISSING_TTL: Duration = Duration::from_secs(30);

/// What the agent has read about controllers, by uid.
#[derive(Debug, Clone, Default)]
pub struct Owners(Arc<Mutex<HashMap<String, (bool, Instant)>>>);

impl Owners {
    /// Whether the controller with `uid` exists, as last read; `None` when not read.
    pub fn known(&self, uid: &str) -> Option<bool> {
        self.0.lock().ok()?.get(uid).map(|(exists, _)| *exists)
    }

    /// Records what the API said about `uid` at `now`.
    pub fn record(&self, uid: &str, exists: bool, now: Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), (exists, now));
        }
    }

    fn due(&self, uid: &str, now: Instant) -> bool {
        let Ok(m) = self.0.lock() else {
            return false;
        };
        match m.get(uid) {
            None => true,
            Some((true, at)) => now.saturating_duration_since(*at) >= CONFIRMED_TTL,
            Some((false, at)) => now.saturating_duration_since(*at) >= MISSING_TTL,
        }
    }

    /// Forgets controllers no pod on the node names any more (memory bounded by the node).
    fn retain(&self, uids: &HashSet<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|uid, _| uids.contains(uid));
        }
    }
}

/// A controller to read: which kind, where, and the uid the pod claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Claim {
    kind: &'static str,
    namespace: String,
    name: String,
    uid: String,
}

/// The controllers the pool rules care about (apps/v1 DaemonSets and StatefulSets) that
/// the pods in `pods` name and that are due for a read.
fn claims(pods: &Store<Pod>, owners: &Owners, now: Instant) -> (Vec<Claim>, HashSet<String>) {
    let mut due = Vec::new();
    let mut all = HashSet::new();
    for pod in pods.state() {
        let Some(o) = controller_of(&pod) else {
            continue;
        };
        let kind = match (o.api_version, o.kind) {
            ("apps/v1", "DaemonSet") => "DaemonSet",
            ("apps/v1", "StatefulSet") => "StatefulSet",
            _ => continue,
        };
        all.insert(o.uid.to_owned());
        let claim = Claim {
            kind,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: o.name.to_owned(),
            uid: o.uid.to_owned(),
        };
        if owners.due(&claim.uid, now) && !due.contains(&claim) {
            due.push(claim);
        }
    }
    (due, all)
}

async fn read(client: &kube::Client, c: &Claim) -> Result<bool, kube::Error> {
    let uid = match c.kind {
        "DaemonSet" => kube::Api::<DaemonSet>::namespaced(client.clone(), &c.namespace)
            .get_opt(&c.name)
            .await?
            .and_then(|o| o.metadata.uid),
        _ => kube::Api::<StatefulSet>::namespaced(client.clone(), &c.namespace)
            .get_opt(&c.name)
            .await?
            .and_then(|o| o.metadata.uid),
    };
    Ok(uid.as_deref() == Some(c.uid.as_str()))
}

/// Reads the controllers of the node's pods every `interval` (those due); runs until
/// aborted, like the watches it follows.
pub async fn verify_loop(
    client: kube::Client,
    pods: Store<Pod>,
    owners: Owners,
    interval: Duration,
) {
    let mut warned = false;
    loop {
        let now = Instant::now();
        let (due, all) = claims(&pods, &owners, now);
        for c in due {
            match read(&client, &c).await {
                Ok(exists) => {
                    if !exists {
                        tracing::warn!(kind = c.kind, namespace = %c.namespace, name = %c.name, uid = %c.uid, "a pod names a controller that does not exist with that uid: its exemption or broker status does not count");
                    }
                    owners.record(&c.uid, exists, now);
                }
                Err(e) => {
                    // Unknown stays unknown (benefit of the doubt); say so once per streak.
                    if !warned {
                        tracing::warn!(kind = c.kind, namespace = %c.namespace, name = %c.name, error = %e, "cannot read a pod's controller; its ownership stays unchecked");
                        warned = true;
                    }
                    continue;
                }
            }
            warned = false;
        }
        owners.retain(&all);
        tokio::time::sleep(interval).await;
    }
}
