"""How far to trust each label-free validator: a sweep of checkpoints on the default task, scored against the true
target accuracy (which the validators never see).

The sweep trains source_only, DANN and TADA with 3 seeds under 3 settings of the learning rate and the adversarial
weight lambda, and keeps every intermediate evaluation (``--eval-interval``) as a checkpoint. For each validator of
`tada.validators` it reports, over all checkpoints:

- the weighted Spearman correlation with the target accuracy (Musgrave, Belongie & Lim 2022: the checkpoints
  weighted by their validator score's dense rank, normalised to (0, 1] and squared, so the checkpoints a validator
  would pick count most; weighted Pearson correlation of weighted mid-ranks);
- Kendall's tau;
- the top-1 regret: the best checkpoint's target accuracy minus that of the checkpoint the validator picks;
- for ATC (``estimated_target_accuracy``), the mean absolute error of the estimate, in points.

Then it measures what the validators add to a default ``dvc repro`` (``--overhead``): the extra predictions and the
scores at every evaluation of a default run, against the wall time of the whole pipeline in a copy of the repository.

    python benchmarks/validators.py                       # 27 runs, 162 checkpoints, ~35 min on 2 CPU cores
    python benchmarks/validators.py --overhead            # + the dvc repro measurement, ~3 min more
    python benchmarks/validators.py --from benchmarks/results/validators.json   # the tables again, no training
    python benchmarks/validators.py --from benchmarks/results/validators.json --overhead   # + the overhead only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, rankdata

from tada.config import Config, load_config, parse_overrides
from tada.data.default_task import build_default_task
from tada.evaluate import HeldOut, evaluate_heldout, predict
from tada.io import write_json_atomic
from tada.train import train
from tada.validators import VALIDATORS

METHODS = ("source_only", "dann", "tada")
SETTINGS = {  # name -> overrides: the default, a slower and a faster learning rate with a weaker adversary
    "default": {},
    "lr0.003": {"optim.lr": 0.003},
    "lr0.03_lambda0.3": {"optim.lr": 0.03, "method.adversarial_weight": 0.3},
}
TARGETS = {"weighted_spearman": 0.7, "top1_regret": 2.0, "atc_mae": 5.0, "overhead": 0.10}
ROOT = Path(__file__).resolve().parents[1]


def weighted_spearman(scores: np.ndarray, accuracies: np.ndarray, power: float = 2.0) -> float:
    """Musgrave et al.'s weighted Spearman correlation of validator ``scores`` with target ``accuracies``."""
    weights = rankdata(scores, method="dense") / len(np.unique(scores))
    weights = weights**power

    def weighted_ranks(x: np.ndarray) -> np.ndarray:  # mid-ranks where each point counts its weight
        ranks = rankdata(x)
        _, inverse, counts = np.unique(ranks, return_inverse=True, return_counts=True)
        mass = np.bincount(inverse, weights)
        return ((np.cumsum(mass) - mass) + (counts + 1) / 2 * (mass / counts))[inverse]

    rx, ry = weighted_ranks(scores), weighted_ranks(accuracies)
    mx, my = np.average(rx, weights=weights), np.average(ry, weights=weights)
    cov = np.sum(weights * (rx - mx) * (ry - my))
    return float(cov / np.sqrt(np.sum(weights * (rx - mx) ** 2) * np.sum(weights * (ry - my) ** 2)))


def sweep(base: Config, seeds: list[int]) -> list[dict]:
    task = build_default_task(base.data)
    checkpoints = []
    for setting, overrides in SETTINGS.items():
        for method in METHODS:
            for seed in seeds:
                config = base.replace({**overrides, "method.name": method, "train.seed": seed})
                result = train(config, task)
                for row in result.evaluations:
                    checkpoints.append({"method": method, "seed": seed, "setting": setting, **row})
                print(json.dumps({"method": method, "seed": seed, "setting": setting, "seconds":
                                  round(result.seconds, 1), "last": result.final["target_accuracy"]}),
                      file=sys.stderr, flush=True)
    return checkpoints


def score_validators(checkpoints: list[dict]) -> dict[str, dict]:
    accuracy = np.array([c["target_accuracy"] for c in checkpoints])
    table = {}
    for name in VALIDATORS:
        scores = np.array([c[name] for c in checkpoints])
        picked = int(np.argmax(scores))  # ties: the first, as train.select keeps it
        table[name] = {"weighted_spearman": weighted_spearman(scores, accuracy),
                       "kendall_tau": float(kendalltau(scores, accuracy).statistic),
                       "top1_regret": float(100 * (accuracy.max() - accuracy[picked])),
                       "picked": {k: checkpoints[picked][k] for k in ("method", "seed", "setting", "step")}}
    error = np.array([c["estimated_target_accuracy"] for c in checkpoints]) - accuracy
    atc = table["estimated_target_accuracy"]
    atc["atc_mae"] = float(100 * np.mean(np.abs(error)))
    atc["atc_bias_by_method"] = {m: float(100 * error[[c["method"] == m for c in checkpoints]].mean())
                                 for m in METHODS}  # estimate minus accuracy, points
    atc["source_accuracy_by_method"] = {m: float(100 * np.mean([c["source_accuracy"] for c in checkpoints
                                                                if c["method"] == m])) for m in METHODS}
    return table


