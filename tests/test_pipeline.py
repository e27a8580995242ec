"""The DVC pipeline end to end, in a temporary git copy of the repository, on tiny params."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import assert_offline, available, numbers_shown, open_page, screenshot
from PIL import Image
from repo_copy import ROOT, copy_repo, env, ran_stages, set_params, sh
from report_page import assert_metrics_shown

TINY = {
    "data": {"source_train_per_class": 20, "source_test_per_class": 12},
    "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
    "train": {"iterations": 20, "eval_interval": 10, "log_interval": 5, "batch_size": 16},
    "evaluate": {"tsne_points": 40, "attention_images": 8},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git copy of the tracked files, tiny params, committed, then `dvc repro` once."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo", TINY)
    first = sh(repo, "dvc", "repro")
    assert ran_stages(first.stdout) == ["fetch", "validate", "train", "evaluate", "export", "report"], first.stdout
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "lock")
    return repo


@pytest.mark.slow
def test_repro_produces_every_artifact(repo):
    for path in ("data/manifest.csv", "reports/validation.json", "reports/data_docs/index.html", "models/model.pt",
                 "reports/train/metrics.json", "reports/metrics.json", "reports/figures/confusion_matrix.png",
                 "reports/figures/tsne.png", "reports/figures/attention.png", "models/model.onnx",
                 "reports/export.json", "reports/index.html"):
        assert (repo / path).is_file(), path
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert 0 <= metrics["target_accuracy"] <= 1 and 0 <= metrics["estimated_target_accuracy"] <= 1
    assert set(metrics["validators"]) == {"neg_entropy", "info_max", "snd", "bnm", "devn", "class_ami"}
    details = json.loads((repo / "reports/evaluation.json").read_text())
    assert set(details["target_per_class_accuracy"]) == set("0123456789") and "local_attention" in details
    # evaluate agrees with training's last evaluation of the same model
    final = json.loads((repo / "reports/train/summary.json").read_text())["final"]
    assert metrics["target_accuracy"] == final["target_accuracy"] and metrics["validators"]["snd"] == final["snd"]
    export = json.loads((repo / "reports/export.json").read_text())
    assert export["passed"] and [c["batch_size"] for c in export["checks"]] == [1, 32]
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_identical"] for c in export["checks"])


@pytest.mark.slow
def test_run_report_in_a_real_browser(repo, tmp_path):
    """reports/index.html of the real run, in headless chromium with the network cut off: it loads nothing from
    outside the file, the console stays silent, and it shows every number of reports/metrics.json. Its screenshot is
    docs/pipeline.md's (``TADA_REPORT_SCREENSHOT=docs/run_report.png`` writes it there)."""
    if why := available():
        pytest.fail(f"the run report's browser test needs chromium: {why}")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    with open_page(repo / "reports/index.html", width=1280, height=1700) as page:
        assert_offline(page)
        assert_metrics_shown(metrics, numbers_shown(page))
        curves = page.driver.execute_script("return [...document.querySelectorAll('polyline')]"
                                            ".map(p => p.dataset.curve)")
        for name in ("train/loss", "train/source_ce", "train/local_adv", "train/global_adv", "train/entropy",
                     "train/lr", "train/grl_coeff", "eval/target_accuracy", "eval/estimated_target_accuracy"):
            assert name in curves, name
        assert page.driver.execute_script("return document.images.length") == 3  # confusion matrix, t-SNE, attention
        shot = tmp_path / "run_report.png"
        screenshot(page, shot, 1280, 1700)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1700) and len(image.getcolors(1 << 24)) > 50  # drawn, not blank
    if target := os.environ.get("TADA_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, target)


@pytest.mark.slow
def test_second_repro_is_a_no_op(repo):
    again = sh(repo, "dvc", "repro")
    assert ran_stages(again.stdout) == [] and "Data and pipelines are up to date" in again.stdout


@pytest.mark.slow
def test_metrics_and_plots_are_listed(repo):
    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    # the summary alone: dvclive's last value of every curve (reports/train/metrics.json) is not a DVC metric
    assert list(metrics[""]["data"]) == ["reports/metrics.json"], metrics
    summary = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics[""]["data"]["reports/metrics.json"]["data"] == summary
    table = sh(repo, "dvc", "metrics", "show").stdout.splitlines()
    assert len(table) == 2 and table[1].startswith("reports/metrics.json"), table  # a header and one row
    plots = json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)["data"]
    for name in ("train/loss.tsv", "train/source_ce.tsv", "train/local_adv.tsv", "train/global_adv.tsv",
                 "train/entropy.tsv", "train/grl_coeff.tsv", "train/lr.tsv", "eval/target_accuracy.tsv"):
        assert f"reports/train/plots/metrics/{name}" in plots, name
    for figure in ("confusion_matrix", "tsne", "attention"):
        assert f"reports/figures/{figure}.png" in plots


