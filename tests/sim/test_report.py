"""comparison_table and write_report on hand-built RunResults: values, order, files, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.sim.report import comparison_table, write_report
from autoscaler.sim.runner import RunResult, Timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACE_INFO: dict[str, Any] = {"name": "tiny-trace", "requests": 8, "span_s": 7200.0}


def metrics(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "requests": 8,
        "completed": 8,
        "dropped": 0,
        "slo_attainment": 1.0,
        "ttft_p50_s": 0.25,
        "ttft_p95_s": 0.9,
        "ttft_p99_s": 1.2345,
        "gpu_hours": 2.0,
        "replica_hours": 2.0,
        "mean_replicas": 1.0,
        "max_replicas": 2,
        "cold_starts": 1,
        "cold_start_requests": 3,
        "scale_events": 4,
        "goodput_tokens_per_gpu_s": 123.456,
        "wall_seconds": 0.1,
        "sim_requests_per_s": 80.0,
    }
    base.update(overrides)
    return base


def result(name: str, ttft: list[float], scale: int, **overrides: Any) -> RunResult:
    t = [60.0 * i for i in range(1, 121)]
    demand = [float((i * 7) % 11) for i in range(120)]
    desired = [1 + ((i // 20) % 3) * scale for i in range(120)]
    ready = [1, *desired[:-1]]
    return RunResult(
        name,
        metrics(**overrides),
        np.asarray(ttft, dtype=np.float64),
        Timeline(t=t, desired=desired, ready=ready, demand=demand),
    )


@pytest.fixture
def results() -> list[RunResult]:
    return [
        # Listed first but not cheapest: order must be kept anyway.
        result("kpa", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 1.5], 2, gpu_hours=3.5),
        result(
            "queue",
            [0.05, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, np.nan],
            1,
            slo_attainment=0.875,
            dropped=1,
            completed=7,
            gpu_hours=1.25,
            ttft_p99_s=None,
            sim_requests_per_s=None,
        ),
        result(
            "static", [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4], 0, gpu_hours=2.0, mean_replicas=1.5
        ),
    ]


def test_table_formats_values_and_keeps_order(results: list[RunResult]) -> None:
    text = comparison_table(results, slo_s=1.0)
    lines = text.splitlines()
    assert lines[0].split()[0] == "policy"
    assert "SLO<=1s %" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    rows = lines[2:]
    assert [r.split()[0] for r in rows] == ["kpa", "queue", "static"]
    kpa, queue, static = (r.split() for r in rows)
    # policy, SLO %, p50, p99, GPU-h, mean, max, cold, cold reqs, dropped, scale, goodput
    assert kpa == [
        "kpa",
        "100.00",
        "0.250",
        "1.234",
        "3.500",
        "1.00",
        "2",
        "1",
        "3",
        "0",
        "4",
        "123.5",
    ]
    assert queue[1] == "87.50"
    assert queue[3] == "-"  # None p99
    assert queue[4] == "1.250"
    assert queue[9] == "1"  # dropped
    assert static[5] == "1.50"
    # Fixed width: every line of the table has the same column layout.
    assert len({len(line) for line in lines[:2]}) == 1
    assert all(len(line) <= len(lines[1]) for line in lines)


def test_table_shows_missing_and_nan_as_dash() -> None:
    r = RunResult("bare", {"slo_attainment": float("nan")}, np.array([]), Timeline())
    row = comparison_table([r], slo_s=2.0).splitlines()[2].split()
    assert row == ["bare", *["-"] * 11]


def test_importing_report_does_not_import_matplotlib() -> None:
    code = "import sys, autoscaler.sim.report; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_write_report_contents_and_deterministic_pngs(
    tmp_path: Path, results: list[RunResult]
) -> None:
    first = write_report(tmp_path / "a", TRACE_INFO, results, slo_s=1.0)
    second = write_report(tmp_path / "b", TRACE_INFO, results, slo_s=1.0)
    names = [p.name for p in first]
    assert names == ["report.md", "timeline.png", "ttft_cdf.png", "cost_vs_slo.png"]
    assert [p.name for p in second] == names

    for a, b in zip(first, second, strict=True):
        assert a.is_file()
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two writes"
    for png in first[1:]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert b"Software" not in data
        assert b"matplotlib" not in data.lower()

    md = first[0].read_text(encoding="utf-8")
    assert "# Simulation report: tiny-trace" in md
    assert "- Requests: 8" in md
    assert "- Span: 7200.0 s (2.00 h)" in md
    assert "- TTFT SLO: 1 s" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| policy | SLO<=1s % |")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["kpa", "queue", "static"]
    assert "| queue | 87.50 | 0.250 | - | 1.250 |" in md
    # kpa and static tie at 100%; static is cheaper (2.0 vs 3.5 GPU-hours).
    assert "the cheapest policy reaching it is **static** at 2.000 GPU-hours" in md
    assert "**static** is the cheapest policy at the best SLO attainment (100.00%)" in md
    assert "**kpa** also reaches the best SLO attainment (100.00%) but uses 3.500" in md
    assert "(+75.0% vs static)" in md
    assert "**queue** reaches 87.50% SLO attainment, 12.50 points below the best" in md
    assert "(-37.5% vs static); 1 requests were dropped." in md
    for name in names[1:]:
        assert f"]({name})" in md


def test_write_report_handles_edge_results(tmp_path: Path) -> None:
    # No completed requests, zero GPU-hours, one-point timeline: still writes every file.
    empty = RunResult(
        "idle",
        metrics(slo_attainment=0.0, gpu_hours=0.0, ttft_p50_s=None, dropped=2),
        np.array([np.nan, np.nan]),
        Timeline(t=[1.0], desired=[0], ready=[0], demand=[0.0]),
    )
    paths = write_report(tmp_path, {}, [empty], slo_s=0.5)
    assert all(p.is_file() for p in paths)
    md = paths[0].read_text(encoding="utf-8")
    assert "- Trace: `-`" in md
    assert "- Span: -" in md
    assert "**idle** is the cheapest policy" in md


def test_write_report_rejects_no_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        write_report(tmp_path, TRACE_INFO, [], slo_s=1.0)
