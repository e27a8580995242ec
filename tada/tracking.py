"""Experiment tracking with dvclive: per-iteration curves that `dvc plots show` and the run report draw."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tada.train import LogRow


class LiveLogger:
    """Receives the training loop's log rows and writes them with dvclive.

    Loss rows become ``train/<term>`` (each loss term, ``lr``, ``grl_coeff``) and evaluation rows ``eval/<metric>``,
    all against the iteration number. dvclive is told not to touch ``dvc.yaml`` nor to save experiments itself:
    the DVC stage owns both.
    """

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, row: LogRow) -> None:
        self.live.step = row.step
        for name, value in row.values.items():
            self.live.log_metric(f"{row.kind}/{name}", value, plot=True)

    def close(self) -> None:
        self.live.make_summary()
        self.live.end()
