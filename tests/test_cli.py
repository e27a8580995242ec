import json
import subprocess
import sys
from pathlib import Path

from tada.checkpoint import load_checkpoint
from tada.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.source_train_per_class=6", "data.source_test_per_class=2", "model.bottleneck_dim=16",
    "model.discriminator_hidden=16", "model.region_discriminator_hidden=8", "train.iterations=4",
    "train.batch_size=8", "train.eval_interval=2", "train.log_interval=2", "train.num_threads=1",
]


def test_tada_train_writes_a_loadable_model_and_metrics(tmp_path, capsys):
    model, metrics = tmp_path / "m" / "model.pt", tmp_path / "r" / "metrics.json"
    args = ["train", "--params", str(ROOT / "params.yaml"), "--model", str(model), "--metrics", str(metrics)]
    for pair in TINY + ["method.name=dann"]:
        args += ["--set", pair]
    assert main(args) == 0
    report = json.loads(metrics.read_text())
    assert report["method"] == "dann" and report["config"]["train"]["iterations"] == 4
    assert report["final"]["step"] == 4 and 0 <= report["final"]["target_accuracy"] <= 1
    _, config, payload = load_checkpoint(model)
    assert config.method.name == "dann" and payload["metrics"] == report["final"]
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]


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
