import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from serving_model import noise_images, png, tiny_model

from tada.data.decoded import load_image
from tada.data.task import center_crop, to_tensor
from tada.serving import ModelError, Predictor
from tada.serving.images import CorruptImageError, ImageTooLargeError, NotAnImageError, decode, normalise, to_array


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.mark.parametrize(("mode", "size", "load_size", "shape", "source_mode"), [
    ("L", 28, 28, (28, 28), "L"),  # the default task, as fetched
    ("L", 28, 28, (48, 64), "RGB"),  # converted and resized
    ("RGB", 32, 32, (20, 30), "L"),
    ("RGB", 32, 32, (40, 40), "RGBA"),
    ("RGB", 32, 37, (50, 45), "RGB"),  # resized to the load size, then the central window (odd margin)
])
def test_preprocessing_is_bit_identical_to_training(tmp_path, mode, size, load_size, shape, source_mode):
    rng = np.random.default_rng(0)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[source_mode]
    image = Image.fromarray(rng.integers(0, 256, shape + channels, dtype=np.uint8), source_mode)
    path = tmp_path / "x.png"
    image.save(path)
    loaded = center_crop(load_image(path, mode, load_size)[None], size)  # tada.data.decoded.load_task's steps
    trained = to_tensor(np.array(loaded)).numpy()  # what training's evaluation feeds the network
    served = normalise(to_array(decode(path.read_bytes(), 10**6), mode, size, load_size)[None], 1 / 127.5, -1.0)
    assert served.dtype == np.float32 and served.shape == trained.shape
    assert np.array_equal(served, trained)  # bit for bit, not within a tolerance


def test_predictions_match_the_pytorch_model(tiny):
    predictor = Predictor(tiny.onnx)
    predictions = predictor.predict_files(tiny.target_pngs)
    pixels = np.stack([load_image(p, "L", 28) for p in tiny.target_pngs])
    expected = tiny.torch_outputs(pixels)
    assert [p.index for p in predictions] == expected["probabilities"].argmax(1).tolist()
    assert [p.label for p in predictions] == [tiny.task.classes[i] for i in expected["probabilities"].argmax(1)]
    np.testing.assert_allclose([p.confidence for p in predictions], expected["probabilities"].max(1), atol=1e-5)
    np.testing.assert_allclose([p.entropy for p in predictions], expected["entropy"], atol=1e-5)
    np.testing.assert_allclose([p.domain_probability for p in predictions], expected["domain_probability"],
                               atol=1e-5)
    first = predictions[0]
    assert len(first.top_k) == 3 and first.top_k[0] == (first.label, first.confidence)
    assert [q for _, q in first.top_k] == sorted((q for _, q in first.top_k), reverse=True)


def test_batching_does_not_change_predictions(tiny):
    pixels = tiny.task.target_test.images[:23]
    whole = Predictor(tiny.onnx, batch_size=64).predict_arrays(pixels)
    chunked = Predictor(tiny.onnx, batch_size=5, intra_op_threads=1).predict_arrays(pixels)
    for a, b in zip(whole, chunked, strict=True):
        assert a.label == b.label and a.confidence == pytest.approx(b.confidence, abs=1e-6)
        assert a.shift_score == pytest.approx(b.shift_score, rel=1e-4)
    assert Predictor(tiny.onnx).predict_arrays(pixels[:0]) == []


def test_shift_score_separates_target_images_from_obviously_different_ones(tiny):
    predictor = Predictor(tiny.onnx)
    threshold = predictor.info.shift_reference["threshold"]
    target = np.array([p.shift_score for p in predictor.predict_arrays(tiny.task.target_test.images)])
    different = {
        "uniform noise": noise_images(100),
        "blank": np.zeros((5, 28, 28), np.uint8),
        "white": np.full((5, 28, 28), 255, np.uint8),
    }
    assert (target > threshold).mean() <= 0.02  # the threshold is the target images' 99th percentile
    for name, pixels in different.items():
        scores = np.array([p.shift_score for p in predictor.predict_arrays(pixels)])
        assert scores.min() > threshold, name
        assert np.median(scores) > 3 * np.percentile(target, 99), name


def test_models_metadata_names_the_preprocessing(tiny):
    info = Predictor(tiny.onnx).info
    assert info.classes == tiny.task.classes and info.input_size == (1, 28, 28) and info.color_mode == "L"
    assert info.load_size == 28  # no crop for the default task
    assert info.scale == pytest.approx(1 / 127.5) and info.offset == -1.0
    assert info.outputs == ("logits", "probabilities", "entropy", "domain_probability", "feature_distance")
    assert info.extra["method"] == "tada" and info.extra["params_hash"] == tiny.config.digest()


