"""Atomic writes: permissions as a plain open() gives them, and temporaries of killed writers cleaned by the next."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tada.io import atomic_path, clean_stale, replace_dir, staging_dir, write_text_atomic

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tada.io import atomic_path, staging_dir

    target = Path(sys.argv[1])
    if sys.argv[2] == "file":
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    with staging_dir(target) as tmp:
        (tmp / "index.html").write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.fixture
def umask():
    def use(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield use
    os.umask(previous)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                             (0o002, 0o664, 0o775)])
def test_written_files_and_directories_honour_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_text_atomic(tmp_path / "reports" / "metrics.json", "{}")
    with staging_dir(tmp_path / "reports" / "figures") as staging:
        (staging / "a.png").write_bytes(b"png")
        replace_dir(staging, tmp_path / "reports" / "figures")
    assert (tmp_path / "reports" / "metrics.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "reports" / "figures").stat().st_mode & 0o777 == dir_mode
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the atomic helpers must match
    assert plain.stat().st_mode & 0o777 == file_mode


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_killed_writers_temporary_is_removed_by_the_next_writer_of_that_target(tmp_path, kind):
    target = tmp_path / ("model.onnx" if kind == "file" else "data_docs")
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), kind], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    [left] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(f".{target.name}.")
    if kind == "file":
        write_text_atomic(target, "whole")
    else:
        with staging_dir(target) as staging:
            replace_dir(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_running_writers_temporary_is_left_alone(tmp_path):
    with atomic_path(tmp_path / "model.onnx") as mine:
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            theirs = tmp_path / f".model.onnx.{sleeper.pid}.0badc0de.tmp"
            theirs.write_bytes(b"being written")
            assert clean_stale(tmp_path, "model.onnx") == []  # both writers are alive (one of them is us)
            assert mine.exists() and theirs.exists()
        finally:
            sleeper.kill()
            sleeper.wait()
        assert clean_stale(tmp_path, "model.onnx") == [theirs]


def test_replace_dir_swaps_whole_trees(tmp_path):
    target = tmp_path / "data_docs"
    for content in ("old", "new"):
        with staging_dir(target) as staging:
            (staging / "index.html").write_text(content)
            replace_dir(staging, target)
    assert (target / "index.html").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["data_docs"]


def test_a_tree_moved_aside_by_a_killed_writer_is_put_back_by_the_next(tmp_path):
    """Without an atomic exchange, replace_dir renames the old tree aside first: a kill right then leaves no target,
    and the next writer of that target restores the old tree before it starts."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "data"
    target.mkdir()
    (target / "manifest.csv").write_text("the last good data")
    os.replace(target, tmp_path / f".data.old-{int(dead.stdout)}")
    with staging_dir(target) as staging:
        assert (target / "manifest.csv").read_text() == "the last good data"  # back before the new one is written
        (staging / "manifest.csv").write_text("new")
        replace_dir(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
