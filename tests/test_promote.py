"""The quality gate on real files: decisions, atomic promotion through the production link, history, pruning."""

import json
import os
from pathlib import Path

import pytest

from tada.config import PromoteConfig
from tada.promote import Candidate, ModelStore, PromotionError, decide, quality_gate

CFG = PromoteConfig(metric="target_accuracy", tolerance=0.01, keep_releases=2)


def make_candidate(root: Path, accuracy: float, weights: bytes = b"weights", data: bytes = b"manifest",
                   passed: bool = True) -> Candidate:
    root.mkdir(parents=True, exist_ok=True)
    files = {"onnx": "model.onnx", "checkpoint": "model.pt", "metrics": "metrics.json", "export": "export.json",
             "manifest": "manifest.csv"}
    paths = {k: root / v for k, v in files.items()}
    paths["onnx"].write_bytes(b"onnx" + weights)
    paths["checkpoint"].write_bytes(weights)
    paths["metrics"].write_text(json.dumps({"target_accuracy": accuracy, "source_accuracy": 0.99}))
    paths["export"].write_text(json.dumps({"passed": passed}))
    paths["manifest"].write_bytes(data)
    return Candidate(**paths)


def never_called(checkpoint: Path) -> dict[str, float]:
    raise AssertionError(f"production should not be re-evaluated ({checkpoint})")


@pytest.mark.parametrize(("candidate", "production", "promoted", "words"), [
    (0.70, None, True, "no production model yet"),
    (0.80, 0.70, True, ">= production's 0.7000 (+0.1000)"),
    (0.695, 0.70, True, "within the tolerance 0.01"),
    (0.60, 0.70, False, "worse than production's 0.7000 by 0.1000, more than the tolerance 0.01"),
])
def test_decide(candidate, production, promoted, words):
    ok, reason = decide("target_accuracy", candidate, production, 0.01)
    assert ok is promoted and words in reason


def test_first_model_is_promoted_through_an_atomic_link(tmp_path):
    store = ModelStore(tmp_path / "models")
    decision = quality_gate(make_candidate(tmp_path / "run1", 0.7), store, CFG, never_called, {"flow_run": "a"})
    assert decision.promoted and decision.production is None and decision.previous_release is None
    assert store.link.is_symlink() and not os.path.isabs(os.readlink(store.link))  # relative: the tree can move
    release = store.current()
    assert release.name == decision.release and release.parent == store.releases.resolve()
    assert {p.name for p in release.iterdir()} == {"model.onnx", "model.pt", "metrics.json", "export.json",
                                                   "release.json"}
    assert json.loads((release / "metrics.json").read_text())["target_accuracy"] == 0.7
    info = json.loads((release / "release.json").read_text())
    assert info["reason"] == "no production model yet" and info["flow_run"] == "a"
    assert [json.loads(line)["promoted"] for line in store.history.read_text().splitlines()] == [True]


def test_worse_model_is_rejected_and_production_untouched(tmp_path):
    store = ModelStore(tmp_path / "models")
    first = quality_gate(make_candidate(tmp_path / "run1", 0.7), store, CFG, never_called)
    before = {p.name: p.read_bytes() for p in store.current().iterdir()}
    worse = quality_gate(make_candidate(tmp_path / "run2", 0.5, weights=b"worse"), store, CFG, never_called)
    assert not worse.promoted and worse.release == first.release == worse.previous_release
    assert worse.candidate == 0.5 and worse.production == 0.7 and "more than the tolerance" in worse.reason
    assert worse.production_source == "stored (evaluated on the same data)"
    assert {p.name: p.read_bytes() for p in store.current().iterdir()} == before
    history = [json.loads(line) for line in store.history.read_text().splitlines()]
    assert [h["promoted"] for h in history] == [True, False] and history[1]["production"] == 0.7


def test_better_model_replaces_production_and_old_releases_are_pruned(tmp_path):
    store = ModelStore(tmp_path / "models")
    releases = []
    for i, accuracy in enumerate((0.60, 0.65, 0.70)):
        decision = quality_gate(make_candidate(tmp_path / f"run{i}", accuracy, weights=bytes([i])), store, CFG,
                                never_called)
        assert decision.promoted
        releases.append(decision.release)
    assert store.current().name == releases[-1]
    assert sorted(p.name for p in store.releases.iterdir() if p.is_dir()) == releases[1:]  # keep_releases=2


def test_same_model_again_is_not_promoted_twice(tmp_path):
    store = ModelStore(tmp_path / "models")
    candidate = make_candidate(tmp_path / "run", 0.7)
    first = quality_gate(candidate, store, CFG, never_called)
    again = quality_gate(candidate, store, CFG, never_called)
    assert not again.promoted and again.release == first.release and "is the production model" in again.reason
    assert len([p for p in store.releases.iterdir() if p.is_dir()]) == 1


