"""Every benchmark script imports and answers --help: a refactor of the library cannot silently break one."""

import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_benchmark_imports_and_explains_itself(script):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def reference_dann():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_dann", ROOT / "benchmarks" / "reference_dann.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_reference_dann_lists_the_commands_behind_a_result_file_oldest_first():
    bench = reference_dann()
    assert bench.commands({"command": "python a"}) == ["python a"]
    nested = {"command": "python c --add-to b.json  (runs of seeds already in it kept: python b --add-to a.json  (runs "
                         "of seeds already in it kept: python a (x)))"}
    assert bench.commands(nested) == ["python a (x)", "python b --add-to a.json", "python c --add-to b.json"]
    assert bench.commands({"command": "python c", "earlier_commands": ["python a", "python b"]}) == \
        ["python a", "python b", "python c"]
    with pytest.raises(ValueError, match="not closed"):
        bench.commands({"command": "python b  (runs of seeds already in it kept: python a"})


def test_reference_dann_report_pairs_seeds_only_where_both_ran_them():
    import statistics

    bench = reference_dann()

    def entry(seeds: list[int], base: float) -> dict:
        runs = [{"seed": s, "threads": 1, "target_accuracy": base + 0.01 * (s % 3)} for s in seeds]
        values = [100 * r["target_accuracy"] for r in runs]
        return {"target_mean": statistics.fmean(values), "target_std": statistics.stdev(values), "runs": runs}

    paired = bench.paired_difference(entry([0, 1, 2], 0.81)["runs"], entry([0, 1, 2, 3], 0.80)["runs"])
    assert paired["seeds"] == 3 and abs(paired["mean"] - 1.0) < 1e-9
    assert bench.paired_difference(entry([0, 1], 0.8)["runs"], entry([2, 3], 0.8)["runs"]) is None

    results = {"accuracy": {"ours_dann": entry([0, 1, 2], 0.78), "peer": entry([0, 1, 2], 0.80),
                            "ours_dann_torch_dropout": entry([3, 4, 5], 0.80)},  # no seed in common with ours
               "gap_ours_dann_minus_peer_same_weight_decay": {}}  # a comparison under an old name: not kept
    text = bench.report(results)
    assert "-2.00 points against the peer's, each at its default" in text and "NOT met" in text
    assert "seed for seed" not in text and not any(k.endswith("_paired") for k in results)
    assert "gap_ours_dann_minus_peer_same_weight_decay" not in results

    results["accuracy"].update({"ours_dann_weight_decay_5e-4": entry([0, 1, 2], 0.77),
                                "peer_weight_decay_5e-4": entry([0, 1, 2], 0.795)})
    text = bench.report(results)
    effect = results["weight_decay_1e-3_minus_5e-4_paired"]
    assert effect["ours_dann_minus_ours_dann_weight_decay_5e-4"]["mean"] == pytest.approx(1.0)
    assert effect["peer_minus_peer_weight_decay_5e-4"]["mean"] == pytest.approx(0.5)
    assert results["gap_ours_dann_minus_peer_weight_decay_5e-4"]["mean"] == pytest.approx(-2.5)
    assert "both at the paper's weight decay, 5e-4: -2.50" in text and "ours_dann +1.00 over 3 seeds" in text

    results["accuracy"].update({"ours_dann_torch_dropout_weight_decay_5e-4": entry([1, 2, 3], 0.78),
                                "plain_weight_decay_5e-4": entry([1, 2, 3], 0.78)})
    text = bench.report(results)
    vs_plain = results["ours_dann_torch_dropout_weight_decay_5e-4_minus_plain_weight_decay_5e-4_paired"]
    assert vs_plain["identical"] == 3 and vs_plain["mean"] == 0.0
    vs_peer = results["ours_dann_torch_dropout_weight_decay_5e-4_minus_peer_weight_decay_5e-4_paired"]
    assert vs_peer["seeds"] == 2 and vs_peer["mean"] == pytest.approx(-1.5) and vs_peer["identical"] == 0
    assert "at 5e-4, ours_dann_torch_dropout_weight_decay_5e-4 minus peer_weight_decay_5e-4, seed for seed: -1.50 " \
           "over 2 seeds" in text
    assert bench.paired_difference(entry([0, 3], 0.8)["runs"], entry([0, 3], 0.7)["runs"])["correlation"] is None


