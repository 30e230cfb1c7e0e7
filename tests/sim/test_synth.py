"""Synthetic traces, the CSV writer, and trace_summary against the README's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.sim.synth import (
    TOKEN_PROFILES,
    fit_lognormal,
    sample_tokens,
    synth_trace,
    trace_summary,
    write_csv,
)
from autoscaler.sim.traces import Trace, load_trace

SHARED_TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


def shared_trace(name: str) -> Path:
    """A file of ../shared/traces; skip only when that directory is absent (it is in CI)."""
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"{SHARED_TRACES} not present")
    path = SHARED_TRACES / name
    assert path.is_file(), f"{path} is missing from the shared traces directory"
    return path


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_arrays_and_same_csv_bytes(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "idle_gap_fraction": 0.1,
        "burst_rate_per_h": 3.0,
        "token_profile": "mooncake",
    }
    a = synth_trace(1800, 20.0, seed=42, **kwargs)
    b = synth_trace(1800, 20.0, seed=42, **kwargs)
    c = synth_trace(1800, 20.0, seed=43, **kwargs)
    assert a == b
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.arrival_s[:100], c.arrival_s[:100])
    write_csv(a, tmp_path / "a.csv")
    write_csv(b, tmp_path / "b.csv")
    write_csv(c, tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_write_csv_round_trips_exactly(tmp_path: Path) -> None:
    trace = synth_trace(600, 30.0, seed=1)
    path = tmp_path / "t.csv"
    write_csv(trace, path)
    assert path.read_text().splitlines()[0] == "timestamp_s,input_tokens,output_tokens"
    back = load_trace(path)
    assert back.fmt == "csv" and back.name == "t"
    assert np.array_equal(back.arrival_s, trace.arrival_s)
    assert np.array_equal(back.input_tokens, trace.input_tokens)
    assert np.array_equal(back.output_tokens, trace.output_tokens)
    # Arbitrary floats (not microsecond-rounded) and a service column survive too.
    rng = np.random.default_rng(0)
    odd = Trace(
        "odd",
        "csv",
        0.0,
        np.sort(rng.uniform(0, 1e5, 500)),
        rng.integers(0, 10**6, 500),
        np.zeros(500, np.int64),
        rng.exponential(3.0, 500),
    )
    write_csv(odd, tmp_path / "odd.csv")
    assert load_trace(tmp_path / "odd.csv", name="odd") == odd


# ----------------------------------------------------------------------------- rate shape


def test_mean_rate_is_honoured() -> None:
    trace = synth_trace(7200, 50.0, seed=3, burst_rate_per_h=4.0, idle_gap_fraction=0.2)
    assert trace.requests == pytest.approx(50.0 * 7200, rel=0.01)
    assert trace.arrival_s[0] >= 0 and trace.arrival_s[-1] < 7200
    assert trace.fmt == "synth" and trace.start_epoch == 0.0


def test_diurnal_shape() -> None:
    trace = synth_trace(
        86_400, 2.0, seed=5, diurnal_amplitude=0.8, burst_rate_per_h=0.0, token_profile="none"
    )
    per_hour = np.bincount(np.floor(trace.arrival_s / 3600).astype(np.int64), minlength=24)
    # 1 - 0.8 cos(2 pi t / P): trough at midnight (0.2x mean), peak at noon (1.8x mean).
    assert per_hour[0] / per_hour.mean() == pytest.approx(0.22, abs=0.05)
    assert per_hour[11:13].mean() / per_hour.mean() == pytest.approx(1.79, abs=0.08)


def test_bursts_and_idle_gaps() -> None:
    def flat(duration: float, rps: float, seed: int, **kwargs: Any) -> Trace:
        return synth_trace(
            duration, rps, seed=seed, diurnal_amplitude=0.0, token_profile="none", **kwargs
        )

    calm = flat(3600, 20.0, 9, burst_rate_per_h=0.0)
    bursty = flat(3600, 20.0, 9, burst_rate_per_h=6.0, burst_multiplier=10.0)
    assert trace_summary(calm)["cv_per_min"] < 0.1
    assert trace_summary(bursty)["cv_per_min"] > 0.5
    assert trace_summary(bursty)["peak_per_min"] > 3 * trace_summary(bursty)["mean_per_min"]
    idle = flat(7200, 50.0, 2, idle_gap_fraction=0.3, burst_rate_per_h=0.0)
    busy_seconds = np.unique(np.floor(idle.arrival_s)).size
    assert busy_seconds / 7200 == pytest.approx(0.7, abs=0.01)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        synth_trace(0, 1.0, seed=0)
    with pytest.raises(ValueError, match="diurnal_amplitude"):
        synth_trace(10, 1.0, seed=0, diurnal_amplitude=1.5)
    with pytest.raises(ValueError, match="token_profile"):
        synth_trace(10, 1.0, seed=0, token_profile="gpt")


# ----------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("profile", sorted(TOKEN_PROFILES))
def test_token_profiles_match_published_mean_and_median(profile: str) -> None:
    inp, out = sample_tokens(200_000, profile, np.random.default_rng(11))
    for stats, drawn in zip(TOKEN_PROFILES[profile], (inp, out), strict=True):
        assert drawn.mean() == pytest.approx(stats.mean, rel=0.10)
        assert np.median(drawn) == pytest.approx(stats.p50, rel=0.05)
        assert drawn.min() >= 1 and drawn.max() <= stats.max
        assert fit_lognormal(stats).max == stats.max


def test_no_tokens_profile() -> None:
    trace = synth_trace(60, 5.0, seed=0, token_profile="none")
    assert not trace.input_tokens.any() and not trace.output_tokens.any()


# ----------------------------------------------------------------------------- summary

README = [
    # file, requests, per-minute mean, per-minute CV, peak per minute
    ("azure_llm_2023_code.csv", 8_819, 152.05, 1.028, 632),
    ("azure_llm_2023_conv.csv", 19_366, 328.24, 0.250, 507),
    ("mooncake_fast25_conversation_trace.jsonl", 12_031, 203.92, 0.118, 247),
    ("alibaba_genai2026_lora_request_trace.csv", 26_823, 0.81, 2.154, 65),
]


@pytest.mark.parametrize(("name", "requests", "mean", "cv", "peak"), README)
def test_summary_matches_readme(
    name: str, requests: int, mean: float, cv: float, peak: int
) -> None:
    summary = trace_summary(load_trace(shared_trace(name)))
    assert summary["requests"] == requests
    assert summary["mean_per_min"] == pytest.approx(mean, abs=0.006)
    assert summary["cv_per_min"] == pytest.approx(cv, abs=0.001)
    assert summary["peak_per_min"] == peak


def test_summary_token_stats_of_azure_code() -> None:
    summary = trace_summary(load_trace(shared_trace("azure_llm_2023_code.csv")))
    assert summary["minutes"] == 58 and summary["zero_minutes"] == 12
    assert summary["peak_per_s"] == 67
    assert summary["iat_cv"] == pytest.approx(13.15, abs=0.01)
    assert summary["input_tokens_mean"] == pytest.approx(2048, abs=0.5)
    assert summary["input_tokens_p50"] == 1469 and summary["input_tokens_max"] == 7437
    assert summary["output_tokens_p99"] == pytest.approx(251.5, abs=0.05)


def test_summary_of_empty_trace() -> None:
    empty = synth_trace(10, 0.0, seed=0)
    summary = trace_summary(empty)
    assert summary["requests"] == 0 and summary["span_s"] == 0.0
    assert np.isnan(summary["cv_per_min"])
