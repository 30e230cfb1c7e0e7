"""Compare simulated policies: a text table for the terminal, and report.md with PNG plots.

``comparison_table`` renders one row per ``RunResult`` in the order given. ``write_report`` writes
``report.md`` (the trace, the same table in markdown, one sentence per policy, links to the plots)
and three PNGs: demand against replicas over time, the TTFT CDF, and cost against SLO attainment.

matplotlib is imported inside ``write_report`` only, so importing this module stays cheap and
matplotlib remains an optional dependency (the ``report`` extra). The output is deterministic:
fixed figure sizes and dpi, and no timestamp or software version in the PNG metadata, so the
same results give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoscaler.sim.runner import RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REPORT_MD = "report.md"
TIMELINE_PNG = "timeline.png"
TTFT_CDF_PNG = "ttft_cdf.png"
COST_VS_SLO_PNG = "cost_vs_slo.png"

DPI = 100
#: TTFT values below this are drawn at this value on the CDF's log axis (a request that starts
#: at once has a TTFT of exactly 0 outside LLM mode, which a log axis cannot show).
TTFT_FLOOR_S = 1e-3
#: At most this many points per CDF line: enough for a smooth curve, small files for big traces.
CDF_POINTS = 2000
#: Two SLO attainments this close count as equal when picking the cheapest best policy.
ATTAINMENT_TOL = 1e-9

MISSING = "-"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for None/NaN/inf/non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(spec: str, scale: float = 1.0) -> Callable[[Any], str]:
    def render(value: Any) -> str:
        x = _number(value)
        return MISSING if x is None else format(x * scale, spec)

    return render


def _fmt_int(value: Any) -> str:
    x = _number(value)
    return MISSING if x is None else str(round(x))


def _columns(slo_s: float) -> list[tuple[str, str, Callable[[Any], str]]]:
    """(header, metrics key, formatter) for every column after the policy name."""
    return [
        (f"SLO<={slo_s:g}s %", "slo_attainment", _fmt(".2f", 100.0)),
        ("TTFT p50 s", "ttft_p50_s", _fmt(".3f")),
        ("TTFT p99 s", "ttft_p99_s", _fmt(".3f")),
        ("GPU-h", "gpu_hours", _fmt(".3f")),
        ("mean repl", "mean_replicas", _fmt(".2f")),
        ("max repl", "max_replicas", _fmt_int),
        ("cold starts", "cold_starts", _fmt_int),
        ("cold-start reqs", "cold_start_requests", _fmt_int),
        ("dropped", "dropped", _fmt_int),
        ("scale events", "scale_events", _fmt_int),
        ("goodput tok/GPU-s", "goodput_tokens_per_gpu_s", _fmt(".1f")),
    ]


def _cells(results: Sequence[RunResult], slo_s: float) -> tuple[list[str], list[list[str]]]:
    cols = _columns(slo_s)
    header = ["policy", *(h for h, _, _ in cols)]
    rows = [[r.policy, *(f(r.metrics.get(key)) for _, key, f in cols)] for r in results]
    return header, rows


def comparison_table(results: list[RunResult], slo_s: float) -> str:
    """A fixed-width text table, one row per policy in the order given; missing values as "-"."""
    header, rows = _cells(results, slo_s)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def _markdown_table(results: Sequence[RunResult], slo_s: float) -> str:
    header, rows = _cells(results, slo_s)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "| " + " | ".join([":---", *("---:" for _ in header[1:])]) + " |"
    return "\n".join([line(header), align, *(line(r) for r in rows)]) + "\n"


# ----------------------------------------------------------------------------- summary sentences


def _cheapest_best(results: Sequence[RunResult]) -> tuple[RunResult, float] | None:
    """The cheapest (fewest GPU-hours, first on ties) policy with the best SLO attainment."""
    scored = [(r, _number(r.metrics.get("slo_attainment"))) for r in results]
    known = [(r, a) for r, a in scored if a is not None]
    if not known:
        return None
    best = max(a for _, a in known)
    top = [r for r, a in known if a >= best - ATTAINMENT_TOL]

    def cost(r: RunResult) -> float:
        g = _number(r.metrics.get("gpu_hours"))
        return math.inf if g is None else g

    return min(top, key=cost), best


def _cost_vs(gpu: float | None, base: float | None, name: str) -> str:
    if gpu is None or base is None:
        return ""
    if base > 0:
        return f" ({(gpu - base) / base * 100.0:+.1f}% vs {name})"
    return f" ({gpu - base:+.3f} GPU-hours vs {name})"


def _sentences(results: Sequence[RunResult], slo_s: float) -> list[str]:
    picked = _cheapest_best(results)
    if picked is None:
        return [f"No policy reports an SLO attainment (TTFT <= {slo_s:g} s)."]
    winner, best = picked
    base = _number(winner.metrics.get("gpu_hours"))
    out: list[str] = [
        f"Best SLO attainment (TTFT <= {slo_s:g} s): {best * 100.0:.2f}%; the cheapest policy "
        f"reaching it is **{winner.policy}** at {_fmt('.3f')(base)} GPU-hours."
    ]
    for r in results:
        att = _number(r.metrics.get("slo_attainment"))
        gpu = _number(r.metrics.get("gpu_hours"))
        gpu_s = _fmt(".3f")(gpu)
        if r is winner:
            text = (
                f"**{r.policy}** is the cheapest policy at the best SLO attainment "
                f"({best * 100.0:.2f}%), using {gpu_s} GPU-hours"
            )
        elif att is None:
            text = (
                f"**{r.policy}** reports no SLO attainment; it uses {gpu_s} GPU-hours"
                f"{_cost_vs(gpu, base, winner.policy)}"
            )
        elif att >= best - ATTAINMENT_TOL:
            text = (
                f"**{r.policy}** also reaches the best SLO attainment ({att * 100.0:.2f}%) but "
                f"uses {gpu_s} GPU-hours{_cost_vs(gpu, base, winner.policy)}"
            )
        else:
            text = (
                f"**{r.policy}** reaches {att * 100.0:.2f}% SLO attainment, "
                f"{(best - att) * 100.0:.2f} points below the best, using {gpu_s} GPU-hours"
                f"{_cost_vs(gpu, base, winner.policy)}"
            )
        dropped = _number(r.metrics.get("dropped"))
        if dropped:
            text += f"; {round(dropped)} requests were dropped"
        out.append(text + ".")
    return out


# ----------------------------------------------------------------------------- plots


def _figure(
    width: float, height: float, rows: int = 1, *, top: float = 0.35, right: float = 0.25
) -> tuple[Figure, list[Axes]]:
    """A figure of fixed size with ``rows`` stacked axes and fixed margins (in inches).

    Fixed margins instead of a layout engine: the same bytes every time and a few times faster
    (constrained layout draws the figure twice to measure it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    gap = 0.45  # room for each subplot's title
    axes = fig.subplots(
        rows,
        1,
        sharex=True,
        squeeze=False,
        gridspec_kw={
            "left": 0.8 / width,
            "right": 1.0 - right / width,
            "bottom": 0.6 / height,
            "top": 1.0 - top / height,
            "hspace": gap / ((height - 0.6 - top - gap * (rows - 1)) / rows),
        },
    )
    return fig, list(axes[:, 0])


def _save(fig: Figure, path: Path) -> None:
    # No "Software" (matplotlib version) text chunk; Agg PNGs carry no timestamp otherwise.
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


def _plot_timeline(results: Sequence[RunResult], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    n = len(results)
    fig, axes = _figure(10.0, 0.6 + 0.5 + 2.2 * n + 0.45 * (n - 1), n, top=0.5, right=0.8)
    for ax, r in zip(axes, results, strict=True):
        tl = r.timeline
        hours = np.asarray(tl.t, dtype=np.float64) / 3600.0
        ax.fill_between(
            hours,
            np.asarray(tl.demand, dtype=np.float64),
            step="post",
            color="tab:gray",
            alpha=0.35,
            linewidth=0.0,
            label="demand (in-flight + waiting requests)",
        )
        ax.set_ylabel("requests")
        ax.set_ylim(bottom=0)
        ax.set_title(r.policy, loc="left", fontsize="medium")
        rep = ax.twinx()
        rep.step(hours, tl.ready, where="post", color="tab:blue", label="ready replicas")
        rep.step(
            hours,
            tl.desired,
            where="post",
            color="tab:orange",
            linestyle="--",
            label="desired replicas",
        )
        rep.set_ylabel("replicas")
        rep.set_ylim(bottom=0)
        rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("time (h)")
    handles, labels = axes[0].get_legend_handles_labels()
    rhandles, rlabels = fig.axes[-1].get_legend_handles_labels()
    fig.legend(
        handles + rhandles,
        labels + rlabels,
        loc="upper center",
        ncols=3,
        fontsize="small",
        frameon=False,
    )
    _save(fig, path)


def _plot_ttft_cdf(results: Sequence[RunResult], slo_s: float, path: Path) -> None:
    fig, (ax,) = _figure(8.0, 5.0)
    for r in results:
        ttft = np.asarray(r.ttft, dtype=np.float64)
        total = ttft.shape[0]
        served = np.sort(ttft[~np.isnan(ttft)])
        if served.size == 0:
            ax.plot([], [], label=f"{r.policy} (no completed requests)")
            continue
        # Fraction of *all* requests: dropped ones never arrive, so the curve crosses the SLO
        # line at the SLO attainment and levels off at the completed fraction.
        frac = np.arange(1, served.size + 1, dtype=np.float64) / total
        if served.size > CDF_POINTS:
            idx = np.unique(np.linspace(0, served.size - 1, CDF_POINTS).round().astype(np.int64))
            served, frac = served[idx], frac[idx]
        ax.step(np.maximum(served, TTFT_FLOOR_S), frac, where="post", label=r.policy)
    ax.axvline(slo_s, color="black", linestyle=":", label=f"SLO {slo_s:g} s")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"TTFT (s, log; below {TTFT_FLOOR_S:g} s drawn at {TTFT_FLOOR_S:g} s)")
    ax.set_ylabel("fraction of all requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def _plot_cost_vs_slo(results: Sequence[RunResult], path: Path) -> None:
    fig, (ax,) = _figure(7.0, 5.0)
    for r in results:
        gpu = _number(r.metrics.get("gpu_hours"))
        att = _number(r.metrics.get("slo_attainment"))
        if gpu is None or att is None:
            continue
        ax.scatter([gpu], [att * 100.0], s=40)
        ax.annotate(
            r.policy, (gpu, att * 100.0), xytext=(5, 5), textcoords="offset points", fontsize=9
        )
    ax.margins(0.15)
    ax.set_xlabel("GPU-hours")
    ax.set_ylabel("SLO attainment (%)")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


# ----------------------------------------------------------------------------- report


def _trace_lines(trace_info: dict[str, Any], slo_s: float) -> list[str]:
    name = trace_info.get("name")
    requests = _number(trace_info.get("requests"))
    span = _number(trace_info.get("span_s"))
    span_text = MISSING if span is None else f"{span:.1f} s ({span / 3600.0:.2f} h)"
    lines = [
        f"- Trace: `{name if name is not None else MISSING}`",
        f"- Requests: {MISSING if requests is None else round(requests)}",
        f"- Span: {span_text}",
        f"- TTFT SLO: {slo_s:g} s",
    ]
    measure_from = _number(trace_info.get("measure_from_s"))
    if measure_from is not None:
        lines.append(
            f"- Measured from: {measure_from:g} s (the whole trace is replayed; every figure, "
            "plot and the TTFT CDF cover requests arriving from then on and replica time after it)"
        )
    return lines


def write_report(
    out_dir: Path, trace_info: dict[str, Any], results: list[RunResult], slo_s: float
) -> list[Path]:
    """Write report.md and the three PNG plots into ``out_dir``; return the paths written.

    ``trace_info`` supplies ``name``, ``requests`` and ``span_s`` (as from ``trace_summary`` plus
    the trace name); missing ones show as "-". An optional ``measure_from_s`` notes the
    measurement window of ``simulate(measure_from=...)``.
    """
    if not results:
        raise ValueError("write_report needs at least one RunResult")
    import matplotlib

    matplotlib.use("Agg")

    out_dir.mkdir(parents=True, exist_ok=True)
    timeline = out_dir / TIMELINE_PNG
    cdf = out_dir / TTFT_CDF_PNG
    cost = out_dir / COST_VS_SLO_PNG
    _plot_timeline(results, timeline)
    _plot_ttft_cdf(results, slo_s, cdf)
    _plot_cost_vs_slo(results, cost)

    title = trace_info.get("name")
    lines = [
        f"# Simulation report: {title if title is not None else 'trace'}",
        "",
        *_trace_lines(trace_info, slo_s),
        "",
        "## Policies",
        "",
        _markdown_table(results, slo_s).rstrip("\n"),
        "",
        "## Summary",
        "",
        *(f"- {s}" for s in _sentences(results, slo_s)),
        "",
        "## Plots",
        "",
        f"- [Demand vs replicas]({TIMELINE_PNG})",
        f"- [TTFT CDF]({TTFT_CDF_PNG})",
        f"- [Cost vs SLO attainment]({COST_VS_SLO_PNG})",
        "",
        f"![Demand (in-flight + waiting) vs ready and desired replicas]({TIMELINE_PNG})",
        "",
        f"![TTFT CDF]({TTFT_CDF_PNG})",
        "",
        f"![GPU-hours vs SLO attainment]({COST_VS_SLO_PNG})",
        "",
    ]
    md = out_dir / REPORT_MD
    md.write_text("\n".join(lines), encoding="utf-8")
    return [md, timeline, cdf, cost]
