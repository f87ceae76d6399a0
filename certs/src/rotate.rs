//! `kpool-certs rotate`: zero-downtime CA rotation (and serving certificate renewal), as a
//! state machine whose state lives in the cluster, so a run that crashes at any point is
//! finished by the next run.
//!
//! The state is three things, all read afresh before every step:
//! - the **CA Secret** (Opaque): `ca.crt`/`ca.key`, the CA that signs serving certificates,
//!   and during a rotation `next-ca.crt`/`next-ca.key`, the CA being rolled in;
//! - the **bundle** the clients trust: `caBundle` of every webhook in the Mutating and
//!   Validating configurations, and `ca.crt` of the serving Secret;
//! - the **serving Secret** (`kubernetes.io/tls`): the certificate the webhook serves.
//!
//! [`next_step`] is a pure function of that state. With T the target CA (the next one during a
//! rotation, else the current one) it orders the steps so that at every moment each client,
//! holding either the bundle before a step or the one after it, trusts the certificate served
//! before and after it:
//! 1. **start**: the current CA is due (or `--force`, or there is none): generate the next CA
//!    and store it beside the current one. Nothing a client sees changes.
//! 2. **publish**: add T to the bundle, keeping the old CAs (old + new).
//! 3. **issue**: sign a serving certificate with T. Clients already trust T (step 2).
//! 4. **wait**: give kubelet time to update the mounted Secret and the webhook time to reload,
//!    measured from the serving certificate's issue time (kept in its `notBefore`, so no extra
//!    state is needed and a re-run waits only for what is left).
//! 5. **drop**: the bundle becomes T alone. Served certificates are all signed by T by now.
//! 6. **promote**: the next CA becomes the current one in the CA Secret.
//!
//! Without a due CA the same function renews a serving certificate that is due, expired,
//! mismatched or lacks a name asked for (steps 3, 4, 5 as needed), and publishes the current CA
//! if a bundle lost it.
//!
//! **Names.** A new serving certificate carries the current one's DNS and IP names plus the
//! ones asked for ([`names_to_issue`]): a run without the `--dns`/`--ip` that `create` (or an
//! earlier run) was given must not narrow the certificate, or clients that use those names fail
//! once the old one is gone. [`Policy::replace_names`] narrows on purpose; every issue step
//! reports the names kept, added and dropped.

use std::time::Duration;

use kube::Client;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cluster::{self, CaPem, SecretData, WebhookConfig};
use crate::generate::{Ca, NOT_BEFORE_BACKDATE, ServingRequest};
use crate::inspect::{CertInfo, rfc3339, verify_chain};
use crate::tls::certified_key;
use crate::{CertError, pemio};

/// A CA as found in the CA Secret (its key already checked to match).
#[derive(Debug, Clone)]
pub struct CaState {
    /// The certificate.
    pub cert: CertificateDer<'static>,
    /// Its facts.
    pub info: CertInfo,
    /// Certificate and key PEM, as stored.
    pub pem: CaPem,
}

/// The serving Secret as found.
#[derive(Debug, Clone)]
pub struct ServingState {
    /// `tls.crt` chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Facts of the leaf.
    pub info: CertInfo,
    /// Whether `tls.key` belongs to the leaf.
    pub key_matches: bool,
    /// `tls.crt` and `tls.key` as stored.
    pub tls_crt: Vec<u8>,
    /// `tls.key` as stored.
    pub tls_key: Vec<u8>,
    /// `ca.crt` certificates (empty when absent).
    pub bundle: Vec<CertificateDer<'static>>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The CA that signs serving certificates.
    pub current_ca: Option<CaState>,
    /// The CA being rolled in.
    pub next_ca: Option<CaState>,
    /// The `caBundle` of every webhook, parsed.
    pub webhook_bundles: Vec<Vec<CertificateDer<'static>>>,
    /// The serving Secret, if it exists.
    pub serving: Option<ServingState>,
    /// Why the serving Secret exists but cannot be used (missing keys, unparsable PEM); it is
    /// derived material, so the decision re-issues it rather than stopping.
    pub serving_unusable: Option<String>,
    /// When the serving Secret is unusable but its `tls.crt` parses (a lost or broken key):
    /// that certificate's facts, so a re-issue keeps its names.
    pub unusable_serving_cert: Option<CertInfo>,
}

/// The knobs of the decision.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What the serving certificate must cover.
    pub serving: ServingRequest,
    /// Renew a certificate when less than this fraction of its lifetime is left.
    pub renew_fraction: f64,
    /// Start a CA rotation even though the CA is not due.
    pub force_rotation: bool,
    /// How long after issuing a serving certificate the old CA may be dropped.
    pub propagation_wait: Duration,
    /// Issue for exactly [`Policy::serving`]'s names, dropping names the current certificate
    /// has beyond them. When false (the default), the current certificate's names are kept and
    /// [`Policy::serving`]'s are added.
    pub replace_names: bool,
}

