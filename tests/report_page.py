"""What the run report must show of ``reports/metrics.json``, checked on a page read back from a browser or a parser
(for `test_report` and `test_pipeline`)."""

from __future__ import annotations

import json
from typing import Any


def leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"validators": {"snd": 1.0}}`` -> ``{"validators.snd": 1.0}``."""
    found = {}
    for key, value in data.items():
        if isinstance(value, dict):
            found |= leaves(value, f"{prefix}{key}.")
        else:
            found[prefix + key] = value
    return found


def shown_as(key: str, text: str) -> Any:
    """The number (or text) a reader sees, as it would be stored: ``11.69 %`` -> 0.1169."""
    text = text.strip()
    if text.endswith(" %"):
        return float(text[:-2]) / 100
    try:
        return float(text)
    except ValueError:
        return text


def assert_metrics_shown(metrics: dict[str, Any], shown: dict[str, tuple[str, str, bool]]) -> None:
    """Every leaf of ``metrics`` is on the page exactly once under its dotted key, with its exact value in
    ``data-value``, visibly, and as text that rounds to it (percentages to 2 decimals, others to 4)."""
    expected = leaves(metrics)
    assert set(shown) == set(expected), (sorted(set(expected) - set(shown)), sorted(set(shown) - set(expected)))
    for key, value in expected.items():
        data_value, text, displayed = shown[key]
        assert json.loads(data_value) == value, (key, data_value, value)
        assert displayed, f"{key} is not visible"
        seen = shown_as(key, text)
        if isinstance(value, float):
            tolerance = 5e-5 if key.endswith("accuracy") else 5e-5 * max(1.0, abs(value))
            assert abs(seen - value) <= tolerance, (key, text, value)
        else:
            assert seen == value or str(seen) == str(value) or text == str(value), (key, text, value)
