"""Builds the compiled core (mypyc) where a C compiler and the Python headers are present.

Everything else about the package is in pyproject.toml. The modules compiled are
``autoscaler.native.MODULES``: the engine's per-tick path, about twice as fast compiled
(docs/engine-performance.md, "The compiled core"). Without a compiler the package installs as pure
Python, the same code, with a warning. ``AUTOSCALER_NATIVE=0`` builds pure Python on purpose;
``AUTOSCALER_NATIVE=1`` makes a missing compiler an error (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "autoscaler"))
import native  # noqa: E402  (autoscaler/native.py alone: the package imports its dependencies)

sys.path.pop(0)


def _why_not() -> str:
    """Why the compiled core cannot be built here, or "" when it can."""
    if os.environ.get(native.ENV) == "0":
        return f"{native.ENV}=0"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Python.h)"
    return ""


def _ext_modules() -> list[object]:
    why = _why_not()
    stamp = ROOT / "autoscaler" / native.STAMP
    if why:
        if os.environ.get(native.ENV) == "1":
            raise SystemExit(f"the compiled core cannot be built: {why}")
        print(f"warning: building pure Python, not the compiled core: {why}", file=sys.stderr)
        stamp.unlink(missing_ok=True)
        return []
    from mypyc.build import mypycify

    paths = [str(native.source_path(m, ROOT).relative_to(ROOT)) for m in native.MODULES]
    stamp.write_text(native.source_digest(ROOT) + "\n")
    return mypycify(
        ["--config-file", str(ROOT / "native" / "mypyc.ini"), *paths],
        group_name="autoscaler._native",
        opt_level="3",
    )


setup(ext_modules=_ext_modules())
