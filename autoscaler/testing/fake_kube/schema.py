"""CRD schemas: load the openAPIV3Schema of real CRD files, then prune, default and validate
custom objects as the API server does for structural schemas (in that order).

Supported: ``type`` (with ``nullable``), ``properties``, ``additionalProperties`` (a schema),
``items``, ``required``, ``enum``, ``pattern``, ``minimum``/``maximum`` (and exclusive),
``minLength``/``maxLength``, ``minItems``/``maxItems``, ``minProperties``/``maxProperties``,
``anyOf``/``allOf``/``oneOf``/``not``, ``default``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``. Not evaluated:
``format`` and CEL ``x-kubernetes-validations`` rules, except the rules listed in
``KNOWN_RULES`` which are hand-translated.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error, as in a Status's ``details.causes``."""

    reason: (
        str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTypeInvalid
    )
    field: str
    message: str


#: CEL rules found in the shared CRDs, translated by hand (rule text -> predicate over ``self``).
KNOWN_RULES: dict[str, Callable[[Any], bool]] = {
    # keda.sh ScaledObject .spec
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount)"
    " ? self.maxReplicaCount : 100)": lambda s: (
        "minReplicaCount" not in s or s["minReplicaCount"] <= s.get("maxReplicaCount", 100)
    ),
}


@dataclass(frozen=True, slots=True)
class CrdVersion:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    schema: Mapping[str, Any] | None
    status_subresource: bool
    scale: Mapping[str, str] | None  # specReplicasPath, statusReplicasPath, labelSelectorPath
    source: str = field(default="", compare=False)


def _loader() -> type[yaml.SafeLoader]:
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader


