"""Production inference with onnxruntime: `Predictor`, the ``tada predict`` batch job and the HTTP service.

Never imports torch or torchvision (numpy, Pillow, onnxruntime; FastAPI and uvicorn for the service, in the
``serve`` extra). Everything about preprocessing comes from the exported model's metadata. The names below are
imported on first use, so ``tada.serving.settings`` or ``tada.serving.shift`` do not load onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Predictor": "predictor", "Prediction": "predictor", "ModelInfo": "model_info", "ModelError": "model_info"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
