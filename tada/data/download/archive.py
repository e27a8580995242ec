"""`Archive`, one file of a dataset release as the downloader sees it, and `DownloadError`, its only error."""

from __future__ import annotations

import re
from dataclasses import dataclass

CHUNK = 1 << 20
"""Bytes read, hashed and written at a time."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-f]{32}")


class DownloadError(RuntimeError):
    """A dataset archive could not be fetched, verified or extracted; the message says which and what to do."""


@dataclass(frozen=True)
class Archive:
    """One file of a dataset release.

    ``urls`` are tried in order (official first, then mirrors). ``sha256`` is checked when given (``None``: the
    contents are not verified and a warning is logged); ``md5`` is checked too when given. ``extract=False`` marks a
    file used as it is (a ``.mat`` file, an idx ``.gz`` read directly): `ensure_dataset` copies it unchanged.
    Digests are stored lower-case; a file name with a path separator or a digest that is not hex is a `ValueError`.
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    md5: str | None = None
    extract: bool = True

    def __post_init__(self) -> None:
        if not self.filename or self.filename in (".", "..") or "/" in self.filename or "\\" in self.filename:
            raise ValueError(f"archive filename must be a plain file name, got {self.filename!r}")
        if isinstance(self.urls, str):
            raise ValueError(f"urls of {self.filename} must be a sequence of URLs, got the string {self.urls!r}")
        object.__setattr__(self, "urls", tuple(self.urls))
        for name, pattern in (("sha256", _SHA256), ("md5", _MD5)):
            value = getattr(self, name)
            if value is not None:
                value = value.strip().lower()
                if not pattern.fullmatch(value):
                    raise ValueError(f"{name} of {self.filename} is not a hex digest: {getattr(self, name)!r}")
                object.__setattr__(self, name, value)