def test_reference_dann_relabels_the_runs_of_the_old_default_once():
    bench = reference_dann()
    runs = {name: {"runs": [{"seed": 0, "threads": 1, "target_accuracy": 0.5 + i / 100}]}
            for i, name in enumerate(("ours_dann", "ours_dann_weight_decay_1e-3", "ours_tada", "plain", "peer"))}
    results = {"command": "python benchmarks/reference_dann.py --only accuracy", "accuracy": dict(runs)}
    bench.relabel(results, "python benchmarks/reference_dann.py --report r.json --relabel-weight-decay-1e-3")
    acc = results["accuracy"]
    assert acc["ours_dann"] is runs["ours_dann_weight_decay_1e-3"] and acc["ours_dann_weight_decay_5e-4"] is \
        runs["ours_dann"]
    assert acc["ours_tada_weight_decay_5e-4"] is runs["ours_tada"] and "ours_tada" not in acc
    assert acc["plain_weight_decay_5e-4"] is runs["plain"] and acc["peer"] is runs["peer"]  # the peer's was 1e-3
    assert results["relabelled"]["names"]["ours_dann_weight_decay_1e-3"] == "ours_dann"
    assert results["relabelled"]["after"] == results["command"] and "--relabel" in results["relabelled"]["command"]
    with pytest.raises(SystemExit, match="relabelled already"):
        bench.relabel(results)


@functools.cache
def inference_roofline():
    """The benchmark module, imported once (its compiled prototype kernel is cached on it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("inference_roofline", ROOT / "benchmarks" / "inference_roofline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def conv_maxpool_reference(x, w, b):
    import torch

    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    return torch.nn.functional.max_pool2d(conv, 2).numpy()


@pytest.mark.parametrize("shape", [(3, 1, 28, 28, 20, 5), (2, 20, 12, 12, 50, 5), (2, 3, 15, 17, 7, 5),
                                   (1, 5, 11, 40, 13, 3), (4, 2, 6, 6, 1, 1)],
                         ids=["lenet-conv1", "lenet-conv2", "odd-sizes", "wide", "one-by-one"])
def test_the_fused_convolution_prototype_matches_torch_on_every_tail(shape):
    import numpy as np

    kernel, why_not = inference_roofline().fused_kernel()
    if kernel is None:
        pytest.skip(f"fused prototype not built here: {why_not}")
    n, c, h, wd, o, k = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, wd), dtype=np.float32)
    w = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.3
    b = rng.standard_normal(o, dtype=np.float32)
    expected = conv_maxpool_reference(x, w, b)
    y = np.full(expected.shape, np.nan, np.float32)
    kernel(x, w, b, y)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


def test_the_ceiling_study_finds_the_conv_pool_pairs_and_folds_the_pool_exactly(tmp_path):
    """The phase formulation is the same function as Conv -> MaxPool (to rounding), on a small conv/pool graph."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    bench = inference_roofline()
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 2, 5, 5), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["c"], kernel_shape=[5, 5], name="conv"),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
         helper.make_node("Relu", ["p"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 2, 14, 14])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 6, 5, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(6, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    pairs = bench.conv_pool_pairs(model, 8)
    assert [(p["conv"], p["pool"], p["input_shape"]) for p in pairs] == [("conv", "pool", [8, 2, 14, 14])]
    facts, timers = bench.conv_study(pairs[0])
    assert max(facts["phases_max_abs_diff"].values()) < 1e-4
    assert {"served", "nchwc", "phases", "phases_nchwc", "gemm_bound", "torch_channels_last"} <= set(timers)
    measured = bench.interleaved_ms(timers, rounds=2, budget_s=0.001)
    assert set(measured) == set(timers) and all(ms > 0 for ms in measured.values())
