//! `kpool-certs create`: a CA and a serving certificate in a directory, idempotently.
//!
//! Re-running keeps valid material and renews only what needs it. The rule is:
//! - files that cannot be parsed are an error (they may be someone else's; `--force` replaces
//!   them);
//! - a CA certificate whose `ca.key` is missing or belongs to another key pair, or a `ca.key`
//!   without `ca.crt`, is an error too: clients (a webhook configuration's `caBundle`) trust
//!   that CA, and a new one would silently break them; `--force` replaces it;
//! - any other material that parses yet cannot be used as is (a serving key that does not
//!   match, not a CA, expired or due for renewal, not signed by the CA, SANs differ from the
//!   request) is replaced, and the report says why.
//!
//! A new CA always brings a new serving certificate. Files are written atomically, keys 0600.
//! A new CA is first written to [`CA_CRT_PENDING`], then `ca.key`, then `ca.crt`; a run killed
//! between the last two leaves a `ca.key` that matches the pending certificate, which the next
//! run recognises as its own interrupted write and finishes (rather than refusing it as a
//! foreign key). A key file left readable by group or others is reported as a warning.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use crate::CertError;
use crate::generate::{CA_NAME, Ca, ServingPair, ServingRequest, Usage};
use crate::inspect::{CertInfo, rfc3339, verify_chain, verify_client_chain};
use crate::pemio::{self, Sensitivity};
use crate::tls::certified_key;

/// File name of the CA certificate.
pub const CA_CRT: &str = "ca.crt";
/// File name of the CA key.
pub const CA_KEY: &str = "ca.key";
/// File name of the serving certificate.
pub const TLS_CRT: &str = "tls.crt";
/// File name of the serving key.
pub const TLS_KEY: &str = "tls.key";
/// File name of a new CA certificate while `ca.key` and `ca.crt` are being replaced.
pub const CA_CRT_PENDING: &str = ".ca.crt.pending";

/// Default serving certificate validity, days.
pub const DEFAULT_DAYS: u32 = 365;
/// Default CA validity, days.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default renewal threshold: renew when less than a third of the lifetime is left (as
/// cert-manager does by default).
pub const DEFAULT_RENEW_FRACTION: f64 = 1.0 / 3.0;

/// What `create` says, on refusing to replace a CA, about who trusts it and what `--force` does.
const CREATE_ADVICE: &str = "clients (the webhook configurations' caBundle) trust that CA, so \
     restore the file, or pass --force to generate a new CA and serving certificate (overwrites \
     ca.crt, ca.key, tls.crt and tls.key; caBundle must then be updated, e.g. with `kpool-certs \
     patch-webhooks`)";

/// What `create` should produce.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateOptions {
    /// Service name (the webhook's Service).
    pub service: String,
    /// Namespace of the Service.
    pub namespace: String,
    /// Directory to write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` to (created if missing).
    pub out_dir: PathBuf,
    /// Extra DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Serving certificate validity in days.
    pub days: u32,
    /// CA validity in days.
    pub ca_days: u32,
    /// Replace everything, whatever is there.
    pub force: bool,
    /// Renew a certificate when less than this fraction of its lifetime remains (0 ≤ f < 1).
    pub renew_fraction: f64,
}

impl CreateOptions {
    /// Options with the defaults: no extra SANs, 365 days (CA 3650), renew at 1/3 left.
    pub fn new(
        service: impl Into<String>,
        namespace: impl Into<String>,
        out_dir: impl Into<PathBuf>,
    ) -> Self {
        CreateOptions {
            service: service.into(),
            namespace: namespace.into(),
            out_dir: out_dir.into(),
            dns: Vec::new(),
            ips: Vec::new(),
            days: DEFAULT_DAYS,
            ca_days: DEFAULT_CA_DAYS,
            force: false,
            renew_fraction: DEFAULT_RENEW_FRACTION,
        }
    }

    /// The serving certificate these options ask for.
    pub fn serving_request(&self) -> ServingRequest {
        ServingRequest {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            dns: self.dns.clone(),
            ips: self.ips.clone(),
            days: self.days,
        }
    }