/// How the names of a serving certificate change when it is re-issued: DNS names (lowercase),
/// then IP addresses, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NameChange {
    /// Names of the current certificate that the new one carries too.
    pub kept: Vec<String>,
    /// Names the new certificate carries that the current one does not (all of them when there
    /// is no readable current certificate).
    pub added: Vec<String>,
    /// Names of the current certificate that the new one does not carry (only with
    /// [`Policy::replace_names`]).
    pub dropped: Vec<String>,
}

impl NameChange {
    /// `kept: a, b; added: c; dropped: none`.
    pub fn describe(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        format!(
            "kept: {}; added: {}; dropped: {}",
            list(&self.kept),
            list(&self.added),
            list(&self.dropped)
        )
    }
}

fn name_list(dns: &[String], ips: &[std::net::IpAddr]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in dns
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .chain(ips.iter().map(ToString::to_string))
    {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// What a new serving certificate is issued for, given the certificate it replaces (if one is
/// readable), and how its names change. Without [`Policy::replace_names`] the result covers
/// the current certificate's names and [`Policy::serving`]'s (so nothing is ever dropped);
/// with it, exactly [`Policy::serving`]'s.
pub fn names_to_issue(policy: &Policy, current: Option<&CertInfo>) -> (ServingRequest, NameChange) {
    let mut request = policy.serving.clone();
    if !policy.replace_names
        && let Some(info) = current
    {
        let asked = request.dns_names();
        for d in &info.dns_names {
            let d = d.to_ascii_lowercase();
            if !asked.contains(&d) && !request.dns.contains(&d) {
                request.dns.push(d);
            }
        }
        for ip in &info.ip_addresses {
            if !request.ips.contains(ip) {
                request.ips.push(*ip);
            }
        }
    }
    let new = name_list(&request.dns_names(), &request.ips);
    let old = current
        .map(|i| name_list(&i.dns_names, &i.ip_addresses))
        .unwrap_or_default();
    let change = NameChange {
        kept: new.iter().filter(|n| old.contains(n)).cloned().collect(),
        added: new.iter().filter(|n| !old.contains(n)).cloned().collect(),
        dropped: old.iter().filter(|n| !new.contains(n)).cloned().collect(),
    };
    (request, change)
}

/// One step of the rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Generate the next CA and store it in the CA Secret.
    StartRotation {
        /// Why a rotation starts.
        reason: String,
    },
    /// Set the bundle (webhooks and serving Secret `ca.crt`) to old CAs plus the target CA.
    PublishBundle {
        /// Subjects of the bundle's CAs.
        subjects: Vec<String>,
        #[serde(skip)]
        /// The bundle.
        bundle: Vec<CertificateDer<'static>>,
    },
    /// Issue a serving certificate from the target CA.
    IssueServing {
        /// Why.
        reason: String,
        /// How the names change from the current certificate's.
        names: NameChange,
        #[serde(skip)]
        /// What to issue (the names of [`names_to_issue`]).
        request: ServingRequest,
        #[serde(skip)]
        /// The `ca.crt` to store with it (the bundle as published).
        bundle: Vec<CertificateDer<'static>>,
    },
    /// Wait for the new serving certificate to reach every webhook pod.
    Wait {
        /// How long is left, in seconds.
        remaining_seconds: u64,
    },
    /// Set the bundle to the target CA alone.
    DropOld {
        /// Subjects of the CAs dropped.
        dropped: Vec<String>,
        #[serde(skip)]
        /// The bundle (the target CA).
        bundle: Vec<CertificateDer<'static>>,
    },
    /// Make the next CA the current one in the CA Secret.
    Promote,
    /// Nothing left to do.
    Done,
}

impl Step {
    /// A short name for logs and loop detection.
    pub fn name(&self) -> &'static str {
        match self {
            Step::StartRotation { .. } => "start-rotation",
            Step::PublishBundle { .. } => "publish-bundle",
            Step::IssueServing { .. } => "issue-serving",
            Step::Wait { .. } => "wait",
            Step::DropOld { .. } => "drop-old",
            Step::Promote => "promote",
            Step::Done => "done",
        }
    }
}

