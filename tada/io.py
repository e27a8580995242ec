"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash, a kill or an exception mid-write leaves the previous file (or nothing) in place, never half a file that DVC
could cache or a later stage could read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Put the fully written directory ``staging`` at ``target``: two renames, the previous tree is removed only
    once the new one is in place (a crash in between leaves it as ``.<name>.old-<pid>`` beside the target)."""
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        remove_tree(old)  # left by an earlier crash of a process with our pid: renaming onto it would fail
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        remove_tree(old)


@contextlib.contextmanager
def staging_dir(target: str | Path) -> Iterator[Path]:
    """A temporary directory beside ``target``, removed on exit; fill it, then `replace_dir` it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: str | Path) -> None:
    """Delete the file or directory tree ``path`` if it exists, best effort (what cannot be deleted is left).

    Read-only directories are made writable first: an extracted archive may hold some, and ``rmtree`` alone could
    not empty them.
    """

    def make_writable_and_retry(func: Callable[[str], object], name: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            func(name)

    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)
