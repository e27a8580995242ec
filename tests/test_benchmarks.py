"""Every benchmark script imports and answers --help: a refactor of the library cannot silently break one."""

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
