"""Long-horizon traces: ServeGen gap filling, synthetic tokens, scaling and slicing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.synth import TOKEN_PROFILES
from autoscaler.sim.traces import load_alibaba_qps
from autoscaler.sim.traces.longhorizon import (
    build_alibaba_qps,
    build_servegen,
    servegen_grid,
    window_rates,
)

DAY_WINDOWS = 144
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def tar_gz(path: Path, members: dict[str, str]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def rows(rates: list[float], cv: float = 1.0) -> str:
    return "".join(
        f"{600 * k},{r},{cv if r else 0},{'Gamma' if r else ''},1,1\n" for k, r in enumerate(rates)
    )


def two_clients(tmp_path: Path) -> tuple[Path, list[float], list[float]]:
    """Two clients over 1 day + 4 windows; windows 145 and 146 are a collection gap."""
    n = DAY_WINDOWS + 4
    a = [0.5 + 0.001 * k for k in range(n)]
    b = [0.25] * n
    for w in (DAY_WINDOWS + 1, DAY_WINDOWS + 2):
        a[w] = b[w] = 0.0
    path = tar_gz(
        tmp_path / "sg.tar.gz",
        {"data/l/m/chunk-0-trace.csv": rows(a), "data/l/m/chunk-1-trace.csv": rows(b)},
    )
    return path, a, b


def test_gap_windows_take_the_same_window_one_day_earlier(tmp_path: Path) -> None:
    path, a, b = two_clients(tmp_path)
    windows, rates, cvs = servegen_grid(path)
    assert windows.tolist() == [600.0 * k for k in range(DAY_WINDOWS + 4)]
    for w in (DAY_WINDOWS + 1, DAY_WINDOWS + 2):
        assert rates[:, w].tolist() == [a[w - DAY_WINDOWS], b[w - DAY_WINDOWS]]
        assert cvs[:, w].tolist() == [1.0, 1.0]
    assert rates[0, DAY_WINDOWS + 3] == a[DAY_WINDOWS + 3]  # other windows untouched
    _, raw = servegen_grid(path, fill_gaps=False)[:2]
    assert raw[:, DAY_WINDOWS + 1].tolist() == [0.0, 0.0]
    _, agg = window_rates(path, rate_scale=2.0)
    assert agg[DAY_WINDOWS + 1] == pytest.approx(2.0 * (a[1] + b[1]))


def test_build_servegen_scales_slices_and_attaches_tokens(tmp_path: Path) -> None:
    path, a, b = two_clients(tmp_path)
    start, end = 600.0 * DAY_WINDOWS, 600.0 * (DAY_WINDOWS + 4)
    trace = build_servegen(path, start_s=start, end_s=end, rate_scale=4.0, seed=3)
    # Re-based to t=0 at start_s; the gap windows are served at yesterday's level.
    assert trace.arrival_s.min() >= 0.0
    assert trace.arrival_s.max() < end - start
    expected = (
        4.0
        * 600
        * sum(
            a[w - DAY_WINDOWS] + b[w - DAY_WINDOWS] if a[w] == 0 else a[w] + b[w]
            for w in range(DAY_WINDOWS, DAY_WINDOWS + 4)
        )
    )
    assert trace.requests == pytest.approx(expected, rel=0.06)
    counts = np.bincount((trace.arrival_s // 600).astype(np.int64), minlength=4)
    assert counts.min() > 0.8 * 4.0 * 600 * 0.75  # no silent gap windows
    # Tokens from the mooncake profile: long prompts, all positive, capped at the profile max.
    inp_stats, out_stats = TOKEN_PROFILES["mooncake"]
    assert trace.input_tokens.min() >= 1
    assert trace.input_tokens.max() <= inp_stats.max
    assert trace.input_tokens.mean() == pytest.approx(inp_stats.mean, rel=0.15)
    assert trace.output_tokens.mean() == pytest.approx(out_stats.mean, rel=0.15)
    again = build_servegen(path, start_s=start, end_s=end, rate_scale=4.0, seed=3)
    assert np.array_equal(again.arrival_s, trace.arrival_s)
    assert np.array_equal(again.input_tokens, trace.input_tokens)
    other = build_servegen(path, start_s=start, end_s=end, rate_scale=4.0, seed=4)
    assert not np.array_equal(other.arrival_s[:50], trace.arrival_s[:50])


def test_build_servegen_refuses_oversized_expansion_and_ragged_clients(tmp_path: Path) -> None:
    path, _, _ = two_clients(tmp_path)
    with pytest.raises(InputFormatError, match="max_requests"):
        build_servegen(path, rate_scale=1000.0, max_requests=1000)
    ragged = tar_gz(
        tmp_path / "ragged.tar.gz",
        {"data/l/m/chunk-0-trace.csv": rows([1.0, 1.0]), "data/l/m/chunk-1-trace.csv": rows([1.0])},
    )
    with pytest.raises(ValueError, match="do not share one window grid"):
        servegen_grid(ragged)


def test_alibaba_qps_keeps_the_loader_arrivals_and_adds_tokens() -> None:
    path = SHARED / "alibaba_genai2026_qps.tar.gz"
    if not path.exists():
        pytest.fail(f"shared trace missing: {path}")
    built = build_alibaba_qps(path, start_s=0, end_s=3600, rate_scale=3.0, seed=5)
    plain = load_alibaba_qps(path, start_s=0, end_s=3600, rate_scale=3.0, seed=5)
    assert np.array_equal(built.arrival_s, plain.arrival_s)
    assert built.input_tokens.min() >= 1 and built.output_tokens.min() >= 1
    assert plain.input_tokens.max() == 0
