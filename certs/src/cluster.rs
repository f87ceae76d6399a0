//! The Kubernetes side: the serving Secret, the CA Secret, and the `caBundle` of the
//! Mutating and Validating webhook configurations.
//!
//! Every write is a server-side apply with field manager [`FIELD_MANAGER`] and `force=true`:
//! apply is idempotent (the same body twice changes nothing), and forcing takes over the
//! fields from whoever set them before (typically Helm), which is what a certificate tool must
//! do. Each apply body lists every field kpool-certs owns in that object, because server-side
//! apply removes owned fields that a later apply leaves out. Bodies are built by pure
//! functions so tests can compare them exactly.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{CertError, FIELD_MANAGER, pemio};

/// Secret key of the serving certificate.
pub const TLS_CRT: &str = "tls.crt";
/// Secret key of the serving key.
pub const TLS_KEY: &str = "tls.key";
/// Secret key of the CA bundle (serving Secret) or the CA certificate (CA Secret).
pub const CA_CRT: &str = "ca.crt";
/// CA Secret key of the CA private key.
pub const CA_KEY: &str = "ca.key";
/// CA Secret key of the next CA's certificate during a rotation.
pub const NEXT_CA_CRT: &str = "next-ca.crt";
/// CA Secret key of the next CA's private key during a rotation.
pub const NEXT_CA_KEY: &str = "next-ca.key";

/// `PatchParams` for every write: server-side apply as `kpool-certs`, forced.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn b64(bytes: &[u8]) -> Value {
    // ByteString serialises as standard base64, exactly what the API server expects in `data`.
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap_or(Value::Null)
}

/// The apply body of a `kubernetes.io/tls` serving Secret.
pub fn serving_secret_body(
    name: &str,
    namespace: &str,
    tls_crt: &[u8],
    tls_key: &[u8],
    ca_crt: &[u8],
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": namespace },
        "type": "kubernetes.io/tls",
        "data": {
            CA_CRT: b64(ca_crt),
            TLS_CRT: b64(tls_crt),
            TLS_KEY: b64(tls_key),
        }
    })
}

/// The PEM pair of a CA in the CA Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The CA certificate, PEM.
    pub cert: Vec<u8>,
    /// The CA key, PEM.
    pub key: Vec<u8>,
}

/// The apply body of the Opaque CA Secret: the CA that signs serving certificates, and during
/// a rotation the next one.
pub fn ca_secret_body(
    name: &str,
    namespace: &str,
    current: Option<&CaPem>,
    next: Option<&CaPem>,
) -> Value {
    let mut data = serde_json::Map::new();
    if let Some(c) = current {
        data.insert(CA_CRT.to_owned(), b64(&c.cert));
        data.insert(CA_KEY.to_owned(), b64(&c.key));
    }
    if let Some(n) = next {
        data.insert(NEXT_CA_CRT.to_owned(), b64(&n.cert));
        data.insert(NEXT_CA_KEY.to_owned(), b64(&n.key));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": namespace },
        "type": "Opaque",
        "data": data,
    })
}

/// Which webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WebhookKind {
    /// `MutatingWebhookConfiguration`.
    Mutating,
    /// `ValidatingWebhookConfiguration`.
    Validating,
}

impl WebhookKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
        }
    }
}

/// The apply body that sets `caBundle` on the named webhooks of a configuration. Only the
/// webhook names (the list's merge key) and `clientConfig.caBundle` are sent, so rules,
/// selectors and the service reference stay owned by whoever manages them (the chart).
pub fn webhook_bundle_body(
    kind: WebhookKind,
    name: &str,
    webhooks: &[String],
    bundle_pem: &str,
) -> Value {
    let entries: Vec<Value> = webhooks
        .iter()
        .map(|w| json!({ "name": w, "clientConfig": { "caBundle": b64(bundle_pem.as_bytes()) } }))
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind.kind(),
        "metadata": { "name": name },
        "webhooks": entries,
    })
}

/// A Secret as read: its type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretData {
    /// `Kind ns/name`, for errors.
    pub object: String,
    /// The Secret's `type`.
    pub type_: Option<String>,
    /// The data, decoded.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl SecretData {
    /// The bytes of a key, or `None`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The bytes of a key that must be there.
    pub fn require(&self, key: &str) -> Result<&[u8], CertError> {
        self.get(key).ok_or_else(|| CertError::Object {
            object: self.object.clone(),
            expected: format!("a data key {key:?}"),
            found: format!("keys {:?}", self.data.keys().collect::<Vec<_>>()),
        })
    }

    /// How errors about one key name it: `Secret ns/name key tls.crt`.
    pub fn origin(&self, key: &str) -> String {
        format!("{} key {key}", self.object)
    }
}

