import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tada.export as export
from tada.export import ExportError, export_verified, model_info
from tada.methods import build_model


def read_metadata(path) -> dict[str, str]:
    """The ONNX file's metadata as onnx reads it (independently of the exporter and the serving side)."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    net = build_model(tiny_config, num_classes=10, in_channels=1)
    net.train()(torch.randn(16, 1, 28, 28))  # move the BatchNorm statistics away from their initial values
    return net.eval()


def test_exported_model_matches_pytorch_at_batch_1_and_32(model, tiny_config, tmp_path):
    images = torch.rand(32, 1, 28, 28) * 2 - 1
    path = tmp_path / "model.onnx"
    report = export_verified(model, images, path, 18, model_info(tiny_config, tuple("0123456789"), 1), (1, 32), 1e-4)
    assert report["passed"] and [c["batch_size"] for c in report["checks"]] == [1, 32]
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_identical"] for c in report["checks"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one file, no external data

    proto = onnx.load(str(path))
    initialisers = " ".join(i.name for i in proto.graph.initializer)
    assert "region_discriminators" in initialisers  # the local attention is part of inference
    assert "domain_discriminator" in initialisers  # its probability is an output, for the shift score
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    meta = read_metadata(path)
    assert json.loads(meta["tada.classes"]) == list("0123456789")
    assert json.loads(meta["tada.input_size"]) == [1, 28, 28] and meta["tada.method"] == "tada"
    assert meta["tada.params_hash"] == tiny_config.digest()
    names = ["logits", "probabilities", "entropy", "domain_probability"]
    assert json.loads(meta["tada.outputs"]) == names == [o.name for o in proto.graph.output]
    assert report["outputs"] == names and set(report["checks"][1]["outputs"]) == set(names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probabilities, entropy, domain = session.run(None, {"image": images[:5].numpy()})
    assert logits.shape == probabilities.shape == (5, 10) and entropy.shape == domain.shape == (5,)
    with torch.no_grad():
        out = model(images[:5])
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4)
    p = torch.softmax(out.logits, 1)
    np.testing.assert_allclose(probabilities, p.numpy(), atol=1e-6)
    np.testing.assert_allclose(entropy, -(p * p.log()).sum(1).numpy(), atol=1e-5)  # natural log
    np.testing.assert_allclose(domain, torch.sigmoid(out.domain_logits).numpy(), atol=1e-6)


def test_failed_parity_leaves_the_previous_model_untouched(model, tiny_config, tmp_path, monkeypatch):
    images = torch.rand(32, 1, 28, 28)
    path = tmp_path / "model.onnx"
    meta = model_info(tiny_config, tuple("0123456789"), 1)
    export_verified(model, images, path, 18, meta, (1,), 1e-4)
    before = path.read_bytes()

    honest = export.check_parity

    def drifted(path_, graph_, images_, batch_sizes, tolerance):
        with torch.no_grad():  # the PyTorch model no longer matches what was just exported
            graph_.model.classifier.bias.add_(0.5)
        return honest(path_, graph_, images_, batch_sizes, tolerance)

    monkeypatch.setattr(export, "check_parity", drifted)
    with pytest.raises(ExportError, match="parity check failed") as excinfo:
        export_verified(model, images, path, 18, meta, (1, 32), 1e-4)
    assert excinfo.value.report["passed"] is False
    assert excinfo.value.report["checks"][0]["outputs"]["logits"] == pytest.approx(0.5, abs=1e-4)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_parity_needs_enough_images(model, tiny_config, tmp_path):
    with pytest.raises(ExportError, match="needs 32 images"):
        export_verified(model, torch.rand(4, 1, 28, 28), tmp_path / "m.onnx", 18,
                        model_info(tiny_config, tuple("0123456789"), 1), (1, 32), 1e-4)
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_normalisation_is_the_training_preprocessing(tiny_config):
    from tada.data.task import to_tensor

    pixels = np.array([[[0, 64, 128, 255]]], dtype=np.uint8)
    norm = json.loads(model_info(tiny_config, ("a", "b"), 1).to_metadata()["tada.normalisation"])
    np.testing.assert_allclose(pixels * norm["scale"] + norm["offset"], to_tensor(pixels)[0].numpy(), atol=1e-6)


def test_source_only_has_no_domain_probability(tiny_config, tmp_path):
    config = tiny_config.replace({"method.name": "source_only"})
    net = build_model(config, num_classes=10, in_channels=1).eval()
    report = export_verified(net, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx", 18,
                             model_info(config, tuple("0123456789"), 1), (1, 2), 1e-4)
    assert report["outputs"] == ["logits", "probabilities", "entropy"]
    assert "tada.shift_reference" not in read_metadata(tmp_path / "m.onnx")


def test_shift_reference_is_measured_on_the_calibration_images(model, tiny_config, tmp_path):
    from tada.export import InferenceGraph
    from tada.serving.shift import ledoit_wolf, shift_scores

    torch.manual_seed(1)
    fit, calibration = torch.rand(64, 1, 28, 28) * 2 - 1, torch.rand(40, 1, 28, 28) * 2 - 1
    path = tmp_path / "model.onnx"
    report = export_verified(model, calibration, path, 18, model_info(tiny_config, tuple("0123456789"), 1), (1, 32),
                             1e-4, fit_images=fit, calibration_images=calibration)
    assert report["outputs"][-2:] == ["domain_probability", "feature_distance"]
    assert all(c["outputs"]["feature_distance"] <= 1e-4 for c in report["checks"])  # parity on every output
    reference = json.loads(read_metadata(path)["tada.shift_reference"])
    assert reference["signals"] == ["domain_probability", "entropy", "feature_distance"]
    assert reference["calibration_images"] == 40

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip(report["outputs"], session.run(None, {"image": calibration.numpy()}), strict=True))
    signals = np.stack([outputs[s] for s in reference["signals"]], axis=1).astype(np.float64)
    np.testing.assert_allclose(reference["mean"], signals.mean(0), rtol=1e-4)
    np.testing.assert_allclose(reference["std"], signals.std(0), rtol=1e-3)
    scores = shift_scores(signals, reference)
    assert np.mean(scores**2) == pytest.approx(1.0, abs=1e-3)  # standardised on these very images
    assert reference["threshold"] == pytest.approx(np.quantile(scores, 0.99), rel=1e-3)

    # feature_distance = (f - mu)^T Sigma^-1 (f - mu) / dim, mu and Sigma (Ledoit-Wolf) of the fit images' features
    graph = InferenceGraph(model, export.fit_feature_reference(model, fit)).eval()
    with torch.no_grad():
        features = model(fit).features.double().numpy()
    mean, covariance = ledoit_wolf(features)
    d = features - mean
    expected = np.einsum("ni,ij,nj->n", d, np.linalg.inv(covariance), d) / features.shape[1]
    np.testing.assert_allclose(graph.outputs(fit)["feature_distance"].numpy(), expected, rtol=1e-3, atol=1e-4)


def test_feature_distance_needs_a_calibration_set(model, tiny_config, tmp_path):
    with pytest.raises(ValueError, match="needs calibration_images"):
        export_verified(model, torch.rand(2, 1, 28, 28), tmp_path / "m.onnx", 18,
                        model_info(tiny_config, tuple("0123456789"), 1), (1,), 1e-4,
                        fit_images=torch.rand(8, 1, 28, 28))
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_records_the_evaluation_resize_and_crop(tiny_config):
    assert json.loads(model_info(tiny_config, ("a", "b"), 1).to_metadata()["tada.load_size"]) == 28  # no crop
    cropped = tiny_config.replace({"data.load_size": 32})
    meta = model_info(cropped, ("a", "b"), 1).to_metadata()
    assert json.loads(meta["tada.load_size"]) == 32 and json.loads(meta["tada.input_size"]) == [1, 28, 28]


EXPORT_FROM_CHECKOUT = """
import sys, torch
from tada.checkpoint import load_checkpoint
from tada.export import export_verified, model_info
model, config, payload = load_checkpoint(sys.argv[1])
images = torch.load(sys.argv[2])
export_verified(model, images[:32], sys.argv[3], 18, model_info(config, tuple(payload["classes"]), 1,
                payload["metrics"]), (1, 32), 1e-4, fit_images=images, calibration_images=images)
