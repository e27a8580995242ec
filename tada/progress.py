"""Training progress for people and for machines, from the training loop's `LogRow`s.

On a terminal, a progress bar (tqdm, on stderr): the step out of ``train.iterations``, the rate, the time left and
the latest loss terms (the total and ``L_y``, ``L_l``, ``L_g``, ``L_h``), with one line above it per evaluation.
Where the output is not a terminal (a log file, DVC's or Prefect's captured output), one JSON object per row on
stdout, as before. Each stream decides for itself, so ``tada train > rows.jsonl`` in a terminal gets both: the rows
in the file, the bar on the screen.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tada.train import LogRow

SCHEDULE = ("lr", "grl_coeff")  # logged with the losses, yet not losses: left out of the bar
# The paper's symbols for the loss terms (tada/losses.py), so that the bar's numbers fit beside it on a 120-column
# terminal; the JSON lines and the curves keep the full names.
SYMBOLS = {"source_ce": "L_y", "local_adv": "L_l", "global_adv": "L_g", "entropy": "L_h"}
SCORES = ("target_accuracy", "estimated_target_accuracy", "source_accuracy")  # an evaluation's line, in this order


def json_line(row: LogRow) -> str:
    """A row as one JSON object: ``kind``, ``step`` and its values, floats rounded to 5 decimals."""
    return json.dumps({"kind": row.kind, "step": row.step,
                       **{k: round(v, 5) if isinstance(v, float) else v for k, v in row.values.items()}})


def evaluation_line(row: LogRow) -> str:
    """``step 500: target accuracy 0.7821, estimated target accuracy 0.8050, source accuracy 0.9950``."""
    scores = ", ".join(f"{k.replace('_', ' ')} {row.values[k]:.4f}" for k in SCORES if k in row.values)
    return f"step {row.step}: {scores}"


class TrainingProgress:
    """A ``log`` callback for `tada.train.train`: a bar where ``bar_stream`` is a terminal, JSON lines where
    ``json_stream`` is not.

    Rows arrive every ``train.log_interval`` steps, so the bar moves in those steps. A resumed run replays its earlier
    rows first: the bar jumps to where it left off.

    Args:
        total: the run's iterations (``train.iterations``).
        json_stream: where JSON lines go (default: stdout).
        bar_stream: where the bar goes (default: stderr).
    """

    def __init__(self, total: int, json_stream: TextIO | None = None, bar_stream: TextIO | None = None) -> None:
        self.json_stream = json_stream or sys.stdout
        self.bar_stream = bar_stream or sys.stderr
        self.rows_as_json = not _is_terminal(self.json_stream)
        self.bar = None
        if _is_terminal(self.bar_stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="train", unit="step", file=self.bar_stream, dynamic_ncols=True,
                            smoothing=0.1)

    def __call__(self, row: LogRow) -> None:
        if self.rows_as_json:
            print(json_line(row), file=self.json_stream, flush=True)
        if self.bar is None:
            return
        if row.kind == "train":
            self.bar.set_postfix({SYMBOLS.get(k, k): f"{v:.3g}" for k, v in row.values.items() if k not in SCHEDULE},
                                 refresh=False)
            self.bar.update(row.step - self.bar.n)
        else:
            self.bar.write(evaluation_line(row), file=self.bar_stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
