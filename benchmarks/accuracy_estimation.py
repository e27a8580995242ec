"""How far to trust an estimate of the target accuracy: every estimator of `tada.estimators` (and ATC) on five kinds
of shift, scored against the true target accuracy it never sees, with the product's default picked
leave-one-task-out.

``train`` trains source_only, DANN and TADA (params.yaml's settings) with 3 seeds on each generated task of
`tada.data.shift_tasks` and keeps, at every evaluation (``--eval-interval``), what the estimators read: the logits of
the held-out source images, of the unlabelled target training images and of the labelled target test images, the
logits of their mixup pseudo-targets (PseudoCal), the global discriminator's domain logits and DEV's feature-based
importance weights. One ``.npz`` per run under ``--cache`` (a run already there is not trained again).

``score`` computes every estimator at every snapshot (a point: task, method, seed, step), against the snapshot's
true accuracy on the target test images, and:

- per estimator: mean absolute error, bias (estimate minus truth) and worst task, overall and per method;
- leave-one-task-out: for each task, the estimator with the lowest MAE on the *other* four tasks is chosen and
  scored on the held-out one, so no choice is scored on the task it was chosen on; the default is the estimator
  chosen most often (ties: lowest MAE over the four-task choices);
- the interval: a bootstrap over the target images of the snapshot plus the estimator's own error spread, measured on
  the other tasks; its coverage is measured on the held-out task's points;
- the cost of every estimator at one evaluation (the last snapshot of TADA, seed 0, on the default task).

    python benchmarks/accuracy_estimation.py train            # 45 runs, ~75 min on 2 CPU cores
    python benchmarks/accuracy_estimation.py score    # the tables and benchmarks/results/accuracy_estimation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tada import estimators
from tada.config import Config, load_config, parse_overrides
from tada.data.shift_tasks import SHIFT_TASKS
from tada.data.task import DomainTask, to_tensor
from tada.evaluate import HeldOut, predict
from tada.io import write_json_atomic
from tada.models.network import TadaNet
from tada.train import train
from tada.validators import atc_estimate, atc_threshold, domain_odds

METHODS = ("source_only", "dann", "tada")
ROOT = Path(__file__).resolve().parents[1]


def mixed(images: np.ndarray, partners: np.ndarray, lam: float = estimators.MIXUP_LAMBDA) -> torch.Tensor:
    """The pseudo-target's images: ``lam * x_i + (1 - lam) * x_partners[i]`` in the network's input space."""
    x = to_tensor(images)
    return lam * x + (1.0 - lam) * x[torch.from_numpy(partners)]


def snapshot(model: TadaNet, held_out: HeldOut, batch: int) -> dict[str, np.ndarray]:
    """What the estimators read of one snapshot (float32 logits; the source labels are stored once per run)."""
    out: dict[str, np.ndarray] = {}
    sets = {"source": held_out.source_val.images, "target": held_out.target, "test": held_out.target_test.images}
    features = {}
    for name, images in sets.items():
        pred = predict(model, images, batch)
        out[f"{name}_logits"] = pred["logits"].numpy().astype(np.float32)
        features[name] = pred["features"].numpy()
        if "domain_logits" in pred:
            out[f"{name}_domain_logits"] = pred["domain_logits"].numpy().astype(np.float32)
        if name != "source":
            partners = estimators.mixup_pairs(len(images))
            out[f"{name}_mixed_logits"] = predict(model, mixed(images, partners), batch)["logits"].numpy() \
                .astype(np.float32)
    source_train = predict(model, held_out.source_train, batch)["features"].numpy()
    for name in ("target", "test"):  # DEV's importance weights of the source images, for that target set
        out[f"{name}_iw_features"] = domain_odds(source_train, features[name], features["source"]).astype(np.float32)
    for key, tensor in model.state_dict().items():  # the classification path (42 k numbers with LeNet, 160 k with
        if key.split(".")[0] in CLASSIFIER_PARTS:   # TADA's attention), so that estimators that need a forward pass
                                                    # can be tried afterwards
            out[f"state/{key}"] = tensor.detach().cpu().numpy().copy()
    return out


CLASSIFIER_PARTS = ("backbone", "region_discriminators", "bottleneck", "classifier")  # TADA: its attention


def classifier(run: dict[str, np.ndarray], i: int, base: Config) -> TadaNet:
    """The classification path of snapshot ``i`` of ``run`` (eval mode): logits and features as at that evaluation
    (the discriminators are left at their initial weights: not for domain outputs)."""
    from tada.methods import build_model

    config = base.replace({"data.name": run["task"], "method.name": run["method"]})
    model = build_model(config, num_classes=run["source_logits"].shape[2], in_channels=1)
    state = {k[len("state/"):]: torch.as_tensor(np.asarray(run[k][i])) for k in run if k.startswith("state/")}
    missing = [k for k in model.state_dict() if k.split(".")[0] in CLASSIFIER_PARTS and k not in state]
    if missing:
        raise SystemExit(f"{run['task']}/{run['method']}-{run['seed']}: no weights for {missing[:3]}: train again")
    model.load_state_dict(state, strict=False)
    return model.eval()


def train_runs(base: Config, tasks: list[str], methods: list[str], seeds: list[int], cache: Path) -> None:
    for task_name in tasks:
        config_task = base.replace({"data.name": task_name})
        task = SHIFT_TASKS[task_name](config_task.data)
        held_out = HeldOut.from_task(task, base.validators.max_images)
        for method in methods:
            for seed in seeds:
                path = cache / task_name / f"{method}-{seed}.npz"
                if path.exists():
                    with np.load(path) as stored:
                        wanted = "state/region_discriminators" if method == "tada" else "state/"
                        if any(k.startswith(wanted) for k in stored.files):
                            continue  # (files without the weights were written by an earlier version: again)
                snaps: dict[int, dict[str, np.ndarray]] = {}
                config = config_task.replace({"method.name": method, "train.seed": seed})
                def keep(step: int, model: TadaNet, snaps=snaps, held_out=held_out) -> None:
                    snaps[step] = snapshot(model, held_out, 512)

                result = train(config, task, on_eval=keep)
                save_run(path, task, held_out, result.evaluations, snaps)
                print(json.dumps({"task": task_name, "method": method, "seed": seed,
                                  "seconds": round(result.seconds, 1),
                                  "last": round(result.final["target_accuracy"], 4)}), file=sys.stderr, flush=True)


def save_run(path: Path, task: DomainTask, held_out: HeldOut, evaluations: list[dict],
             snaps: dict[int, dict[str, np.ndarray]]) -> None:
    steps = sorted(snaps)
    arrays = {"steps": np.array(steps), "source_labels": held_out.source_val.labels,
              "test_labels": held_out.target_test.labels,
              "source_train_labels": task.source_train.labels,
              "target_accuracy": np.array([next(e["target_accuracy"] for e in evaluations if e["step"] == s)
                                           for s in steps])}
    for key in snaps[steps[0]]:
        arrays[key] = np.stack([snaps[s][key] for s in steps])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


# --- scoring -------------------------------------------------------------------------------------------------------
Z90 = 1.6448536269514722  # the two-sided 90 % normal quantile
BOOTSTRAP = 50  # resamples of the target images, for the interval


def estimate_one(name: str, run: dict[str, np.ndarray], i: int, where: str,
                 idx: np.ndarray | None = None) -> float | None:
    """Estimator ``name`` at snapshot ``i`` of ``run`` on the target images ``where`` (``target``: the unlabelled
    training images, as the product sees them; ``test``: the test images, unseen in training), or on the subset
    ``idx`` of them (a bootstrap resample); None where the run lacks what it needs."""
    src, y = run["source_logits"][i], run["source_labels"]
    x, mix = run[f"{where}_logits"][i], run[f"{where}_mixed_logits"][i]
    if idx is not None:
        x, mix = x[idx], mix[idx]
    marginal = np.bincount(run["source_train_labels"], minlength=src.shape[1])
    if name == "atc":
        return atc_estimate(x, atc_threshold(src, y))
    if name == "average_confidence":
        return estimators.average_confidence(x)
    if name == "source_ts":
        return estimators.source_ts(src, y, x)
    if name == "doc":
        return estimators.doc(src, y, x)
    if name == "pseudocal":
        return estimators.pseudocal(x, mix)
    if name == "mixup_accuracy":
        return estimators.mixup_accuracy(x, mix)
    if name == "iw_features":  # the weights come from the whole target set (a classifier per resample: too slow)
        return estimators.importance_weighted(run[f"{where}_iw_features"][i], src, y)
    if name == "cot":
        return estimators.cot(x, marginal)
    if name == "cott":
        return estimators.cott(src, y, x, marginal)
    if name == "iw_discriminator":
        if "source_domain_logits" not in run:
            return None
        return estimators.importance_weighted(estimators.discriminator_odds(run["source_domain_logits"][i]), src, y)
    raise ValueError(name)


ESTIMATORS = ("atc", "average_confidence", "source_ts", "doc", "pseudocal", "mixup_accuracy", "iw_features", "cot",
              "cott", "iw_discriminator")


def estimate_all(run: dict[str, np.ndarray], i: int, where: str) -> dict[str, float]:
    return {name: value for name in ESTIMATORS if (value := estimate_one(name, run, i, where)) is not None}


def bootstrap_se(name: str, run: dict[str, np.ndarray], i: int, where: str, seed: int = 0) -> float:
    """The standard deviation of estimator ``name`` over `BOOTSTRAP` resamples of the target images."""
    n = run[f"{where}_logits"].shape[1]
    rng = np.random.default_rng(seed)
    return float(np.std([estimate_one(name, run, i, where, rng.integers(0, n, n)) for _ in range(BOOTSTRAP)],
                        ddof=1))


def load_runs(cache: Path, tasks: list[str], methods: list[str], seeds: list[int]) -> list[dict]:
    runs = []
    for task in tasks:
        for method in methods:
            for seed in seeds:
                path = cache / task / f"{method}-{seed}.npz"
                if not path.exists():
                    raise SystemExit(f"{path}: missing; run `python benchmarks/accuracy_estimation.py train` first")
                with np.load(path) as data:
                    runs.append({"task": task, "method": method, "seed": seed, **{k: data[k] for k in data.files}})
    return runs


def agreement(runs: list[dict], run: dict, i: int, where: str) -> float | None:
    """GDE (Jiang et al., ICLR 2022): the mean agreement, on the same target images, of this snapshot with the other
    seeds' snapshots at the same step (it needs two or more trainings: a reference, not a candidate default)."""
    mine = run[f"{where}_logits"][i].argmax(1)
    others = [r for r in runs if (r["task"], r["method"]) == (run["task"], run["method"]) and r is not run]
    rates = [float((r[f"{where}_logits"][i].argmax(1) == mine).mean()) for r in others
             if i < len(r["steps"]) and r["steps"][i] == run["steps"][i]]
    return float(np.mean(rates)) if rates else None


