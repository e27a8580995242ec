"""The Prefect flow's markdown summary of a run (an artifact): metrics, the gate's decision, stage timings."""

from __future__ import annotations

from typing import Any


def _number(metric: str, value: float | None) -> str:
    """Accuracies as percentages, other validators as they are."""
    if value is None:
        return "—"
    return f"{100 * value:.2f} %" if metric.endswith("accuracy") else f"{value:.4f}"


def run_markdown(stages: list[dict[str, Any]], metrics: dict[str, Any], decision: dict[str, Any],
                 experiment: str | None, report: str | None = None) -> str:
    """The flow run's report as markdown (a Prefect artifact): metrics and validators, the gate's decision with both
    numbers and whether target labels were used, each stage's timing, and a link to the run report (``report``: its
    URI) with the curves and figures."""
    verdict = "**promoted**" if decision["promoted"] else "**not promoted**"
    metric = decision["metric"]
    labels = ("target labels (labelled target test images)" if decision["labels_used"] else
              "no target label (a label-free validator)")
    estimates = decision.get("estimates") or {}
    lines = [
        "# TADA retraining run", "",
        f"Method `{metrics.get('method', '?')}`" + (f", DVC experiment `{experiment}`" if experiment else ""), "",
        *([f"The whole run in one page (curves, figures, export, the gate): [run report]({report})", ""]
          if report else []),
        "| metric | value |", "|---|---|",
        f"| target accuracy | {_number('target_accuracy', metrics.get('target_accuracy'))} |",
        f"| estimated target accuracy (ATC, label-free) | "
        f"{_number('accuracy', metrics.get('estimated_target_accuracy'))} |",
        f"| source accuracy (held out) | {_number('source_accuracy', metrics.get('source_accuracy'))} |",
        *(f"| {name} (validator) | {_number(name, value)} |"
          for name, value in (metrics.get("validators") or {}).items()), "",
        "## Quality gate", "",
        f"{verdict}: {decision['reason']}", "",
        f"Compared on `{metric}`, using {labels}.", "",
        f"| {metric} | value | estimated target accuracy |", "|---|---|---|",
        f"| candidate | {_number(metric, decision['candidate'])} | {_number('accuracy', estimates.get('candidate'))} |",
        f"| production | {_number(metric, decision['production'])}"
        + (f" ({decision['production_source']})" if decision["production_source"] else "")
        + f" | {_number('accuracy', estimates.get('production'))} |",
        f"| tolerance | {decision['tolerance']} | |",
        f"| production release | `{decision['release']}` | |", "",
        "## Stages", "", "| stage | DVC | seconds |", "|---|---|---|",
        *(f"| {s['stage']} | {'ran' if s['ran'] else 'up to date'} | {s['seconds']:.1f} |" for s in stages),
    ]
    return "\n".join(lines) + "\n"
