"""The figures in README.md and docs/ come from benchmarks/results/*.json, through `benchmarks/doc_tables.py`.

Fails when a committed generated block differs from what its JSON gives (``python benchmarks/doc_tables.py``
rewrites them), and when a table outside any generated block quotes a benchmark's figures.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import doc_tables  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

# Blocks generated elsewhere: docs/reliability.md's tables are the cases tests/test_reliability.py runs.
OTHER_GENERATORS = re.compile(r"<!-- (?:http )?table: tests/test_reliability\.py -->.*?<!-- end of (?:http )?table -->",
                              re.DOTALL)


def test_every_generated_block_is_what_its_json_gives():
    stale = doc_tables.stale(doc_tables.documents())
    assert not stale, f"stale generated tables (run python benchmarks/doc_tables.py): {stale}"


def test_the_docs_have_generated_blocks_for_the_benchmarks():
    names = {m["name"] for path in doc_tables.documents() for m in doc_tables.BLOCK.finditer(path.read_text())}
    assert {"adaptation", "validators", "accuracy_estimation", "production_loop", "loadtest"} <= names, names


def tables_outside_generated_blocks(text: str) -> list[list[str]]:
    """Markdown tables (runs of lines starting with ``|``) outside any generated block."""
    text = OTHER_GENERATORS.sub("", doc_tables.BLOCK.sub("", text))
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


# Tables with figures that are not benchmark results: the stage table, the paper's own numbers, the measured image
# sizes (tests/test_containers.py checks them), the method's pieces and defaults, the serving outputs and settings.
NOT_RESULTS = {
    ("README.md", "| stage | does | writes |"),
    ("docs/TADA.md", "| method | A→W | D→W | W→D | A→D | D→A | W→A | avg |"),
    ("docs/containers.md", "| image | target | holds | size (measured) |"),
    ("docs/method.md", "| piece | where | what it is |"),
    ("docs/method.md", "| choice | our default | why |"),
    ("docs/serving.md", "| output | shape | what it is |"),
    ("docs/serving.md", "| setting | variable | default |"),
}


def test_no_table_with_figures_is_outside_a_generated_block():
    """Every table with a decimal figure is generated from a result file, or is listed in `NOT_RESULTS`."""
    offenders, listed = [], set()
    for path in doc_tables.documents():
        name = str(path.relative_to(ROOT))
        for table in tables_outside_generated_blocks(path.read_text()):
            if (name, table[0]) in NOT_RESULTS:
                listed.add((name, table[0]))
            elif re.search(r"\d\.\d", "\n".join(table)):
                offenders.append(f"{name}: {table[0]}")
    assert not offenders, f"tables with figures typed by hand (generate them: benchmarks/doc_tables.py): {offenders}"
    assert listed == NOT_RESULTS, f"NOT_RESULTS lists tables that are gone: {NOT_RESULTS - listed}"


def test_a_figure_typed_by_hand_is_found_and_rewritten(tmp_path):
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    fresh = doc_tables.regenerate("intro\n<!-- table: adaptation -->\n<!-- /table -->\nafter\n", up="../")
    assert "| tada |" in fresh and "](../benchmarks/results/adaptation.json)" in fresh
    doc.write_text(fresh.replace("| tada | ", "| tada | 99.99 ± 0.00 (typed) "))
    assert doc_tables.stale([doc]) == [f"{doc}: adaptation"]
    assert doc_tables.regenerate(doc.read_text(), up="../") == fresh


def test_an_unknown_table_name_is_an_error_naming_the_file():
    with pytest.raises(SystemExit, match=r"page\.md: unknown table 'nonesuch'"):
        doc_tables.regenerate("<!-- table: nonesuch -->\n<!-- /table -->", where="page.md")


def test_links_are_relative_to_the_document():
    assert doc_tables.up_to_root(ROOT / "README.md") == ""
    assert doc_tables.up_to_root(ROOT / "docs" / "serving.md") == "../"
