import numpy as np
import pytest
import torch

from tada.config import DataConfig
from tada.data.default_task import TARGET_SPLIT_SEED, build_default_task
from tada.data.handwritten import load_handwritten_digits
from tada.data.loaders import BatchStream
from tada.data.synthetic import RenderSpec, digit_fonts, render_digits
from tada.data.task import stratified_split, to_tensor


def test_fonts_are_matplotlibs_digit_fonts():
    names = {p.name for p in digit_fonts()}
    assert {"DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "cmr10.ttf"} <= names
    assert not names & {"cmsy10.ttf", "cmex10.ttf", "cmmi10.ttf", "LastResortHE-Regular.ttf"}  # not plain digits


def test_rendering_is_deterministic_given_the_seed():
    a, la = render_digits(3, 28, RenderSpec(), seed=5)
    b, lb = render_digits(3, 28, RenderSpec(), seed=5)
    c, _ = render_digits(3, 28, RenderSpec(), seed=6)
    assert a.shape == (30, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert np.array_equal(np.bincount(la), np.full(10, 3))


def test_rendered_digits_have_ink_centred_in_the_image():
    images, _ = render_digits(5, 28, RenderSpec(noise=0.0, translation=0.0, rotation=0.0), seed=0)
    ink = images.astype(float).sum(axis=0)
    ys, xs = np.nonzero(ink > ink.max() * 0.2)
    assert abs(ys.mean() - 13.5) < 3 and abs(xs.mean() - 13.5) < 3
    assert (images.reshape(len(images), -1).max(axis=1) > 200).all()


def test_handwritten_target_is_sklearns_digits():
    images, labels = load_handwritten_digits(28)
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))


def test_target_split_is_fixed_stratified_and_disjoint():
    _, labels = load_handwritten_digits(16)
    train, test = stratified_split(labels, 0.3, TARGET_SPLIT_SEED)
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert abs(len(test) / len(labels) - 0.3) < 0.01
    for c in range(10):
        assert abs((labels[test] == c).sum() / (labels == c).sum() - 0.3) < 0.03
    again, _ = stratified_split(labels, 0.3, TARGET_SPLIT_SEED)
    assert np.array_equal(train, again)


def test_default_task_hides_target_training_labels():
    task = build_default_task(DataConfig(source_train_per_class=4, source_test_per_class=2))
    assert task.target_train.labels is None
    assert len(task.source_train) == 40 and len(task.source_test) == 20
    assert len(task.target_train) + len(task.target_test) == 1797
    assert task.in_channels == 1 and task.classes == tuple("0123456789")


def test_to_tensor_scales_to_minus_one_one():
    x = to_tensor(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2)
    assert x.flatten().tolist() == [-1.0, 1.0]
    rgb = to_tensor(np.zeros((2, 4, 5, 3), dtype=np.uint8))
    assert rgb.shape == (2, 3, 4, 5)


def test_batch_streams_cover_every_sample_each_epoch_and_are_seeded():
    stream = BatchStream(10, 5, torch.Generator().manual_seed(0))
    first_epoch = torch.cat([stream.next() for _ in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    again = BatchStream(10, 5, torch.Generator().manual_seed(0))
    assert torch.equal(again.next(), first_epoch[:5])


def test_batch_streams_work_for_a_dataset_smaller_than_a_batch():
    batch = BatchStream(3, 7, torch.Generator().manual_seed(0)).next()
    assert batch.shape == (7,) and set(batch.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="empty"):
        BatchStream(0, 2, torch.Generator())


def test_rendering_refuses_without_pillows_raqm_layout_instead_of_drawing_other_digits(monkeypatch):
    """Pillow lays text out with Raqm where FriBiDi is installed and with its basic engine otherwise, and the two
    place the glyphs differently: the default task must not depend on which libraries a machine happens to have."""
    from PIL import features

    from tada.data import synthetic
    from tada.io import MissingLibraryError

    synthetic.digit_fonts.cache_clear()
    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "raqm" else real(name))
    try:
        with pytest.raises(MissingLibraryError, match="apt-get install libfribidi0"):
            synthetic.digit_fonts()
    finally:
        synthetic.digit_fonts.cache_clear()
