"""The layering of DESIGN.md and the one-clock rule, enforced in the test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold() -> None:
    exe = BIN / "lint-imports"
    cmd = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert cmd, "import-linter is not installed"
    r = _run(cmd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_ruff_clean_including_banned_time_apis() -> None:
    r = _run(sys.executable, "-m", "ruff", "check", "autoscaler", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_banned_api_rule_catches_a_sleep(tmp_path: Path) -> None:
    # The rule itself must bite: a stray time.sleep in the package is reported.
    probe = ROOT / "autoscaler" / "core" / "_probe_banned.py"
    probe.write_text("import time\n\n\ndef f() -> None:\n    time.sleep(1)\n")
    try:
        r = _run(sys.executable, "-m", "ruff", "check", "--select", "TID251", str(probe))
    finally:
        probe.unlink()
    assert r.returncode != 0
    assert "TID251" in r.stdout


def test_mypy_strict_on_the_pure_core() -> None:
    r = _run(
        sys.executable,
        "-m",
        "mypy",
        "autoscaler/core",
        "autoscaler/policy",
        "autoscaler/config",
        "autoscaler/engine",
    )
    assert r.returncode == 0, r.stdout + r.stderr