"""


@pytest.mark.slow
def test_the_same_model_exported_from_two_checkouts_is_the_same_file(model, tiny_config, tmp_path):
    """The exporter records each node's Python stack (absolute paths of the checkout); it is stripped."""
    import shutil
    import subprocess
    import sys

    from tada.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "model.pt", model, tiny_config, tuple("0123456789"), 1, step=1)
    torch.save(torch.rand(40, 1, 28, 28) * 2 - 1, tmp_path / "images.pt")
    root = Path(export.__file__).resolve().parents[1]
    outputs = []
    for name in ("checkout-a", "a-longer-checkout-name-b"):
        shutil.copytree(root / "tada", tmp_path / name / "tada", ignore=shutil.ignore_patterns("__pycache__"))
        out = tmp_path / f"{name}.onnx"
        subprocess.run([sys.executable, "-c", EXPORT_FROM_CHECKOUT, str(tmp_path / "model.pt"),
                        str(tmp_path / "images.pt"), str(out)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / name)}, cwd=tmp_path / name)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert b"checkout-a" not in outputs[0] and str(root).encode() not in outputs[0]


def randomise_batchnorm(net: torch.nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)


def test_inference_network_folds_the_discriminators_batchnorm_into_their_weights(model, tiny_config, tmp_path):
    randomise_batchnorm(model)
    folded = export.inference_network(model)
    kinds = {type(m).__name__ for m in (*folded.domain_discriminator.modules(),
                                        *folded.region_discriminators.modules())}
    assert "BatchNorm1d" not in kinds and folded.region_discriminators.norm == "none"
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.domain_discriminator.modules())  # a copy
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        a, b = model(x), folded(x)
    for field in ("logits", "features", "region_logits", "domain_logits"):
        torch.testing.assert_close(getattr(b, field), getattr(a, field), rtol=1e-5, atol=1e-5)
    path = tmp_path / "m.onnx"
    export_verified(model, x, path, 18, model_info(tiny_config, tuple("0123456789"), 1), (1, 8), 1e-4)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops


