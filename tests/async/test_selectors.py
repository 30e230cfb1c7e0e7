"""Selector targets resolved against the fake Kubernetes API server
(autoscaler/service/selectors.py): each matching object becomes a target with the selector's
config; explicit names win; a failed listing keeps the last resolution; refreshes follow label
changes, the interval and policy reloads; and the live ``Service`` wires it all (before the
first tick, on reload, through the engine's ``set_targets``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.actuators import ApiCaller, RetryPolicy, TokenBucket
from autoscaler.config.loader import parse_policy
from autoscaler.config.models import PolicyFile
from autoscaler.engine import Engine
from autoscaler.service.app import managed_targets, open_service
from autoscaler.service.selectors import API_CALLS, SelectorResolver
from autoscaler.service.settings import Settings
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube

NS = "llm"
KSERVE = "serving.kserve.io"
APP = {"app": "chat"}


def policy_text(labels: str = "chat", *, explicit: str | None = None, kind: str = "") -> str:
    named = (
        f"""
    - kind: InferenceService
      namespace: {NS}
      name: {explicit}
      policy: {{name: static, params: {{replicas: 7}}}}"""
        if explicit
        else ""
    )
    deployment = (
        f"""
    - kind: Deployment
      namespace: {NS}
      selector: {{matchLabels: {{tier: raw}}}}
      policy: {{name: static, params: {{replicas: 2}}}}
      actuation: {{engine: deployment}}"""
        if kind == "Deployment"
        else ""
    )
    return f"""\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: selectors}}
spec:
  targets:
    - kind: InferenceService
      namespace: {NS}
      selector: {{matchLabels: {{app: {labels}}}}}
      policy: {{name: static, params: {{replicas: 3}}}}
      guards: {{maxReplicas: 5}}
      actuation: {{engine: kserve, mode: floor}}{named}{deployment}
