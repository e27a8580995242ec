"""Resumable training: a run killed with SIGKILL and started again ends bit-identical to an uninterrupted run; a kill
while a checkpoint or the ONNX model is being written leaves the previous file intact."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tada.checkpoint import CheckpointStore, training_fingerprint
from tada.config import Config
from tada.train import train

TINY = {
    "data.source_train_per_class": 12, "data.source_test_per_class": 4, "model.bottleneck_dim": 32,
    "model.discriminator_hidden": 32, "model.region_discriminator_hidden": 16, "train.batch_size": 16,
    "train.log_interval": 4, "train.num_threads": 1,
}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


class Interrupt(Exception):
    pass


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path, tiny_task):
    config = Config().replace({**TINY, "train.iterations": 30, "train.eval_interval": 10,
                               "train.checkpoint_interval": 6, "train.checkpoint_dir": str(tmp_path / "ckpt")})
    reference_rows = []
    reference = train(config.replace({"train.checkpoint_interval": 0}), tiny_task, log=reference_rows.append)

    seen = []

    def crash_at_step_20(row):
        seen.append(row)
        if row.step == 20 and row.kind == "train":
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tiny_task, log=crash_at_step_20)
    store = CheckpointStore(tmp_path / "ckpt", training_fingerprint(config, tiny_task, 1))
    assert [p.name for p in store._steps()] == ["step_00000012.pt", "step_00000018.pt"]  # the two latest

    replayed = []
    resumed = train(config, tiny_task, log=replayed.append)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
    assert resumed.history == reference.history and resumed.evaluations == reference.evaluations
    assert replayed == reference_rows  # the rows before the crash are replayed, then the rest follow
    assert seen == reference_rows[:len(seen)]
    assert not store.dir.exists()  # finished: its checkpoints are removed


def test_changed_params_do_not_resume_from_another_runs_checkpoint(tmp_path, tiny_task):
    config = Config().replace({**TINY, "train.iterations": 12, "train.eval_interval": 12,
                               "train.checkpoint_interval": 4, "train.checkpoint_dir": str(tmp_path)})
    other = config.replace({"optim.lr": 0.02})
    assert training_fingerprint(config, tiny_task, 1) != training_fingerprint(other, tiny_task, 1)
    assert training_fingerprint(config, tiny_task, 1) == training_fingerprint(
        config.replace({"train.checkpoint_interval": 3, "train.checkpoint_dir": "elsewhere"}), tiny_task, 1)


def write_params(path: Path, overrides: dict) -> None:
    """A params file for ``tada train`` whose data is laid out and decoded under the test's own directory."""
    cache = {"data.cache_dir": str(path.parent / "datasets"), "data.decoded_cache": str(path.parent / "decoded")}
    params = Config().replace({**TINY, **cache, **overrides}).to_dict()
    path.write_text(yaml.safe_dump(params))