    fn validate(&self) -> Result<(), CertError> {
        self.serving_request().validate()?;
        check_lifetimes(self.ca_days, self.renew_fraction)
    }
}

/// The checks every command that keeps a CA makes: a CA validity of at least a day and a
/// renew fraction in [0, 1).
pub(crate) fn check_lifetimes(ca_days: u32, renew_fraction: f64) -> Result<(), CertError> {
    if ca_days == 0 {
        return Err(CertError::Invalid(
            "--ca-days: CA validity must be at least 1 day".to_owned(),
        ));
    }
    if !(0.0..1.0).contains(&renew_fraction) {
        return Err(CertError::Invalid(format!(
            "renew fraction: expected a number in [0, 1), found {renew_fraction}"
        )));
    }
    Ok(())
}

/// What happened to one piece of material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Existing material was valid and kept.
    Kept,
    /// There was none; it was created.
    Created,
    /// Existing material was replaced.
    Renewed {
        /// Why.
        reason: String,
    },
}

impl Action {
    /// Whether files were written.
    pub fn wrote(&self) -> bool {
        !matches!(self, Action::Kept)
    }
}

/// The outcome of [`create`].
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// The directory.
    pub out_dir: PathBuf,
    /// What happened to `ca.crt`/`ca.key`.
    pub ca: Action,
    /// What happened to `tls.crt`/`tls.key`.
    pub serving: Action,
    /// The CA now in the directory.
    pub ca_info: CertInfo,
    /// The serving certificate now in the directory.
    pub serving_info: CertInfo,
    /// Problems that did not stop the run (a key file readable by group or others); each is
    /// also logged as a warning.
    pub warnings: Vec<String>,
}

/// Creates or renews the material in `opts.out_dir` (see the module documentation).
pub fn create(opts: &CreateOptions) -> Result<CreateReport, CertError> {
    create_at(opts, OffsetDateTime::now_utc())
}

/// [`create`] at a given time (for tests and for callers with their own clock).
pub fn create_at(opts: &CreateOptions, now: OffsetDateTime) -> Result<CreateReport, CertError> {
    opts.validate()?;
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.clone(),
        source,
    })?;
    let files = CaFiles::in_dir(dir);
    let ca_key = files.key.clone();
    let (tls_crt, tls_key) = (dir.join(TLS_CRT), dir.join(TLS_KEY));
    let (ca, ca_action) = ensure_ca(
        &files,
        &CaPolicy {
            name: CA_NAME,
            days: opts.ca_days,
            force: opts.force,
            renew_fraction: opts.renew_fraction,
            advice: CREATE_ADVICE,
            others_exist: tls_crt.exists() || tls_key.exists(),
        },
        now,
    )?;

    let req = opts.serving_request();
    let serving_action = leaf_action(&ca_action, &tls_crt, &tls_key, || {
        existing_leaf(
            &tls_crt,
            &tls_key,
            &ca,
            &LeafCheck {
                what: "serving certificate",
                usage: Usage::Server,
                renew_fraction: opts.renew_fraction,
                sans: &|info: &CertInfo| {
                    (!req.matches(info)).then(|| {
                        format!(
                            "SANs differ: want DNS {:?} IP {:?}, have DNS {:?} IP {:?}",
                            req.dns_names(),
                            req.ips,
                            info.dns_names,
                            info.ip_addresses
                        )
                    })
                },
            },
            now,
        )
    })?;

    let (serving, serving_info) = settle_leaf(serving_action, &tls_crt, &tls_key, || {
        ca.issue_serving(&req, now)
    })?;
    let mut warnings = Vec::new();
    for key in [&ca_key, &tls_key] {
        if let Some(mode) = pemio::group_or_other_mode(key) {
            let warning = format!(
                "{} is readable by group or others (mode {mode:04o}): anyone who read it can \
                 impersonate the webhook{}; chmod 600 it{}",
                key.display(),
                if key == &ca_key {
                    " and sign certificates its clients trust"
                } else {
                    ""
                },
                if key == &ca_key {
                    ", and consider a new CA (`kpool-certs rotate --force`, or `create --force`)"
                } else {
                    ""
                },
            );
            tracing::warn!(path = %key.display(), mode = %format!("{mode:04o}"), "{warning}");
            warnings.push(warning);
        }
    }
    Ok(CreateReport {
        out_dir: dir.clone(),
        ca: ca_action,
        serving,
        ca_info: ca.info().clone(),
        serving_info,
        warnings,
    })
}

