"""Reading the samples a scrape needs from a Prometheus text exposition body (format 0.0.4).

prometheus_client's parser reads every line in pure Python: about 6 ms for a 233-line vLLM body
and 12 ms for 382 lines (``benchmarks/bench_scrape.py``), 6-12 s of CPU per tick at 1,000 pods.
A scrape only needs the families its mappings name: 31 of those 233 lines for the vLLM preset.
So a ``Scanner`` is built once per set of wanted sample names, and for each body it

1. checks that the body looks like the text format: every line starts like a comment, a blank or
   a metric name (HTML, JSON and binary bodies fail here);
2. finds the wanted lines with one compiled regex (C speed) and parses them strictly; a wanted
   line the strict pattern does not accept (unusual spacing, exemplars) is handed to
   prometheus_client's parser, the reference, and is an error only if that rejects it too;
3. when no wanted line is found at all, checks every line against the line grammar, so a 200
   carrying a plain-text error page is an error rather than "this server has no such metric".

Other lines are not parsed: a malformed line in a family no mapping reads does not cost the
target its signals (Prometheus would drop the whole scrape; we use what we can read).
``tests/unit/test_promtext.py`` checks the scanner against prometheus_client's parser.
Scanner and mapping together cost about 180 us for the 233-line body, 300 us for 382 lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LabelSet", "ParseError", "RawSample", "Scanner"]

# Every regex here is linear in its input: quantifiers that could split a run of characters in
# several ways are possessive (*+, ++), so a hostile or broken body cannot stall the event loop.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# A line that cannot start a comment, a blank or a sample (the body is prefixed with "\n").
_BAD_LINE_START = re.compile(r"\n[ \t]*+[^#a-zA-Z_:\n \t\r]")
_LABEL_VALUE = r'"(?:[^"\\\n]++|\\.)*+"'
# Label text up to the closing brace; quoted values (which may hold braces) are taken whole.
_LABEL_TEXT = rf'(?:[^"}}\n]++|{_LABEL_VALUE})*+'
# The line grammar, for bodies in which no wanted line was found.
_ANY_LINE = re.compile(
    rf"[ \t]*+(?:#.*|[a-zA-Z_:][a-zA-Z0-9_:]*+(?:\{{{_LABEL_TEXT}\}}[ \t]*+|[ \t]++)"
    rf"([^ \t\r]++).*|)\r?"
)
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*+"
_LABELS = re.compile(
    rf"[ \t]*+(?:{_LABEL_NAME}[ \t]*+=[ \t]*+{_LABEL_VALUE}[ \t]*+,[ \t]*+)*+"
    rf"(?:{_LABEL_NAME}[ \t]*+=[ \t]*+{_LABEL_VALUE}[ \t]*+)?"
)
_LABEL_PAIR = re.compile(rf'({_LABEL_NAME})[ \t]*+=[ \t]*+"((?:[^"\\\n]++|\\.)*+)"')
_ESCAPE = re.compile(r'\\[\\n"]')
_UNESCAPED = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_LABEL_CACHE_MAX = 65_536
_EMPTY: Mapping[str, str] = MappingProxyType({})


class ParseError(ValueError):
    """The body is not Prometheus text exposition format (or a wanted line is malformed)."""


@dataclass(frozen=True, slots=True)
class LabelSet:
    """The labels of one sample. ``series`` identifies the series (every label but ``le``);
    ``le`` is a histogram bucket's upper bound, None for other samples."""

    labels: Mapping[str, str]
    series: tuple[tuple[str, str], ...]
    le: float | None

    def matches(self, wanted: tuple[tuple[str, str], ...]) -> bool:
        labels = self.labels
        return all(labels.get(k) == v for k, v in wanted)


NO_LABELS = LabelSet(_EMPTY, (), None)


class RawSample(NamedTuple):
    name: str
    labels: LabelSet
    value: float
    timestamp: float | None  # seconds; the exposition gives milliseconds


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(0)], value) if "\\" in value else value


def _label_set(labels: Mapping[str, str]) -> LabelSet:
    le_text = labels.get("le")
    le: float | None = None
    if le_text is not None:
        try:
            le = float(le_text)
        except ValueError:
            raise ParseError(f"bucket bound le={le_text!r} is not a number") from None
    series = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
    return LabelSet(MappingProxyType(dict(labels)), series, le)