def points(runs: list[dict], where: str, cache: Path) -> list[dict]:
    """One row per snapshot: its identity, the true target accuracy and every estimate. Each run's estimates are
    kept beside its ``.npz`` (``<method>-<seed>.<where>.json``, recomputed when the run or an estimator is new), so
    that re-scoring costs nothing but the new estimators."""
    rows = []
    for run in runs:
        stored = cache / run["task"] / f"{run['method']}-{run['seed']}.{where}.json"
        stamp = (cache / run["task"] / f"{run['method']}-{run['seed']}.npz").stat().st_mtime_ns
        kept = json.loads(stored.read_text()) if stored.exists() else {}
        kept = kept if kept.get("stamp") == stamp else {"stamp": stamp, "rows": [{} for _ in run["steps"]]}
        for i, step in enumerate(run["steps"]):
            row = kept["rows"][i]
            for name in ESTIMATORS:
                if name not in row and (value := estimate_one(name, run, i, where)) is not None:
                    row[name] = value
            row = {"task": run["task"], "method": run["method"], "seed": int(run["seed"]), "step": int(step),
                   "truth": float(run["target_accuracy"][i]), **row}
            gde = agreement(runs, run, i, where)
            if gde is not None:
                row["gde"] = gde
            rows.append(row)
        write_json_atomic(stored, {"stamp": stamp, "rows": [{k: r[k] for k in r if k in ESTIMATORS}
                                                             for r in rows[-len(run["steps"]):]]})
    return rows


