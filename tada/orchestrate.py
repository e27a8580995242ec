"""Driving the DVC pipeline from an orchestrator, with DVC as the single source of truth.

Each stage runs as ``dvc repro --single-item <stage>``: DVC decides whether it is up to date (a fast no-op) and
keeps the cache and the lock file. Param overrides go through DVC's own ``--set-param`` code (the Hydra override
grammar of ``dvc exp run -S``), after `tada.config` has checked them, and a run with overrides is saved as a DVC
experiment (``dvc exp save``), so ``dvc exp show`` lists it beside the others. Nothing here imports Prefect:
`pipelines.flow` wraps these functions in tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tada.config import Config, ConfigError, load_config
from tada.io import atomic_path

_STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)$")
STAGES = ("fetch", "validate", "train", "evaluate", "export", "report")
TAIL_LINES = 40


class StageFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries the end of its output (the stage's own error)."""

    def __init__(self, stage: str, returncode: int | None, tail: list[str], timed_out: bool = False):
        self.stage, self.returncode, self.tail, self.timed_out = stage, returncode, tail, timed_out
        what = "timed out and was killed" if timed_out else f"failed (exit {returncode})"
        super().__init__(f"DVC stage '{stage}' {what}:\n" + "\n".join(tail))


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool  # False: DVC found the stage up to date and skipped it
    seconds: float
    output: str  # the last lines DVC and the stage printed