def test_new_data_re_evaluates_production_on_it(tmp_path):
    store = ModelStore(tmp_path / "models")
    quality_gate(make_candidate(tmp_path / "run1", 0.9, data=b"old data"), store, CFG, never_called)
    seen = []

    def evaluate(checkpoint: Path) -> dict[str, float]:
        seen.append(checkpoint.read_bytes())
        return {"target_accuracy": 0.4, "source_accuracy": 0.99}

    decision = quality_gate(make_candidate(tmp_path / "run2", 0.6, weights=b"new", data=b"new data"), store, CFG,
                            evaluate)
    assert seen == [b"weights"]  # the production checkpoint, on the candidate's data
    assert decision.promoted and decision.production == 0.4
    assert decision.production_source == "re-evaluated on the current data"


def test_failed_export_is_never_promoted(tmp_path):
    store = ModelStore(tmp_path / "models")
    decision = quality_gate(make_candidate(tmp_path / "run", 0.9, passed=False), store, CFG, never_called)
    assert not decision.promoted and "parity" in decision.reason and not store.link.exists()


def test_missing_metric_and_foreign_production_dir_are_clear_errors(tmp_path):
    store = ModelStore(tmp_path / "models")
    candidate = make_candidate(tmp_path / "run", 0.9)
    candidate.metrics.write_text(json.dumps({"source_accuracy": 0.9}))
    with pytest.raises(PromotionError, match=r"metrics.json: no numeric 'target_accuracy' \(keys: source_accuracy\)"):
        quality_gate(candidate, store, CFG, never_called)
    (tmp_path / "models" / "production").mkdir(parents=True)
    with pytest.raises(PromotionError, match="is not the link the gate manages"):
        quality_gate(make_candidate(tmp_path / "run2", 0.9), store, CFG, never_called)


def test_a_crash_while_promoting_leaves_production_on_the_previous_release(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "models")
    first = quality_gate(make_candidate(tmp_path / "run1", 0.7), store, CFG, never_called)
    real_replace = os.replace

    def crash_on_link(src, dst):
        if Path(dst).name == "production":
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_link)
    with pytest.raises(OSError, match="power cut"):
        quality_gate(make_candidate(tmp_path / "run2", 0.8, weights=b"better"), store, CFG, never_called)
    monkeypatch.undo()
    assert store.current().name == first.release
    assert not list(store.releases.glob(".*.tmp")) and not list(store.root.glob(".production.*"))


def label_free_candidate(root: Path, estimate: float, weights: bytes, **validators: float) -> Candidate:
    """A run on an unlabelled target: no target_accuracy, the validators and ATC's estimate instead."""
    candidate = make_candidate(root, 0.0, weights=weights)
    candidate.metrics.write_text(json.dumps({"source_accuracy": 0.99, "estimated_target_accuracy": estimate,
                                             "validators": {"info_max": 1.0, **validators}}))
    return candidate


def test_auto_uses_target_accuracy_when_the_target_is_labelled(tmp_path):
    cfg = PromoteConfig(metric="auto", tolerance=0.01)
    candidate = make_candidate(tmp_path / "run", 0.7)
    candidate.metrics.write_text(json.dumps({"target_accuracy": 0.7, "estimated_target_accuracy": 0.8,
                                             "validators": {"info_max": 1.0}}))
    decision = quality_gate(candidate, ModelStore(tmp_path / "models"), cfg, never_called)
    assert decision.metric == "target_accuracy" and decision.labels_used and decision.candidate == 0.7
    assert decision.estimates == {"candidate": 0.8, "production": None}


def test_auto_without_target_labels_decides_on_the_label_free_metric(tmp_path):
    store = ModelStore(tmp_path / "models")
    cfg = PromoteConfig(metric="auto", label_free_metric="estimated_target_accuracy", tolerance=0.01)
    first = quality_gate(label_free_candidate(tmp_path / "a", 0.70, b"a"), store, cfg, never_called)
    worse = quality_gate(label_free_candidate(tmp_path / "b", 0.50, b"b"), store, cfg, never_called)
    assert first.promoted and not worse.promoted and not worse.labels_used
    assert worse.metric == "estimated_target_accuracy" and (worse.candidate, worse.production) == (0.5, 0.7)
    assert worse.estimates == {"candidate": 0.5, "production": 0.7}
    assert "estimated_target_accuracy 0.5000 is worse than production's 0.7000" in worse.reason
    # any validator, looked up under "validators"
    by_im = quality_gate(label_free_candidate(tmp_path / "c", 0.1, b"c", info_max=1.5), store,
                         PromoteConfig(metric="auto", label_free_metric="info_max"), never_called)
    assert by_im.promoted and by_im.metric == "info_max" and (by_im.candidate, by_im.production) == (1.5, 1.0)


def test_a_release_without_the_metric_is_re_evaluated(tmp_path):
    store = ModelStore(tmp_path / "models")
    quality_gate(make_candidate(tmp_path / "old", 0.7), store, CFG, never_called)  # only target_accuracy stored

    def evaluate(checkpoint: Path) -> dict[str, float]:
        return {"source_accuracy": 0.9, "estimated_target_accuracy": 0.65, "info_max": 0.8}

    cfg = PromoteConfig(metric="auto", label_free_metric="estimated_target_accuracy")
    decision = quality_gate(label_free_candidate(tmp_path / "new", 0.6, b"new"), store, cfg, evaluate)
    assert decision.production == 0.65 and decision.production_source == "re-evaluated on the current data"
    assert not decision.promoted
