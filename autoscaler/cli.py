"""The ``autoscaler`` command: parses arguments and hands over to config, sim or service."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from autoscaler.config.loader import load_policy, validate_files
from autoscaler.core.errors import ConfigError


def _expand(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    files = _expand(args.files)
    if not files:
        print("autoscaler validate: no policy files found", file=sys.stderr)
        return 2
    problems = validate_files(files)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        bad = len({p.file for p in problems})
        print(f"{bad} of {len(files)} file(s) invalid, {len(problems)} problem(s)", file=sys.stderr)
        return 2
    if not args.quiet:
        for f in files:
            print(f"{f}: ok")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from autoscaler.config.schema import policy_schema

    json.dump(policy_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from autoscaler.engine import Engine
    from autoscaler.testing.sequences import demo_sequence

    doc = load_policy(args.policy)
    engine = Engine.from_policy(doc)
    keys = sorted(engine.targets)
    if not args.json:  # JSON lines carry no header, so every line parses
        print(f"{'t(s)':>6} {'target':<24} {'signal':>10} {'raw':>5} {'final':>5}  guards")
    for now, observations in demo_sequence(keys, seconds=args.seconds, step=args.step):
        for d in engine.tick(now, observations):
            if args.json:
                print(json.dumps(d.to_dict(), sort_keys=True))
                continue
            shown = next(iter(d.inputs.values()), float("nan"))
            clips = "; ".join(f"{g.guard}: {g.reason}" for g in d.guards)
            print(
                f"{now:6.0f} {d.target:<24} {shown:10.1f} {d.proposal!s:>5} {d.replicas:>5}  "
                f"{clips}"
            )
    return 0


class _Progress:
    """A one-line progress bar on stderr, shown only for runs longer than a few seconds."""

    def __init__(self, label: str, timer: Callable[[], float], enabled: bool) -> None:
        self.label = label
        self.timer = timer
        self.enabled = enabled
        self.started = timer()
        self.shown = False

    def __call__(self, fraction: float) -> None:
        if not self.enabled or self.timer() - self.started < 3.0:
            return
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r{self.label:<28} [{bar:<30}] {fraction * 100:5.1f}%")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def cmd_simulate(args: argparse.Namespace) -> int:
    from autoscaler.service.clock import perf_timer
    from autoscaler.sim.cluster_config import load_cluster
    from autoscaler.sim.report import comparison_table, write_report
    from autoscaler.sim.runner import simulate
    from autoscaler.sim.traces import load_trace

    policies = [(p, load_policy(p)) for p in args.policy]
    cluster = load_cluster(args.cluster).spec
    trace = load_trace(
        args.trace,
        args.trace_format,
        start_s=args.start,
        end_s=args.end,
        speedup=args.speedup,
        seed=args.seed,
    )
    slo = args.slo_ttft if args.slo_ttft is not None else cluster.slo_ttft_seconds
    measure_from = None
    if args.measure_from is not None:  # on the trace's axis, as --start: relative to the slice
        measure_from = args.measure_from - (args.start or 0.0)
        if measure_from < 0:
            raise ValueError(
                f"--measure-from ({args.measure_from:g}) is before --start ({args.start:g})"
            )
    if not args.quiet:
        window = "" if measure_from is None else f"; measured from {args.measure_from:g}s"
        print(
            f"trace {trace.name}: {trace.requests} requests over {trace.span_s / 3600:.2f} h; "
            f"SLO TTFT {slo:g}s{window}",
            file=sys.stderr,
        )
    results = []
    for path, doc in policies:
        bar = _Progress(doc.metadata.name, perf_timer, not args.quiet)
        result = simulate(
            trace,
            doc,
            cluster,
            seed=args.seed,
            slo_ttft_s=slo,
            timer=perf_timer,
            progress=bar,
            measure_from=measure_from,
        )
        bar.done()
        result.compact()  # keep a TTFT sample, not every request: memory ~ trace, not x policies
        result.metrics = {"policy": doc.metadata.name, "file": str(path), **result.metrics}
        results.append(result)
    print(comparison_table(results, slo))
    trace_info = {
        "name": trace.name,
        "format": trace.fmt,
        "requests": trace.requests,
        "span_s": round(trace.span_s, 3),
    }
    if args.measure_from is not None:
        trace_info["measure_from_s"] = args.measure_from
    if args.json:
        out = {
            "trace": trace_info,
            "slo_ttft_s": slo,
            "seed": args.seed,
            "policies": [r.metrics for r in results],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    if args.report:
        written = write_report(Path(args.report), trace_info, results, slo)
        if not args.quiet:
            print(f"report: {written[0]}", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from autoscaler.service.clock import perf_timer
    from autoscaler.sim.cluster_config import load_cluster
    from autoscaler.sim.traces import load_trace
    from autoscaler.sim.tune import (
        STRETCH_S,
        default_space_file,
        load_space,
        prior_evaluations,
        tune,
        write_outputs,
    )

    space_file = args.space or default_space_file(args.policy)
    space = load_space(space_file, args.policy)
    cluster = load_cluster(args.cluster).spec
    trace = load_trace(
        args.trace, args.trace_format, start_s=args.start, end_s=args.end, seed=args.seed
    )
    slo = args.slo_ttft if args.slo_ttft is not None else cluster.slo_ttft_seconds
    window = f"[{args.start if args.start is not None else 'start'}, "
    window += f"{args.end if args.end is not None else 'end'})"
    info = {"name": trace.name, "requests": trace.requests, "window": window}
    prior = []
    if args.continue_from:
        stretch = STRETCH_S if args.stretch is None else args.stretch
        earlier = json.loads(Path(args.continue_from).read_text())
        # The figures are reused as they are, so the earlier search must have simulated the
        # same thing: same window of the same trace, SLO, seed and stretch (the cluster model is
        # not recorded in frontier.json: the caller vouches for it).
        same = {
            "trace": (earlier.get("trace", {}).get("name"), trace.name),
            "requests": (earlier.get("trace", {}).get("requests"), trace.requests),
            "window": (earlier.get("trace", {}).get("window"), window),
            "slo_ttft_s": (earlier.get("slo_ttft_s"), slo),
            "seed": (earlier.get("seed"), args.seed),
            "stretch_s": (earlier.get("stretch_s"), stretch),
        }
        differ = [f"{k} {a!r} there, {b!r} here" for k, (a, b) in same.items() if a != b]
        try:
            if differ:
                raise ValueError("; ".join(differ))
            prior = prior_evaluations(space, earlier)
        except (ValueError, KeyError, TypeError) as e:
            print(
                f"autoscaler tune: --continue {args.continue_from}: cannot continue that "
                f"search: {e}",
                file=sys.stderr,
            )
            return 2
    bar = _Progress(f"tune {Path(args.policy).stem}", perf_timer, not args.quiet)
    result = tune(
        space,
        trace,
        cluster,
        slo_ttft_s=slo,
        target=args.target,
        budget=args.budget,
        seed=args.seed,
        jobs=args.jobs,
        progress=bar,
        **({} if args.tie_tolerance is None else {"tie_tolerance": args.tie_tolerance}),
        **({} if args.stretch is None else {"stretch_s": args.stretch}),
        prior=prior,
    )
    bar.done()
    tuned = write_outputs(result, Path(args.out), info)
    best = result.best
    values = ", ".join(f"{k} = {v}" for k, v in space.assignment(best.point).items())
    status = "meets" if result.feasible else "MISSES"
    hourly = best.metrics.get("hourly_attainment")
    print(
        f"{tuned}: {values}; {best.gpu_hours:.3f} GPU-h, attainment {best.attainment:.4f}"
        + ("" if hourly is None else f", hourly {hourly:.4f}")
        + f" ({status} {args.target:g}); {len(result.evaluations) - result.reused} evaluations"
        + (f" (+{result.reused} from {args.continue_from})" if result.reused else "")
    )
    return 0 if result.feasible else 3


def cmd_trace_synth(args: argparse.Namespace) -> int:
    from autoscaler.sim.synth import synth_trace, write_csv

    trace = synth_trace(
        args.duration,
        args.mean_rps,
        seed=args.seed,
        diurnal_amplitude=args.diurnal_amplitude,
        diurnal_period_s=args.diurnal_period,
        burst_rate_per_h=args.bursts_per_hour,
        burst_multiplier=args.burst_multiplier,
        burst_duration_s=args.burst_seconds,
        idle_gap_fraction=args.idle_fraction,
        token_profile=args.tokens,
    )
    write_csv(trace, args.out)
    print(f"{args.out}: {trace.requests} requests over {args.duration:g}s", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from autoscaler.service.app import main as service_main
    from autoscaler.service.settings import Settings

    env = Settings.env_defaults()
    config = args.config or env.get("config")
    if not config:
        print("autoscaler run: --config (or AUTOSCALER_CONFIG) is required", file=sys.stderr)
        return 2
    values: dict[str, object] = {**env, "config": config}
    flags = {
        "kubeconfig": args.kubeconfig,
        "namespaces": tuple(args.namespace) if args.namespace else None,
        "tick_seconds": args.tick_seconds,
        "scrape_seconds": args.scrape_seconds,
        "scrape_max_rate": args.scrape_max_rate,
        "selector_refresh_seconds": args.selector_refresh_seconds,
        "listen": args.listen,
        "lease_name": args.lease_name,
        "lease_namespace": args.lease_namespace,
        "identity": args.identity,
        "log_level": args.log_level,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.dry_run:
        values["dry_run"] = True
    if args.once:
        values["once"] = True
    if args.text_logs:
        values["log_json"] = False
    return service_main(Settings(**values))  # type: ignore[arg-type]


def cmd_agent(args: argparse.Namespace) -> int:
    """The sidecar (autoscaler/traffic/agent): the CLI gives it the real clock and the NVML
    collector, which its layer may not import."""
    from prometheus_client import CollectorRegistry

    from autoscaler.service.clock import SystemClock
    from autoscaler.traffic.agent.main import run_agent
    from autoscaler.traffic.agent.options import config_from_args

    config = config_from_args(args)
    registry = CollectorRegistry()
    if not config.nvml:
        return run_agent(config, SystemClock(), registry)
    from autoscaler.sources.nvml import NvmlCollector, NvmlReader

    reader = NvmlReader()
    registry.register(NvmlCollector(reader))
    return run_agent(
        config, SystemClock(), registry, before_metrics=reader.read, on_close=reader.close
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Autoscaler and traffic-management sidecar for KServe.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate policy YAML files (exit 2 with FILE:LINE:COL)")
    p.add_argument("files", nargs="+", help="policy files or directories")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "run",
        help="the in-cluster service (every flag also from an environment variable)",
        description="Run the autoscaler beside KServe: watch the targets of the policy, decide "
        "every tick, write through the engines' own knobs. Only the leader (a Lease) writes; "
        "followers compute in dry-run so a takeover starts warm.",
    )
    p.add_argument("--config", help="policy YAML, hot-reloaded when it changes (AUTOSCALER_CONFIG)")
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig file; in-cluster config when absent (AUTOSCALER_KUBECONFIG)",
    )
    p.add_argument(
        "--namespace",
        action="append",
        help="manage only targets in this namespace; "
        "repeatable (AUTOSCALER_NAMESPACES, comma-separated)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and record, write nothing (AUTOSCALER_DRY_RUN=1)",
    )
    p.add_argument(
        "--tick-seconds",
        type=float,
        help="seconds between ticks, default 5 (AUTOSCALER_TICK_SECONDS)",
    )
    p.add_argument(
        "--scrape-seconds",
        type=float,
        help="seconds between scrapes of a target's pods, in the background and spread over the "
        "interval; default: the tick (AUTOSCALER_SCRAPE_SECONDS)",
    )
    p.add_argument(
        "--scrape-max-rate",
        type=float,
        help="at most this many target scrapes per second: the interval stretches to "
        "targets / rate when longer, bounding scrape CPU; 0: no bound; default 200 "
        "(AUTOSCALER_SCRAPE_MAX_RATE)",
    )
    p.add_argument(
        "--selector-refresh-seconds",
        type=float,
        help="seconds between listings of the objects selector targets match, default 60 "
        "(AUTOSCALER_SELECTOR_REFRESH_SECONDS)",
    )
    p.add_argument(
        "--listen",
        help="HTTP address for /metrics, /healthz, /readyz, /debug, "
        "default :8080 (AUTOSCALER_LISTEN)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="one tick (read, decide, write), then "
        "print the decision records as JSON lines and exit",
    )
    p.add_argument("--lease-name", help="Lease for leader election (AUTOSCALER_LEASE_NAME)")
    p.add_argument("--lease-namespace", help="namespace of the Lease (POD_NAMESPACE)")
    p.add_argument("--identity", help="this replica's identity in the Lease (POD_NAME)")
    p.add_argument(
        "--log-level", help="debug shows one record per target per tick (AUTOSCALER_LOG_LEVEL)"
    )
    p.add_argument(
        "--text-logs",
        action="store_true",
        help="plain text logs instead of JSON lines (AUTOSCALER_LOG_JSON=0)",
    )
    p.set_defaults(func=cmd_run)

    from autoscaler.traffic.agent.options import add_agent_parser

    add_agent_parser(sub).set_defaults(func=cmd_agent)

    p = sub.add_parser("schema", help="print the JSON Schema of the policy YAML")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("decide", help="print a policy's decisions over a bundled signal sequence")
    p.add_argument("policy", help="policy YAML file")
    p.add_argument("--seconds", type=float, default=900.0, help="length of the sequence")
    p.add_argument("--step", type=float, default=15.0, help="seconds between ticks")
    p.add_argument("--json", action="store_true", help="decision records as JSON lines")
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser("simulate", help="replay a trace under one or more policies")
    p.add_argument("--trace", required=True, help="trace file (see docs/simulator.md)")
    p.add_argument(
        "--trace-format",
        default="auto",
        help="auto, azure, mooncake, alibaba-requests, alibaba-qps, servegen, csv",
    )
    p.add_argument("--policy", action="append", required=True, help="policy YAML (repeatable)")
    p.add_argument("--cluster", help="cluster model YAML (default: 8B model on one H100)")
    p.add_argument("--slo-ttft", type=float, help="TTFT SLO in seconds (default: the cluster's)")
    p.add_argument("--json", help="write results as JSON here")
    p.add_argument("--report", help="write report.md and plots into this directory")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--speedup", type=float, default=1.0, help="replay at k x the trace's rate")
    p.add_argument("--start", type=float, help="slice: first second of the trace to replay")
    p.add_argument("--end", type=float, help="slice: second of the trace to stop at")
    p.add_argument(
        "--measure-from",
        type=float,
        help="replay from the start but report only [T, end] (T on the trace's axis, as --start)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress or notes on stderr")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "tune",
        help="search a policy's parameters for the least GPU-hours meeting the SLO",
        description="Search the parameters named in a space file (docs/tuning.md) for the "
        "least GPU-hours with TTFT SLO attainment >= --target on the trace window, over its "
        "requests and in its hourly mean (--stretch); write "
        "<stem>.tuned.yaml, frontier.md and frontier.json into --out. Exit 3 when no evaluated "
        "point meets the target (the best one found is still written).",
    )
    p.add_argument("--trace", required=True, help="trace file (see docs/simulator.md)")
    p.add_argument("--trace-format", default="auto", help="as for simulate")
    p.add_argument("--policy", required=True, help="policy YAML to tune")
    p.add_argument(
        "--space", help="search space YAML (default: simulations/spaces/<stem>.yaml above it)"
    )
    p.add_argument("--cluster", help="cluster model YAML (default: 8B model on one H100)")
    p.add_argument("--slo-ttft", type=float, help="TTFT SLO in seconds (default: the cluster's)")
    p.add_argument(
        "--target", type=float, default=0.99, help="SLO attainment to meet (default 0.99)"
    )
    p.add_argument("--budget", type=int, default=40, help="simulations to run at most")
    p.add_argument(
        "--tie-tolerance",
        type=float,
        help="feasible points within this fraction of the least GPU-hours tie on cost; the one "
        "with the best attainment among them is chosen (default 0.01; 0: strictly the cheapest)",
    )
    p.add_argument(
        "--stretch",
        type=float,
        help="seconds per stretch of the hourly attainment, the mean of each stretch's "
        "attainment after the first, also held to --target (default 3600; 0: off)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the search and the simulations")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (results do not change)")
    p.add_argument("--start", type=float, help="slice: first second of the trace to tune on")
    p.add_argument("--end", type=float, help="slice: second of the trace to stop at")
    p.add_argument("--out", required=True, help="directory for the tuned YAML and the frontier")
    p.add_argument(
        "--continue",
        dest="continue_from",
        metavar="FRONTIER_JSON",
        help="continue an earlier search (its frontier.json) on the same trace window, SLO, "
        "seed, stretch and cluster, say at another --target: its points are not simulated "
        "again and --budget buys new ones",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("trace", help="trace utilities")
    tsub = p.add_subparsers(dest="trace_command", required=True)
    p = tsub.add_parser("synth", help="write a seeded synthetic trace as generic CSV")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds")
    p.add_argument("--mean-rps", type=float, default=5.0, help="mean requests per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tokens",
        default="azure-conv",
        help="token profile: azure-conv, azure-code, mooncake or none",
    )
    p.add_argument("--diurnal-amplitude", type=float, default=0.5)
    p.add_argument("--diurnal-period", type=float, default=86400.0, help="seconds")
    p.add_argument("--bursts-per-hour", type=float, default=1.0)
    p.add_argument("--burst-multiplier", type=float, default=4.0)
    p.add_argument("--burst-seconds", type=float, default=60.0)
    p.add_argument("--idle-fraction", type=float, default=0.0, help="share of time with no load")
    p.set_defaults(func=cmd_trace_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    except ValueError as e:  # bad option values (e.g. a negative speedup)
        print(f"autoscaler: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
