"""deploy/: the Helm chart, the plain manifests, the Grafana dashboard and the examples.

The chart is rendered by deploy/render_chart.py, a renderer for exactly the template subset the
chart uses, and by Helm's own engine (helm-python-sdk: Helm 4's Go SDK as a C library, since no
helm binary is installable here): the two must give the same objects, under default and
non-default values and another release and namespace, and ``helm lint --strict`` finds nothing.
What holds:

- the chart renders to valid objects of the expected kinds, and equals deploy/manifests, so the
  two never drift; every reference inside resolves (service account, ConfigMap, roles, ports,
  selectors), also under another release name and namespace;
- built-in objects have the structure of the Kubernetes API (kubernetes-asyncio's models: no
  unknown field, required fields present, types right); the security context is the restricted
  one; the container's command line parses with the real CLI and its environment is what the
  service's settings read; probes and the scrape path are routes the service serves;
- the RBAC grants equal deploy/rbac.yaml's (or the agreed list while that file is not there);
- every metric the dashboard queries exists in ``ServiceMetrics`` with the labels it uses, and
  every query parses (promtool);
- the examples validate against the real CRD schemas (../shared/crds).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from autoscaler.cli import build_parser
from autoscaler.config import parse_policy
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.testing.fake_kube import shared_crd_dir
from autoscaler.testing.fake_kube.schema import apply_defaults, load_crds, prune, validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "kserve-autoscaler"
MANIFESTS = DEPLOY / "manifests"
DASHBOARD = DEPLOY / "grafana" / "kserve-autoscaler.json"
EXAMPLES = DEPLOY / "examples"
RELEASE = NAMESPACE = "kserve-autoscaler"


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_chart", DEPLOY / "render_chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rc = _load_renderer()


def render(**values: Any) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = rc.render(
        CHART, release=RELEASE, namespace=NAMESPACE, values=values
    )
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def load_yaml_dir(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        out.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return out


def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; in CI a missing prerequisite is a failure."""
    if "CI" in os.environ:
        pytest.fail(reason)
    pytest.skip(reason)


# --- the renderer itself ----------------------------------------------------------------------


def _render_text(tmp_path: Path, template: str, values: str = "x: 1\n") -> str:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 1.0.0\n")
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "templates" / "t.yaml").write_text(template)
    files: dict[str, str] = rc.render_files(tmp_path, release="r", namespace="n")
    return files.get("templates/t.yaml", "")


def test_renderer_trims_whitespace_and_indents_like_helm(tmp_path: Path) -> None:
    template = (
        "a:\n  {{- toYaml .Values.m | nindent 2 }}\n"
        "b: {{ .Values.s | quote }}\n"
        "c: {{ .Values.f | quote }}\n"
        "{{- /* gone */ -}}\n"
        "\nd: {{ .Release.Name }}-{{ .Release.Namespace }}-{{ .Chart.Name }}\n"
    )
    values = "m: {k: v, j: [1, 2]}\ns: 'a \"b\"'\nf: false\n"
    assert _render_text(tmp_path, template, values) == (
        'a:\n  j:\n  - 1\n  - 2\n  k: v\nb: "a \\"b\\""\nc: "false"d: r-n-t\n'
    )


def test_renderer_if_else_follows_go_truthiness(tmp_path: Path) -> None:
    template = (
        "{{- if .Values.a }}a{{ else }}no-a{{ end }} "
        "{{ if .Values.b }}b{{ else }}no-b{{ end }} "
        "{{ if .Values.c }}c{{ end }}"
    )
    assert _render_text(tmp_path, template, "a: {}\nb: [0]\nc: 0\n") == "no-a b "


def test_renderer_include_of_a_define(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "_h.tpl").write_text(
        '{{- define "lbl" -}}\nname: {{ .Release.Name }}\n{{- end }}\n'
    )
    text = _render_text(tmp_path, 'labels:\n  {{- include "lbl" . | nindent 2 }}\n')
    assert yaml.safe_load(text) == {"labels": {"name": "r"}}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .Values.missing }}", "templates/t.yaml:1: .Values.missing is not set"),
        ("x\n{{ .Values.x | upper }}", "templates/t.yaml:2: function 'upper' is outside"),
        ("{{ range .Values.x }}{{ end }}", "is outside the renderer's subset"),
        ("{{ if .Values.x }}", "block never ends"),
        ("{{ end }}", "end without a block"),
        ('{{ include "nope" . }}', "no template named 'nope'"),
        ("{{ .Values }}", "cannot print dict directly"),
    ],
)
def test_renderer_rejects_what_it_does_not_know(
    tmp_path: Path, template: str, message: str
) -> None:
    with pytest.raises(rc.ChartError, match=re.escape(message)):
        _render_text(tmp_path, template)


