"""The ``autoscaler`` command: parses arguments and hands over to config, sim or service."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
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

    p = sub.add_parser("schema", help="print the JSON Schema of the policy YAML")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("decide", help="print a policy's decisions over a bundled signal sequence")
    p.add_argument("policy", help="policy YAML file")
    p.add_argument("--seconds", type=float, default=900.0, help="length of the sequence")
    p.add_argument("--step", type=float, default=15.0, help="seconds between ticks")
    p.add_argument("--json", action="store_true", help="decision records as JSON lines")
    p.set_defaults(func=cmd_decide)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
