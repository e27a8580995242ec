"""DVC stage `export`: models/model.onnx (one file, dynamic batch) checked against onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines._paths import DATA, EXPORT_FAILED, EXPORT_REPORT, MODEL, ONNX_MODEL, PARAMS
from tada.checkpoint import load_checkpoint
from tada.config import ConfigError, load_config
from tada.data.task import to_tensor
from tada.export import ExportError, export_verified, metadata
from tada.io import write_json_atomic
from tada.workflows import load_fetched_task


def main() -> int:
    try:
        params = load_config(PARAMS)
        model, trained, payload = load_checkpoint(MODEL)
        task = load_fetched_task(trained, DATA)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    cfg = params.export
    images = to_tensor(task.target_test.images[: max(cfg.parity_batch_sizes)])  # real evaluation images
    meta = metadata(trained, task.classes, payload["in_channels"])
    try:
        parity = export_verified(model, images, ONNX_MODEL, cfg.opset, meta, cfg.parity_batch_sizes,
                                 cfg.parity_tolerance)
    except ExportError as e:
        write_json_atomic(EXPORT_FAILED, {"passed": False, "error": str(e), **getattr(e, "report", {})})
        print(f"export: {e} (report: {EXPORT_FAILED}; {ONNX_MODEL} left as it was)", file=sys.stderr)
        return 1
    write_json_atomic(EXPORT_REPORT, {"model": ONNX_MODEL, "opset": cfg.opset, "metadata": meta, **parity})
    Path(EXPORT_FAILED).unlink(missing_ok=True)
    worst = max(c["max_abs_diff"] for c in parity["checks"])
    print(f"export: {ONNX_MODEL}, parity with onnxruntime passed (max |logit diff| {worst:.2e}) -> {EXPORT_REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
