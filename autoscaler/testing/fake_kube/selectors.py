"""Label and field selectors, parsed as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")

LabelMatcher = Callable[[Mapping[str, str]], bool]


class SelectorError(ValueError):
    """A selector the API server would reject with 400 Bad Request."""


def _split_terms(selector: str) -> list[str]:
    # Commas separate requirements, except inside the parentheses of a set requirement.
    terms: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def _in(key: str, values: frozenset[str], positive: bool) -> LabelMatcher:
    return lambda labels: (labels.get(key) in values) == positive


def _eq(key: str, value: str, positive: bool) -> LabelMatcher:
    return lambda labels: (labels.get(key) == value) == positive


def _exists(key: str, positive: bool) -> LabelMatcher:
    return lambda labels: (key in labels) == positive


def parse_label_selector(selector: str | None) -> LabelMatcher:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h`` -> a predicate over a label mapping."""
    if not selector or not selector.strip():
        return lambda labels: True
    checks: list[LabelMatcher] = []
    for term in _split_terms(selector):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            checks.append(_in(m.group(1), values, m.group(3) == "in"))
        elif m := _EQ.match(term):
            checks.append(_eq(m.group(1), m.group(4), m.group(3) != "!="))
        elif m := _EXISTS.match(term):
            checks.append(_exists(m.group(2), not m.group(1)))
        else:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
    return lambda labels: all(c(labels) for c in checks)


def format_label_selector(selector: Mapping[str, Any]) -> str:
    """A ``metav1.LabelSelector`` (matchLabels, matchExpressions) in its string form."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# Field selectors: every type supports metadata.name and metadata.namespace; a few types add
# their own, and anything else is a 400 as on a real server.
FIELD_LABELS: dict[str, frozenset[str]] = {
    "pods": frozenset({"spec.nodeName", "spec.restartPolicy", "status.phase", "status.podIP"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
            "source",
        }
    ),
}


def _field(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    return "" if cur is None else str(cur)


def _field_eq(path: str, value: str, positive: bool) -> Callable[[Mapping[str, Any]], bool]:
    return lambda obj: (_field(obj, path) == value) == positive


def parse_field_selector(selector: str | None, plural: str) -> Callable[[Mapping[str, Any]], bool]:
    if not selector or not selector.strip():
        return lambda obj: True
    allowed = FIELD_LABELS.get(plural, frozenset()) | {"metadata.name", "metadata.namespace"}
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in selector.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise SelectorError(f"invalid selector: {term!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise SelectorError(f'field label not supported: "{path}"')
        checks.append(_field_eq(path, value, op != "!="))
    return lambda obj: all(c(obj) for c in checks)
