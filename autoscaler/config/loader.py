"""Load and validate policy YAML, reporting every problem as FILE:LINE:COL: path: message."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from autoscaler.config.models import AT, PolicyFile
from autoscaler.config.yamlmarks import Marks, dotted, load_with_marks, locate
from autoscaler.core.errors import PolicyConfigError, Problem
from autoscaler.policy.registry import get_policy_class

M = TypeVar("M", bound=BaseModel)

# Errors whose message already names the values (our validators) or where "got" adds nothing.
_OWN_VALUES = frozenset({"value_error", "assertion_error", "too_short", "too_long"})


def _message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}" if loc else "unknown key"
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing" if loc else "required key is missing"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    msg = msg.replace(" after validation", "")  # pydantic's wording for too_short/too_long
    value = err.get("input")
    if (
        kind in ("literal_error", "enum")
        or kind.endswith("_type")
        or kind.endswith("_parsing")
        or (kind not in _OWN_VALUES and isinstance(value, str | int | float | bool | None))
    ):
        msg = f"{msg} (got {value!r})"
    return msg


def _spurious(err: Any) -> bool:
    """pydantic reports a tuple as too short when its items fail validation (it counts only the
    valid ones); the item errors are the real problem, so that report is dropped."""
    if err["type"] != "too_short":
        return False
    given = err.get("input")
    need = (err.get("ctx") or {}).get("min_length")
    return isinstance(given, list | tuple) and isinstance(need, int) and len(given) >= need


def _problems(
    e: ValidationError, file: str, marks: Marks, prefix: tuple[Any, ...]
) -> list[Problem]:
    out = []
    for err in e.errors():
        if _spurious(err):
            continue
        # Union members and wrappers add non-key entries to loc (e.g. 'function-after[...]').
        loc = tuple(x for x in (*prefix, *err["loc"]) if isinstance(x, int) or "[" not in str(x))
        # A validator of a container may point at one of its items (models.located_error).
        loc += tuple((err.get("ctx") or {}).get(AT, ()))
        line, col = locate(marks, loc)
        out.append(Problem(file, line, col, _message(err), dotted(loc)))
    return out


def _check_params(
    name: str, params: Any, file: str, marks: Marks, loc: tuple[Any, ...]
) -> list[Problem]:
    """Validate a policy's params with its plugin's model (and a composite's members)."""
    cls = get_policy_class(name)
    out: list[Problem] = []
    try:
        cls.params_model.model_validate(params)
    except ValidationError as e:
        out += _problems(e, file, marks, loc)
    # A composite's members are checked from the raw data, so that a problem in one member (or
    # elsewhere in the composite) does not hide the problems in the others.
    if "policies" in cls.params_model.model_fields and isinstance(params, dict):
        out += _check_members(params.get("policies"), file, marks, (*loc, "policies"))
    return out


def _check_members(members: Any, file: str, marks: Marks, loc: tuple[Any, ...]) -> list[Problem]:
    """Params problems of every member in a composite's raw ``policies`` list."""
    out: list[Problem] = []
    for i, member in enumerate(members if isinstance(members, list) else ()):
        out += _check_ref(member, file, marks, (*loc, i), nested=True)
    return out


def _check_ref(
    ref: Any, file: str, marks: Marks, loc: tuple[Any, ...], nested: bool
) -> list[Problem]:
    """Params problems of one raw ``{name, params}`` mapping at ``loc``.

    A missing or unknown name, params that are not a mapping and a composite inside a composite
    are skipped here: the models report those."""
    if not isinstance(ref, dict):
        return []
    name, params = ref.get("name"), ref.get("params", {})
    if not isinstance(name, str) or not isinstance(params, dict):
        return []
    try:
        cls = get_policy_class(name)
    except KeyError:
        return []
    if nested and "policies" in cls.params_model.model_fields:
        return []
    return _check_params(name, params, file, marks, (*loc, "params"))


def parse_document(text: str, file: str, model: type[M], kind: str) -> M:
    """Parse YAML text into a strict model; raises PolicyConfigError listing every problem."""
    return _parse(text, file, model, kind)[0]


def _load(text: str, file: str, kind: str) -> tuple[dict[str, Any], Marks]:
    data, marks, problems = load_with_marks(text, file)
    if problems:
        raise PolicyConfigError(problems)
    if not isinstance(data, dict):
        raise PolicyConfigError(
            [Problem(file, 1, 1, f"the top level must be a mapping (a {kind} document)")]
        )
    return data, marks


def _parse(text: str, file: str, model: type[M], kind: str) -> tuple[M, Marks]:
    data, marks = _load(text, file, kind)
    try:
        return model.model_validate(data), marks
    except ValidationError as e:
        raise PolicyConfigError(_problems(e, file, marks, ())) from None


def _sorted(problems: list[Problem]) -> list[Problem]:
    """In file order, as a compiler reports; problems at one place keep their order."""
    return sorted(problems, key=lambda p: (p.line, p.column))


def parse_policy(text: str, file: str = "<string>") -> PolicyFile:
    """Parse policy YAML text; raises PolicyConfigError listing every problem found.

    Policy params are validated by each plugin's own model, from the raw data, so their problems
    are reported together with those in the rest of the file."""
    data, marks = _load(text, file, "AutoscalingPolicy")
    problems: list[Problem] = []
    doc: PolicyFile | None = None
    try:
        doc = PolicyFile.model_validate(data)
    except ValidationError as e:
        problems += _problems(e, file, marks, ())
    spec = data.get("spec")
    targets = spec.get("targets") if isinstance(spec, dict) else None
    for i, target in enumerate(targets if isinstance(targets, list) else ()):
        policy = target.get("policy") if isinstance(target, dict) else None
        problems += _check_ref(policy, file, marks, ("spec", "targets", i, "policy"), nested=False)
    if problems or doc is None:
        raise PolicyConfigError(_sorted(problems))
    return doc


def read_text(path: str | Path) -> str:
    """A UTF-8 file's text; I/O and decoding errors become located problems."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyConfigError(
            [Problem(str(p), 0, 0, f"cannot read: {e.strerror or e}")]
        ) from None
    except UnicodeDecodeError as e:
        before = e.object[: e.start]
        line, col = before.count(b"\n") + 1, e.start - before.rfind(b"\n")
        raise PolicyConfigError(
            [
                Problem(
                    str(p),
                    line,
                    col,
                    f"not UTF-8 text: {e.reason} (byte 0x{e.object[e.start]:02x})",
                )
            ]
        ) from None


def load_policy(path: str | Path) -> PolicyFile:
    """Read and validate a policy file."""
    return parse_policy(read_text(path), str(path))


def validate_files(paths: Sequence[str | Path]) -> list[Problem]:
    """Every problem in every file (empty when all are valid)."""
    out: list[Problem] = []
    for path in paths:
        try:
            load_policy(path)
        except PolicyConfigError as e:
            out.extend(e.problems)
    return out
