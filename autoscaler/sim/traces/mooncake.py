"""Mooncake (FAST'25) JSON Lines trace: one object per line.

``{"timestamp": <ms since trace start>, "input_length": int, "output_length": int,
"hash_ids": [int, ...]}``. Every line is parsed and validated (including ``hash_ids``, which is
not kept in the Trace yet). Timestamps are milliseconds relative to the trace start, so t=0 is
the trace start (not necessarily the first request) and ``start_epoch`` is 0.0. Lines must be
in ascending timestamp order (equal timestamps are common: the release quantizes them to ~3 s).
Blank lines are skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NoReturn

import numpy as np

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces._source import UTF8_BOM, read_bytes, trace_name
from autoscaler.sim.traces._window import check_window, origin
from autoscaler.sim.traces.model import Trace

FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


def load_mooncake(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    name: str | None = None,
) -> Trace:
    check_window(start_s, end_s)
    path = Path(path)
    file = str(path)
    data = read_bytes(path)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    lo = -math.inf if start_s is None else start_s
    hi = math.inf if end_s is None else end_s
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    prev_ms = -math.inf
    prev_line = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFormatError.at(file, lineno, exc.start + 1, "not UTF-8 text") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFormatError.at(file, lineno, exc.colno, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise InputFormatError.at(file, lineno, 1, "expected a JSON object")
        for key in FIELDS:
            if key not in obj:
                raise InputFormatError.at(file, lineno, 1, f"missing key {key!r}")
        ts = obj["timestamp"]
        if not _is_number(ts) or not math.isfinite(ts) or ts < 0:
            _bad(file, lineno, text, "timestamp", f"must be a number >= 0 (ms), got {ts!r}")
        for key in ("input_length", "output_length"):
            value = obj[key]
            if not _is_int(value) or not 0 <= value < 2**63:
                _bad(file, lineno, text, key, f"must be an integer >= 0, got {value!r}")
        hashes = obj["hash_ids"]
        if not isinstance(hashes, list) or not all(map(_is_int, hashes)):
            _bad(file, lineno, text, "hash_ids", "must be a list of integers")
        if ts < prev_ms:
            _bad(
                file,
                lineno,
                text,
                "timestamp",
                f"timestamps must be in ascending order: {ts!r} comes after {prev_ms!r} "
                f"on line {prev_line}",
            )
        prev_ms, prev_line = ts, lineno
        t = ts / 1000.0
        if lo <= t < hi:
            times.append(t)
            inputs.append(obj["input_length"])
            outputs.append(obj["output_length"])
    if prev_line == 0:
        raise InputFormatError.at(file, 1, 1, "empty file")
    return Trace(
        name=name or trace_name(path),
        fmt="mooncake",
        start_epoch=0.0,
        arrival_s=np.array(times, np.float64) - origin(start_s),
        input_tokens=np.array(inputs, np.int64),
        output_tokens=np.array(outputs, np.int64),
        service_s=None,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(file: str, line: int, text: str, key: str, message: str) -> NoReturn:
    """Raise at the value of ``key`` in the line (or column 1 if it cannot be found)."""
    at = text.find(f'"{key}"')
    col = 1
    if at >= 0:
        colon = text.find(":", at + len(key) + 2)
        col = (colon + 1 if colon >= 0 else at) + 1
        while col <= len(text) and text[col - 1] == " ":
            col += 1
    raise InputFormatError.at(file, line, col, f"{key}: {message}")
