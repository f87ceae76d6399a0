//! A fake Kubernetes API server behind a kube-rs `tower-test` mock service, faithful to
//! what the agent's code paths see: pod and node lists (field-selected; pods also per
//! namespace, `/api/v1/namespaces/NS/pods`), watches that stay
//! open until there is something to say (then answer with watch event lines and end, as
//! an API server may), Evictions and pod deletions with scripted status codes, Events,
//! Leases with optimistic concurrency;
//! every request recorded. It can go "down": open watches break and every request is refused.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::SendResponse;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    pods: Vec<Value>,
    node: Option<Value>,
    resource_version: u64,
    /// Watch event lines not yet delivered, per resource ("pods", "nodes").
    pending: Vec<(&'static str, String)>,
    /// Open watches, per resource.
    parked: Vec<(&'static str, SendResponse<Response<Body>>)>,
    /// Pod watch event lines not yet delivered to namespaced pod watches
    /// (`/api/v1/namespaces/NS/pods`), per namespace.
    ns_pending: Vec<(String, String)>,
    /// Open namespaced pod watches, per namespace.
    ns_parked: Vec<(String, SendResponse<Response<Body>>)>,
    eviction_codes: Vec<u16>,
    /// Evictions answer 429 (a PodDisruptionBudget that never allows it) once the scripted
    /// codes are used up, instead of 201.
    pdb_forever: bool,
    delete_codes: Vec<u16>,
    /// coordination.k8s.io Leases by path (`.../namespaces/NS/leases/NAME`), with the
    /// API server's optimistic concurrency: a create of an existing one and a replace with
    /// a stale `metadata.resourceVersion` answer 409.
    leases: std::collections::BTreeMap<String, Value>,
    log: Vec<Recorded>,
}

/// The fake; clones share it.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    /// Lists served, and requests refused while down.
    pub lists: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

/// The DaemonSet or StatefulSet at `path` (`/apis/apps/v1/namespaces/NS/KINDS/NAME`), as
/// the controller reference of one of `pods` names it (same uid), if any does.
fn controller_named(pods: &[Value], path: &str) -> Option<Value> {
    let rest = path.strip_prefix("/apis/apps/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, plural, name) = (parts.next()?, parts.next()?, parts.next()?);
    let kind = match plural {
        "daemonsets" => "DaemonSet",
        "statefulsets" => "StatefulSet",
        _ => return None,
    };
    pods.iter().find_map(|p| {
        let meta = &p["metadata"];
        if meta["namespace"] != ns {
            return None;
        }
        let owner = meta["ownerReferences"]
            .as_array()?
            .iter()
            .find(|o| o["controller"] == true && o["kind"] == kind && o["name"] == name)?;
        Some(json!({"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": owner["uid"]}}))
    })
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("down", &self.down.load(Ordering::SeqCst))
            .field("lists", &self.lists.load(Ordering::SeqCst))
            .field("refused", &self.refused.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

pub fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn refused() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn lease_path(namespace: &str, name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
}

/// GET, POST (create) and PUT (replace) of Leases, as the API server answers them.
fn lease_request(s: &mut State, method: &str, path: &str, mut body: Value) -> Response<Body> {
    let conflict = |reason: &str, message: &str| respond(409, &status(409, reason, message));
    match method {
        "GET" => match s.leases.get(path) {
            Some(lease) => respond(200, lease),
            None => respond(404, &status(404, "NotFound", &format!("no {path}"))),
        },
        "POST" => {
            let full = format!("{path}/{}", name_of(&body));
            if s.leases.contains_key(&full) {
                return conflict("AlreadyExists", "leases.coordination.k8s.io already exists");
            }
            s.resource_version += 1;
            body["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
            s.leases.insert(full, body.clone());
            respond(201, &body)
        }
        "PUT" => {
            let stored = s
                .leases
                .get(path)
                .map(|l| l["metadata"]["resourceVersion"].clone());
            match stored {
                None => respond(404, &status(404, "NotFound", &format!("no {path}"))),
                Some(rv) if rv != body["metadata"]["resourceVersion"] => conflict(
                    "Conflict",
                    "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified; please apply your changes to the latest version and try again",
                ),
                Some(_) => {
                    s.resource_version += 1;
                    body["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
                    s.leases.insert(path.to_owned(), body.clone());
                    respond(200, &body)
                }
            }
        }
        _ => respond(405, &status(405, "MethodNotAllowed", method)),
    }
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

impl FakeApi {
    /// Evictions are answered with `codes` in turn, then 201.
    pub fn with_evictions(codes: &[u16]) -> Self {
        let f = Self::default();
        f.lock().eviction_codes = codes.to_vec();
        f
    }

    /// Evictions are always answered 429, as when a PodDisruptionBudget shields the pod.
    pub fn with_pdb_forever() -> Self {
        let f = Self::default();
        f.lock().pdb_forever = true;
        f
    }

    /// Pod deletions are answered with `codes` in turn, then 200.
    pub fn script_deletions(&self, codes: &[u16]) {
        self.lock().delete_codes = codes.to_vec();
    }

    /// The Lease at `namespace/name`, as stored.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .leases
            .get(&lease_path(namespace, name))
            .cloned()
    }

    /// Stores a Lease as another holder would have written it (a new resourceVersion).
    pub fn put_lease(&self, namespace: &str, name: &str, mut lease: Value) {
        let mut s = self.lock();
        s.resource_version += 1;
        lease["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        s.leases.insert(lease_path(namespace, name), lease);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Requests that changed something (not GET).
    pub fn writes(&self) -> Vec<Recorded> {
        self.log()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Sets the pods (no watch event: for the state before the agent starts).
    pub fn set_pods(&self, pods: Vec<Value>) {
        self.lock().pods = pods;
    }

    /// Sets the node (no watch event).
    pub fn set_node(&self, node: Value) {
        self.lock().node = Some(node);
    }

    /// A pod lands: kept, and announced to open pod watches.
    pub fn add_pod(&self, mut pod: Value) {
        let mut s = self.lock();
        s.resource_version += 1;
        pod["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        s.pods.retain(|p| name_of(p) != name_of(&pod));
        s.pods.push(pod.clone());
        let line = json!({"type": "ADDED", "object": pod}).to_string();
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        s.ns_pending.push((namespace.to_owned(), line.clone()));
        s.pending.push(("pods", line));
        Self::flush(&mut s);
    }

    /// A pod goes away without telling anyone (as if deleted while watches were down).
    pub fn forget_pod(&self, name: &str) {
        self.lock().pods.retain(|p| name_of(p) != name);
    }

    /// The server goes away: open watches break, new requests are refused.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        let parked: Vec<_> = self.lock().parked.drain(..).collect();
        for (_, send) in parked {
            send.send_error(refused());
        }
        let parked: Vec<_> = self.lock().ns_parked.drain(..).collect();
        for (_, send) in parked {
            send.send_error(refused());
        }
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Answers open watches that have pending events. An event waits for the next watch
    /// of its resource (the watcher re-watches from the last resourceVersion it saw, and a
    /// real API server replays what happened since).
    fn flush(s: &mut State) {
        answer_parked(&mut s.parked, &mut s.pending);
        answer_parked(&mut s.ns_parked, &mut s.ns_pending);
    }

    /// A client whose requests this fake answers.
    pub fn client(&self) -> kube::Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            while let Some((request, send)) = handle.next_request().await {
                if fake.down.load(Ordering::SeqCst) {
                    fake.refused.fetch_add(1, Ordering::SeqCst);
                    send.send_error(refused());
                    continue;
                }
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or_default().to_owned();
                let method = parts.method.to_string();
                let mut s = fake.lock();
                s.log.push(Recorded {
                    method: method.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    body: body.clone(),
                });
                let resource = match path.as_str() {
                    "/api/v1/pods" => Some("pods"),
                    "/api/v1/nodes" => Some("nodes"),
                    _ => None,
                };
                // The pods of one namespace (`/api/v1/namespaces/NS/pods`), listed and
                // watched like every pod, filtered to NS.
                let pods_of = path
                    .strip_prefix("/api/v1/namespaces/")
                    .and_then(|rest| rest.strip_suffix("/pods"))
                    .filter(|ns| !ns.contains('/'))
                    .map(str::to_owned);
                let response = match (method.as_str(), resource) {
                    ("GET", None) if pods_of.is_some() => {
                        let namespace = pods_of.unwrap_or_default();
                        if query.contains("watch=true") {
                            s.ns_parked.push((namespace, send));
                            Self::flush(&mut s);
                            continue;
                        }
                        fake.lists.fetch_add(1, Ordering::SeqCst);
                        s.ns_pending.retain(|(ns, _)| *ns != namespace);
                        let items: Vec<Value> = s
                            .pods
                            .iter()
                            .filter(|p| p["metadata"]["namespace"] == namespace.as_str())
                            .cloned()
                            .collect();
                        respond(
                            200,
                            &json!({"apiVersion": "v1", "kind": "PodList",
                                "metadata": {"resourceVersion": s.resource_version.to_string()},
                                "items": items}),
                        )
                    }
                    (m, None) if path.starts_with("/apis/coordination.k8s.io/v1/") => {
                        lease_request(&mut s, m, &path, body)
                    }
                    ("GET", Some(what)) if query.contains("watch=true") => {
                        // Open until there is something to say.
                        s.parked.push((what, send));
                        Self::flush(&mut s);
                        continue;
                    }
                    ("GET", Some(what)) => {
                        fake.lists.fetch_add(1, Ordering::SeqCst);
                        // A list is the whole state: nothing before it is pending.
                        s.pending.retain(|(w, _)| *w != what);
                        let rv = s.resource_version.to_string();
                        let (kind, items) = if what == "pods" {
                            ("PodList", s.pods.clone())
                        } else {
                            ("NodeList", s.node.iter().cloned().collect())
                        };
                        respond(
                            200,
                            &json!({"apiVersion": "v1", "kind": kind,
                                "metadata": {"resourceVersion": rv}, "items": items}),
                        )
                    }
                    ("POST", _) if path.ends_with("/eviction") => {
                        let code = if s.eviction_codes.is_empty() {
                            if s.pdb_forever { 429 } else { 201 }
                        } else {
                            s.eviction_codes.remove(0)
                        };
                        if code == 201 {
                            respond(201, &body)
                        } else {
                            respond(
                                code,
                                &status(
                                    code,
                                    "TooManyRequests",
                                    "Cannot evict pod as it would violate the pod's disruption budget.",
                                ),
                            )
                        }
                    }
                    ("POST", _) => respond(201, &body),
                    ("DELETE", _)
                        if path.starts_with("/api/v1/namespaces/") && path.contains("/pods/") =>
                    {
                        let code = if s.delete_codes.is_empty() {
                            200
                        } else {
                            s.delete_codes.remove(0)
                        };
                        let name = path.rsplit('/').next().unwrap_or_default();
                        match code {
                            200 => respond(
                                200,
                                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name,
                                    "uid": body["preconditions"]["uid"],
                                    "deletionTimestamp": "2026-11-21T10:00:00Z"}}),
                            ),
                            409 => respond(
                                409,
                                &status(
                                    409,
                                    "Conflict",
                                    "Precondition failed: UID in precondition does not match the UID in object meta",
                                ),
                            ),
                            403 => respond(
                                403,
                                &status(
                                    403,
                                    "Forbidden",
                                    "pods is forbidden: User cannot delete resource \"pods\"",
                                ),
                            ),
                            other => {
                                respond(other, &status(other, "NotFound", &format!("no {path}")))
                            }
                        }
                    }
                    // The controllers the pods name exist (the agent checks their uid).
                    ("GET", _) if path.starts_with("/apis/apps/v1/namespaces/") => {
                        match controller_named(&s.pods, &path) {
                            Some(object) => respond(200, &object),
                            None => respond(404, &status(404, "NotFound", &format!("no {path}"))),
                        }
                    }
                    _ => respond(404, &status(404, "NotFound", &format!("no {path}"))),
                };
                drop(s);
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }
}

/// Answers each parked watch that has pending events for its key (a resource, a namespace)
/// with those events, one JSON line each, and takes them off `pending`; watches without
/// any stay parked.
fn answer_parked<K: PartialEq>(
    parked: &mut Vec<(K, SendResponse<Response<Body>>)>,
    pending: &mut Vec<(K, String)>,
) {
    let mut still = Vec::new();
    for (key, send) in std::mem::take(parked) {
        let lines: Vec<String> = pending
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        if lines.is_empty() {
            still.push((key, send));
            continue;
        }
        pending.retain(|(k, _)| *k != key);
        send.send_response(
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(lines.concat().into_bytes()))
                .expect("response"),
        );
    }
    *parked = still;
}
