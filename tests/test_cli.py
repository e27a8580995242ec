import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np

from tada.checkpoint import load_checkpoint
from tada.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.source_train_per_class=6", "data.source_test_per_class=2", "model.bottleneck_dim=16",
    "model.discriminator_hidden=16", "model.region_discriminator_hidden=8", "train.iterations=4",
    "train.batch_size=8", "train.eval_interval=2", "train.log_interval=2", "train.num_threads=1",
]


def train_args(tmp_path: Path, *pairs: str) -> list[str]:
    """``tada train`` with tiny params, laying data out and decoding it under ``tmp_path``."""
    args = ["train", "--params", str(ROOT / "params.yaml"), "--model", str(tmp_path / "m" / "model.pt"),
            "--metrics", str(tmp_path / "r" / "metrics.json")]
    for pair in [*TINY, f"data.cache_dir={tmp_path / 'datasets'}", f"data.decoded_cache={tmp_path / 'decoded'}",
                 *pairs]:
        args += ["--set", pair]
    return args


def test_tada_train_writes_a_loadable_model_and_metrics(tmp_path, capsys):
    model, metrics = tmp_path / "m" / "model.pt", tmp_path / "r" / "metrics.json"
    assert main(train_args(tmp_path, "method.name=dann")) == 0
    report = json.loads(metrics.read_text())
    assert report["method"] == "dann" and report["config"]["train"]["iterations"] == 4
    assert report["final"]["step"] == 4 and 0 <= report["final"]["target_accuracy"] <= 1
    _, config, payload = load_checkpoint(model)
    assert config.method.name == "dann" and payload["metrics"] == report["final"]
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 4] and {r["kind"] for r in rows} == {"train",
                                                                                                     "eval"}
    # the data was laid out once, with the fetch stage's code; a second run reuses it
    [laid_out] = [p for p in (tmp_path / "datasets" / "tasks").iterdir() if p.is_dir()]
    assert (laid_out / "manifest.csv").is_file()
    assert main(train_args(tmp_path, "method.name=dann")) == 0
    assert "laying out" not in capsys.readouterr().err


def test_tada_train_trains_on_a_folder_dataset(tmp_path, capsys):
    """Every data.name, not only the generated task: here the user's folders, with an unlabelled target."""
    from PIL import Image

    for label, shade in (("cat", 30), ("dog", 220)):
        for i in range(8):
            path = tmp_path / "user" / "source" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((28, 28), shade + i, np.uint8)).save(path)
    (tmp_path / "user" / "target").mkdir()
    for i in range(10):  # at least train.batch_size (8): each step takes 8 target images
        Image.fromarray(np.full((28, 28), 25 * i, np.uint8)).save(tmp_path / "user" / "target" / f"{i}.png")
    args = train_args(tmp_path, "data.name=folder", f"data.folder.source={tmp_path / 'user' / 'source'}",
                      f"data.folder.target={tmp_path / 'user' / 'target'}")
    assert main(args) == 0
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "target_accuracy" not in report["final"] and 0 <= report["final"]["estimated_target_accuracy"] <= 1
    _, config, payload = load_checkpoint(tmp_path / "m" / "model.pt")
    assert config.data.name == "folder" and payload["classes"] == ["cat", "dog"]
    assert "tada train: estimated target accuracy" in capsys.readouterr().err


def test_a_folder_dataset_without_folders_is_a_clear_error(tmp_path, capsys):
    assert main(train_args(tmp_path, "data.name=folder")) == 2
    assert "data.folder.source must be set" in capsys.readouterr().err


def test_bad_override_is_reported_with_its_key(tmp_path, capsys):
    code = main(["train", "--params", str(ROOT / "params.yaml"), "--set", "train.iterations=-5",
                 "--model", str(tmp_path / "m.pt"), "--metrics", str(tmp_path / "m.json")])
    assert code == 2
    assert "train.iterations must be > 0, got -5" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_console_script_lists_methods():
    out = subprocess.run([sys.executable, "-m", "tada.cli", "methods"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].startswith("source_only")
    assert "local_attention, global_adversarial, entropy, entropy_attention" in out.stdout


def in_terminal(args: list[str], timeout: float = 300) -> str:
    """``args`` run with a pseudo-terminal (120 columns) as stdin, stdout and stderr; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    output, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert process.wait(timeout=30) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


def test_tada_train_shows_a_progress_bar_on_a_terminal_and_json_lines_in_a_pipe(tmp_path):
    command = [sys.executable, "-m", "tada.cli", *train_args(tmp_path, "train.iterations=6")]
    screen = in_terminal(command)
    assert "train: 100%|" in screen and "6/6 [" in screen, screen
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step)", screen), screen  # elapsed<left, rate
    assert all(f"{term}=" in screen for term in ("loss", "L_y", "L_l", "L_g", "L_h")), screen  # the latest losses
    assert "step 6: target accuracy" in screen, screen  # each evaluation, above the bar
    assert '{"kind"' not in screen, screen
    piped = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert piped.returncode == 0, piped.stderr
    rows = [json.loads(line) for line in piped.stdout.splitlines()]  # every line is a JSON row
    assert [(r["kind"], r["step"]) for r in rows] == [("train", 2), ("eval", 2), ("train", 4), ("eval", 4),
                                                      ("train", 6), ("eval", 6)]
    assert "%|" not in piped.stderr and "step/s" not in piped.stderr, piped.stderr
