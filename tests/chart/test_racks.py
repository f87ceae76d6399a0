"""The chart and racks self-healing: off by default (report only) with no Lease rights;
with `policy.racks.selfHealing` the agent may hold the one Lease `kpool-racks` in the
release namespace and nothing wider, knows its namespace, and the policy says so."""

from __future__ import annotations

import kpoolchart as kc

HEALING = {"policy": {"racks": {"selfHealing": True, "movesPerRun": 4}}}


def lease_role(r: kc.Rendered):
    return r.find("Role", f"{r.fullname}-agent-racks-lease", r.namespace)


def test_off_by_default_grants_no_lease():
    r = kc.render("defaults")
    assert r.policy()["racks"]["selfHealing"] is False
    assert lease_role(r) is None
    assert not [o for o in r.of_kind("RoleBinding") if o.name.endswith("-racks-lease")]


def test_self_healing_grants_exactly_the_racks_lease_in_the_release_namespace():
    r = kc.render("racks-self-healing", HEALING)
    assert r.policy()["racks"] == {
        "rule": "perDimension", "selfHealing": True, "persistPolls": 2, "movesPerRun": 4,
        "maxMovesPerBroker": 5,
        "throttleBytesPerSecond": 52428800,
    }
    role = lease_role(r)
    assert role is not None
    assert role.namespace == r.namespace
    rules = sorted((tuple(x["apiGroups"]), tuple(x["resources"]), tuple(sorted(x["verbs"])),
                    tuple(x.get("resourceNames", []))) for x in role.doc["rules"])
    assert rules == [
        (("coordination.k8s.io",), ("leases",), ("create",), ()),
        (("coordination.k8s.io",), ("leases",), ("get", "update"), ("kpool-racks",)),
    ]
    binding = r.one("RoleBinding", f"{r.fullname}-agent-racks-lease")
    assert binding.namespace == r.namespace
    assert binding.doc["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role.name}
    assert binding.doc["subjects"] == [{"kind": "ServiceAccount", "name": f"{r.fullname}-agent",
                                        "namespace": r.namespace}]
    # The agent learns its namespace (where the Lease lives) from the downward API.
    ds = r.one("DaemonSet", f"{r.fullname}-agent")
    [agent] = [c for c in ds.doc["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_self_healing_values_lint_and_bad_ones_are_refused():
    assert kc.lint(HEALING)["errors"] == []
    for bad in ({"movesPerRun": 0}, {"selfHealing": "yes"}, {"throttle": 1}):
        report = kc.lint({"policy": {"racks": bad}})
        assert report["errors"] or report["messages"], bad