@pytest.fixture
def wide_model(tiny_config):
    torch.manual_seed(0)
    config = tiny_config.replace({"model.discriminator_hidden": 128})
    net = build_model(config, num_classes=10, in_channels=1)
    net.train()(torch.randn(16, 1, 28, 28))
    return config, net.eval()


def test_low_rank_monitor_is_exact_within_the_span_of_its_fit_images(wide_model):
    _, model = wide_model
    net = export.inference_network(model)
    fit = torch.rand(20, 1, 28, 28) * 2 - 1  # 20 images: their centred outputs span at most 19 directions
    with torch.no_grad():
        before = net(fit)
    report = export.low_rank_monitor(net, fit, fit, tolerance=1e-5)
    assert report["rank"] == 20 and report["max_abs_diff"] <= 1e-5 and report["hidden"] == 128
    down, up = net.domain_discriminator.net[2]
    assert down.weight.shape == (20, 128) and up.weight.shape == (128, 20)
    with torch.no_grad():
        after = net(fit)
    assert torch.equal(after.logits, before.logits) and torch.equal(after.features, before.features)
    torch.testing.assert_close(after.domain_logits, before.domain_logits, rtol=1e-4, atol=1e-4)


def test_low_rank_monitor_keeps_the_full_layer_when_no_rank_is_close_enough(wide_model):
    _, model = wide_model
    net = export.inference_network(model)
    full = net.domain_discriminator.net[2]
    torch.manual_seed(2)
    fit, check = torch.rand(200, 1, 28, 28) * 2 - 1, torch.randn(50, 1, 28, 28) * 3
    report = export.low_rank_monitor(net, fit, check, tolerance=1e-7)
    assert report["rank"] is None and set(report["tried"]) == {32}  # 64 would not be below hidden / 2
    assert net.domain_discriminator.net[2] is full
    assert export.low_rank_monitor(net, fit, check, tolerance=0.0) is None


def test_export_with_a_low_rank_monitor_checks_parity_on_what_it_exports(wide_model, tmp_path):
    config, model = wide_model
    torch.manual_seed(3)
    fit, calibration = torch.rand(20, 1, 28, 28) * 2 - 1, torch.rand(32, 1, 28, 28) * 2 - 1
    report = export_verified(model, calibration, tmp_path / "m.onnx", 18, model_info(config, tuple("0123456789"), 1),
                             (1, 32), 1e-4, fit_images=fit, calibration_images=calibration, monitor_tolerance=0.5)
    assert report["passed"] and report["monitor"]["rank"] == 20
    shapes = sorted(list(i.dims) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer
                    if "domain_discriminator" in i.name)
    assert [20, 128] in shapes and [128, 20] in shapes and [128, 128] not in shapes
