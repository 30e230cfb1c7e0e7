"""Vectorized reading of simple CSV files (no quoting) with exact error locations.

The whole file is one ``bytes`` object. Line and field boundaries come from ``np.flatnonzero`` on
the byte buffer, so splitting a multi-million-line file costs a few vector passes and creates no
per-line Python objects. Numbers are parsed by a vectorized fast path (plain decimals, which is
what every known trace uses); any field it does not accept is re-read with Python's ``float`` /
``int`` / the reference timestamp parser, which either yields the value (e.g. ``1e3``) or the
error message. So the fast path only decides speed, never what is valid.

Errors are collected per column and the one earliest in the file (line, then column) is raised as
``InputFormatError`` with a 1-based line and a 1-based character column pointing at the start of
the offending field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces import _datetime
from autoscaler.sim.traces._source import UTF8_BOM

Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]

_NL, _CR, _COMMA = 10, 13, 44
_FAST_FLOAT_CHARS = 17  # at most 17 characters: mantissa < 10**17 fits int64
_EXACT_MANTISSA = 2**53  # mantissa / 10**k is correctly rounded below this
_POW10 = np.array([10.0**k for k in range(_FAST_FLOAT_CHARS + 1)], np.float64)


def split_header(data: bytes, file: str) -> tuple[list[str], int]:
    """The first line split on commas (names stripped) and the offset of the second line."""
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    nl = data.find(b"\n", start)
    end = len(data) if nl < 0 else nl
    line = data[start:end].rstrip(b"\r")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError.at(file, 1, exc.start + 1, "header is not UTF-8 text") from None
    names = [name.strip() for name in text.split(",")]
    return names, (len(data) if nl < 0 else nl + 1)


def check_header(file: str, found: list[str], expected: tuple[str, ...], what: str) -> None:
    """Exact header match, else an error at the first differing column name."""
    if tuple(found) == expected:
        return
    col = 1
    for i, name in enumerate(found):
        if i >= len(expected) or name != expected[i]:
            break
        col += len(name) + 1
    raise InputFormatError.at(
        file,
        1,
        col,
        f"wrong header for {what}: expected {','.join(expected)!r}, found {','.join(found)!r}",
    )


@dataclass
class Table:
    """Rows of a CSV body as field offsets into ``data``; parse columns on demand."""

    file: str
    data: bytes
    buf: npt.NDArray[np.uint8]
    names: tuple[str, ...]
    first_line: int  # 1-based line number of row 0
    line_starts: Int64s  # byte offset of each row's line
    starts: tuple[Int64s, ...]  # per column: byte offset of each row's field
    ends: tuple[Int64s, ...]
    errors: list[tuple[int, int, str]] = field(default_factory=list)  # (row, column, message)

    @property
    def rows(self) -> int:
        return int(self.line_starts.shape[0])

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(
        cls, data: bytes, file: str, names: tuple[str, ...], offset: int, first_line: int
    ) -> Table:
        """Split ``data[offset:]`` into rows of exactly ``len(names)`` comma-separated fields.

        Trailing blank lines are ignored; a blank line before the last row is an error.
        """
        end = len(data)
        while end > offset and data[end - 1] in b"\r\n \t":
            end -= 1
        buf = np.frombuffer(data, dtype=np.uint8)
        body = buf[offset:end]
        ncols = len(names)
        if end <= offset:
            raise InputFormatError.at(file, first_line, 1, "no data rows")
        nl = np.flatnonzero(body == _NL).astype(np.int64) + offset
        line_starts = np.concatenate([np.array([offset], np.int64), nl + 1])
        line_ends = np.concatenate([nl, np.array([end], np.int64)])
        # A '\r' before '\n' (CRLF files) is not part of the last field.
        last_ends = line_ends - (buf[np.maximum(line_ends - 1, 0)] == _CR)
        last_ends = np.maximum(last_ends, line_starts)
        commas = np.flatnonzero(body == _COMMA).astype(np.int64) + offset
        upto = np.searchsorted(commas, line_ends)
        per_line = np.diff(upto, prepend=0)
        bad = np.flatnonzero(per_line != ncols - 1)
        if bad.size:
            row = int(bad[0])
            ls, le = int(line_starts[row]), int(last_ends[row])
            line = first_line + row
            if le == ls:
                raise InputFormatError.at(file, line, 1, "empty line")
            found = int(per_line[row]) + 1
            if found > ncols:
                extra = int(commas[int(upto[row]) - found + ncols]) + 1  # first extra field
                col = _char_col(data, ls, extra)
            else:
                col = _char_col(data, ls, le)
            raise InputFormatError.at(
                file,
                line,
                col,
                f"expected {ncols} fields ({','.join(names)}), found {found}",
            )
        grid = commas.reshape(-1, ncols - 1) if ncols > 1 else np.zeros((len(nl) + 1, 0), np.int64)
        starts = [line_starts] + [grid[:, k] + 1 for k in range(ncols - 1)]
        ends = [grid[:, k] for k in range(ncols - 1)] + [last_ends]
        return cls(file, data, buf, names, first_line, line_starts, tuple(starts), tuple(ends))

    def take(self, lo: int, hi: int) -> Table:
        """Rows ``lo:hi`` as a new table (line numbers stay right; errors are not carried)."""
        return Table(
            self.file,
            self.data,
            self.buf,
            self.names,
            self.first_line + lo,
            self.line_starts[lo:hi],
            tuple(s[lo:hi] for s in self.starts),
            tuple(e[lo:hi] for e in self.ends),
        )

    # ------------------------------------------------------------------ errors
    def fail(self, row: int, col: int, message: str) -> None:
        self.errors.append((row, col, message))

    def raise_errors(self, other_columns: Callable[[Table], object] | None = None) -> None:
        """Raise the error that comes first in the file, if any was recorded.

        Loaders check the time column of every row first and the other columns only inside the
        requested window. When the time column has an error, ``other_columns`` (parsing the rest
        of a table) is run on the rows up to it, so an earlier error elsewhere still wins.
        """
        if not self.errors:
            return
        if other_columns is not None:
            head = self.take(0, min(self.errors)[0] + 1)
            other_columns(head)
            self.errors.extend(head.errors)
        row, col, message = min(self.errors)
        ls = int(self.line_starts[row])
        raise InputFormatError.at(
            self.file,
            self.first_line + row,
            _char_col(self.data, ls, int(self.starts[col][row])),
            f"{self.names[col]}: {message}",
        )

    def text(self, col: int, row: int) -> bytes:
        return self.data[int(self.starts[col][row]) : int(self.ends[col][row])]

    # ------------------------------------------------------------------ columns
    def strings(self, col: int) -> list[str]:
        """Column as Python strings (for small categorical columns)."""
        return [
            self.data[s:e].decode("utf-8", "replace")
            for s, e in zip(self.starts[col].tolist(), self.ends[col].tolist(), strict=True)
        ]

    def floats(self, col: int, *, minimum: float | None = None) -> Float64s:
        """Finite floats; invalid entries are recorded as errors and come back as NaN."""
        s, e = self.starts[col], self.ends[col]
        values, ok = _fast_decimals(self.buf, s, e)
        for row in np.flatnonzero(~ok).tolist():
            raw = self.text(col, row)
            if not raw.strip():
                self.fail(row, col, "missing value")
                values[row] = np.nan
                continue
            try:
                values[row] = float(raw)
            except ValueError:
                self.fail(row, col, f"not a number: {_show(raw)}")
                values[row] = np.nan
                continue
            if not np.isfinite(values[row]):
                self.fail(row, col, f"not a finite number: {_show(raw)}")
                values[row] = np.nan
        if minimum is not None:
            below = np.flatnonzero(values < minimum)
            if below.size:
                row = int(below[0])
                self.fail(row, col, f"must be >= {minimum:g}, got {_show(self.text(col, row))}")
                values[below] = np.nan
        return values

    def ints(self, col: int, *, minimum: int | None = 0) -> Int64s:
        """Integers (>= minimum); invalid entries are recorded as errors and come back as -1."""
        s, e = self.starts[col], self.ends[col]
        values, ok = _fast_uints(self.buf, s, e)
        for row in np.flatnonzero(~ok).tolist():
            raw = self.text(col, row)
            if not raw.strip():
                self.fail(row, col, "missing value")
                values[row] = -1
                continue
            try:
                value = int(raw)
            except ValueError:
                self.fail(row, col, f"not an integer: {_show(raw)}")
                values[row] = -1
                continue
            if minimum is not None and value < minimum:
                self.fail(row, col, f"must be >= {minimum}, got {value}")
                values[row] = -1
                continue
            if not -(2**63) <= value < 2**63:
                self.fail(row, col, f"integer out of range: {_show(raw)}")
                values[row] = -1
                continue
            values[row] = value
        return values

    def datetimes_ns(self, col: int) -> tuple[Int64s, npt.NDArray[np.bool_]]:
        """Calendar timestamps as UTC nanoseconds, plus the mask of valid rows."""
        values, ok = _datetime.parse_many(self.buf, self.starts[col], self.ends[col])
        valid = ok.copy()
        for row in np.flatnonzero(~ok).tolist():
            raw = self.text(col, row)
            try:
                values[row] = _datetime.parse_one(raw)
            except ValueError as exc:
                self.fail(row, col, str(exc) if raw.strip() else "missing value")
                continue
            valid[row] = True
        return values, valid

    def check_sorted(
        self, col: int, values: npt.NDArray[np.float64] | Int64s, valid: npt.NDArray[np.bool_]
    ) -> None:
        """Record an error at the first row whose value is below the previous row's."""
        if values.shape[0] < 2:
            return
        down = (values[1:] < values[:-1]) & valid[1:] & valid[:-1]
        hit = np.flatnonzero(down)
        if hit.size:
            row = int(hit[0]) + 1
            self.fail(
                row,
                col,
                f"timestamps must be in ascending order: {_show(self.text(col, row))} comes "
                f"after {_show(self.text(col, row - 1))} on line {self.first_line + row - 1}",
            )