/// The files of a CA in a directory: `ca.crt`, `ca.key`, and [`CA_CRT_PENDING`], the new
/// certificate while both are being replaced.
#[derive(Debug, Clone)]
pub(crate) struct CaFiles {
    pub(crate) crt: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) pending: PathBuf,
}

impl CaFiles {
    pub(crate) fn in_dir(dir: &Path) -> Self {
        CaFiles {
            crt: dir.join(CA_CRT),
            key: dir.join(CA_KEY),
            pending: dir.join(CA_CRT_PENDING),
        }
    }
}

/// How [`ensure_ca`] keeps or replaces a CA.
#[derive(Debug)]
pub(crate) struct CaPolicy<'a> {
    /// Common name of a new CA, before its key id.
    pub(crate) name: &'a str,
    /// Validity of a new CA, days.
    pub(crate) days: u32,
    /// Replace the CA whatever is there.
    pub(crate) force: bool,
    /// Renew when less than this fraction of the lifetime is left.
    pub(crate) renew_fraction: f64,
    /// The end of [`CertError::CaReplacementRefused`]: who trusts the CA, what `--force` does.
    pub(crate) advice: &'a str,
    /// Whether material signed by the CA exists (a forced run then reports "renewed").
    pub(crate) others_exist: bool,
}

/// Keeps the CA in `files` when it is usable, finishes one an interrupted run was writing, or
/// generates a new one, and writes what changed (see the module documentation): the new
/// certificate to [`CA_CRT_PENDING`] first, then `ca.key`, then `ca.crt`. Refuses to replace
/// a CA whose key is missing or foreign (or a key without its certificate) unless forced.
pub(crate) fn ensure_ca(
    files: &CaFiles,
    policy: &CaPolicy<'_>,
    now: OffsetDateTime,
) -> Result<(Ca, Action), CertError> {
    let generate = || Ca::generate_named(policy.name, policy.days, now);
    let (ca, action) = if policy.force {
        let existed = files.crt.exists() || files.key.exists() || policy.others_exist;
        let action = if existed {
            renewed("--force")
        } else {
            Action::Created
        };
        (generate()?, action)
    } else {
        match existing_ca(files, policy, now)? {
            Existing::Usable(ca) => (*ca, Action::Kept),
            Existing::Absent => (generate()?, Action::Created),
            Existing::Replace(reason) => (generate()?, renewed(&reason)),
            Existing::Interrupted(ca) => (
                *ca,
                renewed(&format!(
                    "finishing a run interrupted between writing {} and {}",
                    files.key.display(),
                    files.crt.display()
                )),
            ),
        }
    };
    if action.wrote() {
        // The certificate to come first, then the key, then the certificate: a crash between
        // the key and the certificate leaves a mismatched pair, which the next run recognises
        // by the pending certificate (see `existing_ca`) and finishes, rather than an old key
        // that silently still "works" or a refusal of what this tool itself wrote.
        pemio::write_atomic(
            &files.pending,
            ca.cert_pem().as_bytes(),
            Sensitivity::Public,
        )?;
        pemio::write_atomic(&files.key, ca.key_pem().as_bytes(), Sensitivity::Secret)?;
        pemio::write_atomic(&files.crt, ca.cert_pem().as_bytes(), Sensitivity::Public)?;
    }
    remove_pending(&files.pending);
    Ok((ca, action))
}

