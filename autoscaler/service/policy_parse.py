"""Parse a large policy file in a short-lived child process, so its peak stays out of this one.

Why: parsing (YAML nodes with their marks, then pydantic) peaks at ~33 MB for a 1,000-target
policy, of which ~6 MB are the models that are kept. CPython's small-object allocator returns
memory to the OS only in whole 1 MiB arenas, and the kept models are spread over all the arenas
the parse touched, so the service kept ~25 MB of freed but unreturnable heap for its whole life
(docs/memory.md). A child process does the parse and sends back the pickled ``PolicyFile``
(~0.6 MB at 1,000 targets); unpickling builds only the kept objects, packed together. The
child's memory is returned to the OS when it exits, seconds later.

The child is ``python -m autoscaler.service.policy_parse FILE`` (a fresh interpreter: never
``fork`` a process that has threads), the text on its stdin, the pickled answer on its stdout.
Not ``multiprocessing``: its ``spawn`` leaves a resource-tracker process running beside the
service for good (~13 MB more in the pod). Small files (under ``APART_MIN_BYTES``, ~230 targets)
are parsed here: their peak is small, and a child costs ~1 s of start-up. The result and the
errors are the same either way: a ``PolicyConfigError`` from the child is raised here with the
same problems. If the child cannot run or fails (a process limit, a crash, a time-out), the
file is parsed here instead and the fallback is logged.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from typing import Any

from autoscaler.config.loader import parse_policy
from autoscaler.config.models import PolicyFile
from autoscaler.core.errors import ConfigError, PolicyConfigError

log = logging.getLogger("autoscaler.reload")

#: Policy text at or above this size is parsed in a child process.
APART_MIN_BYTES = 64 * 1024


class _ChildFailed(Exception):
    pass


def parse_policy_apart(
    text: str, file: str, *, min_bytes: int = APART_MIN_BYTES, timeout: float = 300.0
) -> PolicyFile:
    """``parse_policy(text, file)``, in a child process when ``text`` is large."""
    if len(text) < min_bytes:
        return parse_policy(text, file)
    try:
        kind, payload = _in_child(text, file, timeout)
    except (OSError, subprocess.SubprocessError, _ChildFailed, pickle.UnpicklingError) as e:
        log.warning("parsing %s in a child process failed (%s): parsing it here", file, e)
        return parse_policy(text, file)
    if kind == "problems":
        raise PolicyConfigError(payload)
    doc: PolicyFile = payload
    return doc


def _in_child(text: str, file: str, timeout: float) -> tuple[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler.service.policy_parse", file],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise _ChildFailed(f"exit status {done.returncode}: {' '.join(last)}")
    answer = pickle.loads(done.stdout)
    if not (isinstance(answer, tuple) and len(answer) == 2 and answer[0] in ("ok", "problems")):
        raise _ChildFailed(f"unexpected answer {type(answer).__name__}")
    return answer


def main() -> int:
    """The child: policy text on stdin, ``(kind, payload)`` pickled on stdout."""
    file = sys.argv[1]
    text = sys.stdin.buffer.read().decode("utf-8")
    try:
        answer: tuple[str, Any] = ("ok", parse_policy(text, file))
    except ConfigError as e:
        answer = ("problems", list(e.problems))
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
