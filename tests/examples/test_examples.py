"""Examples apply as they are: every object an example under examples/ refers to exists when
the README's operator walkthrough applies it.

An example refers to objects by name: its namespace, a pod's ServiceAccount, ConfigMaps and
Secrets (volumes, projected sources, env, envFrom, image pull secrets), a StatefulSet's
governing Service (serviceName), a claim template's StorageClass; a PoolPolicy (and so the
chart's rendered policy, and a Helm values file's) adds its sidecar's ConfigMaps and Secrets,
which every broker pod mounts in the brokers' namespace. Each must be

- defined in the same file, or
- rendered by the chart (tests/chart/kpoolchart.py, with the values the walkthrough's
  `helm install` passes), or
- created by a command in the walkthrough's shell blocks before the brokers are applied
  (`kubectl create namespace|serviceaccount|configmap|secret ...`, `helm install
  --create-namespace`),

so `kubectl apply -f` on a real API server creates every pod (a missing ServiceAccount, for
one, leaves a StatefulSet with no pods: "serviceaccount ... not found"). The walkthrough's
commands are the prerequisites list: a prerequisite only named in prose does not count.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
import kpoolchart  # noqa: E402  (tests/chart: the chart rendered by the real Helm engine)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
README = REPO / "README.md"
WALKTHROUGH = "## Operator walkthrough"

# Kinds without a namespace (the rest are namespaced).
CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "StorageClass", "PriorityClass", "ClusterRole",
    "ClusterRoleBinding", "CustomResourceDefinition", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "IngressClass", "RuntimeClass", "ClusterIssuer",
}
# Every namespace has these without anyone creating them.
BUILT_IN_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


@dataclass(frozen=True, order=True)
class Ref:
    """An object referred to by name: (kind, namespace or "" when cluster-scoped, name)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def ns_of(kind: str, namespace: str | None) -> str:
    return "" if kind in CLUSTER_SCOPED else (namespace or "default")


def defined(doc: dict, default_namespace: str = "default") -> Ref:
    kind = doc["kind"]
    return Ref(kind, ns_of(kind, doc["metadata"].get("namespace") or default_namespace),
               doc["metadata"]["name"])


# ---------------------------------------------------------------------------------------------
# What objects refer to.

def pod_template(doc: dict) -> dict | None:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]
    if kind in WORKLOADS:
        return spec["template"]
    return None


def volume_refs(volumes: list[dict], namespace: str) -> list[Ref]:
    refs = []
    for v in volumes or []:
        if (cm := v.get("configMap")) and not cm.get("optional"):
            refs.append(Ref("ConfigMap", namespace, cm["name"]))
        if (sec := v.get("secret")) and not sec.get("optional"):
            refs.append(Ref("Secret", namespace, sec["secretName"]))
        for src in (v.get("projected") or {}).get("sources") or []:
            if (cm := src.get("configMap")) and not cm.get("optional"):
                refs.append(Ref("ConfigMap", namespace, cm["name"]))
            if (sec := src.get("secret")) and not sec.get("optional"):
                refs.append(Ref("Secret", namespace, sec["name"]))
    return refs


def container_refs(containers: list[dict], namespace: str) -> list[Ref]:
    refs = []
    for c in containers or []:
        for e in c.get("env") or []:
            src = e.get("valueFrom") or {}
            if (r := src.get("configMapKeyRef")) and not r.get("optional"):
                refs.append(Ref("ConfigMap", namespace, r["name"]))
            if (r := src.get("secretKeyRef")) and not r.get("optional"):
                refs.append(Ref("Secret", namespace, r["name"]))
        for e in c.get("envFrom") or []:
            if (r := e.get("configMapRef")) and not r.get("optional"):
                refs.append(Ref("ConfigMap", namespace, r["name"]))
            if (r := e.get("secretRef")) and not r.get("optional"):
                refs.append(Ref("Secret", namespace, r["name"]))
    return refs


