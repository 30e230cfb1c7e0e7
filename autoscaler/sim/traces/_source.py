"""Reading trace bytes from plain files and from ``.tar.gz`` archives, with located errors.

A member of an archive is named ``ARCHIVE!MEMBER`` in error messages, e.g.
``servegen_reason_deepseek-r1_trace_csvs.tar.gz!data/reason/deepseek-r1/chunk-3-trace.csv:5:7``.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from autoscaler.core.errors import InputFormatError

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


def read_bytes(path: Path) -> bytes:
    """The whole file; an unreadable or empty file is an InputFormatError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFormatError.at(str(path), 0, 0, f"cannot read file: {exc.strerror}") from exc
    if not data or data.isspace():
        raise InputFormatError.at(str(path), 1, 1, "empty file")
    return data


def read_head(path: Path, size: int = 4096) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise InputFormatError.at(str(path), 0, 0, f"cannot read file: {exc.strerror}") from exc


def trace_name(path: Path) -> str:
    """The file name without its trace suffixes (``x.tar.gz`` -> ``x``)."""
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".csv.gz", ".jsonl", ".json", ".csv", ".gz"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem


def archive_members(path: Path, want: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    """(member name, bytes) for every regular member whose name passes ``want``, sorted by name.

    A corrupt or non-tar archive is an InputFormatError pointing at the archive.
    """
    file = str(path)
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(path, mode="r:*") as tf:
            for member in tf:
                if not member.isfile() or not want(member.name):
                    continue
                fh = tf.extractfile(member)
                if fh is None:  # pragma: no cover - isfile() members always have data
                    continue
                out.append((member.name, fh.read()))
    except FileNotFoundError as exc:
        raise InputFormatError.at(file, 0, 0, f"cannot read file: {exc.strerror}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputFormatError.at(file, 0, 0, f"not a readable .tar.gz archive: {exc}") from exc
    except OSError as exc:
        raise InputFormatError.at(file, 0, 0, f"cannot read archive: {exc}") from exc
    out.sort(key=lambda item: _natural_key(item[0]))
    return out


def member_names(path: Path) -> list[str]:
    """Names of the regular members of an archive (for format sniffing)."""
    try:
        with tarfile.open(path, mode="r:*") as tf:
            return [m.name for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputFormatError.at(
            str(path), 0, 0, f"not a readable .tar.gz archive: {exc}"
        ) from exc


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort ``chunk-2`` before ``chunk-10``."""
    parts: list[tuple[int, int | str]] = []
    token = ""
    digits = False
    for ch in name + "\0":
        if ch.isdigit() != digits or ch == "\0":
            if token:
                parts.append((0, int(token)) if digits else (1, token))
            token = ""
            digits = ch.isdigit()
        token += ch
    return tuple(parts)
