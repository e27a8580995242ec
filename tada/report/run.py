"""The run report's input: what one pipeline run wrote, loaded once, and the report written from it.

`RunPaths` names the files (``pipelines/_paths.py`` holds the layout, ``REPORT_INPUTS``); `RunFiles` is their
content; `tada.report.page.render` turns that into the page, so the DVC stage ``report`` and the Prefect flow (after
its gate) write the same page from the same files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tada.io import write_text_atomic
from tada.report.charts import Curve, read_curves
from tada.report.page import render


@dataclass(frozen=True)
class RunPaths:
    """Where a run's outputs are: the stages' reports, the training curves (dvclive's ``plots/metrics``), the
    figures (``*.png``), the Data Docs (linked to, not read) and, after the flow's gate, its decision."""

    metrics: Path
    evaluation: Path
    validation: Path
    export: Path
    train_summary: Path
    curves: Path
    figures: Path
    data_docs: Path
    gate: Path | None = None

    @classmethod
    def under(cls, root: str | Path, layout: dict[str, str], gate: str | None = None) -> RunPaths:
        """``layout`` (field name -> path relative to ``root``) resolved under ``root``; ``gate`` likewise."""
        root = Path(root)
        return cls(**{name: root / path for name, path in layout.items()}, gate=root / gate if gate else None)


@dataclass(frozen=True)
class RunFiles:
    """The content of a run's outputs. ``data_docs`` is the Data Docs' path relative to the report (a link);
    ``gate`` is None when no gate decided on this run."""

    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    validation: dict[str, Any]
    export: dict[str, Any]
    train_summary: dict[str, Any]
    curves: dict[str, Curve]
    figures: dict[str, bytes]
    data_docs: str
    gate: dict[str, Any] | None = None

    @classmethod
    def read(cls, paths: RunPaths, report: str | Path) -> RunFiles:
        """Load every file of ``paths``; a missing one is a `FileNotFoundError` naming it (the gate's only when
        asked for)."""

        def load(path: Path) -> dict[str, Any]:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the stage that writes it (dvc repro)")
            return json.loads(path.read_text(encoding="utf-8"))

        if not paths.figures.is_dir():
            raise FileNotFoundError(f"{paths.figures} is missing: run the evaluate stage (dvc repro)")
        return cls(metrics=load(paths.metrics), evaluation=load(paths.evaluation), validation=load(paths.validation),
                   export=load(paths.export), train_summary=load(paths.train_summary),
                   curves=read_curves(paths.curves),
                   figures={p.stem: p.read_bytes() for p in sorted(paths.figures.glob("*.png"))},
                   data_docs=Path(os.path.relpath(paths.data_docs, Path(report).parent)).as_posix(),
                   gate=load(paths.gate) if paths.gate else None)


def write_report(paths: RunPaths, report: str | Path) -> int:
    """Render the run of ``paths`` into ``report`` (atomically); returns its size in bytes."""
    page = render(RunFiles.read(paths, report))
    write_text_atomic(report, page)
    return len(page.encode("utf-8"))
