import csv

import numpy as np
import pytest

from tada.data.decoded import load_task
from tada.data.default_task import build_default_task
from tada.data.manifest import COLUMNS, read_manifest, write_dataset


def build_task(config):
    return build_default_task(config.data)


def test_written_dataset_round_trips_through_the_manifest(tmp_path, tiny_config):
    task = build_task(tiny_config)
    rows = write_dataset(task, tmp_path / "data")
    assert len(rows) == len(task.source_train) + len(task.source_test) + len(task.target_train) + len(task.target_test)
    with open(tmp_path / "data" / "manifest.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    listed, classes = read_manifest(tmp_path / "data")
    assert classes == task.classes
    assert {r.label for r in listed if (r.domain, r.split) == ("target", "train")} == {""}  # unlabelled
    assert all((r.width, r.height, r.mode) == (28, 28, "L") for r in listed)

    loaded = load_task(tmp_path / "data", tiny_config.data)
    assert np.array_equal(loaded.source_train.images, task.source_train.images)
    assert np.array_equal(loaded.target_test.labels, task.target_test.labels)
    assert loaded.target_train.labels is None


def test_rewriting_replaces_the_whole_tree(tmp_path, tiny_config):
    root = tmp_path / "data"
    write_dataset(build_task(tiny_config), root)
    (root / "stray.txt").write_text("left over")
    write_dataset(build_task(tiny_config.replace({"data.source_train_per_class": 3})), root)
    assert not (root / "stray.txt").exists()
    assert len([r for r in read_manifest(root)[0] if r.split == "train" and r.domain == "source"]) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging directory left behind


def test_a_failed_write_leaves_the_previous_dataset(tmp_path, tiny_config, monkeypatch):
    root = tmp_path / "data"
    write_dataset(build_task(tiny_config), root)
    before = (root / "manifest.csv").read_bytes()

    import tada.data.manifest as manifest

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(manifest.csv, "writer", explode)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(build_task(tiny_config), root)
    assert (root / "manifest.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_missing_manifest_says_to_run_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fetch stage first"):
        read_manifest(tmp_path)


def test_decoded_pixels_are_cached_memory_mapped_and_keyed_by_the_manifest(tmp_path, tiny_config, monkeypatch):
    from tada.data import decoded

    write_dataset(build_task(tiny_config), tmp_path / "data")
    plain = load_task(tmp_path / "data", tiny_config.replace({"data.decoded_cache": None}).data)
    cached_cfg = tiny_config.replace({"data.decoded_cache": str(tmp_path / "cache"), "data.num_workers": 2}).data
    cached = load_task(tmp_path / "data", cached_cfg)
    [key] = list((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in key.iterdir()) == ["source_test.npy", "source_train.npy", "target_test.npy",
                                                     "target_train.npy"]
    for name in ("source_train", "source_test", "target_train", "target_test"):
        a, b = getattr(plain, name), getattr(cached, name)
        assert isinstance(b.images, np.memmap) and np.array_equal(a.images, b.images)
        assert (a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(decoded, "load_image", no_decoding)
    again = load_task(tmp_path / "data", cached_cfg)
    assert np.array_equal(again.source_train.images, plain.source_train.images)
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another key
        load_task(tmp_path / "data", tiny_config.replace({"data.decoded_cache": str(tmp_path / "cache"),
                                                          "data.load_size": 32}).data)
