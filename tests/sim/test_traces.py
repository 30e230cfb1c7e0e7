"""Trace loaders: real published traces, slicing, speedup, sniffing, rate expansion, errors."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces import (
    Trace,
    _datetime,
    load_alibaba_qps,
    load_servegen,
    load_trace,
    sniff_format,
)
from autoscaler.sim.traces._table import Table

GENERIC_HEADER = "timestamp_s,input_tokens,output_tokens\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
SHARED_TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


def shared_trace(name: str) -> Path:
    """A file of ../shared/traces; skip only when that directory is absent (it is in CI)."""
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"{SHARED_TRACES} not present")
    path = SHARED_TRACES / name
    assert path.is_file(), f"{path} is missing from the shared traces directory"
    return path


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def error_of(path: Path, **kwargs: object) -> str:
    """``FILE:LINE:COL: message`` with the file name shortened to its base name."""
    with pytest.raises(InputFormatError) as info:
        load_trace(path, **kwargs)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert problem.file.startswith(str(path))
    short = problem.file.replace(str(path.parent) + "/", "")
    return f"{short}:{problem.line}:{problem.column}: {problem.message}"


def tar_gz(tmp_path: Path, name: str, members: dict[str, str]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return write(tmp_path, name, buf.getvalue())


# ----------------------------------------------------------------------------- real traces

REAL = [
    # file, format, requests, span_s (README), tolerance
    ("azure_llm_2023_code.csv", "azure", 8_819, 3_436.0, 0.5),
    ("azure_llm_2023_conv.csv", "azure", 19_366, 3_502.0, 0.5),
    ("mooncake_fast25_conversation_trace.jsonl", "mooncake", 12_031, 3_536.999, 1e-9),
    ("alibaba_genai2026_lora_request_trace.csv", "alibaba-requests", 26_823, 1_989_367.0, 1e-9),
]


@pytest.mark.parametrize(("name", "fmt", "requests", "span", "tol"), REAL)
def test_real_trace_counts_and_span(
    name: str, fmt: str, requests: int, span: float, tol: float
) -> None:
    path = shared_trace(name)
    assert sniff_format(path) == fmt
    trace = load_trace(path)
    assert trace.fmt == fmt
    assert trace.name == path.name.rsplit(".", 1)[0]
    assert trace.requests == requests
    assert trace.span_s == pytest.approx(span, abs=tol)
    assert trace.arrival_s.dtype == np.float64 and trace.input_tokens.dtype == np.int64
    assert bool(np.all(np.diff(trace.arrival_s) >= 0))


def test_azure_times_are_utc_and_exact() -> None:
    trace = load_trace(shared_trace("azure_llm_2023_code.csv"))
    first = dt.datetime(2023, 11, 16, 18, 17, 3, 979960, tzinfo=dt.UTC).timestamp()
    assert trace.start_epoch == pytest.approx(first, abs=1e-6)
    assert trace.arrival_s[0] == 0.0
    # Last row: 2023-11-16 19:14:19.9280160 -> exactly 3435.948056 s after the first.
    assert trace.arrival_s[-1] == pytest.approx(3435.948056, abs=1e-9)
    assert (trace.input_tokens[0], trace.output_tokens[0]) == (4808, 10)
    assert trace.service_s is None


def test_mooncake_tokens() -> None:
    trace = load_trace(shared_trace("mooncake_fast25_conversation_trace.jsonl"))
    assert trace.start_epoch == 0.0
    assert (trace.input_tokens[0], trace.output_tokens[0]) == (6758, 500)
    assert trace.input_tokens.max() == 126_195 and trace.output_tokens.max() == 2_000


def test_alibaba_requests_keep_failed_rows_and_service_time() -> None:
    path = shared_trace("alibaba_genai2026_lora_request_trace.csv")
    trace = load_trace(path)
    assert trace.service_s is not None
    assert trace.service_s.mean() == pytest.approx(28.7, abs=0.05)
    assert trace.service_s.max() == 567.0
    assert not trace.input_tokens.any() and not trace.output_tokens.any()
    start = dt.datetime(2024, 11, 15, 16, 57, 50, tzinfo=dt.UTC).timestamp()
    assert trace.start_epoch == start
    # FAILED / PENDING / PROCESSING rows are kept: the count is every data row in the file.
    assert trace.requests == path.read_bytes().count(b"\n") - 1


def test_alibaba_qps_expansion_matches_summed_rate() -> None:
    path = shared_trace("alibaba_genai2026_qps.tar.gz")
    assert sniff_format(path) == "alibaba-qps"
    # Expected: every window's summed value (req/s) x 60 s; README: 1.611 x 1326 + 1.038 x 1339.
    expected = 60.0 * (1.611 * 1326 + 1.038 * 1339)
    trace = load_trace(path, seed=1)
    assert trace.fmt == "alibaba-qps"
    assert trace.requests == pytest.approx(expected, rel=0.01)
    assert trace.span_s / 3600 == pytest.approx(22.3, abs=0.05)
    assert trace.start_epoch == 1662859176.0
    half = load_trace(path, seed=1, rate_scale=0.5)
    assert half.requests == pytest.approx(expected / 2, rel=0.02)
    gen = load_alibaba_qps(path, request_type="Generative Requests", seed=2)
    counts = np.bincount(np.floor(gen.arrival_s / 60.0).astype(np.int64))
    # README: generative per-minute CV 1.242 (of the summed rate); Poisson noise adds ~0.01.
    assert counts.std() / counts.mean() == pytest.approx(1.242, abs=0.04)
    assert gen.requests == pytest.approx(60.0 * 1.611 * 1326, rel=0.01)


def test_servegen_expansion_mean_rate_and_window_cv() -> None:
    path = shared_trace("servegen_reason_deepseek-r1_trace_csvs.tar.gz")
    assert sniff_format(path) == "servegen"
    trace = load_trace(path, rate_scale=0.05, seed=3)
    assert trace.fmt == "servegen" and trace.start_epoch == 0.0
    assert trace.requests == pytest.approx(1_383_669 * 0.05, rel=0.03)
    per_window = np.bincount(np.floor(trace.arrival_s / 600.0).astype(np.int64), minlength=144)
    assert per_window.shape == (144,)
    assert per_window.std() / per_window.mean() == pytest.approx(0.513, abs=0.03)


def test_servegen_full_scale_is_refused_above_max_requests() -> None:
    path = shared_trace("servegen_language_m-large_trace_csvs.tar.gz")
    with pytest.raises(InputFormatError, match="236,892,826 requests"):
        load_trace(path)
    small = shared_trace("servegen_reason_deepseek-r1_trace_csvs.tar.gz")
    with pytest.raises(InputFormatError, match="max_requests=1,000,000"):
        load_trace(small, max_requests=1_000_000)
    # A one-hour window at full scale stays under the cap (README: mean 960.9 req/min).
    hour = load_trace(small, start_s=36_000, end_s=39_600, seed=0, max_requests=1_000_000)
    assert 10_000 < hour.requests < 200_000
    assert hour.arrival_s[0] >= 0 and hour.arrival_s[-1] < 3_600


# ----------------------------------------------------------------------------- rate expansion


def _servegen_rows(n: int, rate: float, cv: float, offset: float = 0.0) -> str:
    return "".join(f"{offset + 600 * k:.0f},{rate},{cv},Gamma,{1 / cv**2},1.0\n" for k in range(n))


@pytest.mark.parametrize("cv", [1.0, 3.0, 0.5])
def test_gamma_renewal_rate_and_in_window_cv(tmp_path: Path, cv: float) -> None:
    path = tar_gz(
        tmp_path, "sg.tar.gz", {"data/x/m/chunk-0-trace.csv": _servegen_rows(20, 2.0, cv)}
    )
    trace = load_servegen(path, seed=7)
    assert trace.requests == pytest.approx(2.0 * 600 * 20, rel=0.04)
    window = np.floor(trace.arrival_s / 600.0)
    gaps = np.diff(trace.arrival_s)[np.diff(window) == 0]  # inter-arrivals inside a window
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


def test_servegen_clients_add_up_and_idle_windows_are_silent(tmp_path: Path) -> None:
    rows_a = _servegen_rows(4, 1.0, 1.0) + "2400,0,0,,0,0\n"
    rows_b = "0,0,0,,0,0\n" + _servegen_rows(4, 3.0, 1.0, offset=600)
    path = tar_gz(
        tmp_path,
        "two.tar.gz",
        {"data/x/m/chunk-0-trace.csv": rows_a, "data/x/m/chunk-1-trace.csv": rows_b},
    )
    assert sniff_format(path) == "servegen"
    trace = load_trace(path, seed=1)
    counts = np.bincount(np.floor(trace.arrival_s / 600).astype(np.int64), minlength=5)
    expected = np.array([600, 2400, 2400, 2400, 1800])
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    # Slicing selects windows before expanding and re-bases to the window start.
    part = load_trace(path, seed=1, start_s=900, end_s=1500)
    assert part.requests == pytest.approx(2400, rel=0.15)
    assert part.arrival_s[0] >= 0 and part.arrival_s[-1] < 600


def test_rate_expansion_is_deterministic_per_seed(tmp_path: Path) -> None:
    path = tar_gz(tmp_path, "d.tar.gz", {"chunk-0-trace.csv": _servegen_rows(3, 0.5, 2.0)})
    a, b, c = load_trace(path, seed=5), load_trace(path, seed=5), load_trace(path, seed=6)
    assert a == b
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_plain_qps_csv_and_synthetic_rate(tmp_path: Path) -> None:
    rows = "".join(
        f"{1000 + 60 * k + j * 7}.0,1.5,c{j},Generative Requests\n"
        for k in range(30)
        for j in range(2)
    )
    path = write(tmp_path, "qps.csv", "timestamp_anon,value,container_ip,request_type\n" + rows)
    assert sniff_format(path) == "alibaba-qps"
    trace = load_trace(path, seed=3)
    assert trace.start_epoch == 1000.0
    assert trace.requests == pytest.approx(3.0 * 60 * 30, rel=0.03)  # 2 containers x 1.5 req/s
    per_min = np.bincount(np.floor(trace.arrival_s / 60).astype(np.int64))
    assert per_min.std() / per_min.mean() == pytest.approx(1 / np.sqrt(180), rel=0.35)
    with pytest.raises(InputFormatError, match="no rows with request_type 'API Requests'"):
        load_alibaba_qps(path, request_type="API Requests")


# ----------------------------------------------------------------------------- slicing/speedup


def test_slice_while_reading_equals_slicing_after() -> None:
    path = shared_trace("azure_llm_2023_conv.csv")
    full = load_trace(path)
    part = load_trace(path, start_s=600.0, end_s=1800.0)
    assert part == full.slice(600.0, 1800.0)
    assert part.requests == int(np.count_nonzero((full.arrival_s >= 600) & (full.arrival_s < 1800)))
    assert part.arrival_s[0] >= 0.0 and part.arrival_s[-1] < 1200.0
    assert part.start_epoch == pytest.approx(full.start_epoch + 600.0)
    mooncake = shared_trace("mooncake_fast25_conversation_trace.jsonl")
    m_full = load_trace(mooncake)
    assert load_trace(mooncake, start_s=300, end_s=900) == m_full.slice(300, 900)
    assert m_full.slice(300, 900).start_epoch == 0.0


def test_speedup_divides_arrival_times(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", GENERIC_HEADER + "0,1,1\n3,1,1\n9.5,2,2\n")
    trace = load_trace(path, speedup=2.0)
    assert trace.arrival_s.tolist() == [0.0, 1.5, 4.75]
    assert trace.span_s == 4.75
    sliced = load_trace(path, start_s=3.0, speedup=4.0)  # window first, then speedup
    assert sliced.arrival_s.tolist() == [0.0, 1.625]
    with pytest.raises(ValueError, match="speedup"):
        load_trace(path, speedup=0.0)


def test_generic_csv_with_service_column_and_crlf(tmp_path: Path) -> None:
    text = "timestamp_s,input_tokens,output_tokens,service_s\r\n0.5,10,2,1.25\r\n1,0,0,0\r\n"
    trace = load_trace(write(tmp_path, "s.csv", text))
    assert trace.fmt == "csv" and trace.start_epoch == 0.0
    assert trace.arrival_s.tolist() == [0.5, 1.0]
    assert trace.input_tokens.tolist() == [10, 0]
    assert trace.service_s is not None and trace.service_s.tolist() == [1.25, 0.0]


def test_trace_is_immutable_and_validated() -> None:
    trace = Trace("x", "csv", 0.0, np.array([0.0, 1.0]), np.array([1, 2]), np.array([3, 4]), None)
    with pytest.raises(ValueError):
        trace.arrival_s[0] = 5.0
    with pytest.raises(ValueError, match="sorted"):
        Trace(
            "x",
            "csv",
            0.0,
            np.array([1.0, 0.0]),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            None,
        )
    with pytest.raises(ValueError, match="shape"):
        Trace("x", "csv", 0.0, np.array([1.0]), np.zeros(2, np.int64), np.zeros(1, np.int64), None)
    assert trace.slice(0.5, None).arrival_s.tolist() == [0.5]
    assert trace.scaled(1.0) is trace


# ----------------------------------------------------------------------------- errors

ERRORS = [
    ("wrong header", GENERIC_HEADER.replace("output_tokens", "out"), "1:26: wrong header"),
    ("empty file", "", "1:1: empty file"),
    ("only header", GENERIC_HEADER, "2:1: no data rows"),
    ("non-numeric", GENERIC_HEADER + "0.5,10,20\nabc,1,2\n", "3:1: timestamp_s: not a number"),
    ("bad integer", GENERIC_HEADER + "1.0,12x,3\n", "2:5: input_tokens: not an integer: '12x'"),
    ("float tokens", GENERIC_HEADER + "1.0,12.0,3\n", "2:5: input_tokens: not an integer"),
    ("negative tokens", GENERIC_HEADER + "1.0,5,-3\n", "2:7: output_tokens: must be >= 0, got -3"),
    ("negative time", GENERIC_HEADER + "-1.0,5,3\n", "2:1: timestamp_s: must be >= 0"),
    ("nan time", GENERIC_HEADER + "nan,5,3\n", "2:1: timestamp_s: not a finite number"),
    ("missing value", GENERIC_HEADER + "1.0,,3\n", "2:5: input_tokens: missing value"),
    ("too few", GENERIC_HEADER + "1.0,2,3\n1.0,2\n", "3:6: expected 3 fields"),
    ("too many", GENERIC_HEADER + "1.0,2,3,4\n", "2:9: expected 3 fields"),
    ("blank line", GENERIC_HEADER + "1,2,3\n\n2,2,3\n", "3:1: empty line"),
    (
        "unsorted",
        GENERIC_HEADER + "1.0,1,1\n2.0,1,1\n1.5,1,1\n3,1,1\n",
        "4:1: timestamp_s: timestamps must be in ascending order: "
        "'1.5' comes after '2.0' on line 3",
    ),
    # The error earliest in the file wins, whatever the column.
    ("first error", GENERIC_HEADER + "1,1,1\n2,1,x\n1,1,1\n", "3:5: output_tokens: not an integer"),
    ("char columns", GENERIC_HEADER + "1,1,1\n2,1,éé\n", "3:5: output_tokens: not an integer"),
]


@pytest.mark.parametrize(("case", "text", "where"), ERRORS, ids=[e[0] for e in ERRORS])
def test_generic_csv_errors(tmp_path: Path, case: str, text: str, where: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    assert error_of(path, fmt="csv").startswith(f"bad.csv:{where}")


def test_error_deep_in_a_large_file_is_located(tmp_path: Path) -> None:
    n = 200_000
    t = np.arange(n) * 0.01
    lines = [f"{x!r},{i % 977},{i % 13}\n" for i, x in enumerate(t.tolist())]
    lines[150_000] = "1500.0,12,-4\n"
    path = write(tmp_path, "big.csv", GENERIC_HEADER + "".join(lines))
    assert error_of(path).startswith("big.csv:150002:11: output_tokens: must be >= 0")
    # The window only parses the tokens of rows inside it.
    assert load_trace(path, end_s=1000.0).requests == 100_000


AZURE_ROW = "2023-11-16 18:17:03.9799600,4808,10\n"
AZURE_ERRORS = [
    ("header", "TIMESTAMP,Context,GeneratedTokens\n" + AZURE_ROW, "1:11: wrong header"),
    ("hour", AZURE_HEADER + AZURE_ROW + "2023-11-16 25:17:04.0319600,1,1\n", "3:1: TIMESTAMP: "),
    ("date", AZURE_HEADER + AZURE_ROW + "2023-02-30 18:17:04.0,1,1\n", "3:1: TIMESTAMP: invalid"),
    ("garbage", AZURE_HEADER + AZURE_ROW + "yesterday,1,1\n", "3:1: TIMESTAMP: not a timestamp"),
    (
        "unsorted",
        AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:03.9,1,1\n",
        "3:1: TIMESTAMP: timestamps must be in ascending order",
    ),
    ("tokens", AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:05,-1,1\n", "3:21: ContextTokens"),
]


@pytest.mark.parametrize(("case", "text", "where"), AZURE_ERRORS, ids=[e[0] for e in AZURE_ERRORS])
def test_azure_errors(tmp_path: Path, case: str, text: str, where: str) -> None:
    path = write(tmp_path, "az.csv", text)
    assert error_of(path).startswith(f"az.csv:{where}")


def test_azure_accepts_zone_suffixes_and_short_fractions(tmp_path: Path) -> None:
    text = AZURE_HEADER + (
        "2023-11-16 18:00:00,1,1\n2023-11-16T18:00:00.5Z,1,1\n2023-11-16 19:00:01.25+01:00,1,1\n"
    )
    trace = load_trace(write(tmp_path, "az.csv", text))
    assert trace.arrival_s.tolist() == [0.0, 0.5, 1.25]


MOON = '{"timestamp": %s, "input_length": %s, "output_length": 2, "hash_ids": %s}\n'
MOONCAKE_ERRORS = [
    (
        "json",
        MOON % (0, 1, "[1]") + '{"timestamp": 5, "input_length": 1 "x": 2}\n',
        "2:36: invalid",
    ),
    ("negative", MOON % (0, 1, "[1]") + MOON % (5, -1, "[1]"), "2:34: input_length: must be"),
    ("missing", '{"timestamp": 0, "input_length": 1, "hash_ids": []}\n', "1:1: missing key"),
    ("hash ids", MOON % (0, 1, '["a"]'), "1:69: hash_ids: must be a list of integers"),
    ("not object", "[1, 2]\n", "1:1: expected a JSON object"),
    ("unsorted", MOON % (5, 1, "[]") + MOON % (4, 1, "[]"), "2:15: timestamp: timestamps must be"),
    ("bool", MOON % ("true", 1, "[]"), "1:15: timestamp: must be a number"),
]


@pytest.mark.parametrize(
    ("case", "text", "where"), MOONCAKE_ERRORS, ids=[e[0] for e in MOONCAKE_ERRORS]
)
def test_mooncake_errors(tmp_path: Path, case: str, text: str, where: str) -> None:
    path = write(tmp_path, "m.jsonl", text)
    assert error_of(path).startswith(f"m.jsonl:{where}")


def test_alibaba_request_errors(tmp_path: Path) -> None:
    header = "gmt_create,predict_type,predict_status,exec_time_seconds,groupId\n"
    good = "2024-11-15 16:57:50,TXT_2_IMG,SUCCEED,32.0,G0\n"
    bad = write(tmp_path, "a.csv", header + good + "2024-11-15 16:58:00,TXT_2_IMG,FAILED,x,G1\n")
    assert error_of(bad).startswith("a.csv:3:38: exec_time_seconds: not a number: 'x'")
    no_exec = write(tmp_path, "b.csv", "gmt_create,predict_type\n2024-11-15 16:57:50,X\n")
    assert error_of(no_exec).startswith("b.csv:1:24: header has no 'exec_time_seconds' column")


def test_archive_member_errors_name_the_member(tmp_path: Path) -> None:
    rows = "0,1.0,1.0,Gamma,1,1\n600,1.0,abc,Gamma,1,1\n"
    path = tar_gz(tmp_path, "sg.tar.gz", {"data/a/b/chunk-4-trace.csv": rows})
    assert error_of(path) == "sg.tar.gz!data/a/b/chunk-4-trace.csv:2:9: iat_cv: not a number: 'abc'"
    qps = tar_gz(tmp_path, "q.tar.gz", {"qps.csv": "timestamp_anon,value,container_ip,x\n"})
    assert error_of(qps).startswith("q.tar.gz!qps.csv:1:35: wrong header")


def test_unknown_and_unreadable_inputs(tmp_path: Path) -> None:
    unknown = write(tmp_path, "u.csv", "a,b,c\n1,2,3\n")
    assert error_of(unknown).startswith("u.csv:1:1: unknown trace format")
    assert error_of(unknown, fmt="parquet").startswith("u.csv:0:0: unknown trace format 'parquet'")
    assert error_of(write(tmp_path, "e.jsonl", "\n\n")).startswith("e.jsonl:1:1: empty file")
    gz = write(tmp_path, "x.tar.gz", gzip.compress(b"not a tar archive"))
    assert "x.tar.gz:0:0:" in error_of(gz)
    assert error_of(tmp_path / "missing.csv").startswith("missing.csv:0:0: cannot read file")
    with pytest.raises(ValueError, match="rate_scale"):
        load_trace(write(tmp_path, "ok.csv", GENERIC_HEADER + "0,1,1\n"), rate_scale=2.0)


# ----------------------------------------------------------------------------- parsers


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 12, 31)),
    st.integers(min_value=0, max_value=9),
    st.sampled_from(["", "Z", "+05:30", "-01:00"]),
    st.sampled_from([" ", "T"]),
)
def test_vectorized_datetime_agrees_with_reference(
    when: dt.datetime, digits: int, zone: str, sep: str
) -> None:
    frac = f"{when.microsecond:06d}000"[:digits]
    text = when.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{frac}" if digits else "") + zone
    data = text.encode()
    buf = np.frombuffer(data, np.uint8)
    values, ok = _datetime.parse_many(buf, np.array([0]), np.array([len(data)]))
    assert bool(ok[0])
    expected = _datetime.parse_one(data)
    assert int(values[0]) == expected
    base = when.replace(microsecond=0, tzinfo=dt.UTC)
    offset = (
        0
        if zone in ("", "Z")
        else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    )
    assert expected == (int(base.timestamp()) - offset) * 10**9 + int(frac.ljust(9, "0") or 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e12, allow_nan=False), min_size=1, max_size=50))
def test_fast_float_parsing_is_exact(values: list[float]) -> None:
    body = "".join(f"{v!r},{v:.6f}\n" for v in values).encode()
    table = Table.parse(b"h\n" + body, "f", ("a", "b"), 2, first_line=2)
    assert table.floats(0).tolist() == values
    assert table.floats(1).tolist() == [float(f"{v:.6f}") for v in values]
    table.raise_errors()
