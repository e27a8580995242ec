"""DVC stage `evaluate`: metrics.json and the figures (confusion matrix, t-SNE, attention maps)."""

from __future__ import annotations

import sys

from pipelines._paths import DATA, FIGURES, METRICS, MODEL, PARAMS
from tada.checkpoint import load_checkpoint
from tada.config import ConfigError, load_config
from tada.evaluate import evaluation_report
from tada.io import replace_dir, staging_dir, write_json_atomic
from tada.workflows import load_fetched_task


def main() -> int:
    try:
        params = load_config(PARAMS)
        model, trained, _ = load_checkpoint(MODEL)
        task = load_fetched_task(trained, DATA)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    with staging_dir(FIGURES) as staging:
        metrics = evaluation_report(model, task, params.evaluate, trained.train.seed, staging, trained.method.name)
        replace_dir(staging, FIGURES)
    write_json_atomic(METRICS, metrics)
    print(f"evaluate: target accuracy {metrics['target_accuracy']:.4f}, source {metrics['source_accuracy']:.4f} "
          f"-> {METRICS}, {FIGURES}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
