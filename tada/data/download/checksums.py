"""The checksums an `Archive` promises, and the ones a file or a stream of bytes actually has."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from tada.data.download.archive import CHUNK, Archive


def expected(archive: Archive) -> dict[str, str]:
    """``{algorithm: hex digest}`` for each checksum ``archive`` gives (``sha256``, ``md5``); empty when none."""
    return {name: digest for name, digest in (("sha256", archive.sha256), ("md5", archive.md5)) if digest}


def read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    """The rest of ``f``, `CHUNK` bytes at a time."""
    while chunk := f.read(CHUNK):
        yield chunk


def mismatches(archive: Archive, chunks: Iterable[bytes]) -> list[str]:
    """Hash all of ``chunks`` in one pass; return ``"sha256 expected X, got Y"`` for every checksum of ``archive``
    that does not match (empty when all match, or when ``archive`` gives none).

    ``chunks`` is consumed even when there is nothing to check, so that it may be a copy in progress.
    """
    digests = expected(archive)
    # md5 only identifies a published file here: allowed where FIPS mode forbids it for security
    hashers = {name: hashlib.new(name, usedforsecurity=name != "md5") for name in digests}
    for chunk in chunks:
        for hasher in hashers.values():
            hasher.update(chunk)
    actual = {name: hasher.hexdigest() for name, hasher in hashers.items()}
    return [f"{name} expected {digest}, got {actual[name]}" for name, digest in digests.items()
            if actual[name] != digest]


def file_mismatches(path: Path, archive: Archive) -> list[str]:
    """`mismatches` of the file ``path`` (not read at all when ``archive`` gives no checksum)."""
    if not expected(archive):
        return []
    with open(path, "rb") as f:
        return mismatches(archive, read_chunks(f))


def warn_unverified(archive: Archive, log: Callable[[str], None]) -> None:
    """Log a warning when ``archive`` has no sha256, saying what is checked instead (its md5, or nothing)."""
    if archive.sha256 is None:
        what = "only its md5 is checked" if archive.md5 else "its contents are not verified"
        log(f"warning: no sha256 is known for {archive.filename}; {what}")
