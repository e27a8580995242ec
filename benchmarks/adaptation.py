"""Adaptation benchmark on the default task ("synthetic -> handwritten digits").

Trains source_only, DANN and TADA with the params.yaml settings and 3 seeds each, through the same training loop,
and prints a markdown table: target accuracy (last iterate, mean +- std over seeds), source accuracy, wall time per
run, and TADA's gain over source-only and over DANN, checked against the targets of the acceptance criteria
(TADA >= source-only + 5 points, TADA >= DANN, one TADA run <= 5 minutes). The table is also written as JSON.

    python benchmarks/adaptation.py                      # 9 runs, ~20 min on 2 CPU cores
    python benchmarks/adaptation.py --seeds 0 --set train.iterations=500   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tada.config import load_config, parse_overrides
from tada.data.default_task import build_default_task
from tada.io import write_json_atomic
from tada.methods import METHODS as ALL_METHODS
from tada.train import train

METHODS = ("source_only", "dann", "tada")
TARGET_GAIN_OVER_SOURCE_ONLY = 5.0  # points
TARGET_SECONDS_PER_TADA_RUN = 300.0


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(ALL_METHODS),
                        help="also the ablations tada_no_local and tada_no_global")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/adaptation.json"))
    args = parser.parse_args(argv)

    base = load_config(args.params, parse_overrides(args.set))
    task = build_default_task(base.data)  # the dataset is fixed; only the training seed varies
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            config = base.replace({"method.name": method, "train.seed": seed})
            result = train(config, task)
            run = {"method": method, "seed": seed, "seconds": round(result.seconds, 1),
                   "target_accuracy": result.final["target_accuracy"],
                   "source_accuracy": result.final["source_accuracy"]}
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)

    summary = {}
    for method in args.methods:
        rows = [r for r in runs if r["method"] == method]
        tm, ts = mean_std([100 * r["target_accuracy"] for r in rows])
        sm, _ = mean_std([100 * r["source_accuracy"] for r in rows])
        summary[method] = {"target_mean": round(tm, 2), "target_std": round(ts, 2), "source_mean": round(sm, 2),
                           "seconds_mean": round(statistics.fmean(r["seconds"] for r in rows), 1)}

    lines = [
        "| method | target accuracy (%) | source accuracy (%) | wall time per run (s) |",
        "|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(f"| {method} | {s['target_mean']:.2f} ± {s['target_std']:.2f} | {s['source_mean']:.2f} "
                     f"| {s['seconds_mean']:.0f} |")
    checks = {}
    if {"tada", "source_only", "dann"} <= set(summary):
        gain_so = summary["tada"]["target_mean"] - summary["source_only"]["target_mean"]
        gain_dann = summary["tada"]["target_mean"] - summary["dann"]["target_mean"]
        slowest = max(r["seconds"] for r in runs if r["method"] == "tada")
        checks = {
            "gain_over_source_only": round(gain_so, 2),
            "gain_over_dann": round(gain_dann, 2),
            "slowest_tada_run_seconds": slowest,
            "gain_over_source_only_ok": gain_so >= TARGET_GAIN_OVER_SOURCE_ONLY,
            "at_least_dann_ok": gain_dann >= 0,
            "tada_run_time_ok": slowest <= TARGET_SECONDS_PER_TADA_RUN,
        }
        lines += [
            "",
            f"TADA gain over source-only: {gain_so:+.2f} points (target >= +{TARGET_GAIN_OVER_SOURCE_ONLY:.0f}: "
            f"{'met' if checks['gain_over_source_only_ok'] else 'NOT met'}); "
            f"over DANN: {gain_dann:+.2f} points (target >= 0: {'met' if checks['at_least_dann_ok'] else 'NOT met'}); "
            f"slowest TADA run {slowest:.0f} s (target <= {TARGET_SECONDS_PER_TADA_RUN:.0f} s: "
            f"{'met' if checks['tada_run_time_ok'] else 'NOT met'}).",
        ]
    n_seeds = len(args.seeds)
    lines.append(f"\nMean ± std over {n_seeds} seed{'s' * (n_seeds > 1)} ({', '.join(map(str, args.seeds))}), "
                 f"last iterate after {base.train.iterations} iterations; target = held-out handwritten test split "
                 f"({len(task.target_test)} images).")
    table = "\n".join(lines)
    print(table)
    write_json_atomic(args.out, {
        "command": " ".join(["python", "benchmarks/adaptation.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "config_digest": base.digest(),
        "summary": summary, "checks": checks, "runs": runs, "markdown": table,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
