"""Reading samples out of the Prometheus text format, for the serving tests."""

import re

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name``: its labels and its value."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            found.append((dict(LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return found


def metric(text: str, name: str, **labels: str | int) -> float:
    """The sum of the samples of ``name`` that carry ``labels`` (and any others, e.g. ``release``); 0 when absent."""
    wanted = {k: str(v) for k, v in labels.items()}
    return sum(value for have, value in samples(text, name) if wanted.items() <= have.items())
