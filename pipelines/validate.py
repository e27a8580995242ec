"""DVC stage `validate`: the Great Expectations suite over data/manifest.csv; fails the pipeline on bad data."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines._paths import DATA, DATA_DOCS, DATA_DOCS_FAILED, PARAMS, VALIDATION_FAILED, VALIDATION_REPORT
from pipelines._stage import user_errors
from tada.config import load_config
from tada.io import write_json_atomic
from tada.validate import validate_dataset


def main() -> int:
    with user_errors("validate"):
        config = load_config(PARAMS)
        outcome = validate_dataset(DATA, config.validate, config.data.image_size, DATA_DOCS, DATA_DOCS_FAILED)
    if not outcome.success:
        # The report of the last good run stays where it is; this one goes beside it.
        write_json_atomic(VALIDATION_FAILED, outcome.report)
        print(f"validate: {outcome.summary}\n(full report: {VALIDATION_FAILED}, Data Docs: "
              f"{DATA_DOCS_FAILED}/index.html)", file=sys.stderr)
        return 1
    write_json_atomic(VALIDATION_REPORT, outcome.report)
    Path(VALIDATION_FAILED).unlink(missing_ok=True)
    print(f"validate: {outcome.summary} (Data Docs: {DATA_DOCS}/index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
