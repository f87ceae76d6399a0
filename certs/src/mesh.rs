//! `kpool-certs mesh`: the broker mesh's certificates, laid out as Kubernetes TLS Secrets
//! mount them.
//!
//! ```text
//! OUT/ca/ca.crt, ca.key                  the mesh CA (never leaves this directory)
//! OUT/broker/tls.crt, tls.key, ca.crt    every broker sidecar of the Kafka cluster
//! OUT/client-NAME/tls.crt, tls.key, ca.crt   the client sidecars of application NAME
//! ```
//!
//! The file names in the leaf directories are the policy's `mesh.tls.{certificate,privateKey,ca}`,
//! so `kpool-mesh broker-config --certs-dir OUT/broker` (and `client-config --certs-dir
//! OUT/client-NAME`) read them as they are, and `kubectl create secret generic kafka-mtls
//! --from-file=OUT/broker/tls.crt ...` makes the Secret the broker sidecars mount.
//!
//! # The identity scheme
//!
//! - **Brokers.** A StatefulSet mounts one Secret for all its pods, so every broker of the
//!   Kafka cluster presents the same identity, the policy's `mesh.brokerSan` (default
//!   `spiffe://kpool.io/kafka/<kafkaCluster>/broker`; a value without `://` is a DNS name).
//!   A client sidecar requires that SAN and a chain to the mesh CA: that proves "a broker of
//!   this Kafka cluster", not which one. That is enough: the broker a connection reaches is
//!   chosen by the client's own sidecar, by port (Kafka Metadata sends the client to the mesh
//!   `address:port` of the broker it wants, and its sidecar routes that port to that broker's
//!   host), and the broker itself answers with its own node id.
//! - **Clients.** Application NAME's certificate carries
//!   `spiffe://kpool.io/kafka/<kafkaCluster>/client/NAME`. A broker sidecar requires a client
//!   certificate from the mesh CA with a SAN in `mesh.allowedSans`; the examples allow
//!   `spiffe://kpool.io/kafka/stretch/client/*`, every client identity this command issues for
//!   that Kafka cluster. A client outside `allowedSans` is still issued, with a warning.
//! - **The mesh CA** is its own CA, separate from the webhook's serving CA: trusting it grants
//!   nothing on the Kubernetes API, and the webhook's CA signs nothing the sidecars accept.
//!
//! # Re-running
//!
//! The CA is kept while it is valid and its key matches, so adding a `--client` later signs
//! the new certificate with the CA every sidecar already trusts. As with `kpool-certs
//! create`, a `ca.crt` whose `ca.key` is missing or belongs to another key pair (or a `ca.key`
//! without `ca.crt`), and files that are not PEM, are refused unless `--force`, which replaces
//! everything; an expired CA, or one due for renewal, is replaced. A leaf that exists, whose
//! key matches, that chains to the current CA for its use, carries exactly the expected SAN
//! and is not due for renewal is kept byte for byte; anything else is (re)issued, and the
//! report says why. Files are written atomically, keys 0600.

use std::path::{Path, PathBuf};

use kpool_policy::model::Mesh;
use serde::Serialize;
use time::OffsetDateTime;

use crate::CertError;
use crate::create::{
    self, Action, CaFiles, CaPolicy, LeafCheck, check_lifetimes, ensure_ca, existing_leaf,
    leaf_action, settle_leaf,
};
use crate::generate::{Ca, LeafRequest, San, Usage, is_dns_label};
use crate::inspect::CertInfo;
use crate::pemio::{self, Sensitivity};

/// The directory of the mesh CA, under the output directory.
pub const CA_DIR: &str = "ca";
/// The directory of the broker certificate, under the output directory.
pub const BROKER_DIR: &str = "broker";
/// The prefix of a client's directory: `client-NAME`.
pub const CLIENT_DIR_PREFIX: &str = "client-";
/// The common name of a new mesh CA, before its key id.
pub const MESH_CA_NAME: &str = "kpool mesh CA";

/// What `mesh` says, on refusing to replace the CA, about who trusts it and what `--force` does.
const MESH_ADVICE: &str = "every broker and client sidecar of the mesh trusts that CA (the ca.crt \
     of each mesh Secret), so restore the file, or pass --force to generate a new mesh CA and \
     reissue the broker and client certificates (every mesh Secret must then be updated)";

/// What [`mesh`] should produce.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshOptions {
    /// The output directory (created if missing).
    pub out_dir: PathBuf,
    /// The applications to issue client certificates for (DNS labels; duplicates ignored).
    pub clients: Vec<String>,
    /// Broker and client certificate validity, days.
    pub days: u32,
    /// Mesh CA validity, days.
    pub ca_days: u32,
    /// Replace everything, whatever is there.
    pub force: bool,
    /// Renew a certificate when less than this fraction of its lifetime remains (0 ≤ f < 1).
    pub renew_fraction: f64,
}

