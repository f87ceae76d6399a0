"""Rendering the kpool chart with the real Helm engine, and the checks the tests share.

Helm: the PyPI package helm-python-sdk binds Helm's own Go SDK (v4) through ctypes, so
rendering and linting here are what `helm template` / `helm lint` do, offline, with no helm
binary. Kubernetes types: kubernetes-validate checks every object against the Kubernetes
1.32 OpenAPI schema in strict mode (unknown fields are errors), the schema k8s-openapi's
types are generated from.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "kpool"
EXAMPLES = REPO / "examples"
KUBE_VERSION = "1.32"
RELEASE = "kpool"
NAMESPACE = "kpool-system"
HOOK = "helm.sh/hook"

# kubernetes-validate reads its (large) schema files again on every call; they never change.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's coalescing of a values override into defaults (maps merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass
class Obj:
    """One rendered Kubernetes object and the template it came from."""

    doc: dict
    template: str

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.doc["metadata"].get("namespace")

    @property
    def annotations(self) -> dict:
        return self.doc["metadata"].get("annotations") or {}

    @property
    def labels(self) -> dict:
        return self.doc["metadata"].get("labels") or {}

    @property
    def hooks(self) -> set[str]:
        raw = self.annotations.get(HOOK, "")
        return {h.strip() for h in raw.split(",") if h.strip()}

    @property
    def hook_weight(self) -> int:
        return int(self.annotations.get("helm.sh/hook-weight", "0"))

    def ref(self) -> str:
        return f"{self.kind} {self.namespace or ''}/{self.name} ({self.template})"


@dataclass
class Rendered:
    """A chart rendered with one set of values."""

    case: str
    values: dict  # the override passed to Helm
    namespace: str
    release: str
    objects: list[Obj]
    notes: str
    merged: dict = field(default_factory=dict)  # what Helm used: defaults + override

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o.kind == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = [o for o in self.of_kind(kind) if name is None or o.name == name]
        assert len(found) == 1, f"{self.case}: expected one {kind} {name or ''}, found {[o.name for o in found]}"
        return found[0]

    def find(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        for o in self.of_kind(kind):
            if o.name == name and (namespace is None or o.namespace in (None, namespace)):
                return o
        return None

    def policy_text(self) -> str:
        cm = self.one("ConfigMap", f"{self.fullname}-policy")
        return cm.doc["data"]["policy.yaml"]

    def policy(self) -> dict:
        return yaml.safe_load(self.policy_text())

    @property
    def fullname(self) -> str:
        override = self.merged.get("fullnameOverride")
        if override:
            return override
        return self.release if "kpool" in self.release else f"{self.release}-kpool"

    def pod_specs(self) -> Iterator[tuple[Obj, dict, dict]]:
        """Every pod template: (object, pod metadata, pod spec)."""
        for o in self.objects:
            spec = o.doc.get("spec") or {}
            if o.kind in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
                tpl = spec["template"]
            elif o.kind == "CronJob":
                tpl = spec["jobTemplate"]["spec"]["template"]
            else:
                continue
            yield o, tpl.get("metadata") or {}, tpl["spec"]

    def containers(self) -> Iterator[tuple[Obj, dict, dict]]:
        """Every container and init container: (object, pod spec, container)."""
        for o, _, pod in self.pod_specs():
            for c in (pod.get("initContainers") or []) + pod["containers"]:
                yield o, pod, c


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


@functools.lru_cache(maxsize=1)
def default_values() -> dict:
    return chart().values


def render(case: str, values: dict | None = None, *, namespace: str = NAMESPACE,
           release: str = RELEASE) -> Rendered:
    values = values or {}
    manifests = chart().render(values, name=release, namespace=namespace,
                               is_install=True, revision=1)
    objects: list[Obj] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                objects.append(Obj(doc, template))
    merged = deep_merge(default_values(), values)
    return Rendered(case, values, namespace, release, objects, notes, merged)


def lint(values: dict | None, namespace: str = NAMESPACE) -> dict:
    return helm.lint(str(CHART_DIR), values or None, strict=True, namespace=namespace,
                     kube_version=f"v{KUBE_VERSION}.0")


# ---------------------------------------------------------------------------------------------
# Types of rendered objects.

# The custom resources the chart can render have no Kubernetes OpenAPI schema. These are the
# parts of their CRDs' schemas (cert-manager.io/v1, monitoring.coreos.com/v1) the chart uses,
# strict like the Kubernetes ones: a misspelt field fails.
_OBJ = {"type": "object"}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_LABELS = {"type": "object", "additionalProperties": _STR}
_META = {"type": "object", "required": ["name"],
         "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS,
                        "annotations": _LABELS}, "additionalProperties": False}
_SELECTOR = {"type": "object", "additionalProperties": False,
             "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}}}
_NS_SELECTOR = {"type": "object", "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": _STRS}}
_ENDPOINT = {"type": "object", "additionalProperties": False,
             "properties": {"port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": _STR}}
_ISSUER_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
               "properties": {"name": _STR, "kind": _STR, "group": _STR}}
_KEY_USAGES = ["signing", "digital signature", "content commitment", "key encipherment",
               "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
               "decipher only", "any", "server auth", "client auth", "code signing",
               "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
               "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]


def _cr(api_version: str, kind: str, spec: dict) -> dict:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                           "metadata": _META, "spec": spec}}


CRD_SCHEMAS: dict[tuple[str, str], dict] = {
    ("cert-manager.io/v1", "Certificate"): _cr("cert-manager.io/v1", "Certificate", {
        "type": "object", "required": ["issuerRef", "secretName"], "additionalProperties": False,
        "properties": {
            "secretName": _STR, "commonName": _STR, "dnsNames": _STRS, "ipAddresses": _STRS,
            "duration": _STR, "renewBefore": _STR, "isCA": {"type": "boolean"},
            "usages": {"type": "array", "items": {"enum": _KEY_USAGES}},
            "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
                "size": {"type": "integer"}}},
            "issuerRef": _ISSUER_REF}}),
    ("cert-manager.io/v1", "Issuer"): _cr("cert-manager.io/v1", "Issuer", {
        "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
        "properties": {
            "selfSigned": {"type": "object", "additionalProperties": False,
                           "properties": {"crlDistributionPoints": _STRS}},
            "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                   "properties": {"secretName": _STR, "crlDistributionPoints": _STRS,
                                  "ocspServers": _STRS, "issuingCertificateURLs": _STRS}}}}),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _cr("monitoring.coreos.com/v1", "ServiceMonitor", {
        "type": "object", "required": ["selector"], "additionalProperties": False,
        "properties": {"selector": _SELECTOR, "namespaceSelector": _NS_SELECTOR,
                       "endpoints": {"type": "array", "items": _ENDPOINT}, "jobLabel": _STR}}),
    ("monitoring.coreos.com/v1", "PodMonitor"): _cr("monitoring.coreos.com/v1", "PodMonitor", {
        "type": "object", "required": ["selector"], "additionalProperties": False,
        "properties": {"selector": _SELECTOR, "namespaceSelector": _NS_SELECTOR,
                       "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT},
                       "jobLabel": _STR}}),
}


@functools.lru_cache(maxsize=None)
def _validate_json(doc_json: str) -> str | None:
    """None when the object is a valid instance of its type, else why not."""
    doc = json.loads(doc_json)
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        try:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
        except jsonschema.ValidationError as e:
            return f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        return None
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def type_error(doc: dict) -> str | None:
    return _validate_json(json.dumps(doc, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Kubernetes semantics the invariants need.

def tolerates(toleration: dict, taint: dict) -> bool:
    """The scheduler's rule (and kpool's Taint::is_tolerated_by): does this toleration
    tolerate this taint?"""
    effect = toleration.get("effect") or ""
    if effect and effect != taint["effect"]:
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"
    if key != taint["key"]:
        return False
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector against a label set (an absent selector matches everything)."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str, extra: dict | None = None) -> dict:
    """The labels every namespace has (the API server sets kubernetes.io/metadata.name)."""
    return {"kubernetes.io/metadata.name": name, **(extra or {})}


# ---------------------------------------------------------------------------------------------
# The repository's real policy loader.

@dataclass
class InjectResult:
    returncode: int
    stdout: str
    stderr: str


@functools.lru_cache(maxsize=None)
def inject_with_policy(policy_text: str, ordinal: int = 1) -> InjectResult:
    """`cargo run -q -p kpool-webhook -- inject --policy <file> -f examples/kafka-statefulset.yaml`:
    the webhook binary loads the policy with the same loader the server and the agent use."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is not on PATH: the rendered policy must be checked by kpool's own loader"
    digest = hashlib.sha256(policy_text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"kpool-chart-policy-{os.getpid()}-{digest}.yaml"
    path.write_text(policy_text)
    try:
        proc = subprocess.run(
            [cargo, "run", "-q", "-p", "kpool-webhook", "--", "inject", "--policy", str(path),
             "-f", str(EXAMPLES / "kafka-statefulset.yaml"), "--ordinal", str(ordinal)],
            cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    finally:
        path.unlink(missing_ok=True)
    return InjectResult(proc.returncode, proc.stdout, proc.stderr)
