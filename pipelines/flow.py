"""Prefect flow `tada-retrain`: the DVC stages as tasks, then the quality gate; `prefect.yaml` schedules it.

DVC stays the single source of truth: every task runs its stage through ``dvc repro --single-item``, so an
up-to-date stage is a fast no-op and caching, lineage and ``dvc.lock`` are DVC's. Param overrides (a flow
parameter, e.g. ``{"train.iterations": 2000}``) are applied with DVC's ``--set-param`` code and the run is saved as a
DVC experiment; ``params.yaml`` is restored afterwards. `fetch` (the stage that may reach the network) is retried
with exponential backoff; the deterministic stages are not. Each stage has a timeout from ``flow.timeouts``.

At the end the gate compares the new model with ``models/production`` on held-out target data and promotes it
only if it is not worse by more than ``promote.tolerance`` (`tada.promote`). The run report (``reports/index.html``,
written by the ``report`` stage) is rendered again with the gate's decision. The run publishes a markdown artifact
(metrics, per-stage timings, the decision) and links to the run report and the other reports.

    python -m pipelines.flow                                # one run, here, without a Prefect server
    python -m pipelines.flow --set train.iterations=2000    # with overrides (saved as a DVC experiment)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from pipelines._paths import (
    DATA,
    DATA_DOCS_INDEX,
    EXPORT_REPORT,
    FIGURES,
    GATE_REPORT,
    MANIFEST,
    METRICS,
    MODEL,
    MODELS,
    ONNX_MODEL,
    REPORT,
    REPORT_INPUTS,
    VALIDATION_REPORT,
)
from tada.config import Config, ConfigError, PromoteConfig, parse_overrides
from tada.io import write_json_atomic
from tada.orchestrate import (
    STAGES,
    StageFailed,
    commit_stage,
    overridden_params,
    repro_stage,
    save_experiment,
    sync_remote,
)
from tada.promote import Candidate, ModelStore, quality_gate
from tada.report.markdown import run_markdown
from tada.report.run import RunPaths, write_report

ROOT = Path(__file__).resolve().parents[1]


def _worth_retrying(task, task_run, state) -> bool:
    """Retry a failed fetch unless the stage rejected its configuration (exit 2): that cannot heal by itself."""
    try:
        state.result()
    except StageFailed as e:
        return e.returncode != 2
    except Exception:
        return True
    return True


@task(name="dvc-stage", cache_policy=NO_CACHE)
def run_stage(repo: str, stage: str, timeout: float) -> dict[str, Any]:
    """One DVC stage through ``dvc repro --single-item``; its output goes to the Prefect log line by line."""
    logger = get_run_logger()
    run = repro_stage(Path(repo), stage, timeout, on_line=lambda line: logger.info("%s", line))
    logger.info("stage %s %s in %.1f s", stage, "ran" if run.ran else "was up to date", run.seconds)
    return {"stage": stage, "ran": run.ran, "seconds": round(run.seconds, 2)}


@task(name="dvc-remote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[30, 120])
def remote(repo: str, direction: str) -> None:
    """``dvc pull`` / ``dvc push`` with the default remote (network: retried)."""
    logger = get_run_logger()
    sync_remote(Path(repo), direction, on_line=lambda line: logger.info("%s", line))


@task(name="dvc-exp-save", cache_policy=NO_CACHE)
def record_experiment(repo: str, name: str) -> str:
    logger = get_run_logger()
    return save_experiment(Path(repo), name, on_line=lambda line: logger.info("%s", line))


def _evaluator(root: Path):
    def evaluate_production(checkpoint: Path) -> dict[str, float]:
        from tada.checkpoint import load_trained
        from tada.evaluate import HeldOut, evaluate_heldout

        model, trained, _, data = load_trained(checkpoint, root / DATA)
        return evaluate_heldout(model, HeldOut.from_task(data, trained.validators.max_images),
                                trained.evaluate.batch_size, trained.validators)

    return evaluate_production


@task(name="quality-gate", cache_policy=NO_CACHE)
def gate(repo: str, promote: PromoteConfig, context: dict[str, Any]) -> dict[str, Any]:
    """Promote the run's model to ``models/production`` unless it is worse than production (`tada.promote`)."""
    root = Path(repo)
    candidate = Candidate(onnx=root / ONNX_MODEL, checkpoint=root / MODEL, metrics=root / METRICS,
                          export=root / EXPORT_REPORT, manifest=root / MANIFEST)
    decision = quality_gate(candidate, ModelStore(root / MODELS), promote, _evaluator(root), context)
    write_json_atomic(root / GATE_REPORT, decision.to_dict())
    get_run_logger().info("gate: %s (%s)", "promoted" if decision.promoted else "not promoted", decision.reason)
    return decision.to_dict()


