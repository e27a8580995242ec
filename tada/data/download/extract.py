"""Unpack a tar/zip archive, or one ``.gz``/``.bz2``/``.xz`` file, refusing members that would escape the target.

Members with absolute paths or ``..`` components, and members that would overwrite a file already extracted, are
refused; tar members also pass `tarfile.data_filter` (no device files, no links out of the tree, no setuid bits).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tada.data.download.archive import CHUNK, DownloadError
from tada.io import staging_dir

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
_SINGLE_FILE = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name would escape the extraction directory (``None`` when it is safe)."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' component"
    return None


def _kind(path: Path) -> str:
    """``"tar"``, ``"zip"`` or a single-file suffix (``".gz"``, ``".bz2"``, ``".xz"``), from the name or contents."""
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    if path.suffix.lower() in _SINGLE_FILE:
        return path.suffix.lower()
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DownloadError(f"{path}: unknown archive format (expected tar, tar.gz/tgz, tar.bz2, tar.xz, zip, .gz, .bz2 "
                        f"or .xz)")


def _check_member(archive_path: Path, directory: str | Path, name: str, is_dir: bool) -> None:
    """Raise `DownloadError` when member ``name`` would land outside ``directory`` or on a file already there."""
    reason = _unsafe_reason(name)
    target = Path(directory, name)
    if not reason and (target.exists() or target.is_symlink()) and not (is_dir and target.is_dir()):
        reason = "a file of that name was already extracted"
    if reason:
        raise DownloadError(f"{archive_path}: refusing to extract member {name!r} ({reason}); the archive is corrupt "
                            f"or malicious")


def _extract_tar(archive_path: Path, directory: Path) -> None:
    def safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        _check_member(archive_path, dest, member.name, member.isdir())
        return tarfile.data_filter(member, dest)

    with tarfile.open(archive_path, "r:*") as tar:
        tar.extractall(directory, filter=safe)


def _extract_zip(archive_path: Path, directory: Path) -> None:
    with zipfile.ZipFile(archive_path) as zf:
        for info in zf.infolist():
            _check_member(archive_path, directory, info.filename, info.is_dir())
        zf.extractall(directory)


def _extract_single(archive_path: Path, directory: Path, suffix: str) -> None:
    name = archive_path.name[: -len(suffix)]
    _check_member(archive_path, directory, name, False)
    with _SINGLE_FILE[suffix](archive_path, "rb") as source, open(directory / name, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def extract_into(archive_path: Path, directory: Path) -> None:
    """Extract ``archive_path`` into the existing ``directory``, merging with what is there (no file overwritten).

    Any failure (corrupt data, unsafe member, name clash, I/O error) is a `DownloadError`; ``directory`` may then
    hold part of the archive, so callers extract into a staging directory they discard.
    """
    try:
        kind = _kind(archive_path)
        if kind == "tar":
            _extract_tar(archive_path, directory)
        elif kind == "zip":
            _extract_zip(archive_path, directory)
        else:
            _extract_single(archive_path, directory, kind)
    except DownloadError:
        raise
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, lzma.LZMAError,
            ValueError) as error:
        raise DownloadError(f"cannot extract {archive_path}: {type(error).__name__}: {error}. The archive may be "
                            f"corrupt: delete it to download it again.") from error


def extract_archive(archive_path: Path, dest: Path, log: Callable[[str], None] = print) -> Path:
    """Extract tar/tar.gz/tgz/tar.bz2/tar.xz/zip (and single-file .gz/.bz2 -> the decompressed file) into a temp
    dir beside dest, then atomically rename it to dest (dest must not exist yet; if it exists, return it as is since
    a completed extraction is only ever renamed into place). Return dest.

    A single ``x.gz`` becomes ``dest/x``. Members with absolute paths or ``..`` components are refused (tar members
    also pass `tarfile.data_filter`); on any failure the temporary directory is removed and `DownloadError` raised.
    """
    archive_path, dest = Path(archive_path), Path(dest)
    if dest.exists():
        return dest
    with staging_dir(dest) as staging:
        log(f"extracting {archive_path.name} into {dest}")
        extract_into(archive_path, staging)
        try:
            # a plain rename, not `replace_dir`: a dest that appeared meanwhile is another process's finished work
            os.rename(staging, dest)
        except OSError as error:
            if not dest.exists():
                raise DownloadError(f"cannot move the extracted {archive_path.name} to {dest}: {error}") from error
    return dest
