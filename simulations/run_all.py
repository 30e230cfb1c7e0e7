"""Run every scenario in simulations/scenarios.yaml and write results/<name>/{results.json,
report.md, *.png}, then the summary table simulations/README.md links to.

    .venv/bin/python simulations/run_all.py [--only NAME] [--seed 0]

Run from the repository root; traces are read from ../shared/traces and never copied here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from autoscaler.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", help="scenario name (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    scenarios = yaml.safe_load((ROOT / "simulations" / "scenarios.yaml").read_text())["scenarios"]
    rows = []
    for sc in scenarios:
        if args.only and sc["name"] not in args.only:
            continue
        out = ROOT / "simulations" / "results" / sc["name"]
        argv = ["simulate", "--trace", str(ROOT / sc["trace"]), "--cluster",
                str(ROOT / sc["cluster"]), "--json", str(out / "results.json"), "--report",
                str(out), "--seed", str(args.seed), "--quiet"]
        for p in sc["policies"]:
            argv += ["--policy", str(ROOT / p)]
        print(f"== {sc['name']}", flush=True)
        rc = cli(argv)
        if rc:
            return rc
        data = json.loads((out / "results.json").read_text())
        for m in data["policies"]:
            m["file"] = str(Path(m["file"]).resolve().relative_to(ROOT))
        (out / "results.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        rows += [(sc["name"], m) for m in data["policies"]]
    lines = ["| trace | policy | GPU-hours | SLO attainment | p99 TTFT (s) | cold-start requests "
             "| goodput tokens/GPU-s |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, m in rows:
        p99 = "-" if m["ttft_p99_s"] is None else f"{m['ttft_p99_s']:.2f}"
        lines.append(f"| {name} | {m['policy']} | {m['gpu_hours']:.2f} | "
                     f"{m['slo_attainment']:.3f} | {p99} | {m['cold_start_requests']} | "
                     f"{m['goodput_tokens_per_gpu_s']:.0f} |")
    (ROOT / "simulations" / "results" / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