def test_the_load_size_in_the_metadata_is_applied(tiny, tmp_path):
    model = _with_metadata(tiny.onnx, tmp_path / "m.onnx", lambda m: m.update({"tada.load_size": "32"}))
    predictor = Predictor(model)
    assert predictor.info.load_size == 32
    path = tmp_path / "x.png"
    Image.fromarray(noise_images(1, size=40)[0]).save(path)
    expected = center_crop(load_image(path, "L", 32)[None], 28)[0]
    with Image.open(path) as image:
        assert np.array_equal(predictor.preprocess(image), expected)
    assert predictor.predict_files([path])[0].label in tiny.task.classes


def _with_metadata(source, target, change):
    proto = onnx.load(str(source))
    meta = {p.key: p.value for p in proto.metadata_props}
    change(meta)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save_model(proto, str(target))
    return target


def test_bad_models_are_refused_with_the_reason(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        Predictor(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        Predictor(tmp_path / "text.onnx")
    no_classes = _with_metadata(tiny.onnx, tmp_path / "a.onnx", lambda m: m.pop("tada.classes"))
    with pytest.raises(ModelError, match="'tada.classes' missing"):
        Predictor(no_classes)
    bad_size = _with_metadata(tiny.onnx, tmp_path / "b.onnx", lambda m: m.update({"tada.input_size": "[3, 28, 28]"}))
    with pytest.raises(ModelError, match="color_mode 'L' does not fit 3 input channels"):
        Predictor(bad_size)
    wrong_outputs = _with_metadata(tiny.onnx, tmp_path / "c.onnx", lambda m: m.update({"tada.outputs": '["logits"]'}))
    with pytest.raises(ModelError, match="metadata names outputs"):
        Predictor(wrong_outputs)
    for key in ("tada.outputs", "tada.load_size"):  # every model this project exported has them
        missing = _with_metadata(tiny.onnx, tmp_path / "d.onnx", lambda m, key=key: m.pop(key))
        with pytest.raises(ModelError, match=f"'{key}' missing"):
            Predictor(missing)


def test_bad_image_bytes_are_classified():
    good = png(noise_images(1)[0])
    with pytest.raises(NotAnImageError, match="not an image"):
        decode(b"%PDF-1.4 not an image", 10**6)
    with pytest.raises(NotAnImageError, match="empty"):
        decode(b"", 10**6)
    with pytest.raises(CorruptImageError, match="corrupt PNG"):
        decode(good[: len(good) // 2], 10**6)  # truncated
    with pytest.raises(ImageTooLargeError, match="28 x 28 pixels, at most 100"):
        decode(good, 100)


def test_serving_code_never_imports_torch(tiny):
    """The modules of the predictor, the service and the CLI run with torch made unimportable."""
    code = f"""
import sys
sys.modules["torch"] = sys.modules["torchvision"] = None  # any import of them raises ImportError
from tada.serving import Predictor
import tada.serving.app, tada.serving.batch, tada.serving.server, tada.cli
[p] = Predictor({str(tiny.onnx)!r}).predict_files([{str(tiny.target_pngs[0])!r}])
print(p.label)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in tiny.task.classes


def test_confident_is_atc_with_the_threshold_fitted_at_export(tiny):
    from tada import validators

    predictor = Predictor(tiny.onnx)
    validation = predictor.info.validation
    assert validation["atc_score"] == "negative_entropy" and "target_accuracy" not in validation  # label-free
    assert set(validation["validators"]) == set(validators.VALIDATORS) - {"source_accuracy",
                                                                           "estimated_target_accuracy"}
    pixels = tiny.task.target_test.images
    predictions = predictor.predict_arrays(pixels)
    with torch.no_grad():
        logits = tiny.model.eval()(to_tensor(pixels)).logits.double().numpy()
    expected = validators.confidence_scores(logits) >= validation["atc_threshold"]
    assert [p.confident for p in predictions] == expected.tolist()
    # over the target images the fraction of confident ones is the estimated target accuracy, as at export
    estimate = validators.atc_estimate(logits, validation["atc_threshold"])
    assert np.mean([p.confident for p in predictions]) == pytest.approx(estimate)
