"""``autoscaler tune``: search a policy's parameters for the least GPU-hours that meet an SLO.

A search space file names dotted paths into the policy YAML and, for each, a choice list or a
numeric range (``docs/tuning.md``). Every candidate is the original policy text with the chosen
values written over the scalars at those paths (comments and layout kept), validated like any
policy file, and replayed with one ``simulate`` run over the training window.

A point is feasible when its **score** meets the target: the lower of its SLO attainment (over
requests) and its hourly attainment (the mean of each hour's, ``hourly_attainment``), so a
setting must hold the SLO in quiet hours as well as over the busy ones' many requests.

The search (deterministic for a seed, whatever ``jobs`` is):

1. **Grid** when every dimension is a choice list and the full grid fits in the budget: every
   point is evaluated, so the result is the exact optimum over the space.
2. Otherwise a **coarse design**: the policy as written, then the first points of a seeded
   (randomly shifted) Halton sequence over the space, for about half the budget. The sequence is
   nested: a larger budget evaluates every design point a smaller one did, and more.
3. **Local refinement** (pattern search) around the incumbent (``choose``: among the feasible
   points within ``tie_tolerance`` of the least GPU-hours, the one with the best score; while
   nothing is feasible, the best score): one step up and one down per
   dimension (choices: the neighbouring values; ranges: +-radius in the unit cube, at least one
   unit for integers; when the budget left cannot take a whole round, a seeded draw of its steps);
   the radius halves whenever a round finds nothing better. When the radius
   falls below 1/64 with budget left, the next Halton points (half the remainder) are drawn and
   refinement starts again from the best point so far; the search stops when the budget is spent
   (or the space is exhausted).

Candidates of one round are fixed before they are evaluated and results are collected in order,
so a process pool (``jobs`` > 1) changes the wall time only. Every simulation uses the same seed
(common random numbers): differences between points come from the parameters alone.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoscaler.config.loader import parse_document, parse_policy, read_text
from autoscaler.config.models import PolicyFile
from autoscaler.config.yamlmarks import load_with_marks
from autoscaler.core.errors import PolicyConfigError, Problem
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import simulate
from autoscaler.sim.traces import Trace

Scalar = int | float | str | bool
Keys = tuple[str | int, ...]
Point = tuple[Scalar, ...]

#: Metrics kept per evaluated point (no wall-time fields: results must not depend on the host).
KEPT = (
    "gpu_hours",
    "slo_attainment",
    "ttft_p99_s",
    "cold_start_requests",
    "goodput_tokens_per_gpu_s",
    "mean_replicas",
    "max_replicas",
)
MIN_RADIUS = 1.0 / 64.0

STRETCH_S = 3600.0
"""Length of the stretches the tuner also asks the target of (``hourly attainment``): the mean,
over the training window's hours, of each hour's attainment. Request-weighted attainment lets a
busy hour's many requests outvote a quiet hour's few, so a search settles on settings that fail
every quiet hour; when the held-out half is quieter (Alibaba QPS: 7 requests/s in training, 0.78
in test) those settings miss it. Weighting every hour the same asks the policy to hold the SLO
in quiet hours too (docs/tuning.md, "Every hour counts"). 0 turns it off."""

STRETCH_MIN_REQUESTS = 100
"""An hour with fewer requests is left out of the hourly mean: its attainment cannot tell 0.99
from 1.0 (one miss in fewer than 100 requests is below 0.99)."""


def hourly_attainment(
    arrival_s: np.ndarray,
    ttft: np.ndarray,
    slo_ttft_s: float,
    stretch_s: float = STRETCH_S,
    min_requests: int = STRETCH_MIN_REQUESTS,
) -> float | None:
    """Mean attainment over the stretches ``[k*stretch_s, (k+1)*stretch_s)`` of the arrival axis
    after the first, counting those with at least ``min_requests`` requests; None when none counts
    (a window shorter than two stretches is judged by its request-weighted attainment alone).

    The first stretch is left out: it holds the fleet's start from its floor at t=0, a transient
    no later stretch and no held-out window (which is measured after a warm-up) sees. A dropped
    request (NaN TTFT) misses.
    """
    if stretch_s <= 0.0 or arrival_s.shape[0] == 0:
        return None
    block = np.floor((arrival_s - arrival_s[0]) / stretch_s).astype(np.int64)
    ok = ttft <= slo_ttft_s  # NaN compares False: a drop misses
    counts = np.bincount(block)
    hits = np.bincount(block, weights=ok.astype(np.float64), minlength=counts.shape[0])
    keep = counts >= min_requests
    keep[0] = False
    if not keep.any():
        return None
    return float(np.mean(hits[keep] / counts[keep]))


# ---------------------------------------------------------------------------- the space file


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    path: str = Field(min_length=1)
    values: list[Scalar] | None = Field(None, min_length=1)
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _kind(self) -> _Entry:
        ranged = self.low is not None or self.high is not None
        if self.values is not None and ranged:
            raise ValueError("give either 'values' or 'low'/'high', not both")
        if self.values is None:
            if self.low is None or self.high is None:
                raise ValueError("a dimension needs 'values' or both 'low' and 'high'")
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError("'low' and 'high' must be finite")
            if self.high <= self.low:
                raise ValueError(f"high ({self.high:g}) must be > low ({self.low:g})")
            if self.log and self.low <= 0:
                raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        elif self.log or self.integer:
            raise ValueError("'log' and 'integer' apply to ranges, not to 'values'")
        return self


class _SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    space: list[_Entry] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Dimension:
    """One searched parameter: a choice list, or a range in a unit coordinate."""

    path: str
    keys: Keys
    line: int
    values: tuple[Scalar, ...] | None = None
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    integer: bool = False

    @property
    def size(self) -> int | None:
        """Number of distinct values, or None for a continuous range."""
        if self.values is not None:
            return len(self.values)
        if self.integer:
            return math.floor(self.high) - math.ceil(self.low) + 1
        return None

    def decode(self, u: float) -> Scalar:
        """The value at unit coordinate ``u`` in [0, 1]."""
        u = min(1.0, max(0.0, u))
        if self.values is not None:
            return self.values[min(len(self.values) - 1, int(u * len(self.values)))]
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return self.clip(x)

    def encode(self, value: Scalar) -> float:
        """The unit coordinate of ``value`` (the centre of its cell for a choice)."""
        if self.values is not None:
            return (self.values.index(value) + 0.5) / len(self.values)
        x = float(value)
        if self.log:
            span = math.log(self.high) - math.log(self.low)
            return (math.log(max(x, self.low)) - math.log(self.low)) / span
        return (x - self.low) / (self.high - self.low)

    def clip(self, x: float) -> Scalar:
        """A range value clamped to the bounds and rounded (integers; else 3 significant digits,
        so that reports and YAML stay readable and near-equal points are tried once)."""
        x = min(self.high, max(self.low, x))
        if self.integer:
            return int(min(math.floor(self.high), max(math.ceil(self.low), round(x))))
        return float(f"{x:.3g}")

    def neighbours(self, value: Scalar, radius: float) -> list[Scalar]:
        """One step down and one up from ``value``."""
        if self.values is not None:
            i = self.values.index(value) if value in self.values else None
            if i is None:
                return [self.decode(0.5)]
            return [self.values[j] for j in (i - 1, i + 1) if 0 <= j < len(self.values)]
        u = self.encode(value)
        out: list[Scalar] = []
        for sign in (-1.0, 1.0):
            v = self.decode(u + sign * radius)
            if self.integer and v == value:  # the radius is below one unit: step by one
                v = self.clip(float(value) + sign)
            if v != value and v not in out:
                out.append(v)
        return out


def parse_path(path: str) -> Keys:
    """``spec.targets[0].policy.params.x`` -> ('spec', 'targets', 0, 'policy', 'params', 'x')."""
    keys: list[str | int] = []
    for part in path.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if not m:
            raise ValueError(f"malformed path {path!r} (near {part!r})")
        keys.append(m.group(1))
        keys.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(keys)


def _describe(keys: Keys) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _scalar_node(root: yaml.Node, keys: Keys) -> tuple[yaml.ScalarNode | None, str]:
    """The scalar node at ``keys`` in a composed YAML tree, or (None, why not)."""
    node = root
    for depth, key in enumerate(keys):
        where = _describe(keys[:depth]) or "the top level"
        if isinstance(key, int):
            if not isinstance(node, yaml.SequenceNode):
                return None, f"{where} is not a list"
            if key >= len(node.value):
                return None, f"{where} has {len(node.value)} item(s), no [{key}]"
            node = node.value[key]
        else:
            if not isinstance(node, yaml.MappingNode):
                return None, f"{where} is not a mapping"
            found = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key),
                None,
            )
            if found is None:
                return None, f"no key {key!r} under {where} (write it out in the policy to tune it)"
            node = found
    if not isinstance(node, yaml.ScalarNode):
        return None, f"{_describe(keys)} is not a single value (a mapping or a list)"
    return node, ""


@dataclass(frozen=True, slots=True)
class Space:
    """A validated search space bound to one policy file's text."""

    file: str
    policy_file: str
    policy_text: str
    dims: tuple[Dimension, ...]
    original: Point  # the values as written in the policy

    def render(self, point: Point, *, mark: bool = False) -> str:
        """The policy text with ``point``'s values written over the scalars at the paths (with
        ``mark``, each changed value's line says what was written there: ``substitute``)."""
        return substitute(self.policy_text, [d.keys for d in self.dims], point, mark=mark)

    def document(self, point: Point) -> PolicyFile:
        return parse_policy(self.render(point), self.policy_file)

    def assignment(self, point: Point) -> dict[str, Scalar]:
        return {d.path: v for d, v in zip(self.dims, point, strict=True)}


