"""DVC stage `evaluate`: metrics.json (the summary), evaluation.json (per class), and the figures."""

from __future__ import annotations

import sys

from pipelines._paths import DATA, EVALUATION, FIGURES, METRICS, MODEL, PARAMS
from pipelines._stage import user_errors
from tada.checkpoint import load_trained
from tada.config import load_config
from tada.evaluate import EvaluationSet, HeldOut, evaluate_heldout, evaluation_details, summary_metrics
from tada.figures import evaluation_figures
from tada.io import replace_dir, staging_dir, write_json_atomic


def main() -> int:
    with user_errors("evaluate"):
        params = load_config(PARAMS)
        model, trained, payload, task = load_trained(MODEL, DATA)
    batch_size = params.evaluate.batch_size
    # The validators as training computed them (its settings), so these numbers and training's agree.
    metrics = evaluate_heldout(model, HeldOut.from_task(task, trained.validators.max_images), batch_size,
                               trained.validators)
    summary = summary_metrics(metrics, payload["selection"])
    if payload["selection"]["rule"] != "last":  # the last iterate is always reported too
        summary["last_iterate"] = summary_metrics(payload["last_metrics"])
    outputs = EvaluationSet.predict(model, task, batch_size)
    with staging_dir(FIGURES) as staging:
        evaluation_figures(outputs, task.classes, params.evaluate, trained.train.seed, staging, trained.method.name)
        replace_dir(staging, FIGURES)
    write_json_atomic(EVALUATION, {**evaluation_details(outputs, task.classes), "atc_threshold":
                                   metrics["atc_threshold"], "atc_score": trained.validators.atc_score})
    write_json_atomic(METRICS, summary)
    scores = ", ".join(f"{k.replace('_', ' ')} {summary[k]:.4f}" for k in
                       ("target_accuracy", "estimated_target_accuracy", "source_accuracy") if k in summary)
    print(f"evaluate: {scores} -> {METRICS}, {EVALUATION}, {FIGURES}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