fn subjects(certs: &[CertificateDer<'_>]) -> Vec<String> {
    certs
        .iter()
        .map(|c| {
            CertInfo::from_der("bundle", c)
                .map(|i| i.subject)
                .unwrap_or_else(|e| e.to_string())
        })
        .collect()
}

fn push_unique(into: &mut Vec<CertificateDer<'static>>, c: &CertificateDer<'static>) {
    if !into.contains(c) {
        into.push(c.clone());
    }
}

/// Why a CA or serving certificate with these facts needs replacing at `now`, if it does.
fn due(info: &CertInfo, fraction: f64, now: OffsetDateTime) -> Option<String> {
    if info.is_expired(now) {
        Some(format!(
            "{} expired at {}",
            info.subject,
            rfc3339(info.not_after)
        ))
    } else if info.renewal_due(now, fraction) {
        Some(format!(
            "{} expires at {}, less than {:.0}% of its lifetime left",
            info.subject,
            rfc3339(info.not_after),
            fraction * 100.0
        ))
    } else {
        None
    }
}

/// The next step, from the observed state alone (see the module documentation).
pub fn next_step(obs: &Observed, policy: &Policy, now: OffsetDateTime) -> Step {
    let target = match (&obs.next_ca, &obs.current_ca) {
        (Some(next), _) => next,
        (None, Some(current)) => {
            if policy.force_rotation {
                return Step::StartRotation {
                    reason: "--force".to_owned(),
                };
            }
            if let Some(reason) = due(&current.info, policy.renew_fraction, now) {
                return Step::StartRotation {
                    reason: format!("CA {reason}"),
                };
            }
            current
        }
        (None, None) => {
            return Step::StartRotation {
                reason: "the CA Secret holds no CA".to_owned(),
            };
        }
    };

    // Every place a client takes its trust from, and the union of what they trust.
    let mut sites: Vec<&Vec<CertificateDer<'static>>> = obs.webhook_bundles.iter().collect();
    if let Some(s) = &obs.serving {
        sites.push(&s.bundle);
    }
    let mut union: Vec<CertificateDer<'static>> = Vec::new();
    for site in &sites {
        for c in site.iter() {
            push_unique(&mut union, c);
        }
    }

    // 2. publish: every site must trust the target before anything is signed by it.
    if sites.iter().any(|s| !s.contains(&target.cert)) {
        let mut bundle: Vec<CertificateDer<'static>> = union
            .iter()
            .filter(|c| {
                // Expired CAs verify nothing; this is the moment to let them go.
                CertInfo::from_der("bundle", c)
                    .map(|i| !i.is_expired(now))
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        push_unique(&mut bundle, &target.cert);
        return Step::PublishBundle {
            subjects: subjects(&bundle),
            bundle,
        };
    }

    // 3. issue: the served certificate must come from the target and fit the request.
    let published = if union.is_empty() {
        vec![target.cert.clone()]
    } else {
        union.clone()
    };
    let current = obs
        .serving
        .as_ref()
        .map(|s| &s.info)
        .or(obs.unusable_serving_cert.as_ref());
    let (request, names) = names_to_issue(policy, current);
    let issue = |reason: String| Step::IssueServing {
        reason,
        names: names.clone(),
        request: request.clone(),
        bundle: published.clone(),
    };
    let Some(serving) = &obs.serving else {
        let reason = obs.serving_unusable.clone();
        return issue(reason.unwrap_or_else(|| "the serving Secret does not exist".to_owned()));
    };
    if !serving.key_matches {
        return issue("tls.key does not match tls.crt".to_owned());
    }
    if let Some(reason) = due(&serving.info, policy.renew_fraction, now) {
        return issue(format!("serving certificate {reason}"));
    }
    if let Err(e) = verify_chain(
        "tls.crt",
        &serving.chain,
        std::slice::from_ref(&target.cert),
        None,
        now,
    ) {
        return issue(format!(
            "serving certificate (issuer {}) does not verify against {}: {e}",
            serving.info.issuer, target.info.subject
        ));
    }
    if !request.matches(&serving.info) {
        return issue(format!(
            "serving certificate SANs differ from those asked for ({})",
            names.describe()
        ));
    }

    // 4./5. once the new serving certificate had time to reach the pods, drop other CAs.
    if union.iter().any(|c| *c != target.cert) {
        let issued_at = serving.info.not_before + NOT_BEFORE_BACKDATE;
        let ready_at = issued_at + policy.propagation_wait;
        if now < ready_at {
            let left = ready_at - now;
            // Round up: waiting a fraction too long is harmless, too short is not.
            let left = (left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0)).max(1);
            return Step::Wait {
                remaining_seconds: u64::try_from(left).unwrap_or(1),
            };
        }
        let dropped: Vec<CertificateDer<'static>> = union
            .iter()
            .filter(|c| **c != target.cert)
            .cloned()
            .collect();
        return Step::DropOld {
            dropped: subjects(&dropped),
            bundle: vec![target.cert.clone()],
        };
    }

    // 6. promote.
    if obs.next_ca.is_some() {
        return Step::Promote;
    }
    Step::Done
}

/// Where the rotation's state lives, and what to issue.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Namespace of the Secrets (and of the Service).
    pub namespace: String,
    /// The serving Secret (`kubernetes.io/tls`) the webhook mounts.
    pub secret: String,
    /// The CA Secret (Opaque) holding the CA keys; not mounted by the webhook.
    pub ca_secret: String,
    /// Name of the Mutating/Validating webhook configurations.
    pub webhook: String,
    /// CA validity in days for a new CA.
    pub ca_days: u32,
    /// The decision's knobs (serving request, renew fraction, force, propagation wait).
    pub policy: Policy,
    /// Sleep through waits (true) or return [`RotateReport::pending`] at the first wait.
    pub wait: bool,
    /// Pause after publishing a bundle, before a certificate signed by the new CA is issued,
    /// so every kube-apiserver's webhook informer has the new bundle first (it usually takes
    /// well under a second; kubelet's Secret refresh on the serving side takes far longer).
    pub bundle_settle: Duration,
}

/// What a rotate run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateReport {
    /// The steps carried out, in order.
    pub steps: Vec<Step>,
    /// Set when the run stopped at a wait (`wait: false`): seconds until it can go on.
    pub pending: Option<u64>,
}

