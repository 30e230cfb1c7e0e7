"""The compiled core: which modules run compiled with mypyc, and the pure-Python fallback.

The engine's per-tick path (windows, snapshot, guard chain, per-target runtime, the engine) is
plain, strictly typed Python that ``setup.py`` also compiles with mypyc into C extensions when a C
compiler and the Python headers are there (docs/engine-performance.md, "The compiled core"). The
two are the same code: the compiled one is about twice as fast, the Python one runs everywhere.

Python imports a compiled module in preference to its source, so a compiled build older than its
sources would silently run old code. ``setup.py`` writes the SHA-256 of the sources it compiled to
``_native.stamp``; when the sources no longer match (an edit since the build), or when
``AUTOSCALER_NATIVE=0`` is set, :func:`install` makes these modules load from their sources, and
:func:`status` says which is running and why. ``autoscaler/__init__.py`` calls :func:`install`
before any of them can be imported.

A leaf: imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The compiled modules, in dependency order. setup.py compiles exactly these.
MODULES: tuple[str, ...] = (
    "autoscaler.core.rounding",
    "autoscaler.core.stamps",
    "autoscaler.core.types",
    "autoscaler.core.windows",
    "autoscaler.core.snapshot",
    "autoscaler.policy.compat.kubernetes",
    "autoscaler.policy.compat.knative",
    "autoscaler.policy.guard_chain",
    "autoscaler.policy.base",
    "autoscaler.policy.builtin.hpa_common",
    "autoscaler.policy.builtin.hpa",
    "autoscaler.policy.builtin.keda",
    "autoscaler.policy.builtin.kpa",
    "autoscaler.policy.builtin.llm",
    "autoscaler.policy.builtin.queue",
    "autoscaler.policy.builtin.tokens",
    "autoscaler.engine.target",
    "autoscaler.engine.engine",
)
STAMP = "_native.stamp"
ENV = "AUTOSCALER_NATIVE"  # "0": never use the compiled modules; "1": insist on them

_ROOT = Path(__file__).resolve().parent.parent
_UNDECIDED = "pure: not decided yet"
_state = {"status": _UNDECIDED}


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(root: Path = _ROOT) -> str:
    """SHA-256 over the compiled modules' sources, names included, in ``MODULES`` order."""
    h = hashlib.sha256()
    for m in MODULES:
        h.update(m.encode() + b"\0")
        h.update(source_path(m, root).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def compiled_files(root: Path = _ROOT) -> list[Path]:
    """The compiled extension of each module that has one next to its source."""
    found = []
    for m in MODULES:
        src = source_path(m, root)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            ext = src.with_suffix(suffix)
            if ext.exists():
                found.append(ext)
                break
    return found


class _SourceFinder:
    """Finds the compiled modules' ``.py`` sources ahead of their compiled extensions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname, self.root))


def choose(root: Path = _ROOT, env: str | None = None) -> str:
    """ "compiled" when the compiled build under ``root`` is whole and matches its sources and
    ``env`` (``$AUTOSCALER_NATIVE``) is not "0"; otherwise "pure: <why>". With ``env`` "1", a
    compiled build that cannot be used is an error (ImportError) rather than a slow fallback."""
    found = compiled_files(root)
    if env == "0":
        return f"pure: {ENV}=0"
    if not found:
        why = "pure: no compiled build (setup.py builds one where a C compiler is)"
    elif len(found) != len(MODULES):
        why = f"pure: a partial compiled build ({len(found)} of {len(MODULES)} modules)"
    else:
        stamp = root / "autoscaler" / STAMP
        built = stamp.read_text().strip() if stamp.exists() else ""
        if built == source_digest(root):
            return "compiled"
        why = "pure: the compiled build is older than its sources (rebuild: make native)"
    if env == "1":
        raise ImportError(f"{ENV}=1 asks for the compiled core, but it is {why}")
    return why


def install(root: Path = _ROOT) -> str:
    """Decide compiled or pure for this process (once); returns :func:`status`.

    When pure while compiled files exist, the modules' sources are put ahead of them.
    """
    if _state["status"] != _UNDECIDED:
        return _state["status"]
    chosen = choose(root, os.environ.get(ENV))
    if chosen != "compiled" and compiled_files(root):
        sys.meta_path.insert(0, _SourceFinder(root))
    _state["status"] = chosen
    return chosen


def status() -> str:
    """ "compiled", or "pure: <why>"."""
    return _state["status"]


def loaded() -> dict[str, str]:
    """Of the modules imported so far, which run compiled and which from source."""
    out = {}
    for m in MODULES:
        mod = sys.modules.get(m)
        if mod is not None:
            f = getattr(mod, "__file__", "") or ""
            out[m] = "source" if f.endswith(".py") else "compiled"
    return out