/// What becomes of a leaf pair (`crt`, `key`) given what became of its CA: `None` keeps it.
/// With the CA kept, `check` decides (see [`existing_leaf`]); a new CA always brings a new
/// leaf.
pub(crate) fn leaf_action(
    ca: &Action,
    crt: &Path,
    key: &Path,
    check: impl FnOnce() -> Result<Option<Action>, CertError>,
) -> Result<Option<Action>, CertError> {
    Ok(match ca {
        Action::Kept => check()?,
        Action::Created if !crt.exists() && !key.exists() => Some(Action::Created),
        // A leaf without its CA cannot be verified by anyone: replace it.
        Action::Created => Some(renewed("there was no CA to verify it against")),
        Action::Renewed { .. } => Some(renewed("the CA was replaced")),
    })
}

/// Issues and writes a leaf pair when `action` says so (the key first, then the certificate),
/// else reads the facts of the one kept.
pub(crate) fn settle_leaf(
    action: Option<Action>,
    crt: &Path,
    key: &Path,
    issue: impl FnOnce() -> Result<ServingPair, CertError>,
) -> Result<(Action, CertInfo), CertError> {
    match action {
        Some(action) => {
            let pair = issue()?;
            pemio::write_atomic(key, pair.key_pem().as_bytes(), Sensitivity::Secret)?;
            pemio::write_atomic(crt, pair.cert_pem().as_bytes(), Sensitivity::Public)?;
            Ok((action, pair.info().clone()))
        }
        None => {
            let origin = pemio::origin_of(crt);
            let certs = pemio::parse_certificates(&origin, &pemio::read_file(crt)?)?;
            Ok((Action::Kept, CertInfo::from_der(&origin, &certs[0])?))
        }
    }
}

/// What an existing leaf must be to be kept by [`existing_leaf`].
pub(crate) struct LeafCheck<'a> {
    /// What the certificate is, in reasons (`serving certificate`).
    pub(crate) what: &'a str,
    /// The use it must verify for.
    pub(crate) usage: Usage,
    /// Renew when less than this fraction of the lifetime is left.
    pub(crate) renew_fraction: f64,
    /// Why its SANs are not the ones wanted, if they are not.
    pub(crate) sans: &'a dyn Fn(&CertInfo) -> Option<String>,
}

/// Removes a pending CA certificate once `ca.crt` and `ca.key` agree (after a write, or a
/// stale one from a run killed before it wrote the key). Failing to is only worth a warning:
/// the file is used only when `ca.key` matches it and `ca.crt` does not.
fn remove_pending(pending: &Path) {
    match std::fs::remove_file(pending) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %pending.display(), error = %e, "cannot remove the pending CA certificate")
        }
    }
}

fn renewed(reason: &str) -> Action {
    Action::Renewed {
        reason: reason.to_owned(),
    }
}

enum Existing {
    Usable(Box<Ca>),
    Absent,
    Replace(String),
    /// A run was killed between writing `ca.key` and `ca.crt`: the CA of the pending
    /// certificate and the key.
    Interrupted(Box<Ca>),
}

/// Why a certificate with these facts must be renewed at `now`, if it must.
fn lifetime_problem(info: &CertInfo, fraction: f64, now: OffsetDateTime) -> Option<String> {
    if info.is_expired(now) {
        return Some(format!("it expired at {}", rfc3339(info.not_after)));
    }
    if info.renewal_due(now, fraction) {
        return Some(format!(
            "it expires at {}, less than {:.0}% of its lifetime left",
            rfc3339(info.not_after),
            fraction * 100.0
        ));
    }
    None
}

