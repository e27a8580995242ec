"""The figures in README.md and docs/*.md, generated from the benchmarks' result files.

    python benchmarks/doc_tables.py            # rewrite every generated block from benchmarks/results/*.json
    python benchmarks/doc_tables.py --check    # exit 1 naming each block that differs from what its JSON gives

A generated block is the text between ``<!-- table: NAME -->`` and ``<!-- /table -->``; NAME is a key of
`RENDERERS` (most are the name of a result file, whose benchmark stored its own printout under ``markdown``), and
``<!-- table: NAME N -->`` takes only the N-th markdown table of what NAME renders (the page explains it). The
block is replaced whole, so a figure typed into it by hand does not survive the next run, and
``tests/test_doc_tables.py`` fails while a committed block differs from its JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z0-9_]+)(?: (?P<part>[1-9]))? -->\n)(?P<body>.*?)(<!-- /table -->)",
                   re.DOTALL)


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"doc_tables: {path.relative_to(ROOT)} does not exist (run its benchmark first)") from None


def printout(name: str) -> Callable[[str], str]:
    """The benchmark's own markdown, as it printed it, and the command that made it."""
    def render(up: str) -> str:
        result = load(name)
        if not isinstance(result.get("markdown"), str):
            raise SystemExit(f"doc_tables: benchmarks/results/{name}.json has no 'markdown' printout")
        return f"{result['markdown'].strip()}\n\n{command_line(result, name, up)}"
    return render


def command_line(result: dict, name: str, up: str) -> str:
    """Where the figures come from: the command and a link to the JSON (``up``: the document's way to the root)."""
    command = str(result.get("command", "")).strip()
    source = f"[`{name}.json`]({up}benchmarks/results/{name}.json)"
    return f"(`{command}`; {source})" if command else f"({source})"


def loadtest(up: str) -> str:
    rows = ["| load test | errors | throughput | latency p50 / p95 / p99 |", "|---|---|---|---|"]
    commands = []
    for name in ("loadtest", "loadtest_batch8"):
        r = load(name)
        latency = r["latency_ms"]
        each = "1 image each" if r["images_per_request"] == 1 else f"{r['images_per_request']} images each"
        throughput = f"{r['throughput_rps']:,.0f} requests/s"
        if r["images_per_request"] != 1:
            throughput += f" ({r['throughput_images_per_s']:,.0f} images/s)"
        rows.append(f"| {r['requests']:,} requests, {each}, {r['concurrency']} clients | {r['errors']} | "
                    f"{throughput} | {latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f} ms |")
        commands.append(command_line(r, name, up))
    return "\n".join(rows) + "\n\n" + " ".join(commands)


def onnxruntime_vs_torch(up: str) -> str:
    r = load("onnxruntime_vs_torch")
    models = {"default": "default (LeNet TADA, 28 px)", "resnet50_224": "ResNet-50 TADA, 224 px"}
    rows = ["| model | batch | PyTorch eager (ms) | onnxruntime (ms) | onnxruntime / eager |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        ratio = f"{row['ratio']:.2f}"
        if row["batch_size"] == 1:
            met = row["ratio"] <= r["target_ratio_at_batch_1"]
            ratio += f" (target ≤ {r['target_ratio_at_batch_1']}: {'met' if met else '**NOT met**'})"
        rows.append(f"| {models.get(row['model'], row['model'])} | {row['batch_size']} | {row['torch_ms']:,.3f} | "
                    f"{row['onnxruntime_ms']:,.3f} | {ratio} |")
    return "\n".join(rows) + f"\n\n{r['threads']} threads. " + command_line(r, "onnxruntime_vs_torch", up)


def production_loop(up: str) -> str:
    r = load("production_loop")
    rows = ["| capture | p50 (ms) | p99 (ms) | p50 vs off | requests/s | images captured | dropped | errors |",
            "|---|---|---|---|---|---|---|---|"]
    for name, s in r["capture_cost"]["summary"].items():
        rows.append(f"| {name} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {100 * s['p50_vs_off']:+.1f} % | "
                    f"{s['throughput_rps']:.0f} | {s['captured']} | {s['dropped']} | {s['errors']} |")
    w = r["swaps"]
    swaps = (f"{w['swaps']} swaps under {w['concurrency']}-way load: {w['failed']} failed of {w['requests']} requests; "
             f"swap (link moved -> /health names it, polled every {w['reload_interval_s']} s) median "
             f"{w['swap_ms']['median']} ms, max {w['swap_ms']['max']} ms")
    return "\n".join(rows) + f"\n\n{swaps}\n\n" + command_line(r, "production_loop", up)


def accuracy_estimation(up: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from accuracy_estimation import tables
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = load("accuracy_estimation")
    return f"{tables(result)}\n\n{command_line(result, 'accuracy_estimation', up)}"


RENDERERS: dict[str, Callable[[str], str]] = {
    name: printout(name) for name in ("adaptation", "ablations", "validators", "shift_separation", "reference_dann",
                                      "reference_dann_speed", "training_speed", "training_speed_pin",
                                      "inference_roofline", "serving_memory")
}
RENDERERS.update(accuracy_estimation=accuracy_estimation, loadtest=loadtest, onnxruntime_vs_torch=onnxruntime_vs_torch,
                 production_loop=production_loop)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def regenerate(text: str, where: str = "", up: str = "") -> str:
    """``text`` with every generated block rendered afresh (links relative to the document: ``up``, e.g. ``../``
    for docs/); an unknown NAME is an error naming the file."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise SystemExit(f"doc_tables: {where}: unknown table {name!r} (known: {', '.join(sorted(RENDERERS))})")
        rendered = RENDERERS[name](up)
        if match["part"]:
            tables = tables_of(rendered)
            if int(match["part"]) > len(tables):
                raise SystemExit(f"doc_tables: {where}: {name} renders {len(tables)} table(s), not {match['part']}")
            rendered = tables[int(match["part"]) - 1]
        return f"{match[1]}{rendered}\n<!-- /table -->"
    return BLOCK.sub(replace, text)


def tables_of(text: str) -> list[str]:
    """The markdown tables in ``text`` (runs of lines that start with ``|``), in order."""
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    return found


def up_to_root(path: Path, root: Path = ROOT) -> str:
    """``../`` once per folder between ``path`` and the repository root."""
    try:
        depth = len(path.resolve().relative_to(root).parts) - 1
    except ValueError:
        depth = 0
    return "../" * depth


def stale(paths: list[Path]) -> list[str]:
    """The generated blocks that differ from what their JSON gives, as ``file: NAME``."""
    found = []
    for path in paths:
        text = path.read_text()
        for old, new in zip(BLOCK.finditer(text), BLOCK.finditer(regenerate(text, str(path), up_to_root(path))),
                            strict=True):
            if old["body"] != new["body"]:
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {old['name']}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    paths = documents()
    if args.check:
        found = stale(paths)
        for line in found:
            print(f"stale: {line} (python benchmarks/doc_tables.py rewrites it)", file=sys.stderr)
        return 1 if found else 0
    for path in paths:
        text = path.read_text()
        new = regenerate(text, str(path), up_to_root(path))
        if new != text:
            tmp = path.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(path)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
