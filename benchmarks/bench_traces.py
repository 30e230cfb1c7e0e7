"""Trace loading speed: a 3,000,000-line generic CSV (written by the synth generator) and every
real trace in ../shared/traces (if present).

    .venv/bin/python benchmarks/bench_traces.py [--lines N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from autoscaler.sim.synth import synth_trace, write_csv
from autoscaler.sim.traces import Trace, load_trace

TRACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces"
# Rate series are expanded at a scale that keeps them around a million requests.
RATE_SCALE = {
    "servegen_language_m-large_trace_csvs": 0.01,
    "servegen_language_m-mid_trace_csvs": 0.001,
    "servegen_language_m-small_trace_csvs": 0.001,
}


def timed(path: Path, **kwargs: float) -> tuple[Trace, float]:
    t0 = time.perf_counter()
    trace = load_trace(path, **kwargs)  # type: ignore[arg-type]
    return trace, time.perf_counter() - t0


def report(label: str, trace: Trace, seconds: float, size: int, unit: str = "lines/s") -> None:
    """One line; for request files a request is a line, for rate series it is an arrival."""
    rate = trace.requests / seconds if seconds > 0 else float("inf")
    print(
        f"{label:62s} {trace.requests:>10,} req {size / 1e6:6.1f} MB "
        f"{seconds:7.3f} s {rate:>12,.0f} {unit}"
    )


def write_azure_csv(trace: Trace, path: Path) -> None:
    """The same arrivals in the Azure 2023 layout (``2023-11-16 18:17:03.9799600``)."""
    base = np.datetime64("2023-11-16T18:00:00", "ns")
    ticks = np.rint(trace.arrival_s * 1e7).astype(np.int64) * 100
    stamps = np.datetime_as_string(base + ticks.astype("timedelta64[ns]"), unit="ns").tolist()
    rows = zip(stamps, trace.input_tokens.tolist(), trace.output_tokens.tolist(), strict=True)
    with path.open("w", encoding="ascii") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        fh.write("".join(f"{s[:10]} {s[11:27]},{a},{b}\n" for s, a, b in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=3_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.csv"
        duration = 36_000.0
        t0 = time.perf_counter()
        trace = synth_trace(duration, args.lines / duration * 1.01, seed=1)
        trace = Trace(
            name=trace.name,
            fmt=trace.fmt,
            start_epoch=0.0,
            arrival_s=trace.arrival_s[: args.lines],
            input_tokens=trace.input_tokens[: args.lines],
            output_tokens=trace.output_tokens[: args.lines],
            service_s=None,
        )
        t1 = time.perf_counter()
        write_csv(trace, path)
        t2 = time.perf_counter()
        print(f"synth {trace.requests:,} requests: {t1 - t0:.2f} s; write_csv: {t2 - t1:.2f} s")
        loaded, seconds = timed(path)
        assert loaded.requests == trace.requests
        report("generic CSV (synth)", loaded, seconds, path.stat().st_size)
        azure = Path(tmp) / "synth_azure.csv"
        write_azure_csv(trace, azure)
        loaded, seconds = timed(azure)
        assert loaded.requests == trace.requests
        report(
            "Azure-format CSV (synth, 7 fractional digits)", loaded, seconds, azure.stat().st_size
        )
    if not TRACES.is_dir():
        print(f"{TRACES} not found; skipping the real traces")
        return
    for path in sorted(TRACES.iterdir()):
        if path.suffix in (".py", ".md") or "DLRM" in path.name:
            continue
        stem = path.name.removesuffix(".tar.gz")
        scale = RATE_SCALE.get(stem, 1.0)
        trace, seconds = timed(path, rate_scale=scale) if scale != 1.0 else timed(path)
        label = path.name + (f" (rate_scale={scale})" if scale != 1.0 else "")
        unit = "arrivals/s" if trace.fmt in ("servegen", "alibaba-qps") else "lines/s"
        report(label, trace, seconds, path.stat().st_size, unit)


if __name__ == "__main__":
    main()
