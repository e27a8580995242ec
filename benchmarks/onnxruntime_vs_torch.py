"""Inference latency: onnxruntime (as `tada.serving.Predictor` configures it) against PyTorch eager, on the same
exported graph (`tada.export.InferenceGraph`: logits, probabilities, entropy, domain probability, feature distance)
and the same float32 inputs, at batch sizes 1 and 32, for the default model (params.yaml: LeNet TADA, 28 x 28
grayscale) and a ResNet-50 TADA at 224 x 224 RGB. Prints the median latencies and the ratio onnxruntime / PyTorch,
checked against the target (at most 0.7 at batch 1), and writes them as JSON.

    python benchmarks/onnxruntime_vs_torch.py                  # ~3 min on 2 CPU cores
    python benchmarks/onnxruntime_vs_torch.py --models default --batch-sizes 1

Both frameworks get the same threads (``--threads``, default: all cores). Weights are random (seeded): latency does
not depend on their values. Each measurement is the median over repeated runs after warm-up runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from tada.config import load_config
from tada.export import InferenceGraph, export_verified, model_info
from tada.methods import build_model
from tada.serving import Predictor
from tada.serving.model_info import INPUT

TARGET_RATIO_AT_BATCH_1 = 0.7  # onnxruntime latency / PyTorch eager latency
MODELS = {  # name -> (params overrides, input channels)
    "default": ({}, 1),
    "resnet50_224": ({"model.backbone": "resnet50", "data.image_size": 224, "data.color_mode": "RGB"}, 3),
}


def median_ms(fn: Callable[[], object], warmup: int, budget_s: float, min_runs: int, max_runs: int) -> float:
    """Median wall time of ``fn`` in ms: ``warmup`` untimed runs, then runs until ``budget_s`` or ``max_runs``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_model(name: str, params: Path, threads: int, batch_sizes: list[int], budget_s: float,
                workdir: Path) -> list[dict]:
    overrides, channels = MODELS[name]
    config = load_config(params, overrides)
    size = config.data.image_size
    torch.manual_seed(0)
    model = build_model(config, num_classes=10, in_channels=channels).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(max(batch_sizes + [32]), channels, size, size, generator=generator) * 2 - 1
    path = workdir / f"{name}.onnx"
    start = time.perf_counter()
    export_verified(model, images, path, config.export.opset, model_info(config, tuple("0123456789"), channels),
                    (1,), 1e-3, fit_images=images, calibration_images=images)
    print(f"{name}: exported {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.0f} s", flush=True)

    graph = InferenceGraph(model, _reference(path)).eval()
    predictor = Predictor(path, intra_op_threads=threads)
    torch.set_num_threads(threads)
    rows = []
    for batch in batch_sizes:
        x = images[:batch].contiguous()
        x_np = x.numpy()
        with torch.inference_mode():
            np.testing.assert_allclose(predictor.session.run(None, {INPUT: x_np})[0], graph(x)[0].numpy(), atol=1e-3)
            heavy = size * size * batch > 28 * 28 * 64
            runs = {"warmup": 2 if heavy else 20, "budget_s": budget_s, "min_runs": 5 if heavy else 50,
                    "max_runs": 200 if heavy else 5000}
            torch_ms = median_ms(lambda x=x: graph(x), **runs)
            ort_ms = median_ms(lambda x_np=x_np: predictor.session.run(None, {INPUT: x_np}), **runs)
        row = {"model": name, "batch_size": batch, "torch_ms": round(torch_ms, 3), "onnxruntime_ms": round(ort_ms, 3),
               "ratio": round(ort_ms / torch_ms, 3)}
        print(f"  batch {batch:3d}: PyTorch eager {torch_ms:9.3f} ms   onnxruntime {ort_ms:9.3f} ms   "
              f"ratio {row['ratio']:.3f}", flush=True)
        rows.append(row)
    return rows


def _reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The feature reference baked into the exported graph, so PyTorch runs the very same computation."""
    import onnx

    proto = onnx.load(str(path))
    tensors = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    mean = next(v for k, v in tensors.items() if k.endswith("feature_mean"))
    whiten = next(v for k, v in tensors.items() if k.endswith("feature_whitening"))
    return mean, whiten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timed runs per measurement (at least)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnxruntime_vs_torch.json"))
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, args.params, args.threads, args.batch_sizes, args.budget, Path(tmp))
    at_1 = [r for r in rows if r["batch_size"] == 1]
    met = all(r["ratio"] <= TARGET_RATIO_AT_BATCH_1 for r in at_1)
    print("\n| model | batch | PyTorch eager (ms) | onnxruntime (ms) | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch_size']} | {r['torch_ms']:.3f} | {r['onnxruntime_ms']:.3f} | "
              f"{r['ratio']:.2f} |")
    ratios = ", ".join(f"{r['model']} {r['ratio']:.2f}" for r in at_1)
    print(f"\nonnxruntime / PyTorch eager at batch 1: {ratios} "
          f"(target <= {TARGET_RATIO_AT_BATCH_1}: {'met' if met else 'NOT met'})")
    result = {"rows": rows, "target_ratio_at_batch_1": TARGET_RATIO_AT_BATCH_1, "target_met": met,
              "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "processor": platform.processor(), "torch": torch.__version__, "onnxruntime": ort.__version__,
              "command": "python benchmarks/onnxruntime_vs_torch.py " + " ".join(argv or sys.argv[1:])}
    if args.out:
        from tada.io import write_json_atomic

        write_json_atomic(args.out, result)
        print(f"-> {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
