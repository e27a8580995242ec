"""ONNX export of the inference graph, with metadata, and a parity check against onnxruntime.

The exported graph is the eval-mode network (no gradient reversal, no dropout, BatchNorm with running statistics)
as one self-contained ``.onnx`` file with a dynamic batch axis. Everything a server needs to preprocess inputs
exactly like training did travels in the model's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tada.config import Config
from tada.io import atomic_path
from tada.models.network import TadaNet

INPUT_NAME, LOGITS = "image", "logits"
NORMALISATION = {"scale": 1 / 127.5, "offset": -1.0}  # x = pixel / 127.5 - 1, as tada.data.task.to_tensor


class InferenceGraph(nn.Module):
    """What is exported: image batch ``(B, C, S, S)`` float32 in [-1, 1] -> logits ``(B, classes)``."""

    def __init__(self, model: TadaNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).logits


class ExportError(RuntimeError):
    """Export or its parity check failed; nothing was written."""


def metadata(config: Config, classes: tuple[str, ...], in_channels: int) -> dict[str, str]:
    return {
        "tada.classes": json.dumps(list(classes)),
        "tada.input_size": json.dumps([in_channels, config.data.image_size, config.data.image_size]),
        "tada.color_mode": "L" if in_channels == 1 else "RGB",
        "tada.normalisation": json.dumps(NORMALISATION),
        "tada.method": config.method.name,
        "tada.backbone": config.model.backbone,
        "tada.params_hash": config.digest(),
    }


def export_verified(
    model: TadaNet,
    images: torch.Tensor,
    path: str | Path,
    opset: int,
    meta: dict[str, str],
    batch_sizes: tuple[int, ...],
    tolerance: float,
) -> dict[str, Any]:
    """Export ``model`` to one ``.onnx`` file and check it against PyTorch with onnxruntime on ``images``.

    The file only appears at ``path`` once the parity check passed; otherwise `ExportError` is raised, with the
    parity report attached, and the previous file (if any) is left as it was.
    """
    import onnx

    graph = InferenceGraph(model).eval()
    with atomic_path(path) as tmp:
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                (images[:2],),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[LOGITS],
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                verbose=False,
            )
        proto = program.model_proto
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(tmp))
        parity = check_parity(tmp, model, images, batch_sizes, tolerance)
        if not parity["passed"]:
            error = ExportError(f"ONNX parity check failed (tolerance {tolerance}): "
                                + "; ".join(f"batch {c['batch_size']}: max |diff| {c['max_abs_diff']:.2e}, "
                                            f"argmax identical {c['argmax_identical']}" for c in parity["checks"]))
            error.report = parity
            raise error
    return parity


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def check_parity(
    path: str | Path, model: TadaNet, images: torch.Tensor, batch_sizes: tuple[int, ...], tolerance: float
) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on ``images`` at each batch size: max |logit difference| and argmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    checks = []
    for batch_size in batch_sizes:
        if images.shape[0] < batch_size:
            raise ExportError(f"parity check needs {batch_size} images, only {images.shape[0]} available")
        batch = images[:batch_size]
        with torch.no_grad():
            expected = model(batch).logits.numpy()
        got = session.run([LOGITS], {INPUT_NAME: batch.numpy().astype(np.float32)})[0]
        diff = float(np.abs(got - expected).max())
        same_argmax = bool((got.argmax(1) == expected.argmax(1)).all())
        checks.append({"batch_size": batch_size, "max_abs_diff": diff, "argmax_identical": same_argmax,
                       "passed": diff <= tolerance and same_argmax})
    return {"tolerance": tolerance, "passed": all(c["passed"] for c in checks), "checks": checks,
            "onnxruntime": ort.__version__}
