"""`fetch_archive`: one verified archive in the cache, from the cache itself, a local file or the network."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from tada.data.download.archive import Archive, DownloadError
from tada.data.download.checksums import file_mismatches, mismatches, read_chunks, warn_unverified
from tada.data.download.http import download
from tada.io import atomic_path


def _by_hand(archive: Archive, cache_dir: Path) -> str:
    """How to supply ``archive`` without this package downloading it (the sentence ending every failure)."""
    digest = (f"sha256 {archive.sha256}" if archive.sha256 else f"md5 {archive.md5}" if archive.md5
              else "no checksum known")
    return (f"To supply {archive.filename} by hand ({digest}), download it yourself and put it at "
            f"{cache_dir / archive.filename}, or put it under that name in the directory named by `data.archive_dir` "
            f"(which passes it here as local_path), or serve it from a mirror whose base URL you set as "
            f"`data.mirror`.")


def _local_mismatch(local_path: Path, archive: Archive, problems: list[str]) -> DownloadError:
    return DownloadError(f"local archive {local_path} does not match the expected checksum of {archive.filename}: "
                         f"{'; '.join(problems)}. Check that it is the right file (or re-download it).")


def _copied(source: IO[bytes], target: IO[bytes]) -> Iterator[bytes]:
    """The chunks of ``source``, each written to ``target`` on the way."""
    for chunk in read_chunks(source):
        target.write(chunk)
        yield chunk


def _from_local(archive: Archive, local_path: Path, final: Path, log: Callable[[str], None]) -> Path:
    """``final``, once the user's copy ``local_path`` has been verified and copied there atomically (a mismatch
    leaves ``final`` as it was and is a `DownloadError`)."""
    local_path = Path(local_path)
    if not local_path.is_file():
        raise DownloadError(f"local archive {local_path} for {archive.filename} does not exist or is not a file")
    if final.exists() and local_path.resolve() == final.resolve():
        problems = file_mismatches(final, archive)
        if problems:
            raise _local_mismatch(local_path, archive, problems)
        return final
    log(f"{archive.filename}: copying local archive {local_path} into {final.parent}")
    try:
        with atomic_path(final) as tmp, open(local_path, "rb") as source, open(tmp, "wb") as target:
            problems = mismatches(archive, _copied(source, target))
            if problems:
                raise _local_mismatch(local_path, archive, problems)
    except OSError as error:
        raise DownloadError(f"cannot copy local archive {local_path} to {final}: {error}") from error
    return final


def _download_verified(url: str, part: Path, archive: Archive, *, timeout: float, attempts: int, progress: bool,
                       log: Callable[[str], None]) -> str | None:
    """Download ``url`` into ``part`` and check it; return ``None`` when ``part`` is verified, else why it failed.

    A ``.part`` left by an earlier run is resumed; if the result then fails the checksum, that old prefix may have
    been the culprit, so it is discarded and the file downloaded once more from scratch. A ``.part`` that fails its
    checksum is always deleted.
    """
    stale = part.exists()
    while True:
        failure = download(url, part, timeout=timeout, attempts=attempts, progress=progress, label=archive.filename,
                           log=log)
        if failure is not None:
            return failure
        problems = file_mismatches(part, archive)
        if not problems:
            return None
        part.unlink()
        if not stale:
            return "checksum mismatch: " + "; ".join(problems)
        log(f"{archive.filename}: the download resumed from an earlier run fails its checksum "
            f"({'; '.join(problems)}); downloading it again from the start")
        stale = False


def fetch_archive(archive: Archive, cache_dir: Path, *, mirror: str | None = None, local_path: Path | None = None,
                  progress: bool = True, log: Callable[[str], None] = print, timeout: float = 60.0,
                  attempts: int = 3) -> Path:
    """Return the path of the verified archive in cache_dir (downloading it if needed).

    In order of preference:

    1. ``local_path`` given: that file is checksum-verified while being copied (atomically) to
       ``<cache_dir>/<filename>``; a mismatch is a `DownloadError` naming it, and nothing is left in ``cache_dir``.
    2. ``<cache_dir>/<filename>`` exists: it is used, without any network access, if its checksum matches; if not,
       that is a `DownloadError` naming it (it is not deleted: the user may have put it there).
    3. Download from ``mirror.rstrip('/') + '/' + filename`` when ``mirror`` is given, else from each of
       ``archive.urls`` in turn, into ``<cache_dir>/<filename>.part`` (an existing ``.part`` is resumed), retrying
       transient errors up to ``attempts`` times per URL. The ``.part`` is renamed to the final name only when its
       checksums match; one that does not match is deleted. When no URL yields a verified file, `DownloadError`
       lists each URL with its error and says how to supply the file by hand.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / archive.filename
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the archive cache {cache_dir}: {error}") from error
    warn_unverified(archive, log)
    if local_path is not None:
        return _from_local(archive, local_path, final, log)
    if final.exists():
        problems = file_mismatches(final, archive)
        if problems:
            raise DownloadError(f"{final} does not match the expected checksum: {'; '.join(problems)}. It may be "
                                f"corrupt or a different release: delete it to download it again, or replace it with "
                                f"the right file. {_by_hand(archive, cache_dir)}")
        return final
    urls = (mirror.rstrip("/") + "/" + archive.filename,) if mirror else archive.urls
    if not urls:
        raise DownloadError(f"no URL is known for {archive.filename}. {_by_hand(archive, cache_dir)}")
    part = cache_dir / f"{archive.filename}.part"
    failures = []
    for url in urls:
        log(f"downloading {archive.filename} from {url}")
        failure = _download_verified(url, part, archive, timeout=timeout, attempts=max(1, attempts),
                                     progress=progress, log=log)
        if failure is None:
            os.replace(part, final)  # verified: only now does the archive appear under its own name
            return final
        failures.append(f"  - {url}: {failure}")
    tried = "\n".join(failures)
    raise DownloadError(f"could not download {archive.filename}; tried:\n{tried}\n{_by_hand(archive, cache_dir)}")
