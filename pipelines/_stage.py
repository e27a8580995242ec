"""What every stage entry point shares: a user's mistake (bad params, missing or unusable inputs) ends the stage
with one line naming it and exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tada.config import ConfigError


@contextlib.contextmanager
def user_errors(stage: str) -> Iterator[None]:
    """Inside: a `ConfigError`, `FileNotFoundError` or `ValueError` prints ``<stage>: <message>`` and exits 2."""
    try:
        yield
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"{stage}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
