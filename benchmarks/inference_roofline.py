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

The **convolution ceiling** (``ceiling`` in the JSON) asks what onnxruntime's own CPU kernels can do about the
batch-256 fraction. Each convolution of the model that feeds a 2 x 2 max-pool (LeNet's two) is cut out with its own
weights and timed at batch 256, convolution and pool together, in every formulation a standard ONNX graph can give it:

- ``served``: Conv -> MaxPool at the Predictor's optimisation level (what the model runs now);
- ``nchwc``: the same at ``ORT_ENABLE_ALL`` (onnxruntime's blocked-channel direct convolution; pads channels to 16);
- ``phases``: the pool folded into the convolution exactly: SpaceToDepth(2), one convolution whose four groups of
  output channels are the four positions of each pool window (the k x k kernel embedded in a (k+1)/2 x (k+1)/2
  kernel over the 4 C phase channels: 1.44 x the FLOPs at k = 5), ReduceMax over the groups; and the same with NCHWc;
- ``gemm_bound``: no formulation, a bound: the convolution's matrix product alone, im2col taken as given for free,
  as onnxruntime's MatMul (weights pre-packed), plus the pool alone: no stock-kernel graph can beat it;
- ``torch_channels_last`` (reference, not servable through onnxruntime): PyTorch's oneDNN direct convolution on
  NHWC tensors, conv and pool, one thread;
- ``fused_kernel`` (prototype, not servable here): ``benchmarks/kernels/conv_maxpool.cpp``, im2col into a per-image
  panel, an AVX-512 register-tiled product with the bias and the pool fused, compiled here with the system C++
  compiler (``$CXX``, default ``g++``) and called through ctypes; checked against the served output before it is
  timed. Left out, with the reason in the JSON, where there is no compiler or no AVX-512F.

These, the whole model at batch 256 and the roofline's MatMul are timed in interleaved rounds (medians), so that a
slow spell of the machine touches them all alike; where the roofline comes out higher in the rounds than at first,
every fraction, the model rows' included, is taken against the higher figure. The two forms at the Predictor's level
are timed at batch 1 as well (what a form costs a one-image request). The whole model's batch-256 time is
then split by onnxruntime's profiler into these pairs and the rest, and the
fraction is recomputed with each pair at its best stock formulation (within one optimisation level: a session has
one), and at the bound. The first says what a rewrite of the graph can reach with onnxruntime's own kernels; the
second whether a convolution kernel that needs no im2col copy (which onnxruntime's CPU provider does not have: a
custom operator) could reach the target at all; the third, with the fused prototype, what such a kernel reaches.

    python benchmarks/inference_roofline.py                   # models/model.onnx (+ models/model.pt, data/)
"""

from __future__ import annotations

import argparse
import collections
import functools
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


def shapes_at_batch(model: onnx.ModelProto, batch: int) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """The model with its batch dimension fixed and shapes inferred, and every value's and weight's shape by name."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for value in (*fixed.graph.input, *fixed.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = shape_inference.infer_shapes(fixed, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    return inferred, shapes


def flops_per_image(model: onnx.ModelProto, batch: int = 4) -> dict[str, float]:
    """Multiply-add FLOPs (x2) of every Conv/MatMul/Gemm node for one image, by node name."""
    inferred, shapes = shapes_at_batch(model, batch)
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


def node_times(path: str, x: np.ndarray, runs: int) -> dict[str, float]:
    """Kernel time per node (seconds per run) from onnxruntime's profiler, at the Predictor's optimisation level."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, profile=os.path.join(tmp, "p"))
        for _ in range(runs):
            sess.run(None, {"image": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    times: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"].removesuffix("_kernel_time").removeprefix("fused ")] += e["dur"] / 1e6 / runs
    return dict(times)


def conv_pool_pairs(model: onnx.ModelProto, batch: int) -> list[dict]:
    """Every plain Conv (stride 1, no padding, one group) whose only consumer is a 2 x 2 / stride-2 MaxPool, on even
    input and output sizes (the phase form's SpaceToDepth needs them; LeNet's are)."""
    _, shapes = shapes_at_batch(model, batch)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    pairs = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        after = consumers[node.output[0]]
        if node.op_type != "Conv" or len(after) != 1 or after[0].op_type != "MaxPool":
            continue
        pool = {a.name: helper.get_attribute_value(a) for a in after[0].attribute}
        plain = (attrs.get("group", 1) == 1 and set(attrs.get("strides", [1, 1])) == {1}
                 and not any(attrs.get("pads", [0])) and set(attrs.get("dilations", [1, 1])) == {1})
        halves = pool.get("kernel_shape") == [2, 2] and pool.get("strides") == [2, 2] and not any(pool.get("pads", [0]))
        height, width = shapes[node.input[0]][2:]
        k = shapes[node.input[1]][2]
        even = height % 2 == 0 and width % 2 == 0 and (height - k + 1) % 2 == 0  # the phase form's SpaceToDepth
        if not plain or not halves or not even:
            continue
        w = np.array(weights[node.input[1]])  # writable copies (to_array can return read-only views)
        b = np.array(weights[node.input[2]]) if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
        pairs.append({"conv": node.name, "pool": after[0].name, "weight": w, "bias": b,
                      "input_shape": shapes[node.input[0]]})
    return pairs


def phase_weights(w: np.ndarray) -> np.ndarray:
    """[O, C, k, k] -> [4 O, 4 C, (k+1)/2, (k+1)/2]: output group p = (di, dj) is the conv at pool position (di, dj);
    input channels in SpaceToDepth's order ((r, s), c)."""
    o, c, k, _ = w.shape
    half = (k + 2) // 2
    full = np.zeros((4, o, c, 2 * half, 2 * half), np.float32)
    for di in range(2):
        for dj in range(2):
            full[2 * di + dj, :, :, di:di + k, dj:dj + k] = w
    full = full.reshape(4, o, c, half, 2, half, 2)  # p, o, c, a, r, b, s: kernel row 2a + r, column 2b + s
    return np.ascontiguousarray(full.transpose(0, 1, 4, 6, 2, 3, 5).reshape(4 * o, 4 * c, half, half))


@functools.cache
def fused_kernel() -> tuple[Callable | None, str]:
    """Compile benchmarks/kernels/conv_maxpool.cpp and load it: (the C function, "") or (None, why not)."""
    import ctypes
    import shutil
    import subprocess

    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler ({compiler!r} not found; set CXX)"
    source = ROOT / "benchmarks" / "kernels" / "conv_maxpool.cpp"
    with tempfile.TemporaryDirectory(prefix="tada-kernel-") as build:  # the loaded library outlives its file
        library = Path(build) / "conv_maxpool.so"
        done = subprocess.run([compiler, "-O3", "-shared", "-fPIC", "-o", str(library), str(source)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"{compiler} failed on {source.name}: {done.stderr.strip()[-500:]}"
        lib = ctypes.CDLL(str(library))
    if not lib.conv_maxpool_supported():
        return None, "this CPU lacks AVX-512F"
    floats = ctypes.POINTER(ctypes.c_float)
    lib.conv_maxpool.argtypes = [floats] * 4 + [ctypes.c_int] * 7
    lib.conv_maxpool.restype = ctypes.c_int

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:
        n, c, h, wd = x.shape
        code = lib.conv_maxpool(*(a.ctypes.data_as(floats) for a in (x, w, b, y)), n, c, h, wd, w.shape[0],
                                w.shape[2], 0)
        if code != 0:
            raise RuntimeError(f"conv_maxpool refused input {x.shape}, weight {w.shape}")

    return run, ""


def conv_study(pair: dict, kernel: Callable | None = None) -> tuple[dict, dict[str, Callable[[], object]]]:
    """Conv + 2 x 2 max-pool of one model layer at batch 256 in each formulation (see the module docstring): checks
    every formulation against the served one and returns (facts, timers by name); `ceiling` runs the timers."""
    w, b, (n, c, h, wd) = pair["weight"], pair["bias"], pair["input_shape"]
    o, _, k, _ = w.shape
    ho, wo = h - k + 1, wd - k + 1
    flops = 2.0 * n * o * c * k * k * ho * wo
    value = lambda name, shape: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa: E731

    def graph(nodes: list, inits: dict, shape: list) -> onnx.ModelProto:
        g = helper.make_graph(nodes, "study", [value("x", shape)], [value("y", None)],
                              [numpy_helper.from_array(np.asarray(v), k_) for k_, v in inits.items()])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    served = graph([helper.make_node("Conv", ["x", "w", "b"], ["c"]),
                    helper.make_node("MaxPool", ["c"], ["y"], **pool)], {"w": w, "b": b}, ["batch", c, h, wd])
    phases = graph([helper.make_node("SpaceToDepth", ["x"], ["d"], blocksize=2),
                    helper.make_node("Conv", ["d", "w", "b"], ["c"]),
                    helper.make_node("Reshape", ["c", "shape"], ["r"]),
                    helper.make_node("ReduceMax", ["r", "axis"], ["y"], keepdims=0)],
                   {"w": phase_weights(w), "b": np.tile(b, 4), "axis": np.array([1], np.int64),
                    "shape": np.array([-1, 4, o, ho // 2, wo // 2], np.int64)}, ["batch", c, h, wd])
    product = graph([helper.make_node("MatMul", ["x", "w"], ["y"])],
                    {"w": np.ascontiguousarray(w.reshape(o, -1).T)}, [n * ho * wo, c * k * k])
    pool_alone = graph([helper.make_node("MaxPool", ["x"], ["y"], **pool)], {}, [n, o, ho, wo])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, c, h, wd)).astype(np.float32)
    reference = session(served).run(None, {"x": x})[0]
    one_image = x[:1].copy()
    facts: dict = {"conv": pair["conv"], "pool": pair["pool"], "input": [n, c, h, wd], "weight": list(w.shape),
                   "mflop": flops / 1e6, "phases_max_abs_diff": {}}
    timers: dict[str, Callable[[], object]] = {}
    for name, proto, level in (("served", served, GRAPH_OPTIMIZATION),
                               ("nchwc", served, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                               ("phases", phases, GRAPH_OPTIMIZATION),
                               ("phases_nchwc", phases, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        sess = session(proto, level=level)
        result = sess.run(None, {"x": x})[0]
        if name.startswith("phases"):
            facts["phases_max_abs_diff"][name] = float(np.abs(result - reference).max())
        timers[name] = lambda s=sess: s.run(None, {"x": x})
        if level == GRAPH_OPTIMIZATION:  # what a form costs the Predictor's usual request, one image
            timers[f"{name}@batch1"] = lambda s=sess: s.run(None, {"x": one_image})
    cols = rng.uniform(0, 1, (n * ho * wo, c * k * k)).astype(np.float32)
    conv_out = rng.uniform(0, 1, (n, o, ho, wo)).astype(np.float32)
    gemm, pooled = session(product), session(pool_alone)
    timers["gemm_bound"] = lambda: gemm.run(None, {"x": cols})
    timers["gemm_bound+pool"] = lambda: pooled.run(None, {"x": conv_out})  # added to gemm_bound
    conv = torch.nn.Conv2d(c, o, k).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
    conv = conv.to(memory_format=torch.channels_last)
    tx = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

    def torch_conv_pool() -> object:
        with torch.inference_mode():
            return torch.nn.functional.max_pool2d(conv(tx), 2)

    timers["torch_channels_last"] = torch_conv_pool
    if kernel is not None:
        y = np.empty_like(reference)
        wc, bc = np.ascontiguousarray(w), np.ascontiguousarray(b)
        kernel(x, wc, bc, y)
        facts["fused_kernel_max_abs_diff"] = float(np.abs(y - reference).max())
        scale = float(np.abs(reference).max())
        if not facts["fused_kernel_max_abs_diff"] <= 1e-5 * max(1.0, scale) * c * k * k:
            raise SystemExit(f"the fused kernel disagrees with onnxruntime on {pair['conv']}: max abs diff "
                             f"{facts['fused_kernel_max_abs_diff']:.3g} (output scale {scale:.3g})")
        timers["fused_kernel"] = lambda: kernel(x, wc, bc, y)
    return facts, timers


def interleaved_ms(timers: dict[str, Callable[[], object]], rounds: int, budget_s: float) -> dict[str, float]:
    """Median ms of each timer over `rounds` rounds that visit every timer in turn (a slow spell of the machine
    then touches all of them alike), each round a median of its own."""
    seen: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for name, fn in timers.items():
            seen[name].append(1000 * median_s(fn, budget_s, min_runs=5, warmup=2))
    return {name: statistics.median(v) for name, v in seen.items()}


def ceiling(path: str, row: dict, budget_s: float, peak: float, rounds: int = 5) -> dict:
    """Would any stock-kernel formulation of the convolutions reach the batch-256 target? (module docstring)"""
    model = onnx.load(path)
    batch = 256
    pairs = conv_pool_pairs(model, batch)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, *model_input_size(model))).astype(np.float32)
    times = node_times(path, x, 30)
    total_flops = batch * row["mflops_per_image"] * 1e6
    kernel, why_not = fused_kernel()
    studies, timers = [], {}
    whole = session(path)
    timers["model"] = lambda: whole.run(None, {"image": x})
    square = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
    gemm = session(helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [256, 1024])],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [256, 1024])],
        [numpy_helper.from_array(square, "b")]), opset_imports=[helper.make_opsetid("", 18)]))
    timers["roofline"] = lambda: gemm.run(None, {"a": square[:256]})
    for pair in pairs:
        facts, own = conv_study(pair, kernel)
        studies.append(facts)
        timers.update({f"{pair['conv']}/{name}": fn for name, fn in own.items()})
    measured = interleaved_ms(timers, rounds, budget_s / rounds)
    for facts in studies:
        own = {name.split("/", 1)[1]: ms for name, ms in measured.items() if name.startswith(facts["conv"] + "/")}
        own["gemm_bound"] += own.pop("gemm_bound+pool")
        facts["batch1_ms"] = {name.removesuffix("@batch1"): own.pop(name) for name in list(own) if "@batch1" in name}
        facts["ms"] = own
        facts["gflops"] = {name: facts["mflop"] * 1e6 / ms / 1e6 for name, ms in own.items()}
    # the peak is a maximum: where the machine ran faster in these rounds than when the roofline was first measured,
    # every fraction is taken against the higher figure (never flattered by a slow spell)
    peak = max(peak, 2.0 * 256 * 1024 * 1024 / measured["roofline"] / 1e6)
    wall_s = measured["model"] / 1000
    profiled = sum(times.values())
    in_pairs = sum(times.get(p["conv"], 0.0) + times.get(p["pool"], 0.0) for p in pairs)
    rest_s = wall_s * (1 - in_pairs / profiled)  # the rest's share of the model's wall time in the same rounds
    best_stock = {}
    # one session has one optimisation level: the best formulation per convolution within each level
    for level, choices in (("predictor", ("served", "phases")), ("ORT_ENABLE_ALL", ("nchwc", "phases_nchwc"))):
        picks = [min(choices, key=lambda v, s=s: s["ms"][v]) for s in studies]
        seconds = rest_s + sum(s["ms"][v] for s, v in zip(studies, picks, strict=True)) / 1000
        best_stock[level] = {"formulations": picks, "ms": seconds * 1000,
                             "fraction": total_flops / seconds / 1e9 / peak}
    bound_s = rest_s + sum(s["ms"]["gemm_bound"] for s in studies) / 1000
    fused = {"measured": False, "why_not": why_not}
    if kernel is not None:
        seconds = rest_s + sum(s["ms"]["fused_kernel"] for s in studies) / 1000
        fused = {"measured": True, "ms": seconds * 1000, "fraction": total_flops / seconds / 1e9 / peak}
    allowed_s = total_flops / (TARGET_ROOFLINE_FRACTION * peak * 1e9)
    return {"batch": batch, "rounds": rounds, "peak_gflops": peak,
            "roofline_gflops_in_rounds": 2.0 * 256 * 1024 * 1024 / measured["roofline"] / 1e6,
            "convolutions": studies, "measured_ms": measured["model"],
            "measured_fraction": total_flops / wall_s / 1e9 / peak,
            "share_of_profile_in_convolutions": in_pairs / profiled, "rest_ms": rest_s * 1000,
            "best_stock": best_stock,
            "gemm_bound_ms": bound_s * 1000, "gemm_bound_fraction": total_flops / bound_s / 1e9 / peak,
            "fused_kernel": fused,
            "target_ms": allowed_s * 1000, "convolutions_allowed_ms": (allowed_s - rest_s) * 1000}


def model_input_size(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]


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
    limits = ceiling(args.model, rows[0], args.budget, peak["gflops"])
    if limits["peak_gflops"] > peak["gflops"]:  # the ceiling's rounds saw a higher peak: take it for every row
        peak["first_measured_gflops"], peak["gflops"] = peak["gflops"], limits["peak_gflops"]
        for r in rows:
            r["batch256_roofline_fraction"] = r["batch256_gflops"] / peak["gflops"]
    monitor = json.loads(Path("reports/export.json").read_text()).get("monitor") \
        if Path("reports/export.json").is_file() else None
    main_row = rows[0]
    checks = {"batch1_ms": main_row["batch1_ms"], "batch1_ok": main_row["batch1_ms"] <= TARGET_BATCH1_MS,
              "roofline_fraction": main_row["batch256_roofline_fraction"],
              "roofline_ok": main_row["batch256_roofline_fraction"] >= TARGET_ROOFLINE_FRACTION}
    results = {"command": " ".join(["python", "benchmarks/inference_roofline.py", *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "onnxruntime": ort.__version__, "torch": torch.__version__, "threads": 1, "roofline": peak,
               "monitor": monitor, "rows": rows, "ceiling": limits, "checks": checks,
               "targets": {"batch1_ms": TARGET_BATCH1_MS, "roofline_fraction": TARGET_ROOFLINE_FRACTION}}
    lines = [f"single-core float32 matmul roofline: {peak['gflops']:.1f} GFLOP/s" + (
        f" (measured again in the ceiling's rounds; {peak['first_measured_gflops']:.1f} at first)"
        if "first_measured_gflops" in peak else ""), "",
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
    names = {"served": "served", "nchwc": "NCHWc", "phases": "phases", "phases_nchwc": "phases + NCHWc",
             "gemm_bound": "GEMM alone, im2col free (bound)", "torch_channels_last": "PyTorch oneDNN NHWC (reference)",
             "fused_kernel": "fused kernel (prototype)"}
    names = {k: v for k, v in names.items() if all(k in s["ms"] for s in limits["convolutions"])}
    lines += ["", f"convolution ceiling at batch {limits['batch']}, each convolution with its 2 x 2 max-pool, one "
              "thread: ms (GFLOP/s of the convolution's own FLOPs)", "",
              "| convolution | MFLOP | " + " | ".join(names.values()) + " |", "|---|---|" + "---|" * len(names)]
    for study in limits["convolutions"]:
        lines.append(f"| {study['conv']} {study['weight']} | {study['mflop']:.0f} | " + " | ".join(
            f"{study['ms'][k]:.2f} ({study['gflops'][k]:.0f})" for k in names) + " |")
    lines += ["", "at batch 1 (the Predictor's level): " + "; ".join(
        f"{study['conv']} served {study['batch1_ms']['served'] * 1000:.1f} us, phases "
        f"{study['batch1_ms']['phases'] * 1000:.1f} us" for study in limits["convolutions"])]
    lines += ["", f"whole model at batch {limits['batch']}: {limits['measured_ms']:.2f} ms "
              f"({100 * limits['measured_fraction']:.0f} %; timed in the same rounds as the convolutions), of which "
              "the convolutions and their pools "
              f"{100 * limits['share_of_profile_in_convolutions']:.0f} % (profiler). Each convolution at its best "
              "stock formulation, the rest as profiled: " + "; ".join(
                  f"at {level} ({', '.join(b['formulations'])}) {b['ms']:.2f} ms ({100 * b['fraction']:.0f} %)"
                  for level, b in limits["best_stock"].items()) +
              f"; at the GEMM bound {limits['gemm_bound_ms']:.2f} ms ({100 * limits['gemm_bound_fraction']:.0f} %); "
              + (f"with the fused prototype {limits['fused_kernel']['ms']:.2f} ms "
                 f"({100 * limits['fused_kernel']['fraction']:.0f} %)" if limits["fused_kernel"]["measured"]
                 else f"fused prototype not measured: {limits['fused_kernel']['why_not']}") +
              f". The target needs <= {limits['target_ms']:.2f} ms, "
              f"i.e. the convolutions with their pools in <= {limits['convolutions_allowed_ms']:.2f} ms."]
    results["markdown"] = "\n".join(lines)
    print(results["markdown"])
    write_json_atomic(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