def dvc_env() -> dict[str, str]:
    """The environment for DVC: this interpreter's scripts first on PATH, since the stages run ``python -m``."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}


def run_command(
    args: list[str], cwd: Path, timeout: float, on_line: Callable[[str], None]
) -> tuple[int | None, list[str]]:
    """Run ``args``, passing each output line (stdout and stderr together) to ``on_line`` as it comes.

    Returns ``(returncode, last lines)``; the return code is None when the command ran past ``timeout`` seconds, in
    which case its whole process group was terminated (then killed, if it lingered).
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(args, cwd=cwd, env=dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        returncode = None
        _kill_group(proc)
    except BaseException:  # interrupted (e.g. the flow run was cancelled): never leave the stage running
        _kill_group(proc)
        raise
    reader.join(timeout=10)
    return returncode, list(tail)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _dvc_processes_in(repo: Path) -> list[int]:
    """Pids of the DVC commands (``dvc ...``, ``python -m dvc ...``) other than this process working in ``repo``."""
    import psutil  # DVC's own dependency

    root, found = repo.resolve(), []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline, cwd = proc.info["cmdline"] or [], proc.info["cwd"]
        if proc.info["pid"] != os.getpid() and cwd and any(Path(arg).name == "dvc" for arg in cmdline[:3]) and \
                (Path(cwd) == root or root in Path(cwd).parents):
            found.append(proc.info["pid"])
    return found


def recover_dvc_rwlock(repo: Path, on_line: Callable[[str], None] = print) -> bool:
    """Remove DVC's table of stage locks, ``.dvc/tmp/rwlock``, where a killed DVC left it cut short.

    DVC rewrites that file in place (truncate, then write) while it holds ``.dvc/tmp/rwlock.lock``; a DVC killed
    between the two (an OOM kill, a timeout's SIGKILL) leaves it empty or half written, and from then on every
    ``dvc repro`` fails with "Unable to read RWLock-file" (treeverse/dvc#7615) until someone deletes it: a scheduled
    flow would fail every run. Holding that same guard, so no DVC is editing it, a file that is not JSON can only be
    such a remnant. The entries it lost name the DVC processes working on stage outputs, so it is removed only when
    no DVC command runs in ``repo`` (DVC drops the entries of processes that are gone anyway). Returns whether it
    removed the file."""
    path = repo / ".dvc" / "tmp" / "rwlock"

    def readable() -> bool:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return True
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        return True

    if readable():  # the usual case, without touching DVC's locks
        return False
    from dvc.config import Config as DvcConfig
    from dvc.lock import LockError, make_lock

    hardlink = DvcConfig(dvc_dir=str(repo / ".dvc"))["core"].get("hardlink_lock", False)  # as DVC locks it
    try:
        with make_lock(str(path.parent / "rwlock.lock"), tmp_dir=str(path.parent), hardlink_lock=hardlink):
            if readable():
                return False
            if running := _dvc_processes_in(repo):
                on_line(f"{path} is cut short, but DVC is running in {repo} (pids {running}): left as it is")
                return False
            path.unlink()
    except LockError:  # a DVC is editing it right now: not a remnant
        return False
    on_line(f"removed {path}: cut short by a DVC process killed while writing it, and no DVC runs here now "
            "(treeverse/dvc#7615)")
    return True


def repro_stage(repo: Path, stage: str, timeout: float, on_line: Callable[[str], None] = print) -> StageRun:
    """``dvc repro --single-item <stage>`` in ``repo``; raises `StageFailed` on a non-zero exit or a timeout.

    A lock table left cut short by an earlier, killed DVC is removed first (`recover_dvc_rwlock`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    recover_dvc_rwlock(repo, on_line)
    start = time.perf_counter()
    returncode, tail = run_command([sys.executable, "-m", "dvc", "repro", "--single-item", stage], repo, timeout,
                                   on_line)
    if returncode != 0:
        # DVC exits 255 for any failed stage; the stage's own code (2: bad configuration) is in its last words.
        codes = [m.group(1) for line in tail if (m := _STAGE_EXIT.search(line))]
        raise StageFailed(stage, int(codes[-1]) if codes else returncode, tail, timed_out=returncode is None)
    ran = not any(f"Stage '{stage}' didn't change" in line for line in tail)
    return StageRun(stage, ran, time.perf_counter() - start, "\n".join(tail))


def commit_stage(repo: Path, stage: str, on_line: Callable[[str], None] = print, timeout: float = 600) -> None:
    """``dvc commit --force <stage>``: record the stage's outputs as they are now in ``dvc.lock``, e.g. the run report
    the flow rendered again after its gate, so that the next ``dvc repro`` finds the stage up to date."""
    returncode, tail = run_command([sys.executable, "-m", "dvc", "commit", "--force", stage], repo, timeout, on_line)
    if returncode != 0:
        raise StageFailed(f"commit {stage}", returncode, tail, timed_out=returncode is None)


def hydra_value(key: str, value: Any) -> str:
    """A value in the Hydra override grammar that ``dvc exp run -S`` takes."""
    if isinstance(value, Mapping):
        raise ConfigError(f"override {key}: give each leaf key on its own (e.g. {key}.<name>), not a mapping")
    return json.dumps(list(value) if isinstance(value, tuple) else value)


@contextlib.contextmanager
def overridden_params(repo: Path, overrides: Mapping[str, Any] | None) -> Iterator[Config]:
    """Apply dotted-key ``overrides`` to ``repo/params.yaml`` for the duration of the block; yield the config.

    The overrides are checked by `tada.config` first (an unknown key or a bad value raises `ConfigError` naming it,
    and the file is never touched), then written by DVC's own ``--set-param`` code. On exit, normal or not, the file
    is restored byte for byte: a run's overrides live on in its DVC experiment, not in the working tree.
    """
    params = repo / "params.yaml"
    overrides = dict(overrides or {})
    expected = load_config(params, overrides)  # validates before anything is written
    if not overrides:
        yield expected
        return
    original = params.read_bytes()
    try:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(params, [f"{key}={hydra_value(key, value)}" for key, value in overrides.items()])
        applied = load_config(params)
        if applied != expected:
            raise ConfigError(f"{params}: DVC applied the overrides {overrides} differently than expected")
        yield applied
    finally:
        if not params.is_file() or params.read_bytes() != original:
            with atomic_path(params) as tmp:
                tmp.write_bytes(original)


def uncached_outputs(repo: Path) -> list[str]:
    """The ``cache: false`` outputs, metrics and plots of ``repo/dvc.yaml``: git carries them, so an experiment
    commit must include them (``dvc exp run`` does this itself; ``dvc exp save`` only when told)."""
    import yaml

    stages = (yaml.safe_load((repo / "dvc.yaml").read_text()) or {}).get("stages") or {}
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                if isinstance(entry, dict):
                    for path, options in entry.items():
                        if isinstance(options, dict) and options.get("cache") is False:
                            paths.append(path)
    return paths


EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def save_experiment(repo: Path, name: str, on_line: Callable[[str], None] = print, timeout: float = 600) -> str:
    """Record the working tree's params, lock file and metrics as DVC experiment ``name`` (``dvc exp save``)."""
    if not EXPERIMENT_NAME.match(name) or ".." in name or name.endswith((".", ".lock")):
        raise ValueError(f"experiment name {name!r} is not a valid git ref name")
    include = [arg for path in uncached_outputs(repo) if (repo / path).exists()
               for arg in ("--include-untracked", path)]
    returncode, tail = run_command([sys.executable, "-m", "dvc", "exp", "save", "--force", "--name", name, *include],
                                   repo, timeout, on_line)
    if returncode != 0:
        raise StageFailed("exp save", returncode, tail, timed_out=returncode is None)
    return name


def sync_remote(repo: Path, direction: str, on_line: Callable[[str], None] = print, timeout: float = 7200) -> None:
    """``dvc pull`` (before the stages: whatever the remote has need not be recomputed) or ``dvc push`` (after: the
    next worker, on another machine, starts from it) against the repository's default DVC remote."""
    if direction not in ("pull", "push"):
        raise ValueError(f"direction must be pull or push, got {direction!r}")
    args = [sys.executable, "-m", "dvc", direction] + (["--allow-missing"] if direction == "pull" else [])
    returncode, tail = run_command(args, repo, timeout, on_line)
    if returncode != 0:
        raise StageFailed(f"dvc {direction}", returncode, tail, timed_out=returncode is None)