fn existing_ca(
    files: &CaFiles,
    policy: &CaPolicy<'_>,
    now: OffsetDateTime,
) -> Result<Existing, CertError> {
    let (crt, key, pending) = (&files.crt, &files.key, &files.pending);
    let (c, k) = (pemio::read_optional(crt)?, pemio::read_optional(key)?);
    let (crt_origin, key_origin) = (pemio::origin_of(crt), pemio::origin_of(key));
    // The pending certificate and ca.key are the pair an interrupted run was writing.
    let interrupted = |k: &[u8]| -> Result<Option<Existing>, CertError> {
        let Some(p) = pemio::read_optional(pending)? else {
            return Ok(None);
        };
        Ok(Ca::from_pem(&pemio::origin_of(pending), &p, &key_origin, k)
            .ok()
            .map(|ca| Existing::Interrupted(Box::new(ca))))
    };
    let (c, k) = match (c, k) {
        (None, None) => return Ok(Existing::Absent),
        (Some(c), None) => {
            let info =
                CertInfo::from_der(&crt_origin, &pemio::parse_certificates(&crt_origin, &c)?[0])?;
            if !info.is_ca {
                return Ok(Existing::Replace(format!(
                    "{crt_origin} holds {}, which is not a CA, and {key_origin} does not exist",
                    info.subject
                )));
            }
            return Err(CertError::CaReplacementRefused {
                expected: format!(
                    "{key_origin} beside {crt_origin}, the private key of the CA {}",
                    info.subject
                ),
                found: "no such file".to_owned(),
                advice: policy.advice.to_owned(),
            });
        }
        (None, Some(k)) => {
            if let Some(resume) = interrupted(&k)? {
                return Ok(resume);
            }
            return Err(CertError::CaReplacementRefused {
                expected: format!("{crt_origin} beside the CA private key {key_origin}"),
                found: "no such file".to_owned(),
                advice: policy.advice.to_owned(),
            });
        }
        (Some(c), Some(k)) => (c, k),
    };
    let ca = match Ca::from_pem(&crt_origin, &c, &key_origin, &k) {
        Ok(ca) => ca,
        Err(CertError::KeyMismatch { .. }) => {
            if let Some(resume) = interrupted(&k)? {
                return Ok(resume);
            }
            let subject =
                CertInfo::from_der(&crt_origin, &pemio::parse_certificates(&crt_origin, &c)?[0])?
                    .subject;
            return Err(CertError::CaReplacementRefused {
                expected: format!(
                    "{key_origin} to be the private key of the CA {subject} in {crt_origin}"
                ),
                found: "a key of another key pair".to_owned(),
                advice: policy.advice.to_owned(),
            });
        }
        // Not a CA certificate at all: nobody can trust it as one; replace it.
        Err(e @ CertError::Verify { .. }) => {
            return Ok(Existing::Replace(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    if let Some(p) = lifetime_problem(ca.info(), policy.renew_fraction, now) {
        return Ok(Existing::Replace(format!("CA {}: {p}", ca.info().subject)));
    }
    Ok(Existing::Usable(Box::new(ca)))
}

/// `None` when the existing leaf pair is kept: both files there, the key matches, not due
/// for renewal, chains to `ca` for `check.usage`, and the SANs are right. Anything else that
/// parses is replaced, with the reason; files that are not PEM are an error naming the file.
pub(crate) fn existing_leaf(
    crt: &Path,
    key: &Path,
    ca: &Ca,
    check: &LeafCheck<'_>,
    now: OffsetDateTime,
) -> Result<Option<Action>, CertError> {
    let (c, k) = (pemio::read_optional(crt)?, pemio::read_optional(key)?);
    let (c, k) = match (c, k) {
        (None, None) => return Ok(Some(Action::Created)),
        (Some(_), None) | (None, Some(_)) => {
            let name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            return Ok(Some(renewed(&format!(
                "only one of {} and {} exists",
                name(crt),
                name(key)
            ))));
        }
        (Some(c), Some(k)) => (c, k),
    };
    let (crt_origin, key_origin) = (pemio::origin_of(crt), pemio::origin_of(key));
    let chain = pemio::parse_certificates(&crt_origin, &c)?;
    let private = pemio::parse_private_key(&key_origin, &k)?;
    let info = CertInfo::from_der(&crt_origin, &chain[0])?;
    match certified_key(&crt_origin, chain.clone(), &key_origin, &private) {
        Ok(_) => {}
        Err(e @ CertError::KeyMismatch { .. }) => return Ok(Some(renewed(&e.to_string()))),
        Err(e) => return Err(e),
    }
    if let Some(p) = lifetime_problem(&info, check.renew_fraction, now) {
        return Ok(Some(renewed(&format!("{}: {p}", check.what))));
    }
    let cas = std::slice::from_ref(ca.cert_der());
    let verified = match check.usage {
        Usage::Server => verify_chain(&crt_origin, &chain, cas, None, now),
        Usage::Client => verify_client_chain(&crt_origin, &chain, cas, now),
        Usage::ServerAndClient => verify_chain(&crt_origin, &chain, cas, None, now)
            .and_then(|()| verify_client_chain(&crt_origin, &chain, cas, now)),
    };
    if let Err(e) = verified {
        return Ok(Some(renewed(&e.to_string())));
    }
    if let Some(why) = (check.sans)(&info) {
        return Ok(Some(renewed(&why)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> CreateOptions {
        CreateOptions::new("kpool-webhook", "kpool-system", dir)
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).expect("read")
    }

    #[test]
    fn creates_then_keeps_then_renews_when_due() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("out");
        let now = OffsetDateTime::now_utc();
        let r = create_at(&opts(&dir), now).expect("create");
        assert_eq!(
            (r.ca.clone(), r.serving.clone()),
            (Action::Created, Action::Created)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for (f, mode) in [
                (CA_KEY, 0o600),
                (TLS_KEY, 0o600),
                (CA_CRT, 0o644),
                (TLS_CRT, 0o644),
            ] {
                let m = std::fs::metadata(dir.join(f))
                    .expect("stat")
                    .permissions()
                    .mode()
                    & 0o777;
                assert_eq!(m, mode, "{f}");
            }
        }
        let before: Vec<Vec<u8>> = [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY]
            .iter()
            .map(|f| read(&dir, f))
            .collect();
        let again = create_at(&opts(&dir), now + time::Duration::days(30)).expect("again");
        assert_eq!((again.ca, again.serving), (Action::Kept, Action::Kept));
        let after: Vec<Vec<u8>> = [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY]
            .iter()
            .map(|f| read(&dir, f))
            .collect();
        assert_eq!(before, after, "valid material is left byte for byte");

        // 250 of 365 days gone: less than a third left, the leaf (only) is renewed.
        let later = create_at(&opts(&dir), now + time::Duration::days(250)).expect("later");
        assert_eq!(later.ca, Action::Kept);
        assert!(
            matches!(&later.serving, Action::Renewed { reason } if reason.contains("less than 33%")),
            "{:?}",
            later.serving
        );
        assert_ne!(read(&dir, TLS_CRT), before[2]);
        assert_eq!(read(&dir, CA_CRT), before[0]);
    }

    #[test]
    fn changed_sans_renew_the_leaf_and_force_renews_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        create(&opts(dir)).expect("create");
        let ca = read(dir, CA_CRT);
        let mut o = opts(dir);
        o.dns = vec!["webhook.example.com".into()];
        let r = create(&o).expect("sans");
        assert_eq!(r.ca, Action::Kept);
        assert!(
            matches!(&r.serving, Action::Renewed { reason } if reason.contains("SANs differ")),
            "{:?}",
            r.serving
        );
        assert!(
            r.serving_info
                .dns_names
                .contains(&"webhook.example.com".to_owned())
        );
        assert_eq!(read(dir, CA_CRT), ca);
        o.force = true;
        let r = create(&o).expect("force");
        assert_eq!(r.ca, renewed("--force"));
        assert_ne!(read(dir, CA_CRT), ca);
    }

    #[test]
    fn mismatched_or_foreign_material_is_replaced_with_a_reason() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        create(&opts(dir)).expect("create");
        // A leaf key that belongs to another certificate.
        let other = tempfile::tempdir().expect("other");
        create(&opts(other.path())).expect("other create");
        std::fs::copy(other.path().join(TLS_KEY), dir.join(TLS_KEY)).expect("copy");
        let r = create(&opts(dir)).expect("mismatch");
        assert!(
            matches!(&r.serving, Action::Renewed { reason } if reason.contains("does not match")),
            "{:?}",
            r.serving
        );
        // A leaf from another CA (with its own key).
        std::fs::copy(other.path().join(TLS_KEY), dir.join(TLS_KEY)).expect("copy key");
        std::fs::copy(other.path().join(TLS_CRT), dir.join(TLS_CRT)).expect("copy crt");
        let r = create(&opts(dir)).expect("foreign");
        assert!(
            matches!(&r.serving, Action::Renewed { reason } if reason.contains("does not chain")),
            "{:?}",
            r.serving
        );
        // A CA key that does not match the CA is refused (see the test below); with --force
        // the CA and so the leaf are replaced.
        std::fs::copy(other.path().join(CA_KEY), dir.join(CA_KEY)).expect("copy ca key");
        create(&opts(dir)).expect_err("ca mismatch without --force");
        let mut forced = opts(dir);
        forced.force = true;
        let r = create(&forced).expect("ca mismatch, forced");
        assert_eq!(r.ca, renewed("--force"));
        assert_eq!(r.serving, renewed("the CA was replaced"));
        verify_chain(
            "tls.crt",
            &crate::inspect::read_certificates(&dir.join(TLS_CRT)).expect("leaf"),
            &crate::inspect::read_certificates(&dir.join(CA_CRT)).expect("ca"),
            Some("kpool-webhook.kpool-system.svc"),
            OffsetDateTime::now_utc(),
        )
        .expect("new pair verifies");
    }

    fn all_four(dir: &Path) -> Vec<Option<Vec<u8>>> {
        [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY]
            .iter()
            .map(|f| std::fs::read(dir.join(f)).ok())
            .collect()
    }

    #[test]
    fn a_foreign_or_missing_ca_key_is_refused_unless_forced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let first = create(&opts(dir)).expect("create");
        let subject = first.ca_info.subject;
        let (crt, key) = (
            dir.join(CA_CRT).display().to_string(),
            dir.join(CA_KEY).display().to_string(),
        );
        let tail = "; clients (the webhook configurations' caBundle) trust that CA, so restore the \
                    file, or pass --force to generate a new CA and serving certificate (overwrites \
                    ca.crt, ca.key, tls.crt and tls.key; caBundle must then be updated, e.g. with \
                    `kpool-certs patch-webhooks`)";

        // ca.key swapped for another CA's key: refused, nothing written.
        let other = tempfile::tempdir().expect("other");
        create(&opts(other.path())).expect("other create");
        std::fs::copy(other.path().join(CA_KEY), dir.join(CA_KEY)).expect("copy ca key");
        let before = all_four(dir);
        let e = create(&opts(dir)).expect_err("foreign ca.key");
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to replace the CA without --force: expected {key} to be the private \
                 key of the CA {subject} in {crt}, found a key of another key pair{tail}"
            )
        );
        assert_eq!(all_four(dir), before, "nothing is written");

        // ca.key missing: refused, nothing written.
        std::fs::remove_file(dir.join(CA_KEY)).expect("rm ca.key");
        let before = all_four(dir);
        let e = create(&opts(dir)).expect_err("missing ca.key");
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to replace the CA without --force: expected {key} beside {crt}, the \
                 private key of the CA {subject}, found no such file{tail}"
            )
        );
        assert_eq!(all_four(dir), before, "nothing is written");

        // ca.key without ca.crt: refused too (a private key is not overwritten silently).
        std::fs::copy(other.path().join(CA_KEY), dir.join(CA_KEY)).expect("copy ca key");
        std::fs::remove_file(dir.join(CA_CRT)).expect("rm ca.crt");
        let e = create(&opts(dir)).expect_err("ca.key alone");
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to replace the CA without --force: expected {crt} beside the CA \
                 private key {key}, found no such file{tail}"
            )
        );

        // --force does what the error says.
        let mut forced = opts(dir);
        forced.force = true;
        let r = create(&forced).expect("forced");
        assert_eq!(
            (r.ca, r.serving),
            (renewed("--force"), renewed("the CA was replaced"))
        );
        assert_ne!(r.ca_info.subject, subject);
        assert_eq!(create(&opts(dir)).expect("then kept").ca, Action::Kept);
    }

    #[test]
    fn a_run_killed_between_the_ca_key_and_ca_crt_writes_is_finished() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let now = OffsetDateTime::now_utc();
        create(&opts(dir)).expect("create");
        // What a renewal killed after writing ca.key leaves: the pending certificate, the new
        // key, and the old ca.crt.
        let new = Ca::generate(DEFAULT_CA_DAYS, now).expect("new ca");
        let pending = dir.join(CA_CRT_PENDING);
        std::fs::write(&pending, new.cert_pem()).expect("pending");
        pemio::write_atomic(
            &dir.join(CA_KEY),
            new.key_pem().as_bytes(),
            Sensitivity::Secret,
        )
        .expect("key");
        let r = create(&opts(dir)).expect("finish");
        assert!(
            matches!(&r.ca, Action::Renewed { reason } if reason.contains("finishing a run interrupted")),
            "{:?}",
            r.ca
        );
        assert_eq!(r.ca_info.subject, new.info().subject);
        assert_eq!(read(dir, CA_CRT), new.cert_pem().into_bytes());
        assert_eq!(r.serving, renewed("the CA was replaced"));
        assert!(!pending.exists(), "the pending certificate is removed");
        // The same for a first run killed after ca.key (no ca.crt at all).
        let fresh = tempfile::tempdir().expect("fresh");
        std::fs::write(fresh.path().join(CA_CRT_PENDING), new.cert_pem()).expect("pending");
        std::fs::write(fresh.path().join(CA_KEY), new.key_pem()).expect("key");
        let r = create(&opts(fresh.path())).expect("finish first run");
        assert_eq!(r.ca_info.subject, new.info().subject);
        // A completed run leaves no pending file behind.
        assert!(!fresh.path().join(CA_CRT_PENDING).exists() && !dir.join(CA_CRT_PENDING).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_readable_by_others_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        assert!(create(&opts(dir)).expect("create").warnings.is_empty());
        std::fs::set_permissions(dir.join(CA_KEY), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        std::fs::set_permissions(dir.join(TLS_KEY), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        let r = create(&opts(dir)).expect("kept, with warnings");
        assert_eq!((r.ca, r.serving), (Action::Kept, Action::Kept));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with(&format!(
                "{} is readable by group or others (mode 0644)",
                dir.join(CA_KEY).display()
            )),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings[1].starts_with(&format!(
                "{} is readable by group or others (mode 0640)",
                dir.join(TLS_KEY).display()
            )),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn corrupt_files_are_an_error_naming_the_file_unless_forced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        create(&opts(dir)).expect("create");
        std::fs::write(
            dir.join(CA_CRT),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .expect("corrupt");
        let e = create(&opts(dir)).expect_err("corrupt");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&dir.join(CA_CRT).display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains("expected one or more PEM CERTIFICATE blocks, found malformed PEM"),
            "{msg}"
        );
        let mut o = opts(dir);
        o.force = true;
        create(&o).expect("force replaces");
    }

    #[test]
    fn expired_ca_is_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let now = OffsetDateTime::now_utc();
        let mut o = opts(dir);
        o.ca_days = 2;
        o.days = 1;
        create_at(&o, now - time::Duration::days(3)).expect("old");
        let r = create_at(&opts(dir), now).expect("renew");
        assert!(
            matches!(&r.ca, Action::Renewed { reason } if reason.contains("expired at")),
            "{:?}",
            r.ca
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut o = opts(tmp.path());
        o.renew_fraction = 1.5;
        assert!(
            create(&o)
                .expect_err("fraction")
                .to_string()
                .contains("[0, 1)")
        );
        let o = CreateOptions::new("Web_Hook", "ns", tmp.path());
        assert!(
            create(&o)
                .expect_err("name")
                .to_string()
                .contains("expected a DNS label")
        );
    }
}
