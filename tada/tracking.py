"""Experiment tracking with dvclive: per-iteration metrics that `dvc plots show` draws and `dvc metrics show` lists."""

from __future__ import annotations

from pathlib import Path


class LiveLogger:
    """Receives the training loop's log rows and writes them with dvclive.

    Loss rows become ``train/<term>`` (each loss term, ``lr``, ``grl_coeff``) and evaluation rows ``eval/<metric>``,
    all against the iteration number. dvclive is told not to touch ``dvc.yaml`` nor to save experiments itself:
    the DVC stage owns both.
    """

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, row: dict[str, float]) -> None:
        self.live.step = int(row["step"])
        prefix = "train" if "loss" in row else "eval"
        for name, value in row.items():
            if name != "step":
                self.live.log_metric(f"{prefix}/{name}", value, plot=True)

    def close(self) -> None:
        self.live.make_summary()
        self.live.end()
