//! One agent at a time: a `coordination.k8s.io/v1` Lease decides which agent of the
//! DaemonSet may act on the whole Kafka cluster (rack healing), where every agent sees the
//! same cluster and two acting at once would submit the same reassignments twice.
//!
//! Expiry is judged on this agent's own clock, not the holder's `renewTime`: a record that
//! has not changed (same `resourceVersion`) for `leaseDurationSeconds` since this agent first
//! saw it is expired. Clock skew between nodes then cannot make a live holder look dead, the
//! way client-go's leader election does it. Writes use the API server's optimistic
//! concurrency (create fails if it exists, replace fails on a stale `resourceVersion`), so of
//! two agents racing for an expired lease exactly one wins.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What this agent read of the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `spec.holderIdentity`; `None` when empty (released).
    pub holder: Option<String>,
    pub resource_version: String,
    pub transitions: i64,
}

/// What to do about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, holding it.
    Create,
    /// This agent holds it: renew.
    Renew,
    /// Released, or unchanged for a whole lease duration: take it over.
    TakeOver,
    /// Another agent holds it; it is theirs for at most `expires_in` more unless renewed.
    Wait {
        holder: String,
        expires_in: Duration,
    },
}

/// The pure rule: `observed` is the Lease as read (`None`: it does not exist), `unchanged_for`
/// how long this agent has seen that same record.
pub fn decide(
    observed: Option<&Observed>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> Decision {
    let Some(o) = observed else {
        return Decision::Create;
    };
    match o.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None => Decision::TakeOver,
        Some(_) if unchanged_for >= duration => Decision::TakeOver,
        Some(h) => Decision::Wait {
            holder: h.to_owned(),
            expires_in: duration.saturating_sub(unchanged_for),
        },
    }
}

/// Whether this agent leads after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Leading,
    /// Someone else leads (`None`: lost a race; who won is read next round).
    Following {
        holder: Option<String>,
    },
}

/// Why a round failed (the API answered something other than success or a lost race).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{verb} Lease {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Lease {namespace}/{name}: expected spec.leaseDurationSeconds and metadata.resourceVersion, found {found}"
    )]
    Malformed {
        namespace: String,
        name: String,
        found: String,
    },
}

/// The Lease and this agent's claim on it.
pub struct LeaseLock {
    client: kube::Client,
    namespace: String,
    name: String,
    holder: String,
    duration: Duration,
    /// The record last read and when this agent first saw it.
    seen: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    /// `holder` is this agent's identity (its pod name); `duration` how long a holder that
    /// stops renewing keeps the Lease (renew well within it, e.g. every third of it).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            duration,
            seen: Mutex::new(None),
        }
    }

    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }

    fn api_error(&self, verb: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            verb,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// One round: read the Lease, then create, renew or take it over when the rule says so.
    pub async fn try_acquire_or_renew(&self) -> Result<Held, LeaseError> {
        let current = self.get().await?;
        let observed =
            current
                .as_ref()
                .map(observe)
                .transpose()
                .map_err(|found| LeaseError::Malformed {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    found,
                })?;
        let unchanged_for = self.unchanged_for(observed.as_ref());
        match decide(
            observed.as_ref(),
            &self.holder,
            unchanged_for,
            self.duration,
        ) {
            Decision::Wait { holder, .. } => Ok(Held::Following {
                holder: Some(holder),
            }),
            Decision::Create => self.write("create", self.body(None, 0, true)).await,
            Decision::Renew => {
                let (o, v) = (observed.unwrap_or_else(empty), current.unwrap_or_default());
                let mut body = v;
                body["spec"]["renewTime"] = json!(now_micro());
                body["spec"]["leaseDurationSeconds"] = json!(self.duration.as_secs());
                body["metadata"]["resourceVersion"] = json!(o.resource_version);
                self.write("renew", body).await
            }
            Decision::TakeOver => {
                let o = observed.unwrap_or_else(empty);
                let body = self.body(Some(&o.resource_version), o.transitions + 1, true);
                self.write("take over", body).await
            }
        }
    }

    /// Gives the Lease up (on shutdown) so another agent need not wait for it to expire.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(current) = self.get().await? else {
            return Ok(());
        };
        if current["spec"]["holderIdentity"].as_str() != Some(self.holder.as_str()) {
            return Ok(());
        }
        let mut body = current;
        body["spec"]["holderIdentity"] = Value::Null;
        self.write("release", body).await.map(drop)
    }

    fn unchanged_for(&self, observed: Option<&Observed>) -> Duration {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(o) = observed else {
            *seen = None;
            return Duration::ZERO;
        };
        match &*seen {
            Some((rv, since)) if *rv == o.resource_version => since.elapsed(),
            _ => {
                *seen = Some((o.resource_version.clone(), Instant::now()));
                Duration::ZERO
            }
        }
    }

    fn body(&self, resource_version: Option<&str>, transitions: i64, acquire: bool) -> Value {
        let now = now_micro();
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        let mut spec = json!({
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration.as_secs(),
            "renewTime": now,
            "leaseTransitions": transitions,
        });
        if acquire {
            spec["acquireTime"] = json!(now);
        }
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec})
    }

    async fn get(&self) -> Result<Option<Value>, LeaseError> {
        let req = http::Request::get(self.path())
            .body(Vec::new())
            .map_err(|e| self.api_error("read", kube::Error::HttpError(e)))?;
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.api_error("read", e)),
        }
    }

    /// Creates (`verb` "create") or replaces the Lease; a 409 is a race lost, not an error.
    async fn write(&self, verb: &'static str, body: Value) -> Result<Held, LeaseError> {
        let builder = if verb == "create" {
            http::Request::post(format!(
                "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
                self.namespace
            ))
        } else {
            http::Request::put(self.path())
        };
        let req = builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| self.api_error(verb, kube::Error::HttpError(e)))?;
        match self.client.request::<Value>(req).await {
            Ok(written) => {
                // Our own write is the record we now know; its age starts now.
                let rv = written["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                *self
                    .seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((rv, Instant::now()));
                let holds = written["spec"]["holderIdentity"].as_str() == Some(&self.holder);
                Ok(if holds {
                    Held::Leading
                } else {
                    Held::Following { holder: None }
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::Following { holder: None }),
            Err(e) => Err(self.api_error(verb, e)),
        }
    }
}

fn empty() -> Observed {
    Observed {
        holder: None,
        resource_version: String::new(),
        transitions: 0,
    }
}

/// Reads the fields the rule needs; the error names what is missing.
fn observe(lease: &Value) -> Result<Observed, String> {
    let rv = lease["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| !rv.is_empty())
        .ok_or_else(|| format!("metadata {}", lease["metadata"]))?;
    Ok(Observed {
        holder: lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
        resource_version: rv.to_owned(),
        transitions: lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    })
}

fn now_micro() -> String {
    let now = time::OffsetDateTime::now_utc();
    kpool_cli::clock::rfc3339_micros(now.unix_timestamp(), now.nanosecond())
}
