"""DVC stage `export`: models/model.onnx (one file, dynamic batch) checked against onnxruntime.

The shift reference (`tada.serving.shift`) is measured on target images only, labels unused: the feature
distribution on the unlabelled target training images, the calibration on the held-out target test images (for a
target without a test split, on the other half of its training images). Both are capped at `REFERENCE_IMAGES`,
evenly spaced, so a large target (VisDA-2017) does not turn the export into hours of CPU inference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipelines._paths import DATA, EXPORT_FAILED, EXPORT_REPORT, MODEL, ONNX_MODEL, PARAMS
from tada.checkpoint import load_checkpoint
from tada.config import ConfigError, load_config
from tada.data.task import center_crop, to_tensor
from tada.export import ExportError, export_verified, metadata
from tada.io import write_json_atomic
from tada.workflows import load_fetched_task

REFERENCE_IMAGES = 4096  # at most, for each of the shift reference's two image sets


def spaced(images: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` images, evenly spaced over ``images`` (all of them when there are fewer)."""
    if len(images) > count:
        images = images[np.linspace(0, len(images) - 1, count).round().astype(int)]
    return np.ascontiguousarray(images)


def main() -> int:
    try:
        params = load_config(PARAMS)
        model, trained, payload = load_checkpoint(MODEL)
        task = load_fetched_task(trained, DATA)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    cfg = params.export
    size = trained.data.image_size
    unlabelled = center_crop(task.target_train.images, size)  # as evaluation sees them (load_size: central crop)
    if task.target_test is not None:
        fit, calibration = unlabelled, task.target_test.images
    else:
        fit, calibration = unlabelled[::2], unlabelled[1::2]
    images = to_tensor(np.ascontiguousarray(calibration[: max(cfg.parity_batch_sizes)]))  # real evaluation images
    meta = metadata(trained, task.classes, payload["in_channels"], payload.get("metrics"))
    try:
        report = export_verified(model, images, ONNX_MODEL, cfg.opset, meta, cfg.parity_batch_sizes,
                                 cfg.parity_tolerance, fit_images=to_tensor(spaced(fit, REFERENCE_IMAGES)),
                                 calibration_images=to_tensor(spaced(calibration, REFERENCE_IMAGES)))
    except ExportError as e:
        write_json_atomic(EXPORT_FAILED, {"passed": False, "error": str(e), **getattr(e, "report", {})})
        print(f"export: {e} (report: {EXPORT_FAILED}; {ONNX_MODEL} left as it was)", file=sys.stderr)
        return 1
    shift = json.loads(report["metadata"]["tada.shift_reference"])
    write_json_atomic(EXPORT_REPORT, {"model": ONNX_MODEL, "opset": cfg.opset, **report, "shift_reference": shift})
    Path(EXPORT_FAILED).unlink(missing_ok=True)
    worst = max(c["max_abs_diff"] for c in report["checks"])
    print(f"export: {ONNX_MODEL} (outputs {', '.join(report['outputs'])}), parity with onnxruntime passed "
          f"(max |diff| {worst:.2e}); shift threshold {shift['threshold']:.2f} -> {EXPORT_REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
