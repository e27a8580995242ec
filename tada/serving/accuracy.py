"""The accuracy of live traffic, estimated without labels: ATC (Garg et al., ICLR 2022) on the served images.

At export the model stores ``tada.validation``: the confidence threshold at which the held-out source images are
confident exactly as often as they are right, and the fraction of unlabelled target images above it, the estimated
target accuracy. The service applies the same threshold to every image it predicts (`Prediction.confident`); the
fraction of confident images in the last ``window`` estimates the accuracy on current traffic. A window well below
the export-time estimate means the traffic is harder than the target images the model was judged on.
"""

from __future__ import annotations

from tada.serving.window import RollingWindow


class AccuracyMonitor(RollingWindow[bool]):
    """The ``confident`` flags of the last ``window`` images, summarised for /health and /metrics. Thread-safe."""

    def __init__(self, window: int, at_export: float) -> None:
        super().__init__(window, "accuracy")
        self.at_export = at_export

    def summary(self) -> dict[str, float | int | None]:
        """``images`` in the window, ``estimated_accuracy`` over them (None when empty), the ``at_export``
        estimate on the target images and the ``window`` size."""
        flags = self.snapshot()
        return {"window": self.window, "images": len(flags), "at_export": self.at_export,
                "estimated_accuracy": sum(flags) / len(flags) if flags else None}
