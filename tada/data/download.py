"""Download, verify and extract benchmark dataset archives, with the standard library only.

* `fetch_archive` puts one verified archive in a cache directory: it reuses a cached copy whose checksum matches,
  copies a local file (air-gapped machines), or streams it from the official URLs (or a mirror) into
  ``<cache_dir>/<filename>.part``, resuming an interrupted transfer with an HTTP ``Range`` request, and renames the
  ``.part`` to its final name only once its sha256 (and md5, when given) match.
* `extract_archive` unpacks a tar/zip archive or a single ``.gz``/``.bz2``/``.xz`` file into a temporary directory
  beside the destination and renames it into place when complete. Members with absolute paths or ``..`` components
  are refused; tar members also pass `tarfile.data_filter`.
* `ensure_dataset` builds one dataset directory from several archives (their contents merged, as official releases
  are laid out), marks it complete with ``.tada-complete`` and reuses it from then on without any network access.

Every failure is a `DownloadError` whose message names the URL or file concerned and says how to supply the
archive by hand.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["Archive", "DownloadError", "MARKER", "ensure_dataset", "extract_archive", "fetch_archive"]

MARKER = ".tada-complete"
"""Written last into a dataset directory built by `ensure_dataset`; lists the archives it was built from."""

_CHUNK = 1 << 20
_USER_AGENT = "tada-mlops/0.1 (+python urllib)"
_BACKOFF_BASE_S = 1.0  # retry k (1, 2, ...) waits _BACKOFF_BASE_S * 2 ** (k - 1) seconds, at most _BACKOFF_MAX_S
_BACKOFF_MAX_S = 10.0
_RETRYABLE_HTTP = frozenset({408, 425, 429})
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
_SINGLE_FILE = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
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


class _TransferError(Exception):
    """A transfer that ended badly but may succeed when retried (short body, unexpected resume offset, ...)."""


# --------------------------------------------------------------------------------------------------------------------
# Checksums


def _expected(archive: Archive) -> dict[str, str]:
    return {name: digest for name, digest in (("sha256", archive.sha256), ("md5", archive.md5)) if digest}


def _new_hashers(archive: Archive) -> dict[str, hashlib._Hash]:
    hashers: dict[str, hashlib._Hash] = {}
    if archive.sha256:
        hashers["sha256"] = hashlib.sha256()
    if archive.md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    return hashers


def _mismatches(archive: Archive, hashers: Mapping[str, hashlib._Hash]) -> list[str]:
    """``"sha256 expected X, got Y"`` for every checksum that does not match (empty when all match)."""
    actual = {name: hasher.hexdigest() for name, hasher in hashers.items()}
    return [f"{name} expected {digest}, got {actual[name]}" for name, digest in _expected(archive).items()
            if actual[name] != digest]


def _file_mismatches(path: Path, archive: Archive) -> list[str]:
    """Hash ``path`` (one pass, only the algorithms ``archive`` has digests for) and return the mismatches."""
    hashers = _new_hashers(archive)
    if hashers:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
    return _mismatches(archive, hashers)


def _warn_unverified(archive: Archive, log: Callable[[str], None]) -> None:
    if archive.sha256 is None:
        what = "only its md5 is checked" if archive.md5 else "its contents are not verified"
        log(f"warning: no sha256 is known for {archive.filename}; {what}")


def _by_hand(archive: Archive, cache_dir: Path) -> str:
    """How to supply ``archive`` without this module downloading it."""
    digest = (f"sha256 {archive.sha256}" if archive.sha256 else f"md5 {archive.md5}" if archive.md5
              else "no checksum known")
    return (f"To supply {archive.filename} by hand ({digest}), download it yourself and put it at "
            f"{cache_dir / archive.filename}, or pass its path as local_path (the `data.archives` override).")


# --------------------------------------------------------------------------------------------------------------------
# Progress bar


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class _ProgressBar:
    """A text bar on stderr: ``name [#####-----]  45%  12.0 MB / 27.0 MB  3.4 MB/s``.

    Redrawn in place (``\\r``) at most every 0.25 s on a terminal, a new line at most every 10 s otherwise (logs),
    and always once at the end. Nothing is printed when disabled.
    """

    def __init__(self, label: str, total: int | None, start: int, enabled: bool) -> None:
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.began = self.last = time.monotonic()
        self.tty = enabled and sys.stderr.isatty()
        self.interval = 0.25 if self.tty else 10.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._draw(done, now, final=False)

    def finish(self, done: int) -> None:
        if self.enabled:
            self._draw(done, time.monotonic(), final=True)

    def _draw(self, done: int, now: float, *, final: bool) -> None:
        rate = (done - self.start) / max(now - self.began, 1e-6) / 1e6
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            text = (f"{self.label} [{bar:-<30}] {fraction:4.0%}  {_human(done)} / {_human(self.total)}"
                    f"  {rate:.2f} MB/s")
        else:
            text = f"{self.label}  {_human(done)} / ?  {rate:.2f} MB/s"
        end = "\n" if final or not self.tty else ""
        sys.stderr.write(("\r" if self.tty else "") + text + end)
        sys.stderr.flush()


# --------------------------------------------------------------------------------------------------------------------
# HTTP transfer


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _is_retryable(error: BaseException) -> bool:
    """Connection errors, timeouts and short reads are retried; HTTP client errors (404, 403...) are not."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code in _RETRYABLE_HTTP or error.code >= 500
    return isinstance(error, OSError | http.client.HTTPException | _TransferError)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range: bytes first-last/total`` (``None`` where absent or ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)\s*/\s*(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total and total != "*" else None)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, label: str) -> None:
    """One request for ``url`` into ``part``: resume it when it exists (``Range``), append on 206, start over on 200.

    Raises `_TransferError` when the body is shorter (or longer) than announced, so that the caller retries.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not offset:
            raise
        _first, total = _content_range(error.headers.get("Content-Range"))
        error.close()
        if total == offset:
            return  # the .part already holds the whole file; the checksum decides
        part.unlink()  # the server cannot serve that range: our .part is not a prefix of its file
        return _download_once(url, part, timeout=timeout, progress=progress, label=label)
    with response:
        status = getattr(response, "status", None) or 200  # file:// responses carry no status
        if status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != offset:
                part.unlink()
                raise _TransferError(f"server resumed at byte {first} instead of {offset}; restarting")
            length = _content_length(response)
            total = total if total is not None else (offset + length if length is not None else None)
            mode = "ab"
        elif status == 200:
            offset, total, mode = 0, _content_length(response), "wb"
        else:
            raise _TransferError(f"unexpected HTTP status {status}")
        size = _stream(response, part, mode, offset, _ProgressBar(label, total, offset, progress))
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _TransferError(f"connection closed after {size} of {total} bytes")


def _read(response: IO[bytes]) -> bytes:
    """The next chunk of the body; a network error becomes a (retryable) `_TransferError`."""
    try:
        return response.read(_CHUNK)
    except (OSError, http.client.HTTPException) as error:
        raise _TransferError(_describe(error)) from error


def _stream(response: IO[bytes], part: Path, mode: str, offset: int, bar: _ProgressBar) -> int:
    """Copy the response body into ``part`` (opened with ``mode``); return the size of ``part`` afterwards.

    Network errors are retryable `_TransferError` s; local file errors (disk full, permissions) are a `DownloadError`,
    since neither a retry nor another URL would help.
    """
    size = offset
    try:
        with open(part, mode) as f:
            try:
                while chunk := _read(response):
                    f.write(chunk)
                    size += len(chunk)
                    bar.update(size)
            finally:
                bar.finish(size)
                f.flush()
                os.fsync(f.fileno())
    except OSError as error:
        raise DownloadError(f"cannot write {part}: {error}") from error
    return size


def _download(url: str, part: Path, *, timeout: float, attempts: int, progress: bool, label: str,
              log: Callable[[str], None]) -> None:
    """Download ``url`` into ``part``, retrying (and resuming) up to ``attempts`` times on transient errors."""
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(url, part, timeout=timeout, progress=progress, label=label)
        except (OSError, http.client.HTTPException, _TransferError) as error:
            if attempt == attempts or not _is_retryable(error):
                raise
            if isinstance(error, urllib.error.HTTPError):
                error.close()
            delay = min(_BACKOFF_BASE_S * 2 ** (attempt - 1), _BACKOFF_MAX_S)
            have = part.stat().st_size if part.exists() else 0
            resume = f", resuming at byte {have}" if have else ""
            log(f"{label}: {url} failed ({_describe(error)}); retry {attempt} of {attempts - 1} in {delay:.1f} s"
                f"{resume}")
            time.sleep(delay)


def _download_verified(url: str, part: Path, archive: Archive, *, timeout: float, attempts: int, progress: bool,
                       log: Callable[[str], None]) -> str | None:
    """Download ``url`` into ``part`` and check it; return ``None`` when ``part`` is verified, else why it failed.

    A ``.part`` left by an earlier run is resumed; if the result then fails the checksum, that old prefix may have
    been the culprit, so it is discarded and the file downloaded once more from scratch. A ``.part`` that fails its
    checksum is always deleted.
    """
    stale = part.exists()
    while True:
        try:
            _download(url, part, timeout=timeout, attempts=attempts, progress=progress, label=archive.filename, log=log)
        except (OSError, http.client.HTTPException, _TransferError, ValueError) as error:
            if isinstance(error, urllib.error.HTTPError):
                error.close()
            return _describe(error)
        problems = _file_mismatches(part, archive)
        if not problems:
            return None
        part.unlink()
        if not stale:
            return "checksum mismatch: " + "; ".join(problems)
        log(f"{archive.filename}: the download resumed from an earlier run fails its checksum "
            f"({'; '.join(problems)}); downloading it again from the start")
        stale = False


# --------------------------------------------------------------------------------------------------------------------
# fetch_archive


def _copy_verified(src: Path, final: Path, archive: Archive) -> None:
    """Copy ``src`` to ``final`` through a temporary file beside it, hashing on the way; rename only if it matches."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    hashers = _new_hashers(archive)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb") as target:
            while chunk := source.read(_CHUNK):
                target.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
            target.flush()
            os.fsync(target.fileno())
        problems = _mismatches(archive, hashers)
        if problems:
            raise DownloadError(f"local archive {src} does not match the expected checksum of {archive.filename}: "
                                f"{'; '.join(problems)}. Check that it is the right file (or re-download it).")
        os.replace(tmp, final)
    except OSError as error:
        raise DownloadError(f"cannot copy local archive {src} to {final}: {error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def _from_local(archive: Archive, local_path: Path, final: Path, log: Callable[[str], None]) -> Path:
    local_path = Path(local_path)
    if not local_path.is_file():
        raise DownloadError(f"local archive {local_path} for {archive.filename} does not exist or is not a file")
    if final.exists() and local_path.resolve() == final.resolve():
        problems = _file_mismatches(final, archive)
        if problems:
            raise DownloadError(f"local archive {local_path} does not match the expected checksum of "
                                f"{archive.filename}: {'; '.join(problems)}")
        return final
    log(f"{archive.filename}: copying local archive {local_path} into {final.parent}")
    _copy_verified(local_path, final, archive)
    return final


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
    _warn_unverified(archive, log)
    if local_path is not None:
        return _from_local(archive, local_path, final, log)
    if final.exists():
        problems = _file_mismatches(final, archive)
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
            os.replace(part, final)
            return final
        failures.append(f"  - {url}: {failure}")
    tried = "\n".join(failures)
    raise DownloadError(f"could not download {archive.filename}; tried:\n{tried}\n{_by_hand(archive, cache_dir)}")


# --------------------------------------------------------------------------------------------------------------------
# Extraction


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


def _refuse(archive_path: Path, name: str, reason: str) -> DownloadError:
    return DownloadError(f"{archive_path}: refusing to extract member {name!r} ({reason}); the archive is corrupt or "
                         f"malicious")


def _extract_tar(archive_path: Path, directory: Path) -> None:
    def safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        reason = _unsafe_reason(member.name)
        if reason:
            raise _refuse(archive_path, member.name, reason)
        target = Path(dest, member.name)
        if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
            raise _refuse(archive_path, member.name, "a file of that name was already extracted")
        return tarfile.data_filter(member, dest)

    with tarfile.open(archive_path, "r:*") as tar:
        tar.extractall(directory, filter=safe)


def _extract_zip(archive_path: Path, directory: Path) -> None:
    with zipfile.ZipFile(archive_path) as zf:
        for info in zf.infolist():
            reason = _unsafe_reason(info.filename)
            if reason:
                raise _refuse(archive_path, info.filename, reason)
            target = directory / info.filename
            if (target.exists() or target.is_symlink()) and not (info.is_dir() and target.is_dir()):
                raise _refuse(archive_path, info.filename, "a file of that name was already extracted")
        zf.extractall(directory)


def _extract_single(archive_path: Path, directory: Path, suffix: str) -> None:
    target = directory / archive_path.name[: -len(suffix)]
    if target.exists():
        raise _refuse(archive_path, target.name, "a file of that name was already extracted")
    with _SINGLE_FILE[suffix](archive_path, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)


def _extract_into(archive_path: Path, directory: Path) -> None:
    """Extract ``archive_path`` into the existing ``directory``, merging with what is there (no file overwritten).

    Any failure (corrupt data, unsafe member, name clash, I/O error) is a `DownloadError`; ``directory`` may then
    hold part of the archive, so callers extract into a temporary directory they discard.
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


def _remove_tree(path: Path) -> None:
    """``rm -rf path``, also through read-only directories that an archive may have created."""
    def make_writable_and_retry(func: Callable[[str], object], name: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            func(name)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary directory beside ``dest`` (same file system, so it can be renamed to it), removed on exit."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield path
    finally:
        _remove_tree(path)


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
    with _staging(dest) as staging:
        log(f"extracting {archive_path.name} into {dest}")
        _extract_into(archive_path, staging)
        try:
            os.rename(staging, dest)
        except OSError as error:
            if not dest.exists():
                raise DownloadError(f"cannot move the extracted {archive_path.name} to {dest}: {error}") from error
            # another process completed the same extraction first: keep its result
    return dest


# --------------------------------------------------------------------------------------------------------------------
# ensure_dataset


def _marker_text(archives: Sequence[Archive]) -> str:
    return "".join(f"{archive.sha256 or 'unverified'}  {archive.filename}\n" for archive in archives)


def _write_marker(directory: Path, text: str) -> None:
    with open(directory / MARKER, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _place(staging: Path, dest: Path) -> None:
    """Rename the complete ``staging`` to ``dest``, swapping out (then deleting) an outdated ``dest``."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        _remove_tree(old)
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        _remove_tree(old)


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
    with _staging(dest) as staging:
        for archive, path in zip(archives, paths, strict=True):
            if archive.extract:
                log(f"extracting {archive.filename} into {dest}")
                _extract_into(path, staging)
            elif (staging / archive.filename).exists():
                raise DownloadError(f"{archive.filename} clashes with a file of the same name in another archive")
            else:
                shutil.copyfile(path, staging / archive.filename)
        _write_marker(staging, expected)
        try:
            _place(staging, dest)
        except OSError as error:
            raise DownloadError(f"cannot move the built dataset into {dest}: {error}") from error
    return dest
