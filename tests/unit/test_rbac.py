"""deploy/rbac.yaml grants exactly the Kubernetes API calls the package makes, and nothing more.

A static scan of ``autoscaler/`` (the service's code; ``testing`` and ``sim`` make no API calls
of the deployed service) finds every kubernetes-asyncio API method it references, called
directly, through ``functools.partial``, or passed on as a bound method (the informers' list
calls, which they also use to watch), and maps each to RBAC's (verb, API group, resource):

- the verb from the method's prefix (``read_``/``get_`` get, ``list_`` list, and watch too when
  called with ``watch=True`` or passed on to an informer, ``create_``, ``patch_``,
  ``replace_`` update, ``delete_``, ``delete_collection_`` deletecollection);
- built-in resources from the method's name and its API class (``CoreV1Api`` "", ``AppsV1Api``
  apps, ``CoordinationV1Api`` coordination.k8s.io, ``EventsV1Api`` events.k8s.io), with
  ``_scale``/``_status`` subresources;
- custom objects (``CustomObjectsApi``) from the ``group`` and ``plural`` arguments: string
  literals, module constants and their attributes (``ISVC.plural``) are resolved; an argument
  the scan cannot resolve (``res.plural`` of a loop variable) is taken from the enclosing
  class's declared ``api_calls`` for that verb, and a class without one fails the test.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "autoscaler"
RBAC = ROOT / "deploy" / "rbac.yaml"
SKIP = ("testing", "sim")

API_GROUPS = {
    "CoreV1Api": "",
    "AppsV1Api": "apps",
    "CoordinationV1Api": "coordination.k8s.io",
    "EventsV1Api": "events.k8s.io",
    "CustomObjectsApi": None,  # from the call's arguments
}
VERB_PREFIXES = (
    ("delete_collection_", "deletecollection"),
    ("list_", "list"),
    ("read_", "get"),
    ("get_", "get"),
    ("create_", "create"),
    ("patch_", "patch"),
    ("replace_", "update"),
    ("delete_", "delete"),
)
#: kubernetes-asyncio's snake_case kind -> RBAC's plural resource (extend when code uses more).
PLURALS = {
    "pod": "pods",
    "config_map": "configmaps",
    "event": "events",
    "lease": "leases",
    "deployment": "deployments",
    "namespace": "namespaces",
    "service": "services",
    "endpoints": "endpoints",
    "replica_set": "replicasets",
    "secret": "secrets",
}
#: (group, plural) argument positions of the CustomObjectsApi methods.
NAMESPACED_CUSTOM = {"group": 0, "plural": 3}
CLUSTER_CUSTOM = {"group": 0, "plural": 2}

Triple = tuple[str, str, str]


def api_methods() -> dict[str, set[str]]:
    """API method name -> the API classes that define it."""
    out: dict[str, set[str]] = {}
    for cls_name in API_GROUPS:
        cls = getattr(k8s, cls_name)
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name.endswith("_with_http_info"):
                continue
            if name.startswith("get_api") or name == "get_code":
                continue
            out.setdefault(name, set()).add(cls_name)
    return out


METHODS = api_methods()


@dataclass(frozen=True)
class CallSite:
    file: str
    line: int
    method: str
    triples: frozenset[Triple]

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.method} -> {sorted(self.triples)}"


def verb_of(method: str) -> tuple[str, str]:
    for prefix, verb in VERB_PREFIXES:
        if method.startswith(prefix):
            return verb, method[len(prefix) :]
    raise AssertionError(f"no RBAC verb for {method}")


def builtin_resource(rest: str) -> str:
    rest = rest.removeprefix("namespaced_").removesuffix("_for_all_namespaces")
    sub = ""
    for suffix in ("_scale", "_status"):
        if rest.endswith(suffix):
            rest, sub = rest[: -len(suffix)], suffix[1:]
    assert rest in PLURALS, f"add the plural of {rest!r} to PLURALS"
    return PLURALS[rest] + (f"/{sub}" if sub else "")


class Scanner:
    """The API call sites of one module."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rel = str(path.relative_to(ROOT))
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.modname = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        self.imported = {
            alias.asname or alias.name
            for node in ast.walk(self.tree)
            if isinstance(node, ast.ImportFrom)
            # the package imports the client through autoscaler.kube (docs/memory.md)
            and ((node.module or "").startswith("kubernetes") or node.module == "autoscaler.kube")
            for alias in node.names
        } & set(API_GROUPS)
        self.parents: dict[ast.AST, ast.AST] = {}
        self.classes: dict[ast.AST, str] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    @property
    def module(self) -> Any:
        """Imported only when a value must be resolved (importing runs the module)."""
        return importlib.import_module(self.modname)

    def enclosing_class(self, node: ast.AST) -> str | None:
        cur: ast.AST | None = node
        while cur is not None:
            if isinstance(cur, ast.ClassDef):
                return cur.name
            cur = self.parents.get(cur)
        return None

    def api_class(self, method: str, line: int) -> str:
        candidates = METHODS[method]
        if self.imported:
            candidates = candidates & self.imported or candidates
        assert len(candidates) == 1, f"{self.rel}:{line}: {method} is ambiguous: {candidates}"
        return next(iter(candidates))

    def resolve(self, expr: ast.expr | None, cls: str | None) -> str | None:
        """A string argument's value, when the scan can know it."""
        try:
            if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
                return expr.value
            if isinstance(expr, ast.Name):
                value = getattr(self.module, expr.id)
            elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
                owner = expr.value.id
                if owner in ("self", "cls") and cls is not None:
                    value = getattr(getattr(self.module, cls), expr.attr)
                else:
                    value = getattr(getattr(self.module, owner), expr.attr)
            else:
                return None
        except AttributeError:
            return None
        return value if isinstance(value, str) else None

    def call_args(self, node: ast.Attribute) -> tuple[list[ast.expr], dict[str, ast.expr], bool]:
        """(positional args, keyword args, passed on as a value) of a referenced API method."""
        parent = self.parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            return list(parent.args), {k.arg: k.value for k in parent.keywords if k.arg}, False
        if (
            isinstance(parent, ast.Call)
            and parent.args
            and parent.args[0] is node
            and ast.unparse(parent.func) in ("partial", "functools.partial")
        ):
            kwargs = {k.arg: k.value for k in parent.keywords if k.arg}
            return list(parent.args[1:]), kwargs, False
        return [], {}, True

    def sites(self) -> Iterator[CallSite]:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Attribute) or node.attr not in METHODS:
                continue
            if isinstance(self.parents.get(node), ast.Attribute):
                continue  # ``x.read_namespaced_pod.__name__`` and the like
            method, line = node.attr, node.lineno
            cls_name = self.api_class(method, line)
            verb, rest = verb_of(method)
            args, kwargs, passed_on = self.call_args(node)
            verbs = {verb}
            watch = kwargs.get("watch")
            if verb == "list" and (
                passed_on or (isinstance(watch, ast.Constant) and watch.value is True)
            ):
                verbs = {"list", "watch"}  # an informer lists, then watches
            group = API_GROUPS[cls_name]
            enclosing = self.enclosing_class(node)
            if group is not None:
                resource = builtin_resource(rest)
                yield CallSite(
                    self.rel, line, method, frozenset((v, group, resource) for v in verbs)
                )
                continue
            yield CallSite(
                self.rel, line, method, self.custom(method, args, kwargs, verbs, enclosing, line)
            )

    def custom(
        self,
        method: str,
        args: list[ast.expr],
        kwargs: dict[str, ast.expr],
        verbs: set[str],
        enclosing: str | None,
        line: int,
    ) -> frozenset[Triple]:
        positions = NAMESPACED_CUSTOM if "namespaced" in method else CLUSTER_CUSTOM
        sub = ""
        for suffix in ("_scale", "_status"):
            if method.endswith(suffix):
                sub = "/" + suffix[1:]

        def arg(name: str) -> ast.expr | None:
            if name in kwargs:
                return kwargs[name]
            i = positions[name]
            return args[i] if i < len(args) else None

        group = self.resolve(arg("group"), enclosing)
        plural = self.resolve(arg("plural"), enclosing)
        if group is not None and plural is not None:
            return frozenset((v, group, plural + sub) for v in verbs)
        # Not knowable here (e.g. ``res.plural`` of a parameter): the class declares its calls.
        declared: Any = getattr(getattr(self.module, enclosing or "", None), "api_calls", None)
        assert declared, (
            f"{self.rel}:{line}: cannot resolve the group/plural of {method}; use constants or "
            "declare api_calls on the class"
        )
        found = frozenset(
            (v, g, r) for (v, g, r) in declared if v in verbs and g not in API_GROUPS.values()
        )
        assert found, f"{self.rel}:{line}: {enclosing}.api_calls declares no {verbs} call"
        return found