def format_scalar(value: Scalar) -> str:
    """YAML text for a value (plain style when it reads back as the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    text = str(value)
    return text if yaml.safe_load(text) == text and text.strip() == text else json.dumps(text)


def _compose(text: str) -> yaml.Node:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise ValueError("the policy holds no YAML document")
    return root


def scalar_at(text: str, path: Keys) -> Any:
    """The value of the scalar at ``path`` in a policy's YAML, or None when it has none."""
    node, _ = _scalar_node(_compose(text), path)
    return None if node is None else yaml.safe_load(node.value)


def substitute(
    text: str, paths: Sequence[Keys], values: Sequence[Scalar], *, mark: bool = False
) -> str:
    """Replace the scalar at each path with a value, in place; everything else stays as written.

    With ``mark``, a value that changed and ends its line gets ``# tuned; as written: <old>`` as
    that line's comment, in place of the comment the file had there. That comment described the
    value as written (``scaleDownMaxReplicas: 1  # of one replica``) and would mislead next to
    another value. A value inside a flow mapping (``{upSeconds: 0, downSeconds: 0}``) keeps its
    line as it is, because the comment there belongs to the whole mapping."""
    root = _compose(text)
    edits: list[tuple[int, int, str]] = []
    for keys, value in zip(paths, values, strict=True):
        node, why = _scalar_node(root, keys)
        if node is None:
            raise ValueError(f"{_describe(keys)}: {why}")
        start, end, new = node.start_mark.index, node.end_mark.index, format_scalar(value)
        if mark and (yaml.safe_load(node.value) if node.style is None else node.value) != value:
            line_end = text.find("\n", end)
            line_end = len(text) if line_end < 0 else line_end
            rest = text[end:line_end]
            if not rest.strip() or rest.lstrip().startswith("#"):
                lead = rest[: len(rest) - len(rest.lstrip())] if rest.strip() else "  "
                new = f"{new}{lead}# tuned; as written: {text[start:end]}"
                end = line_end
        edits.append((start, end, new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def load_space(space_file: str | Path, policy_file: str | Path) -> Space:
    """Read a space file and check it against the policy: every path must name a single value
    written in the policy, and each dimension's extremes must give a valid policy. Problems name
    the space file, the line of the entry and its path."""
    sfile, pfile = str(space_file), str(policy_file)
    stext = read_text(sfile)
    parsed = parse_document(stext, sfile, _SpaceFile, "search space")
    _, marks, _ = load_with_marks(stext, sfile)
    ptext = read_text(pfile)
    parse_policy(ptext, pfile)  # the policy itself must be valid first
    root = _compose(ptext)
    problems: list[Problem] = []
    dims: list[Dimension] = []
    original: list[Scalar] = []
    for i, entry in enumerate(parsed.space):
        line, col = marks.get(("space", i, "path"), marks.get(("space", i), (1, 1)))
        loc = f"space[{i}].path"
        try:
            keys = parse_path(entry.path)
        except ValueError as e:
            problems.append(Problem(sfile, line, col, str(e), loc))
            continue
        node, why = _scalar_node(root, keys)
        if node is None:
            problems.append(
                Problem(sfile, line, col, f"{entry.path!r} not found in {pfile}: {why}", loc)
            )
            continue
        if any(d.keys == keys for d in dims):
            problems.append(Problem(sfile, line, col, f"{entry.path!r} is listed twice", loc))
            continue
        current = yaml.safe_load(node.value) if node.style is None else node.value
        dim = Dimension(
            path=entry.path,
            keys=keys,
            line=line,
            values=None if entry.values is None else tuple(dict.fromkeys(entry.values)),
            low=entry.low if entry.low is not None else 0.0,
            high=entry.high if entry.high is not None else 1.0,
            log=entry.log,
            integer=entry.integer,
        )
        dims.append(dim)
        original.append(current)
    if problems:
        raise PolicyConfigError(problems)
    space = Space(sfile, pfile, ptext, tuple(dims), tuple(original))
    # Each dimension's extremes with the rest as written must make a valid policy.
    for i, dim in enumerate(dims):
        extremes = dim.values if dim.values is not None else (dim.decode(0.0), dim.decode(1.0))
        for v in extremes:
            point = (*original[:i], v, *original[i + 1 :])
            try:
                space.document(point)
            except PolicyConfigError as e:
                why = "; ".join(
                    f"{p.path}: {p.message}" if p.path else p.message for p in e.problems
                )
                problems.append(
                    Problem(
                        sfile,
                        dim.line,
                        1,
                        f"{dim.path} = {v!r} makes the policy invalid: {why}",
                        f"space[{i}]",
                    )
                )
                break
    if problems:
        raise PolicyConfigError(problems)
    return space


def default_space_file(policy_file: str | Path) -> Path:
    """``simulations/spaces/<stem>.yaml``, the first found walking up from the policy's folder."""
    p = Path(policy_file).resolve()
    for parent in p.parents:
        candidate = parent / "simulations" / "spaces" / f"{p.stem}.yaml"
        if candidate.is_file():
            return candidate
    raise PolicyConfigError(
        [
            Problem(
                str(policy_file),
                0,
                0,
                f"no search space given and no simulations/spaces/{p.stem}.yaml found above "
                "the policy file (pass --space)",
            )
        ]
    )


# ---------------------------------------------------------------------------- evaluation


def tuning_score(metrics: dict[str, Any]) -> float:
    """What the tuner holds to the target: the lower of a run's attainment and its hourly
    attainment (``hourly_attainment``; the attainment alone when there is none)."""
    attainment = float(metrics.get("slo_attainment", -math.inf))
    hourly = metrics.get("hourly_attainment")
    return attainment if hourly is None else min(attainment, float(hourly))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluated point: its values, its metrics (or the error that made it invalid)."""

    index: int
    point: Point
    phase: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def gpu_hours(self) -> float:
        return float(self.metrics.get("gpu_hours", math.inf))

    @property
    def attainment(self) -> float:
        return float(self.metrics.get("slo_attainment", -math.inf))

    @property
    def score(self) -> float:
        return tuning_score(self.metrics)

    def feasible(self, target: float) -> bool:
        return self.error is None and self.score >= target - 1e-12

    def rank(self, target: float) -> tuple[Any, ...]:
        """Smaller is better: feasible by GPU-hours, else by score; ties by order."""
        p99 = self.metrics.get("ttft_p99_s")
        p99v = math.inf if p99 is None else float(p99)
        if self.feasible(target):
            return (0, self.gpu_hours, -self.score, p99v, self.index)
        if self.error is None:
            return (1, -self.score, self.gpu_hours, p99v, self.index)
        return (2, 0.0, 0.0, 0.0, self.index)


TIE_TOLERANCE = 0.01
"""Feasible points within this fraction of the least GPU-hours are a tie on cost: the tuner takes
the one with the most margin on the SLO among them. 1% is about what the seed alone moves a
setting's GPU-hours (0.5-0.85% over five seeds for the tuned KPA and predictive-llm on the
Alibaba QPS training half; docs/tuning.md, "Ties on cost")."""


def choose(
    evaluations: Sequence[Evaluation], target: float, tie_tolerance: float = TIE_TOLERANCE
) -> Evaluation:
    """The point the tuner returns: the feasible points whose GPU-hours are within
    ``tie_tolerance`` of the cheapest feasible one, best score first (then cheaper, lower p99
    TTFT, evaluation order); with no feasible point, ``Evaluation.rank``'s best score."""
    first = min(evaluations, key=lambda e: e.rank(target))
    if not first.feasible(target) or tie_tolerance <= 0.0:
        return first
    bound = first.gpu_hours * (1.0 + tie_tolerance)
    tied = [e for e in evaluations if e.feasible(target) and e.gpu_hours <= bound]
    return min(tied, key=lambda e: (-e.score, *e.rank(target)[1:]))


@dataclass(frozen=True, slots=True)
class _Job:
    """What a worker needs to evaluate points (sent once per process)."""

    space: Space
    trace: Trace
    spec: ClusterSpec
    seed: int
    slo_ttft_s: float
    stretch_s: float


def _evaluate(job: _Job, point: Point) -> tuple[dict[str, Any], str | None]:
    try:
        doc = job.space.document(point)
    except PolicyConfigError as e:
        return {}, "; ".join(p.message for p in e.problems)
    result = simulate(job.trace, doc, job.spec, seed=job.seed, slo_ttft_s=job.slo_ttft_s)
    metrics = {k: result.metrics[k] for k in KEPT}
    hourly = hourly_attainment(job.trace.arrival_s, result.ttft, job.slo_ttft_s, job.stretch_s)
    if hourly is not None:
        metrics["hourly_attainment"] = hourly
    return metrics, None


_WORKER_JOB: _Job | None = None


def _worker_init(job: _Job) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _worker_eval(point: Point) -> tuple[dict[str, Any], str | None]:
    assert _WORKER_JOB is not None
    return _evaluate(_WORKER_JOB, point)


# ---------------------------------------------------------------------------- the search


@dataclass
class TuneResult:
    space: Space
    evaluations: list[Evaluation]
    best: Evaluation
    target: float
    slo_ttft_s: float
    seed: int
    budget: int
    strategy: str
    tie_tolerance: float = TIE_TOLERANCE
    stretch_s: float = STRETCH_S
    reused: int = 0  # evaluations taken from ``prior`` (not simulated again)

    @property
    def feasible(self) -> bool:
        return self.best.feasible(self.target)

    def frontier(self) -> list[Evaluation]:
        """Points no other point beats on both GPU-hours (lower) and score (higher)."""
        valid = [e for e in self.evaluations if e.error is None]
        out = []
        for e in valid:
            dominated = any(
                o.gpu_hours <= e.gpu_hours
                and o.score >= e.score
                and (o.gpu_hours < e.gpu_hours or o.score > e.score)
                for o in valid
            )
            if not dominated:
                out.append(e)
        return sorted(out, key=lambda e: (e.gpu_hours, e.index))

    def tuned_text(self) -> str:
        """The tuned policy file: the chosen point, each changed value marked."""
        return self.space.render(self.best.point, mark=True)


def _primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out):
            out.append(k)
        k += 1
    return out


