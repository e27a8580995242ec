"""The paper's protocol as DVC experiments: every task of a benchmark x every method, then one results table.

Each (task, method, seed) is one DVC experiment: the preset (``presets/<name>.yaml``) plus ``data.source``,
``data.target``, ``method.name`` and ``train.seed`` are applied with ``-S``, so the runs share DVC's cache (each
domain pair is fetched once) and ``dvc exp show`` lists them all.

    python benchmarks/paper_protocol.py queue office31                  # 6 tasks x source_only, dann, tada
    dvc queue start --jobs 1                                           # run the queue (one GPU: one job)
    dvc queue status                                                   # progress; dvc queue logs <name>
    python benchmarks/paper_protocol.py table office31                  # markdown + JSON next to the paper

    python benchmarks/paper_protocol.py run office31 --task A-W --method tada   # one experiment, in the workspace

The table reads each experiment's ``reports/metrics.json`` (target accuracy, last iterate) through
``dvc exp show --json`` and prints the paper's numbers (``docs/TADA.md``) beside ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tada.config import ConfigError, config_from_dict  # noqa: E402
from tada.io import write_json_atomic  # noqa: E402
from tada.orchestrate import hydra_value  # noqa: E402

METHODS = ("source_only", "dann", "tada")
OFFICE31 = {"A": "amazon", "D": "dslr", "W": "webcam"}
OFFICE_HOME = {"Ar": "Art", "Cl": "Clipart", "Pr": "Product", "Rw": "Real_World"}
DIGITS = {"M": "mnist", "U": "usps", "S": "svhn"}


def _pairs(domains: dict[str, str], tasks: list[str]) -> dict[str, tuple[str, str]]:
    return {task: (domains[task.split("-")[0]], domains[task.split("-")[1]]) for task in tasks}


# Tasks in the paper's column order, and the paper's target accuracies (%, docs/TADA.md section 6).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "office31": {
        "tasks": _pairs(OFFICE31, ["A-W", "D-W", "W-D", "A-D", "D-A", "W-A"]),
        "paper": {"source_only": [68.4, 96.7, 99.3, 68.9, 62.5, 60.7], "dann": [82.0, 96.9, 99.1, 79.7, 68.2, 67.4],
                  "tada": [94.3, 98.7, 99.8, 91.6, 72.9, 73.0]},
        "paper_note": "ResNet-50 (source only), DANN and TADA as reported in the TADA paper (AAAI 2019).",
        "hours_per_run": 0.4,
    },
    "office_home": {
        "tasks": _pairs(OFFICE_HOME, ["Ar-Cl", "Ar-Pr", "Ar-Rw", "Cl-Ar", "Cl-Pr", "Cl-Rw", "Pr-Ar", "Pr-Cl",
                                      "Pr-Rw", "Rw-Ar", "Rw-Cl", "Rw-Pr"]),
        "paper": {"tada": [53.1, 72.3, 77.2, 59.1, 71.2, 72.1, 59.7, 53.1, 78.4, 72.4, 60.0, 82.9]},
        "paper_averages": {"source_only": 46.1, "tada": 67.6},
        "paper_note": "TADA per task as reported in the paper; source-only only as an average.",
        "hours_per_run": 0.8,
    },
    "digits_mnist_usps": {
        "tasks": _pairs(DIGITS, ["M-U", "U-M"]),
        "paper": {"source_only": [82.1, 74.6], "dann": [91.7, 95.2]},
        "paper_note": "Research-library numbers (the TADA paper reports no digits).",
        "hours_per_run": 0.1,
    },
    "digits_svhn_mnist": {
        "tasks": _pairs(DIGITS, ["S-M"]),
        "paper": {"source_only": [74.1], "dann": [90.8]},
        "paper_note": "Research-library numbers (the TADA paper reports no digits).",
        "hours_per_run": 0.3,
    },
}


def preset_overrides(preset: str) -> dict[str, Any]:
    """The preset file as dotted keys, checked against the config schema on top of the repository's params."""
    path = ROOT / "presets" / f"{preset}.yaml"
    if not path.is_file():
        raise SystemExit(f"no preset {path} (presets: {', '.join(sorted(p.stem for p in path.parent.glob('*.yaml')))})")
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(yaml.safe_load(path.read_text()) or {}, "")
    try:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        config_from_dict(params).replace(flat)
    except ConfigError as e:
        raise SystemExit(f"{path}: {e}") from None
    return flat


def experiment_name(preset: str, task: str, method: str, seed: int) -> str:
    return f"{preset}-{task}-{method}-s{seed}".replace("_", "-")


def experiment_args(preset: str, task: str, method: str, seed: int) -> list[str]:
    source, target = PROTOCOLS[preset]["tasks"][task]
    overrides = {**preset_overrides(preset), "data.source": source, "data.target": target, "method.name": method,
                 "train.seed": seed}
    args = ["--name", experiment_name(preset, task, method, seed)]
    for key, value in overrides.items():
        args += ["-S", f"{key}={hydra_value(key, value)}"]
    return args


