"""The DVC side of the flow: stages through real `dvc repro`, timeouts, overrides through DVC's -S code."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from repo_copy import ROOT, env

from tada.config import ConfigError
from tada.orchestrate import StageFailed, commit_stage, overridden_params, recover_dvc_rwlock, repro_stage, run_command


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A git + DVC repository whose `fetch` stage runs the script in stage.py (the test writes it)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          fetch:
            cmd: python stage.py
            deps: [stage.py]
            params: [train.seed]
            outs: [out.txt]
        """))
    (repo / "stage.py").write_text("open('out.txt', 'w').write('ok')\nprint('fetched')\n")
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=repo, env=env(), check=True, capture_output=True)
    return repo


def test_stage_runs_through_dvc_then_is_a_no_op(dvc_repo):
    lines = []
    first = repro_stage(dvc_repo, "fetch", timeout=120, on_line=lines.append)
    assert first.ran and "fetched" in lines and (dvc_repo / "out.txt").read_text() == "ok"
    assert (dvc_repo / "dvc.lock").is_file()
    again = repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None)
    assert not again.ran and "didn't change" in again.output


def test_an_output_rewritten_after_the_stage_is_committed_and_the_stage_stays_up_to_date(dvc_repo):
    """As the flow does with the run report after its gate."""
    repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None)
    (dvc_repo / "out.txt").write_text("ok, and the gate's decision")
    assert repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None).ran  # without commit: re-run
    (dvc_repo / "out.txt").write_text("ok, and the gate's decision")
    commit_stage(dvc_repo, "fetch", on_line=lambda line: None)
    assert not repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None).ran
    assert (dvc_repo / "out.txt").read_text() == "ok, and the gate's decision"
    with pytest.raises(StageFailed, match="commit nowhere"):
        commit_stage(dvc_repo, "nowhere", on_line=lambda line: None)


def test_a_lock_table_cut_short_by_a_killed_dvc_is_removed_before_the_next_stage(dvc_repo):
    """DVC rewrites .dvc/tmp/rwlock in place; killed mid-write it leaves it cut short, and plain DVC then fails."""
    repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None)
    rwlock = dvc_repo / ".dvc" / "tmp" / "rwlock"
    intact = rwlock.read_text()
    assert not recover_dvc_rwlock(dvc_repo, on_line=lambda line: None) and rwlock.read_text() == intact
    rwlock.write_text('{"write": {"out.txt": {"pid": 4')  # the writer died here
    plain = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "fetch"], cwd=dvc_repo, env=env(),
                           capture_output=True, text=True)
    assert plain.returncode != 0 and "Unable to read RWLock-file" in plain.stdout + plain.stderr

    # while a DVC command works in the repository the table may be its: left alone
    fake = dvc_repo.parent / "bin" / "dvc"  # run as DVC's console script runs: python .../bin/dvc
    fake.parent.mkdir()
    fake.write_text("import pathlib, sys, time\npathlib.Path(sys.argv[1]).touch()\ntime.sleep(60)\n")
    busy = subprocess.Popen([sys.executable, str(fake), str(dvc_repo.parent / "started")], cwd=dvc_repo)
    try:
        while not (dvc_repo.parent / "started").exists():
            assert busy.poll() is None
            time.sleep(0.05)
        lines = []
        assert not recover_dvc_rwlock(dvc_repo, on_line=lines.append) and rwlock.exists()
        assert f"pids [{busy.pid}]" in lines[0]
    finally:
        busy.kill()
        busy.wait()

    lines = []
    run = repro_stage(dvc_repo, "fetch", timeout=120, on_line=lines.append)  # the next run of the flow
    assert run.ran is False and any("cut short by a DVC process killed" in line for line in lines)
    assert (dvc_repo / "out.txt").read_text() == "ok"
    json_ok = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "fetch"], cwd=dvc_repo, env=env(),
                             capture_output=True, text=True)
    assert json_ok.returncode == 0, json_ok.stdout + json_ok.stderr  # and DVC's own table works again


def test_failed_stage_reports_its_own_exit_code_and_words(dvc_repo):
    (dvc_repo / "stage.py").write_text("import sys\nprint('fetch: data.name: no dataset named x')\nsys.exit(2)\n")
    with pytest.raises(StageFailed) as failed:
        repro_stage(dvc_repo, "fetch", timeout=120, on_line=lambda line: None)
    assert failed.value.returncode == 2 and not failed.value.timed_out  # the stage's code, not DVC's 255
    assert "DVC stage 'fetch' failed (exit 2)" in str(failed.value)
    assert "fetch: data.name: no dataset named x" in str(failed.value)


def test_stage_past_its_timeout_is_killed(dvc_repo):
    (dvc_repo / "stage.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    start = time.monotonic()
    with pytest.raises(StageFailed, match="timed out and was killed") as failed:
        repro_stage(dvc_repo, "fetch", timeout=8, on_line=lambda line: None)
    assert failed.value.timed_out and time.monotonic() - start < 60
    assert not (dvc_repo / "out.txt").exists()


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(300)")
    lines = []
    returncode, tail = run_command([sys.executable, "-c", script], tmp_path, timeout=5, on_line=lines.append)
    assert returncode is None and lines == ["started"] and tail == ["started"]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":  # killed, waiting for init to reap it
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"grandchild {child} survived the timeout")


def test_overrides_are_checked_applied_by_dvc_and_restored(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_bytes()
    overrides = {"train.iterations": 7, "optim.lr": 1e-4, "method.name": "dann", "model.weights_path": "w.pt",
                 "export.parity_batch_sizes": [2, 4], "train.deterministic": False}
    with overridden_params(tmp_path, overrides) as config:
        assert (config.train.iterations, config.optim.lr, config.method.name) == (7, 1e-4, "dann")
        assert config.model.weights_path == "w.pt" and config.export.parity_batch_sizes == (2, 4)
        assert not config.train.deterministic
        assert "iterations: 7" in params.read_text()  # the file itself, for DVC to see
    assert params.read_bytes() == original


def test_overrides_are_restored_after_a_failure(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_bytes()
    with pytest.raises(RuntimeError, match="stage blew up"), overridden_params(tmp_path, {"train.seed": 5}):
        raise RuntimeError("stage blew up")
    assert params.read_bytes() == original


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.iteration": 5}, "unknown key train.iteration"),
    ({"train.iterations": -5}, "train.iterations must be > 0, got -5"),
    ({"train": {"seed": 1}}, "give each leaf key on its own"),
])
def test_bad_overrides_never_touch_the_file(tmp_path, overrides, message):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_bytes()
    with pytest.raises(ConfigError, match=message), overridden_params(tmp_path, overrides):
        pass
    assert params.read_bytes() == original
