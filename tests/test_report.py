"""The run report (`tada.report`): every number of metrics.json on the page under its key, nothing loaded from outside
the file, every text escaped; then the page in a real headless chromium cut off from the network."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import assert_offline, available, numbers_shown, open_page
from PIL import Image
from report_page import assert_metrics_shown

from tada.report.charts import line_chart, nice_ticks, read_curves, tick_label
from tada.report.run import RunPaths, write_report

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"metrics": "reports/metrics.json", "evaluation": "reports/evaluation.json",
          "validation": "reports/validation.json", "export": "reports/export.json",
          "train_summary": "reports/train/summary.json", "curves": "reports/train/plots/metrics",
          "figures": "reports/figures", "data_docs": "reports/data_docs/index.html"}
VALIDATORS = {"neg_entropy": -0.41234567, "info_max": 1.7654321, "snd": 7.1234, "bnm": 0.51, "devn": -0.27,
              "class_ami": 0.6}
METRICS = {"target_accuracy": 0.7842323, "source_accuracy": 0.9950000047683716,
           "estimated_target_accuracy": 0.8121, "validators": VALIDATORS,
           "selection": {"rule": "info_max", "step": 2500, "score": 1.7654321},
           "last_iterate": {"target_accuracy": 0.7791, "source_accuracy": 0.99, "estimated_target_accuracy": 0.8,
                            "validators": {**VALIDATORS, "info_max": 1.70001}}}
GATE = {"promoted": False, "reason": "candidate info_max 1.7654 is worse than production's 1.9 by more than the "
        "tolerance", "metric": "info_max", "labels_used": False, "candidate": 1.7654321, "production": 1.9,
        "production_source": "stored metrics (same data)", "tolerance": 0.005, "release": "20250101T000000Z",
        "previous_release": "20250101T000000Z", "decided_at": "2025-01-08T03:00:00+00:00",
        "estimates": {"candidate": 0.8121, "production": 0.83}, "context": {}}
HOSTILE = '<img src="https://example.com/x.png" onerror="alert(1)">'


def png(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (colour, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_run(root: Path, metrics: dict = METRICS, gate: dict | None = GATE, classes: list[str] | None = None) -> Path:
    """A run's outputs as the stages write them (small), under ``root``; returns the report's path."""
    classes = classes or ["0", "1", "2"]
    files = {
        "reports/metrics.json": metrics,
        "reports/evaluation.json": {"source_images": 120, "target_images": 539, "target_labelled": True,
                                    "target_per_class_accuracy": {c: 0.5 + 0.1 * i for i, c in enumerate(classes)},
                                    "local_attention": {"source_mean": 0.31, "target_mean": 0.3, "target_std": 0.01},
                                    "atc_threshold": -0.25, "atc_score": "negative_entropy"},
        "reports/validation.json": {"success": True, "rows": 2117, "classes": classes, "evaluated_expectations": 16,
                                    "failed_expectations": 0, "results": [
                                        {"summary": "image files exist and decode", "success": True,
                                         "expectation": "expect_column_values_to_be_in_set", "unexpected_count": 0}]},
        "reports/export.json": {"model": "models/model.onnx", "opset": 18, "tolerance": 1e-4, "passed": True,
                                "onnxruntime": "1.32.0", "outputs": ["logits", "entropy"],
                                "checks": [{"batch_size": 1, "max_abs_diff": 6.5e-7, "argmax_identical": True,
                                            "passed": True, "outputs": {"logits": 7e-8, "entropy": 6.5e-7}}],
                                "metadata": {"tada.method": "tada", "tada.classes": json.dumps(classes)},
                                "shift_reference": {"threshold": 2.56, "calibration_images": 539}},
        "reports/train/summary.json": {"method": "tada", "seconds": 71.2, "config_digest": "fd7fbf40471e8f1c",
                                       "selection": metrics.get("selection", {}),
                                       "config": {"data": {"name": "synthetic_to_handwritten", "image_size": 28,
                                                           "color_mode": "L"},
                                                  "model": {"backbone": "lenet"},
                                                  "train": {"iterations": 3000, "batch_size": 32}}},
    }
    if gate is not None:
        files["reports/gate.json"] = gate
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(content))
    curves = root / LAYOUT["curves"]
    for name, values in (("train/loss", [4.2, 2.0, float("nan"), 1.1]), ("train/lr", [0.01, 0.008, 0.006, 0.005]),
                         ("eval/target_accuracy", [0.5, 0.78]), ("eval/info_max", [1.2, 1.77])):
        path = curves / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = range(500, 500 * (len(values) + 1), 500)
        path.write_text(f"step\t{path.stem}\n" + "".join(f"{s}\t{v}\n" for s, v in zip(steps, values, strict=True)))
    (root / LAYOUT["figures"]).mkdir(parents=True)
    for i, name in enumerate(("confusion_matrix", "tsne", "attention")):
        (root / LAYOUT["figures"] / f"{name}.png").write_bytes(png(40 * i))
    report = root / "reports/index.html"
    write_report(RunPaths.under(root, LAYOUT, gate="reports/gate.json" if gate is not None else None), report)
    return report


class Elements(HTMLParser):
    """Every element's attributes and the text directly inside it, and every src/href, from the page's source."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict] = []
        self.found: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[a] for a in ("src", "href") if a in attrs]
        if tag not in ("img", "meta", "br", "rect", "line", "circle"):
            self.stack.append({"tag": tag, "attrs": attrs, "text": ""})

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1]["tag"] == tag:
            element = self.stack.pop()
            self.found.append(element)
            if self.stack:
                self.stack[-1]["text"] += element["text"]

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["text"] += data


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def shown(elements: Elements, attribute: str) -> dict[str, tuple[str, str, bool]]:
    found = [e for e in elements.found if attribute in e["attrs"]]
    assert len({e["attrs"][attribute] for e in found}) == len(found), "a key appears twice"
    return {e["attrs"][attribute]: (e["attrs"]["data-value"], e["text"], True) for e in found}


