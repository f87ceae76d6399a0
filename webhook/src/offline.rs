//! `kpool-webhook inject`: inject into manifests on disk, like `istioctl kube-inject`.
//!
//! Pods are injected as the webhook would at admission. A StatefulSet gets what does not
//! depend on the pod's ordinal in its pod template (the rest is filled per pod at
//! admission), or, with `--ordinal N`, becomes a preview of pod N. Other kinds pass
//! through unchanged.

use std::fmt;
use std::sync::Arc;

use kpool_policy::{POD_INDEX_LABEL, Policy};
use serde_json::{Map, Value};

use crate::inject::{Context, Decision, Injector, Outcome, PatchOp, Target};

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Preview StatefulSet pod N instead of injecting the template.
    pub ordinal: Option<u32>,
    /// Namespace for objects that have none.
    pub namespace: Option<String>,
}

/// The injected documents and what to tell the user about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The documents, in input order.
    pub documents: Vec<Value>,
    /// One line per noteworthy fact (skips, pass-throughs, per-pod parts).
    pub notes: Vec<String>,
}

impl Report {
    /// The documents as multi-document YAML.
    pub fn to_yaml(&self) -> Result<String, OfflineError> {
        serde_saphyr::to_string_multiple(&self.documents).map_err(|e| OfflineError::Input {
            message: format!("cannot write YAML: {e}"),
        })
    }
}

/// Why the run produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    #[error("{message}")]
    Input { message: String },
    #[error("{} document(s) cannot be injected:{}", .0.len(), list(.0))]
    Documents(Vec<DocError>),
}

/// One document that cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    /// 1-based document number in the input stream.
    pub index: usize,
    /// `Kind namespace/name`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "document {} ({}): {}",
            self.index, self.object, self.message
        )
    }
}

fn list(errors: &[DocError]) -> String {
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

/// Injects every document of a YAML (or JSON) stream. All or nothing: if any document
/// cannot be injected, no output is produced and every failure is reported.
pub fn inject_stream(input: &str, policy: &Policy, opts: &Options) -> Result<Report, OfflineError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).map_err(|e| OfflineError::Input {
        message: format!("input is not valid YAML: {e}"),
    })?;
    if docs.is_empty() {
        return Err(OfflineError::Input {
            message: "input holds no documents".to_owned(),
        });
    }
    let injector = Injector::new(Arc::new(policy.clone()));
    let mut report = Report {
        documents: Vec::with_capacity(docs.len()),
        notes: Vec::new(),
    };
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let mut ctx = DocCtx {
            index: i + 1,
            injector: &injector,
            opts,
            notes: &mut report.notes,
        };
        match ctx.object(doc) {
            Ok(out) => report.documents.push(out),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(OfflineError::Documents(errors))
    }
}

struct DocCtx<'a> {
    index: usize,
    injector: &'a Injector,
    opts: &'a Options,
    notes: &'a mut Vec<String>,
}

