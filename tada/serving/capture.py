"""Capture: a sampled copy of the images ``tada serve`` predicts, kept as the next target domain.

The capture directory is a flat folder of images, directly usable as ``data.folder.target``::

    <dir>/<sha256>.<ext>     each image as the client sent it, named by the SHA-256 of its bytes (stored once)
    <dir>/capture.jsonl      one JSON line per captured image: time, file, release, prediction, entropy, shift score,
                             client, replica; appended whole by every replica (O_APPEND, one write per line)

Never in the request's critical path: the request only decides whether an image may be captured (trust, sampling,
shift score) and puts it on a bounded queue; one writer thread per process writes it. A full queue or a full disk
drops the image, never the request, and `CaptureStats` counts every drop by its reason.

- Files appear whole or not at all: written under a dot-name (``.<name>.<pid>.<random>.tmp``, which the folder
  reader, git and DVC ignore), fsynced, then renamed into place; a kill leaves at most such a temporary, which the
  next start removes (`tada.io.clean_stale`).
- Files are private to the service's user and group (0640; the directory 0750 when capture creates it): images can
  be personal data, and nothing captured is ever served back over HTTP.
- Byte budget: when the images in the directory reach ``max_bytes``, the **oldest are deleted first** (by modification
  time, which a duplicate refreshes) down to 90 % of it, so capture follows the traffic as it drifts; the deleted
  images are counted (``evicted``). Replicas share the directory: each rescans it before it evicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import random
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tada.io import clean_stale
from tada.preprocessing import IMAGE_SUFFIXES

LOG = "capture.jsonl"
FILE_MODE, DIR_MODE = 0o640, 0o750
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}
DROP_REASONS = ("queue_full", "disk_full", "write_error", "untrusted", "client_share", "shift_score")
RESCAN_S = 30.0  # a replica's view of the directory's size is refreshed at least this often


class CaptureError(ValueError):
    """The capture directory or its token file cannot be used; the message names the path."""


def read_tokens(path: Path) -> dict[str, str]:
    """``token -> client name`` from a file of ``name:token`` lines (``#`` comments and blank lines ignored).

    The file must not be readable by others than its owner and group (it holds secrets), names and tokens must be
    non-empty, tokens at least 16 characters and unique."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CaptureError(f"capture tokens file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CaptureError(f"capture tokens file {path} is not UTF-8 text") from None
    if mode & 0o004:
        raise CaptureError(f"capture tokens file {path} is readable by every user (mode {mode & 0o777:o}): it holds "
                           f"secrets; chmod 640 {path}")
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise CaptureError(f"capture tokens file {path}, line {number}: expected 'client-name:token'")
        if len(token) < 16:
            raise CaptureError(f"capture tokens file {path}, line {number}: the token of {name!r} has "
                               f"{len(token)} characters, at least 16 needed")
        if token in tokens:
            raise CaptureError(f"capture tokens file {path}, line {number}: the token of {name!r} is also "
                               f"{tokens[token]!r}")
        tokens[token] = name
    if not tokens:
        raise CaptureError(f"capture tokens file {path} names no client (lines of 'client-name:token')")
    return tokens


@dataclass(frozen=True)
class CaptureItem:
    """One image on its way to the writer, with what the log records about it."""

    data: bytes
    format: str | None  # Pillow's format name, for the suffix
    record: dict[str, Any]


class CaptureStats:
    """Counters for /health and /metrics. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.captured = 0  # new files written
        self.duplicates = 0  # images already in the directory (stored once, logged again)
        self.evicted = 0  # files deleted to keep within the byte budget
        self.dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        self.bytes = 0  # the images in the directory, as this process last saw it

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"captured": self.captured, "duplicates": self.duplicates, "evicted": self.evicted,
                    "dropped": dict(self.dropped), "bytes": self.bytes}


class ClientShare:
    """At most ``share`` of the last ``window`` captured images may come from one client (a per-client cap: one
    client, trusted or not, cannot make most of the next target domain). Thread-safe."""

    def __init__(self, share: float, window: int) -> None:
        self.limit = max(1, int(share * window))
        self._recent: deque[str] = deque(maxlen=window)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, client: str) -> bool:
        with self._lock:
            if self._counts[client] >= self.limit:
                return False
            if len(self._recent) == self._recent.maxlen:
                oldest = self._recent[0]
                self._counts[oldest] -= 1
            self._recent.append(client)
            self._counts[client] += 1
            return True


class Capture:
    """The capture of one serving process: ``offer`` images from the request path, a writer thread stores them.

    Args:
        directory: where images and ``capture.jsonl`` go (created 0750 if missing).
        rate: the fraction of eligible images kept, in (0, 1].
        max_bytes: the byte budget of the images in the directory (oldest deleted first).
        queue_size: images waiting for the writer; beyond it they are dropped (``queue_full``).
        tokens: ``token -> client name``; None: every client is trusted (named by its address).
        client_share: the most one client may make of the last ``share_window`` captured images.
    """

    def __init__(self, directory: Path, *, rate: float = 1.0, max_bytes: int = 1 << 30, queue_size: int = 1024,
                 tokens: dict[str, str] | None = None, client_share: float = 1.0, share_window: int = 1000,
                 seed: int | None = None) -> None:
        self.directory = Path(directory)
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, mode=DIR_MODE)
                os.chmod(self.directory, DIR_MODE)  # mkdir's mode is masked by the umask
            probe = self.directory / f".probe.{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise CaptureError(f"capture directory {self.directory}: {e.strerror or e}") from None
        subdirs = [p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if subdirs:  # the folder reader would take them as class folders
            raise CaptureError(f"capture directory {self.directory} has sub-directories ({', '.join(sorted(subdirs))})"
                               ": it must be a flat folder of images, usable as data.folder.target")
        clean_stale(self.directory)  # temporaries of a killed writer
        self.rate, self.max_bytes, self.tokens = rate, max_bytes, tokens
        self.share = ClientShare(client_share, share_window) if client_share < 1 else None
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.stats = CaptureStats()
        self._random = random.Random(seed)
        self._queue: queue.Queue[CaptureItem | None] = queue.Queue(maxsize=queue_size)
        self._sizes: dict[str, tuple[float, int]] = {}  # file name -> (mtime, bytes)
        self._scanned = 0.0
        self._rescan()
        self._thread = threading.Thread(target=self._run, name="tada-capture", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------------------------

    def client(self, token: str | None, address: str | None) -> str | None:
        """The client's name, or None when it is not trusted (a token file is set and the token is not in it)."""
        if self.tokens is None:
            return f"address:{address or 'unknown'}"
        return self.tokens.get(token or "")

    def offer(self, client: str | None, data: bytes, fmt: str | None, record: dict[str, Any],
              shift_score: float | None = None, max_shift: float | None = None) -> bool:
        """Queue one predicted image for capture if it is eligible; never blocks. Returns whether it was queued.

        ``client`` is `client`'s answer (None: untrusted); an image whose ``shift_score`` is above ``max_shift`` is
        not from the served domain at all (blank, noise, another kind of picture) and is not captured."""
        if client is None:
            self.stats.drop("untrusted")
            return False
        if self._random.random() >= self.rate:
            return False  # not sampled: not a drop
        if max_shift is not None and shift_score is not None and not shift_score <= max_shift:
            self.stats.drop("shift_score")
            return False
        if self.share is not None and not self.share.admit(client):
            self.stats.drop("client_share")
            return False
        try:
            self._queue.put_nowait(CaptureItem(data, fmt, {**record, "client": client}))
        except queue.Full:
            self.stats.drop("queue_full")
            return False
        return True

    def queued(self) -> int:
        return self._queue.qsize()

    def summary(self) -> dict[str, Any]:
        return {**self.stats.summary(), "queued": self.queued(), "max_bytes": self.max_bytes, "rate": self.rate,
                "trusted": "tokens" if self.tokens is not None else "every client"}

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    # -- the writer thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._store(item)
            except OSError as e:
                self.stats.drop("disk_full" if e.errno in (28, 122) else "write_error")  # ENOSPC, EDQUOT

    def _rescan(self) -> None:
        sizes = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    sizes[entry.name] = (st.st_mtime, st.st_size)
        self._sizes, self._scanned = sizes, time.monotonic()
        self.stats.bytes = sum(size for _, size in sizes.values())

    def _evict(self, incoming: int) -> None:
        """Delete the oldest images until the new one fits in 90 % of the budget (another replica may have written
        or deleted some: rescan first)."""
        self._rescan()
        target = int(self.max_bytes * 0.9) - incoming
        total = self.stats.bytes
        for name, (_, size) in sorted(self._sizes.items(), key=lambda kv: (kv[1][0], kv[0])):
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
                self.stats.add(evicted=1)
            total -= size
            del self._sizes[name]
        self.stats.bytes = max(total, 0)

    def _store(self, item: CaptureItem) -> None:
        digest = hashlib.sha256(item.data).hexdigest()
        name = digest + SUFFIX.get(item.format or "", ".png")
        path = self.directory / name
        now = time.time()
        if path.exists():  # stored once; its time says it was seen again (recency windows read it)
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))
            self.stats.add(duplicates=1)
        else:
            if len(item.data) > self.max_bytes:
                raise OSError(28, "image larger than the whole byte budget")
            if time.monotonic() - self._scanned > RESCAN_S:
                self._rescan()
            if self.stats.bytes + len(item.data) > self.max_bytes:
                self._evict(len(item.data))
            self._write_file(path, item.data)
            self._sizes[name] = (now, len(item.data))
            self.stats.add(captured=1, bytes=len(item.data))
        line = json.dumps({"time": round(now, 3), "file": name, "sha256": digest, "bytes": len(item.data),
                           **item.record, "replica": self.replica}, sort_keys=True) + "\n"
        self._append_log(line.encode())

    def _write_file(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # not widened by a permissive umask, not narrowed below group read
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # never replaces: a replica that stored the same image first wins, same bytes
            except FileExistsError:
                self.stats.add(duplicates=1, captured=-1, bytes=-len(data))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _append_log(self, line: bytes) -> None:
        fd = os.open(self.directory / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.write(fd, line)  # one write of one line: replicas' lines never interleave
        finally:
            os.close(fd)


def read_log(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``capture.jsonl`` and the number of unreadable lines (a line cut short by a power loss)."""
    path = Path(directory) / LOG
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad
