"""What an exported model says about itself: the ``tada.*`` metadata written by `tada.export`.

The predictor takes everything it needs from here (class names, input size, colour mode, normalisation, output
names, shift reference), so serving cannot drift from what training did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Graph input and outputs, shared with tada.export (which writes them) so both sides spell them the same.
INPUT = "image"
LOGITS, PROBABILITIES, ENTROPY = "logits", "probabilities", "entropy"
DOMAIN_PROBABILITY, FEATURE_DISTANCE = "domain_probability", "feature_distance"
ATC_SCORES = ("negative_entropy", "max_confidence")  # as tada.validators.ATC_SCORES (that module needs more)


class ModelError(ValueError):
    """The file is not a usable TADA model (missing or malformed metadata, unexpected graph)."""


@dataclass(frozen=True)
class ModelInfo:
    """The model's metadata, parsed and checked.

    Attributes:
        classes: class names in logit order.
        input_size: ``(C, S, S)``.
        load_size: images are resized to ``L x L``, then their central ``S x S`` window is taken (``L = S``: none).
        color_mode: the PIL mode images are converted to, ``"L"`` (C = 1) or ``"RGB"`` (C = 3).
        scale, offset: ``x = pixel * scale + offset`` (uint8 pixels to the network's input range).
        outputs: graph output names, in order.
        shift_reference: `tada.serving.shift.calibrate`'s result, or None for a model exported without one.
        validation: the label-free evaluation at export (``tada.validation``: ATC's ``estimated_target_accuracy``,
            ``atc_threshold`` and ``atc_score``, ``source_accuracy``, the ``validators``), or None.
        extra: the remaining ``tada.*`` keys (method, backbone, params hash) as strings.
    """

    classes: tuple[str, ...]
    input_size: tuple[int, int, int]
    load_size: int
    color_mode: str
    scale: float
    offset: float
    outputs: tuple[str, ...]
    shift_reference: dict[str, Any] | None
    validation: dict[str, Any] | None
    extra: dict[str, str]

    @property
    def image_size(self) -> int:
        return self.input_size[1]

    @classmethod
    def from_metadata(cls, meta: dict[str, str], graph_outputs: tuple[str, ...], source: str = "model") -> ModelInfo:
        """Parse ``meta`` (the ONNX ``metadata_props``), naming ``source`` and the key in every error."""

        def field(key: str) -> Any:
            if key not in meta:
                raise ModelError(f"{source}: metadata key {key!r} missing; export the model with `dvc repro export`"
                                 " (tada.export), which writes the class names, input size and normalisation")
            try:
                return json.loads(meta[key])
            except json.JSONDecodeError as e:
                raise ModelError(f"{source}: metadata {key!r} is not JSON ({e}): {meta[key][:80]!r}") from None

        classes = field("tada.classes")
        size = field("tada.input_size")
        norm = field("tada.normalisation")
        mode = meta.get("tada.color_mode")
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise ModelError(f"{source}: tada.classes must be a non-empty list of names, got {classes!r}")
        if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)
                and size[1] == size[2]):
            raise ModelError(f"{source}: tada.input_size must be [C, S, S], got {size!r}")
        if (mode, size[0]) not in (("L", 1), ("RGB", 3)):
            raise ModelError(f"{source}: tada.color_mode {mode!r} does not fit {size[0]} input channels")
        if not (isinstance(norm, dict) and {"scale", "offset"} <= norm.keys()):
            raise ModelError(f"{source}: tada.normalisation must have scale and offset, got {norm!r}")
        load_size = field("tada.load_size")
        if not (isinstance(load_size, int) and load_size >= size[1]):
            raise ModelError(f"{source}: tada.load_size must be an integer >= the input size {size[1]}, "
                             f"got {load_size!r}")
        declared = tuple(field("tada.outputs"))
        if declared != graph_outputs:
            raise ModelError(f"{source}: metadata names outputs {list(declared)}, the graph has {list(graph_outputs)}")
        reference = field("tada.shift_reference") if "tada.shift_reference" in meta else None
        if reference is not None:
            missing = [s for s in reference.get("signals", ()) if s not in graph_outputs]
            if missing or not reference.get("signals"):
                raise ModelError(f"{source}: shift reference needs outputs {missing or '(none named)'}")
        validation = field("tada.validation") if "tada.validation" in meta else None
        if validation is not None:
            if not (isinstance(validation, dict) and {"atc_threshold", "atc_score", "estimated_target_accuracy"}
                    <= validation.keys() and validation["atc_score"] in ATC_SCORES):
                raise ModelError(f"{source}: tada.validation needs atc_threshold, atc_score (one of "
                                 f"{', '.join(ATC_SCORES)}) and estimated_target_accuracy, got {validation!r}")
            if validation["atc_score"] == "negative_entropy" and ENTROPY not in graph_outputs:
                raise ModelError(f"{source}: tada.validation's negative_entropy score needs the {ENTROPY} output")
        known = {"tada.classes", "tada.input_size", "tada.load_size", "tada.color_mode", "tada.normalisation",
                 "tada.outputs", "tada.shift_reference", "tada.validation"}
        extra = {k.removeprefix("tada."): v for k, v in meta.items() if k.startswith("tada.") and k not in known}
        return cls(tuple(classes), (size[0], size[1], size[2]), load_size, mode, float(norm["scale"]),
                   float(norm["offset"]), graph_outputs, reference, validation, extra)

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` `from_metadata` reads back (written by `tada.export`)."""
        meta = {
            "tada.classes": json.dumps(list(self.classes)),
            "tada.input_size": json.dumps(list(self.input_size)),
            "tada.load_size": json.dumps(self.load_size),
            "tada.color_mode": self.color_mode,
            "tada.normalisation": json.dumps({"scale": self.scale, "offset": self.offset}),
            "tada.outputs": json.dumps(list(self.outputs)),
        }
        for key, value in (("tada.shift_reference", self.shift_reference), ("tada.validation", self.validation)):
            if value is not None:
                meta[key] = json.dumps(value)
        return meta | {f"tada.{k}": v for k, v in self.extra.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON for GET /metadata."""
        return {"classes": list(self.classes), "input_size": list(self.input_size), "load_size": self.load_size,
                "color_mode": self.color_mode,
                "normalisation": {"scale": self.scale, "offset": self.offset}, "outputs": list(self.outputs),
                "shift_reference": self.shift_reference, "validation": self.validation, **self.extra}