@functools.lru_cache(maxsize=64)
def _load_file(path: str, mtime: float) -> tuple[CrdVersion, ...]:
    out: list[CrdVersion] = []
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.load_all(f, Loader=_loader()))
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            sub = v.get("subresources") or spec.get("subresources") or {}
            schema = (v.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
            out.append(
                CrdVersion(
                    group=spec["group"],
                    version=v["name"],
                    plural=spec["names"]["plural"],
                    kind=spec["names"]["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    schema=schema,
                    status_subresource="status" in sub,
                    scale=sub.get("scale"),
                    source=path,
                )
            )
    return tuple(out)


def load_crds(directory: str | Path) -> list[CrdVersion]:
    """Every served version of every CRD in the YAML files of ``directory`` (cached per file)."""
    found: list[CrdVersion] = []
    for p in sorted(Path(directory).glob("*.y*ml")):
        found.extend(_load_file(str(p), p.stat().st_mtime))
    return found


# --- prune / default / validate ---------------------------------------------------------------

_META_KEYS = frozenset({"apiVersion", "kind", "metadata"})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _props(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    return schema.get("properties") or {}


def prune(obj: Any, schema: Mapping[str, Any], path: str = "", *, root: bool = True) -> list[str]:
    """Drop fields the schema does not know and non-nullable nulls, in place. Returns the paths
    of dropped unknown fields (what ``fieldValidation=Strict`` rejects and ``Warn`` reports)."""
    unknown: list[str] = []
    if isinstance(obj, dict):
        props = _props(schema)
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(obj):
            value = obj[key]
            if embedded and key in _META_KEYS:
                continue
            sub = props.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if value is None and not (sub or {}).get("nullable"):
                del obj[key]
                continue
            if sub is None:
                if not preserve and additional is not True:
                    unknown.append(_join(path, key))
                    del obj[key]
                continue
            unknown.extend(prune(value, sub, _join(path, key), root=False))
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(obj):
                unknown.extend(prune(item, items, f"{path}[{i}]", root=False))
    return unknown


def apply_defaults(obj: Any, schema: Mapping[str, Any]) -> None:
    """Fill ``default`` of absent properties of objects that exist, in place (as the server)."""
    if isinstance(obj, dict):
        for key, sub in _props(schema).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, value in obj.items():
                if key not in _props(schema):
                    apply_defaults(value, additional)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    t = schema.get("type")
    if t is None:
        return True
    if value is None:
        return bool(schema.get("nullable"))
    return {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }.get(t, lambda v: True)(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def validate(
    obj: Any, schema: Mapping[str, Any], path: str = "", *, root: bool = True
) -> list[Cause]:
    """Value validation of ``obj`` against a structural schema: every problem, not the first."""
    causes: list[Cause] = []
    where = path or "<root>"
    if not _type_ok(obj, schema):
        msg = f"{where} in body must be of type {schema.get('type')}: {_show(obj)}"
        causes.append(Cause("FieldValueTypeInvalid", where, f"Invalid value: {_show(obj)}: {msg}"))
        return causes
    if obj is None:
        return causes
    if "enum" in schema and obj not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        causes.append(
            Cause(
                "FieldValueNotSupported",
                where,
                f"Unsupported value: {json.dumps(obj)}: supported values: {allowed}",
            )
        )

    def bad(message: str) -> None:
        msg = f"Invalid value: {_show(obj)}: {where} in body {message}"
        causes.append(Cause("FieldValueInvalid", where, msg))

    if isinstance(obj, str):
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            bad(f"should match '{schema['pattern']}'")
        if "minLength" in schema and len(obj) < schema["minLength"]:
            bad(f"should be at least {schema['minLength']} chars long")
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            bad(f"may not be longer than {schema['maxLength']}")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema:
            if schema.get("exclusiveMinimum") and obj <= schema["minimum"]:
                bad(f"should be greater than {schema['minimum']}")
            elif obj < schema["minimum"]:
                bad(f"should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema:
            if schema.get("exclusiveMaximum") and obj >= schema["maximum"]:
                bad(f"should be less than {schema['maximum']}")
            elif obj > schema["maximum"]:
                bad(f"should be less than or equal to {schema['maximum']}")
    if isinstance(obj, list):
        if "minItems" in schema and len(obj) < schema["minItems"]:
            bad(f"should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(obj) > schema["maxItems"]:
            bad(f"should have at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(obj):
                causes.extend(validate(item, schema["items"], f"{path}[{i}]", root=False))
    if isinstance(obj, dict):
        if "minProperties" in schema and len(obj) < schema["minProperties"]:
            bad(f"should have at least {schema['minProperties']} properties")
        if "maxProperties" in schema and len(obj) > schema["maxProperties"]:
            bad(f"should have at most {schema['maxProperties']} properties")
        for key in schema.get("required") or []:
            if key not in obj:
                causes.append(Cause("FieldValueRequired", _join(path, key), "Required value"))
        props = _props(schema)
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if root and key in _META_KEYS:
                continue
            sub = props.get(key) or (additional if isinstance(additional, dict) else None)
            if sub is not None:
                causes.extend(validate(value, sub, _join(path, key), root=False))
        # CEL rules run only on a value that is otherwise valid, as on a real server.
        rules = [] if causes else schema.get("x-kubernetes-validations") or []
        for rule in rules:
            check = KNOWN_RULES.get(" ".join(rule.get("rule", "").split()))
            if check is not None and not check(obj):
                message = rule.get("message") or f"failed rule: {rule.get('rule')}"
                causes.append(
                    Cause("FieldValueInvalid", where, f'Invalid value: "object": {message}')
                )
    for sub in schema.get("allOf") or []:
        causes.extend(validate(obj, sub, path, root=False))
    any_of = schema.get("anyOf") if not schema.get("x-kubernetes-int-or-string") else None
    if any_of and all(validate(obj, sub, path, root=False) for sub in any_of):
        bad("must validate at least one schema (anyOf)")
    if schema.get("oneOf"):
        ok = sum(1 for sub in schema["oneOf"] if not validate(obj, sub, path, root=False))
        if ok != 1:
            bad("must validate one and only one schema (oneOf)")
    if "not" in schema and not validate(obj, schema["not"], path, root=False):
        bad("must not validate the schema (not)")
    return causes