def parse_labels(text: str) -> LabelSet:
    """The labels between the braces of a sample line."""
    if not text.strip():
        return NO_LABELS
    if _LABELS.fullmatch(text) is None:
        raise ParseError(f"malformed labels {{{text}}}")
    labels: dict[str, str] = {}
    for name, value in _LABEL_PAIR.findall(text):
        if name in labels:
            raise ParseError(f"label {name!r} given twice in {{{text}}}")
        labels[name] = _unescape(value)
    return _label_set(labels)


def _number(text: str) -> float:
    try:
        # Python's float() also takes "1_000"; the format (and the reference parser) does not.
        if "_" not in text:
            return float(text)
    except ValueError:
        pass
    raise ParseError(f"value {text!r} is not a number")


def _reference_parse(line: str) -> list[RawSample]:
    """Parse one line with prometheus_client's parser (the reference), for the unusual lines."""
    try:
        families = list(text_string_to_metric_families(line + "\n"))
    except Exception as e:  # the reference parser raises bare ValueError, IndexError, ...
        raise ParseError(f"malformed line {line[:200]!r}") from e
    out: list[RawSample] = []
    for family in families:
        for s in family.samples:
            ts = None if s.timestamp is None else float(s.timestamp)
            out.append(RawSample(s.name, _label_set(s.labels), float(s.value), ts))
    return out


def check_grammar(body: str) -> None:
    """Raise ParseError unless every line is a comment, a blank or ``name[{labels}] value``."""
    for number, line in enumerate(body.split("\n"), 1):
        m = _ANY_LINE.fullmatch(line)
        if m is None:
            raise ParseError(f"line {number} is not Prometheus text format")
        if m.group(1) is not None:
            _number(m.group(1))


def _alternation(names: Sequence[str]) -> str:
    """A regex matching exactly ``names``, as a trie (``vllm:(?:num_requests_(?:running|...``):
    the regex engine then tests each line's first characters once, not once per name."""
    trie: dict[str, Any] = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        alt = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # Greedy: a longer name is tried before its prefix, which is kept on backtracking.
        return f"(?:{alt})?" if ends else alt

    return build(trie)


class Scanner:
    """Finds and parses the samples named ``names`` in exposition bodies.

    Reusable and cheap per body; memoises parsed label sets, which repeat from scrape to scrape.
    """

    def __init__(self, names: Iterable[str]) -> None:
        wanted = sorted(set(names))
        for name in wanted:
            if _METRIC_NAME.fullmatch(name) is None:
                raise ValueError(f"{name!r} is not a Prometheus metric name")
        self.names = frozenset(wanted)
        self._line: re.Pattern[str] | None = None
        if wanted:
            # Group 1: a wanted name; 2-4: labels, value and timestamp of a well-formed line;
            # 5: the rest of a line that is not well-formed, for the reference parser.
            self._line = re.compile(
                rf"\n[ \t]*+({_alternation(wanted)})(?:(?:\{{({_LABEL_TEXT})\}}[ \t]*+|[ \t]++)"
                rf"([^ \t\r\n{{][^ \t\r\n]*+)(?:[ \t]++([^ \t\r\n]++))?[ \t\r]*+(?=\n)"
                rf"|([{{ \t][^\n]*+))"
            )
        self._labels: dict[str, LabelSet] = {}

    def _label_set(self, text: str) -> LabelSet:
        if len(self._labels) >= _LABEL_CACHE_MAX:
            self._labels.clear()
        found = self._labels[text] = parse_labels(text)
        return found

    def scan(self, body: str) -> dict[str, list[RawSample]]:
        """Wanted sample name -> its samples, in body order. Raises ParseError."""
        text = "\n" + body + "\n"
        bad = _BAD_LINE_START.search(text)
        if bad is not None:
            line = text.count("\n", 0, bad.start()) + 1
            raise ParseError(f"line {line} is not Prometheus text format")
        out: dict[str, list[RawSample]] = {}
        if self._line is not None:
            cache = self._labels
            for name, labels, value, ts, odd in self._line.findall(text):
                if odd:
                    for sample in _reference_parse(name + odd):
                        out.setdefault(sample.name, []).append(sample)
                    continue
                label_set = cache.get(labels)
                if label_set is None:
                    label_set = self._label_set(labels)
                sample = RawSample(
                    name, label_set, _number(value), _number(ts) / 1000.0 if ts else None
                )
                found = out.get(name)
                if found is None:
                    out[name] = [sample]
                else:
                    found.append(sample)
        if not out:
            check_grammar(body)
        return out