def measure_overhead(base: Config) -> dict:
    """Seconds the validators add to a default ``dvc repro`` (every training evaluation and the evaluate stage's),
    against the pipeline's wall time in a fresh copy of this repository."""
    task = build_default_task(base.data)
    model = train(base.replace({"train.iterations": 200, "train.eval_interval": 200}), task).model
    held_out = HeldOut.from_task(task, base.validators.max_images)
    batch = base.train.eval_batch_size
    torch.set_num_threads(base.train.num_threads)

    def timed(fn, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def without_validators():  # what an evaluation computed before the validators: the two labelled sets
        predict(model, held_out.source_val.images, batch)
        predict(model, held_out.target_test.images, batch)

    with_seconds = timed(lambda: evaluate_heldout(model, held_out, batch, base.validators))
    without_seconds = timed(without_validators)
    evaluations = base.train.iterations // base.train.eval_interval + 1  # training's, and the evaluate stage's
    added = evaluations * (with_seconds - without_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
        for name in files.split():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((ROOT / name).read_bytes())
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
            subprocess.run(cmd, cwd=repo, check=True)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}  # the stages run `python -m ...`
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True,
                              text=True)
        repro = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"dvc repro failed in {repo}:\n{done.stdout}\n{done.stderr}")
    return {"evaluation_seconds_with": round(with_seconds, 3), "evaluation_seconds_without": round(without_seconds, 3),
            "evaluations": evaluations, "added_seconds": round(added, 1), "repro_seconds": round(repro, 1),
            "fraction": round(added / repro, 4), "ok": added / repro <= TARGETS["overhead"]}


def markdown(table: dict[str, dict], n: int, overhead: dict | None) -> str:
    baseline = table["source_accuracy"]
    lines = ["| validator | weighted Spearman | Kendall's τ | top-1 regret (points) | picks |",
             "|---|---|---|---|---|"]
    for name, row in sorted(table.items(), key=lambda kv: -kv[1]["weighted_spearman"]):
        p = row["picked"]
        lines.append(f"| `{name}` | {row['weighted_spearman']:.3f} | {row['kendall_tau']:.3f} | "
                     f"{row['top1_regret']:.2f} | {p['method']} seed {p['seed']} {p['setting']} step {p['step']} |")
    atc = table["estimated_target_accuracy"]
    lines += ["", f"{n} checkpoints. ATC's estimate of the target accuracy: mean absolute error "
              f"{atc['atc_mae']:.2f} points (target <= {TARGETS['atc_mae']:.0f}: "
              f"{'met' if atc['atc_mae'] <= TARGETS['atc_mae'] else 'NOT met'}); estimate minus accuracy by method: "
              + ", ".join(f"{m} {b:+.1f}" for m, b in atc["atc_bias_by_method"].items()) + " points; held-out "
              "source accuracy by method: " + ", ".join(f"{m} {a:.1f} %" for m, a in
                                                         atc["source_accuracy_by_method"].items()) + "."]
    good = [name for name, row in table.items() if name != "source_accuracy"
            and row["weighted_spearman"] >= TARGETS["weighted_spearman"]
            and row["top1_regret"] <= TARGETS["top1_regret"]
            and row["weighted_spearman"] > baseline["weighted_spearman"]
            and row["top1_regret"] < baseline["top1_regret"]]
    lines.append(f"Validators with weighted Spearman >= {TARGETS['weighted_spearman']}, top-1 regret <= "
                 f"{TARGETS['top1_regret']:.0f} points and better than the source-accuracy baseline on both: "
                 f"{', '.join(f'`{g}`' for g in good) or 'none'}.")
    if overhead:
        lines.append(f"Validators add {overhead['added_seconds']:.1f} s to a default `dvc repro` of "
                     f"{overhead['repro_seconds']:.0f} s ({100 * overhead['fraction']:.1f} %; target <= "
                     f"{100 * TARGETS['overhead']:.0f} %: {'met' if overhead['ok'] else 'NOT met'}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-interval", type=int, default=500, help="steps between kept checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--overhead", action="store_true", help="also measure the cost in a default dvc repro")
    parser.add_argument("--from", dest="source", type=Path, help="re-score the checkpoints stored in this JSON")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/validators.json"))
    args = parser.parse_args(argv)

    base = load_config(args.params, parse_overrides(args.set))
    command = " ".join(["python", "benchmarks/validators.py", *(argv if argv is not None else sys.argv[1:])])
    date = time.strftime("%Y-%m-%d")
    if args.source:  # the stored sweep, re-scored; its own command and date are kept
        stored = json.loads(args.source.read_text())
        checkpoints, overhead = stored["checkpoints"], stored.get("overhead")
        command, date = stored["command"], stored["date"]
    else:
        started = time.perf_counter()
        checkpoints = sweep(base.replace({"train.eval_interval": args.eval_interval}), args.seeds)
        print(f"sweep: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        overhead = None
    if args.overhead:
        overhead = {**measure_overhead(base), "command": " ".join(["python", "benchmarks/validators.py",
                                                                  *(argv if argv is not None else sys.argv[1:])])}
    table = score_validators(checkpoints)
    text = markdown(table, len(checkpoints), overhead)
    print(text)
    write_json_atomic(args.out, {
        "command": command, "date": date,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
        "settings": SETTINGS, "methods": METHODS, "targets": TARGETS, "validators": table, "overhead": overhead,
        "markdown": text, "checkpoints": checkpoints,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