def dvc(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=Path.cwd(), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args[:3])} ... failed:\n{result.stdout}\n{result.stderr}")
    return result


def collect(preset: str, shown: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """``method -> task -> target accuracies (%)`` over seeds, from ``dvc exp show --json`` output."""
    tasks = PROTOCOLS[preset]["tasks"]
    wanted = {experiment_name(preset, t, m, s): (t, m) for t in tasks for m in METHODS for s in range(100)}
    found: dict[str, dict[str, list[float]]] = {}
    for rev in shown:
        for exp in [rev, *(rev.get("experiments") or [])]:
            name = exp.get("name")
            if name not in wanted:
                continue
            data = (exp.get("revs") or [exp])[0].get("data") or {}
            metrics = (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data") or {}
            if "target_accuracy" in metrics:
                task, method = wanted[name]
                found.setdefault(method, {}).setdefault(task, []).append(100 * metrics["target_accuracy"])
    return found


def table(preset: str, results: dict[str, dict[str, list[float]]]) -> tuple[str, dict[str, Any]]:
    protocol = PROTOCOLS[preset]
    tasks = list(protocol["tasks"])
    head = "| method | " + " | ".join(t.replace("-", "→") for t in tasks) + " | avg |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    rows: dict[str, Any] = {}

    def fmt(values: list[float] | None) -> str:
        if not values:
            return "—"
        mean = sum(values) / len(values)
        return f"{mean:.1f}" + (f" (n={len(values)})" if len(values) > 1 else "")

    for method in METHODS:
        ours = results.get(method, {})
        means = [sum(v) / len(v) for t in tasks if (v := ours.get(t))]
        avg = f"{sum(means) / len(means):.1f}" if len(means) == len(tasks) else "—"
        lines.append(f"| {method} (ours) | " + " | ".join(fmt(ours.get(t)) for t in tasks) + f" | {avg} |")
        rows[method] = {"ours": {t: ours.get(t) for t in tasks}}
        paper = protocol["paper"].get(method)
        paper_avg = protocol.get("paper_averages", {}).get(method)
        if paper or paper_avg:
            cells = [f"{v:.1f}" for v in paper] if paper else ["—"] * len(tasks)
            avg = paper_avg if paper_avg is not None else sum(paper) / len(paper)
            lines.append(f"| {method} (paper) | " + " | ".join(cells) + f" | {avg:.1f} |")
            rows[method]["paper"] = dict(zip(tasks, paper, strict=True)) if paper else None
            rows[method]["paper_average"] = avg
    note = (f"Target accuracy (%), last iterate; ours: mean over seeds (n = number of seeds where > 1). "
            f"Paper: {protocol['paper_note']}")
    return "\n".join(lines) + "\n\n" + note + "\n", {"preset": preset, "tasks": tasks, "methods": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("queue", "run", "table"):
        p = sub.add_parser(name)
        p.add_argument("preset", choices=sorted(PROTOCOLS))
        if name != "table":
            p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
            p.add_argument("--seeds", nargs="+", type=int, default=[0])
            p.add_argument("--tasks", nargs="+", default=None, help="e.g. A-W D-A (default: every task)")
        else:
            p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/paper_"
                                                                   "<preset>.json)")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.preset]
    if args.command in ("queue", "run"):
        tasks = args.tasks or list(protocol["tasks"])
        unknown = sorted(set(tasks) - set(protocol["tasks"]))
        if unknown:
            parser.error(f"unknown task(s) {unknown} for {args.preset} (tasks: {', '.join(protocol['tasks'])})")
        runs = [(t, m, s) for t in tasks for m in args.methods for s in args.seeds]
        for task, method, seed in runs:
            if args.command == "queue":
                dvc("exp", "run", "--queue", *experiment_args(args.preset, task, method, seed))
                print(f"queued {experiment_name(args.preset, task, method, seed)}")
            else:
                print(f"running {experiment_name(args.preset, task, method, seed)} ...", flush=True)
                subprocess.run([sys.executable, "-m", "dvc", "exp", "run",
                                *experiment_args(args.preset, task, method, seed)], check=True)
        hours = len(runs) * protocol["hours_per_run"]
        print(f"{len(runs)} experiment(s), about {hours:.1f} GPU hours at {protocol['hours_per_run']} h each "
              f"(one recent data-centre GPU)." + (" Start them with: dvc queue start --jobs 1"
                                                   if args.command == "queue" else ""))
        return 0
    shown = json.loads(dvc("exp", "show", "--json").stdout)
    markdown, data = table(args.preset, collect(args.preset, shown))
    out = args.out or ROOT / "benchmarks" / "results" / f"paper_{args.preset}.json"
    write_json_atomic(out, {**data, "command": " ".join(["python", "benchmarks/paper_protocol.py", *sys.argv[1:]])})
    print(markdown + f"\n(JSON: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
