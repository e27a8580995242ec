import pytest
import torch

from tada.checkpoint import load_checkpoint, save_checkpoint
from tada.io import atomic_path, write_json_atomic
from tada.methods import build_model


def test_checkpoint_round_trip_gives_the_same_logits(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config, num_classes=10, in_channels=1).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, tiny_config, tuple("0123456789"), 1, step=7, metrics={"target_accuracy": 0.5})
    loaded, config, payload = load_checkpoint(path)
    assert config == tiny_config and payload["step"] == 7 and payload["classes"] == list("0123456789")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(RuntimeError, match="killed"), atomic_path(path) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n  "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