@task(name="run-report", cache_policy=NO_CACHE)
def run_report(repo: str) -> None:
    """``reports/index.html`` rendered again, now with the gate's decision (`tada.report.run`, as the ``report``
    stage renders it), and recorded in ``dvc.lock`` so that the next run finds the stage up to date."""
    root = Path(repo)
    logger = get_run_logger()
    size = write_report(RunPaths.under(root, REPORT_INPUTS, gate=GATE_REPORT), root / REPORT)
    commit_stage(root, "report", on_line=lambda line: logger.info("%s", line))
    logger.info("run report with the gate's decision: %s (%.0f KiB)", root / REPORT, size / 1024)


def _git_commit(root: Path) -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def publish(root: Path, stages: list[dict[str, Any]], decision: dict[str, Any], experiment: str | None) -> None:
    metrics = json.loads((root / METRICS).read_text())
    train_summary = root / "reports/train/summary.json"
    if train_summary.is_file():
        metrics = {"method": json.loads(train_summary.read_text()).get("method"), **metrics}
    report = (root / REPORT).resolve().as_uri() if (root / REPORT).is_file() else None
    create_markdown_artifact(run_markdown(stages, metrics, decision, experiment, report), key="tada-retrain-report",
                             description="Metrics, stage timings and the quality gate's decision")
    for key, path, text in (("tada-run-report", REPORT, "run report (one offline HTML page)"),
                            ("tada-metrics", METRICS, "metrics.json"),
                            ("tada-gate-decision", GATE_REPORT, "gate decision"),
                            ("tada-data-docs", DATA_DOCS_INDEX, "Great Expectations Data Docs"),
                            ("tada-validation", VALIDATION_REPORT, "validation report"),
                            ("tada-export-parity", EXPORT_REPORT, "ONNX parity report"),
                            ("tada-confusion-matrix", f"{FIGURES}/confusion_matrix.png", "confusion matrix"),
                            ("tada-tsne", f"{FIGURES}/tsne.png", "t-SNE of source vs target features"),
                            ("tada-attention", f"{FIGURES}/attention.png", "attention maps")):
        if (root / path).exists():
            create_link_artifact((root / path).resolve().as_uri(), link_text=text, key=key)


@flow(name="tada-retrain", description="DVC pipeline fetch -> validate -> train -> evaluate -> export -> report, then "
      "the quality gate that promotes the model to models/production only if it is not worse.")
def retrain(overrides: dict[str, Any] | None = None, experiment_name: str | None = None,
            repo: str | None = None, sync_remote: bool = False) -> dict[str, Any]:
    """Run the pipeline through DVC, then the quality gate.

    Args:
        overrides: dotted params keys to values, e.g. ``{"train.iterations": 2000}``, applied for this run only and
            saved as a DVC experiment.
        experiment_name: the DVC experiment's name (default: ``tada-<flow run name>``); only with overrides.
        repo: the repository to run in (default: the one holding this file).
        sync_remote: ``dvc pull`` before the stages and ``dvc push`` after them, with the repository's default DVC
            remote: for workers that start from a fresh checkout (Docker, Kubernetes).
    """
    root = Path(repo).resolve() if repo else ROOT
    logger = get_run_logger()
    stages, experiment = [], None
    with overridden_params(root, overrides) as config:
        logger.info("params %s, overrides %s", config.digest(), overrides or "none")
        if sync_remote:
            remote.with_options(task_run_name="dvc-pull")(str(root), "pull")
        for stage in STAGES:
            stages.append(_stage_task(config, stage)(str(root), stage, getattr(config.flow.timeouts, stage)))
        if sync_remote:
            remote.with_options(task_run_name="dvc-push")(str(root), "push")
        if overrides:
            experiment = record_experiment(str(root), experiment_name or f"tada-{flow_run.get_name() or 'run'}")
    context = {"flow_run": flow_run.get_name(), "flow_run_id": flow_run.get_id(), "git_commit": _git_commit(root),
               "params_digest": config.digest(), "overrides": dict(overrides or {}), "experiment": experiment}
    decision = gate(str(root), config.promote, context)
    run_report(str(root))
    publish(root, stages, decision, experiment)
    return {"stages": stages, "decision": decision, "experiment": experiment,
            "metrics": json.loads((root / METRICS).read_text())}


def _stage_task(config: Config, stage: str):
    options: dict[str, Any] = {"name": f"dvc-{stage}", "task_run_name": stage}
    if stage == "fetch" and config.flow.fetch_retries:
        options.update(retries=config.flow.fetch_retries,
                       retry_delay_seconds=exponential_backoff(backoff_factor=config.flow.retry_delay),
                       retry_jitter_factor=0.2, retry_condition_fn=_worth_retrying)
    return run_stage.with_options(**options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.flow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params key for this run (YAML value), e.g. train.iterations=2000")
    parser.add_argument("--experiment-name")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
    except ConfigError as e:
        parser.error(f"--set: {e}")
    state = retrain(overrides=overrides or None, experiment_name=args.experiment_name, return_state=True)
    if not state.is_completed():
        print(f"tada-retrain: {state.message}", file=sys.stderr)
        return 1
    decision = state.result()["decision"]
    print(f"tada-retrain: {'promoted' if decision['promoted'] else 'not promoted'}: {decision['reason']} "
          f"(production release {decision['release']}; details in {GATE_REPORT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
