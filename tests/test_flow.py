"""The Prefect flow end to end under `prefect_test_harness`, on a git copy of the repository with tiny params.

One module-scoped sequence of real flow runs (each stage through DVC), then one test per claim about it.
"""

import html
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.testing.utilities import prefect_test_harness
from repo_copy import copy_repo, sh

from pipelines.flow import _stage_task, _worth_retrying, retrain
from tada.orchestrate import StageFailed

TINY = {  # small, yet the model learns: ~33 % target accuracy after 150 iterations, against ~11 % untrained
    "data": {"source_train_per_class": 50, "source_test_per_class": 12},
    "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
    "train": {"iterations": 150, "eval_interval": 75, "log_interval": 25, "batch_size": 32},
    "evaluate": {"tsne_points": 40, "attention_images": 8},
    "flow": {"retry_delay": 0.0},
}
WORSE = {"optim.lr": 1e-7}  # the weights barely move from their initialisation: a deliberately worse model
BAD_DATA = {"validate.min_rows": 10_000_000}  # more rows than the data has: the validate stage must fail


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def artifacts_of(state) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return {a.key: a for a in found}


def task_run_names(state) -> list[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return [t.name for t in found]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    repo = copy_repo(tmp_path_factory.mktemp("flow") / "repo", TINY)
    params = (repo / "params.yaml").read_bytes()
    production = repo / "models" / "production"
    out = SimpleNamespace(repo=repo, params=params)
    with prefect_test_harness(server_startup_timeout=90):
        out.first = retrain(repo=str(repo), return_state=True)
        out.first_artifacts = artifacts_of(out.first)
        out.first_release = os.readlink(production)
        out.first_onnx = (repo / "models/model.onnx").read_bytes()
        sh(repo, "dvc", "remote", "add", "--local", "-d", "storage", str(repo.parent / "remote"))
        out.second = retrain(repo=str(repo), sync_remote=True, return_state=True)
        out.second_task_runs = task_run_names(out.second)
        out.worse = retrain(overrides=WORSE, experiment_name="worse-lr0", repo=str(repo), return_state=True)
        out.params_after_worse = (repo / "params.yaml").read_bytes()
        out.production_before_bad = (os.readlink(production), snapshot(production.resolve()))
        out.bad_data = retrain(overrides=BAD_DATA, repo=str(repo), return_state=True)
        out.production_after_bad = (os.readlink(production), snapshot(production.resolve()))
        out.bad_key = retrain(overrides={"train.iteration": 5}, repo=str(repo), return_state=True)
    return out


@pytest.mark.slow
def test_first_run_executes_every_stage_through_dvc_and_promotes(runs):
    assert runs.first.is_completed(), runs.first.message
    result = runs.first.result()
    assert [(s["stage"], s["ran"]) for s in result["stages"]] == [
        ("fetch", True), ("validate", True), ("train", True), ("evaluate", True), ("export", True), ("report", True)]
    lock = yaml.safe_load((runs.repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"fetch", "validate", "train", "evaluate", "export", "report"}  # DVC ran and locked them
    decision = result["decision"]
    assert decision["promoted"] and decision["reason"] == "no production model yet"
    release = runs.repo / "models" / runs.first_release
    assert json.loads((release / "metrics.json").read_text())["target_accuracy"] == decision["candidate"]
    assert (release / "model.onnx").read_bytes() == runs.first_onnx


@pytest.mark.slow
def test_second_run_is_all_no_ops(runs):
    assert runs.second.is_completed(), runs.second.message
    result = runs.second.result()
    # the run report the first run rendered again with its gate's decision was recorded in dvc.lock: up to date
    assert [s["ran"] for s in result["stages"]] == [False] * 6
    # sync_remote pushed the outputs to the DVC remote, for workers on other machines
    assert any((runs.repo.parent / "remote").rglob("*")) and "dvc-push" in runs.second_task_runs
    assert not result["decision"]["promoted"] and "is the production model" in result["decision"]["reason"]


@pytest.mark.slow
def test_gate_rejects_a_deliberately_worse_model_with_the_reason(runs):
    assert runs.worse.is_completed(), runs.worse.message
    result = runs.worse.result()
    assert [(s["stage"], s["ran"]) for s in result["stages"]] == [
        ("fetch", False), ("validate", False), ("train", True), ("evaluate", True), ("export", True), ("report", True)]
    decision = result["decision"]
    first = runs.first.result()["decision"]
    assert decision["candidate"] < first["candidate"] - decision["tolerance"]
    assert not decision["promoted"] and decision["production"] == first["candidate"]
    assert "worse than production's" in decision["reason"] and "more than the tolerance" in decision["reason"]
    assert decision["release"] == runs.first_release.split("/")[-1]
    recorded = json.loads((runs.repo / "reports/gate.json").read_text())
    assert recorded["reason"] == decision["reason"] and recorded["context"]["overrides"] == WORSE
    history = [json.loads(line) for line in (runs.repo / "models/gate_history.jsonl").read_text().splitlines()]
    assert [h["promoted"] for h in history] == [True, False, False]


@pytest.mark.slow
def test_the_run_report_shows_the_gate_decision_of_the_last_run(runs):
    decision = runs.worse.result()["decision"]  # the last run that reached the gate
    page = (runs.repo / "reports/index.html").read_text()
    gate = dict(re.findall(r'data-gate="([^"]+)" data-value="([^"]+)"', page))
    assert json.loads(gate["candidate"]) == decision["candidate"]
    assert json.loads(gate["production"]) == decision["production"]
    assert "not promoted" in page and html.escape(decision["reason"]) in page
    metrics = json.loads((runs.repo / "reports/metrics.json").read_text())
    assert f'data-metric="target_accuracy" data-value="{json.dumps(metrics["target_accuracy"])}"' in page


@pytest.mark.slow
def test_overrides_are_a_dvc_experiment_and_params_are_restored(runs):
    assert runs.worse.result()["experiment"] == "worse-lr0"
    assert runs.params_after_worse == runs.params  # byte for byte, comments included
    shown = json.loads(sh(runs.repo, "dvc", "exp", "show", "--json").stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    named = [e for e in experiments if e.get("name") == "worse-lr0"]
    assert named, shown
    data = named[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["optim"]["lr"] == WORSE["optim.lr"]
    # the experiment carries its own metrics (git-tracked, cache: false outputs), not the workspace's
    metrics = data["metrics"]["reports/metrics.json"]["data"]
    assert metrics["target_accuracy"] == runs.worse.result()["decision"]["candidate"]


@pytest.mark.slow
def test_failed_validation_fails_the_flow_and_leaves_production_alone(runs):
    assert runs.bad_data.is_failed()
    message = runs.bad_data.message
    assert "DVC stage 'validate' failed (exit 1)" in message, message
    assert "row count" in message.lower() or "expect_table_row_count" in message, message
    assert runs.production_after_bad == runs.production_before_bad
    assert (runs.repo / "params.yaml").read_bytes() == runs.params


@pytest.mark.slow
def test_unknown_override_fails_before_anything_runs(runs):
    assert runs.bad_key.is_failed()
    assert "unknown key train.iteration" in runs.bad_key.message
    assert (runs.repo / "params.yaml").read_bytes() == runs.params


@pytest.mark.slow
def test_run_publishes_a_report_and_links(runs):
    artifacts = runs.first_artifacts
    report = artifacts["tada-retrain-report"]
    assert report.type == "markdown"
    assert "## Quality gate" in report.data and "**promoted**" in report.data and "| train | ran |" in report.data
    page = (runs.repo / "reports/index.html").resolve().as_uri()
    assert f"[run report]({page})" in report.data and "| report | ran |" in report.data
    for key, path in (("tada-run-report", "reports/index.html"), ("tada-metrics", "reports/metrics.json"),
                      ("tada-gate-decision", "reports/gate.json"),
                      ("tada-data-docs", "reports/data_docs/index.html"), ("tada-export-parity", "reports/export.json"),
                      ("tada-attention", "reports/figures/attention.png")):
        assert f"({(runs.repo / path).resolve().as_uri()})" in artifacts[key].data, key  # a markdown link


def test_only_fetch_is_retried_with_exponential_backoff():
    from tada.config import Config

    config = Config().replace({"flow.fetch_retries": 3, "flow.retry_delay": 10.0})
    fetch = _stage_task(config, "fetch")
    assert fetch.retries == 3 and fetch.retry_delay_seconds == [10.0, 20.0, 40.0]
    for stage in ("validate", "train", "evaluate", "export", "report"):
        assert _stage_task(config, stage).retries == 0, stage
    assert _stage_task(config.replace({"flow.fetch_retries": 0}), "fetch").retries == 0


def test_a_fetch_that_rejects_its_configuration_is_not_retried():
    from prefect.states import Failed

    def failed(returncode):
        return Failed(data=StageFailed("fetch", returncode, ["fetch: ..."]))

    assert _worth_retrying(None, None, failed(1))  # e.g. a network error: try again
    assert not _worth_retrying(None, None, failed(2))  # a bad params.yaml does not heal by waiting
