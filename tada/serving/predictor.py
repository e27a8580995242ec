"""`Predictor`: an exported TADA model under onnxruntime, with the preprocessing its metadata prescribes.

Never imports torch: numpy, Pillow and onnxruntime only (`pip install .` without extras is enough)::

    from tada.serving import Predictor

    predictor = Predictor("models/model.onnx", intra_op_threads=2)
    [p] = predictor.predict_files(["digit.png"])
    p.label, p.confidence, p.top_k, p.shift_score
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from tada.serving.images import decode, load_file, normalise, prepare
from tada.serving.model_info import DOMAIN_PROBABILITY, ENTROPY, INPUT, PROBABILITIES, ModelError, ModelInfo
from tada.serving.settings import RANGES
from tada.serving.shift import shift_scores

DEFAULT_MAX_PIXELS = 4096 * 4096  # decoded size limit per image: a 1 kB PNG can claim 50,000 x 50,000 pixels


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Attributes:
        label: the most probable class; ``index`` its position in the model's class list.
        confidence: its probability.
        top_k: the ``k`` most probable ``(label, probability)`` pairs, most probable first.
        entropy: prediction entropy in nats.
        domain_probability: the global discriminator's "source image" probability (None without one).
        shift_score: distance from the adapted target domain (`tada.serving.shift`; None without a reference).
        shifted: whether ``shift_score`` is above the predictor's ``shift_threshold`` (None without one).
        confident: whether its confidence reaches ATC's threshold fitted at export: the fraction of confident
            images estimates the accuracy on them (`tada.serving.accuracy`; None for a model without
            ``tada.validation``).
    """

    label: str
    index: int
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    entropy: float
    domain_probability: float | None
    shift_score: float | None
    shifted: bool | None
    confident: bool | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_k"] = [{"label": label, "probability": p} for label, p in self.top_k]
        return d


# Every graph rewrite but the NCHWc layout transform (ORT_ENABLE_ALL's addition): on the default model, its reorder
# nodes cost more than its convolutions gain (batch 256 about 10 % slower; benchmarks/inference_roofline.py).
GRAPH_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


