"""DVC stage `fetch`: materialise the dataset named in params under data/ (images + manifest.csv).

Exit codes: 1 when a download failed (worth retrying), 2 when the params or the data they name are wrong.
"""

from __future__ import annotations

import sys
from collections import Counter

from pipelines._paths import DATA, PARAMS
from pipelines._stage import user_errors
from tada.config import load_config
from tada.data.datasets import materialise
from tada.data.download import DownloadError


def main() -> int:
    with user_errors("fetch"):  # the params, or the data they point at, are wrong: exit 2
        config = load_config(PARAMS)
        try:
            rows = materialise(config.data, DATA)
        except DownloadError as e:  # the network or the archive: worth retrying (the Prefect flow does)
            print(f"fetch: {e}", file=sys.stderr)
            return 1
    counts = Counter(f"{r.domain}/{r.split}" for r in rows)
    print(f"fetch: {len(rows)} images in {DATA}/ ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
