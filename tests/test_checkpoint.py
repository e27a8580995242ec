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


def test_a_warm_start_loads_the_weights_and_states_its_lineage(tmp_path, tiny_config, tiny_task):
    import json

    from tada.checkpoint import warm_start
    from tada.train import train

    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "release.json").write_text(json.dumps({"release": "r1"}))
    source = build_model(tiny_config, num_classes=10, in_channels=1)
    save_checkpoint(release / "model.pt", source, tiny_config, tiny_task.classes, 1, step=7)
    (tmp_path / "production").symlink_to(release)
    target = build_model(tiny_config, num_classes=10, in_channels=1)
    lineage = warm_start(target, tmp_path / "production" / "model.pt", tiny_task.classes)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                   strict=True))
    assert lineage["release"] == "r1" and lineage["step"] == 7 and len(lineage["sha256"]) == 64
    assert lineage["resolved"] == str((release / "model.pt").resolve())
    with pytest.raises(ValueError, match="same classes"):
        warm_start(target, release / "model.pt", tuple("abcdefghij"))
    wider = build_model(tiny_config.replace({"model.bottleneck_dim": 64}), num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="another architecture"):
        warm_start(wider, release / "model.pt", tiny_task.classes)
    cold = train(tiny_config, tiny_task)
    warm = train(tiny_config.replace({"train.init_from": str(release / "model.pt")}), tiny_task)
    assert warm.init_from["sha256"] == lineage["sha256"] and cold.init_from is None
    assert warm.history[0]["source_ce"] != cold.history[0]["source_ce"]  # it started elsewhere
