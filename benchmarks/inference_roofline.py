"""Single-threaded onnxruntime inference of the exported model against the machine's own matmul throughput.

Measures, on one core (``intra_op_num_threads=1``, the serving default):

- the **roofline**: this machine's single-core float32 matrix-multiply throughput, the best of onnxruntime's MatMul
  and PyTorch's ``@`` on square and model-shaped products (GFLOP/s);
- the model's FLOPs per image, counted from the ONNX graph (Conv, MatMul, Gemm: two per multiply-add);
- the median latency of the production session (`tada.serving.Predictor`'s options, all outputs) at batch 1 and
  batch 256, and the achieved GFLOP/s at batch 256 as a fraction of the roofline; the same with onnxruntime's
  ``ORT_ENABLE_ALL`` (its NCHWc layout transform), which the Predictor leaves off;
- where batch-1 time goes (onnxruntime's profiler), the global discriminator ("monitoring head": it only feeds the
  shift monitor) on its own line.

With ``--checkpoint`` and ``--data`` (after ``dvc repro``), the same model is exported again with the full-rank
monitoring head (``export.monitor_tolerance: 0``) and measured beside it. Targets: batch 1 <= 0.30 ms, batch 256 >=
50 % of the roofline.

    python benchmarks/inference_roofline.py                   # models/model.onnx (+ models/model.pt, data/)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper, shape_inference

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tada.io import write_json_atomic  # noqa: E402
from tada.serving import Predictor  # noqa: E402
from tada.serving.predictor import GRAPH_OPTIMIZATION  # noqa: E402

TARGET_BATCH1_MS, TARGET_ROOFLINE_FRACTION = 0.30, 0.50
HEAD = "domain_discriminator"


def median_s(fn: Callable[[], object], budget_s: float, min_runs: int = 20, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def session(model: onnx.ModelProto | str, profile: str | None = None,
            level: ort.GraphOptimizationLevel = GRAPH_OPTIMIZATION) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def roofline(budget_s: float) -> dict:
    """Single-core float32 GEMM throughput (GFLOP/s) of onnxruntime and of PyTorch, square and model-shaped."""
    shapes = [(1024, 1024, 1024), (256, 1024, 1024), (4096, 500, 50)]  # (M, K, N); the last: LeNet's conv2 im2col
    rng = np.random.default_rng(0)
    results = {}
    torch.set_num_threads(1)
    for m, k, n in shapes:
        b = rng.standard_normal((k, n), dtype=np.float32)
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [m, n])],
                                  [numpy_helper.from_array(b, "b")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        a = rng.standard_normal((m, k), dtype=np.float32)
        sess = session(proto)
        flops = 2.0 * m * k * n
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        results[f"{m}x{k}x{n}"] = {
            "onnxruntime_gflops": flops / median_s(lambda s=sess, a=a: s.run(None, {"a": a}), budget_s) / 1e9,
            "torch_gflops": flops / median_s(lambda ta=ta, tb=tb: ta @ tb, budget_s) / 1e9}
    best = max(v for r in results.values() for v in r.values())
    return {"gflops": best, "shapes": results}


def flops_per_image(model: onnx.ModelProto, batch: int = 4) -> dict[str, float]:
    """Multiply-add FLOPs (x2) of every Conv/MatMul/Gemm node for one image, by node name."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = shape_inference.infer_shapes(fixed, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    out = {}
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight, result = shapes[node.input[1]], shapes[node.output[0]]
            out[node.name] = float(2.0 * np.prod(result) * np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, result = shapes[node.input[0]], shapes[node.output[0]]
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            k = a[-2] if transposed else a[-1]
            out[node.name] = float(2.0 * np.prod(result) * k)
    return {name: f / batch for name, f in out.items()}


def profile_batch1(path: str, x: np.ndarray, runs: int, level: ort.GraphOptimizationLevel) -> dict[str, float]:
    """Share of batch-1 kernel time per node group: the monitoring head, the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, profile=os.path.join(tmp, "p"), level=level)
        for _ in range(runs):
            sess.run(None, {"image": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    time_by = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            time_by[e["name"].removesuffix("_kernel_time")] += e["dur"]
    total = sum(time_by.values())
    names = {n.name: n for n in onnx.load(path).graph.node}

    def in_head(node_name: str) -> bool:
        node = names.get(node_name.removeprefix("fused ").removesuffix("_nchwc"))
        return node is not None and any(HEAD in i for i in node.input)

    head = sum(v for k, v in time_by.items() if in_head(k))
    return {"monitoring_head": head / total, "top": [(k, round(v / total, 3)) for k, v in time_by.most_common(6)]}


def bench(path: str, budget_s: float, peak: float, level: ort.GraphOptimizationLevel = GRAPH_OPTIMIZATION) -> dict:
    """One model at one graph optimisation level (default: `tada.serving.Predictor`'s)."""
    predictor = Predictor(path, intra_op_threads=1)
    sess = session(path, level=level)
    model = onnx.load(path)
    per_node = flops_per_image(model)
    head_flops = sum(f for name, f in per_node.items()
                     if any(HEAD in i for n in model.graph.node if n.name == name for i in n.input))
    rng = np.random.default_rng(0)
    size = predictor.info.input_size
    row: dict = {"model": path, "mflops_per_image": sum(per_node.values()) / 1e6,
                 "monitoring_head_mflops": head_flops / 1e6}
    for batch in (1, 256):
        x = rng.uniform(-1, 1, (batch, *size)).astype(np.float32)
        seconds = median_s(lambda x=x: sess.run(None, {"image": x}), budget_s)
        row[f"batch{batch}_ms"] = seconds * 1000
        row[f"batch{batch}_gflops"] = batch * sum(per_node.values()) / seconds / 1e9
    row["batch256_roofline_fraction"] = row["batch256_gflops"] / peak
    row["batch1_profile"] = profile_batch1(path, rng.uniform(-1, 1, (1, *size)).astype(np.float32), 2000, level)
    return row


def full_head_export(checkpoint: Path, data: Path, out: Path) -> str:
    from tada.checkpoint import load_trained
    from tada.export import export_verified, model_info, reference_images

    model, trained, payload, task = load_trained(checkpoint, data)
    parity, fit, calibration = reference_images(task, 32)
    export_verified(model, parity, out, trained.export.opset, model_info(trained, task.classes, payload["in_channels"]),
                    (1, 32), trained.export.parity_tolerance, fit_images=fit, calibration_images=calibration,
                    monitor_tolerance=0.0)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model.onnx")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/model.pt"),
                        help="re-exported with the full-rank monitoring head for comparison, when it exists")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_roofline.json")
    args = parser.parse_args(argv)
    if not Path(args.model).is_file():
        raise SystemExit(f"no model at {args.model}: run `dvc repro` first")
    peak = roofline(args.budget)
    rows = [bench(args.model, args.budget, peak["gflops"]),
            {**bench(args.model, args.budget, peak["gflops"], ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
             "model": "the same, ORT_ENABLE_ALL (+ NCHWc layout)"}]
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint.is_file() and args.data.is_dir():
            full = full_head_export(args.checkpoint, args.data, Path(tmp) / "full_head.onnx")
            rows.append({**bench(full, args.budget, peak["gflops"]), "model": "the same, full-rank monitoring head"})
    monitor = json.loads(Path("reports/export.json").read_text()).get("monitor") \
        if Path("reports/export.json").is_file() else None
    main_row = rows[0]
    checks = {"batch1_ms": main_row["batch1_ms"], "batch1_ok": main_row["batch1_ms"] <= TARGET_BATCH1_MS,
              "roofline_fraction": main_row["batch256_roofline_fraction"],
              "roofline_ok": main_row["batch256_roofline_fraction"] >= TARGET_ROOFLINE_FRACTION}
    results = {"command": " ".join(["python", "benchmarks/inference_roofline.py", *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "onnxruntime": ort.__version__, "torch": torch.__version__, "threads": 1, "roofline": peak,
               "monitor": monitor, "rows": rows, "checks": checks,
               "targets": {"batch1_ms": TARGET_BATCH1_MS, "roofline_fraction": TARGET_ROOFLINE_FRACTION}}
    lines = [f"single-core float32 matmul roofline: {peak['gflops']:.1f} GFLOP/s", "",
             "| model | MFLOP / image (head) | batch 1 ms | head share at batch 1 | batch 256 ms | GFLOP/s | "
             "of roofline |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mflops_per_image']:.2f} ({r['monitoring_head_mflops']:.2f}) | "
                     f"{r['batch1_ms']:.3f} | {100 * r['batch1_profile']['monitoring_head']:.0f} % | "
                     f"{r['batch256_ms']:.2f} | {r['batch256_gflops']:.1f} | "
                     f"{100 * r['batch256_roofline_fraction']:.0f} % |")
    lines += ["", f"batch 1: {checks['batch1_ms']:.3f} ms (target <= {TARGET_BATCH1_MS}: "
              f"{'met' if checks['batch1_ok'] else 'NOT met'}); batch 256: {100 * checks['roofline_fraction']:.0f} % "
              f"of the roofline (target >= {100 * TARGET_ROOFLINE_FRACTION:.0f} %: "
              f"{'met' if checks['roofline_ok'] else 'NOT met'})"]
    results["markdown"] = "\n".join(lines)
    print(results["markdown"])
    write_json_atomic(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
