"""The training image and the production topology (compose.yaml), for real with podman: the heaviest tests, run by
one command and not in the default suite (the training image is 6.9 GB and takes ~5 minutes to build here; with the
compose run, ~12 minutes in all: docs/containers.md has the figures)::

    .venv/bin/python -m pytest --full-stack tests/test_full_stack.py

Without ``--full-stack`` they are deselected (pytest reports them as such), never silently skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from repo_copy import copy_repo, sh
from serving_model import tiny_model
from serving_process import predict, request
from test_containers import BUILD_S, build, podman, podman_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.full_stack, pytest.mark.slow]
TINY = {"data": {"source_train_per_class": 50},
        "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
        "train": {"iterations": 200, "eval_interval": 100, "log_interval": 50, "batch_size": 32, "num_threads": 2},
        "validate": {"min_per_class": 10, "min_rows": 100},
        "evaluate": {"tsne_points": 40, "attention_images": 8},
        "flow": {"retry_delay": 0.0}}
RUN_S = 1800  # a flow run of the tiny pipeline inside containers on a busy 2-core machine


@pytest.fixture(scope="module")
def train_image() -> str:
    base = subprocess.run([str(ROOT / "containers" / "build-base")], capture_output=True, text=True,
                          env=podman_env(), timeout=BUILD_S)
    assert base.returncode == 0, base.stderr[-3000:]
    started = time.monotonic()
    build(ROOT, "train", "localhost/tada-train")
    build(ROOT, "serve", "localhost/tada-serve")
    size = int(podman("image", "inspect", "localhost/tada-train", "--format", "{{.Size}}").stdout) / 1e9
    print(f"train image: {size:.2f} GB, both images built in {time.monotonic() - started:.0f} s")
    return "localhost/tada-train"


def repo_for(tmp: Path) -> Path:
    repo = copy_repo(tmp / "repo", TINY)
    subprocess.run(["chown", "-R", "1000:1000", str(repo)], check=True)  # the images' user works in it
    return repo


def test_dvc_repro_in_the_training_image_gives_the_metrics_it_gives_outside(train_image, tmp_path):
    inside, outside = repo_for(tmp_path / "in"), copy_repo(tmp_path / "out" / "repo", TINY)
    podman("run", "--rm", "--network=none", "-v", f"{inside}:/work", "-e", "HOME=/tmp", "--entrypoint", "sh",
           train_image, "-c", "git config --global --add safe.directory /work && dvc repro", timeout=RUN_S)
    sh(outside, "dvc", "repro")
    mine, theirs = (json.loads((r / "reports" / "metrics.json").read_text()) for r in (outside, inside))
    assert mine == theirs, (mine, theirs)


def compose(repo: Path, *args: str, timeout: float = RUN_S) -> subprocess.CompletedProcess:
    env = {**podman_env(), "TADA_DB_PASSWORD": "tests-only-password"}
    result = subprocess.run(["podman-compose", "-f", str(repo / "compose.yaml"), *args], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"podman-compose {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def test_the_compose_topology_runs_a_flow_and_serves_its_release(train_image, tmp_path):
    repo = repo_for(tmp_path)
    project = f"tada{os.getpid()}"
    (repo / ".env").write_text(f"COMPOSE_PROJECT_NAME={project}\n")
    try:
        compose(repo, "-p", project, "up", "-d")
        deadline = time.monotonic() + RUN_S
        # the worker registers the deployments of prefect.yaml; then one run, now
        while compose(repo, "-p", project, "exec", "-T", "worker", "prefect", "deployment", "ls",
                      timeout=120).stdout.count("weekly-retrain") == 0:
            assert time.monotonic() < deadline, compose(repo, "-p", project, "logs", "worker").stdout[-3000:]
            time.sleep(5)
        compose(repo, "-p", project, "exec", "-T", "worker", "prefect", "deployment", "run",
                "tada-retrain/weekly-retrain")
        while not (repo / "models" / "production").is_symlink():
            assert time.monotonic() < deadline, compose(repo, "-p", project, "logs", "worker").stdout[-5000:]
            time.sleep(5)
        release = os.readlink(repo / "models" / "production").split("/")[-1]
        blobs = [p.read_bytes() for p in tiny_model().target_pngs[:4]]
        while True:  # the service follows models/production: it picks the release up by itself
            with contextlib.suppress(OSError):
                status, headers, body = predict(8000, blobs)
                if status == 200:
                    break
            assert time.monotonic() < deadline, compose(repo, "-p", project, "logs", "serve").stdout[-3000:]
            time.sleep(2)
        assert body["release"] == release and len(body["predictions"]) == 4
        health = request(8000, "GET", "/health")[2]
        assert health["release"]["release"] == release
        database = compose(repo, "-p", project, "exec", "-T", "postgres", "psql", "-U", "prefect", "-tAc",
                           "select count(*) from flow_run").stdout.strip()
        assert int(database) >= 1  # the runs are in PostgreSQL, not SQLite
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            compose(repo, "-p", project, "down", "-v", timeout=300)
        shutil.rmtree(repo, ignore_errors=True)