def halton(start: int, n: int, shift: np.ndarray) -> np.ndarray:
    """Points ``start`` to ``start + n - 1`` of the Halton sequence in [0, 1)^d (d = len(shift);
    base: the j-th prime in coordinate j; the all-zero point 0 skipped), each coordinate shifted by
    ``shift`` modulo 1 (a seeded Cranley-Patterson rotation). Nested: the first k points are
    the same whatever is drawn after them, so a larger budget evaluates a superset of a smaller
    one's design, and a restart continues the sequence where the design stopped."""
    d = len(shift)
    out = np.empty((n, d))
    for j, base in enumerate(_primes(d)):
        for i in range(n):
            k, f, r = start + i + 1, 1.0, 0.0
            while k > 0:
                f /= base
                r += f * (k % base)
                k //= base
            out[i, j] = r
    return np.asarray((out + shift) % 1.0)


def tune(
    space: Space,
    trace: Trace,
    spec: ClusterSpec,
    *,
    slo_ttft_s: float,
    target: float = 0.99,
    budget: int = 40,
    seed: int = 0,
    jobs: int = 1,
    progress: Callable[[float], None] | None = None,
    tie_tolerance: float = TIE_TOLERANCE,
    stretch_s: float = STRETCH_S,
    prior: Sequence[Evaluation] = (),
) -> TuneResult:
    """Search ``space`` for the least GPU-hours with SLO attainment and hourly attainment
    (``hourly_attainment`` over ``stretch_s`` stretches; 0 for none) >= ``target`` on ``trace``
    (GPU-hours within ``tie_tolerance`` of the least are a tie, won by the better score).

    ``prior``: points already evaluated on this very trace, space, cluster, seed and stretch (an
    earlier search at another target; ``prior_evaluations`` reads them back from its
    frontier.json). A point the search draws that is among them takes their metrics instead of a
    simulation and costs no budget, so ``budget`` counts new simulations only. A run is
    deterministic, so the figures are the ones a simulation would give; only the target differs."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target attainment must be in (0, 1], got {target}")
    if not 0.0 <= tie_tolerance < 1.0:
        raise ValueError(f"tie tolerance must be in [0, 1), got {tie_tolerance}")
    if not (math.isfinite(stretch_s) and stretch_s >= 0.0):
        raise ValueError(f"stretch must be a finite number of seconds >= 0, got {stretch_s}")
    job = _Job(space, trace, spec, seed, slo_ttft_s, stretch_s)
    rng = np.random.default_rng(seed)
    dims = space.dims
    evaluations: list[Evaluation] = []
    seen: set[Point] = set()
    known = {e.point: e for e in prior}
    spent = 0  # simulations run (a known point costs none)
    pool: ProcessPoolExecutor | None = None
    if jobs > 1:
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(job,),
        )

    total = budget

    def run(points: list[Point], phase: str) -> None:
        nonlocal spent
        batch: list[Point] = []
        fresh: list[Point] = []
        for p in points:
            if p in seen:
                continue
            if p in known:
                seen.add(p)
                batch.append(p)
            elif spent + len(fresh) < budget:
                seen.add(p)
                batch.append(p)
                fresh.append(p)
        if not batch:
            return
        results = iter(
            pool.map(_worker_eval, fresh)
            if pool is not None
            else [_evaluate(job, p) for p in fresh]
        )
        for p in batch:
            tag = phase
            if p in known:
                old = known[p]
                metrics, error = old.metrics, old.error
                tag = f"{phase} (reused)"
            else:
                metrics, error = next(results)
                spent += 1
                if progress is not None:
                    progress(spent / total)
            evaluations.append(Evaluation(len(evaluations), p, tag, metrics, error))

    def incumbent() -> Evaluation:
        return choose(evaluations, target, tie_tolerance)

    try:
        sizes = [d.size for d in dims]
        grid = math.prod(s for s in sizes if s is not None) if None not in sizes else None
        if all(d.values is not None for d in dims) and grid is not None and grid <= budget:
            strategy = "grid"
            total = grid
            axes = [d.values for d in dims if d.values is not None]
            run([tuple(p) for p in _product(axes)], "grid")
        else:
            strategy = "halton design + pattern search"
            run([space.original], "as written")
            coarse = max(1, min(budget // 2, budget - 1))
            shift = rng.random(len(dims))
            drawn = coarse
            design = halton(0, coarse, shift)
            run(
                [tuple(d.decode(u) for d, u in zip(dims, row, strict=True)) for row in design],
                "coarse",
            )
            radius = 0.25
            restarts = 0
            while spent < budget:
                if radius < MIN_RADIUS:
                    # Converged with budget left: a fresh design over the space, then refine
                    # again from whichever point is best by then.
                    left = budget - spent
                    before = len(evaluations)
                    design = halton(drawn, max(1, left // 2), shift)
                    drawn += len(design)
                    run(
                        [
                            tuple(d.decode(u) for d, u in zip(dims, row, strict=True))
                            for row in design
                        ],
                        "restart",
                    )
                    restarts += 1
                    radius = 0.25
                    if len(evaluations) == before and restarts > 3:
                        break  # the space is (nearly) exhausted
                    continue
                best = incumbent()
                candidates: list[Point] = []
                for i, d in enumerate(dims):
                    for v in d.neighbours(best.point[i], radius):
                        candidates.append((*best.point[:i], v, *best.point[i + 1 :]))
                untried = [c for c in candidates if c not in seen]
                new = [c for c in untried if c not in known]
                left = budget - spent
                if len(new) > left:
                    # The budget cannot take the whole round: a seeded draw of the steps, not the
                    # first ones in dimension order (which never refined the last dimensions).
                    # Known points cost nothing and are always taken.
                    pick = set(rng.choice(len(new), size=left, replace=False).tolist())
                    drop = {c for i, c in enumerate(new) if i not in pick}
                    untried = [c for c in untried if c not in drop]
                run(untried, f"refine r={radius:g}")
                if incumbent() is best:
                    radius /= 2
    finally:
        if pool is not None:
            pool.shutdown()
    return TuneResult(
        space=space,
        evaluations=evaluations,
        best=incumbent(),
        target=target,
        slo_ttft_s=slo_ttft_s,
        seed=seed,
        budget=budget,
        strategy=strategy,
        tie_tolerance=tie_tolerance,
        stretch_s=stretch_s,
        reused=len(evaluations) - spent,
    )


def _product(axes: Sequence[Sequence[Scalar]]) -> list[list[Scalar]]:
    out: list[list[Scalar]] = [[]]
    for axis in axes:
        out = [[*prefix, v] for prefix in out for v in axis]
    return out


# ---------------------------------------------------------------------------- reports


def frontier_json(result: TuneResult, trace_info: dict[str, Any]) -> dict[str, Any]:
    on_frontier = {e.index for e in result.frontier()}
    return {
        "policy_file": result.space.policy_file,
        "space_file": result.space.file,
        "trace": trace_info,
        "slo_ttft_s": result.slo_ttft_s,
        "target_attainment": result.target,
        "seed": result.seed,
        "budget": result.budget,
        "strategy": result.strategy,
        "tie_tolerance": result.tie_tolerance,
        "stretch_s": result.stretch_s,
        **({"reused": result.reused} if result.reused else {}),
        "feasible": result.feasible,
        "best": result.best.index,
        "points": [
            {
                "index": e.index,
                "phase": e.phase,
                "params": result.space.assignment(e.point),
                **({"metrics": e.metrics} if e.error is None else {"error": e.error}),
                "feasible": e.feasible(result.target),
                "frontier": e.index in on_frontier,
            }
            for e in result.evaluations
        ],
    }


def prior_evaluations(space: Space, frontier: dict[str, Any]) -> list[Evaluation]:
    """The evaluations of an earlier search (its ``frontier_json``) over ``space``, to pass to
    ``tune(prior=...)``. The caller vouches that the search ran on the same trace, cluster, seed
    and stretch; the space must be the same one (same file and dimensions), or this raises."""
    if frontier.get("space_file") != space.file:
        raise ValueError(f"{space.file}: the earlier search used {frontier.get('space_file')}")
    out = []
    for i, row in enumerate(frontier["points"]):
        params = row["params"]
        if set(params) != {d.path for d in space.dims}:
            raise ValueError(f"{space.file}: the earlier search's dimensions differ")
        point = tuple(params[d.path] for d in space.dims)
        out.append(Evaluation(i, point, row["phase"], row.get("metrics", {}), row.get("error")))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _hourly(e: Evaluation) -> str:
    hourly = e.metrics.get("hourly_attainment")
    return "-" if hourly is None else f"{float(hourly):.4f}"


def frontier_markdown(result: TuneResult, trace_info: dict[str, Any]) -> str:
    space = result.space
    best = result.best
    on_frontier = {e.index for e in result.frontier()}
    short = [d.path.rsplit(".", 1)[-1] for d in space.dims]
    cheapest = min(result.evaluations, key=lambda e: e.rank(result.target))
    tie = (
        f"; the cheapest feasible point, {cheapest.index} at {cheapest.gpu_hours:.3f} GPU-h "
        f"(attainment {cheapest.attainment:.4f}, hourly {_hourly(cheapest)}), is within the "
        f"{result.tie_tolerance:.0%} cost tie and has less margin"
        if result.feasible and cheapest.index != best.index
        else ""
    )
    verdict = (
        f"meets the target at {best.gpu_hours:.3f} GPU-h (attainment {best.attainment:.4f}, "
        f"hourly {_hourly(best)}){tie}"
        if result.feasible
        else f"NO evaluated point meets the target; the best score {best.score:.4f} "
        f"(attainment {best.attainment:.4f}, hourly {_hourly(best)}) at "
        f"{best.gpu_hours:.3f} GPU-h is written instead"
    )
    hours = (
        f"the mean attainment over its {result.stretch_s:g} s stretches after the first "
        f"(with >= {STRETCH_MIN_REQUESTS} requests)"
        if result.stretch_s > 0
        else "off"
    )
    lines = [
        f"# Tuning {space.policy_file}",
        "",
        f"- trace: {trace_info.get('name')} ({trace_info.get('requests')} requests, "
        f"window {trace_info.get('window')})",
        f"- SLO: TTFT <= {result.slo_ttft_s:g} s for >= {result.target:g} of requests, and "
        f"in the hourly attainment ({hours}); a point's score is the lower of the two; "
        f"seed {result.seed}; {len(result.evaluations) - result.reused} of {result.budget} "
        f"evaluations ({result.strategy})"
        + (
            f", plus {result.reused} points an earlier search on this window evaluated (marked "
            "reused, not simulated again)"
            if result.reused
            else ""
        )
        + f"; feasible points within {result.tie_tolerance:.0%} of the least "
        "GPU-hours tie on cost, and the best score among them is chosen",
        f"- space: {space.file}",
        f"- chosen: point {best.index}, "
        + ", ".join(f"{d.path} = {_fmt(v)}" for d, v in zip(space.dims, best.point, strict=True)),
        f"- result: {verdict}",
        "",
        "Every evaluated point, cheapest first; `F` marks the Pareto frontier (no other point has "
        "both fewer GPU-hours and a higher score), `*` the chosen point.",
        "",
        "| # | phase | " + " | ".join(short) + " | GPU-h | attainment | hourly | p99 TTFT (s) "
        "| feasible | frontier |",
        "|---:|---|" + "---:|" * len(short) + "---:|---:|---:|---:|---|---|",
    ]
    for e in sorted(result.evaluations, key=lambda e: (e.gpu_hours, -e.score, e.index)):
        values = " | ".join(_fmt(v) for v in e.point)
        if e.error is not None:
            lines.append(
                f"| {e.index} | {e.phase} | {values} | - | - | - | - | invalid: {e.error} | |"
            )
            continue
        p99 = e.metrics.get("ttft_p99_s")
        mark = "*" if e.index == best.index else ""
        lines.append(
            f"| {e.index}{mark} | {e.phase} | {values} | {e.gpu_hours:.3f} | "
            f"{e.attainment:.4f} | {_hourly(e)} | {'-' if p99 is None else f'{p99:.2f}'} | "
            f"{'yes' if e.feasible(result.target) else 'no'} | "
            f"{'F' if e.index in on_frontier else ''} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(result: TuneResult, out_dir: Path, trace_info: dict[str, Any]) -> Path:
    """Write ``<stem>.tuned.yaml``, ``frontier.json`` and ``frontier.md``; returns the YAML."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tuned = out_dir / f"{Path(result.space.policy_file).stem}.tuned.yaml"
    tuned.write_text(result.tuned_text(), encoding="utf-8")
    data = frontier_json(result, trace_info)
    (out_dir / "frontier.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (out_dir / "frontier.md").write_text(frontier_markdown(result, trace_info))
    return tuned


def split_windows(trace: Trace) -> tuple[tuple[float, float], tuple[float, float]]:
    """Train and test windows ``[start, end)`` on the trace's time axis: the first and second
    half of the time from the first to just past the last arrival. They share only the cut."""
    if trace.requests == 0:
        raise ValueError(f"trace {trace.name!r} has no requests to split")
    first = float(trace.arrival_s[0])
    last = float(trace.arrival_s[-1])
    end = math.nextafter(last, math.inf)
    mid = first + (last - first) / 2.0
    return (first, mid), (mid, end)
