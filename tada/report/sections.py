"""The run report's sections beyond the summary: the data and its validation, training (the curves), evaluation
(per class, attention, the figures) and the export (parity, metadata). Each is a pure function of loaded files
returning HTML; every text is escaped."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from tada.report.charts import Curve, line_chart

FIGURES = {"confusion_matrix": "Confusion matrix", "tsne": "t-SNE of bottleneck features (source vs target)",
           "attention": "Local attention on target images"}
SCHEDULE = ("train/lr", "train/grl_coeff")


def number(key: str, value: Any) -> str:
    """Accuracies as percentages, other floats with 4 decimals, the rest as they are."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{100 * value:.2f} %" if key.endswith("accuracy") else f"{value:.4f}"
    return str(value)


def _sci(value: Any) -> str:
    return f"{value:.2e}" if isinstance(value, float) else escape(str(value))


def _status(ok: bool, yes: str = "passed", no: str = "failed") -> str:
    return f'<span class="ok">{yes}</span>' if ok else f'<span class="bad">{no}</span>'


def _facts(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already escaped by the caller."""
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def figure(name: str, content: bytes, caption: str) -> str:
    """A PNG inlined as a ``data:`` URI."""
    uri = "data:image/png;base64," + base64.b64encode(content).decode("ascii")
    return (f'<figure id="figure-{escape(name)}"><figcaption>{escape(caption)}</figcaption>'
            f'<img class="figure" alt="{escape(caption)}" src="{uri}"></figure>')


def data_section(validation: dict[str, Any], evaluation: dict[str, Any], data: dict[str, Any], data_docs: str) -> str:
    classes = [str(c) for c in validation.get("classes", [])]
    failed, evaluated = validation.get("failed_expectations"), validation.get("evaluated_expectations")
    domains = f"{data['source']} → {data['target']}" if data.get("source") else "source → target"
    facts = _facts([
        ("dataset", escape(f"{data.get('name', '?')} ({domains})")),
        ("images in the manifest", escape(str(validation.get("rows")))),
        ("classes", escape(f"{len(classes)}: {', '.join(classes[:40])}{' …' if len(classes) > 40 else ''}")),
        ("image size, colour mode", escape(f"{data.get('image_size')} px, {data.get('color_mode')}")),
        ("held-out source images scored", escape(str(evaluation.get("source_images")))),
        ("target images evaluated", escape(str(evaluation.get("target_images")))
         + (" (labelled)" if evaluation.get("target_labelled") else " (unlabelled: predictions only)")),
    ])
    rows = "".join(
        f"<tr><td>{escape(str(r.get('summary')))}</td><td><code>{escape(str(r.get('expectation')))}</code></td>"
        f"<td>{_status(bool(r.get('success')))}</td><td class=\"n\">{escape(number('', r.get('unexpected_count')))}"
        "</td></tr>" for r in validation.get("results", []))
    return (f'<section id="data"><h2>Data</h2>{facts}<h3>Validation (Great Expectations)</h3>'
            f"<p>{_status(bool(validation.get('success')))}: {escape(str(evaluated))} expectations evaluated, "
            f"{escape(str(failed))} failed. <a href=\"{escape(data_docs)}\">Data Docs</a> (written beside this "
            f"report by the validate stage).</p><details><summary>Every expectation</summary><table><tr>"
            f"<th>check</th><th>expectation</th><th>result</th><th class=\"n\">unexpected rows</th></tr>{rows}"
            "</table></details></section>")


def chart_groups(curves: dict[str, Curve]) -> list[tuple[str, dict[str, Curve]]]:
    """The charts to draw: the loss terms together, the schedules, the accuracies, the attention and domain
    statistics, then every other curve (each validator, ATC's threshold) on its own axes."""

    def pick(names: list[str]) -> dict[str, Curve]:
        return {n: curves[n] for n in names if n in curves}

    names = list(curves)
    groups = [("Loss terms (mean over each logging interval)",
               pick([n for n in names if n.startswith("train/") and n not in SCHEDULE])),
              ("Learning rate", pick(["train/lr"])), ("GRL coefficient", pick(["train/grl_coeff"])),
              ("Accuracies", pick([n for n in names if n.startswith("eval/") and n.endswith("accuracy")])),
              ("Mean local attention", pick([n for n in names if n.endswith("_mean_local_attention")])),
              ("Mean domain probability", pick([n for n in names if n.endswith("_mean_domain_probability")]))]
    shown = {n for _, group in groups for n in group}
    groups += [(n.split("/", 1)[-1], {n: curves[n]}) for n in names if n not in shown]
    return [(title, group) for title, group in groups if group]


def training_section(summary: dict[str, Any], curves: dict[str, Curve]) -> str:
    config = summary.get("config", {})
    train, model = config.get("train", {}), config.get("model", {})
    selection = summary.get("selection", {})
    seconds = summary.get("seconds")
    facts = _facts([
        ("method, backbone", escape(f"{summary.get('method')}, {model.get('backbone')}")),
        ("iterations", escape(f"{train.get('iterations')} of {train.get('batch_size')} source + "
                              f"{train.get('batch_size')} target images")),
        ("training time", escape(f"{seconds:.1f} s" if isinstance(seconds, float | int) else str(seconds))),
        ("model kept", escape(f"{selection.get('rule')} (step {selection.get('step')})")),
    ])
    charts = "".join(line_chart(title, group) for title, group in chart_groups(curves))
    return (f'<section id="training"><h2>Training</h2>{facts}<h3>Curves</h3>'
            f'<div class="charts">{charts or "<p class=muted>no curves logged</p>"}</div></section>')


def evaluation_section(evaluation: dict[str, Any], figures: dict[str, bytes]) -> str:
    parts = ['<section id="evaluation"><h2>Evaluation</h2>']
    per_class = evaluation.get("target_per_class_accuracy")
    if per_class:
        rows = "".join(f'<tr><th>{escape(str(c))}</th><td class="n">{escape(number("accuracy", a))}</td>'
                       f'<td><span class="bar" style="width:{max(0.0, min(1.0, a)) * 160:.0f}px"></span></td></tr>'
                       for c, a in per_class.items())
        parts.append(f"<h3>Target accuracy per class</h3><table>{rows}</table>")
    stats = [(name, evaluation[name]) for name in ("local_attention", "domain_probability")
             if isinstance(evaluation.get(name), dict)]
    if stats:
        rows = "".join(f"<tr><th>{escape(name.replace('_', ' '))}</th>" + "".join(
            f'<td class="n">{escape(number(k, s.get(k)))}</td>' for k in ("source_mean", "target_mean", "target_std"))
            + "</tr>" for name, s in stats)
        parts.append('<h3>Attention and domain statistics</h3><table><tr><th></th><th class="n">source mean</th>'
                     f'<th class="n">target mean</th><th class="n">target std</th></tr>{rows}</table>')
    if "atc_threshold" in evaluation:
        parts.append(f"<p>ATC's threshold: {escape(number('atc_threshold', evaluation['atc_threshold']))} "
                     f"(score <code>{escape(str(evaluation.get('atc_score')))}</code>).</p>")
    names = [n for n in FIGURES if n in figures] + [n for n in figures if n not in FIGURES]
    parts += [figure(n, figures[n], FIGURES.get(n, n)) for n in names]
    return "".join(parts) + "</section>"


def export_section(export: dict[str, Any]) -> str:
    outputs = [str(o) for o in export.get("outputs", [])]
    reference = export.get("shift_reference") or {}
    facts = _facts([
        ("parity with onnxruntime", _status(bool(export.get("passed")))
         + escape(f" (tolerance {_sci(export.get('tolerance'))}, onnxruntime {export.get('onnxruntime')})")),
        ("model", f"<code>{escape(str(export.get('model')))}</code>" + escape(f", opset {export.get('opset')}")),
        ("outputs", escape(", ".join(outputs))),
        ("shift threshold", escape(f"{number('', reference.get('threshold'))} (99th percentile of "
                                   f"{reference.get('calibration_images')} calibration images)")),
    ])
    head = "".join(f'<th class="n">{escape(o)}</th>' for o in outputs)
    rows = "".join(
        f'<tr><td class="n">{escape(str(c.get("batch_size")))}</td><td class="n">{_sci(c.get("max_abs_diff"))}</td>'
        f"<td>{_status(bool(c.get('argmax_identical')), 'identical', 'different')}</td>"
        f"<td>{_status(bool(c.get('passed')))}</td>"
        + "".join(f'<td class="n">{_sci((c.get("outputs") or {}).get(o))}</td>' for o in outputs) + "</tr>"
        for c in export.get("checks", []))
    metadata = "".join(f"<tr><th>{escape(str(k))}</th><td><code>{escape(str(v))}</code></td></tr>"
                       for k, v in (export.get("metadata") or {}).items())
    return (f'<section id="export"><h2>Export (ONNX)</h2>{facts}<h3>Parity checks (max |difference| per output)'
            f'</h3><table><tr><th class="n">batch</th><th class="n">max</th><th>argmax</th><th>check</th>{head}</tr>'
            f"{rows}</table><h3>Model metadata</h3><details open><summary>{len(export.get('metadata') or {})} keys"
            f"</summary><table>{metadata}</table></details></section>")