def _fast_decimals(
    buf: npt.NDArray[np.uint8], starts: Int64s, ends: Int64s
) -> tuple[Float64s, npt.NDArray[np.bool_]]:
    """Plain ``digits[.digits]`` fields of up to 17 characters, exactly rounded."""
    n = starts.shape[0]
    length = ends - starts
    width = int(min(int(length.max()), _FAST_FLOAT_CHARS)) if n else 0
    mant = np.zeros(n, np.int64)
    ndig = np.zeros(n, np.int64)
    nfrac = np.zeros(n, np.int64)
    seen_dot = np.zeros(n, np.bool_)
    ok = (length >= 1) & (length <= _FAST_FLOAT_CHARS)
    last = buf.shape[0] - 1
    for j in range(width):
        inside = j < length
        c = buf[np.minimum(starts + j, last)]
        d = c - np.uint8(48)
        is_digit = inside & (d < 10)
        is_dot = inside & (c == ord("."))
        ok &= ~inside | is_digit | (is_dot & ~seen_dot)
        mant = np.where(is_digit, mant * 10 + d.astype(np.int64), mant)
        ndig += is_digit
        nfrac += is_digit & seen_dot
        seen_dot |= is_dot
    ok &= (ndig > 0) & (mant <= _EXACT_MANTISSA)
    values = mant.astype(np.float64) / _POW10[np.minimum(nfrac, _FAST_FLOAT_CHARS)]
    return values, ok


def _fast_uints(
    buf: npt.NDArray[np.uint8], starts: Int64s, ends: Int64s
) -> tuple[Int64s, npt.NDArray[np.bool_]]:
    """Plain digit strings of up to 18 characters."""
    n = starts.shape[0]
    length = ends - starts
    width = int(min(int(length.max()), 18)) if n else 0
    value = np.zeros(n, np.int64)
    ok = (length >= 1) & (length <= 18)
    last = buf.shape[0] - 1
    for j in range(width):
        inside = j < length
        d = buf[np.minimum(starts + j, last)] - np.uint8(48)
        ok &= ~inside | (d < 10)
        value = np.where(inside, value * 10 + d.astype(np.int64), value)
    return value, ok


def _char_col(data: bytes, line_start: int, pos: int) -> int:
    """1-based character column of byte ``pos`` in the line starting at ``line_start``."""
    return len(data[line_start:pos].decode("utf-8", "replace")) + 1


def _show(raw: bytes) -> str:
    s = raw.decode("utf-8", "replace")
    return repr(s if len(s) <= 40 else s[:37] + "...")
