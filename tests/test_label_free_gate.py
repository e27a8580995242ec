"""The quality gate without a single target label: the Prefect flow on a ``folder`` dataset whose target is a flat
directory of unlabelled images (the default task's handwritten digits, copied out without their labels, so the shift
is real). A barely trained model goes to production first (nothing to compare with), a trained one replaces it, and
a barely trained one again is rejected, each decided on the label-free metric; no target label exists on disk.
"""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from prefect.testing.utilities import prefect_test_harness
from repo_copy import copy_repo

from pipelines.flow import retrain
from tada.config import Config
from tada.data.default_task import build_default_task

TINY = {
    "data": {"name": "folder", "folder": {"source": "user_data/source", "target": "user_data/target"}},
    "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
    "train": {"iterations": 400, "eval_interval": 200, "log_interval": 50, "batch_size": 32},
    "validate": {"min_per_class": 10, "min_rows": 100},
    "evaluate": {"tsne_points": 40, "attention_images": 8},
    "flow": {"retry_delay": 0.0},
}
BROKEN = {"optim.lr": 1e-7}  # the weights barely move from their initialisation


def write_user_data(root: Path) -> None:
    """Rendered digits in class folders (labelled source); handwritten digits in one flat folder (no labels)."""
    task = build_default_task(Config().replace({"data.source_train_per_class": 50}).data)
    for i, (image, label) in enumerate(zip(task.source_train.images, task.source_train.labels, strict=True)):
        path = root / "source" / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    target = np.concatenate([task.target_train.images, task.target_test.images])
    (root / "target").mkdir(parents=True)
    for i in np.random.default_rng(0).permutation(len(target)):  # file order says nothing about the class either
        Image.fromarray(target[i]).save(root / "target" / f"img_{i:04d}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    repo = tmp_path_factory.mktemp("label-free") / "repo"
    write_user_data(repo / "user_data")
    copy_repo(repo, TINY)
    out = SimpleNamespace(repo=repo)
    with prefect_test_harness(server_startup_timeout=90):
        out.broken_first = retrain(overrides=BROKEN, experiment_name="broken-1", repo=str(repo), return_state=True)
        out.good = retrain(repo=str(repo), return_state=True)
        out.good_metrics = json.loads((repo / "reports/metrics.json").read_text())
        out.broken_again = retrain(overrides={**BROKEN, "train.seed": 1}, experiment_name="broken-2",
                                   repo=str(repo), return_state=True)
        out.gate_json = json.loads((repo / "reports/gate.json").read_text())
    return out


@pytest.mark.slow
def test_no_target_label_exists_anywhere(runs):
    assert not any((runs.repo / "user_data" / "target").glob("*/"))  # a flat folder: no class directories
    rows = list(csv.DictReader((runs.repo / "data/manifest.csv").read_text().splitlines()))
    target = [r for r in rows if r["domain"] == "target"]
    assert len(target) == 1797 and {r["label"] for r in target} == {""} and {r["split"] for r in target} == {"train"}
    assert "target_accuracy" not in runs.good_metrics  # nothing on the target can be, or is, scored with labels
    details = json.loads((runs.repo / "reports/evaluation.json").read_text())
    assert details["target_labelled"] is False and "target_per_class_accuracy" not in details


@pytest.mark.slow
def test_each_decision_uses_the_label_free_metric(runs):
    metric = Config().promote.label_free_metric
    for state in (runs.broken_first, runs.good, runs.broken_again):
        assert state.is_completed(), state.message
        decision = state.result()["decision"]
        assert decision["metric"] == metric and decision["labels_used"] is False
        assert 0 <= decision["estimates"]["candidate"] <= 1


@pytest.mark.slow
def test_a_trained_model_replaces_a_broken_production_one(runs):
    first, good = runs.broken_first.result()["decision"], runs.good.result()["decision"]
    assert first["promoted"] and first["reason"] == "no production model yet"
    assert good["promoted"] and good["production"] == first["candidate"]
    assert good["candidate"] > first["candidate"] + 0.1  # clearly better (nats), without a label to say so
    assert good["estimates"] == {"candidate": runs.good_metrics["estimated_target_accuracy"],
                                 "production": first["estimates"]["candidate"]}


@pytest.mark.slow
def test_a_broken_candidate_is_rejected_with_the_reason_and_the_estimates(runs):
    decision = runs.broken_again.result()["decision"]
    good = runs.good.result()["decision"]
    assert not decision["promoted"] and decision["release"] == good["release"]
    assert decision["production"] == good["candidate"] and decision["candidate"] < good["candidate"]
    assert "worse than production's" in decision["reason"] and decision["metric"] in decision["reason"]
    assert runs.gate_json["estimates"]["production"] == good["estimates"]["candidate"]
    assert runs.gate_json["estimates"]["candidate"] < runs.gate_json["estimates"]["production"]
    assert runs.gate_json["labels_used"] is False and runs.gate_json["reason"] == decision["reason"]
