"""The targeted exposition scanner agrees with prometheus_client's parser, the reference."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.service.clock import perf_timer
from autoscaler.sources.promtext import ParseError, Scanner, parse_labels

Key = tuple[str, tuple[tuple[str, str], ...], str, float | None]


def _value_key(v: float) -> str:
    return "nan" if math.isnan(v) else repr(float(v))


def reference(body: str) -> list[Key]:
    out: list[Key] = []
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            ts = None if s.timestamp is None else float(s.timestamp)
            out.append((s.name, tuple(sorted(s.labels.items())), _value_key(s.value), ts))
    return sorted(out, key=repr)


def scanned(body: str, names: set[str] | None = None) -> list[Key]:
    wanted = names if names is not None else {k[0] for k in reference(body)}
    out: list[Key] = []
    for samples in Scanner(wanted).scan(body).values():
        for s in samples:
            labels = tuple(sorted(s.labels.labels.items()))
            out.append((s.name, labels, _value_key(s.value), s.timestamp))
    return sorted(out, key=repr)


label_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)
numbers = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=150, deadline=None)
@given(
    gauges=st.lists(st.tuples(label_values, numbers), max_size=4),
    counts=st.lists(st.tuples(label_values, st.floats(0, 1e12)), max_size=3),
    observations=st.lists(st.floats(0, 100), max_size=20),
)
def test_scanner_matches_the_reference_parser(
    gauges: list[tuple[str, float]],
    counts: list[tuple[str, float]],
    observations: list[float],
) -> None:
    reg = CollectorRegistry()
    g = Gauge("vllm:num_requests_waiting", "queue", ["model_name"], registry=reg)
    for label, value in gauges:
        g.labels(label).set(value)
    c = Counter("vllm:prompt_tokens", "tokens", ["model_name", "finished_reason"], registry=reg)
    for label, value in counts:
        c.labels(label, "stop").inc(value)
    h = Histogram("ttft_seconds", "ttft", ["model_name"], registry=reg, buckets=(0.1, 1, 10))
    for x in observations:
        h.labels("m").observe(x)
    body = generate_latest(reg).decode()
    assert scanned(body) == reference(body)


def test_only_wanted_names_are_read_and_by_exact_name() -> None:
    body = (
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{model_name="m"} 10.0\n'
        'vllm:prompt_tokens_created{model_name="m"} 1.7e9\n'
        'vllm:prompt_tokens{model_name="m"} 3.0\n'
    )
    got = Scanner({"vllm:prompt_tokens"}).scan(body)
    assert list(got) == ["vllm:prompt_tokens"]
    assert [s.value for s in got["vllm:prompt_tokens"]] == [3.0]


@pytest.mark.parametrize(
    "line",
    [
        "m 1",
        "m\t1",
        "m{} 1",
        'm{a="x"} 1',
        'm{a="x",} 1',
        'm{ a = "x" , b="y" } 1',
        'm{a="x"}1',
        'm{a="q\\"uote\\\\back\\nnl"} 2.5',
        'm{path="/a}b"} 3',
        "m 1 1700000000123",
        "m -Inf",
        "m +Inf",
        "m NaN",
        "m 1e-3",
        "   m 7",
        "m 1 \r",
        # Lines the strict pattern leaves to the reference parser:
        'm {a="x"} 1',
        'm{a="x"} 1 # {trace_id="abc"} 2',
    ],
)
def test_line_forms_agree_with_the_reference(line: str) -> None:
    body = f"# TYPE m gauge\n{line}\n"
    assert scanned(body, {"m"}) == reference(body)


def test_escapes_are_undone_and_le_is_split_out() -> None:
    ls = parse_labels('le="0.5",model_name="a\\"b"')
    assert ls.le == 0.5
    assert ls.series == (("model_name", 'a"b'),)
    assert ls.labels == {"le": "0.5", "model_name": 'a"b'}


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>502 Bad Gateway</body></html>\n",
        '{"error": "not found"}\n',
        "upstream connect error or disconnect/reset before headers\n",
        "Not Found",
        "m 1\n\x00\x01binary\n",
        'm{a="x" 1\n',  # a wanted line cut short
        'm{a="x",a="y"} 1\n',  # the same label twice
        "m 1_000\n",  # Python's float() takes it; the format does not
    ],
)
def test_garbage_is_a_parse_error(body: str) -> None:
    with pytest.raises(ParseError):
        Scanner({"m"}).scan(body)


def test_empty_body_and_comments_only_are_not_errors() -> None:
    assert Scanner({"m"}).scan("") == {}
    assert Scanner({"m"}).scan("# HELP other x\n# TYPE other gauge\n") == {}


def test_a_malformed_line_of_an_unread_family_is_tolerated() -> None:
    body = "other{broken 1\nm 4\n"
    assert [s.value for s in Scanner({"m"}).scan(body)["m"]] == [4.0]


def test_invalid_wanted_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        Scanner({"not a name"})


N = 100_000
HOSTILE = [
    'm{a="' + "x" * N,  # an unterminated label value
    "m{" + "}" * N + " 1",
    'm{a="' + '\\"}' * N + '"} 1',
    "m " + " " * N + "x",
    'm{a="b"} ' + "1 " * N,
    "m{" + 'a="b",' * N + "} 1",
    "other{" + '"}' * N,
    "o" * N + "{",
    # Lines the reference parser gets (prometheus_client's, which walks characters in Python):
    "m {" + "\\" * N + '"} 1',
    'm {a="' + "\\" * N + '"} 1',
    'm {a="x"} ' + '"' * N,
    "m {" + "{" * N,
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("wanted", [{"m"}, {"absent"}])
def test_hostile_lines_take_linear_time(line: str, wanted: set[str]) -> None:
    # A regex that backtracks would take minutes on these; linear ones take milliseconds.
    scanner = Scanner(wanted)
    start = perf_timer()
    with contextlib.suppress(ParseError):
        scanner.scan("# TYPE m gauge\n" + line + "\n")
    assert perf_timer() - start < 1.0
