"""The run report as one self-contained HTML page: inline CSS and SVG, figures as ``data:`` URIs, no script, and a
Content-Security-Policy that lets the browser load nothing but what the file holds. Every number is read from the
run's files (`tada.report.run.RunFiles`); every text goes through `html.escape`.

Each number of ``metrics.json`` sits in an element whose ``data-metric`` is its dotted key and whose ``data-value``
is the number as JSON, so a reader (or a test) can check the page against the file.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from tada.report.sections import data_section, evaluation_section, export_section, number, training_section

if TYPE_CHECKING:
    from tada.report.run import RunFiles

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
HEADLINE = (("target_accuracy", "target accuracy", "held-out labelled target images"),
            ("estimated_target_accuracy", "estimated target accuracy", "ATC, without target labels"),
            ("source_accuracy", "source accuracy", "held-out source images"))
VALIDATORS = {"neg_entropy": "confidence of the target predictions (minus their mean entropy)",
              "info_max": "confident target predictions spread over the classes (at most ln C)",
              "snd": "soft neighbourhood density of the target features",
              "bnm": "batch nuclear norm of the target predictions",
              "devn": "minus the source validation loss weighted towards target-like images",
              "class_ami": "agreement of the predicted classes with a clustering of the target features"}
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c8cdd8}nav{padding:8px 28px;background:#e8ebf0}nav a{margin-right:16px;color:#1d4ed8}
main{padding:8px 28px 40px;max-width:1400px}section{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;
box-shadow:0 1px 2px #0002}h2{margin:4px 0 12px;font-size:18px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e3e6eb;text-align:left;
vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#6b7280}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e3e6eb;border-radius:8px;padding:10px 16px;
min-width:190px}.card .big{font-size:28px;font-weight:600}.ok{color:#15803d;font-weight:600}
.bad{color:#b91c1c;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0}
figure.chart{border:1px solid #e3e6eb;border-radius:6px;padding:6px}figcaption{font-weight:600;margin-bottom:4px}
svg text{font-size:11px;fill:#4b5563}.plot-area{fill:#fafbfc;stroke:#d1d5db}.grid{stroke:#e5e7eb}
ul.legend{list-style:none;padding:0;margin:4px 0 0;font-size:12px;max-width:360px}ul.legend li{display:inline-block;
margin-right:12px}.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
img.figure{max-width:100%;border:1px solid #e3e6eb;border-radius:6px}code{font-size:12px;word-break:break-all}
.bar{display:inline-block;height:10px;background:#60a5fa;border-radius:2px;vertical-align:middle}
"""


def cell(key: str, value: Any, tag: str = "td", extra: str = "") -> str:
    """A number of ``metrics.json`` shown, with its dotted ``key`` and exact value as data attributes."""
    return (f'<{tag} class="n{extra}" data-metric="{escape(key)}" data-value="{escape(json.dumps(value))}">'
            f"{escape(number(key, value))}</{tag}>")


def summary_section(metrics: dict[str, Any]) -> str:
    last = metrics.get("last_iterate") if isinstance(metrics.get("last_iterate"), dict) else None
    cards = []
    for key, title, what in HEADLINE:
        value = cell(key, metrics[key], "div", " big") if key in metrics else '<div class="big muted">—</div>'
        if key not in metrics:
            what = "the target has no labelled test images"
        also = f'<div>last iterate: {cell(f"last_iterate.{key}", last[key], "span")}</div>' if last and key in last \
            else ""
        cards.append(f'<div class="card"><div>{escape(title)}</div>{value}{also}<div class="muted">{escape(what)}'
                     "</div></div>")
    columns = [("", metrics.get("validators", {}))] + ([("last_iterate.", last.get("validators", {}))] if last else [])
    names = list(dict.fromkeys(k for _, validators in columns for k in validators))
    rows = "".join(f"<tr><th>{escape(name)}</th>" + "".join(
        cell(f"{prefix}validators.{name}", validators[name]) if name in validators else "<td></td>"
        for prefix, validators in columns) + f'<td class="muted">{escape(VALIDATORS.get(name, ""))}</td></tr>'
        for name in names)
    head = '<th class="n">selected</th><th class="n">last iterate</th>' if last else '<th class="n">value</th>'
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
            f"<h3>Label-free validators (higher is better for each)</h3>"
            f"<table><tr><th>validator</th>{head}<th></th></tr>{rows}</table>"
            f"{_selection(metrics)}{_selection(last or {}, 'last_iterate.')}</section>")