fn ca_state(
    secret: &SecretData,
    crt_key: &str,
    key_key: &str,
) -> Result<Option<CaState>, CertError> {
    let (Some(cert), key) = (secret.get(crt_key), secret.get(key_key)) else {
        return Ok(None);
    };
    let key = key.ok_or_else(|| CertError::Object {
        object: secret.object.clone(),
        expected: format!("{key_key} beside {crt_key}"),
        found: format!("keys {:?}", secret.data.keys().collect::<Vec<_>>()),
    })?;
    let ca = Ca::from_pem(&secret.origin(crt_key), cert, &secret.origin(key_key), key)?;
    Ok(Some(CaState {
        cert: ca.cert_der().clone(),
        info: ca.info().clone(),
        pem: CaPem {
            cert: cert.to_vec(),
            key: key.to_vec(),
        },
    }))
}

fn serving_state(secret: &SecretData) -> Result<ServingState, CertError> {
    let tls_crt = secret.require(cluster::TLS_CRT)?.to_vec();
    let tls_key = secret.require(cluster::TLS_KEY)?.to_vec();
    let crt_origin = secret.origin(cluster::TLS_CRT);
    let key_origin = secret.origin(cluster::TLS_KEY);
    let chain = pemio::parse_certificates(&crt_origin, &tls_crt)?;
    let info = CertInfo::from_der(&crt_origin, &chain[0])?;
    let key = pemio::parse_private_key(&key_origin, &tls_key)?;
    let key_matches = match certified_key(&crt_origin, chain.clone(), &key_origin, &key) {
        Ok(_) => true,
        Err(CertError::KeyMismatch { .. }) => false,
        Err(e) => return Err(e),
    };
    let bundle = match secret.get(cluster::CA_CRT) {
        Some(b) => cluster::parse_bundle(&secret.origin(cluster::CA_CRT), b)?,
        None => Vec::new(),
    };
    Ok(ServingState {
        chain,
        info,
        key_matches,
        tls_crt,
        tls_key,
        bundle,
    })
}

/// The cluster state, read.
struct Cluster {
    observed: Observed,
    configs: Vec<WebhookConfig>,
}

async fn observe(client: &Client, opts: &RotateOptions) -> Result<Cluster, CertError> {
    let ca_secret = cluster::read_secret(client, &opts.namespace, &opts.ca_secret).await?;
    let (current_ca, next_ca) = match &ca_secret {
        Some(s) => (
            ca_state(s, cluster::CA_CRT, cluster::CA_KEY)?,
            ca_state(s, cluster::NEXT_CA_CRT, cluster::NEXT_CA_KEY)?,
        ),
        None => (None, None),
    };
    let (serving, serving_unusable) = match cluster::read_secret(
        client,
        &opts.namespace,
        &opts.secret,
    )
    .await?
    {
        Some(s) => match serving_state(&s) {
            Ok(state) => (Some(state), None),
            Err(e) => {
                tracing::warn!(error = %e, "the serving Secret is unusable and will be re-issued");
                (
                    None,
                    Some((format!("the serving Secret is unusable: {e}"), s)),
                )
            }
        },
        None => (None, None),
    };
    // An unusable Secret whose certificate still parses: keep that certificate's names.
    let unusable_serving_cert = serving_unusable.as_ref().and_then(|(_, s)| {
        let crt = s.get(cluster::TLS_CRT)?;
        let origin = s.origin(cluster::TLS_CRT);
        let chain = pemio::parse_certificates(&origin, crt).ok()?;
        CertInfo::from_der(&origin, &chain[0]).ok()
    });
    if serving_unusable.is_some() && unusable_serving_cert.is_none() {
        tracing::warn!(
            "the serving Secret's tls.crt cannot be read, so its names cannot be kept: the new \
             certificate carries the Service names and --dns/--ip only"
        );
    }
    let serving_unusable = serving_unusable.map(|(why, _)| why);
    let configs = cluster::read_webhook_configs(client, &opts.webhook).await?;
    let mut webhook_bundles = Vec::new();
    for c in &configs {
        for (w, bundle) in &c.webhooks {
            // A bundle that does not parse trusts nothing; publishing replaces it.
            webhook_bundles.push(cluster::parse_bundle(&c.origin(w), bundle).unwrap_or_default());
        }
    }
    Ok(Cluster {
        observed: Observed {
            current_ca,
            next_ca,
            webhook_bundles,
            serving,
            serving_unusable,
            unusable_serving_cert,
        },
        configs,
    })
}