"""


def policy(labels: str = "chat", **kw: Any) -> PolicyFile:
    return parse_policy(policy_text(labels, **kw))


def isvc(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{KSERVE}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "labels": dict(labels or {})},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
    }


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    pod = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": pod},
            "template": {
                "metadata": {"labels": pod},
                "spec": {"containers": [{"name": "main", "image": "img"}]},
            },
        },
    }


def set_labels(kube: FakeKube, name: str, labels: dict[str, str]) -> None:
    def change(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"] = labels

    kube.write(KSERVE, "inferenceservices", NS, name, change)


def seed_three(kube: FakeKube) -> None:
    kube.seed(isvc("chat-a", APP))
    kube.seed(isvc("chat-b", {**APP, "size": "8b"}))
    kube.seed(isvc("embed", {"app": "embed"}))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_700_000_000.0)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


@pytest.fixture
def failures() -> list[tuple[tuple[str, str, str], str]]:
    return []


@pytest.fixture
def resolver(
    api: ApiClient, clock: VirtualClock, failures: list[tuple[tuple[str, str, str], str]]
) -> SelectorResolver:
    # One attempt per call: a failure shows at once, with no backoff to advance through.
    caller = ApiCaller(
        clock,
        limiter=TokenBucket(clock, rate=1000, burst=1000),
        retry=RetryPolicy(attempts=1),
        rng=random.Random(1),
    )
    return SelectorResolver(
        api, clock, caller=caller, on_failure=lambda sel, kind: failures.append((sel, kind))
    )


def keys(pairs: list[Any]) -> list[str]:
    return sorted(ref.key for ref, _ in pairs)


# --- the resolver on its own ----------------------------------------------------------------------


async def test_two_matches_of_three_become_two_decided_targets(
    kube: FakeKube, resolver: SelectorResolver, clock: VirtualClock
) -> None:
    seed_three(kube)
    doc = policy()
    assert await resolver.resolve(doc, ()) is True
    pairs = resolver.pairs(doc, ())
    assert keys(pairs) == [f"{NS}/chat-a", f"{NS}/chat-b"]
    for ref, cfg in pairs:
        assert ref.kind == "InferenceService"
        assert cfg is doc.spec.targets[0]  # the selector target's whole config
        assert cfg.guards.max_replicas == 5 and cfg.actuation.engine == "kserve"
    decisions = Engine(pairs).tick(clock.now())
    assert sorted((d.target, d.replicas) for d in decisions) == [
        (f"{NS}/chat-a", 3),
        (f"{NS}/chat-b", 3),
    ]
    # The label selector went to the server (one request, no client-side filtering).
    (req,) = [r for r in kube.requests if r.path.endswith("/inferenceservices")]
    assert req.query["labelSelector"] == "app=chat"


async def test_matches_follow_labels_at_each_refresh(
    kube: FakeKube, resolver: SelectorResolver
) -> None:
    seed_three(kube)
    doc = policy()
    await resolver.resolve(doc, ())
    kube.seed(isvc("chat-c", APP))
    assert await resolver.resolve(doc, ()) is True
    assert keys(resolver.pairs(doc, ())) == [f"{NS}/chat-a", f"{NS}/chat-b", f"{NS}/chat-c"]
    set_labels(kube, "chat-a", {"app": "retired"})
    assert await resolver.resolve(doc, ()) is True
    assert keys(resolver.pairs(doc, ())) == [f"{NS}/chat-b", f"{NS}/chat-c"]
    assert await resolver.resolve(doc, ()) is False  # nothing changed: no re-apply


async def test_an_explicit_name_wins_over_a_match(
    kube: FakeKube, resolver: SelectorResolver, caplog: pytest.LogCaptureFixture
) -> None:
    seed_three(kube)
    doc = policy(explicit="chat-b")
    await resolver.resolve(doc, ())
    pairs = dict((ref.key, cfg) for ref, cfg in resolver.pairs(doc, ()))
    assert sorted(pairs) == [f"{NS}/chat-a", f"{NS}/chat-b"]
    assert pairs[f"{NS}/chat-b"] is doc.spec.targets[1]  # the named target's config
    assert pairs[f"{NS}/chat-a"] is doc.spec.targets[0]
    resolver.pairs(doc, ())
    await resolver.resolve(doc, ())
    resolver.pairs(doc, ())
    conflicts = [r for r in caplog.records if "named explicitly" in r.getMessage()]
    assert len(conflicts) == 1, "a conflict is logged once, not at every refresh"


async def test_a_failed_listing_keeps_the_last_resolution(
    kube: FakeKube,
    resolver: SelectorResolver,
    failures: list[tuple[tuple[str, str, str], str]],
) -> None:
    seed_three(kube)
    doc = policy()
    await resolver.resolve(doc, ())
    set_labels(kube, "chat-a", {})  # would drop chat-a, had the listing answered
    for status, kind in ((500, "transient"), (403, "forbidden"), (429, "rate_limited")):
        kube.fail_next(1, status, verb="list", resource="inferenceservices")
        assert await resolver.resolve(doc, ()) is False
        assert keys(resolver.pairs(doc, ())) == [f"{NS}/chat-a", f"{NS}/chat-b"]
        assert failures[-1] == (("InferenceService", NS, "app=chat"), kind)
    assert resolver.failures == 3
    # The API answers again: the label change is seen.
    assert await resolver.resolve(doc, ()) is True
    assert keys(resolver.pairs(doc, ())) == [f"{NS}/chat-b"]


async def test_a_selector_that_never_listed_has_no_matches_and_others_still_resolve(
    kube: FakeKube, resolver: SelectorResolver
) -> None:
    seed_three(kube)
    kube.seed(deployment("raw-1", {"tier": "raw"}))
    kube.seed(deployment("raw-2", {"tier": "gpu"}))
    doc = policy(kind="Deployment")
    kube.fail_next(1, 404, verb="list", resource="inferenceservices")  # the CRD is missing
    assert await resolver.resolve(doc, ()) is True
    pairs = resolver.pairs(doc, ())
    assert [(ref.kind, ref.key) for ref, _ in pairs] == [("Deployment", f"{NS}/raw-1")]


async def test_listing_pages_through_continue_tokens(
    kube: FakeKube, resolver: SelectorResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autoscaler.service.selectors as selectors

    monkeypatch.setattr(selectors, "PAGE_SIZE", 2)
    for i in range(5):
        kube.seed(isvc(f"chat-{i}", APP))
    doc = policy()
    await resolver.resolve(doc, ())
    assert keys(resolver.pairs(doc, ())) == [f"{NS}/chat-{i}" for i in range(5)]
    assert len([r for r in kube.requests if r.path.endswith("/inferenceservices")]) == 3


async def test_namespaces_out_of_scope_are_not_listed(
    kube: FakeKube, resolver: SelectorResolver
) -> None:
    seed_three(kube)
    doc = policy()
    assert await resolver.resolve(doc, ("other",)) is False
    assert resolver.pairs(doc, ("other",)) == []
    assert kube.requests == []


async def test_the_resolver_needs_only_its_declared_api_calls(
    kube: FakeKube, resolver: SelectorResolver
) -> None:
    seed_three(kube)
    kube.seed(deployment("raw-1", {"tier": "raw"}))
    kube.allow(*API_CALLS)
    doc = policy(kind="Deployment")
    await resolver.resolve(doc, ())
    assert resolver.failures == 0
    assert len(resolver.pairs(doc, ())) == 3
    assert [r for r in kube.requests if r.status == 403] == []


async def test_run_refreshes_every_interval_and_at_once_when_woken(
    resolver: SelectorResolver, clock: VirtualClock
) -> None:
    calls: list[float] = []
    refreshed = asyncio.Event()

    async def refresh() -> None:
        calls.append(clock.now())
        refreshed.set()

    stop = asyncio.Event()
    task = asyncio.create_task(resolver.run(stop, 60.0, refresh))
    await clock.sleeping()
    clock.advance(59.0)
    assert clock.sleepers == 1 and calls == []  # its sleep of 60 s is not over
    clock.advance(1.0)
    await refreshed.wait()
    assert calls == [clock.now()]
    refreshed.clear()
    await clock.sleeping()
    resolver.wake()  # a policy reload: no waiting for the interval
    await refreshed.wait()
    assert len(calls) == 2 and calls[1] == clock.now()
    await clock.sleeping()
    stop.set()
    await task
    assert len(calls) == 2


async def test_run_survives_a_refresh_that_raises(
    resolver: SelectorResolver, clock: VirtualClock
) -> None:
    calls = 0
    second = asyncio.Event()

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        second.set()

    stop = asyncio.Event()
    task = asyncio.create_task(resolver.run(stop, 10.0, refresh))
    for _ in range(2):
        await clock.sleeping()
        clock.advance(10.0)
    await second.wait()
    stop.set()
    await task
    assert calls == 2


def test_without_a_resolver_selector_targets_are_skipped() -> None:
    doc = policy(explicit="chat-b")
    pairs = managed_targets(doc, Settings(config=""))
    assert keys(pairs) == [f"{NS}/chat-b"]


def test_refresh_interval_from_the_environment_and_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import autoscaler.service.app as app
    from autoscaler.cli import main

    seen: list[Any] = []
    monkeypatch.setattr(app, "main", lambda settings: seen.append(settings) or 0)
    assert Settings(config="").selector_refresh_seconds == 60.0
    monkeypatch.setenv("AUTOSCALER_SELECTOR_REFRESH_SECONDS", "15")
    assert main(["run", "--config", "p.yaml"]) == 0
    assert main(["run", "--config", "p.yaml", "--selector-refresh-seconds", "5"]) == 0
    assert [s.selector_refresh_seconds for s in seen] == [15.0, 5.0]


# --- through the live Service ---------------------------------------------------------------------


async def test_the_service_resolves_before_the_first_tick_and_on_each_change(
    kube: FakeKube, tmp_path: Path
) -> None:
    seed_three(kube)
    kube.seed(isvc("pinned", APP))
    config = tmp_path / "policy.yaml"
    config.write_text(policy_text(explicit="pinned"))
    settings = Settings(
        config=str(config),
        kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
        once=True,  # no leader election, no background loops: the test drives each step
        dry_run=True,
        keda_grpc_listen="",
        log_json=False,
    )
    async with open_service(settings) as svc:
        try:
            engine = svc.engine
            assert sorted(engine.targets) == [f"{NS}/chat-a", f"{NS}/chat-b", f"{NS}/pinned"]
            assert engine.targets[f"{NS}/pinned"].config.name == "pinned"
            pairs = await svc.loop.tick()
            replicas = {d.target: d.replicas for d, _ in pairs}
            assert replicas == {f"{NS}/chat-a": 3, f"{NS}/chat-b": 3, f"{NS}/pinned": 7}

            # A new match and a vanished one: re-applied through set_targets, the persisting
            # target keeps its runtime (and so its windows and guard memory).
            kept = engine.targets[f"{NS}/chat-b"]
            kube.seed(isvc("chat-c", APP))
            set_labels(kube, "chat-a", {"app": "retired"})
            assert await svc.refresh_selectors() is True
            assert sorted(engine.targets) == [f"{NS}/chat-b", f"{NS}/chat-c", f"{NS}/pinned"]
            assert engine.targets[f"{NS}/chat-b"] is kept
            assert engine.targets[f"{NS}/chat-c"].last is None  # starts like a new target

            # The API refuses: the targets stay, the failure is counted.
            kube.fail_next(1, 403, verb="list", resource="inferenceservices")
            assert await svc.refresh_selectors() is False
            assert sorted(engine.targets) == [f"{NS}/chat-b", f"{NS}/chat-c", f"{NS}/pinned"]
            failed = svc.registry.get_sample_value(
                "autoscaler_selector_list_failures_total",
                {"namespace": NS, "kind": "InferenceService", "error": "forbidden"},
            )
            assert failed == 1.0

            # A reload re-resolves at once, through the refresh loop.
            refreshed = asyncio.Event()

            async def refresh() -> None:
                await svc.refresh_selectors()
                refreshed.set()

            stop = asyncio.Event()
            task = asyncio.create_task(svc.selectors.run(stop, 3600.0, refresh))
            svc.reload(policy("embed", explicit="pinned"))
            # Until the listing answers, the old selector's matches do not carry over to the
            # new selector (a different selector is a different listing).
            assert sorted(engine.targets) == [f"{NS}/pinned"]
            await asyncio.wait_for(refreshed.wait(), 10.0)
            stop.set()
            await task
            assert sorted(engine.targets) == [f"{NS}/embed", f"{NS}/pinned"]
            assert engine.targets[f"{NS}/embed"].config.selector is not None
        finally:
            await svc.close()
