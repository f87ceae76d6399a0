"""The kpool Helm chart, rendered by the real Helm engine for its defaults and every values
switch: lint clean, every object a valid Kubernetes 1.32 object of its type, the safety
invariants hold, and the rendered policy is accepted by kpool's own policy loader."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from kpoolchart import (CHART_DIR, EXAMPLES, NAMESPACE, REPO, Rendered, deep_merge, default_values, inject_with_policy,
                        lint, namespace_labels, render, selector_matches, tolerates, type_error)

K8S_B_VALUES = yaml.safe_load((EXAMPLES / "values-k8s-b.yaml").read_text())

# name -> (values override, release namespace, release name)
CASES: dict[str, tuple[dict, str, str]] = {
    "defaults": ({}, NAMESPACE, "kpool"),
    "cert-manager": ({"certManager": {"enabled": True}}, NAMESPACE, "kpool"),
    "cert-manager-issuer": ({"certManager": {"enabled": True, "issuerRef": {
        "name": "platform-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}, NAMESPACE, "kpool"),
    "monitoring": ({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                                   "podMonitor": {"enabled": True, "interval": "15s"}}}, NAMESPACE, "kpool"),
    "system-node-critical": ({"agent": {"priorityClass": {"systemNodeCritical": True}}}, NAMESPACE, "kpool"),
    "existing-priority-class": ({"agent": {"priorityClass": {"create": False, "name": "kafka-infra"}}},
                                NAMESPACE, "kpool"),
    "audit-mode": ({"policy": {"mode": "audit"}}, NAMESPACE, "kpool"),
    "delete-after-refusals": ({"policy": {"guard": {"deleteAfterRefusals": 3}}}, NAMESPACE, "kpool"),
    "host-network": ({"agent": {"hostNetwork": True}}, NAMESPACE, "kpool"),
    "no-guard": ({"webhook": {"validating": {"enabled": False}}}, NAMESPACE, "kpool"),
    "strict-guard": ({"webhook": {"validating": {"failurePolicy": "Fail", "timeoutSeconds": 3},
                                  "mutating": {"failurePolicy": "Ignore", "brokersOnly": False},
                                  "excludeNamespaces": ["monitoring", "kube-public"]}}, NAMESPACE, "kpool"),
    "no-rotation": ({"certs": {"rotation": {"enabled": False}}}, NAMESPACE, "kpool"),
    "k8s-b": (K8S_B_VALUES, NAMESPACE, "kpool"),
    "no-proxy-config": ({"proxyConfig": {"enabled": False}}, NAMESPACE, "kpool"),
    "two-broker-namespaces": ({"policy": {"brokers": {"namespaces": ["streaming", "kafka-eu"]}},
                               "proxyConfig": {"configMap": "broker-envoy"}}, NAMESPACE, "kpool"),
    # The broker mesh's control plane: on, in two broker namespaces, with the other cluster's
    # policy, TLS, required anti-affinity and its ServiceMonitor.
    "mesh-control-plane": ({"meshControlPlane": {"enabled": True, "grpcPort": 18001, "metricsPort": 9191,
                                                 "peerClusters": [{"cluster": "k8s-b", "idBase": 100}],
                                                 "tls": {"secretName": "kpool-xds-tls"},
                                                 "antiAffinity": "required"},
                            "policy": {"brokers": {"namespaces": ["streaming", "kafka-eu"]}},
                            "monitoring": {"serviceMonitor": {"enabled": True}}}, NAMESPACE, "kpool"),
    "mesh-control-plane-standalone": ({"meshControlPlane": {"enabled": True, "standalone": True},
                                       "kafka": {"bootstrap": "kafka.streaming.svc:9092"}},
                                      NAMESPACE, "mesh"),
    # Another release name and namespace, a valueless pool taint, another opt-in label,
    # a pinned digest, extra guard allowances: names and selectors follow.
    "custom": ({"image": {"digest": "sha256:" + "ab" * 32, "tag": "0.1.1"},
                "kafka": {"bootstrap": "kafka-0.kafka-headless.platform:9092,kafka-1.kafka-headless.platform:9092"},
                "imagePullSecrets": [{"name": "regcred"}],
                "commonLabels": {"team": "streaming-platform"},
                "webhook": {"replicas": 3, "topologySpread": {"nodes": "ScheduleAnyway"}},
                "agent": {"tolerations": [{"key": "node.kubernetes.io/disk-pressure",
                                           "operator": "Exists", "effect": "NoSchedule"}],
                          "extraArgs": ["--log=debug"]},
                "policy": {"pool": {"taint": {"key": "kafka-only", "value": None, "effect": "NoExecute"},
                                    "nodeLabel": {"key": "pool", "value": "kafka"}},
                           "injection": {"namespaceLabel": {"key": "kafka.example.com/inject", "value": "yes"}},
                           "readiness": {"agentPort": 18475},
                           "guard": {"allowNamespaces": ["node-exporter"],
                                     "allowServiceAccounts": ["logging/fluent-bit"]}}},
               "platform-kafka", "guard"),
}

_cache: dict[str, Rendered] = {}


def rendered(case: str) -> Rendered:
    if case not in _cache:
        values, namespace, release = CASES[case]
        _cache[case] = render(case, values, namespace=namespace, release=release)
    return _cache[case]


ALL = list(CASES)


def webhooks(r: Rendered):
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for o in r.of_kind(kind):
            for w in o.doc["webhooks"]:
                yield o, w


# ---------------------------------------------------------------------------------------------
# Every case.

@pytest.mark.parametrize("case", ALL)
def test_lint_is_clean(case):
    values, namespace, _ = CASES[case]
    report = lint(values, namespace)
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("case", ALL)
def test_every_object_is_a_valid_object_of_its_type(case):
    r = rendered(case)
    assert len(r.objects) >= 12
    errors = [f"{o.ref()}: {err}" for o in r.objects if (err := type_error(o.doc))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("case", ALL)
def test_object_names_are_unique_and_namespaced_objects_are_in_the_release_namespace(case):
    r = rendered(case)
    cluster_scoped = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole",
                      "ClusterRoleBinding", "PriorityClass"}
    seen = set()
    for o in r.objects:
        key = (o.doc["apiVersion"], o.kind, o.namespace, o.name)
        assert key not in seen, f"duplicate {o.ref()}"
        seen.add(key)
        if o.kind in cluster_scoped:
            assert o.namespace is None, o.ref()
        elif o.kind in ("Role", "RoleBinding") and o.name in (f"{r.fullname}-mesh-config",
                                                                f"{r.fullname}-mesh-control-plane"):
            # The mesh-config Job writes the sidecar's ConfigMap where the brokers are; the
            # mesh control plane watches the broker pods there.
            assert o.namespace in r.merged["policy"]["brokers"]["namespaces"], o.ref()
        else:
            assert o.namespace == r.namespace, o.ref()
        assert o.labels.get("app.kubernetes.io/part-of") == "kpool", o.ref()
        assert len(o.name) <= 63, o.ref()


@pytest.mark.parametrize("case", ALL)
def test_webhooks_never_select_kube_system_or_the_release_namespace(case):
    r = rendered(case)
    excluded = {"kube-system", r.namespace} | set(r.merged["webhook"]["excludeNamespaces"])
    label = r.merged["policy"]["injection"]["namespaceLabel"]
    opted_in = {label["key"]: label["value"]}
    found = list(webhooks(r))
    assert found
    for o, w in found:
        sel = w["namespaceSelector"]
        for ns in excluded:
            # Not even when someone labels it for injection.
            assert not selector_matches(sel, namespace_labels(ns, opted_in)), (o.ref(), w["name"], ns)
        assert selector_matches(sel, namespace_labels("streaming", opted_in)), (o.ref(), w["name"])


@pytest.mark.parametrize("case", ALL)
def test_injection_only_in_opted_in_namespaces_and_the_guard_everywhere_else(case):
    r = rendered(case)
    label = r.merged["policy"]["injection"]["namespaceLabel"]
    mutating = r.one("MutatingWebhookConfiguration").doc["webhooks"]
    assert len(mutating) == 1
    sel = mutating[0]["namespaceSelector"]
    assert selector_matches(sel, namespace_labels("streaming", {label["key"]: label["value"]}))
    assert not selector_matches(sel, namespace_labels("streaming"))
    assert not selector_matches(sel, namespace_labels("streaming", {label["key"]: "disabled"}))
    if r.merged["webhook"]["validating"]["enabled"]:
        guard = r.one("ValidatingWebhookConfiguration").doc["webhooks"]
        assert len(guard) == 1
        # The guard must see foreign pods anywhere, labelled namespace or not.
        for ns in ("default", "batch", "monitoring-x", "streaming"):
            assert selector_matches(guard[0]["namespaceSelector"], namespace_labels(ns)), ns
    else:
        assert not r.of_kind("ValidatingWebhookConfiguration")


@pytest.mark.parametrize("case", ALL)
def test_kpool_pods_are_never_sent_to_kpool(case):
    r = rendered(case)
    pod_labels = [(o, meta.get("labels") or {}) for o, meta, _ in r.pod_specs()]
    assert pod_labels
    for o, labels in pod_labels:
        assert labels.get("app.kubernetes.io/part-of") == "kpool", o.ref()
    for cfg, w in webhooks(r):
        for o, labels in pod_labels:
            assert not selector_matches(w["objectSelector"], labels), (cfg.ref(), w["name"], o.ref())


@pytest.mark.parametrize("case", ALL)
def test_webhook_settings(case):
    r = rendered(case)
    wv = r.merged["webhook"]
    svc = r.one("Service", f"{r.fullname}-webhook")
    for cfg, w in webhooks(r):
        mutating = cfg.kind == "MutatingWebhookConfiguration"
        settings = wv["mutating"] if mutating else wv["validating"]
        assert w["admissionReviewVersions"] == ["v1"]
        assert w["sideEffects"] == "None"
        assert w["timeoutSeconds"] == settings["timeoutSeconds"]
        assert w["failurePolicy"] == settings["failurePolicy"]
        assert w["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                               "operations": ["CREATE"] if mutating else ["CREATE", "UPDATE"],
                               "scope": "Namespaced"}]
        if mutating:
            assert w["reinvocationPolicy"] == "IfNeeded"
        client = w["clientConfig"]["service"]
        assert (client["name"], client["namespace"]) == (svc.name, r.namespace)
        assert client["path"] == ("/mutate" if mutating else "/validate")
        assert client["port"] in [p["port"] for p in svc.doc["spec"]["ports"] if p["name"] == "https"]
        assert "caBundle" not in w["clientConfig"], "set by kpool-certs or cert-manager, never by Helm"
        # The broker selector: with brokersOnly, only broker pods depend on the injector.
        broker = dict(r.merged["policy"]["brokers"]["selector"])
        assert selector_matches(w["objectSelector"], broker)
        if mutating:
            other = {"app": "web"}
            assert selector_matches(w["objectSelector"], other) == (not wv["mutating"]["brokersOnly"])


def test_safe_failure_policies_by_default():
    r = rendered("defaults")
    [(_, m)] = [(c, w) for c, w in webhooks(r) if c.kind == "MutatingWebhookConfiguration"]
    [(_, v)] = [(c, w) for c, w in webhooks(r) if c.kind == "ValidatingWebhookConfiguration"]
    assert m["failurePolicy"] == "Fail"
    assert v["failurePolicy"] == "Ignore", "the guard must never block cluster recovery"


@pytest.mark.parametrize("case", ALL)
def test_rbac_has_no_wildcards_and_nothing_to_spare(case):
    r = rendered(case)
    fn = r.fullname
    roles = r.of_kind("Role") + r.of_kind("ClusterRole")
    assert roles
    for o in roles:
        for rule in o.doc["rules"]:
            for k in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(k) or []), (o.ref(), rule)
                assert not any("*" in str(x) for x in rule.get(k) or []), (o.ref(), rule)

    def rules(kind, name):
        o = r.find(kind, name)
        assert o is not None, f"{kind} {name} missing"
        return sorted((tuple(x.get("apiGroups", [])), tuple(x["resources"]), tuple(sorted(x["verbs"])),
                       tuple(x.get("resourceNames", []))) for x in o.doc["rules"])

    agent_rules = [
        (("",), ("pods",), ("get", "list", "watch"), ()),
        (("",), ("nodes",), ("get", "list", "watch"), ()),
        (("apps",), ("daemonsets", "statefulsets"), ("get",), ()),
        (("",), ("pods/eviction",), ("create",), ()),
        (("", "events.k8s.io"), ("events",), ("create", "patch"), ()),
    ]
    if case == "delete-after-refusals":
        agent_rules.append((("",), ("pods",), ("delete",), ()))
    assert rules("ClusterRole", f"{fn}-agent") == sorted(agent_rules)
    secrets = (("",), ("secrets",), ("create", "get", "patch"),
               (f"{fn}-webhook-tls", f"{fn}-webhook-tls-ca"))
    # The mesh-config Job: the sidecar's ConfigMap in each broker namespace, nothing else.
    mesh_roles = [o for o in r.of_kind("Role") if o.name == f"{fn}-mesh-config"]
    broker_namespaces = r.merged["policy"]["brokers"]["namespaces"]
    if r.merged["proxyConfig"]["enabled"]:
        assert sorted(o.namespace for o in mesh_roles) == sorted(broker_namespaces)
        for o in mesh_roles:
            assert sorted((tuple(x.get("apiGroups", [])), tuple(x["resources"]), tuple(sorted(x["verbs"])),
                           tuple(x.get("resourceNames", []))) for x in o.doc["rules"]) == [
                (("",), ("configmaps",), ("create", "patch"), (r.merged["proxyConfig"]["configMap"],))]
    else:
        assert not mesh_roles
    # The mesh control plane: pods, read-only, in each broker namespace; no ClusterRole.
    cp_roles = [o for o in r.of_kind("Role") + r.of_kind("ClusterRole")
                if o.name == f"{fn}-mesh-control-plane"]
    mcp = r.merged["meshControlPlane"]
    if mcp["enabled"] and not mcp["standalone"]:
        assert sorted((o.kind, o.namespace) for o in cp_roles) == sorted(("Role", ns) for ns in broker_namespaces)
        for o in cp_roles:
            assert [(tuple(x["apiGroups"]), tuple(x["resources"]), tuple(sorted(x["verbs"])))
                    for x in o.doc["rules"]] == [(("",), ("pods",), ("list", "watch"))], o.ref()
    else:
        assert not cp_roles
    roles = [o for o in roles if o not in mesh_roles and o not in cp_roles]
    if r.merged["certManager"]["enabled"]:
        assert {o.name for o in roles} == {f"{fn}-agent"}
    else:
        assert rules("Role", f"{fn}-certs") == [secrets]
        assert rules("Role", f"{fn}-certs-bootstrap") == [secrets]
        assert rules("ClusterRole", f"{fn}-certs") == [
            (("admissionregistration.k8s.io",),
             ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
             ("get", "patch"), (f"{fn}-webhook",))]
        assert len(roles) == 4
    # The webhook itself never talks to the API server.
    webhook_sa = r.one("ServiceAccount", f"{fn}-webhook")
    assert webhook_sa.doc["automountServiceAccountToken"] is False
    bound = {s["name"] for b in r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding")
             for s in b.doc["subjects"]}
    assert webhook_sa.name not in bound


@pytest.mark.parametrize("case", ALL)
def test_bindings_bind_rendered_roles_to_rendered_service_accounts(case):
    r = rendered(case)
    for b in r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding"):
        ref = b.doc["roleRef"]
        role = r.find(ref["kind"], ref["name"])
        assert role is not None, f"{b.ref()} binds missing {ref['kind']} {ref['name']}"
        assert role.hooks == b.hooks, f"{b.ref()} and {role.ref()} must exist at the same time"
        for s in b.doc["subjects"]:
            assert s["kind"] == "ServiceAccount" and s["namespace"] == r.namespace, b.ref()
            sa = r.find("ServiceAccount", s["name"], r.namespace)
            assert sa is not None, f"{b.ref()} binds missing ServiceAccount {s['name']}"
            assert sa.hooks == b.hooks, (b.ref(), sa.ref())


@pytest.mark.parametrize("case", ALL)
def test_every_container_has_requests_limits_and_a_locked_down_security_context(case):
    r = rendered(case)
    containers = list(r.containers())
    assert len(containers) >= 2
    for o, pod, c in containers:
        where = f"{o.ref()} container {c['name']}"
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for k in ("cpu", "memory"):
                assert (res.get(part) or {}).get(k), f"{where}: resources.{part}.{k} missing"
        sc = c.get("securityContext") or {}
        psc = pod.get("securityContext") or {}
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("privileged") in (None, False), where
        assert sc.get("capabilities") == {"drop": ["ALL"]}, where
        assert (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        assert c["image"] == expected_image(r), where
        assert c["command"][0].startswith("/usr/local/bin/kpool-"), where
    for o, _, pod in r.pod_specs():
        assert not pod.get("hostPID") and not pod.get("hostIPC"), o.ref()
        assert pod.get("imagePullSecrets", []) == r.merged["imagePullSecrets"], o.ref()


def expected_image(r: Rendered) -> str:
    img = r.merged["image"]
    tag = img["tag"] or helm.Chart.load(str(CHART_DIR)).metadata["appVersion"]
    ref = f"{img['repository']}:{tag}"
    return f"{ref}@{img['digest']}" if img["digest"] else ref


@pytest.mark.parametrize("case", ALL)
def test_agent_daemonset_lands_on_the_pool_only_and_is_reachable_from_brokers(case):
    r = rendered(case)
    pol = r.merged["policy"]
    ds = r.one("DaemonSet", f"{r.fullname}-agent")
    pod = ds.doc["spec"]["template"]["spec"]
    taint = {k: v for k, v in pol["pool"]["taint"].items() if v is not None}
    assert any(tolerates(t, taint) for t in pod["tolerations"]), pod["tolerations"]
    # Only the pool: no blanket toleration that would put agents on every tainted node.
    assert not any(tolerates(t, {"key": "some-other-pool", "effect": "NoSchedule"}) for t in pod["tolerations"])
    label = pol["pool"]["nodeLabel"]
    assert pod["nodeSelector"][label["key"]] == label["value"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    # cgroups, read-only, from the host.
    vols = {v["name"]: v for v in pod["volumes"]}
    [cg] = [m for m in c["volumeMounts"] if m["mountPath"] == "/host/sys/fs/cgroup"]
    assert cg["readOnly"] is True
    assert vols[cg["name"]]["hostPath"]["path"] == "/sys/fs/cgroup"
    host_paths = [v for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == [vols[cg["name"]]], "the cgroup tree is the only host path"
    # Reachable at status.hostIP:<agentPort>, the port kpool-probe asks.
    agent_port = pol["readiness"]["agentPort"]
    [port] = c["ports"]
    assert port["containerPort"] == agent_port
    if r.merged["agent"]["hostNetwork"]:
        assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert "hostPort" not in port
    else:
        assert not pod.get("hostNetwork") and port["hostPort"] == agent_port
    args = c["args"]
    assert args[0] == "run"
    assert f"--listen=0.0.0.0:{agent_port}" in args
    flag = r.merged["kafka"]["bootstrap"]
    if flag:
        assert f"--kafka-bootstrap={flag}" in args
    else:
        assert not [a for a in args if a.startswith("--kafka-bootstrap")]
        assert r.policy()["kafka"]["bootstrap"], "the agent needs a bootstrap from somewhere"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KPOOL_CGROUP_ROOT"] == "/host/sys/fs/cgroup"
    assert "--policy=/etc/kpool/policy/policy.yaml" in args
    policy_mount = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/kpool/policy"][0]
    assert vols[policy_mount["name"]]["configMap"]["name"] == f"{r.fullname}-policy"
    # Priority class: one the chart renders, or an existing one by name.
    pc = r.merged["agent"]["priorityClass"]
    if pc["systemNodeCritical"]:
        assert pod["priorityClassName"] == "system-node-critical"
        assert not r.of_kind("PriorityClass")
    elif pc["create"]:
        cls = r.one("PriorityClass", pod["priorityClassName"])
        assert cls.doc["value"] == pc["value"] and cls.doc["globalDefault"] is False
        assert cls.doc["preemptionPolicy"] == "Never", "the agent never preempts a broker by default"
    else:
        assert pod["priorityClassName"] == pc["name"] and not r.of_kind("PriorityClass")
    assert ds.doc["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}
    probes = (c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"])
    assert all(p["port"] == "http" and p["path"] == "/healthz" for p in probes)


@pytest.mark.parametrize("case", ALL)
def test_webhook_deployment_is_highly_available_and_drains_gracefully(case):
    r = rendered(case)
    wv = r.merged["webhook"]
    dep = r.one("Deployment", f"{r.fullname}-webhook")
    spec = dep.doc["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == wv["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selector_matches(spec["selector"], labels)
    pdb = r.one("PodDisruptionBudget", f"{r.fullname}-webhook")
    assert selector_matches(pdb.doc["spec"]["selector"], labels)
    assert pdb.doc["spec"]["maxUnavailable"] == 1
    spread = {t["topologyKey"]: t for t in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == wv["topologySpread"]["nodes"]
    assert spread["kubernetes.io/hostname"]["maxSkew"] == 1
    assert selector_matches(spread["kubernetes.io/hostname"]["labelSelector"], labels)
    assert "topology.kubernetes.io/zone" in spread
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["terminationGracePeriodSeconds"] > wv["shutdownDelaySeconds"] + wv["shutdownGraceSeconds"]
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("tolerations"), "the webhook stays off the Kafka pool"
    [c] = pod["containers"]
    args = c["args"]
    assert args[0] == "serve"
    for a in ("--tls-cert=/etc/kpool/tls/tls.crt", "--tls-key=/etc/kpool/tls/tls.key",
              "--policy=/etc/kpool/policy/policy.yaml", "--audit-log=-",
              "--listen=0.0.0.0:8443", "--metrics-listen=0.0.0.0:9090",
              "--shutdown-delay=5s", "--shutdown-grace=20s"):
        assert a in args, a
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc = r.one("Service", f"{r.fullname}-webhook")
    assert selector_matches({"matchLabels": svc.doc["spec"]["selector"]}, labels)
    for p in svc.doc["spec"]["ports"]:
        assert p["targetPort"] in ports, p
    assert {p["name"]: p["port"] for p in svc.doc["spec"]["ports"]} == {"https": 443, "metrics": 9090}
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    tls = vols[mounts["/etc/kpool/tls"]["name"]]["secret"]["secretName"]
    assert tls == f"{r.fullname}-webhook-tls"
    assert vols[mounts["/etc/kpool/policy"]["name"]]["configMap"]["name"] == f"{r.fullname}-policy"
    # Whoever makes certificates writes exactly the Secret the pods mount.
    if r.merged["certManager"]["enabled"]:
        cert = r.one("Certificate", f"{r.fullname}-webhook")
        assert cert.doc["spec"]["secretName"] == tls
    else:
        job = r.one("Job", f"{r.fullname}-certs")
        assert f"--secret={tls}" in job.doc["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("case", ALL)
def test_hook_jobs_run_as_service_accounts_that_exist_when_they_run(case):
    r = rendered(case)
    jobs = r.of_kind("Job") + r.of_kind("CronJob")
    if r.merged["certManager"]["enabled"]:
        assert {o.name for o in jobs} <= {f"{r.fullname}-mesh-config"}
    if r.merged["proxyConfig"]["enabled"]:
        assert r.find("Job", f"{r.fullname}-mesh-config") is not None
    assert jobs
    for o, _, pod in r.pod_specs():
        if o.kind not in ("Job", "CronJob"):
            continue
        sa = r.find("ServiceAccount", pod["serviceAccountName"], r.namespace)
        assert sa is not None, f"{o.ref()} runs as missing ServiceAccount {pod['serviceAccountName']}"
        if not sa.hooks:
            # A release resource: it exists from the install on, so only post-install/upgrade
            # hooks and non-hook objects may use it.
            assert o.hooks <= {"post-install", "post-upgrade"}, (o.ref(), sa.ref())
        else:
            # A hook resource: created by the same hook event, before the Job.
            assert o.hooks <= sa.hooks, (o.ref(), sa.ref())
            assert sa.hook_weight < o.hook_weight, (o.ref(), sa.ref())
            for kind in ("Role", "RoleBinding"):
                for rb in r.of_kind(kind):
                    if rb.hooks:
                        assert rb.hook_weight < o.hook_weight, rb.ref()
        assert pod["automountServiceAccountToken"] is True, o.ref()
        assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("case", ALL)
def test_certificate_jobs_agree_on_names(case):
    r = rendered(case)
    if r.merged["certManager"]["enabled"]:
        return
    fn, ns = r.fullname, r.namespace
    boot = r.one("Job", f"{fn}-certs-bootstrap")
    assert boot.hooks == {"pre-install"}
    bpod = boot.doc["spec"]["template"]["spec"]
    [create] = bpod["initContainers"]
    [secret] = bpod["containers"]
    assert create["args"][0] == "create" and secret["args"][0] == "secret"
    assert f"--service={fn}-webhook" in create["args"] and f"--namespace={ns}" in create["args"]
    assert f"--name={fn}-webhook-tls" in secret["args"] and f"--ca-secret={fn}-webhook-tls-ca" in secret["args"]
    shared = {m["name"] for m in create["volumeMounts"]} & {m["name"] for m in secret["volumeMounts"]}
    [vol] = [v for v in bpod["volumes"] if v["name"] in shared]
    assert vol["emptyDir"]["medium"] == "Memory", "keys never touch a disk"
    rotate = r.one("Job", f"{fn}-certs")
    assert rotate.hooks == {"post-install", "post-upgrade"}
    rargs = rotate.doc["spec"]["template"]["spec"]["containers"][0]["args"]
    assert rargs[0] == "rotate"
    for a in (f"--namespace={ns}", f"--secret={fn}-webhook-tls", f"--ca-secret={fn}-webhook-tls-ca",
              f"--webhook={fn}-webhook", f"--service={fn}-webhook"):
        assert a in rargs, a
    # The configurations rotate patches are the chart's.
    assert r.one("MutatingWebhookConfiguration").name == f"{fn}-webhook"
    # Same SANs and lifetimes in create and rotate, or rotate would re-issue at once.
    for flag in ("--days=", "--ca-days="):
        assert [a for a in create["args"] if a.startswith(flag)] == [a for a in rargs if a.startswith(flag)]
    crons = r.of_kind("CronJob")
    if r.merged["certs"]["rotation"]["enabled"]:
        [cron] = crons
        cargs = cron.doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert cargs == rargs + ["--no-wait"]
        assert cron.doc["spec"]["concurrencyPolicy"] == "Forbid"
    else:
        assert not crons
    for kind in ("Job", "ServiceAccount", "Role", "RoleBinding"):
        for o in r.of_kind(kind):
            if o.hooks:
                assert "before-hook-creation" in o.annotations["helm.sh/hook-delete-policy"], o.ref()


@pytest.mark.parametrize("case", ALL)
def test_cert_manager_switch(case):
    r = rendered(case)
    cm = r.merged["certManager"]
    configs = r.of_kind("MutatingWebhookConfiguration") + r.of_kind("ValidatingWebhookConfiguration")
    if not cm["enabled"]:
        assert not [o for o in r.objects if o.doc["apiVersion"].startswith("cert-manager.io/")]
        assert all("cert-manager.io/inject-ca-from" not in o.annotations for o in configs)
        return
    cert = r.one("Certificate", f"{r.fullname}-webhook")
    for o in configs:
        assert o.annotations["cert-manager.io/inject-ca-from"] == f"{r.namespace}/{cert.name}"
    svc = f"{r.fullname}-webhook"
    assert f"{svc}.{r.namespace}.svc" in cert.doc["spec"]["dnsNames"]
    assert f"{svc}.{r.namespace}.svc.cluster.local" in cert.doc["spec"]["dnsNames"]
    ref = cert.doc["spec"]["issuerRef"]
    if cm["issuerRef"]:
        assert ref == cm["issuerRef"]
        assert not r.of_kind("Issuer")
    else:
        issuer = r.one("Issuer", ref["name"])
        ca = r.one("Certificate", f"{r.fullname}-ca")
        assert ca.doc["spec"]["isCA"] is True
        assert issuer.doc["spec"]["ca"]["secretName"] == ca.doc["spec"]["secretName"]
        assert r.one("Issuer", ca.doc["spec"]["issuerRef"]["name"]).doc["spec"] == {"selfSigned": {}}


@pytest.mark.parametrize("case", ALL)
def test_monitoring_switches(case):
    r = rendered(case)
    m = r.merged["monitoring"]
    sms, pms = r.of_kind("ServiceMonitor"), r.of_kind("PodMonitor")
    mesh = int(r.merged["meshControlPlane"]["enabled"])
    assert len(sms) == int(m["serviceMonitor"]["enabled"]) * (1 + mesh)
    assert len(pms) == int(m["podMonitor"]["enabled"])
    for sm in sms:
        svc = r.one("Service", sm.name)
        assert sm.name in (f"{r.fullname}-webhook", f"{r.fullname}-mesh-control-plane"), sm.ref()
        assert selector_matches(sm.doc["spec"]["selector"], svc.labels)
        assert sm.doc["spec"]["endpoints"][0]["port"] == "metrics"
        assert m["serviceMonitor"]["labels"].items() <= sm.labels.items()
    for pm in pms:
        ds = r.one("DaemonSet")
        assert selector_matches(pm.doc["spec"]["selector"], ds.doc["spec"]["template"]["metadata"]["labels"])
        port_names = [p["name"] for p in ds.doc["spec"]["template"]["spec"]["containers"][0]["ports"]]
        assert pm.doc["spec"]["podMetricsEndpoints"][0]["port"] in port_names


@pytest.mark.parametrize("case", ALL)
def test_rendered_policy_is_accepted_by_kpools_policy_loader(case):
    r = rendered(case)
    policy = r.policy()
    # What the chart adds to values.policy.
    assert r.namespace in policy["guard"]["allowNamespaces"]
    assert policy["readiness"]["probeImage"] == (r.merged["policy"]["readiness"]["probeImage"] or expected_image(r))
    result = inject_with_policy(r.policy_text())
    assert result.returncode == 0, f"kpool-webhook inject refused the rendered policy:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    # --ordinal 1: the broker StatefulSet's pod kafka-1, as the webhook would admit it.
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["name"] == "kafka-1"
    containers = pod["spec"]["containers"]
    kafka = next(c for c in containers if c["name"] == policy["brokers"]["container"])
    env = {e["name"]: e.get("value") for e in kafka["env"]}
    assert env[policy["identity"]["brokerId"]] == str(policy["brokers"]["idBase"] + 1)
    assert env[policy["identity"]["rack"]] == f"{policy['cluster']}-{policy['zones'][1]}"
    assert any(t.get("key") == policy["pool"]["taint"]["key"] for t in pod["spec"]["tolerations"])
    # ...and what it made is still a valid Pod.
    assert type_error(pod) is None, type_error(pod)
    init = pod["spec"].get("initContainers") or []
    assert any(c.get("image") == policy["readiness"]["probeImage"] for c in init)


# ---------------------------------------------------------------------------------------------
# Particular switches and defaults.

def test_default_policy_is_examples_policy_yaml():
    assert rendered("defaults").policy() == yaml.safe_load((EXAMPLES / "policy.yaml").read_text())


def test_k8s_b_values_render_examples_policy_k8s_b_yaml():
    assert rendered("k8s-b").policy() == yaml.safe_load((EXAMPLES / "policy-k8s-b.yaml").read_text())


def test_policy_k8s_b_differs_from_k8s_a_in_cluster_and_id_base_only():
    a = yaml.safe_load((EXAMPLES / "policy.yaml").read_text())
    b = yaml.safe_load((EXAMPLES / "policy-k8s-b.yaml").read_text())
    assert (b["cluster"], b["brokers"]["idBase"]) == ("k8s-b", 100)
    # The mesh address names the Kafka cluster: the same in both Kubernetes clusters.
    assert a["mesh"] == b["mesh"]
    assert "CLIENT://{mesh_address}:{port}" in b["listener"]["template"]
    b_as_a = json.loads(json.dumps(b))
    b_as_a["cluster"] = a["cluster"]
    b_as_a["brokers"]["idBase"] = a["brokers"]["idBase"]
    assert b_as_a == a
    result = inject_with_policy((EXAMPLES / "policy-k8s-b.yaml").read_text())
    assert result.returncode == 0, result.stderr


def test_audit_mode_reaches_the_policy():
    assert rendered("audit-mode").policy()["mode"] == "audit"
    assert rendered("defaults").policy()["mode"] == "enforce"


def _agent_deletes_pods(r) -> bool:
    role = r.one("ClusterRole", f"{r.fullname}-agent")
    return any("pods" in rule["resources"] and "delete" in rule["verbs"] for rule in role.doc["rules"])


def test_agent_may_delete_pods_only_when_the_policy_opts_in_and_enforces():
    # Opted in, enforce: the rendered policy carries the bound and the agent may delete.
    opted = rendered("delete-after-refusals")
    assert opted.policy()["guard"]["deleteAfterRefusals"] == 3
    assert _agent_deletes_pods(opted)
    # 0 (the default) means never: the field stays out of the policy, and so does delete.
    for case in ("defaults", "audit-mode", "custom", "k8s-b"):
        assert "deleteAfterRefusals" not in rendered(case).policy()["guard"], case
        assert not _agent_deletes_pods(rendered(case)), case
    # Opted in but audit: the agent never deletes, so it may not.
    audit = render("delete-after-refusals-audit",
                   {"policy": {"mode": "audit", "guard": {"deleteAfterRefusals": 3}}})
    assert audit.policy()["guard"]["deleteAfterRefusals"] == 3
    assert not _agent_deletes_pods(audit)


def test_custom_release_names_everything_after_the_release():
    r = rendered("custom")
    assert r.fullname == "guard-kpool"
    assert {o.name for o in r.of_kind("Deployment")} == {"guard-kpool-webhook"}
    pol = r.policy()
    assert pol["guard"]["allowNamespaces"] == ["platform-kafka", "node-exporter"]
    assert pol["guard"]["allowServiceAccounts"] == ["logging/fluent-bit"]
    assert "value" not in pol["pool"]["taint"] or pol["pool"]["taint"]["value"] is None
    ds = r.one("DaemonSet").doc["spec"]["template"]["spec"]
    assert {"key": "kafka-only", "operator": "Exists", "effect": "NoExecute"} in ds["tolerations"]
    assert ds["containers"][0]["args"][-1] == "--log=debug"
    assert r.one("Deployment").doc["spec"]["template"]["metadata"]["labels"]["team"] == "streaming-platform"


def test_validating_webhook_can_be_switched_off_and_guard_policies_set():
    assert not rendered("no-guard").of_kind("ValidatingWebhookConfiguration")
    strict = rendered("strict-guard")
    [v] = strict.one("ValidatingWebhookConfiguration").doc["webhooks"]
    assert v["failurePolicy"] == "Fail" and v["timeoutSeconds"] == 3


def test_policy_change_rolls_webhook_and_agent_pods():
    def checksums(r):
        return {o.kind: o.doc["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]
                for o in r.of_kind("Deployment") + r.of_kind("DaemonSet")}

    a, b = checksums(rendered("defaults")), checksums(rendered("audit-mode"))
    assert a.keys() == {"Deployment", "DaemonSet"}
    assert all(a[k] != b[k] for k in a)
    assert checksums(rendered("monitoring")) == a


@pytest.mark.parametrize("case", ALL)
def test_mesh_config_job_renders_the_policy_into_the_sidecars_configmap(case):
    r = rendered(case)
    job = r.find("Job", f"{r.fullname}-mesh-config")
    if not r.merged["proxyConfig"]["enabled"]:
        assert job is None
        assert not [o for o in r.objects if "mesh-config" in o.name]
        return
    pod = job.doc["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["command"] == ["/usr/local/bin/kpool-mesh"]
    assert c["args"] == ["broker-config", "--policy=/etc/kpool/policy/policy.yaml",
                         f"--apply-configmap={r.merged['proxyConfig']['configMap']}"]
    # It reads the policy the webhook and agent read, and reruns when that changes.
    [v] = pod["volumes"]
    assert v["configMap"]["name"] == f"{r.fullname}-policy"
    assert c["volumeMounts"] == [{"name": "policy", "mountPath": "/etc/kpool/policy", "readOnly": True}]
    webhook = r.one("Deployment", f"{r.fullname}-webhook").doc["spec"]["template"]["metadata"]
    assert (job.doc["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]
            == webhook["annotations"]["checksum/policy"])
    # Bound in every broker namespace, to the Job's own ServiceAccount.
    for ns in r.merged["policy"]["brokers"]["namespaces"]:
        rb = r.find("RoleBinding", f"{r.fullname}-mesh-config", ns)
        assert rb is not None, ns
        assert rb.doc["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                       "namespace": r.namespace}]
    # The default ConfigMap is the one the policy's sidecar mounts.
    if case == "defaults":
        volumes = r.merged["policy"]["sidecar"]["volumes"]
        assert {"name": "kpool-proxy-config", "configMap": {"name": "kpool-proxy-config"}} in volumes


# ---------------------------------------------------------------------------------------------
# The broker mesh's control plane (meshControlPlane).

MESH_CP_CASES = [c for c in ALL if CASES[c][0].get("meshControlPlane", {}).get("enabled")]


@functools.lru_cache(maxsize=None)
def kpool_mesh(*args: str) -> subprocess.CompletedProcess:
    """`cargo run -q -p kpool-mesh -- ARGS`: the binary the chart runs."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is not on PATH: the chart's flags must be checked against kpool-mesh itself"
    return subprocess.run([cargo, "run", "-q", "-p", "kpool-mesh", "--", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, check=False)


def env_of(container: dict) -> dict:
    return {e["name"]: e["value"] for e in container.get("env") or []}


@pytest.mark.parametrize("case", ALL)
def test_mesh_control_plane_renders_nothing_when_disabled(case):
    r = rendered(case)
    mine = [o for o in r.objects if o.labels.get("app.kubernetes.io/component") == "mesh-control-plane"
            or "mesh-control-plane" in o.name or "mesh-peers" in o.name]
    if not r.merged["meshControlPlane"]["enabled"]:
        assert not mine, [o.ref() for o in mine]
        assert "kpool-mesh client-config" not in r.notes
    else:
        assert {o.kind for o in mine} >= {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"}


@pytest.mark.parametrize("case", MESH_CP_CASES)
def test_mesh_control_plane_is_two_replicas_on_two_nodes_behind_a_service(case):
    r = rendered(case)
    m = r.merged["meshControlPlane"]
    name = f"{r.fullname}-mesh-control-plane"
    dep = r.one("Deployment", name)
    spec = dep.doc["spec"]
    labels = spec["template"]["metadata"]["labels"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == m["replicas"] == 2
    assert selector_matches(spec["selector"], labels)
    # No other Deployment's selector takes these pods, nor this one theirs.
    for other in r.of_kind("Deployment"):
        if other.name != name:
            assert not selector_matches(other.doc["spec"]["selector"], labels), other.ref()
            assert not selector_matches(spec["selector"], other.doc["spec"]["template"]["metadata"]["labels"])
    # Replicas on different nodes, hard or soft; a rollout never waits for a node it cannot get.
    anti = pod["affinity"]["podAntiAffinity"]
    rolling = spec["strategy"]["rollingUpdate"]
    if m["antiAffinity"] == "required":
        [term] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (0, 1)
    else:
        [weighted] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        term = weighted["podAffinityTerm"]
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["labelSelector"], labels)
    pdb = r.one("PodDisruptionBudget", name)
    assert pdb.doc["spec"]["minAvailable"] == 1
    assert selector_matches(pdb.doc["spec"]["selector"], labels)
    assert not pod.get("tolerations"), "the control plane stays off the Kafka pool"
    # Probes: ready once the first snapshot is served; alive while the process answers.
    [c] = pod["containers"]
    assert c["command"] == ["/usr/local/bin/kpool-mesh"] and c["args"][0] == "serve"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The flags (by env var) listen where the container ports and the Service point.
    env = env_of(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["KPOOL_MESH_LISTEN"] == f"0.0.0.0:{ports['grpc']}" and ports["grpc"] == m["grpcPort"]
    assert env["KPOOL_MESH_METRICS_LISTEN"] == f"0.0.0.0:{ports['metrics']}" and ports["metrics"] == m["metricsPort"]
    svc = r.one("Service", name)
    assert selector_matches({"matchLabels": svc.doc["spec"]["selector"]}, labels)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc.doc["spec"]["ports"]} == {
        "grpc": (m["grpcPort"], "grpc"), "metrics": (m["metricsPort"], "metrics")}
    # The policy ConfigMap, mounted as the webhook and the agent mount it.
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {mt["mountPath"]: mt for mt in c["volumeMounts"]}
    assert vols[mounts["/etc/kpool/policy"]["name"]]["configMap"]["name"] == f"{r.fullname}-policy"
    assert all(mt["readOnly"] for mt in c["volumeMounts"])
    policies = env["KPOOL_MESH_POLICY"].split(",")
    assert policies[0] == "/etc/kpool/policy/policy.yaml"
    assert env["KPOOL_MESH_KUBERNETES_CLUSTER"] == r.merged["policy"]["cluster"]
    webhook = r.one("Deployment", f"{r.fullname}-webhook").doc["spec"]["template"]["metadata"]
    assert spec["template"]["metadata"]["annotations"]["checksum/policy"] == webhook["annotations"]["checksum/policy"]
    # --kafka-bootstrap as the agent gets it: kafka.bootstrap, else the policy's.
    expected = r.merged["kafka"]["bootstrap"] or ",".join(r.merged["policy"]["kafka"]["bootstrap"])
    assert env["KPOOL_MESH_KAFKA_BOOTSTRAP"] == expected
    peers = m["peerClusters"]
    assert policies[1:] == [f"/etc/kpool/mesh-peers/{p['cluster']}.yaml" for p in peers]
    if peers:
        assert vols[mounts["/etc/kpool/mesh-peers"]["name"]]["configMap"]["name"] == f"{r.fullname}-mesh-peers"
    # TLS: the Secret's files are the flags'.
    if m["tls"]["secretName"]:
        assert vols[mounts["/etc/kpool/xds-tls"]["name"]]["secret"]["secretName"] == m["tls"]["secretName"]
        assert (env["KPOOL_MESH_TLS_CERT"], env["KPOOL_MESH_TLS_KEY"]) == (
            "/etc/kpool/xds-tls/tls.crt", "/etc/kpool/xds-tls/tls.key")
    else:
        assert "KPOOL_MESH_TLS_CERT" not in env
    # The Kubernetes API only when not standalone, and then with a token.
    assert pod["automountServiceAccountToken"] is (not m["standalone"])
    assert (env.get("KPOOL_MESH_STANDALONE") == "true") is m["standalone"]
    assert r.one("ServiceAccount", name).doc["automountServiceAccountToken"] is False
    for ns in r.merged["policy"]["brokers"]["namespaces"]:
        rb = r.find("RoleBinding", name, ns)
        assert (rb is not None) is (not m["standalone"]), ns
        if rb is not None:
            assert rb.doc["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                           "namespace": r.namespace}]
    assert not r.find("ClusterRole", name) and not r.find("ClusterRoleBinding", name)
    # The NOTES show the client bootstrap that reaches this Service.
    assert f"--xds {name}.{r.namespace}.svc:{m['grpcPort']}" in r.notes


def test_mesh_control_plane_env_vars_are_kpool_mesh_serve_flags():
    """Every variable the chart sets is one `kpool-mesh serve` reads (its --help names them)."""
    helptext = kpool_mesh("serve", "--help")
    assert helptext.returncode == 0, helptext.stderr
    for case in MESH_CP_CASES:
        r = rendered(case)
        [c] = r.one("Deployment", f"{r.fullname}-mesh-control-plane").doc["spec"]["template"]["spec"]["containers"]
        for var in env_of(c):
            assert f"env: {var}=" in helptext.stdout, f"{case}: {var} is not a flag of kpool-mesh serve"


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_kpool_mesh_serve_starts_from_the_charts_environment():
    """The rendered container's command and environment, files remapped into a temporary
    directory and ports onto free loopback ones, start `kpool-mesh serve`: alive at once, not
    ready while its Kafka does not answer."""
    import urllib.error
    import urllib.request
    r = rendered("mesh-control-plane-standalone")
    [c] = r.one("Deployment", f"{r.fullname}-mesh-control-plane").doc["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    grpc, metrics = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "policy").mkdir()
        (Path(tmp) / "policy" / "policy.yaml").write_text(r.policy_text())
        env["KPOOL_MESH_POLICY"] = env["KPOOL_MESH_POLICY"].replace("/etc/kpool", tmp)
        env["KPOOL_MESH_LISTEN"] = f"127.0.0.1:{grpc}"
        env["KPOOL_MESH_METRICS_LISTEN"] = f"127.0.0.1:{metrics}"
        env["KPOOL_MESH_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{_free_port()}"
        assert kpool_mesh("--version").returncode == 0  # built
        binary = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug" / "kpool-mesh"
        proc = subprocess.Popen([str(binary), *c["args"]], env={"PATH": os.environ.get("PATH", ""), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def get(path):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}{path}", timeout=2) as resp:
                        return resp.status
                except urllib.error.HTTPError as e:
                    return e.code
                except OSError:
                    return None
            deadline = time.time() + 30
            while get("/healthz") != 200:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.time() < deadline, "kpool-mesh serve did not answer /healthz"
                time.sleep(0.1)
            assert get("/readyz") == 503
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_mesh_peer_policies_are_the_other_clusters_policies():
    # k8s-a's release with k8s-b as its peer renders exactly k8s-b's policy, and back.
    a = render("peer-b", {"meshControlPlane": {"enabled": True, "peerClusters": [{"cluster": "k8s-b", "idBase": 100}]}})
    b = render("peer-a", deep_merge(K8S_B_VALUES, {"meshControlPlane": {
        "enabled": True, "peerClusters": [{"cluster": "k8s-a", "idBase": 0}]}}))
    peer_b = a.one("ConfigMap", "kpool-mesh-peers").doc["data"]["k8s-b.yaml"]
    peer_a = b.one("ConfigMap", "kpool-mesh-peers").doc["data"]["k8s-a.yaml"]
    assert yaml.safe_load(peer_b) == rendered("k8s-b").policy()
    assert yaml.safe_load(peer_a) == rendered("defaults").policy()
    # Namespaces, when given, are the peer's.
    r = rendered("mesh-control-plane")
    peer = yaml.safe_load(r.one("ConfigMap", "kpool-mesh-peers").doc["data"]["k8s-b.yaml"])
    assert peer["brokers"]["namespaces"] == ["streaming", "kafka-eu"]
    # kpool-mesh itself loads the pair (and checks the brokers' ports are disjoint).
    with tempfile.TemporaryDirectory() as tmp:
        pa, pb = Path(tmp) / "a.yaml", Path(tmp) / "b.yaml"
        pa.write_text(a.policy_text())
        pb.write_text(peer_b)
        name = "kpool-mesh-control-plane.kpool-system.svc:18000"
        out = kpool_mesh("client-config", "--policy", str(pa), "--policy", str(pb), "--xds", name,
                         "--format", "json")
        assert out.returncode == 0, out.stderr
        bootstrap = json.loads(out.stdout)
        [xds] = bootstrap["static_resources"]["clusters"]
        address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert (address["address"], address["port_value"]) == ("kpool-mesh-control-plane.kpool-system.svc", 18000)


@pytest.mark.parametrize("values, message", [
    ({"meshControlPlane": {"enabled": True, "peerClusters": [{"cluster": "k8s-a", "idBase": 100}]}},
     "own cluster"),
    ({"meshControlPlane": {"enabled": True, "peerClusters": [{"cluster": "k8s-b", "idBase": 100},
                                                             {"cluster": "k8s-b", "idBase": 200}]}},
     "listed twice"),
    ({"meshControlPlane": {"enabled": True}, "policy": {"kafka": None}}, "no Kafka bootstrap for meshControlPlane"),
])
def test_mesh_control_plane_refuses_what_cannot_work(values, message):
    with pytest.raises(helm.HelmError, match=message):
        render("bad", values)


def test_hooks_only_where_intended():
    r = rendered("defaults")
    hooked = sorted((o.kind, o.name, tuple(sorted(o.hooks))) for o in r.objects if o.hooks)
    assert hooked == sorted([
        ("ServiceAccount", "kpool-certs-bootstrap", ("pre-install",)),
        ("Role", "kpool-certs-bootstrap", ("pre-install",)),
        ("RoleBinding", "kpool-certs-bootstrap", ("pre-install",)),
        ("Job", "kpool-certs-bootstrap", ("pre-install",)),
        ("Job", "kpool-certs", ("post-install", "post-upgrade")),
        ("Job", "kpool-mesh-config", ("post-install", "post-upgrade")),
    ])


def test_notes_tell_the_next_steps():
    notes = rendered("defaults").notes
    assert "kubectl label namespace streaming kpool.io/injection=enabled" in notes
    assert "kpool.io/readiness-override=" in notes
    assert "kubectl taint nodes NODE dedicated=kafka:NoSchedule" in notes
    assert "kubectl -n kpool-system logs deployment/kpool-webhook" in notes
    assert "cert-manager" in rendered("cert-manager").notes


@pytest.mark.parametrize("values, message", [
    ({"webhook": {"mutating": {"failurePolicy": "Maybe"}}}, "failurePolicy"),
    ({"webhook": {"replicas": 0}}, "replicas"),
    ({"webhook": {"resources": {"limits": None}}}, "limits"),
    ({"policy": {"zonez": ["a"]}}, "zonez"),
    ({"policy": {"mode": "warn"}}, "mode"),
    ({"policy": {"pool": {"taint": {"key": "dedicated", "effect": "NoEvict"}}}}, "effect"),
    ({"agent": {"priorityClass": {"value": 2000000000}}}, "value"),
    ({"policy": {"kafka": {"bootstrap": ["no-port"]}}}, "bootstrap"),
    ({"policy": {"kafka": {"bootstrap": []}}}, "bootstrap"),
    ({"policy": {"guard": {"deleteAfterRefusals": -1}}}, "deleteAfterRefusals"),
    ({"policy": {"guard": {"deleteAfterRefusals": "3"}}}, "deleteAfterRefusals"),
    ({"unknownTopLevel": True}, "unknownTopLevel"),
    ({"meshControlPlane": {"antiAffinity": "sometimes"}}, "antiAffinity"),
    ({"meshControlPlane": {"peerClusters": [{"cluster": "k8s-b"}]}}, "idBase"),
    ({"meshControlPlane": {"grpcPort": 0}}, "grpcPort"),
])
def test_schema_refuses_bad_values(values, message):
    with pytest.raises(helm.HelmValuesError, match=message):
        render("bad", values)


def test_agent_without_any_kafka_bootstrap_is_refused():
    with pytest.raises(helm.HelmError, match="no Kafka bootstrap"):
        render("bad", {"policy": {"kafka": None}})
    r = render("flag-only", {"kafka": {"bootstrap": "kafka.streaming.svc:9092"}, "policy": {"kafka": None}})
    assert "kafka" not in r.policy()
    assert "--kafka-bootstrap=kafka.streaming.svc:9092" in r.one("DaemonSet").doc["spec"]["template"]["spec"]["containers"][0]["args"]
    assert inject_with_policy(r.policy_text()).returncode == 0


def test_grace_period_shorter_than_the_drain_is_refused():
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render("bad", {"webhook": {"terminationGracePeriodSeconds": 25}})


# ---------------------------------------------------------------------------------------------
# Documentation and examples.

def _leaf_paths(d: dict, prefix: str = ""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path != "policy":
            yield from _leaf_paths(v, path + ".")
        else:
            yield path


def test_chart_readme_documents_every_value():
    readme = (CHART_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.\[\]]+)` \|", readme, re.M))
    values = default_values()
    leaves = set(_leaf_paths(values))
    missing = {p for p in leaves if not any(p == d or p.startswith(d + ".") for d in documented)}
    assert not missing, f"values not in README.md's table: {sorted(missing)}"

    def exists(path):
        node = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    unknown = {d for d in documented if not exists(d)}
    assert not unknown, f"README.md documents values that do not exist: {sorted(unknown)}"


def test_example_statefulset_is_valid_and_rolls_safely():
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "kafka-statefulset.yaml").read_text()) if d]
    for d in docs:
        assert type_error(d) is None, (d["kind"], type_error(d))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert sts["spec"]["volumeClaimTemplates"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(pdb["spec"]["selector"], labels)
    # It is what the chart's injector selects.
    [(_, m)] = [(c, w) for c, w in webhooks(rendered("defaults")) if c.kind == "MutatingWebhookConfiguration"]
    assert selector_matches(m["objectSelector"], labels)