def test_renderer_compare_names_the_differences() -> None:
    ours = render()
    theirs = copy.deepcopy(ours)
    theirs[0]["metadata"]["labels"]["extra"] = "1"
    dropped = theirs.pop()
    problems = rc.compare(ours, theirs)
    assert f"differs: {key(ours[0])}" in problems
    assert f"only in ours: {key(dropped)}" in problems
    assert rc.compare(ours, copy.deepcopy(ours)) == []


# --- the chart ---------------------------------------------------------------------------------

BASE_KINDS = {
    "Deployment",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "PodDisruptionBudget",
}


def test_chart_renders_the_expected_kinds() -> None:
    objects = render()
    assert {o["kind"] for o in objects} == BASE_KINDS
    assert len(objects) == len(BASE_KINDS)
    for o in objects:
        assert o["apiVersion"] and o["kind"] and o["metadata"]["name"]
    with_monitor = render(serviceMonitor={"enabled": True})
    assert {o["kind"] for o in with_monitor} == BASE_KINDS | {"ServiceMonitor"}


def test_chart_metadata_matches_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert chart["appVersion"] == project["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["image"]["tag"] == chart["appVersion"]


def test_plain_manifests_equal_the_rendered_chart() -> None:
    manifests = load_yaml_dir(MANIFESTS)
    namespaces = by_kind(manifests, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    rendered = {key(o): o for o in render()}
    plain = {key(o): o for o in manifests if o["kind"] != "Namespace"}
    assert sorted(plain) == sorted(rendered)
    for k, obj in rendered.items():
        assert plain[k] == obj, f"deploy/manifests differ from the chart for {k}"
    monitoring = load_yaml_dir(MANIFESTS / "monitoring")
    assert monitoring == by_kind(render(serviceMonitor={"enabled": True}), "ServiceMonitor")


def _helm() -> ModuleType:
    """Helm's own engine (helm-python-sdk, a test dependency): skipped on a developer machine
    without it, a failure in CI."""
    try:
        import helm_python
    except ImportError:
        skip_or_fail("helm-python-sdk is not installed (pip install -e '.[test]')")
    return helm_python


def helm_render(release: str, namespace: str, **values: Any) -> list[dict[str, Any]]:
    """``helm template``, by Helm's own Go engine (helm-python-sdk binds libhelm_c)."""
    helm = _helm()
    files = helm.Chart.load(CHART).render(
        values or None, name=release, namespace=namespace, is_install=True
    )
    objects = []
    for name in sorted(files):
        objects.extend(d for d in yaml.safe_load_all(files[name]) if d)
    return objects


@pytest.mark.parametrize(
    ("release", "namespace", "values"),
    [
        (RELEASE, NAMESPACE, {}),
        (RELEASE, NAMESPACE, {"serviceMonitor": {"enabled": True}}),
        (
            "scaler",
            "ops",
            {
                "replicaCount": 3,
                "dryRun": True,
                "settings": {"namespaces": "llm,batch", "tickSeconds": 2.0},
                "podAnnotations": {"example.com/a": "b"},
                "nodeSelector": {"pool": "system"},
                "tolerations": [{"key": "system", "operator": "Exists"}],
                "priorityClassName": "system-cluster-critical",
                "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            },
        ),
    ],
)
def test_real_helm_renders_exactly_what_the_renderer_renders(
    release: str, namespace: str, values: dict[str, Any]
) -> None:
    """Every other test here reads deploy/render_chart.py's output; this holds it to Helm's."""
    by_helm = {key(o): o for o in helm_render(release, namespace, **values)}
    ours = {
        key(o): o for o in rc.render(CHART, release=release, namespace=namespace, values=values)
    }
    assert sorted(by_helm) == sorted(ours)
    for k, obj in ours.items():
        assert by_helm[k] == obj, f"helm renders {k} differently"


def test_helm_lint_strict_finds_nothing_wrong() -> None:
    helm = _helm()
    report = helm.lint(str(CHART), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # severity 1 is informational ("icon is recommended"); 2 warning, 3 error
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(("release", "namespace"), [(RELEASE, NAMESPACE), ("prod", "ops")])
def test_every_reference_resolves(release: str, namespace: str) -> None:
    objects = rc.render(
        CHART, release=release, namespace=namespace, values={"serviceMonitor": {"enabled": True}}
    )
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for o in objects:
        if o["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert o["metadata"]["namespace"] == namespace, key(o)
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == release

    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in names
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
    assert _selector_matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    pdb = one(objects, "PodDisruptionBudget")
    assert _selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    for constraint in pod["spec"]["topologySpreadConstraints"]:
        assert _selector_matches(constraint["labelSelector"]["matchLabels"], pod_labels)

    for binding_kind, role_kind in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")]:
        binding = one(objects, binding_kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": one(objects, role_kind)["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": pod["spec"]["serviceAccountName"],
                "namespace": namespace,
            }
        ]

    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    service = one(objects, "Service")
    assert _selector_matches(service["spec"]["selector"], pod_labels)
    assert {p["name"]: (p["port"], ports[p["targetPort"]]) for p in service["spec"]["ports"]} == {
        "http": (8080, 8080),
        "grpc": (9090, 9090),
    }
    monitor = one(objects, "ServiceMonitor")
    assert _selector_matches(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert service_ports >= {"http"}

    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AUTOSCALER_LEASE_NAME"]["value"] == release


def test_deployment_runs_two_replicas_with_leader_election_and_probes() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    c = container(objects)
    assert c["command"] + c["args"] == [
        "autoscaler",
        "run",
        "--config",
        "/etc/autoscaler/policy.yaml",
        "--listen",
        ":8080",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert {e: env[e]["value"] for e in ("AUTOSCALER_TICK_SECONDS", "AUTOSCALER_DRY_RUN")} == {
        "AUTOSCALER_TICK_SECONDS": "5",
        "AUTOSCALER_DRY_RUN": "false",
    }
    assert "AUTOSCALER_NAMESPACES" in env
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert set(c["resources"]) == {"requests", "limits"}
    for part in ("requests", "limits"):
        assert set(c["resources"][part]) == {"cpu", "memory"}
    pod = deployment["spec"]["template"]["spec"]
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    # The policy directory is mounted whole (a subPath mount would never see an update).
    mount = next(m for m in c["volumeMounts"] if m["name"] == "policy")
    assert mount == {"name": "policy", "mountPath": "/etc/autoscaler", "readOnly": True}


def test_values_switch_what_they_say() -> None:
    objects = render(
        dryRun=True,
        settings={"namespaces": "llm,batch", "tickSeconds": 2.0},
        podAnnotations={"example.com/a": "b"},
        nodeSelector={"pool": "system"},
        tolerations=[{"key": "system", "operator": "Exists"}],
        priorityClassName="system-cluster-critical",
        serviceMonitor={"enabled": True, "labels": {"release": "prometheus"}},
    )
    pod = one(objects, "Deployment")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AUTOSCALER_DRY_RUN"] == "true"
    assert env["AUTOSCALER_NAMESPACES"] == "llm,batch"
    assert env["AUTOSCALER_TICK_SECONDS"] == "2"
    assert pod["metadata"]["annotations"] == {"example.com/a": "b"}
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"] == [{"key": "system", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert one(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    defaults = one(render(), "Deployment")["spec"]["template"]
    assert "annotations" not in defaults["metadata"]
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(defaults["spec"])


def test_the_command_line_parses_and_the_environment_is_what_the_service_reads() -> None:
    c = container(render())
    args = build_parser().parse_args(c["args"])
    assert args.func.__name__ == "cmd_run"
    assert args.config == "/etc/autoscaler/policy.yaml"
    settings_source = (ROOT / "autoscaler" / "service" / "settings.py").read_text(encoding="utf-8")
    read = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', settings_source))
    assert {e["name"] for e in c["env"]} <= read


def _service_string_literals() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "autoscaler" / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_probe_and_scrape_paths_are_routes_of_the_service() -> None:
    objects = render(serviceMonitor={"enabled": True})
    c = container(objects)
    paths = {c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]}
    paths |= {e["path"] for e in one(objects, "ServiceMonitor")["spec"]["endpoints"]}
    assert paths == {"/healthz", "/readyz", "/metrics"}
    assert paths <= _service_string_literals()


def test_security_context_is_restricted() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    # A writable /tmp on an emptyDir, since the root filesystem is read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in container(objects)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_configmap_policy_is_llm_chat_and_validates() -> None:
    objects = render()
    data = one(objects, "ConfigMap")["data"]
    assert list(data) == ["policy.yaml"]
    text = data["policy.yaml"]
    assert text == (ROOT / "policies" / "llm-chat.yaml").read_text(encoding="utf-8"), (
        "run deploy/sync_policy.py"
    )
    policy = parse_policy(text, "configmap:policy.yaml")
    assert [t.name for t in policy.spec.targets] == ["chat"]


def test_configmap_carries_a_custom_policy_verbatim() -> None:
    text = (ROOT / "policies" / "sklearn-scale-to-zero.yaml").read_text(encoding="utf-8")
    data = one(render(policy=text), "ConfigMap")["data"]
    assert data["policy.yaml"] == text
    parse_policy(data["policy.yaml"])


# --- RBAC --------------------------------------------------------------------------------------

#: (scope: cluster | namespace, apiGroup, resource, verb, resourceNames joined by commas)
Grant = tuple[str, str, str, str, str]

#: The agreed least-privilege list (the actuators issue), used while deploy/rbac.yaml is absent.
AGREED: dict[str, list[tuple[str, str, list[str]]]] = {
    "cluster": [
        ("", "pods", ["get", "list", "watch"]),
        ("apps", "deployments", ["get", "list", "watch"]),
        ("apps", "deployments/scale", ["get", "patch"]),
        ("serving.knative.dev", "revisions", ["get", "list", "watch", "patch"]),
        ("serving.knative.dev", "services", ["get", "list", "watch"]),
        ("autoscaling.internal.knative.dev", "podautoscalers", ["get", "list", "watch", "patch"]),
        ("serving.kserve.io", "inferenceservices", ["get", "list", "watch", "patch"]),
        ("keda.sh", "scaledobjects", ["get", "list", "watch", "patch"]),
        ("", "events", ["create", "patch"]),
        ("", "configmaps", ["get", "create", "patch"]),
    ],
    "namespace": [("coordination.k8s.io", "leases", ["get", "create", "update"])],
}


def grants(objects: list[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for o in objects:
        scope = {"ClusterRole": "cluster", "Role": "namespace"}.get(o["kind"])
        if scope is None:
            continue
        for rule in o.get("rules") or []:
            names = ",".join(sorted(rule.get("resourceNames") or []))
            resources = list(rule.get("resources") or []) + list(rule.get("nonResourceURLs") or [])
            for group in rule.get("apiGroups") or [""]:
                for resource in resources:
                    for verb in rule["verbs"]:
                        out.add((scope, group, resource, verb, names))
    return out


def test_rbac_is_the_agreed_least_privilege() -> None:
    rendered = grants(render())
    rbac_file = DEPLOY / "rbac.yaml"
    if rbac_file.exists():
        expected = grants([d for d in yaml.safe_load_all(rbac_file.read_text()) if d])
    else:
        expected = {
            (scope, group, resource, verb, "")
            for scope, rules in AGREED.items()
            for group, resource, verbs in rules
            for verb in verbs
        }
    assert rendered == expected, (
        f"missing: {sorted(expected - rendered)}; extra: {sorted(rendered - expected)}"
    )
    # No wildcard, and nothing that would let the service read secrets or escalate.
    assert not [g for g in rendered if "*" in g[1:4]]
    assert not [g for g in rendered if g[2] in {"secrets", "roles", "clusterroles", "pods/exec"}]


# --- structure of built-in objects (kubernetes-asyncio's models) --------------------------------

MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}
_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "datetime": str,
    "object": object,
}


def build_model(data: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """Build the kubernetes-asyncio model of ``data``: unknown fields, wrong types and missing
    required fields (the constructors check those) go into ``problems`` with their path."""
    if type_name.startswith("list["):
        if not isinstance(data, list):
            problems.append(f"{path}: expected a list, got {data!r}")
            return None
        return [
            build_model(x, type_name[5:-1], f"{path}[{i}]", problems) for i, x in enumerate(data)
        ]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        if not isinstance(data, dict):
            problems.append(f"{path}: expected an object, got {data!r}")
            return None
        return {k: build_model(v, inner, f"{path}.{k}", problems) for k, v in data.items()}
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if not isinstance(data, expected) or (isinstance(data, bool) and type_name != "bool"):
            problems.append(f"{path}: expected {type_name}, got {data!r}")
        return data
    cls = getattr(k8s, type_name)
    if not isinstance(data, dict):
        problems.append(f"{path}: expected {type_name}, got {data!r}")
        return None
    fields = {json_name: py for py, json_name in cls.attribute_map.items()}
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            problems.append(f"{path}.{name}: unknown field of {type_name}")
            continue
        py = fields[name]
        kwargs[py] = build_model(value, cls.openapi_types[py], f"{path}.{name}", problems)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None


def structure_problems(obj: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    type_name = MODELS[(obj["apiVersion"], obj["kind"])]
    build_model(obj, type_name, obj["kind"], problems)
    return problems


def test_built_in_objects_have_the_api_structure() -> None:
    objects = render() + load_yaml_dir(MANIFESTS)
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in MODELS:
            assert structure_problems(obj) == [], key(obj)
            checked += 1
    assert checked == len(objects)


def test_the_structure_check_catches_typos_types_and_missing_fields() -> None:
    deployment = copy.deepcopy(one(render(), "Deployment"))
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFileSystem"] = True
    c["env"][0]["value"] = 5
    del c["ports"][0]["containerPort"]
    problems = "\n".join(structure_problems(deployment))
    assert "securityContext.readOnlyRootFileSystem: unknown field" in problems
    assert "env[0].value: expected str, got 5" in problems
    assert "ports[0]: Invalid value for `container_port`, must not be `None`" in problems


def test_servicemonitor_has_the_operator_shape() -> None:
    monitor = one(render(serviceMonitor={"enabled": True}), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert re.fullmatch(r"\d+s", endpoint["interval"])


# --- Grafana dashboard -------------------------------------------------------------------------

SCRAPE_LABELS = {"job", "instance", "pod", "namespace", "service", "container", "endpoint"}
REQUIRED_METRICS = {
    "autoscaler_desired_replicas",
    "autoscaler_ready_replicas",
    "autoscaler_current_replicas",
    "autoscaler_token_rate_limit_tokens_per_second",
    "autoscaler_guard_activations_total",
    "autoscaler_signals_stale",
    "autoscaler_source_errors_total",
    "autoscaler_actuation_writes_total",
    "autoscaler_actuation_failures_total",
    "autoscaler_tick_duration_seconds_bucket",
    "autoscaler_leader",
    "autoscaler_config_reloads_total",
}


def exported_series() -> dict[str, set[str]]:
    """Every series name ServiceMetrics exports, with its label names."""
    metrics = ServiceMetrics(CollectorRegistry())
    suffixes = {
        "counter": ["_total", "_created"],
        "gauge": [""],
        "histogram": ["_bucket", "_count", "_sum", "_created"],
    }
    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        family = value.describe()[0]
        labels = set(value._labelnames)
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            out[family.name + suffix] = labels | extra
    return out


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel query and every query variable."""
    for panel in dashboard()["panels"]:
        for t in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} {t['refId']}", t["expr"]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, query
            yield f"variable {var['name']}", inner.group(1)


def test_dashboard_is_importable_json() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "job", "target"}
    for panel in d["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)


def test_dashboard_uses_only_metrics_and_labels_the_service_exports() -> None:
    exported = exported_series()
    used: set[str] = set()
    for where, expr in dashboard_queries():
        names = set(re.findall(r"\b(autoscaler_[a-z0-9_]+)", expr))
        assert names, where
        unknown = names - exported.keys()
        assert not unknown, f"{where}: {sorted(unknown)} not in ServiceMetrics"
        used |= names
        # Labels in each selector belong to that metric; grouping labels to one in the query.
        for name, selector in re.findall(r"\b(autoscaler_[a-z0-9_]+)\{([^}]*)\}", expr):
            labels = set(re.findall(r"(\w+)\s*[=!]~?", selector))
            assert labels <= exported[name] | SCRAPE_LABELS, (where, name, labels)
        allowed = set().union(*(exported[n] for n in names)) | SCRAPE_LABELS
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {g.strip() for g in group.split(",") if g.strip()}
            assert labels <= allowed, (where, labels - allowed)
    assert used >= REQUIRED_METRICS, sorted(REQUIRED_METRICS - used)


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool (Debian package prometheus) is not installed")
    rules = []
    for i, (_where, expr) in enumerate(dashboard_queries()):
        concrete = expr.replace("$__rate_interval", "5m")
        concrete = re.sub(r"\$\w+", ".*", concrete)
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- examples against the real CRDs ------------------------------------------------------------


def crd_schema(group: str, version: str, kind: str) -> Mapping[str, Any]:
    directory = shared_crd_dir()
    if directory is None:
        skip_or_fail("../shared/crds is not there")
    for crd in load_crds(directory):
        if (crd.group, crd.version, crd.kind) == (group, version, kind) and crd.schema:
            return crd.schema
    pytest.fail(f"no CRD schema for {group}/{version} {kind} in {directory}")


def schema_problems(obj: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """What a strict (``fieldValidation=Strict``) create would reject: unknown fields and
    schema violations, after defaulting, as the API server applies them."""
    work = copy.deepcopy(obj)
    problems = [f"unknown field {u}" for u in prune(work, schema)]
    apply_defaults(work, schema)
    problems += [f"{c.field}: {c.message}" for c in validate(work, schema)]
    return problems


def load_example(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text(encoding="utf-8")) if d]
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


def test_example_inferenceservice_validates_against_the_kserve_crd() -> None:
    isvc = load_example("inferenceservice-with-agent.yaml")
    schema = crd_schema("serving.kserve.io", "v1beta1", "InferenceService")
    assert schema_problems(isvc, schema) == []


def test_the_crd_check_catches_a_typo() -> None:
    schema = crd_schema("serving.kserve.io", "v1beta1", "InferenceService")
    isvc = load_example("inferenceservice-with-agent.yaml")
    isvc["spec"]["predictor"]["containers"][0]["readynessProbe"] = {}
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    problems = schema_problems(isvc, schema)
    assert "unknown field spec.predictor.containers[0].readynessProbe" in problems
    assert any(p.startswith("spec.predictor.minReplicas:") for p in problems), problems


def test_example_inferenceservice_routes_through_the_agent() -> None:
    predictor = load_example("inferenceservice-with-agent.yaml")["spec"]["predictor"]
    assert predictor["model"]["modelFormat"]["name"] == "huggingface"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    # KServe routes to the container named transformer-container (collocation); Knative needs
    # exactly one container port in the pod, and the model container declares none.
    assert "ports" not in predictor["model"]
    (agent,) = predictor["containers"]
    assert agent["name"] == "transformer-container"
    assert agent["command"] + agent["args"] == [
        "autoscaler",
        "agent",
        "--upstream",
        "http://127.0.0.1:8080",
        "--listen",
        ":8081",
        "--nvml",
        "--target",
        "llm/chat",
        "--limits-url",
        "http://kserve-autoscaler.kserve-autoscaler.svc:8080",
        "--default-token-rate",
        "2500",
    ]
    # The limits ConfigMap is mounted where the agent reads it by default, optional so the pod
    # starts before the service has written it.
    (mount,) = agent["volumeMounts"]
    assert mount["mountPath"] == "/etc/token-limits"
    (volume,) = [v for v in predictor["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"] == {"name": "kserve-autoscaler-token-limits", "optional": True}
    assert [p["containerPort"] for p in agent["ports"]] == [8081]
    assert agent["ports"][0]["name"] in {"http1", "h2c"}
    assert agent["readinessProbe"]["httpGet"]["port"] == 8081
    assert "nvidia.com/gpu" not in json.dumps(agent["resources"])
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True


def test_example_knative_service_validates_against_the_knative_crd() -> None:
    ksvc = load_example("knative-service.yaml")
    schema = crd_schema("serving.knative.dev", "v1", "Service")
    assert schema_problems(ksvc, schema) == []


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_runs_the_console_script_as_the_manifests_user() -> None:
    steps = dockerfile_instructions()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    (user,) = [a for w, a in final if w == "USER"]
    (entry,) = [json.loads(a) for w, a in final if w == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["autoscaler"] and "autoscaler" in scripts
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    uid = pod["securityContext"]["runAsUser"]
    assert user == f"{uid}:{uid}"
    # The chart and the agent example call the same console script the image puts on PATH.
    assert pod["containers"][0]["command"] == ["autoscaler"]
    (agent,) = load_example("inferenceservice-with-agent.yaml")["spec"]["predictor"]["containers"]
    assert agent["command"] == ["autoscaler"]
    # The image installs the package by its pyproject name, without the test extras.
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert any(w == "RUN" and f"--find-links /wheels {name}" in a for w, a in steps)


def test_dockerignore_keeps_everything_the_image_copies() -> None:
    keep = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = []
    for word, args in dockerfile_instructions():
        if word == "COPY" and not args.startswith("--from"):
            copied += args.split()[:-1]
    assert copied and all(src.rstrip("/") in keep for src in copied), (copied, keep)
    assert all((ROOT / src).exists() for src in copied)
