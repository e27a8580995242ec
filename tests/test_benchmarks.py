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
                            "ours_dann_torch_dropout": entry([3, 4, 5], 0.80)}}  # no seed in common with ours
    text = bench.report(results)
    assert "-2.00 points against the peer's" in text and "NOT met" in text
    assert "with torch's dropout in place of ours" in text and "seed for seed" not in text
    assert "ours_dann_minus_torch_dropout_paired" in results and results["ours_dann_minus_torch_dropout_paired"] is None

    results["accuracy"].update({"ours_dann_weight_decay_1e-3": entry([0, 1, 2], 0.79),
                                "peer_weight_decay_5e-4": entry([0, 1, 2], 0.795)})
    text = bench.report(results)
    assert results["weight_decay_1e-3_minus_5e-4_paired"]["ours_dann_weight_decay_1e-3_minus_ours_dann"]["mean"] \
        == pytest.approx(1.0)
    assert results["gap_ours_dann_minus_peer_same_weight_decay"]["5e-4"]["mean"] == pytest.approx(-1.5)
    assert "5e-4 -1.50" in text and "more than 1 point below" in text and "1e-3 -1.00" in text
    assert results["ours_dann_torch_dropout_minus_peer_weight_decay_5e-4_paired"] is None  # seeds 3-5 against 0-2
    assert "the same weights, masks and recipe" not in text

    results["accuracy"]["peer_weight_decay_5e-4"] = entry([3, 4, 5, 6], 0.805)
    text = bench.report(results)
    same = results["ours_dann_torch_dropout_minus_peer_weight_decay_5e-4_paired"]
    assert same["seeds"] == 3 and same["mean"] == pytest.approx(-0.5) and same["correlation"] == pytest.approx(1.0)
    assert "the same weights, masks and recipe), seed for seed: -0.50 over 3 seeds" in text
    assert bench.paired_difference(entry([0, 3], 0.8)["runs"], entry([0, 3], 0.7)["runs"])["correlation"] is None