/// Reads a Secret, `None` if it does not exist.
pub async fn read_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<SecretData>, CertError> {
    let object = format!("Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| CertError::kube(format!("read {object}"), e))?;
    Ok(secret.map(|s| SecretData {
        object,
        type_: s.type_,
        data: s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }))
}

/// Applies a Secret body (from [`serving_secret_body`] or [`ca_secret_body`]).
pub async fn apply_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<(), CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &apply_params(), &Patch::Apply(body))
        .await
        .map_err(|e| CertError::kube(format!("apply Secret {namespace}/{name}"), e))?;
    Ok(())
}

/// One webhook configuration as read: the names of its webhooks and their `caBundle`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// The configuration's name.
    pub name: String,
    /// `(webhook name, caBundle bytes)`; an unset bundle is empty.
    pub webhooks: Vec<(String, Vec<u8>)>,
}

impl WebhookConfig {
    /// How errors about one webhook's bundle name it.
    pub fn origin(&self, webhook: &str) -> String {
        format!(
            "{} {} webhook {webhook} caBundle",
            self.kind.kind(),
            self.name
        )
    }
}

/// Reads the Mutating and Validating webhook configurations called `name`; those that do not
/// exist are left out. Errors if neither exists, since then there is nothing to protect and
/// the name is most likely wrong.
pub async fn read_webhook_configs(
    client: &Client,
    name: &str,
) -> Result<Vec<WebhookConfig>, CertError> {
    let read = |kind: &str, e| CertError::kube(format!("read {kind} {name}"), e);
    let bundle = |c: WebhookClientConfig| c.ca_bundle.map(|b| b.0).unwrap_or_default();
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| read("MutatingWebhookConfiguration", e))?
        .map(|m| {
            let hooks = m.webhooks.unwrap_or_default().into_iter();
            hooks.map(|w| (w.name, bundle(w.client_config))).collect()
        });
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| read("ValidatingWebhookConfiguration", e))?
        .map(|v| {
            let hooks = v.webhooks.unwrap_or_default().into_iter();
            hooks.map(|w| (w.name, bundle(w.client_config))).collect()
        });
    let out: Vec<WebhookConfig> = [
        (WebhookKind::Mutating, mutating),
        (WebhookKind::Validating, validating),
    ]
    .into_iter()
    .filter_map(|(kind, webhooks)| {
        webhooks.map(|webhooks| WebhookConfig {
            kind,
            name: name.to_owned(),
            webhooks,
        })
    })
    .collect();
    if out.is_empty() {
        return Err(CertError::Object {
            object: format!("webhook configurations named {name:?}"),
            expected: "a MutatingWebhookConfiguration or ValidatingWebhookConfiguration".to_owned(),
            found: "neither".to_owned(),
        });
    }
    Ok(out)
}

/// Parses a `caBundle` into certificates; an empty bundle is an empty list.
pub fn parse_bundle(
    origin: &str,
    bundle: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    if bundle.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    pemio::parse_certificates(origin, bundle)
}

/// Whether two bundles hold the same certificates (order and duplicates do not matter to a
/// verifier, so they do not matter here).
pub fn same_certificates(a: &[CertificateDer<'_>], b: &[CertificateDer<'_>]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// What [`set_ca_bundle`] did to one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleOutcome {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// The configuration's name.
    pub name: String,
    /// Whether an apply was sent (false: every webhook already had the bundle).
    pub updated: bool,
    /// How many webhooks the configuration has.
    pub webhooks: usize,
}

/// Sets `caBundle` of every webhook in the given configurations to `bundle`, skipping
/// configurations that already carry exactly these certificates.
pub async fn set_ca_bundle(
    client: &Client,
    configs: &[WebhookConfig],
    bundle: &[CertificateDer<'_>],
) -> Result<Vec<BundleOutcome>, CertError> {
    let pem = pemio::encode_certificates(bundle);
    let mut out = Vec::new();
    for config in configs {
        let mut up_to_date = true;
        for (w, current) in &config.webhooks {
            // An unparsable bundle is simply replaced: it is exactly what this fixes.
            let certs = parse_bundle(&config.origin(w), current).unwrap_or_default();
            if !same_certificates(&certs, bundle) {
                up_to_date = false;
            }
        }
        let names: Vec<String> = config.webhooks.iter().map(|(n, _)| n.clone()).collect();
        if !up_to_date {
            let body = webhook_bundle_body(config.kind, &config.name, &names, &pem);
            let action = format!("apply caBundle to {} {}", config.kind.kind(), config.name);
            match config.kind {
                WebhookKind::Mutating => {
                    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                    api.patch(&config.name, &apply_params(), &Patch::Apply(&body))
                        .await
                        .map_err(|e| CertError::kube(action, e))?;
                }
                WebhookKind::Validating => {
                    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                    api.patch(&config.name, &apply_params(), &Patch::Apply(&body))
                        .await
                        .map_err(|e| CertError::kube(action, e))?;
                }
            }
        }
        out.push(BundleOutcome {
            kind: config.kind,
            name: config.name.clone(),
            updated: !up_to_date,
            webhooks: names.len(),
        });
    }
    Ok(out)
}

/// `kpool-certs patch-webhooks`: reads the CA file and sets it as `caBundle` on the Mutating
/// and Validating webhook configurations named `name`.
pub async fn patch_webhooks(
    client: &Client,
    name: &str,
    ca_file: &std::path::Path,
) -> Result<Vec<BundleOutcome>, CertError> {
    let bundle = crate::inspect::read_certificates(ca_file)?;
    let now = time::OffsetDateTime::now_utc();
    for c in &bundle {
        let info = crate::inspect::CertInfo::from_der(&pemio::origin_of(ca_file), c)?;
        info.check_not_expired(&pemio::origin_of(ca_file), now)?;
        if !info.is_ca {
            return Err(CertError::Verify {
                origin: pemio::origin_of(ca_file),
                detail: format!(
                    "expected CA certificates only, found {} which is not a CA",
                    info.subject
                ),
            });
        }
    }
    let configs = read_webhook_configs(client, name).await?;
    set_ca_bundle(client, &configs, &bundle).await
}

/// What `kpool-certs secret` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretOutcome {
    /// `Secret ns/name`.
    pub object: String,
    /// Whether an apply was sent (false: the Secret already held exactly this data).
    pub updated: bool,
}

