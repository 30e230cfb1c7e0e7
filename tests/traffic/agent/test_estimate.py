"""Request cost estimates, usage from JSON answers, and the SSE counter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.traffic.agent.estimate import (
    SseCounter,
    loads,
    parse_openai_request,
    prompt_tokens,
    usage_of_json,
    usage_tokens,
)


def test_completion_prompt_is_four_characters_a_token() -> None:
    assert prompt_tokens({"prompt": "x" * 40}) == 10
    assert prompt_tokens({"prompt": "x" * 41}) == 11
    assert prompt_tokens({"prompt": ["x" * 8, "y" * 4]}) == 3
    assert prompt_tokens({"prompt": [1, 2, 3, 4, 5]}) == 5  # token ids: exact
    assert prompt_tokens({"prompt": [[1, 2], [3]]}) == 3


def test_chat_prompt_counts_each_message_and_text_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 20},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "y" * 8},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            },
        ]
    }
    assert prompt_tokens(body) == (4 + 5) + (4 + 2)


def test_request_estimate_uses_max_completion_tokens_then_max_tokens_then_default() -> None:
    raw = json.dumps({"model": "m", "prompt": "abcd", "max_tokens": 10, "n": 2}).encode()
    r = parse_openai_request(raw, default_max_tokens=512)
    assert r is not None
    assert (r.model, r.stream, r.prompt_tokens, r.completion_tokens) == ("m", False, 1, 20)
    assert r.estimate == 21
    raw = json.dumps(
        {"model": "m", "messages": [], "max_tokens": 10, "max_completion_tokens": 7}
    ).encode()
    r = parse_openai_request(raw, 512)
    assert r is not None and r.completion_tokens == 7
    r = parse_openai_request(b'{"prompt": "", "stream": true}', 512)
    assert r is not None
    assert (r.model, r.stream, r.completion_tokens) == ("", True, 512)


def test_garbage_bodies_are_not_metered() -> None:
    assert parse_openai_request(b"not json", 512) is None
    assert parse_openai_request(b"[1, 2]", 512) is None
    assert parse_openai_request(b"\xff\xfe", 512) is None
    r = parse_openai_request(b'{"max_tokens": -5, "n": true, "model": 3}', 100)
    assert r is not None and r.completion_tokens == 100 and r.model == ""


def test_usage_fields() -> None:
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}) == 7
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert usage_tokens({"completion_tokens": 4}) == 4
    assert usage_tokens(None) is None
    assert usage_tokens({"total_tokens": -1}) is None
    assert usage_of_json(b'{"choices": [], "usage": {"total_tokens": 12}}') == 12
    assert usage_of_json(b'{"predictions": [1]}') is None
    assert usage_of_json(b'{"usage": 1') is None


def _full_parse(raw: bytes) -> int | None:
    """What usage_of_json answered before its tail fast path: the whole body parsed."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return usage_tokens(body.get("usage")) if isinstance(body, dict) else None


USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the OpenAI shape, compact and pretty-printed: the tail alone is parsed
        (json.dumps({"id": "c", "choices": [{"text": "hi"}], "usage": USAGE}).encode(), 16),
        (json.dumps({"choices": [], "usage": USAGE}, indent=2).encode() + b"\n", 16),
        (b'{"usage" :\t{"completion_tokens": 4} }', 4),
        (b'{"usage": null}', None),
        # not the body's last member, or not a top-level one: the whole body decides
        (b'{"usage": {"total_tokens": 7}, "id": "x"}', 7),
        (b'{"choices": [{"usage": {"total_tokens": 3}}]}', None),
        (b'{"a": {"usage": {"total_tokens": 3}}}', None),
        (b'[{"usage": {"total_tokens": 3}}]', None),
        (b'{"usage": {"total_tokens": 7}, "x": {"usage": {"total_tokens": 3}}}', 7),
        # the word inside a string, escaped quotes, a key that only ends with it
        (b'{"text": "the \\"usage\\": {\\"total_tokens\\": 3}}"}', None),
        (b'{"x\\"usage": {"total_tokens": 3}}', None),
        (b'{"usage": {"total_tokens": 2}, "x\\\\": "usage"}', 2),
        (b'{"type": "usage"}', None),
        # unfinished or not JSON
        (b'{"usage": {"total_tokens": 3}', None),
        (b'"usage"', None),
        (b'{"usage": {"total_tokens": 3}}\xff', None),
    ],
)
def test_usage_of_json_reads_the_tail_as_a_full_parse_would(
    raw: bytes, expected: int | None
) -> None:
    assert usage_of_json(raw) == expected
    assert _full_parse(raw) == expected


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.text(alphabet='ab"\\ usage:{}'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["usage", "a", 'x"usage', "total_tokens"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


@given(
    body=st.dictionaries(st.sampled_from(["id", "choices", "usage", "usage\\"]), _json_values),
    indent=st.sampled_from([None, 0, 2]),
)
def test_usage_of_json_agrees_with_a_full_parse(
    body: dict[str, object], indent: int | None
) -> None:
    raw = json.dumps(body, indent=indent).encode()
    assert usage_of_json(raw) == _full_parse(raw)


def _json_outcome(parse: object, raw: bytes) -> tuple[str, object]:
    try:
        return "value", parse(raw)  # type: ignore[operator]
    except ValueError:  # json's errors and UnicodeDecodeError
        return "error", None


@given(
    value=_json_values,
    indent=st.sampled_from([None, 0, 2]),
    before=st.sampled_from(["", " ", "\n\t", "\ufeff", "x"]),
    after=st.sampled_from(["", " \r\n", "x", " 1", "}", "\x0b"]),
)
def test_loads_is_json_loads(value: object, indent: int | None, before: str, after: str) -> None:
    """The request path's ``loads`` (the decoder's scanner called directly) gives what
    ``json.loads`` gives, and refuses what it refuses: whitespace JSON allows around a value,
    a byte-order mark, leading or trailing garbage."""
    raw = (before + json.dumps(value, indent=indent) + after).encode()
    expected = _json_outcome(lambda r: json.loads(r.decode()), raw)
    assert _json_outcome(loads, raw) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b" ", b"{", b'{"a": 1}}', b'{"a": 1} {}', b"\xff{}", b"nul", b'"\\ud800"', b"1e999"],
)
def test_loads_refuses_and_accepts_what_json_loads_does(raw: bytes) -> None:
    assert _json_outcome(loads, raw) == _json_outcome(lambda r: json.loads(r.decode()), raw)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_sse_counts_content_events_across_split_chunks() -> None:
    stream = b"".join(
        _event({"choices": [{"delta": {"content": f"t{i}"}}], "usage": None}) for i in range(5)
    )
    stream += b"data: [DONE]\n\n"
    c = SseCounter()
    for i in range(0, len(stream), 7):  # cut anywhere, even inside "data:" and "\n\n"
        c.feed(stream[i : i + 7])
    c.close()
    assert c.events == 5
    assert c.usage is None
    assert c.tokens(prompt_estimate=10) == 15


def test_sse_final_usage_chunk_wins() -> None:
    c = SseCounter()
    c.feed(_event({"choices": [{"delta": {"content": "a"}}]}))
    c.feed(_event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}))
    c.feed(b"data: [DONE]\r\n\r\n")
    c.close()
    assert c.usage == 11
    assert c.events == 1
    assert c.tokens(prompt_estimate=1000) == 11


def test_sse_unterminated_last_event_counts_at_close() -> None:
    c = SseCounter()
    c.feed(b'data: {"choices": [{"text": "a"}]}\n\ndata: {"choices": [{"text": "b"}]}')
    assert c.events == 1
    c.close()
    assert c.events == 2
