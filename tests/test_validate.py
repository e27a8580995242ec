"""The Great Expectations suite on a small fetched dataset: passes when clean, names the problem when not."""

import csv
import json

import pytest

from tada.config import ValidateConfig
from tada.data.datasets import materialise
from tada.validate import validate_dataset

CFG = ValidateConfig(min_per_class=2, min_rows=50)


@pytest.fixture
def dataset(tmp_path, tiny_config):
    root = tmp_path / "data"
    materialise(tiny_config.data, root)
    return root


def run(root, tmp_path):
    return validate_dataset(root, CFG, 28, tmp_path / "docs", tmp_path / "docs_failed")


def edit_manifest(root, change):
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = change(rows)
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_clean_dataset_passes_and_builds_data_docs(dataset, tmp_path):
    outcome = run(dataset, tmp_path)
    assert outcome.success, outcome.summary
    assert outcome.report["failed_expectations"] == 0 and outcome.report["evaluated_expectations"] >= 14
    assert (tmp_path / "docs" / "index.html").is_file()
    assert not (tmp_path / "docs_failed").exists()
    json.dumps(outcome.report)  # machine-readable


def test_corrupt_image_is_reported_by_path(dataset, tmp_path):
    victim = next((dataset / "images/source/train/3").iterdir()).relative_to(dataset).as_posix()
    (dataset / victim).write_bytes((dataset / victim).read_bytes()[:40])  # truncated PNG
    outcome = run(dataset, tmp_path)
    assert not outcome.success
    assert "image files exist and decode" in outcome.summary
    assert victim in outcome.summary and "corrupt" in outcome.summary
    assert (tmp_path / "docs_failed" / "index.html").is_file() and not (tmp_path / "docs").exists()


def test_missing_file_is_reported_by_path(dataset, tmp_path):
    victim = next((dataset / "images/target/test/7").iterdir()).relative_to(dataset).as_posix()
    (dataset / victim).unlink()
    outcome = run(dataset, tmp_path)
    assert not outcome.success and f"{victim} (missing)" in outcome.summary


def test_label_outside_the_class_list(dataset, tmp_path):
    def relabel(rows):
        rows[0]["label"] = "eleven"
        return rows

    edit_manifest(dataset, relabel)
    outcome = run(dataset, tmp_path)
    assert not outcome.success
    assert "labels are in the class list" in outcome.summary and "1 row(s)" in outcome.summary
    assert "unexpected values ['eleven']" in outcome.summary
    assert "the source domain has every class" in outcome.summary and "unexpected classes ['eleven']" in outcome.summary


def test_class_missing_from_the_target_domain(dataset, tmp_path):
    edit_manifest(dataset, lambda rows: [r for r in rows if not (r["domain"] == "target" and r["label"] == "3")])
    outcome = run(dataset, tmp_path)
    assert not outcome.success
    assert "the target domain has every class" in outcome.summary
    assert "missing classes ['3']" in outcome.summary
    assert "target/test class '3': 0 images" in outcome.summary


def test_same_file_in_two_splits(dataset, tmp_path):
    def leak(rows):
        test_row = next(r for r in rows if r["domain"] == "source" and r["split"] == "test")
        train_row = next(r for r in rows if r["domain"] == "source" and r["split"] == "train"
                         and r["label"] == test_row["label"])
        (dataset / test_row["path"]).write_bytes((dataset / train_row["path"]).read_bytes())
        test_row["sha256"] = train_row["sha256"]
        return rows

    edit_manifest(dataset, leak)
    outcome = run(dataset, tmp_path)
    assert not outcome.success and "no file content is in two splits" in outcome.summary


def test_wrong_image_size_and_too_few_rows(dataset, tmp_path):
    outcome = validate_dataset(dataset, ValidateConfig(min_per_class=2, min_rows=10**6), 32,
                               tmp_path / "docs", tmp_path / "failed")
    assert "images are 32 pixels wide" in outcome.summary
    assert "at least 1000000 images" in outcome.summary
