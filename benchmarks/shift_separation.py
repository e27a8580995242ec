"""How well the served shift score separates the adapted target domain from everything else.

Scores, through the production `Predictor` (onnxruntime, no torch), the held-out target images, the held-out source
images, and images that are obviously not the target domain (the target inverted, rotated, with heavy noise;
uniform noise; blank images), and prints the median score and the fraction above the model's threshold per set.

    python benchmarks/shift_separation.py                      # models/model.onnx on data/ (after dvc repro)
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tada.io import write_json_atomic  # noqa: E402
from tada.serving import Predictor  # noqa: E402
from tada.serving.images import load_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=0)
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
    results = {}
    lines = ["| images | count | median shift score | above the threshold |", "|---|---|---|---|"]
    for name, pixels in sets.items():
        if pixels is None:
            continue
        scores = np.array([p.shift_score for p in predictor.predict_arrays(pixels)])
        results[name] = {"count": len(scores), "median": float(np.median(scores)),
                         "fraction_above": float((scores > threshold).mean())}
        lines.append(f"| {name} | {len(scores)} | {results[name]['median']:.2f} | "
                     f"{100 * results[name]['fraction_above']:.0f} % |")
    report = "\n".join(lines) + f"\n\nthreshold {threshold:.2f} (the calibration set's 99th percentile)"
    print(report)
    write_json_atomic(args.out, {"command": "python benchmarks/shift_separation.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])), "model": str(args.model),
        "threshold": threshold, "signals": info.shift_reference["signals"], "sets": results, "markdown": report})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
