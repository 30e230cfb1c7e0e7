"""Calendar timestamps (``YYYY-MM-DD HH:MM:SS[.f{1,9}][Z|+HH:MM]``) to UTC nanoseconds.

``parse_one`` is the reference (one string, clear error messages); ``parse_many`` is the
vectorized version over a byte buffer and agrees with it on every string it accepts. Strings the
fast path does not accept are handed to ``parse_one`` by the caller, so the two can never
disagree on what is valid. Timestamps without a zone are read as UTC.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import numpy.typing as npt

_RE = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?"
)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_NS = 1_000_000_000
MAX_FRACTION_DIGITS = 9


def parse_one(text: bytes) -> int:
    """UTC nanoseconds since the UNIX epoch; ValueError with a readable message otherwise."""
    m = _RE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"not a timestamp of the form YYYY-MM-DD HH:MM:SS[.fraction]: {_show(text)}"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        date = dt.date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"invalid date {_show(text)}: {exc}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid time of day {_show(text)}")
    frac = m.group(7) or b""
    ns = int(frac.ljust(MAX_FRACTION_DIGITS, b"0")) if frac else 0
    offset_s = 0
    zone = m.group(8)
    if zone and zone != b"Z":
        sign = 1 if zone[:1] == b"+" else -1
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            raise ValueError(f"invalid UTC offset {_show(text)}")
        offset_s = sign * (zh * 3600 + zm * 60)
    days = date.toordinal() - _EPOCH_ORDINAL
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return seconds * _NS + ns


def parse_many(
    buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Vectorized ``parse_one`` over fields ``buf[starts[i]:ends[i]]``.

    Returns (nanoseconds, ok). Where ``ok`` is False the value is garbage and the caller must use
    ``parse_one`` to get the value or the error; this path only handles the common layouts
    (space or ``T`` separator, 0-9 fraction digits, no zone or ``Z`` or ``+HH:MM``).
    """
    n = starts.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.ones(0, np.bool_)
    length = ends - starts
    last = buf.shape[0] - 1

    def at(pos: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        out: npt.NDArray[np.uint8] = buf[np.minimum(pos, last)]
        return out

    ok = length >= 19

    def digits(offsets: tuple[int, ...]) -> npt.NDArray[np.int64]:
        nonlocal ok
        value = np.zeros(n, np.int64)
        for off in offsets:
            d = at(starts + off) - np.uint8(48)  # wraps for bytes below '0'
            ok &= d < 10
            value = value * 10 + d.astype(np.int64)
        return value

    def expect(off: int, *chars: bytes) -> None:
        nonlocal ok
        c = at(starts + off)
        hit = np.zeros(n, np.bool_)
        for ch in chars:
            hit |= c == ord(ch)
        ok &= hit

    year = digits((0, 1, 2, 3))
    expect(4, b"-")
    month = digits((5, 6))
    expect(7, b"-")
    day = digits((8, 9))
    expect(10, b" ", b"T")
    hour = digits((11, 12))
    expect(13, b":")
    minute = digits((14, 15))
    expect(16, b":")
    second = digits((17, 18))

    # Optional fraction: '.' at 19 followed by 1..9 digits.
    has_dot = (length > 19) & (at(starts + 19) == ord("."))
    frac = np.zeros(n, np.int64)
    nfrac = np.zeros(n, np.int64)
    running = has_dot.copy()
    for j in range(MAX_FRACTION_DIGITS + 1):
        pos = 20 + j
        d = at(starts + pos) - np.uint8(48)
        running &= (pos < length) & (d < 10)
        if j == MAX_FRACTION_DIGITS:
            ok &= ~running  # a 10th digit: leave it to the reference parser
            break
        frac = np.where(running, frac * 10 + d.astype(np.int64), frac)
        nfrac += running
    ok &= ~has_dot | (nfrac > 0)
    frac_ns = frac * _POW10[MAX_FRACTION_DIGITS - nfrac]

    # Optional zone after the fraction.
    zstart = np.where(has_dot, 20 + nfrac, 19)
    zlen = length - zstart
    zone_char = at(starts + zstart)
    is_z = (zlen == 1) & (zone_char == ord("Z"))
    is_off = (zlen == 6) & ((zone_char == ord("+")) | (zone_char == ord("-")))
    ok &= (zlen == 0) | is_z | is_off
    zdig = np.zeros(n, np.int64)
    for off in (1, 2, 4, 5):
        d = at(starts + zstart + off) - np.uint8(48)
        ok &= ~is_off | (d < 10)
        zdig = zdig * 10 + np.where(is_off, d.astype(np.int64), 0)
    ok &= ~is_off | (at(starts + zstart + 3) == ord(":"))
    zh, zm = zdig // 100, zdig % 100
    ok &= (zh <= 23) & (zm <= 59)
    offset_s = np.where(zone_char == ord("-"), -1, 1) * (zh * 3600 + zm * 60)
    offset_s = np.where(is_off, offset_s, 0)

    # Calendar checks (same rules as datetime.date).
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, month, 1) - 1] + (leap & (month == 2))
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= dim)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)

    days = _days_from_civil(year, month, day)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return seconds * _NS + frac_ns, ok


_POW10 = np.array([10**k for k in range(MAX_FRACTION_DIGITS + 1)], np.int64)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _days_from_civil(
    y: npt.NDArray[np.int64], m: npt.NDArray[np.int64], d: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(m > 2, m - 3, m + 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: npt.NDArray[np.int64] = era * 146097 + doe - 719468
    return days


def _show(text: bytes) -> str:
    s = text.decode("utf-8", "replace")
    return repr(s if len(s) <= 60 else s[:57] + "...")
