"""`ensure_dataset`: one dataset directory built from several archives, marked complete, reused from then on."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tada.data.download.archive import Archive, DownloadError
from tada.data.download.extract import extract_into
from tada.data.download.fetch import fetch_archive
from tada.io import replace_dir, staging_dir, write_text_atomic

MARKER = ".tada-complete"
"""Written last into a dataset directory built by `ensure_dataset`; lists the archives it was built from."""


def _marker_text(archives: Sequence[Archive]) -> str:
    """The marker's text: one ``<sha256 or 'unverified'>  <filename>`` line per archive."""
    return "".join(f"{archive.sha256 or 'unverified'}  {archive.filename}\n" for archive in archives)


def ensure_dataset(archives: Sequence[Archive], cache_dir: Path, dest: Path, *, mirror: str | None = None,
                   local_paths: Mapping[str, Path] | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Path:
    """Build (or reuse) the dataset directory ``dest`` from ``archives``; return ``dest``.

    ``dest`` is reused as it is, without any network access, when its ``.tada-complete`` marker lists the same
    archives (filename and sha256). Otherwise every archive is fetched with `fetch_archive` (``local_paths`` maps an
    archive filename to a local copy; ``mirror`` replaces the official URLs), the ones with ``extract=True`` are
    extracted and those with ``extract=False`` copied, all into ONE temporary directory beside ``dest`` (contents
    merged, as official releases are laid out; two archives providing the same file is an error). The marker is
    written last and the directory renamed to ``dest`` only when complete (replacing a ``dest`` whose marker lists
    other archives). A ``dest`` without a marker was not built here: it is left alone and reported.
    """
    cache_dir, dest = Path(cache_dir), Path(dest)
    local_paths = dict(local_paths or {})
    marker, expected = dest / MARKER, _marker_text(archives)
    if marker.is_file():
        if marker.read_text() == expected:
            log(f"dataset at {dest} is complete; reusing it")
            return dest
        log(f"dataset at {dest} was built from other archives; rebuilding it")
    elif dest.exists():
        raise DownloadError(f"{dest} exists but has no {MARKER} marker, so it is not a complete download made here; "
                            f"remove it (or move it away) to let it be rebuilt")
    unknown = sorted(set(local_paths) - {archive.filename for archive in archives})
    if unknown:
        log(f"warning: local_paths for unknown archives ignored: {', '.join(unknown)} "
            f"(expected one of: {', '.join(archive.filename for archive in archives)})")
    paths = [fetch_archive(archive, cache_dir, mirror=mirror, local_path=local_paths.get(archive.filename),
                           progress=progress, log=log) for archive in archives]
    with staging_dir(dest) as staging:
        for archive, path in zip(archives, paths, strict=True):
            if archive.extract:
                log(f"extracting {archive.filename} into {dest}")
                extract_into(path, staging)
            elif (staging / archive.filename).exists():
                raise DownloadError(f"{archive.filename} clashes with a file of the same name in another archive")
            else:
                shutil.copyfile(path, staging / archive.filename)
        write_text_atomic(staging / MARKER, expected)
        try:
            replace_dir(staging, dest)
        except OSError as error:
            raise DownloadError(f"cannot move the built dataset into {dest}: {error}") from error
    return dest
