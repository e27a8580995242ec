"""A materialised dataset (`tada.data.manifest`) loaded as a `DomainTask`: images decoded once, in threads, into
uint8 arrays, optionally cached as memory-mapped ``.npy`` files shared by the stages."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from tada.config import DataConfig
from tada.data.manifest import MANIFEST, SPLITS, ManifestRow, read_manifest
from tada.data.task import DomainTask, ImageSet
from tada.io import atomic_path, reserve
from tada.preprocessing import center_crop, resized


def load_image(path: Path, mode: str, size: int) -> np.ndarray:
    """Decode one image as ``mode`` ("L" or "RGB") at ``size`` x ``size`` (`tada.preprocessing.resized`)."""
    with Image.open(path) as im:
        return resized(im, mode, size)


def load_task(root: str | Path, cfg: DataConfig) -> DomainTask:
    """A `DomainTask` from the dataset materialised under ``root``, images as ``cfg.color_mode`` at
    ``cfg.image_size``; the target's training labels are never used for training.

    Benchmarks without a test split (Office-31, Office-Home, ImageCLEF-DA; your own data) list no ``test`` rows
    for the target: then its labelled training images are what is evaluated on (the standard transductive protocol
    of unsupervised domain adaptation). A target without labels and without a test set has ``target_test`` None:
    nothing on the target can be scored.

    With ``cfg.load_size`` (> ``image_size``) images are resized to it; training images stay that large (training
    crops them, `tada.data.task.crop_batch`) and test images are centre-cropped to ``image_size`` here.

    With ``cfg.decoded_cache`` the decoded pixels are kept as ``.npy`` files under ``<decoded_cache>/<key>/`` (the
    key covers the manifest, which holds every file's checksum, and the decoding settings) and memory-mapped: the
    train, evaluate and export stages decode the images once between them, and a dataset larger than memory stays
    on disk, paged in as batches are drawn. Each file is written completely under a temporary name, then renamed.
    ``cfg.num_workers`` threads decode (Pillow releases the GIL).
    """
    root = Path(root)
    rows, classes = read_manifest(root)
    index = {c: i for i, c in enumerate(classes)}
    by_split = {key: [r for r in rows if (r.domain, r.split) == key] for key in SPLITS}
    for domain in ("source", "target"):
        if not by_split[(domain, "train")]:
            raise ValueError(f"{root / MANIFEST}: no training images for the {domain} domain")

    image_size, mode, load_size = cfg.image_size, cfg.color_mode, cfg.load_size
    size = load_size or image_size
    pool = ThreadPoolExecutor(cfg.num_workers) if cfg.num_workers > 0 else None  # Pillow decodes without the GIL
    cache = None
    if cfg.decoded_cache is not None:
        key = hashlib.sha256((root / MANIFEST).read_bytes() + f"|{mode}|{size}".encode()).hexdigest()[:16]
        cache = Path(cfg.decoded_cache) / key
        cache.mkdir(parents=True, exist_ok=True)

    def decode_all(selected: list[ManifestRow], name: str) -> np.ndarray:
        shape = (len(selected), size, size) if mode == "L" else (len(selected), size, size, 3)
        if cache is not None and (cache / f"{name}.npy").is_file():
            images = np.load(cache / f"{name}.npy", mmap_mode="r")
            if images.shape == shape and images.dtype == np.uint8:
                return images
        decode = partial(load_image, mode=mode, size=size)
        paths = [root / r.path for r in selected]
        decoded = pool.map(decode, paths, chunksize=64) if pool else map(decode, paths)
        if cache is None:
            return np.stack(list(decoded))
        with atomic_path(cache / f"{name}.npy") as tmp:  # filled image by image: never all in memory at once
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            reserve(tmp, os.path.getsize(tmp), f"free space there, or set data.decoded_cache: null (decode into "
                    f"memory) or to a folder on a larger disk (data.decoded_cache is {cfg.decoded_cache})")
            for i, image in enumerate(decoded):
                out[i] = image
            out.flush()
            del out
        return np.load(cache / f"{name}.npy", mmap_mode="r")

    def image_set(selected: list[ManifestRow], labelled: bool, crop: bool = False) -> ImageSet:
        domain, split = selected[0].domain, selected[0].split
        images = decode_all(selected, f"{domain}_{split}")
        images = center_crop(images, image_size) if crop else images
        return ImageSet(images, np.array([index[r.label] for r in selected], dtype=np.int64) if labelled else None)

    source_train = image_set(by_split[("source", "train")], labelled=True)
    source_test = (image_set(by_split[("source", "test")], True, crop=True) if by_split[("source", "test")] else
                   ImageSet(center_crop(source_train.images, image_size), source_train.labels))
    target_rows = by_split[("target", "train")]
    target_train = image_set(target_rows, labelled=False)
    target_test = None
    if by_split[("target", "test")]:
        target_test = image_set(by_split[("target", "test")], labelled=True, crop=True)
    elif all(r.label for r in target_rows):
        target_test = ImageSet(center_crop(target_train.images, image_size),
                               np.array([index[r.label] for r in target_rows], dtype=np.int64))
    if pool:
        pool.shutdown()
    return DomainTask(classes, source_train, source_test, target_train, target_test)
