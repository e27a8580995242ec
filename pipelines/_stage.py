"""What every stage entry point shares: a user's mistake (bad params, missing or unusable inputs) ends the stage
with one line naming it and exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tada.config import ConfigError
from tada.io import NO_SPACE, MissingLibraryError, no_space


@contextlib.contextmanager
def user_errors(stage: str) -> Iterator[None]:
    """Inside: a `ConfigError`, `FileNotFoundError` or `ValueError` prints ``<stage>: <message>`` and exits 2; so does
    a full disk (ENOSPC, EDQUOT: the message says where and how much is free, `tada.io.no_space`)."""
    try:
        yield
    except (ConfigError, FileNotFoundError, ValueError, MissingLibraryError) as e:
        print(f"{stage}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        detail = e.strerror if e.strerror and e.strerror.startswith("no space") else no_space(
            e.filename or ".").strerror
        print(f"{stage}: {detail}", file=sys.stderr)
        raise SystemExit(2) from None
