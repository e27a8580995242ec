"""DVC stage `export`: models/model.onnx (one file, dynamic batch) checked against onnxruntime, with the shift
reference measured on target images (labels unused; `tada.export.reference_images`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines._paths import DATA, EXPORT_FAILED, EXPORT_REPORT, MODEL, ONNX_MODEL, PARAMS
from pipelines._stage import user_errors
from tada.checkpoint import load_trained
from tada.config import load_config
from tada.export import ExportError, export_verified, model_info, reference_images
from tada.io import write_json_atomic


def main() -> int:
    with user_errors("export"):
        params = load_config(PARAMS)
        model, trained, payload, task = load_trained(MODEL, DATA)
    cfg = params.export
    parity, fit, calibration = reference_images(task, max(cfg.parity_batch_sizes))
    info = model_info(trained, task.classes, payload["in_channels"], payload["metrics"])
    try:
        report = export_verified(model, parity, ONNX_MODEL, cfg.opset, info, cfg.parity_batch_sizes,
                                 cfg.parity_tolerance, fit_images=fit, calibration_images=calibration,
                                 monitor_tolerance=cfg.monitor_tolerance)
    except ExportError as e:
        write_json_atomic(EXPORT_FAILED, {"passed": False, "error": str(e), **getattr(e, "report", {})})
        print(f"export: {e} (report: {EXPORT_FAILED}; {ONNX_MODEL} left as it was)", file=sys.stderr)
        return 1
    write_json_atomic(EXPORT_REPORT, {"model": ONNX_MODEL, "opset": cfg.opset, **report})
    Path(EXPORT_FAILED).unlink(missing_ok=True)
    worst = max(c["max_abs_diff"] for c in report["checks"])
    monitor = report["monitor"]
    head = "" if not monitor else (
        f"; monitoring head rank {monitor['rank']} of {monitor['hidden']} (domain probability within "
        f"{monitor['max_abs_diff']:.1e})" if monitor["rank"] else f"; monitoring head full rank (no rank within "
        f"{monitor['tolerance']})")
    print(f"export: {ONNX_MODEL} (outputs {', '.join(report['outputs'])}), parity with onnxruntime passed "
          f"(max |diff| {worst:.2e}){head}; shift threshold {report['shift_reference']['threshold']:.2f} -> "
          f"{EXPORT_REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