impl MeshOptions {
    /// Options with the defaults of `create`: no clients, 365 days (CA 3650), renew at 1/3 left.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        MeshOptions {
            out_dir: out_dir.into(),
            clients: Vec::new(),
            days: create::DEFAULT_DAYS,
            ca_days: create::DEFAULT_CA_DAYS,
            force: false,
            renew_fraction: create::DEFAULT_RENEW_FRACTION,
        }
    }

    fn validate(&self) -> Result<(), CertError> {
        if let Some(bad) = self.clients.iter().find(|c| !is_dns_label(c)) {
            return Err(CertError::Invalid(format!(
                "--client {bad:?}: expected a DNS label (lowercase letters, digits, '-', at most \
                 63, not starting or ending with '-'), the application's name in \
                 spiffe://kpool.io/kafka/<kafkaCluster>/client/NAME"
            )));
        }
        if self.days == 0 {
            return Err(CertError::Invalid(
                "--days: validity must be at least 1 day".to_owned(),
            ));
        }
        check_lifetimes(self.ca_days, self.renew_fraction)
    }
}

/// Whose certificate a leaf is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", content = "name", rename_all = "lowercase")]
pub enum Role {
    /// Every broker sidecar of the Kafka cluster.
    Broker,
    /// The client sidecars of one application.
    Client(String),
}

impl Role {
    /// The directory name under the output directory: `broker`, `client-NAME`.
    pub fn dir_name(&self) -> String {
        match self {
            Role::Broker => BROKER_DIR.to_owned(),
            Role::Client(name) => format!("{CLIENT_DIR_PREFIX}{name}"),
        }
    }
}

/// What happened to one leaf directory.
#[derive(Debug, Clone, Serialize)]
pub struct LeafReport {
    /// Whose certificate it is.
    #[serde(flatten)]
    pub role: Role,
    /// The directory.
    pub dir: PathBuf,
    /// The SAN it carries, as in the policy (`spiffe://...` or a DNS name).
    pub san: String,
    /// What happened to the certificate and key.
    pub certificate: Action,
    /// What happened to the copy of the mesh CA beside them.
    pub ca_file: Action,
    /// The certificate now in the directory.
    pub info: CertInfo,
}

/// The outcome of [`mesh`].
#[derive(Debug, Clone, Serialize)]
pub struct MeshReport {
    /// The output directory.
    pub out_dir: PathBuf,
    /// The mesh CA's directory.
    pub ca_dir: PathBuf,
    /// What happened to the mesh CA.
    pub ca: Action,
    /// The mesh CA now in the directory.
    pub ca_info: CertInfo,
    /// The broker directory, then one per client in the order asked.
    pub leaves: Vec<LeafReport>,
    /// Problems that did not stop the run: a client the broker sidecars will refuse, a key
    /// readable by group or others, a client directory left with a replaced CA's certificate.
    pub warnings: Vec<String>,
}

/// Writes the mesh CA, the broker certificate and a certificate per client for the policy's
/// `mesh` section (see the module documentation).
pub fn mesh(policy: &Mesh, opts: &MeshOptions) -> Result<MeshReport, CertError> {
    mesh_at(policy, opts, OffsetDateTime::now_utc())
}

