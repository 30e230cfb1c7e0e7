"""The compiled core (autoscaler/native.py, setup.py): the same decisions as the sources, and never
a compiled build older than its sources."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler import native

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

# A small fleet of record_hashes.py's workload: every built-in the compiled core holds, with every
# guard on, over idle spells, bursts, stale and NaN samples, resets and uneven ticks.
HASHES = (
    "import json, sys; sys.path.insert(0, 'benchmarks'); import record_hashes as r;"
    "from autoscaler import native;"
    "print(json.dumps({'status': native.status(), 'loaded': native.loaded(),"
    " 'hashes': r.fleet_hashes(targets=24, ticks=160)}))"
)


def _run(code: str, env: dict[str, str], cwd: Path = ROOT) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return out


def test_compiled_and_source_make_identical_decision_records() -> None:
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    compiled = _run(HASHES, env)
    source = _run(HASHES, {**env, native.ENV: "0"})
    assert source["status"] == f"pure: {native.ENV}=0"
    assert set(source["loaded"].values()) == {"source"}  # type: ignore[attr-defined]
    if native.compiled_files():
        # A build is present (CI requires one: .ci/run sets AUTOSCALER_NATIVE=1 for setup.py).
        assert compiled["status"] == "compiled"
        assert set(compiled["loaded"].values()) == {"compiled"}  # type: ignore[attr-defined]
    assert compiled["hashes"] == source["hashes"]
    assert len(compiled["hashes"]) == 9  # type: ignore[arg-type]


def test_ci_runs_the_compiled_core() -> None:
    # .ci/run builds with AUTOSCALER_NATIVE=1, which makes a failed build an error; the suite then
    # runs on the compiled modules. Outside CI a machine without a C compiler runs the sources.
    if os.environ.get(native.ENV) == "1":
        assert native.status() == "compiled"
    assert native.status() == native.choose(ROOT, os.environ.get(native.ENV))
    loaded = native.loaded()
    assert set(loaded) <= set(native.MODULES)
    want = "compiled" if native.status() == "compiled" else "source"
    assert set(loaded.values()) <= {want}


def _fake_tree(tmp_path: Path, compiled: int, stamp: str | None) -> Path:
    """A package tree with the compiled modules' sources, ``compiled`` of them with an extension
    file beside them, and the build's stamp."""
    for i, m in enumerate(native.MODULES):
        src = native.source_path(m, tmp_path)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"X = {i}\n")
        if i < compiled:
            src.with_suffix(SUFFIX).write_bytes(b"")
    if stamp is not None:
        (tmp_path / "autoscaler" / native.STAMP).write_text(stamp + "\n")
    return tmp_path


def test_choose_uses_a_build_only_when_whole_and_current(tmp_path: Path) -> None:
    n = len(native.MODULES)
    root = _fake_tree(tmp_path, n, stamp=None)
    digest = native.source_digest(root)
    assert native.choose(root).startswith("pure: the compiled build is older")  # no stamp
    (root / "autoscaler" / native.STAMP).write_text(digest + "\n")
    assert native.choose(root) == "compiled"
    assert native.choose(root, "1") == "compiled"
    assert native.choose(root, "0") == f"pure: {native.ENV}=0"
    # An edit after the build: the sources run, or, with AUTOSCALER_NATIVE=1, nothing does.
    native.source_path(native.MODULES[2], root).write_text("X = 'edited'\n")
    assert native.source_digest(root) != digest
    assert native.choose(root).startswith("pure: the compiled build is older than its sources")
    with pytest.raises(ImportError, match="AUTOSCALER_NATIVE=1 asks for the compiled core"):
        native.choose(root, "1")
    native.source_path(native.MODULES[2], root).write_text("X = 2\n")
    assert native.choose(root) == "compiled"
    # A module missing its extension.
    native.source_path(native.MODULES[-1], root).with_suffix(SUFFIX).unlink()
    assert native.choose(root) == f"pure: a partial compiled build ({n - 1} of {n} modules)"
    # No build at all.
    for m in native.MODULES:
        native.source_path(m, root).with_suffix(SUFFIX).unlink(missing_ok=True)
    assert native.choose(root).startswith("pure: no compiled build")
    with pytest.raises(ImportError):
        native.choose(root, "1")


@pytest.mark.skipif(not native.compiled_files(), reason="needs the compiled build (CI has one)")
def test_a_stale_build_runs_the_edited_sources(tmp_path: Path) -> None:
    # A copy of the package with its compiled build, then an edit to one compiled module's
    # source: the process must run the edited source, never the old compiled code.
    shutil.copytree(
        ROOT / "autoscaler", tmp_path / "autoscaler", ignore=shutil.ignore_patterns("__pycache__")
    )
    windows = native.source_path("autoscaler.core.windows", tmp_path)
    windows.write_text(windows.read_text() + "\nEDITED = True\n")
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    env["PYTHONPATH"] = str(tmp_path)
    code = (
        "import json; from autoscaler import native; import autoscaler.engine;"
        "import autoscaler.core.windows as w;"
        "print(json.dumps({'status': native.status(), 'loaded': native.loaded(),"
        " 'edited': getattr(w, 'EDITED', False), 'file': w.__file__}))"
    )
    out = _run(code, env, cwd=tmp_path)
    assert (
        out["status"] == "pure: the compiled build is older than its sources (rebuild: make native)"
    )
    assert out["edited"] is True
    assert str(out["file"]).startswith(str(tmp_path))
    assert set(out["loaded"].values()) == {"source"}  # type: ignore[attr-defined]
    # The untouched copy runs compiled.
    windows.write_text(windows.read_text().replace("\nEDITED = True\n", ""))
    out = _run(code, env, cwd=tmp_path)
    assert out["status"] == "compiled" and out["edited"] is False
