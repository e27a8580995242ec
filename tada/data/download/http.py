"""Stream one URL into a ``.part`` file: resume through HTTP ``Range``, retry transient errors, show progress.

A ``.part`` that exists is resumed with ``Range: bytes=<its size>-``; a 206 answer is appended to it, a 200 answer
(a server without range support) starts it over from byte zero. Connection errors, timeouts, short bodies and HTTP
408/425/429/5xx are retried with exponential backoff, keeping what arrived; other HTTP errors (404, 403, ...) are not.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm import tqdm

from tada.data.download.archive import CHUNK, DownloadError

_USER_AGENT = "tada-mlops/0.1 (+python urllib)"
_BACKOFF_BASE_S = 1.0  # retry k (1, 2, ...) waits _BACKOFF_BASE_S * 2 ** (k - 1) seconds, at most _BACKOFF_MAX_S
_BACKOFF_MAX_S = 10.0
_RETRYABLE_HTTP = frozenset({408, 425, 429})
_MB = 1e6  # the bar counts megabytes, so that its rate always reads MB/s (tqdm's own scaling would pick kB or GB)
_BAR = "{desc} {percentage:3.0f}%|{bar:30}| {n:.1f}/{total:.1f} MB  {rate_noinv_fmt}"
_BAR_WITHOUT_SIZE = "{desc} {n:.1f} MB  {rate_noinv_fmt}"


class _TransferError(Exception):
    """A transfer that ended badly but may succeed when retried (short body, unexpected resume offset, ...)."""


def _describe(error: BaseException) -> str:
    """A one-line description of a failed request, e.g. ``"HTTP 404 Not Found"``."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _is_retryable(error: BaseException) -> bool:
    """True for connection errors, timeouts, short reads and HTTP 408/425/429/5xx; False for other HTTP errors."""
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
    """The ``Content-Length`` of ``response`` in bytes, or ``None`` when it is absent or not a number."""
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """The response to a GET of ``url`` from byte ``offset`` on (a ``Range`` request when ``offset`` > 0)."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _progress_bar(label: str, total: int | None, start: int, enabled: bool) -> tqdm:
    """A bar on stderr, ``label 45%|####      | 12.0/27.0 MB  3.40MB/s``, counting megabytes from ``start``.

    Redrawn at most every 0.25 s on a terminal and every 10 s otherwise, so that logs stay short.
    """
    return tqdm(desc=label, total=None if total is None else total / _MB, initial=start / _MB, unit="MB",
                bar_format=_BAR if total else _BAR_WITHOUT_SIZE, mininterval=0.25 if sys.stderr.isatty() else 10.0,
                smoothing=0, disable=not enabled)  # smoothing 0: the rate shown is the average since the start


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
        size = _stream(response, part, mode, offset, _progress_bar(label, total, offset, progress))
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _TransferError(f"connection closed after {size} of {total} bytes")


def _read(response: IO[bytes]) -> bytes:
    """The next chunk of the body (empty at its end); a network error becomes a (retryable) `_TransferError`."""
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as error:
        raise _TransferError(_describe(error)) from error


def _stream(response: IO[bytes], part: Path, mode: str, offset: int, bar: tqdm) -> int:
    """Copy the response body into ``part`` (opened with ``mode``); return the size of ``part`` afterwards.

    Network errors are retryable `_TransferError` s; local file errors (disk full, permissions) are a `DownloadError`,
    since neither a retry nor another URL would help. ``bar`` is closed in any case.
    """
    size = offset
    try:
        with open(part, mode) as f:
            try:
                while chunk := _read(response):
                    f.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk) / _MB)
            finally:
                bar.close()
                f.flush()
                os.fsync(f.fileno())
    except OSError as error:
        raise DownloadError(f"cannot write {part}: {error}") from error
    return size


def download(url: str, part: Path, *, timeout: float, attempts: int, progress: bool, label: str,
             log: Callable[[str], None]) -> str | None:
    """Download ``url`` into ``part``, resuming it, with up to ``attempts`` tries (at least one) on transient errors.

    Returns ``None`` once ``part`` holds the whole body (unverified: checking it is the caller's job), else a line
    saying why the last try failed; ``part`` then keeps what arrived, for a later resume. Raises `DownloadError`
    only when ``part`` cannot be written.
    """
    attempt = 1
    while True:
        try:
            _download_once(url, part, timeout=timeout, progress=progress, label=label)
            return None
        except (OSError, http.client.HTTPException, _TransferError, ValueError) as error:  # ValueError: a bad URL
            if isinstance(error, urllib.error.HTTPError):
                error.close()
            if attempt >= attempts or not _is_retryable(error):
                return _describe(error)
            delay = min(_BACKOFF_BASE_S * 2 ** (attempt - 1), _BACKOFF_MAX_S)
            have = part.stat().st_size if part.exists() else 0
            resume = f", resuming at byte {have}" if have else ""
            log(f"{label}: {url} failed ({_describe(error)}); retry {attempt} of {attempts - 1} in {delay:.1f} s"
                f"{resume}")
            time.sleep(delay)
            attempt += 1