/// [`mesh`] at a given time (for tests and for callers with their own clock).
pub fn mesh_at(
    policy: &Mesh,
    opts: &MeshOptions,
    now: OffsetDateTime,
) -> Result<MeshReport, CertError> {
    opts.validate()?;
    let broker_san = policy.broker_san();
    San::uri_or_dns(&broker_san)
        .check()
        .map_err(|e| CertError::Invalid(format!("mesh.brokerSan {e}")))?;
    let mut roles = vec![Role::Broker];
    for c in &opts.clients {
        let role = Role::Client(c.clone());
        if !roles.contains(&role) {
            roles.push(role);
        }
    }

    let out = &opts.out_dir;
    let ca_dir = out.join(CA_DIR);
    create_dir(&ca_dir)?;
    let files = CaFiles::in_dir(&ca_dir);
    let (ca, ca_action) = ensure_ca(
        &files,
        &CaPolicy {
            name: MESH_CA_NAME,
            days: opts.ca_days,
            force: opts.force,
            renew_fraction: opts.renew_fraction,
            advice: MESH_ADVICE,
            others_exist: false,
        },
        now,
    )?;

    let ctx = LeafContext {
        ca: &ca,
        ca_action: &ca_action,
        out,
        policy,
        opts,
        now,
    };
    let mut warnings = Vec::new();
    let mut leaves = Vec::new();
    for role in roles {
        let san = match &role {
            Role::Broker => broker_san.clone(),
            Role::Client(name) => {
                let san = policy.client_san(name);
                if !policy.allows_client(&san) {
                    warnings.push(format!(
                        "client {name}: the broker sidecars will refuse its certificate ({san}) \
                         until mesh.allowedSans lists it (now {:?}; \
                         \"spiffe://kpool.io/kafka/{}/client/*\" allows every client)",
                        policy.allowed_sans, policy.kafka_cluster
                    ));
                }
                san
            }
        };
        let leaf = ctx.write_leaf(&role, &san)?;
        key_warning(&leaf.dir.join(&policy.tls.private_key), &mut warnings);
        leaves.push(leaf);
    }
    key_warning(&files.key, &mut warnings);
    if ca_action.wrote() {
        stale_clients(out, &leaves, &mut warnings)?;
    }
    Ok(MeshReport {
        out_dir: out.clone(),
        ca_dir,
        ca: ca_action,
        ca_info: ca.info().clone(),
        leaves,
        warnings,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// What every leaf of one run shares.
struct LeafContext<'a> {
    ca: &'a Ca,
    ca_action: &'a Action,
    out: &'a Path,
    policy: &'a Mesh,
    opts: &'a MeshOptions,
    now: OffsetDateTime,
}

impl LeafContext<'_> {
    /// Keeps or (re)issues one leaf in its directory, and puts the CA beside it.
    fn write_leaf(&self, role: &Role, san: &str) -> Result<LeafReport, CertError> {
        let LeafContext {
            ca,
            ca_action,
            out,
            policy,
            opts,
            now,
        } = *self;
        let tls = &policy.tls;
        let dir = out.join(role.dir_name());
        create_dir(&dir)?;
        let (crt, key) = (dir.join(&tls.certificate), dir.join(&tls.private_key));
        let want = San::uri_or_dns(san);
        let (usage, what, common_name) = match role {
            Role::Broker => (
                Usage::ServerAndClient,
                "broker certificate",
                "broker".to_owned(),
            ),
            Role::Client(name) => (Usage::Client, "client certificate", name.clone()),
        };
        let action = leaf_action(ca_action, &crt, &key, || {
            existing_leaf(
                &crt,
                &key,
                ca,
                &LeafCheck {
                    what,
                    usage,
                    renew_fraction: opts.renew_fraction,
                    sans: &|info: &CertInfo| {
                        let have = San::of(info);
                        (have != [want.clone()]).then(|| {
                            let have: Vec<String> = have.iter().map(ToString::to_string).collect();
                            format!(
                                "SANs differ: want {want}, have {}",
                                if have.is_empty() {
                                    "none".to_owned()
                                } else {
                                    have.join(", ")
                                }
                            )
                        })
                    },
                },
                now,
            )
        })?;
        let (certificate, info) = settle_leaf(action, &crt, &key, || {
            let req = LeafRequest {
                common_name,
                organizational_unit: Some(policy.kafka_cluster.clone()),
                sans: vec![want.clone()],
                usage,
                days: opts.days,
            };
            ca.issue_leaf(what, &req, now)
        })?;
        let ca_path = dir.join(&tls.ca);
        let ca_pem = ca.cert_pem();
        let ca_file = match pemio::read_optional(&ca_path)? {
            Some(b) if b == ca_pem.as_bytes() => Action::Kept,
            existing => {
                pemio::write_atomic(&ca_path, ca_pem.as_bytes(), Sensitivity::Public)?;
                match existing {
                    None => Action::Created,
                    Some(_) => Action::Renewed {
                        reason: format!("it was not the mesh CA in {}", out.join(CA_DIR).display()),
                    },
                }
            }
        };
        Ok(LeafReport {
            role: role.clone(),
            dir,
            san: san.to_owned(),
            certificate,
            ca_file,
            info,
        })
    }
}

fn key_warning(key: &Path, warnings: &mut Vec<String>) {
    if let Some(mode) = pemio::group_or_other_mode(key) {
        warnings.push(format!(
            "{} is readable by group or others (mode {mode:04o}): anyone who read it can act as \
             that mesh identity; chmod 600 it",
            key.display()
        ));
    }
}

/// Client directories not asked for this run still hold certificates of the replaced CA.
fn stale_clients(
    out: &Path,
    done: &[LeafReport],
    warnings: &mut Vec<String>,
) -> Result<(), CertError> {
    let entries = std::fs::read_dir(out).map_err(|source| CertError::Read {
        path: out.to_owned(),
        source,
    })?;
    let mut stale: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let client = name.strip_prefix(CLIENT_DIR_PREFIX)?.to_owned();
            (!done.iter().any(|l| l.role == Role::Client(client.clone()))).then_some(client)
        })
        .collect();
    stale.sort();
    for client in stale {
        warnings.push(format!(
            "{}: signed by the replaced CA, so the broker sidecars will refuse it; re-run with \
             --client {client} to reissue it",
            out.join(format!("{CLIENT_DIR_PREFIX}{client}")).display()
        ));
    }
    Ok(())
}