/// Reads the state, decides, and carries out one step. Returns the step (for [`Step::Wait`]
/// and [`Step::Done`] nothing was changed).
pub async fn rotate_once(
    client: &Client,
    opts: &RotateOptions,
    now: OffsetDateTime,
) -> Result<Step, CertError> {
    let Cluster { observed, configs } = observe(client, opts).await?;
    let step = next_step(&observed, &opts.policy, now);
    let ns = &opts.namespace;
    let apply_serving = |tls_crt: &[u8], tls_key: &[u8], bundle: &[CertificateDer<'_>]| {
        cluster::serving_secret_body(
            &opts.secret,
            ns,
            tls_crt,
            tls_key,
            pemio::encode_certificates(bundle).as_bytes(),
        )
    };
    match &step {
        Step::StartRotation { reason } => {
            tracing::info!(step = step.name(), reason, "generating the next CA");
            let ca = Ca::generate(opts.ca_days, now)?;
            let next = CaPem {
                cert: ca.cert_pem().into_bytes(),
                key: ca.key_pem().into_bytes(),
            };
            let current = observed.current_ca.as_ref().map(|c| &c.pem);
            let body = cluster::ca_secret_body(&opts.ca_secret, ns, current, Some(&next));
            cluster::apply_secret(client, ns, &opts.ca_secret, &body).await?;
            tracing::info!(step = step.name(), next_ca = %ca.info().subject, "next CA stored in Secret {ns}/{}", opts.ca_secret);
        }
        Step::PublishBundle { subjects, bundle }
        | Step::DropOld {
            dropped: subjects,
            bundle,
        } => {
            tracing::info!(step = step.name(), ?subjects, "setting the CA bundle");
            let outcomes = cluster::set_ca_bundle(client, &configs, bundle).await?;
            for o in outcomes {
                tracing::info!(step = step.name(), kind = o.kind.kind(), name = %o.name, updated = o.updated, "caBundle");
            }
            if let Some(s) = &observed.serving
                && !cluster::same_certificates(&s.bundle, bundle)
            {
                let body = apply_serving(&s.tls_crt, &s.tls_key, bundle);
                cluster::apply_secret(client, ns, &opts.secret, &body).await?;
                tracing::info!(
                    step = step.name(),
                    "ca.crt of Secret {ns}/{} updated",
                    opts.secret
                );
            }
        }
        Step::IssueServing {
            reason,
            names,
            request,
            bundle,
        } => {
            let target = observed.next_ca.as_ref().or(observed.current_ca.as_ref());
            let Some(target) = target else {
                return Err(CertError::Invalid("no CA to issue from".to_owned()));
            };
            let ca = Ca::from_pem(
                &format!("Secret {ns}/{}", opts.ca_secret),
                &target.pem.cert,
                &format!("Secret {ns}/{}", opts.ca_secret),
                &target.pem.key,
            )?;
            tracing::info!(
                step = step.name(),
                reason,
                ca = %target.info.subject,
                kept = ?names.kept,
                added = ?names.added,
                dropped = ?names.dropped,
                "issuing a serving certificate"
            );
            if !names.dropped.is_empty() {
                tracing::warn!(
                    step = step.name(),
                    dropped = ?names.dropped,
                    "--replace-names: the new serving certificate drops names the current one \
                     has; clients that use them fail once it is served"
                );
            }
            request.validate().map_err(|e| {
                CertError::Invalid(format!(
                    "serving certificate for the Service names, --dns/--ip and the names kept \
                     from the current certificate ({}): {e}; --replace-names issues for the \
                     flags' names only",
                    names.describe()
                ))
            })?;
            let pair = ca.issue_serving(request, now)?;
            let body = apply_serving(
                pair.cert_pem().as_bytes(),
                pair.key_pem().as_bytes(),
                bundle,
            );
            cluster::apply_secret(client, ns, &opts.secret, &body).await?;
            tracing::info!(
                step = step.name(),
                not_after = %rfc3339(pair.info().not_after),
                "serving certificate stored in Secret {ns}/{}", opts.secret
            );
        }
        Step::Promote => {
            let Some(next) = &observed.next_ca else {
                return Err(CertError::Invalid("promote without a next CA".to_owned()));
            };
            let body = cluster::ca_secret_body(&opts.ca_secret, ns, Some(&next.pem), None);
            cluster::apply_secret(client, ns, &opts.ca_secret, &body).await?;
            tracing::info!(step = step.name(), ca = %next.info.subject, "next CA is now the current CA");
        }
        Step::Wait { remaining_seconds } => {
            tracing::info!(
                step = step.name(),
                remaining_seconds,
                "waiting for the new serving certificate to reach the webhook pods"
            );
        }
        Step::Done => tracing::info!(step = step.name(), "certificates are current"),
    }
    Ok(step)
}