/// `kpool-certs secret`: applies the `kubernetes.io/tls` Secret `name` from `dir` (`tls.crt`,
/// `tls.key`, `ca.crt`), after checking the pair matches, is not expired and chains to
/// `ca.crt`; with `ca_secret`, also applies the CA Secret (`ca.crt`, `ca.key`) that `rotate`
/// and renewals sign with.
pub async fn apply_secret_from_dir(
    client: &Client,
    namespace: &str,
    name: &str,
    dir: &std::path::Path,
    ca_secret: Option<&str>,
) -> Result<Vec<SecretOutcome>, CertError> {
    let path = |f: &str| dir.join(f);
    let (crt_path, key_path, ca_path) = (path(TLS_CRT), path(TLS_KEY), path(CA_CRT));
    let tls_crt = pemio::read_file(&crt_path)?;
    let tls_key = pemio::read_file(&key_path)?;
    let ca_crt = pemio::read_file(&ca_path)?;
    let now = time::OffsetDateTime::now_utc();
    let (crt_origin, key_origin) = (pemio::origin_of(&crt_path), pemio::origin_of(&key_path));
    let chain = pemio::parse_certificates(&crt_origin, &tls_crt)?;
    let info = crate::inspect::CertInfo::from_der(&crt_origin, &chain[0])?;
    info.check_not_expired(&crt_origin, now)?;
    let key = pemio::parse_private_key(&key_origin, &tls_key)?;
    crate::tls::certified_key(&crt_origin, chain.clone(), &key_origin, &key)?;
    let cas = pemio::parse_certificates(&pemio::origin_of(&ca_path), &ca_crt)?;
    crate::inspect::verify_chain(&crt_origin, &chain, &cas, None, now)?;

    let mut out = Vec::new();
    let body = serving_secret_body(name, namespace, &tls_crt, &tls_key, &ca_crt);
    out.push(apply_if_changed(client, namespace, name, "kubernetes.io/tls", &body).await?);
    if let Some(ca_name) = ca_secret {
        let ca_key_path = path(CA_KEY);
        let ca_key = pemio::read_file(&ca_key_path)?;
        let ca = crate::generate::Ca::from_pem(
            &pemio::origin_of(&ca_path),
            &ca_crt,
            &pemio::origin_of(&ca_key_path),
            &ca_key,
        )?;
        let pem = CaPem {
            cert: ca.cert_pem().into_bytes(),
            key: ca_key,
        };
        let body = ca_secret_body(ca_name, namespace, Some(&pem), None);
        out.push(apply_if_changed(client, namespace, ca_name, "Opaque", &body).await?);
    }
    Ok(out)
}

/// Applies a Secret body unless the Secret already has exactly that type and data.
async fn apply_if_changed(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    body: &Value,
) -> Result<SecretOutcome, CertError> {
    let object = format!("Secret {namespace}/{name}");
    let want: BTreeMap<String, ByteString> =
        serde_json::from_value(body["data"].clone()).unwrap_or_default();
    let want: BTreeMap<String, Vec<u8>> = want.into_iter().map(|(k, v)| (k, v.0)).collect();
    if let Some(existing) = read_secret(client, namespace, name).await?
        && existing.type_.as_deref() == Some(type_)
        && existing.data == want
    {
        return Ok(SecretOutcome {
            object,
            updated: false,
        });
    }
    apply_secret(client, namespace, name, body).await?;
    Ok(SecretOutcome {
        object,
        updated: true,
    })
}
