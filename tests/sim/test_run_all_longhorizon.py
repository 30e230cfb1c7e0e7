"""run_all's long-horizon harness: traces built by recipe, a per-scenario control tick."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from autoscaler.sim.cluster_config import load_cluster
from autoscaler.sim.traces import load_trace

ROOT = Path(__file__).resolve().parents[2]
DAY_WINDOWS = 144


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "simulations" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["run_all"]
    return module


def servegen_archive(path: Path, windows: int = 6, rate: float = 0.02) -> Path:
    """A ServeGen-format archive: two clients, ``windows`` 10-minute windows at ``rate`` req/s."""

    def rows(r: float) -> str:
        return "".join(f"{600 * k},{r},1.0,Gamma,1,1\n" for k in range(windows))

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(2):
            data = rows(rate).encode()
            info = tarfile.TarInfo(f"data/l/m/chunk-{i}-trace.csv")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def scenario(tmp_path: Path, archive: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "lh",
        "trace": str(tmp_path / "built" / "lh.csv"),
        "build": {"source": "servegen", "archive": str(archive), "rateScale": 1.0, **extra},
        "cluster": "simulations/clusters/llm-8b-h100.yaml",
    }


def test_built_trace_is_deterministic_reused_and_rebuilt_on_a_new_recipe(
    run_all: ModuleType, tmp_path: Path
) -> None:
    archive = servegen_archive(tmp_path / "sg.tar.gz")
    sc = scenario(tmp_path, archive, endHours=0.5)
    csv = Path(sc["trace"])
    first = run_all.ensure_trace(sc, seed=0)
    data = csv.read_bytes()
    trace = load_trace(csv, "auto")
    # Hours 0-0.5 of 2 x 0.02 req/s: about 72 requests, all inside the window, with tokens.
    assert first["requests"] == trace.requests and 40 <= trace.requests <= 110
    assert float(trace.arrival_s.max()) < 1800.0
    assert int(trace.input_tokens.min()) >= 1
    assert first["recipe"]["seed"] == 0 and first["recipe"]["end_hours"] == 0.5
    assert first["recipe"]["archive_sha256"] == run_all._sha256(archive)
    assert first["csv_sha256"] == run_all._sha256(csv)
    stamp = csv.with_name("lh.csv.build.json")
    assert json.loads(stamp.read_text()) == first
    assert not list(csv.parent.glob("*.partial"))

    # Same recipe: reused as is (not rewritten).
    csv.touch()
    mtime = csv.stat().st_mtime_ns
    assert run_all.ensure_trace(sc, seed=0) == first
    assert csv.stat().st_mtime_ns == mtime

    # Deleted: rebuilt byte for byte.
    csv.unlink()
    assert run_all.ensure_trace(sc, seed=0) == first
    assert csv.read_bytes() == data

    # A file that no longer matches its stamp (edited by hand) is rebuilt.
    csv.write_bytes(data[: len(data) // 2])
    assert run_all.ensure_trace(sc, seed=0) == first
    assert csv.read_bytes() == data

    # Another seed or another window: another recipe, rebuilt.
    other = run_all.ensure_trace(sc, seed=1)
    assert other["recipe"]["seed"] == 1 and other["csv_sha256"] != first["csv_sha256"]
    longer = run_all.ensure_trace(scenario(tmp_path, archive, endHours=1.0), seed=1)
    assert longer["requests"] > other["requests"]
    assert float(load_trace(csv, "auto").arrival_s.max()) >= 1800.0

    # A scenario whose trace is a plain file builds nothing.
    assert run_all.ensure_trace({"name": "x", "trace": "t.csv"}, seed=0) is None


def test_start_hours_rebases_the_window(run_all: ModuleType, tmp_path: Path) -> None:
    archive = servegen_archive(tmp_path / "sg.tar.gz")
    built = run_all.ensure_trace(scenario(tmp_path, archive, startHours=0.5, endHours=1.0), 0)
    trace = load_trace(Path(tmp_path / "built" / "lh.csv"), "auto")
    assert built["recipe"]["start_hours"] == 0.5
    assert float(trace.arrival_s.min()) >= 0.0 and float(trace.arrival_s.max()) < 1800.0


def test_with_tick_sets_the_tick_and_validates(run_all: ModuleType) -> None:
    cluster = load_cluster(ROOT / "simulations" / "clusters" / "llm-8b-h100.yaml").spec
    assert run_all.with_tick(cluster, None) is cluster
    ticked = run_all.with_tick(cluster, 15)
    assert ticked.signals.tick_seconds == 15.0
    assert ticked.llm == cluster.llm and ticked.cold_start == cluster.cold_start
    scraped = cluster.model_copy(
        update={"signals": cluster.signals.model_copy(update={"scrape_seconds": 10.0})}
    )
    with pytest.raises(ValueError, match="whole multiple"):
        run_all.with_tick(scraped, 15)


def test_check_scenarios_names_bad_build_and_tick_entries(run_all: ModuleType) -> None:
    base = {"name": "x", "trace": "t.csv", "cluster": "simulations/clusters/llm-8b-h100.yaml"}
    bad = [
        {**base, "tickSeconds": 0},
        {**base, "name": "y", "build": {"source": "azure", "archive": "nope.tar.gz", "seed": 1}},
        {
            **base,
            "name": "z",
            "build": {
                "source": "servegen",
                "archive": "../shared/traces/servegen_language_m-small_trace_csvs.tar.gz",
                "startHours": 5,
                "endHours": 2,
            },
        },
    ]
    assert run_all.check_scenarios(bad) == [
        "scenarios.yaml: scenarios[0] (x): tickSeconds must be a number > 0, got 0",
        "scenarios.yaml: scenarios[1] (y): build: unknown key 'seed'",
        "scenarios.yaml: scenarios[1] (y): build.source must be one of servegen, alibaba-qps",
        "scenarios.yaml: scenarios[1] (y): build: no such file nope.tar.gz",
        "scenarios.yaml: scenarios[2] (z): build.endHours must be > startHours (5)",
    ]


def test_the_long_horizon_scenarios_share_one_protocol(run_all: ModuleType) -> None:
    scenarios = yaml.safe_load((ROOT / "simulations" / "scenarios.yaml").read_text())["scenarios"]
    assert run_all.check_scenarios(scenarios) == []
    long = [sc for sc in scenarios if "build" in sc]
    assert {sc["name"] for sc in long} == {
        "alibaba-qps-longhorizon",
        "servegen-m-small-longhorizon",
    }
    for sc in long:
        # the harness's budget, as for the 1-hour scenarios
        assert sc["tickSeconds"] == 15 and "budget" not in sc
        assert sc.get("tune", True) is True
        assert sc["trace"].startswith("out/")  # built, never committed


def test_run_scenario_builds_the_trace_and_runs_every_policy_at_the_scenario_tick(
    run_all: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = servegen_archive(tmp_path / "sg.tar.gz", windows=3, rate=0.01)
    sc = {
        **scenario(tmp_path, archive),
        "sloTtftSeconds": 10,
        "tickSeconds": 30,
        "budget": 2,
        "baselines": [
            {
                "file": "policies/baselines/static-peak.yaml",
                "space": "simulations/spaces/static-peak-longhorizon.yaml",
            }
        ],
        "policies": ["policies/baselines/hpa-queue.yaml"],
    }
    ticks: list[tuple[str, float]] = []
    real_tune, real_simulate = run_all.tune, run_all.simulate

    def tune(space: Any, trace: Any, spec: Any, **kw: Any) -> Any:
        ticks.append(("tune", spec.signals.tick_seconds))
        return real_tune(space, trace, spec, **kw)

    def simulate(trace: Any, doc: Any, spec: Any, **kw: Any) -> Any:
        ticks.append(("evaluate", spec.signals.tick_seconds))
        return real_simulate(trace, doc, spec, **kw)

    monkeypatch.setattr(run_all, "tune", tune)
    monkeypatch.setattr(run_all, "simulate", simulate)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path / "results")
    monkeypatch.chdir(ROOT)
    args = argparse.Namespace(seed=0, jobs=1, budget=40, retune=False)
    data = run_all.run_scenario(sc, args)
    assert ticks == [("tune", 30.0), ("evaluate", 30.0)] * 2
    assert data["tick_seconds"] == 30.0 and data["tick_from"] == "scenario tickSeconds"
    assert data["budget"] == 2
    frontiers = sorted((tmp_path / "results" / "lh" / "tune").glob("*/frontier.json"))
    assert [f.parent.name for f in frontiers] == ["hpa-queue", "static-peak"]
    assert [len(json.loads(f.read_text())["points"]) for f in frontiers] == [2, 2]
    assert data["trace_build"]["recipe"]["source"] == "servegen"
    assert data["trace_build"]["requests"] == load_trace(Path(sc["trace"]), "auto").requests
    summary = (tmp_path / "results" / "lh" / "summary.md").read_text()
    assert "runs at a 30 s control tick and is tuned with 2 simulations" in summary
    assert "Trace built by run_all from" in summary
    assert "; 30 s tick and budget 2 for every policy" in run_all._protocol_tag(data)

    # The tick check replays the tuned autoscalers (not static) at another tick, from the
    # results just written, and records both figures.
    ticks.clear()
    check = run_all.tick_check(sc, 5.0, seed=0)
    assert ticks == [("evaluate", 5.0)]
    written = json.loads((tmp_path / "results" / "lh" / "tick-check-5s.json").read_text())
    assert written == check
    assert check["scenario_tick_s"] == 30.0 and check["check_tick_s"] == 5.0
    (row,) = check["policies"]
    (hpa,) = [r for r in data["policies"] if r["policy"] == row["policy"]]
    assert row["scenario_tick"]["gpu_hours"] == hpa["test"]["gpu_hours"]
    again = real_simulate(
        load_trace(Path(sc["trace"]), "auto", seed=0),
        run_all.load_policy(hpa["tuned_file"]),
        run_all.with_tick(load_cluster(ROOT / sc["cluster"]).spec, 5.0),
        seed=0,
        slo_ttft_s=10.0,
        measure_from=data["windows"]["test"][0],
    ).metrics
    assert row["check_tick"] == {k: again[k] for k in ("gpu_hours", "slo_attainment")}


def test_recipe_writes_the_builders_default_scale_out(run_all: ModuleType, tmp_path: Path) -> None:
    from autoscaler.sim.traces.longhorizon import ALIBABA_QPS_SCALE, SERVEGEN_M_SMALL_SCALE

    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x")
    qps = run_all.build_recipe({"source": "alibaba-qps", "archive": str(archive)}, 0)
    sg = run_all.build_recipe({"source": "servegen", "archive": str(archive)}, 7)
    assert qps["rate_scale"] == ALIBABA_QPS_SCALE and sg["rate_scale"] == SERVEGEN_M_SMALL_SCALE
    assert (qps["start_hours"], qps["end_hours"], qps["token_profile"]) == (0, None, "mooncake")
    assert sg["seed"] == 7 and sg["archive_sha256"] == run_all._sha256(archive)


def test_an_autoscaler_baseline_gets_several_searches_and_keeps_the_best(
    run_all: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--baseline-searches`` and ``--our-searches``: a policy is tuned with seeds K, K+1, ...
    and keeps the search whose choice wins by the tuner's own rule; a grid (static) once; a
    matched row once, continuing the kept search with its seed."""
    archive = servegen_archive(tmp_path / "sg.tar.gz", windows=3, rate=0.01)
    sc = {
        **scenario(tmp_path, archive),
        "sloTtftSeconds": 10,
        "tickSeconds": 30,
        "budget": 12,  # static-peak-longhorizon is a 12-point grid: searched whole, once
        "baselines": [
            "policies/baselines/hpa-queue.yaml",
            {
                "file": "policies/baselines/static-peak.yaml",
                "space": "simulations/spaces/static-peak-longhorizon.yaml",
            },
        ],
        "policies": ["policies/baselines/keda-queue.yaml"],
    }
    seeds: list[tuple[str, int]] = []
    real_tune = run_all.tune

    priors: list[list[Any]] = []

    def tune(space: Any, trace: Any, spec: Any, **kw: Any) -> Any:
        seeds.append((Path(space.policy_file).stem, kw["seed"]))
        priors.append(list(kw.get("prior", ())))
        return real_tune(space, trace, spec, **kw)

    monkeypatch.setattr(run_all, "tune", tune)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path / "results")
    monkeypatch.chdir(ROOT)
    args = argparse.Namespace(
        seed=5, jobs=1, budget=40, retune=False, baseline_searches=3, our_searches=2
    )
    data = run_all.run_scenario(sc, args)
    hpa = [("hpa-queue", 5), ("hpa-queue", 6), ("hpa-queue", 7)]
    tune_dir = tmp_path / "results" / "lh" / "tune"
    continued = json.loads((tune_dir / "keda-queue" / "frontier.json").read_text())
    # Ours twice at the target, and once more at the best autoscaler's training score when one
    # beat the target there (a matched row), with the seed of the search kept at the target.
    first = [r for r in data["policies"] if "matched_target" not in r]
    matched = [r for r in data["policies"] if "matched_target" in r]
    aim = run_all.matched_target(first, 0.99)
    ours = [("keda-queue", 5), ("keda-queue", 6), ("keda-queue", continued["seed"])]
    assert seeds == [*hpa, ("static-peak", 5), *ours]
    assert len(matched) == 1  # in this fixture a baseline beat 0.99 on training
    for r in matched:
        assert r["matched_target"] == aim and r["policy"].endswith(f" @{aim:.4f}")
    # The matched search continues ours' first one: that search's points, figures as recorded,
    # and the first search itself started from nothing.
    assert all(not p for p in priors[:-1])
    assert [(e.metrics, e.phase) for e in priors[-1]] == [
        (p["metrics"], p["phase"]) for p in continued["points"]
    ]
    matched_run = json.loads((tune_dir / "keda-queue-matched" / "frontier.json").read_text())
    assert matched_run["reused"] > 0
    assert len(matched_run["points"]) - matched_run["reused"] <= matched_run["budget"]
    rows = {r["policy"].removeprefix("baseline-"): r for r in data["policies"]}
    searches = rows["hpa-queue"]["tuning"]["searches"]
    assert [s["seed"] for s in searches] == [5, 6, 7]
    kept = json.loads(
        (tmp_path / "results" / "lh" / "tune" / "hpa-queue" / "frontier.json").read_text()
    )
    best = kept["points"][kept["best"]]["metrics"]
    assert kept["seed"] in (5, 6, 7)
    won = next(s for s in searches if s["seed"] == kept["seed"])
    assert (won["gpu_hours"], won["slo_attainment"]) == (best["gpu_hours"], best["slo_attainment"])
    for s in searches:  # no other search's choice beats the kept one by the tuner's rule
        if s["feasible"] and not won["feasible"]:
            raise AssertionError(f"a feasible search lost to an infeasible one: {searches}")
        if s["feasible"] and won["feasible"]:
            assert won["gpu_hours"] <= s["gpu_hours"] * 1.01
    assert [s["seed"] for s in rows["keda-queue"]["tuning"]["searches"]] == [5, 6]
    # the number of searches is part of the cache key, for a baseline as for ours
    one = argparse.Namespace(**{**vars(args), "baseline_searches": 1})
    entries = {e.file.stem: e for e in run_all._entries(sc)}
    train = load_trace(Path(sc["trace"]), "auto")
    cluster = load_cluster(ROOT / "simulations" / "clusters" / "llm-8b-h100.yaml").spec

    def key(stem: str, a: argparse.Namespace) -> str:
        return str(run_all._cache_key(entries[stem], sc, cluster, train, (0, 1), 10, 0.99, 12, a))

    assert key("hpa-queue", args) != key("hpa-queue", one)
    assert key("keda-queue", args) == key("keda-queue", one)
    ours_one = argparse.Namespace(**{**vars(args), "our_searches": 1})
    assert key("keda-queue", args) != key("keda-queue", ours_one)
    assert key("hpa-queue", args) == key("hpa-queue", ours_one)