/// Runs steps until done (sleeping through waits when `opts.wait`), logging each. Safe to
/// re-run at any time: it always starts from what the cluster holds.
pub async fn rotate(client: &Client, opts: &RotateOptions) -> Result<RotateReport, CertError> {
    let mut report = RotateReport::default();
    let mut opts = opts.clone();
    let mut last: Option<&'static str> = None;
    for _ in 0..32 {
        let step = rotate_once(client, &opts, OffsetDateTime::now_utc()).await?;
        // --force starts a rotation only when none is in progress, and only once: the first
        // step either started it or continues one already under way (which satisfies it).
        opts.policy.force_rotation = false;
        let name = step.name();
        match &step {
            Step::Done => {
                report.steps.push(step);
                return Ok(report);
            }
            Step::Wait { remaining_seconds } => {
                let secs = *remaining_seconds;
                report.steps.push(step);
                if !opts.wait {
                    report.pending = Some(secs);
                    return Ok(report);
                }
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            _ => {
                // The same writing step twice means the write did not stick (an admission
                // policy rewriting Secrets, say): stop instead of looping.
                if last == Some(name) {
                    return Err(CertError::Invalid(format!(
                        "step {name} did not take effect: the cluster still needs it after it was applied"
                    )));
                }
                if matches!(step, Step::PublishBundle { .. }) && !opts.bundle_settle.is_zero() {
                    tokio::time::sleep(opts.bundle_settle).await;
                }
                report.steps.push(step);
            }
        }
        last = Some(name);
    }
    Err(CertError::Invalid(
        "rotation did not finish within 32 steps".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            serving: ServingRequest {
                service: "kpool-webhook".into(),
                namespace: "kpool-system".into(),
                dns: vec![],
                ips: vec![],
                days: 365,
            },
            renew_fraction: 1.0 / 3.0,
            force_rotation: false,
            propagation_wait: Duration::from_secs(120),
            replace_names: false,
        }
    }

    fn ca_state_of(ca: &Ca) -> CaState {
        CaState {
            cert: ca.cert_der().clone(),
            info: ca.info().clone(),
            pem: CaPem {
                cert: ca.cert_pem().into_bytes(),
                key: ca.key_pem().into_bytes(),
            },
        }
    }

    fn serving_from(
        ca: &Ca,
        bundle: Vec<CertificateDer<'static>>,
        now: OffsetDateTime,
    ) -> ServingState {
        let pair = ca.issue_serving(&policy().serving, now).expect("issue");
        ServingState {
            chain: vec![pair.cert_der().clone()],
            info: pair.info().clone(),
            key_matches: true,
            tls_crt: pair.cert_pem().into_bytes(),
            tls_key: pair.key_pem().into_bytes(),
            bundle,
        }
    }

    #[test]
    fn steady_state_is_done_and_force_starts_a_rotation() {
        let now = OffsetDateTime::now_utc();
        let old = Ca::generate(3650, now - time::Duration::days(1)).expect("ca");
        let obs = Observed {
            serving_unusable: None,
            unusable_serving_cert: None,
            current_ca: Some(ca_state_of(&old)),
            next_ca: None,
            webhook_bundles: vec![vec![old.cert_der().clone()]; 2],
            serving: Some(serving_from(
                &old,
                vec![old.cert_der().clone()],
                now - time::Duration::days(1),
            )),
        };
        assert_eq!(next_step(&obs, &policy(), now), Step::Done);
        let forced = Policy {
            force_rotation: true,
            ..policy()
        };
        assert_eq!(
            next_step(&obs, &forced, now),
            Step::StartRotation {
                reason: "--force".into()
            }
        );
        // A CA with less than a third of its life left starts a rotation by itself.
        let later = now + time::Duration::days(3000);
        assert!(
            matches!(next_step(&obs, &policy(), later), Step::StartRotation { reason } if reason.contains("less than 33%"))
        );
    }

    #[test]
    fn rotation_walks_publish_issue_wait_drop_promote() {
        let t0 = OffsetDateTime::now_utc();
        let old = Ca::generate(3650, t0 - time::Duration::days(1)).expect("old");
        let new = Ca::generate(3650, t0).expect("new");
        let (o, n) = (old.cert_der().clone(), new.cert_der().clone());
        let mut obs = Observed {
            serving_unusable: None,
            unusable_serving_cert: None,
            current_ca: Some(ca_state_of(&old)),
            next_ca: Some(ca_state_of(&new)),
            webhook_bundles: vec![vec![o.clone()], vec![o.clone(), n.clone()]],
            serving: Some(serving_from(
                &old,
                vec![o.clone()],
                t0 - time::Duration::days(1),
            )),
        };
        // One webhook still lacks the new CA: publish old + new everywhere.
        match next_step(&obs, &policy(), t0) {
            Step::PublishBundle { bundle, .. } => assert_eq!(bundle, vec![o.clone(), n.clone()]),
            s => panic!("expected publish, got {s:?}"),
        }
        obs.webhook_bundles = vec![vec![o.clone(), n.clone()]; 2];
        // The serving Secret's ca.crt also counts as a place clients trust from.
        assert!(matches!(
            next_step(&obs, &policy(), t0),
            Step::PublishBundle { .. }
        ));
        obs.serving.as_mut().expect("serving").bundle = vec![o.clone(), n.clone()];
        match next_step(&obs, &policy(), t0) {
            Step::IssueServing { reason, bundle, .. } => {
                assert!(reason.contains("does not verify against"), "{reason}");
                assert_eq!(bundle, vec![o.clone(), n.clone()]);
            }
            s => panic!("expected issue, got {s:?}"),
        }
        obs.serving = Some(serving_from(&new, vec![o.clone(), n.clone()], t0));
        assert_eq!(
            next_step(&obs, &policy(), t0 + Duration::from_secs(20)),
            Step::Wait {
                remaining_seconds: 100
            }
        );
        match next_step(&obs, &policy(), t0 + Duration::from_secs(121)) {
            Step::DropOld { bundle, dropped } => {
                assert_eq!(bundle, vec![n.clone()]);
                assert_eq!(dropped, vec![old.info().subject.clone()]);
            }
            s => panic!("expected drop, got {s:?}"),
        }
        obs.webhook_bundles = vec![vec![n.clone()]; 2];
        obs.serving.as_mut().expect("serving").bundle = vec![n.clone()];
        assert_eq!(next_step(&obs, &policy(), t0), Step::Promote);
        obs.current_ca = obs.next_ca.take();
        assert_eq!(next_step(&obs, &policy(), t0), Step::Done);
    }

    #[test]
    fn leaf_renewal_without_rotation_and_bootstrap_from_nothing() {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate(3650, now).expect("ca");
        let c = ca.cert_der().clone();
        let mut obs = Observed {
            serving_unusable: None,
            unusable_serving_cert: None,
            current_ca: Some(ca_state_of(&ca)),
            next_ca: None,
            webhook_bundles: vec![vec![c.clone()]],
            serving: Some(serving_from(
                &ca,
                vec![c.clone()],
                now - time::Duration::days(300),
            )),
        };
        assert!(
            matches!(next_step(&obs, &policy(), now), Step::IssueServing { reason, .. } if reason.contains("less than 33%"))
        );
        obs.serving.as_mut().expect("s").key_matches = false;
        assert!(
            matches!(next_step(&obs, &policy(), now), Step::IssueServing { reason, .. } if reason.contains("does not match"))
        );
        let wrong_sans = Policy {
            serving: ServingRequest {
                dns: vec!["x.example".into()],
                ..policy().serving
            },
            ..policy()
        };
        obs.serving = Some(serving_from(&ca, vec![c.clone()], now));
        assert!(
            matches!(next_step(&obs, &wrong_sans, now), Step::IssueServing { reason, .. } if reason.contains("SANs"))
        );
        // Nothing at all: start, then (with the CA stored) publish, then issue.
        let empty = Observed {
            webhook_bundles: vec![vec![]],
            ..Observed::default()
        };
        assert!(matches!(
            next_step(&empty, &policy(), now),
            Step::StartRotation { .. }
        ));
        let fresh = Observed {
            next_ca: Some(ca_state_of(&ca)),
            ..empty
        };
        assert!(
            matches!(next_step(&fresh, &policy(), now), Step::PublishBundle { bundle, .. } if bundle == vec![c.clone()])
        );
        let published = Observed {
            webhook_bundles: vec![vec![c.clone()]],
            ..fresh
        };
        assert!(
            matches!(next_step(&published, &policy(), now), Step::IssueServing { reason, .. } if reason.contains("does not exist"))
        );
    }

    #[test]
    fn reissues_keep_the_current_names_unless_replace_names() {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate(3650, now).expect("ca");
        let c = ca.cert_der().clone();
        // What `create --dns webhook.example.com --ip 10.0.0.1` issued.
        let wide = ServingRequest {
            dns: vec!["webhook.example.com".into()],
            ips: vec!["10.0.0.1".parse().expect("ip")],
            ..policy().serving
        };
        let pair = ca.issue_serving(&wide, now).expect("issue");
        let serving = ServingState {
            chain: vec![pair.cert_der().clone()],
            info: pair.info().clone(),
            key_matches: true,
            tls_crt: pair.cert_pem().into_bytes(),
            tls_key: pair.key_pem().into_bytes(),
            bundle: vec![c.clone()],
        };
        let mut obs = Observed {
            serving_unusable: None,
            unusable_serving_cert: None,
            current_ca: Some(ca_state_of(&ca)),
            next_ca: None,
            webhook_bundles: vec![vec![c.clone()]],
            serving: Some(serving),
        };
        // A run without --dns/--ip: the certificate already covers everything asked, and more.
        assert_eq!(next_step(&obs, &policy(), now), Step::Done);

        // Asking for one more name re-issues, keeping the others.
        let more = Policy {
            serving: ServingRequest {
                dns: vec!["new.example.com".into()],
                ..policy().serving
            },
            ..policy()
        };
        match next_step(&obs, &more, now) {
            Step::IssueServing {
                reason,
                names,
                request,
                ..
            } => {
                assert!(reason.contains("SANs differ"), "{reason}");
                assert_eq!(names.added, ["new.example.com"]);
                assert!(names.dropped.is_empty(), "{names:?}");
                assert_eq!(
                    names.kept,
                    [
                        "kpool-webhook",
                        "kpool-webhook.kpool-system",
                        "kpool-webhook.kpool-system.svc",
                        "kpool-webhook.kpool-system.svc.cluster.local",
                        "webhook.example.com",
                        "10.0.0.1"
                    ]
                );
                let reissued = ca.issue_serving(&request, now).expect("reissue");
                assert!(request.matches(reissued.info()));
                assert!(reissued.info().ip_addresses.contains(&wide.ips[0]));
                assert!(
                    reissued
                        .info()
                        .dns_names
                        .contains(&"webhook.example.com".to_owned())
                );
            }
            s => panic!("expected an issue, got {s:?}"),
        }

        // --replace-names narrows on purpose, and says what goes.
        let narrow = Policy {
            replace_names: true,
            ..policy()
        };
        match next_step(&obs, &narrow, now) {
            Step::IssueServing { names, request, .. } => {
                assert_eq!(names.dropped, ["webhook.example.com", "10.0.0.1"]);
                assert!(names.added.is_empty());
                assert_eq!(request, policy().serving);
            }
            s => panic!("expected an issue, got {s:?}"),
        }

        // A Secret made unusable (lost key) whose certificate still parses: names kept too.
        let info = obs.serving.take().expect("serving").info;
        obs.serving_unusable = Some("the serving Secret is unusable: no tls.key".into());
        obs.unusable_serving_cert = Some(info);
        match next_step(&obs, &policy(), now) {
            Step::IssueServing { names, request, .. } => {
                assert!(
                    names.dropped.is_empty() && names.added.is_empty(),
                    "{names:?}"
                );
                assert_eq!(request.ips, wide.ips);
            }
            s => panic!("expected an issue, got {s:?}"),
        }
        // Nothing readable: the flags' names, all reported as added.
        let (request, names) = names_to_issue(&policy(), None);
        assert_eq!(request, policy().serving);
        assert_eq!(names.added.len(), 4);
        assert!(names.kept.is_empty() && names.dropped.is_empty());
        assert_eq!(
            names.describe(),
            "kept: none; added: kpool-webhook, kpool-webhook.kpool-system, \
             kpool-webhook.kpool-system.svc, kpool-webhook.kpool-system.svc.cluster.local; \
             dropped: none"
        );
    }

    #[test]
    fn expired_cas_leave_the_bundle_when_publishing() {
        let now = OffsetDateTime::now_utc();
        let dead = Ca::generate(1, now - time::Duration::days(5)).expect("dead");
        let live = Ca::generate(3650, now).expect("live");
        let obs = Observed {
            serving_unusable: None,
            unusable_serving_cert: None,
            current_ca: Some(ca_state_of(&live)),
            next_ca: None,
            webhook_bundles: vec![vec![dead.cert_der().clone()]],
            serving: None,
        };
        assert!(
            matches!(next_step(&obs, &policy(), now), Step::PublishBundle { bundle, .. } if bundle == vec![live.cert_der().clone()])
        );
    }
}