def object_refs(doc: dict) -> list[Ref]:
    """Everything a Kubernetes object needs to exist before it works."""
    kind = doc["kind"]
    refs = []
    namespace = ns_of(kind, doc["metadata"].get("namespace"))
    if namespace and namespace not in BUILT_IN_NAMESPACES:
        refs.append(Ref("Namespace", "", namespace))
    if (tpl := pod_template(doc)) is not None:
        pod = tpl.get("spec") or {}
        sa = pod.get("serviceAccountName") or pod.get("serviceAccount") or "default"
        if sa != "default":  # every namespace has its own "default"
            refs.append(Ref("ServiceAccount", namespace, sa))
        refs += volume_refs(pod.get("volumes"), namespace)
        refs += container_refs((pod.get("initContainers") or []) + (pod.get("containers") or []),
                               namespace)
        refs += [Ref("Secret", namespace, s["name"]) for s in pod.get("imagePullSecrets") or []]
    if kind == "StatefulSet":
        spec = doc["spec"]
        if spec.get("serviceName"):
            refs.append(Ref("Service", namespace, spec["serviceName"]))
        for claim in spec.get("volumeClaimTemplates") or []:
            if sc := (claim.get("spec") or {}).get("storageClassName"):
                refs.append(Ref("StorageClass", "", sc))
    return refs


def policy_refs(policy: dict, broker_namespaces: set[str]) -> list[Ref]:
    """A pool policy's sidecar volumes, mounted by every broker pod in its own namespace."""
    volumes = (policy.get("sidecar") or {}).get("volumes") or []
    return [r for ns in sorted(broker_namespaces) for r in volume_refs(volumes, ns)]


def broker_namespaces(policy: dict, workloads: list[dict]) -> set[str]:
    """Namespaces of the example workloads this policy treats as brokers."""
    selector = {"matchLabels": policy["brokers"]["selector"]}
    return {ns_of(w["kind"], w["metadata"].get("namespace")) for w in workloads
            if kpoolchart.selector_matches(selector, (pod_template(w).get("metadata") or {})
                                           .get("labels") or {})}


# ---------------------------------------------------------------------------------------------
# What the walkthrough creates, in order.

@dataclass
class Walkthrough:
    created: list[tuple[int, Ref]]          # (step, object)
    applied: dict[str, int]                 # example file -> step of its `kubectl apply -f`
    helm_installs: list[tuple[int, kpoolchart.Rendered]]

    def created_before(self, step: int) -> set[Ref]:
        return {r for s, r in self.created if s < step}

    @property
    def rollout(self) -> int:
        """The first `kubectl apply -f examples/...`: brokers exist from here on."""
        return min(self.applied.values(), default=10**9)