def _selection(metrics: dict[str, Any], prefix: str = "") -> str:
    selection = metrics.get("selection")
    if not isinstance(selection, dict):
        return ""
    parts = [f"{escape(k)} {cell(f'{prefix}selection.{k}', v, 'span')}" for k, v in selection.items()]
    return f'<p>Evaluated snapshot ({escape(prefix.rstrip(".") or "train.select")}): {", ".join(parts)}</p>'


def gate_section(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return ""
    verdict = '<span class="ok">promoted</span>' if gate.get("promoted") else '<span class="bad">not promoted</span>'
    metric = str(gate.get("metric", ""))
    estimates = gate.get("estimates") or {}

    def value(role: str, v: Any, key: str) -> str:
        return (f'<td class="n" data-gate="{escape(role)}" data-value="{escape(json.dumps(v))}">'
                f"{escape(number(key, v))}</td>")

    rows = [f"<tr><th>{who}</th>{value(who, gate.get(who), metric)}"
            f"{value(f'estimate.{who}', estimates.get(who), 'accuracy')}</tr>" for who in ("candidate", "production")]
    labels = "target labels" if gate.get("labels_used") else "no target label (a label-free validator)"
    source = f" ({escape(str(gate['production_source']))})" if gate.get("production_source") else ""
    return (f'<section id="gate"><h2>Quality gate</h2><p>{verdict}: {escape(str(gate.get("reason", "")))}</p>'
            f"<p>Compared on <code>{escape(metric)}</code>, using {escape(labels)}; tolerance "
            f"{escape(number('tolerance', gate.get('tolerance')))}.</p>"
            f'<table><tr><th>model</th><th class="n">{escape(metric)}</th><th class="n">estimated target accuracy'
            f"</th></tr>{''.join(rows)}</table>"
            f"<p>Production release after the decision: <code>{escape(str(gate.get('release')))}</code>{source}; "
            f"decided at {escape(str(gate.get('decided_at', '')))}.</p></section>")


def render(run: RunFiles) -> str:
    """The whole page."""
    summary = run.train_summary
    config = summary.get("config", {})
    data = config.get("data", {})
    method = str(summary.get("method", "?"))
    dataset = str(data.get("name", "?")) + (f" ({data['source']} → {data['target']})" if data.get("source") else "")
    sections = [summary_section(run.metrics), gate_section(run.gate), data_section(run.validation, run.evaluation,
                data, run.data_docs), training_section(summary, run.curves),
                evaluation_section(run.evaluation, run.figures), export_section(run.export)]
    nav = [("summary", "Summary"), ("gate", "Quality gate"), ("data", "Data"), ("training", "Training"),
           ("evaluation", "Evaluation"), ("export", "Export")]
    links = " ".join(f'<a href="#{a}">{t}</a>' for a, t in nav if a != "gate" or run.gate is not None)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>TADA run report: {escape(method)} on {escape(dataset)}</title><style>{STYLE}</style></head>"
            f"<body><header><h1>TADA run report: <span id=\"method\">{escape(method)}</span></h1>"
            f"<p>{escape(dataset)} · params digest <code>{escape(str(summary.get('config_digest', '?')))}</code></p>"
            f"</header><nav>{links}</nav><main>{''.join(sections)}</main></body></html>\n")
