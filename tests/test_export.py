import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tada.export as export
from tada.export import ExportError, export_verified, metadata, read_metadata
from tada.methods import build_model


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    net = build_model(tiny_config, num_classes=10, in_channels=1)
    net.train()(torch.randn(16, 1, 28, 28))  # move the BatchNorm statistics away from their initial values
    return net.eval()


def test_exported_model_matches_pytorch_at_batch_1_and_32(model, tiny_config, tmp_path):
    images = torch.rand(32, 1, 28, 28) * 2 - 1
    path = tmp_path / "model.onnx"
    report = export_verified(model, images, path, 18, metadata(tiny_config, tuple("0123456789"), 1), (1, 32), 1e-4)
    assert report["passed"] and [c["batch_size"] for c in report["checks"]] == [1, 32]
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_identical"] for c in report["checks"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one file, no external data

    proto = onnx.load(str(path))
    initialisers = " ".join(i.name for i in proto.graph.initializer)
    assert "region_discriminators" in initialisers  # the local attention is part of inference
    assert "domain_discriminator" not in initialisers  # the global discriminator is training-only
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    meta = read_metadata(path)
    assert json.loads(meta["tada.classes"]) == list("0123456789")
    assert json.loads(meta["tada.input_size"]) == [1, 28, 28] and meta["tada.method"] == "tada"
    assert meta["tada.params_hash"] == tiny_config.digest()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": images[:5].numpy()})[0]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, model(images[:5]).logits.detach().numpy(), atol=1e-4)


def test_failed_parity_leaves_the_previous_model_untouched(model, tiny_config, tmp_path, monkeypatch):
    images = torch.rand(32, 1, 28, 28)
    path = tmp_path / "model.onnx"
    meta = metadata(tiny_config, tuple("0123456789"), 1)
    export_verified(model, images, path, 18, meta, (1,), 1e-4)
    before = path.read_bytes()

    honest = export.check_parity

    def drifted(path_, model_, images_, batch_sizes, tolerance):
        with torch.no_grad():  # the PyTorch model no longer matches what was just exported
            model_.classifier.bias.add_(0.5)
        return honest(path_, model_, images_, batch_sizes, tolerance)

    monkeypatch.setattr(export, "check_parity", drifted)
    with pytest.raises(ExportError, match="parity check failed") as excinfo:
        export_verified(model, images, path, 18, meta, (1, 32), 1e-4)
    assert excinfo.value.report["passed"] is False
    assert excinfo.value.report["checks"][0]["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_parity_needs_enough_images(model, tiny_config, tmp_path):
    with pytest.raises(ExportError, match="needs 32 images"):
        export_verified(model, torch.rand(4, 1, 28, 28), tmp_path / "m.onnx", 18,
                        metadata(tiny_config, tuple("0123456789"), 1), (1, 32), 1e-4)
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_normalisation_is_the_training_preprocessing(tiny_config):
    from tada.data.task import to_tensor

    pixels = np.array([[[0, 64, 128, 255]]], dtype=np.uint8)
    norm = json.loads(metadata(tiny_config, ("a", "b"), 1)["tada.normalisation"])
    np.testing.assert_allclose(pixels * norm["scale"] + norm["offset"], to_tensor(pixels)[0].numpy(), atol=1e-6)