def test_every_number_of_metrics_json_is_on_the_page_under_its_key(tmp_path):
    page = make_run(tmp_path).read_text()
    assert_metrics_shown(METRICS, shown(parse(page), "data-metric"))


def test_the_gate_shows_its_decision_and_both_numbers(tmp_path):
    page = make_run(tmp_path).read_text()
    gate = shown(parse(page), "data-gate")
    assert {k: json.loads(v) for k, (v, _, _) in gate.items()} == {
        "candidate": 1.7654321, "production": 1.9, "estimate.candidate": 0.8121, "estimate.production": 0.83}
    assert gate["candidate"][1] == "1.7654" and gate["estimate.production"][1] == "83.00 %"
    assert "not promoted" in page and "worse than production&#x27;s 1.9" in page
    without = make_run(tmp_path / "flowless", gate=None).read_text()
    assert 'id="gate"' not in without and "data-gate" not in without  # dvc repro alone: no gate ran


def test_an_unlabelled_target_shows_no_target_accuracy(tmp_path):
    metrics = {k: v for k, v in METRICS.items() if k not in ("target_accuracy", "last_iterate")}
    page = make_run(tmp_path, metrics=metrics).read_text()
    assert_metrics_shown(metrics, shown(parse(page), "data-metric"))
    assert "the target has no labelled test images" in page


def test_the_page_refers_to_nothing_outside_itself(tmp_path):
    page = make_run(tmp_path).read_text()
    links = parse(page).links
    assert all(link.startswith(("data:image/png;base64,", "#")) or link == "data_docs/index.html" for link in links)
    assert sum(link.startswith("data:") for link in links) == 3  # the three figures, inlined
    assert "default-src 'none'; img-src data:" in page  # the browser itself refuses anything else
    assert "<script" not in page and not re.search(r"https?://", page)


def test_text_from_the_files_is_escaped(tmp_path):
    page = make_run(tmp_path, classes=["cat", HOSTILE]).read_text()
    assert HOSTILE not in page and "&lt;img src=&quot;https://example.com/x.png&quot;" in page


def test_a_missing_input_is_named(tmp_path):
    make_run(tmp_path)
    (tmp_path / "reports/export.json").unlink()
    with pytest.raises(FileNotFoundError, match="reports/export.json is missing"):
        write_report(RunPaths.under(tmp_path, LAYOUT), tmp_path / "reports/index.html")
    stage = subprocess.run([sys.executable, "-m", "pipelines.report"], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert stage.returncode == 2 and stage.stderr.startswith("report: reports/export.json is missing"), stage.stderr


def test_curves_are_read_from_dvclive_tsvs_and_drawn_without_the_missing_values(tmp_path):
    make_run(tmp_path)
    curves = read_curves(tmp_path / LAYOUT["curves"])
    assert list(curves) == ["eval/info_max", "eval/target_accuracy", "train/loss", "train/lr"]
    assert curves["train/lr"] == [(500.0, 0.01), (1000.0, 0.008), (1500.0, 0.006), (2000.0, 0.005)]
    chart = line_chart("loss", {"train/loss": curves["train/loss"]})
    [points] = re.findall(r'<polyline points="([^"]+)"', chart)
    assert len(points.split()) == 3 and "nan" not in points  # the NaN is left out of the line
    assert "train/loss" in chart and "1.1" in chart  # the legend: the curve and its last value
    assert "nothing logged" in line_chart("empty", {"train/x": []})


def test_ticks_are_round_and_their_labels_distinct():
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(500, 3000) == [500, 1000, 1500, 2000, 2500, 3000]
    ticks = nice_ticks(0.3105, 0.3121, 4)
    labels = [tick_label(t, ticks) for t in ticks]
    assert len(set(labels)) == len(labels) and all(math.isclose(float(x), t) for x, t in zip(labels, ticks,
                                                                                                strict=True))


@pytest.fixture(scope="module")
def chromium():
    why = available()
    if why:
        pytest.fail(f"the run report's browser tests need chromium: {why}")


def test_the_page_in_a_real_browser_offline(chromium, tmp_path):
    with open_page(make_run(tmp_path, classes=["cat", HOSTILE])) as page:
        assert_offline(page)  # the hostile class name would have requested example.com, had it not been escaped
        assert_metrics_shown(METRICS, numbers_shown(page))
        gate = numbers_shown(page, "data-gate")
        assert json.loads(gate["production"][0]) == GATE["production"] and gate["production"][1] == "1.9000"
        assert page.driver.execute_script("return document.querySelectorAll('svg polyline').length") == 4
