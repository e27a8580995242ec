"""Every stage's ``deps`` and ``params`` in dvc.yaml are exactly what its code imports and reads, derived here:

- code: the stage's module and, transitively, every module of ``tada/`` and ``pipelines/`` it imports anywhere (at
  the top or inside a function), read from the source, with the packages' ``__init__.py`` that importing runs;
- params: the ``params.yaml`` keys the stage reads when it runs (`stage_reads.py` records them), for ``fetch`` over
  the generated default task, a folder dataset and a benchmark archive.

A missing entry means a change that does not re-run the stage (a stale output); an extra one a needless re-run.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from repo_copy import ROOT, copy_repo, env, set_params, sh

from tada.config import Config

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Read by the stages, yet never change an output: how many threads decode and where decoded pixels are cached.
# Deliberately not declared, so changing them re-runs nothing.
NOT_RESULTS = {"data.num_workers", "data.decoded_cache"}


def module_file(name: str) -> Path | None:
    """The file of module ``name`` in this repository (a module or a package's ``__init__.py``), or None."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Modules of this repository that ``path`` imports anywhere in its body (not under ``if TYPE_CHECKING:``,
    which never runs)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from tada.data import registry` imports the module tada.data.registry
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub) else node.module)
    return {m for m in found if m.split(".")[0] in ("tada", "pipelines") and module_file(m)}


def code_closure(module: str) -> set[str]:
    """Repository-relative files that running ``module`` may execute."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            seen.add(prefix)
            todo += sorted(imported_modules(module_file(prefix)))
    # A package __init__.py that imports nothing (a docstring, a version) runs nothing worth a re-run.
    return {str(module_file(m).relative_to(ROOT)) for m in seen if not inert(module_file(m))}


def inert(path: Path) -> bool:
    return path.name == "__init__.py" and not any(isinstance(n, (ast.Import, ast.ImportFrom))
                                                  for n in ast.walk(ast.parse(path.read_text())))


def declared_code(stage: str) -> set[str]:
    files = set()
    for dep in STAGES[stage]["deps"]:
        path = ROOT / dep
        if dep.split("/")[0] in ("tada", "pipelines"):
            assert path.exists(), f"{stage}: dependency {dep} does not exist"
            files |= {str(p.relative_to(ROOT)) for p in path.rglob("*.py") if not inert(p)} if path.is_dir() else {dep}
    return files


def leaves(key: str) -> set[str]:
    """A declared params entry as the leaf keys it covers (a section covers all of its keys)."""
    node = Config().to_dict()
    for part in key.split("."):
        node = node[part]

    def walk(value, prefix: str) -> set[str]:
        if isinstance(value, dict):
            return set().union(*(walk(v, f"{prefix}.{k}") for k, v in value.items()))
        return {prefix}

    return walk(node, key)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_what_the_stage_imports(stage):
    module = STAGES[stage]["cmd"].removeprefix("python -m ")
    imported, declared = code_closure(module), declared_code(stage)
    assert not imported - declared, f"{stage}: imports but does not declare {sorted(imported - declared)}"
    assert not declared - imported, f"{stage}: declares but does not import {sorted(declared - imported)}"


def write_user_data(root: Path) -> None:
    for label, shade in (("cat", 40), ("dog", 200)):
        for i in range(6):
            path = root / "source" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((20, 20), shade + i, np.uint8)).save(path)
    (root / "target").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 20), 60 * i, np.uint8)).save(root / "target" / f"{i}.png")


def write_office31_archive(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for domain in ("amazon", "webcam"):
            for label in ("back_pack", "bike"):
                for i in range(2):
                    buffer = io.BytesIO()
                    Image.fromarray(np.full((12, 12, 3), 50 * i, np.uint8)).save(buffer, format="PNG")
                    info = tarfile.TarInfo(f"{domain}/images/{label}/frame_{i}.png")
                    info.size = len(buffer.getvalue())
                    tar.addfile(info, io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> dict[str, set[str]]:
    """The keys each stage read: all six on a tiny default pipeline, then fetch on a folder and on Office-31."""
    tiny = {"data": {"source_train_per_class": 20, "source_test_per_class": 5},
            "model": {"bottleneck_dim": 16, "discriminator_hidden": 16, "region_discriminator_hidden": 8},
            "train": {"iterations": 6, "eval_interval": 3, "log_interval": 3, "batch_size": 8},
            "evaluate": {"tsne_points": 20, "attention_images": 4}}
    repo = copy_repo(tmp_path_factory.mktemp("stage-reads") / "repo", tiny)
    sh(repo, "dvc", "repro")
    found: dict[str, set[str]] = {}

    def run(stage: str, *extra: str) -> None:
        out = repo / f".reads-{stage}.json"
        subprocess.run([sys.executable, str(ROOT / "tests" / "stage_reads.py"), stage, str(out), *extra], cwd=repo,
                       env={**env(), "PYTHONPATH": str(repo)}, check=True, capture_output=True)
        result = json.loads(out.read_text())
        assert result["exit"] in (0, None), f"{stage} exited {result['exit']}"
        found[stage] = found.get(stage, set()) | set(result["reads"])

    for stage in ("validate", "train", "evaluate", "export", "report", "fetch"):
        run(stage)
    write_user_data(repo / "user_data")
    set_params(repo, {"data": {"name": "folder", "folder": {"source": "user_data/source",
                                                            "target": "user_data/target", "target_test": None}}})
    run("fetch")
    write_office31_archive(repo / "archives" / "domain_adaptation_images.tar.gz")
    set_params(repo, {"data": {"name": "office31", "source": "amazon", "target": "webcam",
                               "archive_dir": str(repo / "archives"), "cache_dir": str(repo / ".cache/datasets")}})
    run("fetch", "--fake-office31", str(repo / "archives" / "domain_adaptation_images.tar.gz"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_params_are_exactly_what_the_stage_reads(reads, stage):
    declared = set().union(*(leaves(key) for key in STAGES[stage].get("params", [])))
    read = reads[stage]
    missing = read - NOT_RESULTS - declared
    assert not missing, f"{stage}: reads but does not declare {sorted(missing)}"
    assert not declared - read, f"{stage}: declares but does not read {sorted(declared - read)}"
