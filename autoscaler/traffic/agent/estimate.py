"""What a request will cost and what it did cost, in tokens. Pure: bytes and dicts in, numbers out.

At admission the agent charges an estimate: the prompt's tokens by a fast approximation (about
four characters per token for English text with BPE tokenizers, plus a few tokens of chat
template per message; token-id prompts are counted exactly), plus the completion the client
allows (``max_completion_tokens``, else ``max_tokens``, else the configured default), times
``n``. Running the model's tokenizer would be exact but costs milliseconds per request and ties
the agent to one model; the estimate only has to be right on average, because it is replaced by
the real usage when the response ends:

- a JSON response's ``usage`` (``total_tokens``, or ``prompt_tokens + completion_tokens``);
- a stream's final usage chunk (``stream_options: {"include_usage": true}``) when there is one,
  else the prompt estimate plus one token per content event (vLLM, TGI and OpenAI send one
  token per event, or a few; so this errs low, never high).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, cast

__all__ = [
    "OpenAIRequest",
    "SseCounter",
    "loads",
    "parse_openai_request",
    "prompt_tokens",
    "usage_tokens",
]

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4  # role and template markers around each chat message


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _prompt_part(value: Any) -> int:
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # token ids
        return sum(_prompt_part(v) for v in value)
    return 0


def _content(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += _text_tokens(part["text"])
        return total
    return 0


def prompt_tokens(body: dict[str, Any]) -> int:
    """The approximate prompt tokens of a completions or chat completions request."""
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            return 0
        total = 0
        for m in messages:
            if isinstance(m, dict):
                total += TOKENS_PER_MESSAGE + _content(m.get("content"))
        return total
    prompt = body.get("prompt")
    if type(prompt) is str:  # the common case, without the two calls below
        return math.ceil(len(prompt) / CHARS_PER_TOKEN)
    return _prompt_part(prompt)


# the C scanner json.loads itself ends up in (typeshed types its argument oddly)
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(cast(Any, json.JSONDecoder()))
_JSON_SPACE = " \t\n\r"  # the only whitespace JSON allows around a value


def loads(raw: bytes) -> Any:
    """``json.loads(raw.decode())``: the same values and the same rejections (``ValueError``),
    UTF-8 only (RFC 8259; no encoding sniffing). It calls the decoder's scanner directly: that
    skips ``json.loads``' three Python layers and two regular-expression matches, which cost
    more than the scan itself for a request body (2.8 us against 1.1 us)."""
    text = raw.decode()
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace, or no value: json says which
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return json.loads(text)  # trailing data: json raises its own error for it
    return value


def _count(value: Any) -> int | None:
    """A count from JSON: an int >= 0 (not a bool), else None. ``type(value) is int`` is
    exact for what JSON gives (no int subclass but bool), and the hot callers inline it."""
    if type(value) is not int or value < 0:
        return None
    return value


@dataclass(slots=True)
class OpenAIRequest:
    """What admission needs from an OpenAI-style request body. Treated as a value; not
    ``frozen``, because a frozen dataclass takes twice as long to make (one per request)."""

    model: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int  # the most the client allows (or the default), times n

    @property
    def estimate(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_openai_request(
    raw: bytes, default_max_tokens: int, model_fallback: str = ""
) -> OpenAIRequest | None:
    """The request's model, streaming flag and estimate; None when the body is not a JSON
    object (the model server answers it with its own 400, and it costs no tokens)."""
    try:
        body = loads(raw)
    except ValueError:  # UnicodeDecodeError and json's errors are ValueErrors
        return None
    if not isinstance(body, dict):
        return None
    get = body.get
    model = get("model")
    # _count inlined: this runs once per request, with three counts
    limit = get("max_completion_tokens")
    if type(limit) is not int or limit < 0:
        limit = get("max_tokens")
        if type(limit) is not int or limit < 0:
            limit = default_max_tokens
    n = get("n")
    if type(n) is not int or n <= 0:
        n = 1
    return OpenAIRequest(
        model if isinstance(model, str) and model else model_fallback,
        get("stream") is True,
        prompt_tokens(body),
        limit * n,
    )


def usage_tokens(usage: Any) -> int | None:
    """Total tokens from an OpenAI ``usage`` object; None when it has none."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if type(total) is int and total >= 0:
        return total
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    return (prompt or 0) + (completion or 0)


_MISS = -1  # _usage_member: the usage is not the body's last member; parse the whole body


def _usage_member(raw: bytes, at: int) -> int | None:
    """The usage of a body whose last top-level member is ``"usage"`` (at ``at``), from that
    member alone; ``_MISS`` when it is not that shape.

    OpenAI, vLLM and TGI end their answers with the usage, after the generated text: parsing
    the small tail instead of the whole body saves most of the JSON work on long completions.
    The shape is checked exactly: the quote at ``at`` is not escaped, a colon follows, and the
    value is followed by nothing but the ``}`` that closes the body (a ``usage`` nested deeper
    would be followed by more closers), so in a well-formed body this is the member
    ``json.loads`` would give."""
    backslashes = 0
    while at - backslashes > 0 and raw[at - backslashes - 1] == 0x5C:  # "\"
        backslashes += 1
    if backslashes % 2:
        return _MISS  # the quote is escaped: inside a string
    try:
        text = raw[at + 7 :].decode()
    except UnicodeDecodeError:
        return _MISS
    colon = text.find(":")
    if colon < 0 or text[:colon].strip():
        return _MISS
    text = text[colon + 1 :].lstrip(" \t\r\n")
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return _MISS
    if text[end:].strip() != "}":
        return _MISS
    return usage_tokens(value)


def usage_of_json(raw: bytes) -> int | None:
    """The usage of a whole JSON response body, or None. Bodies without the word are not
    parsed (KServe's own answers, errors); bodies that end with their usage member, as OpenAI
    servers' do, have only that member parsed (``_usage_member``)."""
    at = raw.rfind(b'"usage"')
    if at < 0:
        return None
    usage = _usage_member(raw, at)
    if usage != _MISS:
        return usage
    try:
        body = loads(raw)
    except ValueError:
        return None
    return usage_tokens(body.get("usage")) if isinstance(body, dict) else None


class SseCounter:
    """Counts the content events of a server-sent-event stream and keeps the last usage seen.

    Fed the raw chunks as they pass through; events split across chunks are joined (only the
    unfinished tail is kept, so memory stays at one event). Only events that mention ``usage``
    with a value are parsed as JSON; the others are counted by their ``data:`` line.
    """

    __slots__ = ("_tail", "events", "usage")

    def __init__(self) -> None:
        self.events = 0  # data events other than [DONE]
        self.usage: int | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return
        self._tail = data[end + 2 :]
        for event in data[: end + 2].split(b"\n\n"):
            if event:
                self._event(event)

    def close(self) -> None:
        """The stream ended: an unterminated last event still counts."""
        if self._tail.strip():
            self._event(self._tail)
        self._tail = b""

    def _event(self, event: bytes) -> None:
        payload = b""
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payload += line[5:].lstrip(b" ")
        if not payload or payload == b"[DONE]":
            return
        if b'"usage"' in payload and b'"usage":null' not in payload.replace(b" ", b""):
            try:
                obj = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                usage = usage_tokens(obj.get("usage"))
                if usage is not None:
                    self.usage = usage
                    if not obj.get("choices"):
                        return  # the usage-only final chunk carries no content
        self.events += 1

    def tokens(self, prompt_estimate: int) -> int:
        """The stream's tokens: its usage if it sent one, else prompt estimate + events."""
        return self.usage if self.usage is not None else prompt_estimate + self.events
