"""The accuracy of live traffic, estimated without labels: ATC (Garg et al., ICLR 2022) on the served images.

At export the model stores ``tada.validation``: the confidence threshold at which the held-out source images are
confident exactly as often as they are right, and the fraction of unlabelled target images above it, the estimated
target accuracy. The service applies the same threshold to every image it predicts (`Prediction.confident`); the
fraction of confident images in the last ``window`` estimates the accuracy on current traffic. A window well below
the export-time estimate means the traffic is harder than the target images the model was judged on.
"""

from __future__ import annotations

import threading
from collections import deque


class AccuracyMonitor:
    """The ``confident`` flags of the last ``window`` images, summarised for /health and /metrics. Thread-safe."""

    def __init__(self, window: int, at_export: float) -> None:
        if window < 1:
            raise ValueError(f"accuracy window must be >= 1, got {window}")
        self.window, self.at_export = window, at_export
        self._confident: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, confident: list[bool]) -> None:
        with self._lock:
            self._confident.extend(confident)

    def summary(self) -> dict[str, float | int | None]:
        """``images`` in the window, ``estimated_accuracy`` over them (None when empty), the ``at_export``
        estimate on the target images and the ``window`` size."""
        with self._lock:
            flags = list(self._confident)
        return {"window": self.window, "images": len(flags), "at_export": self.at_export,
                "estimated_accuracy": sum(flags) / len(flags) if flags else None}
