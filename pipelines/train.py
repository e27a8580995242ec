"""DVC stage `train`: train the method in params.yaml; write the checkpoint and the training metrics."""

from __future__ import annotations

import json
import sys

from tada.config import ConfigError, load_config
from tada.workflows import train_and_save

MODEL = "models/model.pt"
METRICS = "reports/train_metrics.json"


def main() -> int:
    try:
        config = load_config("params.yaml")
    except ConfigError as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    final = train_and_save(config, MODEL, METRICS, log=lambda row: print(json.dumps(row), flush=True))
    print(f"train: target accuracy {final['target_accuracy']:.4f} (last iterate) -> {MODEL}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