def walkthrough_commands(readme: str) -> list[list[str]]:
    """Every command in the walkthrough's ```sh blocks, split into words (comments, pipes,
    `;`, `&&` and `&` separate commands)."""
    start = readme.index(WALKTHROUGH)
    end = readme.find("\n## ", start + len(WALKTHROUGH))
    section = readme[start:end if end != -1 else len(readme)]
    commands: list[list[str]] = []
    in_sh, pending = False, ""
    for line in section.splitlines():
        if line.startswith("```"):
            in_sh = line.strip() == "```sh" and not in_sh
            continue
        if not in_sh:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for tok in lexer:
            if tok and set(tok) <= set(";&|"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(tok)
        if words:
            commands.append(words)
    return commands


def flag(words: list[str], *names: str) -> tuple[str | None, list[str]]:
    """Removes `NAME VALUE` / `NAME=VALUE` for any of `names`; returns (value, the rest)."""
    value, rest, i = None, [], 0
    while i < len(words):
        w = words[i]
        if w in names and i + 1 < len(words):
            value, i = words[i + 1], i + 2
            continue
        if any(w.startswith(n + "=") for n in names):
            value = w.split("=", 1)[1]
        else:
            rest.append(w)
        i += 1
    return value, rest


CREATE_KINDS = {"namespace": "Namespace", "ns": "Namespace", "serviceaccount": "ServiceAccount",
                "sa": "ServiceAccount", "configmap": "ConfigMap", "cm": "ConfigMap",
                "secret": "Secret"}


def walkthrough(readme: str) -> Walkthrough:
    created: list[tuple[int, Ref]] = []
    applied: dict[str, int] = {}
    installs: list[tuple[int, kpoolchart.Rendered]] = []
    for step, words in enumerate(walkthrough_commands(readme)):
        if words[0] == "kubectl":
            namespace, args = flag(words[1:], "-n", "--namespace")
            args = [a for a in args if not a.startswith("--")] if args[:1] == ["create"] else args
            if args[:1] == ["create"] and len(args) >= 3 and args[1] in CREATE_KINDS:
                kind = CREATE_KINDS[args[1]]
                # `kubectl create secret generic|tls|docker-registry NAME`
                name = args[3] if kind == "Secret" else args[2]
                created.append((step, Ref(kind, ns_of(kind, namespace), name)))
            elif args[:1] == ["apply"]:
                path, _ = flag(args[1:], "-f", "--filename")
                if path and path.startswith("examples/"):
                    applied.setdefault(path.removeprefix("examples/"), step)
        elif words[:2] == ["helm", "install"]:
            namespace, args = flag(words[2:], "-n", "--namespace")
            values_file, args = flag(args, "-f", "--values")
            release, chart = [a for a in args if not a.startswith("-")][:2]
            assert chart == "charts/kpool", f"walkthrough installs an unknown chart: {words}"
            values = yaml.safe_load((REPO / values_file).read_text()) if values_file else {}
            r = kpoolchart.render(f"walkthrough step {step}", values,
                                  namespace=namespace or "default", release=release)
            installs.append((step, r))
            if "--create-namespace" in words:
                created.append((step, Ref("Namespace", "", r.namespace)))
            for o in r.objects:
                created.append((step, defined(o.doc, r.namespace)))
            # The chart's mesh-config Job applies the sidecar's ConfigMap in each broker
            # namespace after the install (kpool-mesh broker-config --apply-configmap).
            for ns, name in mesh_config_targets(r):
                created.append((step, Ref("ConfigMap", ns, name)))
    return Walkthrough(created, applied, installs)


def mesh_config_targets(r: kpoolchart.Rendered) -> list[tuple[str, str]]:
    """(namespace, ConfigMap) pairs the rendered chart's kpool-mesh Jobs apply."""
    targets = []
    for o, _, pod in r.pod_specs():
        for c in pod.get("containers") or []:
            if c.get("command") != ["/usr/local/bin/kpool-mesh"]:
                continue
            name, _ = flag(c.get("args") or [], "--apply-configmap")
            if name:
                targets += [(ns, name) for ns in r.merged["policy"]["brokers"]["namespaces"]]
    return targets


# ---------------------------------------------------------------------------------------------
# The examples.

def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def is_policy(doc: dict) -> bool:
    return doc.get("kind") == "PoolPolicy"


def is_object(doc: dict) -> bool:
    """A Kubernetes object (a pool policy is not one: no metadata, never applied)."""
    return "apiVersion" in doc and "kind" in doc and "metadata" in doc and not is_policy(doc)


def example_workloads() -> list[dict]:
    return [d for p in example_files() for d in docs_of(p)
            if is_object(d) and pod_template(d) is not None]


_walkthrough: Walkthrough | None = None


def the_walkthrough() -> Walkthrough:
    global _walkthrough
    if _walkthrough is None:
        _walkthrough = walkthrough(README.read_text())
    return _walkthrough


def unmet(path: Path) -> list[str]:
    """The references of one example that nothing defines in time, each with who refers."""
    w = the_walkthrough()
    docs = docs_of(path)
    here = {defined(d) for d in docs if is_object(d)}
    # Brokers (and so every reference) exist from the apply of this file on, or, for files
    # the walkthrough never applies (policies, values), from the first apply of an example.
    available = here | w.created_before(w.applied.get(path.name, w.rollout))
    needs: list[tuple[str, Ref]] = []
    workloads = example_workloads()
    for d in docs:
        if is_policy(d):
            namespaces = broker_namespaces(d, workloads)
            assert namespaces, f"{path.name}: no example workload is a broker under this policy"
            needs += [("PoolPolicy sidecar", r) for r in policy_refs(d, namespaces)]
        elif is_object(d):
            needs += [(str(defined(d)), r) for r in object_refs(d)]
        else:
            # Helm values: the policy the chart renders from them.
            installs = [r for _, r in w.helm_installs if r.values == d]
            assert installs, f"{path.name}: Helm values no `helm install -f` of the walkthrough uses"
            for r in installs:
                policy = r.policy()
                needs += [(f"policy rendered from {path.name}", ref)
                          for ref in policy_refs(policy, broker_namespaces(policy, workloads))]
    return sorted({f"{ref} (referred to by {who})" for who, ref in needs if ref not in available})


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_reference_of_an_example_exists_when_it_is_applied(path: Path):
    missing = unmet(path)
    assert not missing, (
        f"examples/{path.name} refers to objects it does not define, the chart does not render "
        f"and no walkthrough command in README.md creates before the brokers are applied:\n  "
        + "\n  ".join(missing))


def test_the_chart_policy_refers_only_to_what_the_walkthrough_creates():
    """`helm install` without -f renders the chart's own default policy; brokers mount its
    sidecar volumes too."""
    w = the_walkthrough()
    assert w.helm_installs, "the walkthrough installs the chart"
    available = w.created_before(w.rollout)
    for _, r in w.helm_installs:
        policy = r.policy()
        missing = [str(ref) for ref in policy_refs(policy, broker_namespaces(policy, example_workloads()))
                   if ref not in available]
        assert not missing, f"{r.case}: the rendered policy's sidecar needs {missing}"


def test_the_mesh_config_job_finds_its_namespaces_at_install():
    """The chart's post-install Job writes the sidecar's ConfigMap into the broker
    namespaces, so the walkthrough creates them before `helm install`."""
    w = the_walkthrough()
    for step, r in w.helm_installs:
        targets = mesh_config_targets(r)
        assert targets, f"{r.case}: the chart renders the broker sidecar's ConfigMap"
        before = w.created_before(step)
        missing = sorted({ns for ns, _ in targets if Ref("Namespace", "", ns) not in before})
        assert not missing, f"{r.case}: namespaces {missing} are created after helm install"


def test_the_checker_sees_what_an_example_lacks():
    """The checker itself: a StatefulSet naming objects nobody creates is reported, one naming
    only what its file defines is not."""
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "x", "namespace": "nowhere"},
           "spec": {"serviceName": "x-headless", "template": {"metadata": {}, "spec": {
               "serviceAccountName": "x", "imagePullSecrets": [{"name": "pull"}],
               "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}},
                                                         {"configMapRef": {"name": "o", "optional": True}}]}],
               "volumes": [{"name": "v", "configMap": {"name": "cm"}},
                           {"name": "p", "projected": {"sources": [{"secret": {"name": "ps"}}]}}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "d"},
                                              "spec": {"storageClassName": "fast"}}]}}
    assert sorted(map(str, object_refs(sts))) == [
        "ConfigMap nowhere/cm", "Namespace nowhere", "Secret nowhere/ps", "Secret nowhere/pull",
        "Secret nowhere/s", "Service nowhere/x-headless", "ServiceAccount nowhere/x",
        "StorageClass fast"]
    commands = walkthrough_commands(
        "## Operator walkthrough\n```sh\nkubectl create namespace a   # comment\n"
        "kubectl -n a create secret generic s --from-file=x=y; kubectl create sa x -n a \\\n"
        "  --dry-run=none\nkubectl apply -f examples/e.yaml && echo ok\n```\n## Next\n"
        "```sh\nkubectl create namespace b\n```\n")
    assert commands == [["kubectl", "create", "namespace", "a"],
                        ["kubectl", "-n", "a", "create", "secret", "generic", "s", "--from-file=x=y"],
                        ["kubectl", "create", "sa", "x", "-n", "a", "--dry-run=none"],
                        ["kubectl", "apply", "-f", "examples/e.yaml"], ["echo", "ok"]]
