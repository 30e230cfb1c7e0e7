"""Guessing a trace's format from its name and first bytes (``fmt="auto"``).

- gzip data: a tar archive holding ``qps.csv`` is ``alibaba-qps``; one holding
  ``chunk-<n>-trace.csv`` members is ``servegen``.
- ``*.jsonl`` or a first line starting with ``{``: ``mooncake``.
- CSV by the first header column: ``TIMESTAMP`` is ``azure``, ``gmt_create`` is
  ``alibaba-requests``, ``timestamp_s`` is ``csv``, ``timestamp_anon`` is ``alibaba-qps`` (the
  loader then checks the whole header and points at the first wrong column); a headerless row
  ``number,number,number,...`` in a ``chunk-<n>-trace.csv`` file is ``servegen``.

Anything else is an InputFormatError at line 1, column 1.
"""

from __future__ import annotations

import re
from pathlib import Path

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces import alibaba_qps, alibaba_requests, azure, generic, servegen
from autoscaler.sim.traces._source import GZIP_MAGIC, UTF8_BOM, member_names, read_head

_SERVEGEN_ROW = re.compile(r"^\d+(\.\d*)?,[0-9.eE+-]+,[0-9.eE+-]+,(Gamma|Weibull|)?,")


def sniff_format(path: str | Path) -> str:
    path = Path(path)
    file = str(path)
    head = read_head(path)
    if not head.strip():
        raise InputFormatError.at(file, 1, 1, "empty file")
    if head.startswith(GZIP_MAGIC):
        names = member_names(path)
        if any(n.rsplit("/", 1)[-1] == alibaba_qps.MEMBER for n in names):
            return "alibaba-qps"
        if any(servegen.MEMBER_RE.search(n) for n in names):
            return "servegen"
        raise InputFormatError.at(
            file, 0, 0, "unknown trace format: archive holds neither qps.csv nor chunk-*-trace.csv"
        )
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM) :]
    first = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if path.name.endswith(".jsonl") or first.lstrip().startswith("{"):
        return "mooncake"
    columns = tuple(c.strip() for c in first.split(","))
    # Decided by the first column name, so a header that is wrong further right gets the
    # format's own error pointing at the bad column instead of "unknown format".
    if columns[0] == azure.HEADER[0]:
        return "azure"
    if columns[0] == alibaba_requests.TIME_COLUMN:
        return "alibaba-requests"
    if columns[0] == generic.HEADER[0]:
        return "csv"
    if columns[0] == alibaba_qps.HEADER[0]:
        return "alibaba-qps"
    if servegen.MEMBER_RE.search(path.name) and _SERVEGEN_ROW.match(first):
        return "servegen"
    shown = first if len(first) <= 80 else first[:77] + "..."
    raise InputFormatError.at(
        file,
        1,
        1,
        f"unknown trace format (first line {shown!r}); expected an Azure LLM CSV, Mooncake "
        f"JSONL, Alibaba request CSV or qps.tar.gz, ServeGen trace tarball, or a CSV with "
        f"header {','.join(generic.HEADER)!r}",
    )