impl DocCtx<'_> {
    fn object(&mut self, doc: Value) -> Result<Value, DocError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let object = describe(&doc);
        let err = |message: String| DocError {
            index: self.index,
            object: object.clone(),
            message,
        };
        if !doc.is_object() {
            return Err(err(format!(
                "expected a Kubernetes object (a mapping with kind), found {}",
                crate::inject::pod::kind_of(&doc)
            )));
        }
        match kind.as_str() {
            "" => Err(err("the object has no kind".to_owned())),
            "Pod" => self.pod(doc, &object),
            "StatefulSet" => self.statefulset(doc, &object),
            "List" => {
                let mut doc = doc;
                let Some(Value::Array(items)) = doc.get_mut("items") else {
                    return Err(err("a List needs an items array".to_owned()));
                };
                let taken = std::mem::take(items);
                let mut out = Vec::with_capacity(taken.len());
                for item in taken {
                    out.push(self.object(item)?);
                }
                doc["items"] = Value::Array(out);
                Ok(doc)
            }
            _ => {
                self.note(
                    &object,
                    "passed through unchanged (kpool injects Pods and StatefulSet pod templates)",
                );
                Ok(doc)
            }
        }
    }

    fn note(&mut self, object: &str, message: &str) {
        self.notes
            .push(format!("document {} ({object}): {message}", self.index));
    }

    fn pod(&mut self, mut doc: Value, object: &str) -> Result<Value, DocError> {
        let ctx = Context {
            namespace: self.opts.namespace.as_deref(),
            target: Target::Pod,
        };
        let outcome = self.run(&doc, ctx, object)?;
        self.apply(&mut doc, &outcome, object)?;
        Ok(doc)
    }

    fn statefulset(&mut self, mut sts: Value, object: &str) -> Result<Value, DocError> {
        let Some(template) = sts
            .pointer("/spec/template")
            .filter(|t| t.is_object())
            .cloned()
        else {
            return Err(DocError {
                index: self.index,
                object: object.to_owned(),
                message: "spec.template: missing (a StatefulSet needs a pod template)".to_owned(),
            });
        };
        let namespace = self
            .opts
            .namespace
            .clone()
            .or_else(|| str_at(&sts, "/metadata/namespace").map(str::to_owned));
        match self.opts.ordinal {
            Some(n) => self.preview_pod(&sts, template, n, namespace.as_deref(), object),
            None => {
                let ctx = Context {
                    namespace: namespace.as_deref(),
                    target: Target::Template,
                };
                let mut template = template;
                let outcome = self.run(&template, ctx, object)?;
                self.apply(&mut template, &outcome, object)?;
                if matches!(
                    outcome.decision,
                    Decision::Inject | Decision::AlreadyInjected
                ) {
                    self.note(
                        object,
                        "pod template injected; filled per pod at admission: zone affinity, rack/zone/broker-id labels and env, advertised listener (use --ordinal N to preview pod N)",
                    );
                }
                sts["spec"]["template"] = template;
                Ok(sts)
            }
        }
    }

    /// The pod the StatefulSet controller would create for `ordinal`, injected.
    fn preview_pod(
        &mut self,
        sts: &Value,
        template: Value,
        ordinal: u32,
        namespace: Option<&str>,
        object: &str,
    ) -> Result<Value, DocError> {
        let sts_name = str_at(sts, "/metadata/name").unwrap_or("pod");
        let name = format!("{sts_name}-{ordinal}");
        let mut pod = Map::new();
        pod.insert("apiVersion".to_owned(), Value::from("v1"));
        pod.insert("kind".to_owned(), Value::from("Pod"));
        let mut meta = match template.get("metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        meta.insert("name".to_owned(), Value::from(name.clone()));
        meta.insert(
            "generateName".to_owned(),
            Value::from(format!("{sts_name}-")),
        );
        if let Some(ns) = namespace {
            meta.insert("namespace".to_owned(), Value::from(ns));
        }
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(l) = labels {
            l.insert(POD_INDEX_LABEL.to_owned(), Value::from(ordinal.to_string()));
            l.insert(
                "statefulset.kubernetes.io/pod-name".to_owned(),
                Value::from(name.clone()),
            );
        }
        pod.insert("metadata".to_owned(), Value::Object(meta));
        pod.insert(
            "spec".to_owned(),
            template
                .get("spec")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
        let pod_ref = format!("{object} pod {name}");
        let injected = self.pod(Value::Object(pod), &pod_ref)?;
        self.note(
            object,
            &format!("previewing pod {name} (--ordinal {ordinal})"),
        );
        Ok(injected)
    }

    fn run(&mut self, doc: &Value, ctx: Context<'_>, object: &str) -> Result<Outcome, DocError> {
        let outcome = self.injector.inject(doc, ctx).map_err(|e| DocError {
            index: self.index,
            object: object.to_owned(),
            message: format!("not a valid pod: {e}"),
        })?;
        match &outcome.decision {
            Decision::Deny(reason) => {
                return Err(DocError {
                    index: self.index,
                    object: object.to_owned(),
                    message: format!("denied: {reason}"),
                });
            }
            Decision::Skip(reason) => self.note(object, &format!("skipped: {reason}")),
            Decision::AlreadyInjected => self.note(object, "already injected, unchanged"),
            Decision::Inject => {}
        }
        for n in &outcome.notes {
            self.note(object, n);
        }
        Ok(outcome)
    }

    fn apply(&mut self, doc: &mut Value, outcome: &Outcome, object: &str) -> Result<(), DocError> {
        apply_patch(doc, &outcome.patch).map_err(|message| DocError {
            index: self.index,
            object: object.to_owned(),
            message,
        })
    }
}

/// Applies kpool's operations with an independent RFC 6902 implementation.
pub fn apply_patch(doc: &mut Value, ops: &[PatchOp]) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    let ops: Vec<Value> = ops.iter().map(PatchOp::to_value).collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| format!("internal error: patch does not encode: {e}"))?;
    json_patch::patch(doc, &patch).map_err(|e| format!("internal error: patch does not apply: {e}"))
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `Kind namespace/name` for messages.
fn describe(doc: &Value) -> String {
    let kind = str_at(doc, "/kind").unwrap_or("object");
    let name = str_at(doc, "/metadata/name")
        .map(str::to_owned)
        .or_else(|| str_at(doc, "/metadata/generateName").map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<no name>".to_owned());
    match str_at(doc, "/metadata/namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