def scan() -> list[CallSite]:
    sites: list[CallSite] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in SKIP or "proto" in rel.parts or rel.name == "__main__.py":
            continue
        sites.extend(Scanner(path).sites())
    return sites


def role_rules() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text(encoding="utf-8")) if d]
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def granted() -> set[Triple]:
    return {
        (verb, group, resource)
        for rule in role_rules()
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used() -> set[Triple]:
    return {t for site in scan() for t in site.triples}


def test_the_scan_finds_the_calls_we_know_of() -> None:
    sites = {(s.file.rsplit("/", 1)[1], s.method) for s in scan()}
    for expected in [
        ("kube_status.py", "list_namespaced_pod"),
        ("kube_status.py", "list_namespaced_deployment"),
        ("leader.py", "read_namespaced_lease"),
        ("leader.py", "replace_namespaced_lease"),
        ("keda.py", "patch_namespaced_custom_object"),
        ("tokens.py", "create_namespaced_config_map"),
        ("events.py", "create_namespaced_event"),
    ]:
        assert expected in sites, expected
    pods = next(s for s in scan() if s.method == "list_namespaced_pod")
    assert pods.triples == {("list", "", "pods"), ("watch", "", "pods")}
    keda = {t for s in scan() if s.file.endswith("keda.py") for t in s.triples}
    assert keda == {("get", "keda.sh", "scaledobjects"), ("patch", "keda.sh", "scaledobjects")}


def test_the_role_grants_exactly_what_the_code_calls() -> None:
    code, role = used(), granted()
    listing = "\n".join(str(s) for s in scan())
    assert code == role, (
        f"the code calls but the role lacks: {sorted(code - role)}\n"
        f"the role grants but no code calls: {sorted(role - code)}\n"
        f"call sites:\n{listing}"
    )


def test_resource_names_pin_our_own_objects() -> None:
    from autoscaler.actuators.tokens import CONFIGMAP
    from autoscaler.service.settings import Settings

    named = {
        (rule["resources"][0], verb): tuple(rule.get("resourceNames") or ())
        for rule in role_rules()
        for verb in rule["verbs"]
    }
    assert named[("configmaps", "get")] == named[("configmaps", "patch")] == (CONFIGMAP,)
    assert (
        named[("leases", "get")] == named[("leases", "update")] == (Settings(config="").lease_name,)
    )
    # create cannot be limited by name (RBAC does not know it at admission): no names there.
    assert named[("configmaps", "create")] == named[("leases", "create")] == ()


def test_least_privilege_shape() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text(encoding="utf-8")) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    cluster = next(d for d in docs if d["kind"] == "ClusterRole")
    role = next(d for d in docs if d["kind"] == "Role")
    # Leases only in our own namespace; nothing cluster-wide about them.
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"leases"}
    assert "leases" not in {r for rule in cluster["rules"] for r in rule["resources"]}
    for rule in cluster["rules"] + role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    assert not {"secrets", "pods/exec", "roles", "clusterroles"} & {
        r for rule in cluster["rules"] for r in rule["resources"]
    }
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    for binding in (d for d in docs if d["kind"].endswith("Binding")):
        (subject,) = binding["subjects"]
        assert (subject["name"], subject["namespace"]) == (
            sa["metadata"]["name"],
            sa["metadata"]["namespace"],
        )
