"""Copy policies/llm-chat.yaml, the default policy, into the Helm values and the plain manifests.

    .venv/bin/python deploy/sync_policy.py

Both embed the file verbatim as a YAML block scalar (``policy: |`` in values.yaml, ``policy.yaml:
|`` in manifests/30-configmap.yaml); tests/unit/test_deploy.py fails when either differs from the
file, and this rewrites exactly that block, nothing else.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "llm-chat.yaml"
EMBEDS = (
    (ROOT / "deploy" / "helm" / "kserve-autoscaler" / "values.yaml", "policy: |"),
    (ROOT / "deploy" / "manifests" / "30-configmap.yaml", "policy.yaml: |"),
)


def embed(text: str, key: str, policy: str) -> str:
    """``text`` with the block scalar under ``key`` replaced by ``policy``, indented to fit."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == key)
    key_indent = len(lines[start]) - len(lines[start].lstrip())
    indent = " " * (key_indent + 2)
    end = start + 1
    # The block runs while lines are blank or indented deeper than the key.
    while end < len(lines) and (
        not lines[end].strip() or re.match(rf"^ {{{key_indent + 1},}}\S", lines[end])
    ):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block belong to what follows
    body = [indent + line if line.strip() else "\n" for line in policy.splitlines(keepends=True)]
    return "".join(lines[: start + 1] + body + lines[end:])


def main() -> int:
    policy = POLICY.read_text(encoding="utf-8")
    for path, key in EMBEDS:
        old = path.read_text(encoding="utf-8")
        new = embed(old, key, policy)
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
