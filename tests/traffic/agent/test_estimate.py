"""Request cost estimates, usage from JSON answers, and the SSE counter."""

from __future__ import annotations

import json

from autoscaler.traffic.agent.estimate import (
    SseCounter,
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