def errors(rows: list[dict], name: str) -> np.ndarray:
    """Estimate minus truth, in points, of the rows that have ``name``."""
    return np.array([100 * (r[name] - r["truth"]) for r in rows if name in r])


def summary(rows: list[dict], name: str, tasks: list[str], methods: list[str]) -> dict:
    e = errors(rows, name)
    per_task = {t: float(np.abs(errors([r for r in rows if r["task"] == t], name)).mean()) for t in tasks
                if len(errors([r for r in rows if r["task"] == t], name))}
    return {"mae": float(np.abs(e).mean()), "bias": float(e.mean()), "rmse": float(np.sqrt((e ** 2).mean())),
            "points": int(len(e)),
            "per_task_mae": per_task, "worst_task": max(per_task, key=per_task.get) if per_task else None,
            "per_task_bias": {t: float(errors([r for r in rows if r["task"] == t], name).mean()) for t in per_task},
            "per_method_mae": {m: float(np.abs(errors([r for r in rows if r["method"] == m], name)).mean())
                               for m in methods if len(errors([r for r in rows if r["method"] == m], name))},
            "per_method_bias": {m: float(errors([r for r in rows if r["method"] == m], name).mean())
                                for m in methods if len(errors([r for r in rows if r["method"] == m], name))}}


