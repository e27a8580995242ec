"""Fault injection through `dvc repro`: every stage SIGKILLed at several points, and failing on bad input, never
destroys or damages the last good outputs of any stage; the next successful run leaves no temporary behind, and git
sees nothing but the outputs it is meant to carry.

Kill points per stage: a third and two thirds of the way through a run (timed on a clean run; earlier where a busy
machine got the stage to its outputs before the kill), and at the instant the stage's first finished output would be
moved into place (``tests/faultinject/sitecustomize.py``): nothing changes.
A stage with several outputs moves them into place one after another at its very end, each atomically; killed at
the second, the stage leaves the first new and the others old, and every one whole and readable (tested too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from repo_copy import ROOT, copy_repo, env, set_params, sh

TINY = {
    "data": {"source_train_per_class": 20, "source_test_per_class": 6},
    "model": {"bottleneck_dim": 16, "discriminator_hidden": 16, "region_discriminator_hidden": 8},
    "train": {"iterations": 60, "eval_interval": 30, "log_interval": 10, "batch_size": 16, "checkpoint_interval": 20},
    "evaluate": {"tsne_points": 30, "attention_images": 4},
}
STAGES = ("fetch", "validate", "train", "evaluate", "export", "report")
FIRST = {"fetch": "data", "validate": "data_docs", "train": "model.pt", "evaluate": "figures", "export": "model.onnx",
         "report": "index.html"}
SECOND = {"validate": "validation.json", "train": "reports/train", "evaluate": "evaluation.json",
          "export": "export.json"}  # the outputs each stage moves into place first and second
TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]+\.tmp$|^\..+\.old-\d+$")


def outputs(repo: Path) -> list[Path]:
    """Every output of every stage, as declared in dvc.yaml."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [repo / next(iter(o)) if isinstance(o, dict) else repo / o
            for stage in stages.values() for kind in ("outs", "metrics") for o in stage.get(kind, [])]


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file under every output."""
    files = {}
    for out in outputs(repo):
        for path in ([out] if out.is_file() else sorted(p for p in out.rglob("*") if p.is_file())):
            files[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def assert_readable(repo: Path) -> None:
    from tada.checkpoint import load_checkpoint
    from tada.serving import Predictor

    for path in (*repo.glob("reports/*.json"), repo / "reports/train/summary.json"):
        json.loads(path.read_text())
    load_checkpoint(repo / "models/model.pt")
    Predictor(repo / "models/model.onnx")


def temporaries(repo: Path) -> list[str]:
    return [str(p.relative_to(repo)) for p in repo.rglob(".*")
            if TEMPORARY.match(p.name) and ".git" not in p.parts and ".dvc" not in p.parts]


def repro(repo: Path, stage: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    hook = {"PYTHONPATH": str(ROOT / "tests" / "faultinject")}
    return subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                            env={**env(), **hook, **(extra_env or {})}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after(process: subprocess.Popen, seconds: float, repo: Path) -> None:
    try:
        process.communicate(timeout=seconds)  # a run that ends sooner is not waited for any longer
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # DVC and the stage it runs: a lost machine, an OOM kill
        process.communicate()
        heal_dvc_lock_table(repo, process.pid)


def heal_dvc_lock_table(repo: Path, group: int) -> None:
    """A kill that lands while DVC itself rewrites its lock table in place leaves ``.dvc/tmp/rwlock`` cut short, and
    every later ``dvc`` command fails on it (treeverse/dvc#7615, DVC's bug, not a stage's): heal it as the flow does
    before each stage (`recover_dvc_rwlock`), once every process of the killed group is gone. Without this, a later
    run meant to fail for its own reason would fail on the lock table and test nothing (it happened in CI)."""
    from tada.orchestrate import recover_dvc_rwlock

    deadline = time.monotonic() + 120
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"processes of the killed group {group} still run after 120 s"
        time.sleep(0.05)
    recover_dvc_rwlock(repo, on_line=print)


def kill_mid_run(repo: Path, stage: str, seconds: float) -> float:
    """Run ``stage`` and SIGKILL it (DVC and the stage) ``seconds`` in, while the stage is still at work: a kill that
    came after the stage had begun to move its outputs into place (a busy machine can run it much faster than the
    timed clean run did, or DVC's own bookkeeping after the stage can take that long) tests nothing mid-run, so that
    run counts as a finished one and the kill is tried again, earlier. Returns the time of the kill that counted."""
    log = repo.parent / "replaced.log"
    outs = outputs(repo)
    for _ in range(6):
        log.unlink(missing_ok=True)
        before = snapshot(repo)
        kill_after(repro(repo, stage, {"TADA_LOG_REPLACE": str(log)}), seconds, repo)
        moved = [Path(line) for line in log.read_text().splitlines()] if log.exists() else []
        if not any(path == out or path.is_relative_to(out) for path in moved for out in outs):
            assert snapshot(repo) == before, f"{stage} killed after {seconds:.1f} s changed an output"
            return seconds
        seconds /= 2
    raise AssertionError(f"{stage} reached its outputs before every kill, the last {seconds * 2:.1f} s in")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("faults") / "repo", TINY)
    sh(repo, "dvc", "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "the last good run")
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_stage_leaves_every_previous_output_intact(repo, stage):
    started = time.monotonic()
    clean = repro(repo, stage)
    out, _ = clean.communicate()
    assert clean.returncode == 0, out
    duration = time.monotonic() - started
    for point in (duration / 3, 2 * duration / 3):
        kill_mid_run(repo, stage, point)
    before = snapshot(repo)
    killed = repro(repo, stage, {"TADA_KILL_AT_REPLACE": FIRST[stage]})
    killed.communicate()
    assert killed.returncode != 0 and snapshot(repo) == before, f"{stage} killed at its first move changed outputs"
    if stage in SECOND:
        killed = repro(repo, stage, {"TADA_KILL_AT_REPLACE": SECOND[stage]})
        killed.communicate()
        assert killed.returncode != 0 and all(out.exists() for out in outputs(repo)), f"{stage}: an output is gone"
    assert_readable(repo)


def break_fetch(repo: Path) -> None:
    set_params(repo, {"data": {"name": "folder", "folder": {"source": "user_data/nowhere", "target": "user_data"}}})


def break_validate(repo: Path) -> None:
    set_params(repo, {"validate": {"min_rows": 10_000_000}})


def break_train(repo: Path) -> None:
    set_params(repo, {"train": {"nproc": 2, "batch_size": 15}})


def break_evaluate(repo: Path) -> None:
    model = repo / "models/model.pt"
    model.write_bytes(model.read_bytes()[:1000])  # truncated: evaluate cannot read it


def break_export(repo: Path) -> None:
    set_params(repo, {"export": {"parity_tolerance": 1e-30}})  # no export passes this parity check


def break_report(repo: Path) -> None:
    (repo / "reports/metrics.json").write_text('{"target_accuracy": ')  # evaluate's output, cut short


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_failing_stage_leaves_every_previous_output_intact(repo, stage):
    params, model = (repo / "params.yaml").read_bytes(), (repo / "models/model.pt").read_bytes()
    metrics = (repo / "reports/metrics.json").read_bytes()
    before = snapshot(repo)
    globals()[f"break_{stage}"](repo)
    try:
        failed = sh(repo, "dvc", "repro", "--single-item", stage, check=False)
        assert failed.returncode != 0, failed.stdout
        assert f"failed to reproduce '{stage}'" in failed.stderr and "Unable to read RWLock" not in failed.stderr, \
            failed.stderr
        after = snapshot(repo)
        broken = {"evaluate": "models/model.pt", "report": "reports/metrics.json"}.get(stage)
        if broken:  # the input broken on purpose is another stage's output; the stage's own stay whole
            after.pop(broken), before.pop(broken)
        assert after == before, f"a failing {stage} changed an output"
    finally:
        (repo / "params.yaml").write_bytes(params)
        (repo / "models/model.pt").write_bytes(model)
        (repo / "reports/metrics.json").write_bytes(metrics)
    assert_readable(repo)


@pytest.mark.slow
def test_the_next_run_cleans_up_and_git_sees_only_intended_outputs(repo):
    """After all the kills and failures above (run first: this module's tests run in order), the next successful run
    of every stage."""
    assert temporaries(repo)  # the kills left some
    sh(repo, "dvc", "repro", "--force")
    assert temporaries(repo) == []
    changed = [line[3:] for line in sh(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout
               .splitlines()]
    assert all(path == "dvc.lock" or path.startswith("reports/") for path in changed), changed
    status = sh(repo, "dvc", "status").stdout
    assert "up to date" in status, status
    assert_readable(repo)
