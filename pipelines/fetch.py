"""DVC stage `fetch`: materialise the dataset named in params under data/ (images + manifest.csv)."""

from __future__ import annotations

import sys
from collections import Counter

from pipelines._paths import DATA, PARAMS
from tada.config import ConfigError, load_config
from tada.workflows import fetch_dataset


def main() -> int:
    try:
        config = load_config(PARAMS)
    except ConfigError as e:
        print(f"fetch: {e}", file=sys.stderr)
        return 2
    rows = fetch_dataset(config, DATA)
    counts = Counter(f"{r.domain}/{r.split}" for r in rows)
    print(f"fetch: {len(rows)} images in {DATA}/ ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
