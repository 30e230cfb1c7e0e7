"""Load and validate policy YAML, reporting every problem as FILE:LINE:COL: path: message."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autoscaler.config.models import PolicyFile
from autoscaler.config.yamlmarks import Marks, dotted, load_with_marks, locate
from autoscaler.core.errors import PolicyConfigError, Problem
from autoscaler.policy.registry import get_policy_class


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
    if kind in ("literal_error", "enum") or kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg} (got {err.get('input')!r})"
    return msg


def _problems(
    e: ValidationError, file: str, marks: Marks, prefix: tuple[Any, ...]
) -> list[Problem]:
    out = []
    for err in e.errors():
        # Union members and wrappers add non-key entries to loc (e.g. 'function-after[...]').
        loc = tuple(x for x in (*prefix, *err["loc"]) if isinstance(x, int) or "[" not in str(x))
        line, col = locate(marks, loc)
        out.append(Problem(file, line, col, _message(err), dotted(loc)))
    return out


def _check_params(
    name: str, params: Any, file: str, marks: Marks, loc: tuple[Any, ...]
) -> list[Problem]:
    """Validate a policy's params with its plugin's model (and a composite's members)."""
    cls = get_policy_class(name)
    try:
        model = cls.params_model.model_validate(params)
    except ValidationError as e:
        return _problems(e, file, marks, loc)
    out: list[Problem] = []
    for i, member in enumerate(getattr(model, "policies", ()) or ()):
        if hasattr(member, "name") and hasattr(member, "params"):
            out += _check_params(
                member.name, member.params, file, marks, (*loc, "policies", i, "params")
            )
    return out


def parse_policy(text: str, file: str = "<string>") -> PolicyFile:
    """Parse policy YAML text; raises PolicyConfigError listing every problem found."""
    data, marks, problems = load_with_marks(text, file)
    if problems:
        raise PolicyConfigError(problems)
    if not isinstance(data, dict):
        raise PolicyConfigError(
            [
                Problem(
                    file,
                    1,
                    1,
                    "the top level must be a mapping with apiVersion, kind, metadata and spec",
                )
            ]
        )
    try:
        doc = PolicyFile.model_validate(data)
    except ValidationError as e:
        raise PolicyConfigError(_problems(e, file, marks, ())) from None
    for i, target in enumerate(doc.spec.targets):
        problems += _check_params(
            target.policy.name,
            target.policy.params,
            file,
            marks,
            ("spec", "targets", i, "policy", "params"),
        )
    if problems:
        raise PolicyConfigError(problems)
    return doc


def load_policy(path: str | Path) -> PolicyFile:
    """Read and validate a policy file; I/O errors become located problems too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyConfigError(
            [Problem(str(p), 0, 0, f"cannot read: {e.strerror or e}")]
        ) from None
    except UnicodeDecodeError as e:
        raise PolicyConfigError([Problem(str(p), 1, 1, f"not UTF-8 text: {e.reason}")]) from None
    return parse_policy(text, str(p))


def validate_files(paths: Sequence[str | Path]) -> list[Problem]:
    """Every problem in every file (empty when all are valid)."""
    out: list[Problem] = []
    for path in paths:
        try:
            load_policy(path)
        except PolicyConfigError as e:
            out.extend(e.problems)
    return out
