"""`autoscaler simulate` end to end: JSON keys, byte-identical results for a seed, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "requests",
    "completed",
    "dropped",
    "slo_attainment",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "gpu_hours",
    "replica_hours",
    "mean_replicas",
    "max_replicas",
    "cold_starts",
    "cold_start_requests",
    "scale_events",
    "goodput_tokens_per_gpu_s",
    "wall_seconds",
    "sim_requests_per_s",
}
WALL = ("wall_seconds", "sim_requests_per_s")


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trace") / "t.csv"
    assert (
        main(
            [
                "trace",
                "synth",
                "--out",
                str(out),
                "--duration",
                "900",
                "--mean-rps",
                "3",
                "--seed",
                "3",
                "--diurnal-period",
                "900",
                "--bursts-per-hour",
                "4",
            ]
        )
        == 0
    )
    return out


def _run(trace: Path, out: Path, *extra: str) -> dict:
    argv = [
        "simulate",
        "--trace",
        str(trace),
        "--quiet",
        "--json",
        str(out),
        "--seed",
        "5",
        "--policy",
        str(ROOT / "policies/baselines/knative-kpa.yaml"),
        "--policy",
        str(ROOT / "policies/llm-chat.yaml"),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


def _without_wall(text: str) -> str:
    data = json.loads(text)
    for p in data["policies"]:
        for k in WALL:
            p.pop(k)
    return json.dumps(data, sort_keys=True)


def test_json_has_the_documented_keys_in_policy_order(trace: Path, tmp_path: Path) -> None:
    data = _run(trace, tmp_path / "r.json")
    assert set(data) >= {"trace", "policies"}
    assert data["trace"]["requests"] > 1000
    assert data["trace"]["name"] == "t"
    assert [p["policy"] for p in data["policies"]] == ["baseline-knative-kpa", "llm-chat"]
    for p in data["policies"]:
        assert set(p) >= KEYS
        assert p["requests"] == data["trace"]["requests"]
        assert p["completed"] + p["dropped"] == p["requests"]
        assert 0.0 <= p["slo_attainment"] <= 1.0


def test_same_seed_gives_byte_identical_json_minus_wall_clock(trace: Path, tmp_path: Path) -> None:
    _run(trace, tmp_path / "a.json")
    _run(trace, tmp_path / "b.json")
    a = (tmp_path / "a.json").read_text()
    b = (tmp_path / "b.json").read_text()
    assert _without_wall(a) == _without_wall(b)


def test_slo_option_changes_attainment_and_report_is_written(trace: Path, tmp_path: Path) -> None:
    loose = _run(trace, tmp_path / "loose.json", "--slo-ttft", "60")
    tight = _run(
        trace, tmp_path / "tight.json", "--slo-ttft", "0.05", "--report", str(tmp_path / "rep")
    )
    for lo, ti in zip(loose["policies"], tight["policies"], strict=True):
        assert lo["slo_attainment"] >= ti["slo_attainment"]
        assert lo["gpu_hours"] == ti["gpu_hours"]  # the SLO is measured, it does not steer
    assert tight["slo_ttft_s"] == 0.05
    assert (tmp_path / "rep" / "report.md").read_text().count("llm-chat") >= 1
    assert (tmp_path / "rep" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_trace_is_a_located_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp_s,input_tokens,output_tokens\n0.5,10,20\n1.0,ten,20\n")
    rc = main(
        [
            "simulate",
            "--trace",
            str(bad),
            "--quiet",
            "--policy",
            str(ROOT / "policies/llm-chat.yaml"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:3:5:" in err
    assert "Traceback" not in err
