"""``data.name: folder``: the user's own images, as ImageFolder directories and CSV files, through `dvc repro`."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from repo_copy import copy_repo, ran_stages, sh

from tada.config import FolderConfig
from tada.data.folder import read_folder_dataset

CLASSES = ("cat", "dog", "fox")


def draw(path, label_index: int, size: tuple[int, int], mode: str, seed: int) -> None:
    """A small image whose class shows (a bright band at a class-specific height), in any size and mode."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    band = slice(label_index * h // 3, (label_index + 1) * h // 3)
    pixels[band] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


def make_user_data(root, per_class: int = 6):
    """source/: ImageFolder, RGB and grayscale, mixed sizes; target.csv: unlabelled; target_test.csv: labelled."""
    seed = 0
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            seed += 1
            draw(root / "source" / name / f"{i}.{'png' if i % 2 else 'jpg'}", c, (24 + 4 * (i % 3), 20 + 2 * i),
                 "RGB" if i % 2 else "L", seed)
    targets, tests = [], []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            seed += 1
            draw(root / "target_images" / f"{name}_{i}.png", c, (30, 30), "RGB", seed)
            (targets if i % 3 else tests).append((f"target_images/{name}_{i}.png", name))
    with open(root / "target.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([(path, "") for path, _ in targets])
    with open(root / "target_test.csv", "w", newline="") as f:
        csv.writer(f).writerows(tests)
    return root


def test_folder_forms_are_read_with_their_labels(tmp_path):
    root = make_user_data(tmp_path)
    splits, classes = read_folder_dataset(FolderConfig(source=str(root / "source"), target=str(root / "target.csv"),
                                                       target_test=str(root / "target_test.csv")))
    assert classes == CLASSES
    assert [len(splits[k]) for k in (("source", "train"), ("target", "train"), ("target", "test"))] == [18, 12, 6]
    assert {s.label for s in splits[("source", "train")]} == set(CLASSES)
    assert all(s.label is None for s in splits[("target", "train")])  # used unlabelled
    assert all(s.path.is_file() for split in splits.values() for s in split)


def test_folder_mistakes_are_named(tmp_path):
    root = make_user_data(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data.folder.source: .*nowhere does not exist"):
        read_folder_dataset(FolderConfig(source=str(root / "nowhere"), target=str(root / "target.csv")))
    with pytest.raises(ValueError, match=r"data.folder.source: .*has no class folders"):
        read_folder_dataset(FolderConfig(source=str(root / "target_images"), target=str(root / "target.csv")))
    (root / "bad.csv").write_text("path,label\ntarget_images/cat_0.png,cat\nmissing.png,dog\n")
    with pytest.raises(FileNotFoundError, match=r"lists 1 file\(s\) that do not exist, e.g. .*missing.png"):
        read_folder_dataset(FolderConfig(source=str(root / "source"), target=str(root / "bad.csv")))
    with pytest.raises(ValueError, match="data.folder.target must be set"):
        read_folder_dataset(FolderConfig(source=str(root / "source")))


TINY = {
    "data": {"name": "folder", "image_size": 32, "color_mode": "RGB",
             "folder": {"source": "user_data/source", "target": "user_data/target.csv",
                        "target_test": "user_data/target_test.csv"}},
    "model": {"bottleneck_dim": 16, "discriminator_hidden": 16, "region_discriminator_hidden": 8},
    "train": {"iterations": 6, "eval_interval": 3, "log_interval": 3, "batch_size": 8},
    "validate": {"min_per_class": 2, "min_rows": 10, "image_modes": ["L", "RGB"], "check_image_size": False},
    "evaluate": {"tsne_points": 12, "attention_images": 4},
    "export": {"parity_batch_sizes": [1, 4]},
}


@pytest.mark.slow
def test_folder_dataset_through_dvc_reports_the_corrupt_file_then_runs(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    make_user_data(repo / "user_data")
    corrupt = repo / "user_data" / "source" / "dog" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    copy_repo(repo, TINY)

    failed = sh(repo, "dvc", "repro", check=False)
    assert failed.returncode != 0 and ran_stages(failed.stdout) == ["fetch", "validate"], failed.stdout
    assert "image files exist and decode" in failed.stderr
    assert "broken.jpg (corrupt:" in failed.stderr  # named by path, with the decoder's reason
    report = json.loads((repo / "reports/validation_failed.json").read_text())
    [item] = [i for i in report["results"] if i["summary"] == "image files exist and decode" and not i["success"]]
    assert any("dog/" in e and "broken.jpg" in e for e in item["examples"])
    assert not (repo / "models/model.pt").exists()  # train never ran on bad data

    corrupt.unlink()  # the user fixes the data; DVC sees user_data/ change
    done = sh(repo, "dvc", "repro")
    assert ran_stages(done.stdout) == ["fetch", "validate", "train", "evaluate", "export", "report"], done.stdout
    assert "TADA run report" in (repo / "reports/index.html").read_text()
    details = json.loads((repo / "reports/evaluation.json").read_text())
    assert details["target_images"] == 6 and set(details["target_per_class_accuracy"]) == set(CLASSES)
    rows = list(csv.DictReader((repo / "data/manifest.csv").read_text().splitlines()))
    # one image of each source class (6 each, 10 %: at least one) is held out for source accuracy and validators
    held_out = [r for r in rows if (r["domain"], r["split"]) == ("source", "test")]
    assert sorted(r["label"] for r in held_out) == sorted(CLASSES) and details["source_images"] == 3
    modes = {r["mode"] for r in rows if r["domain"] == "source"}
    assert modes == {"L", "RGB"} and len({(r["width"], r["height"]) for r in rows}) > 3
