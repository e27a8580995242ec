"""DVC stage `train`: train the method in params.yaml on the validated data; dvclive curves, checkpoint."""

from __future__ import annotations

import json
import sys

from pipelines._paths import DATA, MODEL, PARAMS, TRAIN_DIR
from tada.config import ConfigError, load_config
from tada.io import replace_dir, staging_dir
from tada.tracking import LiveLogger
from tada.workflows import load_fetched_task, train_and_save


def main() -> int:
    try:
        config = load_config(PARAMS)
        task = load_fetched_task(config, DATA)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    with staging_dir(TRAIN_DIR) as staging:  # the curves appear only with a finished model
        live = LiveLogger(staging)

        def log(row: dict[str, float]) -> None:
            live(row)
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

        final = train_and_save(config, task, MODEL, staging / "summary.json", log=log)
        live.close()
        replace_dir(staging, TRAIN_DIR)
    print(f"train: target accuracy {final['target_accuracy']:.4f} (last iterate) -> {MODEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
