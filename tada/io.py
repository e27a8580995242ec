"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash, a kill or an exception mid-write leaves the previous file (or nothing) in place, never half a file that DVC
could cache or a later stage could read. Temporaries are named ``.<target name>.<pid>.<random>.tmp`` (directories
too), so the next writer of the same target removes those of writers that no longer run (`clean_stale`); git and
DVC ignore them (``.gitignore``, ``.dvcignore``). What is written gets the permissions a plain ``open()`` or
``mkdir()`` would give (0666 / 0777 less the umask), not ``tempfile``'s private 0600 / 0700, so a serving container
running as another user, a shared DVC cache or a CI artifact upload can read it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_OWNER = re.compile(r"\.(\d+)\.[0-9a-f]+\.tmp$|\.old-(\d+)$")  # the pid in a temporary's or an old tree's name


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_stale(directory: str | Path, names: str = "*") -> list[Path]:
    """Remove the temporaries (``.<name>.<pid>.<random>.tmp``) and old trees (``.<name>.old-<pid>``) of the targets
    matching ``names`` in ``directory`` whose writing process no longer runs (killed mid-write). Returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in [*directory.glob(f".{names}.*.tmp"), *directory.glob(f".{names}.old-*")]:
        match = _OWNER.search(path.name)
        pid = int(match.group(1) or match.group(2)) if match else None
        if pid is None or pid == os.getpid() or _running(pid):
            continue
        original = directory / path.name[1:].rsplit(".old-", 1)[0] if match.group(2) else None
        if original is not None and not original.exists():  # killed between replace_dir's two renames
            os.replace(path, original)
        else:
            remove_tree(path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)
    tmp = _temporary(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # as open() would: 0666 less the umask
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped, as editors on Windows write one). A file that is not
    UTF-8 is a `ValueError` naming the file, the offset and the fix."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r}...): save it as "
                         "UTF-8") from None


def write_text_atomic(path: str | Path, text: str, errors: str = "strict") -> None:
    """UTF-8 text; ``errors="surrogateescape"`` writes back the original bytes of undecodable file names."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors=errors)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Put the fully written directory ``staging`` at ``target``, the previous tree removed once the new one is in
    place. Where the kernel and file system can, the two trees are swapped in one atomic step, so a reader (or a
    kill) sees the old tree or the new one, never neither; elsewhere two renames, and a kill between them leaves
    the old tree as ``.<name>.old-<pid>`` beside the missing target, which the next writer puts back."""
    staging, target = Path(staging), Path(target)
    if target.is_dir() and _exchange(staging, target):
        remove_tree(staging)  # now holds the previous tree
        return
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
    clean_stale(target.parent, target.name)
    path = _temporary(target)
    path.mkdir(0o777)  # as mkdir would: 0777 less the umask
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


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class MissingLibraryError(RuntimeError):
    """A system library the work needs is not installed; the message says which and how to install it."""


_TEMPORARY_NAME = re.compile(r"^\.(.+)\.\d+\.[0-9a-f]+\.tmp$")


def output_of(path: str | Path) -> Path:
    """The output a path inside a temporary of `atomic_path` / `staging_dir` belongs to
    (``data/.images.12.ab12cd34.tmp/x.png`` -> ``data/images``), or ``path`` itself: what to name to a user."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if match := _TEMPORARY_NAME.match(part):
            return Path(*parts[:i], match.group(1))
    return Path(path)


def no_space(path: str | Path, needed: int | None = None, fix: str = "") -> OSError:
    """The ENOSPC error to raise for ``path`` (named as the output it belongs to, `output_of`): how much is free
    where it lives (and ``needed``), and ``fix``."""
    path = output_of(path)
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
        have = f"{free / 2**20:.1f} MiB free"
    except OSError:
        have = "no free space"
    need = f", {needed / 2**20:.1f} MiB needed" if needed is not None else ""
    return OSError(errno.ENOSPC, f"no space left on the device of {path} ({have}{need})" + (f": {fix}" if fix else ""))


def reserve(path: str | Path, nbytes: int, fix: str = "") -> None:
    """Allocate the blocks of the existing file ``path`` up to ``nbytes`` now, so that writing into a memory map of it
    can never hit a full disk (which kills the process with SIGBUS, no message): `no_space` if they are not there.
    Where the file system cannot preallocate, its free space is checked instead."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in NO_SPACE:
            raise no_space(path, nbytes, fix) from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        if shutil.disk_usage(Path(path).parent).free < nbytes:
            raise no_space(path, nbytes, fix) from None
    finally:
        os.close(fd)