@pytest.mark.slow
def test_changing_export_params_reruns_only_export(repo):
    set_params(repo, {"export": {"opset": 17}})
    out = sh(repo, "dvc", "repro")
    assert ran_stages(out.stdout) == ["export", "report"], out.stdout  # the report shows the export
    assert json.loads((repo / "reports/export.json").read_text())["opset"] == 17
    sh(repo, "git", "checkout", "params.yaml")
    sh(repo, "dvc", "repro")


@pytest.mark.slow
def test_experiment_with_another_seed(repo):
    out = sh(repo, "dvc", "exp", "run", "-S", "train.seed=2")
    assert ran_stages(out.stdout) == ["train", "evaluate", "export", "report"], out.stdout
    accuracy = json.loads((repo / "reports/metrics.json").read_text())["target_accuracy"]
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    [exp] = [e["revs"][0]["data"] for rev in shown for e in rev.get("experiments") or []
             if e["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["seed"] == 2]
    # the experiment commit itself carries the metrics, so `dvc exp show` lists them beside its params
    assert exp["metrics"]["reports/metrics.json"]["data"]["target_accuracy"] == accuracy
    sh(repo, "git", "checkout", "params.yaml")
    sh(repo, "dvc", "checkout", "--force")


def corrupt_image(repo: Path, rows: list[dict]) -> str:
    row = next(r for r in rows if r["domain"] == "target" and r["split"] == "test" and r["label"] == "4")
    bad = b"not a png at all"
    (repo / "data" / row["path"]).write_bytes(bad)
    row["sha256"] = hashlib.sha256(bad).hexdigest()  # as a fetch of a broken file would record it
    return row["path"]


def label_outside_class_list(repo: Path, rows: list[dict]) -> str:
    rows[3]["label"] = "11"
    return "unexpected values ['11']"


def class_missing_from_target(repo: Path, rows: list[dict]) -> str:
    rows[:] = [r for r in rows if not (r["domain"] == "target" and r["label"] == "6")]
    return "missing classes ['6']"


@pytest.mark.slow
@pytest.mark.parametrize(("breakage", "problem"), [
    (corrupt_image, "image files exist and decode"),
    (label_outside_class_list, "labels are in the class list"),
    (class_missing_from_target, "the target domain has every class"),
])
def test_bad_data_fails_validate_and_leaves_previous_outputs(repo, breakage, problem):
    before = {p: (repo / p).read_bytes() for p in ("models/model.pt", "models/model.onnx", "reports/metrics.json",
                                                    "reports/validation.json")}
    manifest = repo / "data/manifest.csv"
    saved = {manifest: manifest.read_bytes()}
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    saved |= {repo / "data" / r["path"]: (repo / "data" / r["path"]).read_bytes() for r in rows}
    detail = breakage(repo, rows)
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        out = sh(repo, "dvc", "repro", "--single-item", "validate", check=False)
        assert out.returncode != 0
        assert problem in out.stderr and detail in out.stderr, out.stderr
        assert json.loads((repo / "reports/validation_failed.json").read_text())["success"] is False
        for path, content in before.items():
            if path == "reports/validation.json" and not (repo / path).exists():
                continue  # DVC removes a stage's own outputs before running it; the model and reports stay
            assert (repo / path).read_bytes() == content, path
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
        sh(repo, "dvc", "repro")  # back to a validated state for the other tests


def test_stage_entry_points_report_config_errors_by_key(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["iterations"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("fetch", "validate", "train", "evaluate", "export"):
        out = subprocess.run([sys.executable, "-m", f"pipelines.{stage}"], cwd=tmp_path, capture_output=True,
                             text=True, env={**env(), "PYTHONPATH": str(ROOT)})
        assert out.returncode == 2, (stage, out.stderr)
        assert "train.iterations must be > 0, got -5" in out.stderr, (stage, out.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_no_stage_imports_another_stage():
    import ast

    stages = {p.stem for p in (ROOT / "pipelines").glob("*.py") if not p.stem.startswith("_")}
    for path in (ROOT / "pipelines").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "pipelines" and len(parts) > 1:
                    assert parts[1] not in stages, f"{path.name} imports the stage {name}"


@pytest.mark.slow
def test_paper_protocol_queues_experiments_and_tabulates_them(repo, tmp_path):
    script = "benchmarks/paper_protocol.py"
    out = sh(repo, sys.executable, script, "queue", "digits_mnist_usps", "--tasks", "M-U", "--methods", "tada", "dann")
    assert "queued digits-mnist-usps-M-U-tada-s0" in out.stdout and "2 experiment(s)" in out.stdout
    status = sh(repo, "dvc", "queue", "status").stdout
    assert "digits-mnist-usps-M-U-tada-s0" in status and "digits-mnist-usps-M-U-dann-s0" in status
    assert "Queued" in status
    sh(repo, "dvc", "queue", "remove", "--all")
    # the table reads finished experiments by name: one run on the tiny default data stands in for A->W
    sh(repo, "dvc", "exp", "run", "--name", "office31-A-W-tada-s0", "-S", "train.seed=3")
    accuracy = json.loads((repo / "reports/metrics.json").read_text())["target_accuracy"]
    result = sh(repo, sys.executable, script, "table", "office31", "--out", str(tmp_path / "t.json"))
    assert "| tada (paper) | 94.3 | 98.7 | 99.8 | 91.6 | 72.9 | 73.0 | 88.4 |" in result.stdout
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["methods"]["tada"]["ours"]["A-W"] == [pytest.approx(100 * accuracy)]
    assert table["methods"]["tada"]["ours"]["D-W"] is None and table["methods"]["dann"]["paper"]["A-W"] == 82.0
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "--force")


@pytest.mark.slow
def test_train_stage_scales_out_with_train_nproc(repo):
    out = sh(repo, "dvc", "exp", "run", "-S", "train.nproc=2")
    assert ran_stages(out.stdout) == ["train", "evaluate", "export", "report"], out.stdout
    assert "train: 2 processes: " in out.stdout and "torch.distributed.run" in out.stdout
    assert out.stdout.count("train: target_accuracy") == 1  # rank 0 alone writes and reports
    assert (repo / "models/model.pt").is_file() and json.loads((repo / "reports/metrics.json").read_text())
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "--force")


@pytest.mark.slow
def test_push_and_pull_through_a_dvc_remote(repo, tmp_path):
    """Data and models outgrow one disk: they go to DVC remote storage (here a local directory) and come back."""
    remote = tmp_path / "remote"
    sh(repo, "dvc", "remote", "add", "--local", "-d", "storage", str(remote))
    try:
        model = (repo / "models/model.pt").read_bytes()
        pushed = sh(repo, "dvc", "push")
        assert "pushed" in pushed.stdout and any(remote.rglob("*"))
        for path in ("data", "models/model.pt", "models/model.onnx", "reports/data_docs", ".dvc/cache"):
            target = repo / path
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        sh(repo, "dvc", "pull")
        assert (repo / "models/model.pt").read_bytes() == model
        assert (repo / "data/manifest.csv").is_file() and (repo / "models/model.onnx").is_file()
        status = sh(repo, "dvc", "status")
        assert "Data and pipelines are up to date" in status.stdout, status.stdout
    finally:
        sh(repo, "dvc", "remote", "remove", "--local", "storage")
