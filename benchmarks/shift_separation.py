"""How well the served shift score separates the adapted target domain from everything else.

Scores, through the production `Predictor` (onnxruntime, no torch), the held-out target images, the held-out source
images, and images that are obviously not the target domain (the target inverted, rotated, with heavy noise;
uniform noise; blank images), and prints the median score and the fraction above the model's threshold per set.

    python benchmarks/shift_separation.py                      # models/model.onnx on data/ (after dvc repro)

With ``models/model.pt`` present, the same checkpoint is exported again with the full-rank monitoring head
(``export.monitor_tolerance: 0``) and scored beside it, so the cost cut of the low-rank head
(`tada.export.low_rank_monitor`) shows what it does to the separation.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tada.io import write_json_atomic  # noqa: E402
from tada.serving import Predictor  # noqa: E402
from tada.serving.images import load_file  # noqa: E402


def separation(predictor: Predictor, pixels: np.ndarray) -> dict:
    scores = np.array([p.shift_score for p in predictor.predict_arrays(pixels)])
    return {"count": len(scores), "median": float(np.median(scores)),
            "fraction_above": float((scores > predictor.shift_threshold).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/model.pt"),
                        help="re-exported with the full-rank monitoring head for comparison, when it exists")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "shift_separation.json")
    args = parser.parse_args(argv)

    predictor = Predictor(args.model, intra_op_threads=2)
    info = predictor.info
    if info.shift_reference is None:
        raise SystemExit(f"{args.model} carries no shift reference (export it with this version of tada)")
    threshold = info.shift_reference["threshold"]
    with open(args.data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    def load(domain: str, split: str) -> np.ndarray:
        return np.stack([load_file(args.data / r["path"], info.color_mode, info.image_size, predictor.max_pixels,
                                   info.load_size) for r in rows if (r["domain"], r["split"]) == (domain, split)])

    rng = np.random.default_rng(args.seed)
    target = load("target", "test")
    shape = target.shape[1:]
    sets = {
        "target, held out": target,
        "source, held out": load("source", "test") if any(r["domain"] == "source" and r["split"] == "test"
                                                          for r in rows) else None,
        "target + Gaussian noise (std 80)": np.clip(target + rng.normal(0, 80, target.shape), 0, 255).astype(np.uint8),
        "target, rotated 90°": np.ascontiguousarray(np.rot90(target, axes=(1, 2))),
        "target, inverted": 255 - target,
        "uniform noise": rng.integers(0, 256, (500, *shape), dtype=np.uint8),
        "white images": np.full((20, *shape), 255, np.uint8),
        "black images": np.zeros((20, *shape), np.uint8),
    }
    full = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint.is_file():
            from inference_roofline import full_head_export

            full = Predictor(full_head_export(args.checkpoint, args.data, Path(tmp) / "full.onnx"), intra_op_threads=2)
        results, full_results = {}, {}
        lines = ["| images | count | median shift score | above the threshold |" + (
            " full-rank head: median | above |" if full else ""), "|---|---|---|---|" + ("---|---|" if full else "")]
        for name, pixels in sets.items():
            if pixels is None:
                continue
            results[name] = separation(predictor, pixels)
            lines.append(f"| {name} | {len(pixels)} | {results[name]['median']:.2f} | "
                         f"{100 * results[name]['fraction_above']:.0f} % |")
            if full:
                full_results[name] = separation(full, pixels)
                f = full_results[name]
                lines[-1] += f" {f['median']:.2f} | {100 * f['fraction_above']:.0f} % |"
    report = "\n".join(lines) + f"\n\nthreshold {threshold:.2f} (the calibration set's 99th percentile)"
    if full:
        report += f"; full-rank head's {full.shift_threshold:.2f}"
    print(report)
    write_json_atomic(args.out, {"command": "python benchmarks/shift_separation.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])), "model": str(args.model),
        "threshold": threshold, "signals": info.shift_reference["signals"], "sets": results,
        "full_rank_head": {"threshold": full.shift_threshold, "sets": full_results} if full else None,
        "markdown": report})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
