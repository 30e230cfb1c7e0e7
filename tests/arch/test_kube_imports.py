"""The Kubernetes client is imported through ``autoscaler.kube``, which loads only the
kubernetes-asyncio modules in use (docs/memory.md). Each check that depends on import order runs
in a fresh interpreter: in this one, another test may already have imported the real package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoscaler import kube

ROOT = Path(__file__).resolve().parents[2]

# What the service calls: the four typed API classes autoscaler.kube re-exports.
EXPECTED_APIS = {"apps_v1_api", "coordination_v1_api", "core_v1_api", "custom_objects_api"}


def _python(code: str) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


LOADED = """
    import json, sys
    def loaded(prefix):
        return sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix))
    def report(**extra):
        print(json.dumps({
            "models": loaded("kubernetes_asyncio.client.models."),
            "apis": loaded("kubernetes_asyncio.client.api."),
            **extra,
        }))
"""


def test_importing_the_service_loads_no_model_and_only_the_apis_it_calls() -> None:
    out = _python(
        LOADED
        + """
    import autoscaler.cli, autoscaler.service.app, autoscaler.kube
    import autoscaler.actuators, autoscaler.sources.kube_status, autoscaler.service.leader
    import autoscaler.traffic.rollout.controller, autoscaler.testing.fake_kube
    report(lazy=autoscaler.kube.LAZY)
    """
    )
    assert out["lazy"] is True
    assert out["models"] == []  # the real package __init__ loads ~770 of them
    assert set(out["apis"]) == EXPECTED_APIS  # of 65


def test_lazy_names_are_the_real_objects_and_typed_calls_deserialize() -> None:
    # A typed call (a Deployment's scale, read and patched as the V1Scale model) against the
    # fake API server: the response is deserialized into the real model classes, importing
    # just the models it names.
    out = _python(
        LOADED
        + """
    import asyncio
    import autoscaler.kube as kube
    import kubernetes_asyncio
    from kubernetes_asyncio import client, watch
    from kubernetes_asyncio.client import ApiClient, V1Scale, CoreV1Api
    from kubernetes_asyncio.client.models import V1ObjectMeta
    from autoscaler.service.clock import SystemClock
    from autoscaler.testing.fake_kube import FakeKube

    same = [
        ApiClient is kube.ApiClient,
        CoreV1Api is kube.CoreV1Api,
        client.models.V1Scale is V1Scale,
        client.V1ObjectMeta is V1ObjectMeta,
        isinstance(watch.Watch, type),
    ]
    try:
        client.NoSuchThing
        missing = "no error"
    except AttributeError as e:
        missing = str(e)

    async def main():
        fake = FakeKube(clock=SystemClock())
        await fake.start()
        try:
            fake.seed({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "ns"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            })
            async with fake.api_client() as api:
                apps = kube.AppsV1Api(api)
                before = await apps.read_namespaced_deployment_scale("web", "ns")
                after = await apps.patch_namespaced_deployment_scale(
                    "web", "ns", {"spec": {"replicas": 5}})
                return before, after
        finally:
            await fake.close()

    before, after = asyncio.run(main())
    report(
        same=same,
        missing=missing,
        version=kubernetes_asyncio.__version__,
        all_names=len(client.__all__),
        types=[type(before).__name__, type(before.metadata).__name__, type(before.spec).__name__],
        replicas=[before.spec.replicas, after.spec.replicas],
        name=after.metadata.name,
    )
    """
    )
    assert out["same"] == [True] * 5
    assert "has no attribute 'NoSuchThing'" in str(out["missing"])
    from importlib.metadata import version

    assert out["version"] == version("kubernetes_asyncio")
    assert isinstance(out["all_names"], int) and out["all_names"] > 800
    assert out["types"] == ["V1Scale", "V1ObjectMeta", "V1ScaleSpec"]
    assert out["replicas"] == [2, 5]
    assert out["name"] == "web"
    models = out["models"]
    assert isinstance(models, list)
    assert {"v1_scale", "v1_object_meta", "v1_scale_spec"} <= set(models)
    assert len(models) < 15, models


def test_an_init_that_does_more_than_import_is_run_for_real(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text(
        '"""doc"""\nfrom __future__ import annotations\n__version__ = "1.2"\n'
        "from pkg.a import A\nfrom pkg.b import B as Bee, C\nimport pkg.sub as sub\n"
        '__all__ = ["A", "Bee"]\n'
    )
    names, constants = kube._exports(init)
    assert names == {
        "A": ("pkg.a", "A"),
        "Bee": ("pkg.b", "B"),
        "C": ("pkg.b", "C"),
        "sub": ("pkg.sub", None),
    }
    assert constants == {"__version__": "1.2", "__all__": ["A", "Bee"]}

    for body in (
        "from pkg.a import A\ndef helper():\n    pass\n",
        "from pkg.a import *\n",
        "from .a import A\n",
        "import pkg.a\n",
        "CONFIG = load()\n",
    ):
        init.write_text(body)
        with pytest.raises(ValueError):
            kube._exports(init)


def test_only_autoscaler_kube_imports_kubernetes_asyncio_client() -> None:
    """Importing ``kubernetes_asyncio.client`` before ``autoscaler.kube`` loads everything, so
    the package goes through ``autoscaler.kube`` (config and watch subpackages are fine)."""
    offenders = []
    for path in sorted((ROOT / "autoscaler").rglob("*.py")):
        if path == ROOT / "autoscaler" / "kube.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
                if node.module == "kubernetes_asyncio":
                    modules = [f"kubernetes_asyncio.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for m in modules:
                if m == "kubernetes_asyncio" or m.startswith("kubernetes_asyncio.client"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {m}")
    assert offenders == []
