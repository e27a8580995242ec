"""A trained tiny TADA model, exported with its shift reference, shared by the serving tests (trained once per
session: about 5 s). Also real target images as PNG files, and images that are obviously not the target domain."""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tada.config import Config
from tada.data.default_task import build_default_task
from tada.data.task import DomainTask, to_tensor
from tada.export import export_verified, model_info
from tada.models.network import TadaNet
from tada.train import train

TINY = {
    "data.source_train_per_class": 12, "data.source_test_per_class": 4, "model.bottleneck_dim": 32,
    "model.discriminator_hidden": 32, "model.region_discriminator_hidden": 16, "train.iterations": 60,
    "train.batch_size": 16, "train.eval_interval": 60, "train.log_interval": 60, "train.num_threads": 1,
}


@dataclass(frozen=True)
class TinyModel:
    onnx: Path
    model: TadaNet
    config: Config
    task: DomainTask
    target_pngs: list[Path]  # held-out target test images, as files

    def torch_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """What the PyTorch model says for uint8 ``pixels`` (training's preprocessing, `to_tensor`)."""
        with torch.no_grad():
            out = self.model.eval()(to_tensor(pixels))
            p = torch.softmax(out.logits, 1)
            return {"probabilities": p.numpy(), "entropy": -(p * torch.log_softmax(out.logits, 1)).sum(1).numpy(),
                    "domain_probability": torch.sigmoid(out.domain_logits).numpy()}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_images(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


@functools.cache
def tiny_model() -> TinyModel:
    root = Path(tempfile.mkdtemp(prefix="tada-serving-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    config = Config().replace(TINY)
    task = build_default_task(config.data)
    threads = torch.get_num_threads()
    result = train(config, task)
    model = result.model.eval()
    torch.set_num_threads(threads)
    path = root / "model.onnx"
    meta = model_info(config, task.classes, 1, result.final)  # with the label-free evaluation (tada.validation)
    export_verified(model, to_tensor(task.target_test.images[:32]), path, 18, meta,
                    (1, 32), 1e-4, fit_images=to_tensor(task.target_train.images),
                    calibration_images=to_tensor(task.target_test.images))
    pngs = []
    for i in range(48):
        pngs.append(root / "target" / str(task.target_test.labels[i]) / f"{i:03d}.png")
        pngs[-1].parent.mkdir(parents=True, exist_ok=True)
        pngs[-1].write_bytes(png(task.target_test.images[i]))
    return TinyModel(path, model, config, task, pngs)
