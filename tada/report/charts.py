"""Training curves as inline SVG, drawn in Python from dvclive's TSV files: no charting library, no request.

A curve is ``[(step, value), ...]``; `line_chart` draws several on shared axes and returns an HTML ``<figure>``.
"""

from __future__ import annotations

import csv
import math
from html import escape
from pathlib import Path

Curve = list[tuple[float, float]]
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 360, 200
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 10, 30  # the plot area's margins, pixels


def read_curves(directory: str | Path) -> dict[str, Curve]:
    """Every ``<kind>/<name>.tsv`` under ``directory`` (dvclive's ``plots/metrics``), as ``{"train/loss": [(step,
    value), ...]}`` sorted by name."""
    directory = Path(directory)
    curves = {}
    for path in sorted(directory.rglob("*.tsv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        curves[path.relative_to(directory).with_suffix("").as_posix()] = [
            (float(row["step"]), float(row[path.stem])) for row in rows]
    return curves


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if not high > low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_label(value: float, ticks: list[float]) -> str:
    """``value`` with as many decimals as the spacing of ``ticks`` needs (0.3105, 0.311, 0.3115 stay distinct)."""
    step = min((b - a for a, b in zip(ticks, ticks[1:], strict=False)), default=0.0)
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 3
    return f"{value:.{decimals}f}"


def line_chart(title: str, curves: dict[str, Curve]) -> str:
    """``curves`` (name -> points) on shared axes with a legend of each curve's last value, as a ``<figure>``.

    Non-finite values are left out of the drawing (the legend still shows the last value as logged).
    """
    shown = {name: [(x, y) for x, y in points if math.isfinite(y)] for name, points in curves.items()}
    points = [p for curve in shown.values() for p in curve]
    caption = f"<figcaption>{escape(title)}</figcaption>"
    if not points:
        return f'<figure class="chart">{caption}<p class="muted">nothing logged</p></figure>'
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys), 4)
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
        y_ticks = nice_ticks(y0, y1, 4)

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
             'class="plot-area"/>']
    for y in y_ticks:
        if y0 <= y <= y1:
            parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                         f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
                         f"{escape(tick_label(y, y_ticks))}</text>")
    for x in x_ticks:
        if x0 <= x <= x1:
            parts.append(f'<text x="{sx(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                         f'{escape(tick_label(x, x_ticks))}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 2}" text-anchor="end" class="muted">step</text>')
    legend = []
    for i, (name, curve) in enumerate(shown.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in curve)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8" '
                     f'data-curve="{escape(name)}"><title>{escape(name)}</title></polyline>')
        if len(curve) <= 40:  # few points (evaluations): mark each
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in curve]
        last = curves[name][-1][1] if curves[name] else float("nan")
        legend.append(f'<li><span class="swatch" style="background:{colour}"></span>{escape(name)} '
                      f'<span class="muted">{last:.4g}</span></li>')
    svg = (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
           f'aria-label="{escape(title)}">{"".join(parts)}</svg>')
    return f'<figure class="chart">{caption}{svg}<ul class="legend">{"".join(legend)}</ul></figure>'