def kill_at_step_100_then_resume(tmp_path: Path, command: list[str], common: dict,
                                 kill: Callable[[subprocess.Popen], None]) -> None:
    """Run ``command`` with ``common`` uninterrupted (``ref``), then with checkpoints every 50 steps, ``kill`` it once
    the step-100 checkpoint exists and run it again (``run``): the second run resumes and ends bit-identical to
    ``ref``."""
    write_params(tmp_path / "reference.yaml", {**common, "train.checkpoint_interval": 0})
    write_params(tmp_path / "killed.yaml", {**common, "train.checkpoint_interval": 50,
                                            "train.checkpoint_dir": str(tmp_path / "ckpt")})
    started = time.monotonic()
    subprocess.run([*command, "--params", str(tmp_path / "reference.yaml"), "--model", str(tmp_path / "ref.pt"),
                    "--metrics", str(tmp_path / "ref.json")], check=True, capture_output=True)
    reference_seconds = time.monotonic() - started  # the whole run: the killed one must reach step 100 well before

    args = [*command, "--params", str(tmp_path / "killed.yaml"), "--model", str(tmp_path / "run.pt"),
            "--metrics", str(tmp_path / "run.json")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 3 * reference_seconds + 60
    while not list((tmp_path / "ckpt").glob("*/step_00000100.pt")):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    kill(proc)
    proc.wait()
    assert not (tmp_path / "run.pt").exists()  # killed before the end

    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from" in again.stdout + again.stderr
    ref, run = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("ref", "run"))
    assert_same_weights(run["model"], ref["model"])
    ref_metrics, run_metrics = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ref", "run"))
    assert run_metrics["final"] == ref_metrics["final"] and run_metrics["evaluations"] == ref_metrics["evaluations"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    kill_at_step_100_then_resume(tmp_path, [sys.executable, "-m", "tada.cli", "train", "--quiet"],
                                 {"train.iterations": 400, "train.eval_interval": 100, "train.log_interval": 20},
                                 lambda proc: os.kill(proc.pid, signal.SIGKILL))


def running_under(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (a run's own temporary directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return pids


@pytest.mark.slow
def test_torchrun_sigkill_then_resume_is_bit_identical(tmp_path):
    """Two processes (gloo), each rank with its own dropout masks, crops and flips: the checkpoint holds every rank's
    random state, so a torchrun launch killed mid-run and started again ends as the uninterrupted launch does."""

    def kill_launcher_and_ranks(proc: subprocess.Popen) -> None:
        for pid in running_under(tmp_path / "killed.yaml"):  # the launcher and both ranks, at once
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        assert not running_under(tmp_path / "killed.yaml")

    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tada.cli",
              "train", "--quiet"]
    kill_at_step_100_then_resume(tmp_path, launch,
                                 {"train.iterations": 300, "train.eval_interval": 100, "train.log_interval": 20,
                                  "train.augment": True, "data.load_size": 32}, kill_launcher_and_ranks)


KILL_WHILE_WRITING = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tada.io import atomic_path

    target = Path(sys.argv[1])
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half of the new ")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # the power goes out mid-write
""")


@pytest.mark.parametrize("name", ["model.onnx", "step_00000100.pt"])
def test_kill_while_writing_leaves_the_previous_file(tmp_path, name):
    target = tmp_path / name
    target.write_bytes(b"the previous, complete file")
    result = subprocess.run([sys.executable, "-c", KILL_WHILE_WRITING, str(target)], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"the previous, complete file"


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(tmp_path):
    """DDP over gloo: each rank takes half of every global batch. BatchNorm statistics are per rank on the CPU
    (SyncBatchNorm is GPU-only; with 16 + 16 images per rank they differ from the 32 + 32 of one process), so the
    runs are not bit-identical. Stated tolerance: the final source and target accuracies within 5 points. Measured:
    target 46.4 % against 44.9 % (1.5 points), source 71 against 70, now that each rank draws its own dropout
    masks; while every rank drew rank 0's masks (the same seed everywhere) the target was 6.3 points apart."""
    write_params(tmp_path / "p.yaml", {"data.source_train_per_class": 30, "data.source_test_per_class": 10,
                                       "train.batch_size": 32, "train.iterations": 300, "train.eval_interval": 100,
                                       "train.log_interval": 50, "train.checkpoint_interval": 0,
                                       # the whole anneal within the run (the paper's over 10,000 steps is 0.001 and
                                       # 1000): a last iterate still near the full learning rate is too noisy
                                       "optim.lr_gamma": 10 / 300, "method.grl_warmup": 30.0})
    cli = ["-m", "tada.cli", "train", "--quiet", "--params", str(tmp_path / "p.yaml")]
    subprocess.run([sys.executable, *cli, "--model", str(tmp_path / "one.pt"), "--metrics",
                    str(tmp_path / "one.json")], check=True, capture_output=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cli,
                          "--model", str(tmp_path / "two.pt"), "--metrics", str(tmp_path / "two.json")],
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stderr.count("tada train:") == 1  # only rank 0 reports (and writes)
    one, dist = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for a, b in zip(one["final"].items(), dist["final"].items(), strict=True):
        assert a[0] == b[0]
    assert abs(one["final"]["target_accuracy"] - dist["final"]["target_accuracy"]) <= 0.05
    assert abs(one["final"]["source_accuracy"] - dist["final"]["source_accuracy"]) <= 0.05
    assert [e["step"] for e in one["evaluations"]] == [e["step"] for e in dist["evaluations"]]
    # the ranks shared the evaluations, each image on one rank: the metrics are those of the model written (rank 0's
    # weights and BatchNorm statistics), as one process evaluating it finds them
    from tada.checkpoint import load_checkpoint
    from tada.data.default_task import build_default_task
    from tada.evaluate import HeldOut, evaluate_heldout

    model, config, _ = load_checkpoint(tmp_path / "two.pt")
    again = evaluate_heldout(model, HeldOut.from_task(build_default_task(config.data), config.validators.max_images),
                             config.train.eval_batch_size, config.validators)
    assert again.keys() == dist["final"].keys() - {"step"}
    for name, value in again.items():
        assert dist["final"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_resume_keeps_the_selected_snapshot(tmp_path, tiny_task):
    config = Config().replace({**TINY, "train.iterations": 30, "train.eval_interval": 6, "train.select": "snd",
                               "train.checkpoint_interval": 12, "train.checkpoint_dir": str(tmp_path / "ckpt")})
    reference = train(config.replace({"train.checkpoint_interval": 0}), tiny_task)

    def crash_at_step_28(row):  # after the step-24 checkpoint, which holds the best snapshot of steps 6..24
        if row.step == 28 and row.kind == "train":
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tiny_task, log=crash_at_step_28)
    resumed = train(config, tiny_task)
    assert resumed.selection == reference.selection and resumed.final == reference.final
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
