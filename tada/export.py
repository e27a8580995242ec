"""ONNX export of the inference graph, with metadata, and a parity check against onnxruntime.

The exported graph is the eval-mode network (no gradient reversal, no dropout, BatchNorm with running statistics)
as one self-contained ``.onnx`` file with a dynamic batch axis. Beside the logits it outputs what production needs to
watch for domain shift (`tada.serving.shift`): the class probabilities, the prediction entropy, the global
discriminator's domain probability (methods that have one) and the bottleneck features' distance from the target
domain. Everything a server needs to preprocess inputs exactly like training did, the output names and the shift
reference travel in the model's metadata.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tada.config import Config
from tada.data.task import DomainTask, center_crop, spaced, to_tensor
from tada.io import atomic_path
from tada.losses import prediction_entropy
from tada.models.network import TadaNet
from tada.preprocessing import NORMALISATION
from tada.serving.model_info import (
    DOMAIN_PROBABILITY,
    ENTROPY,
    FEATURE_DISTANCE,
    INPUT,
    LOGITS,
    PROBABILITIES,
    ModelInfo,
)
from tada.serving.shift import calibrate, ledoit_wolf, whitening

INPUT_NAME = INPUT
REFERENCE_IMAGES = 4096  # at most, for each of the shift reference's two image sets


class InferenceGraph(nn.Module):
    """What is exported: image batch ``(B, C, S, S)`` float32 in [-1, 1] -> a tuple, in ``output_names`` order:

    - ``logits (B, classes)``, ``probabilities (B, classes)`` (softmax), ``entropy (B,)`` in nats;
    - ``domain_probability (B,)``: ``sigmoid`` of the global discriminator's logit ("source image"), when the
      method has a global discriminator;
    - ``feature_distance (B,)``: ``||(f - mu) W||^2 / dim`` for the bottleneck features ``f``, when a feature
      reference ``(mu, W)`` is given (`fit_feature_reference`): the squared Mahalanobis distance from the target
      features per dimension.

    Args:
        model: the trained network (set to eval mode by the caller).
        feature_reference: ``(mu (dim,), W (dim, dim))``, or None for no ``feature_distance`` output.
    """

    def __init__(self, model: TadaNet, feature_reference: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.model = model
        self.output_names = [LOGITS, PROBABILITIES, ENTROPY]
        if model.domain_discriminator is not None:
            self.output_names.append(DOMAIN_PROBABILITY)
        mean, whiten = (None, None) if feature_reference is None else (
            torch.tensor(np.array(a, dtype=np.float32)) for a in feature_reference)
        self.register_buffer("feature_mean", mean)
        self.register_buffer("feature_whitening", whiten)
        if feature_reference is not None:
            self.output_names.append(FEATURE_DISTANCE)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        outputs = [out.logits, torch.softmax(out.logits, dim=1), prediction_entropy(out.logits)]
        if out.domain_logits is not None:
            outputs.append(torch.sigmoid(out.domain_logits))
        if self.feature_mean is not None:
            z = (out.features - self.feature_mean) @ self.feature_whitening  # (B, dim), whitened
            outputs.append(z.square().mean(dim=1))
        return tuple(outputs)

    @torch.no_grad()
    def outputs(self, images: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Every output for ``images (N, C, S, S)``, by name, in batches."""
        parts = [self(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
        return {name: torch.cat([p[k] for p in parts]) for k, name in enumerate(self.output_names)}


class ExportError(RuntimeError):
    """Export or its parity check failed; nothing was written."""


def validation_record(evaluation: dict[str, float], atc_score: str) -> dict[str, Any]:
    """The label-free part of the exported model's last evaluation (``tada.validation``): held-out source accuracy,
    ATC's estimated target accuracy with its threshold and score, and the validators. No target label is in it, so
    production can compare the confidence of live traffic with it (`tada.serving.accuracy`)."""
    from tada.validators import VALIDATORS

    return {"step": int(evaluation["step"]), "source_accuracy": evaluation["source_accuracy"],
            "estimated_target_accuracy": evaluation["estimated_target_accuracy"],
            "atc_threshold": evaluation["atc_threshold"], "atc_score": atc_score,
            "validators": {k: evaluation[k] for k in VALIDATORS
                           if k not in ("source_accuracy", "estimated_target_accuracy")}}


def model_info(config: Config, classes: tuple[str, ...], in_channels: int,
               evaluation: dict[str, float] | None = None) -> ModelInfo:
    """What the exported model says about itself (`tada.serving.model_info.ModelInfo`), before its outputs and
    shift reference are known (`export_verified` adds them): classes, input and load size, colour mode,
    normalisation, method, and with ``evaluation`` (the checkpoint's metrics) its label-free ``tada.validation``."""
    validation = None
    if evaluation and "atc_threshold" in evaluation:  # checkpoints from before the validators have none
        validation = validation_record(evaluation, config.validators.atc_score)
    return ModelInfo(
        classes=tuple(classes), input_size=(in_channels, config.data.image_size, config.data.image_size),
        # evaluation's preprocessing: resize to L x L, then the central S x S window (L = S: no crop)
        load_size=config.data.load_size or config.data.image_size, color_mode="L" if in_channels == 1 else "RGB",
        scale=NORMALISATION["scale"], offset=NORMALISATION["offset"], outputs=(), shift_reference=None,
        validation=validation,
        extra={"method": config.method.name, "backbone": config.model.backbone, "params_hash": config.digest()})


def reference_images(task: DomainTask, parity_count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images an export needs, all from the target, labels unused: ``parity_count`` held-out images for the
    parity check; the feature distribution's images (the unlabelled training images) and the calibration images
    (the held-out test images; without a test split, the other half of the training images), each at most
    `REFERENCE_IMAGES`, evenly spaced, so a large target (VisDA-2017) does not take hours of CPU inference."""
    unlabelled = center_crop(task.target_train.images, task.source_test.images.shape[1])  # as evaluation sees them
    if task.target_test is not None:
        fit, calibration = unlabelled, task.target_test.images
    else:
        fit, calibration = unlabelled[::2], unlabelled[1::2]
    return (to_tensor(np.ascontiguousarray(calibration[:parity_count])),
            to_tensor(np.ascontiguousarray(spaced(fit, REFERENCE_IMAGES))),
            to_tensor(np.ascontiguousarray(spaced(calibration, REFERENCE_IMAGES))))


def inference_network(model: TadaNet) -> TadaNet:
    """A copy of ``model`` in eval mode with the discriminators' BatchNorm folded into their weights (the same
    function; the exported graph loses every Transpose/Reshape/BatchNorm around the region discriminators)."""
    net = copy.deepcopy(model).eval()
    if net.region_discriminators is not None:
        net.region_discriminators = net.region_discriminators.folded().eval()
    if net.domain_discriminator is not None:
        net.domain_discriminator = net.domain_discriminator.folded().eval()
    return net


MONITOR_RANKS = (32, 64, 128, 256)  # tried in this order, of a global discriminator's hidden x hidden layer


@torch.no_grad()
def low_rank_monitor(net: TadaNet, fit_images: torch.Tensor, check_images: torch.Tensor, tolerance: float,
                     batch_size: int = 256) -> dict[str, Any] | None:
    """Replace, in place, the global discriminator's ``hidden x hidden`` layer ``y = W h + b`` of an
    `inference_network` by a rank-``r`` one, ``2 r hidden`` multiply-adds instead of ``hidden^2``, fitted to the
    data: ``y ~ mu + P P^T (W h + b - mu)`` with ``P`` the top ``r`` principal directions of ``y`` on
    ``fit_images`` (the unlabelled target training images) and ``mu`` its mean. The rank is the smallest in
    `MONITOR_RANKS` (below ``hidden / 2``, where it saves anything) whose domain probability stays within
    ``tolerance`` of the full layer's on every one of ``check_images`` (held-out target images, labels unused).
    That layer feeds only the shift monitor: logits, probabilities, entropy and the features do not change.
    Returns what was measured (``None``: no global discriminator or ``tolerance`` 0; ``rank`` None: no rank was
    close enough, the full layer kept).
    """
    disc = net.domain_discriminator
    if disc is None or tolerance <= 0:
        return None
    layer: nn.Linear = disc.net[2]
    hidden = layer.in_features

    def batched(fn: Any, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def probability(images: torch.Tensor) -> torch.Tensor:
        return batched(lambda x: torch.sigmoid(net(x).domain_logits), images)

    full = probability(check_images)
    y = batched(lambda x: layer(disc.net[1](disc.net[0](net(x).features))), fit_images).double()  # (N, hidden)
    mean = y.mean(dim=0)
    directions = torch.linalg.svd(y - mean, full_matrices=False)[2]  # (min(N, hidden), hidden), rows: directions
    tried = {}
    for rank in sorted({min(r, len(directions)) for r in MONITOR_RANKS if r < hidden // 2}):
        p = directions[:rank].T  # (hidden, r); fewer fit images than r: all their directions (exact on them)
        down, up = nn.Linear(hidden, rank, bias=False), nn.Linear(rank, layer.out_features)
        down.weight.copy_(p.T @ layer.weight.double())
        up.weight.copy_(p)
        up.bias.copy_(mean + p @ (p.T @ (layer.bias.double() - mean)))
        disc.net[2] = nn.Sequential(down, up)
        deviation = float((probability(check_images) - full).abs().max())
        tried[rank] = deviation
        if deviation <= tolerance:
            return {"rank": rank, "hidden": hidden, "max_abs_diff": deviation, "tolerance": tolerance,
                    "fit_images": len(fit_images), "check_images": len(check_images), "tried": tried}
    disc.net[2] = layer
    return {"rank": None, "hidden": hidden, "tolerance": tolerance, "fit_images": len(fit_images),
            "check_images": len(check_images), "tried": tried}


@torch.no_grad()
def fit_feature_reference(model: TadaNet, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, ...]:
    """``(mu, W)`` of the bottleneck features of ``images`` (the unlabelled target training images): their mean
    and the whitening of their Ledoit-Wolf covariance (`tada.serving.shift.ledoit_wolf`)."""
    from tada.evaluate import predict

    features = predict(model, images, batch_size)["features"].double().numpy()
    mean, covariance = ledoit_wolf(features)
    return mean, whitening(covariance)


def export_verified(
    model: TadaNet,
    images: torch.Tensor,
    path: str | Path,
    opset: int,
    info: ModelInfo,
    batch_sizes: tuple[int, ...],
    tolerance: float,
    *,
    fit_images: torch.Tensor | None = None,
    calibration_images: torch.Tensor | None = None,
    monitor_tolerance: float = 0.0,
) -> dict[str, Any]:
    """Export ``model`` to one ``.onnx`` file and check every output against PyTorch with onnxruntime on ``images``.

    What is exported is `inference_network` (BatchNorm folded); with ``monitor_tolerance`` > 0 and ``fit_images``,
    the global discriminator's widest layer is replaced by a low-rank one fitted on them, within that tolerance of
    its domain probability on ``calibration_images`` (`low_rank_monitor`), before the shift reference is measured.

    With ``fit_images`` (unlabelled target training images) the graph gets the ``feature_distance`` output; with
    ``calibration_images`` (held-out target images) the shift reference (`tada.serving.shift.calibrate`) is measured
    on them and stored as ``tada.shift_reference``. The output names go in ``tada.outputs``.

    The file only appears at ``path`` once the parity check passed; otherwise `ExportError` is raised, with the
    parity report attached, and the previous file (if any) is left as it was. Returns the parity report with the
    output names and the metadata written.
    """
    import onnx

    if fit_images is not None and calibration_images is None:
        raise ValueError("fit_images needs calibration_images: the feature distance is only used by the shift score")
    model.eval()
    reference = None if fit_images is None else fit_feature_reference(model, fit_images)
    net = inference_network(model)
    monitor = None
    if fit_images is not None:
        monitor = low_rank_monitor(net, fit_images, calibration_images, monitor_tolerance)
    graph = InferenceGraph(net, reference).eval()
    shift = None
    if calibration_images is not None:
        shift = calibrate({k: v.double().numpy() for k, v in graph.outputs(calibration_images).items()})
    meta = dataclasses.replace(info, outputs=tuple(graph.output_names), shift_reference=shift).to_metadata()
    with atomic_path(path) as tmp:
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                (images[:2],),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=graph.output_names,
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                verbose=False,
            )
        proto = program.model_proto
        strip_source_paths(proto)
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, str(tmp))
        parity = check_parity(tmp, graph, images, batch_sizes, tolerance)
        if not parity["passed"]:
            error = ExportError(f"ONNX parity check failed (tolerance {tolerance}): "
                                + "; ".join(f"batch {c['batch_size']}: max |diff| {c['max_abs_diff']:.2e} "
                                            f"({', '.join(f'{k} {v:.1e}' for k, v in c['outputs'].items())}), "
                                            f"argmax identical {c['argmax_identical']}" for c in parity["checks"]))
            error.report = parity
            raise error
    return {**parity, "outputs": graph.output_names, "metadata": meta, "shift_reference": shift,
            "monitor": monitor}


SOURCE_PATHS = "pkg.torch.onnx.stack_trace"  # per node: the Python stack that built it, absolute file paths included


def strip_source_paths(proto: Any) -> None:
    """Remove the exporter's per-node stack traces (absolute paths of the checkout that exported it), so the same
    model exported from two checkouts is the same file, byte for byte."""

    def nodes(graph: Any) -> Iterator[Any]:
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                    yield from nodes(sub)

    for node in [*nodes(proto.graph), *(n for f in proto.functions for n in f.node)]:
        kept = [entry for entry in node.metadata_props if entry.key != SOURCE_PATHS]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def check_parity(
    path: str | Path, graph: InferenceGraph, images: torch.Tensor, batch_sizes: tuple[int, ...], tolerance: float
) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on ``images`` at each batch size: max |difference| of every output (the
    check's ``max_abs_diff`` is the largest, ``outputs`` has each) and identical argmax of the logits."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph.eval()
    checks = []
    for batch_size in batch_sizes:
        if images.shape[0] < batch_size:
            raise ExportError(f"parity check needs {batch_size} images, only {images.shape[0]} available")
        batch = images[:batch_size]
        with torch.no_grad():
            expected = [t.numpy() for t in graph(batch)]
        got = session.run(graph.output_names, {INPUT_NAME: batch.numpy().astype(np.float32)})
        diffs = {name: float(np.abs(g - e).max()) for name, g, e in zip(graph.output_names, got, expected, strict=True)}
        same_argmax = bool((got[0].argmax(1) == expected[0].argmax(1)).all())
        diff = max(diffs.values())
        checks.append({"batch_size": batch_size, "max_abs_diff": diff, "argmax_identical": same_argmax,
                       "passed": diff <= tolerance and same_argmax, "outputs": diffs})
    return {"tolerance": tolerance, "passed": all(c["passed"] for c in checks), "checks": checks,
            "onnxruntime": ort.__version__}