REFERENCE_ONLY = {"gde": "needs two or more trainings of the same model",
                  "iw_discriminator": "source_only has no domain discriminator"}


# --- candidates for the default: an estimator as it is, or fitted on tasks (always scored on another task) ----------

def fit_candidate(kind: str, names: tuple[str, ...], rows: list[dict]) -> dict:
    """Fit candidate ``kind`` over the estimators ``names`` on ``rows`` (their truth is known): ``plain`` (nothing
    to fit), ``corrected`` (minus its mean error on ``rows``) or ``stacked`` (least squares of the truth on the
    estimates and a constant, AutoEval-style: Deng & Zheng, CVPR 2021)."""
    x = np.array([[r[n] for n in names] for r in rows])
    y = np.array([r["truth"] for r in rows])
    if kind == "plain":
        return {"kind": kind, "names": names}
    if kind == "corrected":
        return {"kind": kind, "names": names, "offset": float(np.mean(x[:, 0] - y))}
    design = np.c_[np.ones(len(x)), x]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return {"kind": kind, "names": names, "coef": coef.tolist()}


def apply_candidate(fit: dict, rows: list[dict]) -> np.ndarray:
    x = np.array([[r[n] for n in fit["names"]] for r in rows])
    if fit["kind"] == "plain":
        out = x.mean(axis=1)
    elif fit["kind"] == "corrected":
        out = x[:, 0] - fit["offset"]
    else:
        out = np.c_[np.ones(len(x)), x] @ np.array(fit["coef"])
    return np.clip(out, 0.0, 1.0)