class Predictor:
    """Loads ``model.onnx`` and predicts batches of images.

    Args:
        model_path: an ONNX file written by `tada.export` (its metadata describes the preprocessing).
        intra_op_threads: onnxruntime threads within one operator; 0 lets onnxruntime choose (all cores).
        batch_size: most images per onnxruntime call; longer inputs are split.
        top_k: classes listed per prediction.
        max_pixels: decoded-size limit per image (width x height).
        shift_threshold: shift score above which an image is ``shifted``; default the threshold calibrated at
            export (the 99th percentile of held-out target images).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        intra_op_threads: int = 0,
        batch_size: int = 32,
        top_k: int = 3,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        shift_threshold: float | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"no model at {path}: export one with `dvc repro export` (models/model.onnx)")
        for name, value in (("intra_op_threads", intra_op_threads), ("batch_size", batch_size), ("top_k", top_k),
                            ("max_pixels", max_pixels)):
            low, high = RANGES[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if shift_threshold is not None and not (math.isfinite(shift_threshold) and shift_threshold > 0):
            raise ValueError(f"shift_threshold must be a finite number > 0, got {shift_threshold}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1  # the graph is a chain: parallel branches would only add scheduling
        options.graph_optimization_level = GRAPH_OPTIMIZATION
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid graphs
            raise ModelError(f"{path}: onnxruntime cannot load it: {e}") from None
        outputs = tuple(o.name for o in self.session.get_outputs())
        self.info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, outputs, str(path))
        [graph_input] = self.session.get_inputs()
        if graph_input.name != INPUT or list(graph_input.shape[1:]) != list(self.info.input_size):
            raise ModelError(f"{path}: graph input {graph_input.name} {graph_input.shape} does not match the "
                             f"metadata's {INPUT} [batch, {', '.join(map(str, self.info.input_size))}]")
        self.path, self.batch_size, self.top_k, self.max_pixels = path, batch_size, top_k, max_pixels
        self.intra_op_threads = intra_op_threads
        reference = self.info.shift_reference
        self.shift_threshold = shift_threshold if shift_threshold is not None else (
            reference["threshold"] if reference else None)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """A decoded image -> uint8 pixels at the model's mode and size (training's `load_image` and crop)."""
        return prepare(image, self.info.color_mode, self.info.image_size, self.info.load_size)

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> preprocessed uint8 pixels; raises `tada.serving.images.ImageError`."""
        return self.preprocess(decode(data, self.max_pixels))

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs for uint8 ``pixels (N, S, S[, 3])``, in chunks of ``batch_size``."""
        if pixels.ndim not in (3, 4) or pixels.shape[1:3] != (self.info.image_size,) * 2 or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels (N, {self.info.image_size}, {self.info.image_size}[, 3]), "
                             f"got {pixels.dtype} {pixels.shape}")
        chunks = []
        for start in range(0, len(pixels), self.batch_size):
            x = normalise(pixels[start : start + self.batch_size], self.info.scale, self.info.offset)
            chunks.append(self.session.run(None, {INPUT: x}))
        return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(self.info.outputs)}

    def predict_arrays(self, pixels: np.ndarray) -> list[Prediction]:
        """Predictions for preprocessed uint8 ``pixels (N, S, S[, 3])``."""
        if len(pixels) == 0:
            return []
        out = self.run(pixels)
        probabilities, entropy, domain = out[PROBABILITIES], out[ENTROPY], out.get(DOMAIN_PROBABILITY)
        scores = self.shift_scores(out)
        confident = self.confident(probabilities, entropy)
        k = min(self.top_k, probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        classes = self.info.classes
        return [
            Prediction(
                label=classes[row[0]],
                index=int(row[0]),
                confidence=float(probabilities[i, row[0]]),
                top_k=tuple((classes[j], float(probabilities[i, j])) for j in row),
                entropy=float(entropy[i]),
                domain_probability=None if domain is None else float(domain[i]),
                shift_score=None if scores is None else float(scores[i]),
                shifted=None if scores is None or self.shift_threshold is None else bool(
                    scores[i] > self.shift_threshold),
                confident=None if confident is None else bool(confident[i]),
            )
            for i, row in enumerate(order)
        ]

    def predict_images(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_arrays(self._stack([self.preprocess(im) for im in images]))

    def predict_bytes(self, blobs: Sequence[bytes]) -> list[Prediction]:
        return self.predict_arrays(self._stack([self.decode(b) for b in blobs]))

    def predict_files(self, paths: Iterable[str | Path]) -> list[Prediction]:
        info = self.info
        return self.predict_arrays(self._stack([load_file(p, info.color_mode, info.image_size, self.max_pixels,
                                                          info.load_size) for p in paths]))

    def shift_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """``(N,)`` shift scores from raw outputs, or None when the model carries no shift reference."""
        reference = self.info.shift_reference
        if reference is None:
            return None
        return shift_scores(np.stack([outputs[s] for s in reference["signals"]], axis=1), reference)

    def confident(self, probabilities: np.ndarray, entropy: np.ndarray) -> np.ndarray | None:
        """``(N,)`` booleans: ATC's score (``-entropy`` or the top probability) reaches the model's threshold; None
        for a model exported without ``tada.validation``."""
        validation = self.info.validation
        if validation is None:
            return None
        score = -entropy if validation["atc_score"] == "negative_entropy" else probabilities.max(axis=1)
        return score >= validation["atc_threshold"]

    def _stack(self, arrays: list[np.ndarray]) -> np.ndarray:
        if not arrays:
            size = self.info.image_size
            return np.zeros((0, size, size) if self.info.color_mode == "L" else (0, size, size, 3), np.uint8)
        return np.stack(arrays)