def candidates(estimators: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every candidate: each estimator plain and corrected, the mean of each pair, and two stacks."""
    out = {}
    for e in estimators:
        out[e] = ("plain", (e,))
        out[f"{e} - bias"] = ("corrected", (e,))
    for i, a in enumerate(estimators):
        for b in estimators[i + 1:]:
            out[f"mean({a}, {b})"] = ("plain", (a, b))
    for group in (("atc", "cot", "pseudocal"), ("average_confidence", "cot", "doc", "pseudocal", "mixup_accuracy")):
        if all(g in estimators for g in group):
            out[f"stack({', '.join(group)})"] = ("stacked", group)
    return out


def out_of_task_errors(rows: list[dict], kind: str, names: tuple[str, ...], tasks: list[str]) -> np.ndarray:
    """Estimate minus truth (points) of every row, each predicted by the candidate fitted on the *other* tasks."""
    errs = []
    for held in tasks:
        test = [r for r in rows if r["task"] == held]
        fit = fit_candidate(kind, names, [r for r in rows if r["task"] != held])
        errs.append(100 * (apply_candidate(fit, test) - np.array([r["truth"] for r in test])))
    return np.concatenate(errs)


def leave_one_task_out(rows: list[dict], pool: dict, tasks: list[str]) -> dict:
    """For each task: the candidate whose out-of-task MAE on the *other* tasks is lowest (fitted ones fitted and
    scored task by task among those, nested), refitted on all the other tasks and scored on the held-out one."""
    folds = {}
    for held in tasks:
        rest, others = [r for r in rows if r["task"] != held], [t for t in tasks if t != held]
        scores = {c: float(np.abs(out_of_task_errors(rest, *pool[c], others)).mean()) for c in pool}
        chosen = min(scores, key=scores.get)
        fit = fit_candidate(*pool[chosen], rest)
        test = [r for r in rows if r["task"] == held]
        e = 100 * (apply_candidate(fit, test) - np.array([r["truth"] for r in test]))
        inner = out_of_task_errors(rest, *pool[chosen], others)
        folds[held] = {"chosen": chosen, "inner_mae": scores[chosen], "inner_rmse": float(np.sqrt((inner ** 2).mean())),
                       "held_out_mae": float(np.abs(e).mean()), "held_out_bias": float(e.mean()),
                       "errors": e.tolist()}
    return folds


SNAPSHOT_BOOTSTRAP = "last"  # the bootstrap is run on each run's last snapshot and stands for all of its snapshots


def interval_terms(runs: list[dict], fit: dict, where: str) -> dict[tuple[str, str, int], float]:
    """The bootstrap standard deviation (over the target images) of candidate ``fit`` at each run's last snapshot,
    keyed by (task, method, seed): the sampling part of the interval. (COT's transport problem per resample makes
    one bootstrap per snapshot too slow; the last snapshot's stands for the run's, whose size it depends on.)"""
    out = {}
    for run in runs:
        i, n = len(run["steps"]) - 1, run[f"{where}_logits"].shape[1]
        rng = np.random.default_rng(int(run["seed"]))
        values = []
        for _ in range(BOOTSTRAP):
            idx = rng.integers(0, n, n)
            row = {name: estimate_one(name, run, i, where, idx) for name in fit["names"]}
            values.append(float(apply_candidate(fit, [row])[0]))
        out[(run["task"], run["method"], int(run["seed"]))] = float(np.std(values, ddof=1))
    return out


def score(args: argparse.Namespace, base: Config) -> dict:
    runs = load_runs(args.cache, args.tasks, args.methods, args.seeds)
    rows = points(runs, "target", args.cache)
    names = [n for n in (*ESTIMATORS, "gde") if len(errors(rows, n))]
    per_estimator = {n: summary(rows, n, args.tasks, args.methods) for n in names}
    pool = candidates([e for e in ESTIMATORS if e not in REFERENCE_ONLY])
    folds = leave_one_task_out(rows, pool, args.tasks)
    chosen = [f["chosen"] for f in folds.values()]
    default = min(set(chosen), key=lambda c: (-chosen.count(c),
                                              np.mean([f["inner_mae"] for f in folds.values() if f["chosen"] == c])))
    # The LOTO estimate of every point (chosen on the other tasks), by method and task, and its interval.
    held = {t: [r for r in rows if r["task"] == t] for t in args.tasks}
    e_all = np.concatenate([folds[t]["errors"] for t in args.tasks])
    methods_all = [r["method"] for t in args.tasks for r in held[t]]
    fit_all = fit_candidate(*pool[default], rows)
    sampling = interval_terms(runs, fit_all, "target")
    covered, widths = [], []
    for t in args.tasks:
        fold = folds[t]
        for r, e in zip(held[t], fold["errors"], strict=True):
            half = 100 * Z90 * np.sqrt(sampling[(r["task"], r["method"], r["seed"])] ** 2
                                        + (fold["inner_rmse"] / 100) ** 2)
            covered.append(abs(e) <= half)
            widths.append(2 * half)
    by_method = {m: np.array([e for e, mm in zip(e_all, methods_all, strict=True) if mm == m]) for m in args.methods}
    loto = {"mae": float(np.abs(e_all).mean()), "bias": float(e_all.mean()), "points": int(len(e_all)),
            "per_task": {t: {"chosen": folds[t]["chosen"], "mae": folds[t]["held_out_mae"],
                             "bias": folds[t]["held_out_bias"], "inner_mae": folds[t]["inner_mae"]}
                         for t in args.tasks},
            "per_method": {m: {"mae": float(np.abs(v).mean()), "bias": float(v.mean())} for m, v in by_method.items()},
            "worst_task": max(args.tasks, key=lambda t: folds[t]["held_out_mae"]),
            "interval": {"level": 0.9, "coverage": float(np.mean(covered)), "mean_width": float(np.mean(widths)),
                         "bootstrap": BOOTSTRAP, "bootstrap_on": SNAPSHOT_BOOTSTRAP,
                         "sampling_sd_mean": 100 * float(np.mean(list(sampling.values())))}}
    probe = next(r for r in runs if (r["task"], r["method"], r["seed"]) == (args.tasks[0], "tada", args.seeds[0]))
    cost = {}
    for name in ESTIMATORS:
        tick = time.perf_counter()
        estimate_one(name, probe, len(probe["steps"]) - 1, "target")
        cost[name] = round(time.perf_counter() - tick, 4)
    return {"command": "python benchmarks/accuracy_estimation.py " + " ".join(sys.argv[1:] or ["score"]),
            "machine": platform.machine(), "tasks": args.tasks, "methods": args.methods, "seeds": args.seeds,
            "eval_interval": args.eval_interval, "points": len(rows), "candidates": len(pool),
            "estimators": per_estimator, "seconds_per_evaluation": cost,
            "target_images": int(probe["target_logits"].shape[1]), "reference_only": REFERENCE_ONLY,
            "default": {"candidate": default, "kind": pool[default][0], "estimators": list(pool[default][1]),
                        "fit_on_all_tasks": fit_all, "chosen_per_fold": chosen, "leave_one_task_out": loto}}


def tables(report: dict) -> str:
    """The markdown tables docs quote: every estimator over all points, then the default leave-one-task-out."""
    tasks = report["tasks"]
    biases = " | ".join(f"{m} bias" for m in report["methods"])
    lines = [f"| estimator | MAE | bias | worst task (MAE) | {biases} |",
             "|---|---|---|---|" + "---|" * len(report["methods"])]
    for name, s in sorted(report["estimators"].items(), key=lambda kv: kv[1]["mae"]):
        ref = " (reference)" if name in report["reference_only"] else ""
        lines.append(f"| {name}{ref} | {s['mae']:.1f} | {s['bias']:+.1f} | {s['worst_task']} "
                     f"({s['per_task_mae'][s['worst_task']]:.1f}) | "
                     + " | ".join(f"{s['per_method_bias'].get(m, float('nan')):+.1f}" for m in report["methods"])
                     + " |")
    d = report["default"]["leave_one_task_out"]
    lines += ["", f"Default: `{report['default']['candidate']}`, leave-one-task-out over {d['points']} points: "
              f"MAE {d['mae']:.1f}, bias {d['bias']:+.1f}; 90 % interval coverage "
              f"{100 * d['interval']['coverage']:.0f} % (mean width {d['interval']['mean_width']:.1f} points)", "",
              "| held-out task | chosen on the other four | MAE | bias |", "|---|---|---|---|"]
    for t in tasks:
        f = d["per_task"][t]
        lines.append(f"| {t} | `{f['chosen']}` | {f['mae']:.1f} | {f['bias']:+.1f} |")
    lines += ["", "| method | MAE | bias |", "|---|---|---|"]
    for m, f in d["per_method"].items():
        lines.append(f"| {m} | {f['mae']:.1f} | {f['bias']:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["train", "score"])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--tasks", nargs="+", default=list(SHIFT_TASKS), choices=list(SHIFT_TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-interval", type=int, default=250, help="steps between kept snapshots")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "accuracy_estimation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy_estimation.json")
    args = parser.parse_args(argv)
    base = load_config(args.params, parse_overrides(args.set)).replace(
        {"train.eval_interval": args.eval_interval, "train.checkpoint_interval": 0})
    if args.phase == "train":
        started = time.perf_counter()
        train_runs(base, args.tasks, args.methods, args.seeds, args.cache)
        print(f"train: {time.perf_counter() - started:.0f} s on {platform.machine()}", file=sys.stderr)
        return 0
    started = time.perf_counter()
    report = score(args, base)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(args.out, report)
    print(tables(report))
    print(f"score: {report['seconds']:.0f} s; wrote {args.out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
