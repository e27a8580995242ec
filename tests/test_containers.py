"""The serving image, built and run for real with podman (Debian's, `runc`): the base made offline from Debian's
packages (`containers/build-base`), the image built from the Dockerfile as written (`containers/build`, which passes
this machine's package-index settings in as build-time mounts only).

The image holds no torch, runs as a non-root user, passes its HEALTHCHECK, answers ``POST /predict`` on a mounted
model exactly as the predictor does outside it, serves a bundled model without a mount, captures into a mounted
volume as its own user, and stays within 400 MB. `.ci/run` installs podman, runc and mmdebstrap; where the machine
cannot run containers at all, the fixture fails and says why (never a silent skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_model import tiny_model
from serving_process import free_port, get_text, predict, request

from tada.serving import Predictor

ROOT = Path(__file__).resolve().parents[1]
SIZE_TARGET_MB = 400
START_S = 180  # the container's start on a busy 2-core machine
BUILD_S = 1800  # a build downloads the serving dependencies from the package index


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "containers" / "containers.conf"))
    return env


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def build(context: Path, target: str, tag: str) -> None:
    result = subprocess.run([str(context / "containers" / "build"), target, tag], capture_output=True, text=True,
                            env=podman_env(), timeout=BUILD_S)
    assert result.returncode == 0, f"containers/build {target} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """The serve and serve-bundled images, built from a copy of the repository whose bundled model is the tests'
    tiny model."""
    assert shutil.which("podman"), "podman is not installed: apt-get install podman runc mmdebstrap (.ci/run does)"
    base = subprocess.run([str(ROOT / "containers" / "build-base")], capture_output=True, text=True,
                          env=podman_env(), timeout=BUILD_S)
    assert base.returncode == 0, f"containers/build-base failed:\n{base.stderr[-3000:]}"
    context = tmp_path_factory.mktemp("image-context")
    for name in ("Dockerfile", "pyproject.toml", "README.md", ".dockerignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, context / name)
    for folder in ("tada", "containers"):
        shutil.copytree(ROOT / folder, context / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (context / "models").mkdir()
    shutil.copy(tiny_model().onnx, context / "models" / "model.onnx")
    tags = {"serve": "localhost/tada-serve:test", "serve-bundled": "localhost/tada-serve:test-bundled"}
    for target, tag in tags.items():
        build(context, target, tag)
    return tags


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder the image's user can read (0755, the model 0644), holding the tests' tiny model."""
    folder = tmp_path_factory.mktemp("models")
    folder.chmod(0o755)
    shutil.copy(tiny_model().onnx, folder / "model.onnx")
    (folder / "model.onnx").chmod(0o644)
    return folder


@contextlib.contextmanager
def container(image: str, *args: str, mounts: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """The image running with host networking on a free port (the machine's container network may lack CNI
    plugins; the port is the service's own); its name and port, removed on exit."""
    port = free_port()
    name = f"tada-test-{port}"
    volumes = [x for m in mounts for x in ("-v", m)]
    podman("run", "-d", "--name", name, "--network=host", "-e", f"TADA_PORT={port}", *volumes, image, *args)
    try:
        deadline = time.monotonic() + START_S
        while True:
            with contextlib.suppress(OSError):
                if request(port, "GET", "/health", timeout=5)[0] == 200:
                    break
            state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
            assert state == "running", f"the container stopped ({state}):\n{podman('logs', name).stderr[-3000:]}"
            assert time.monotonic() < deadline, f"no /health within {START_S} s:\n{podman('logs', name).stderr}"
            time.sleep(0.5)
        yield name, port
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


@pytest.mark.slow
def test_the_serving_image_holds_no_torch_runs_as_tada_and_is_within_its_size(images):
    image = images["serve"]
    probe = podman("run", "--rm", "--entrypoint", "python", image, "-c",
                   "import os, pwd, onnxruntime, tada.serving; import importlib.util as u; "
                   "print(u.find_spec('torch') is None, pwd.getpwuid(os.getuid()).pw_name, os.getuid())")
    assert probe.stdout.split() == ["True", "tada", "1000"], probe.stdout
    size_mb = int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout.strip()) / 1e6
    print(f"serve image: {size_mb:.0f} MB (target <= {SIZE_TARGET_MB})")
    assert size_mb <= SIZE_TARGET_MB
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "tada" and config["Entrypoint"] == ["tada", "serve"]


@pytest.mark.slow
def test_the_healthcheck_passes_and_a_mounted_model_answers_as_the_predictor_does(images, models):
    tiny = tiny_model()
    with container(images["serve"], mounts=(f"{models}:/models:ro",)) as (name, port):
        assert podman("healthcheck", "run", name).returncode == 0  # the image's own HEALTHCHECK command
        blobs = [p.read_bytes() for p in tiny.target_pngs[:8]]
        status, headers, body = predict(port, blobs)
        assert status == 200, body
        expected = Predictor(tiny.onnx).predict_bytes(blobs)
        assert [p["label"] for p in body["predictions"]] == [e.label for e in expected]
        for served, local in zip(body["predictions"], expected, strict=True):
            for key in ("confidence", "entropy", "domain_probability", "shift_score"):
                assert served[key] == getattr(local, key), key  # the same onnxruntime on the same bytes
        assert "tada_requests_total" in get_text(port, "/metrics")


@pytest.mark.slow
def test_the_bundled_image_serves_without_a_mount(images):
    with container(images["serve-bundled"]) as (_, port):
        status, _, body = predict(port, [tiny_model().target_pngs[0].read_bytes()])
        assert status == 200 and body["predictions"][0]["label"] in tiny_model().task.classes


@pytest.mark.slow
def test_capture_writes_into_a_mounted_volume_as_the_services_user(images, models, tmp_path):
    tiny = tiny_model()
    volume = tmp_path / "capture"
    volume.mkdir()
    os.chown(volume, 1000, 1000)  # the volume belongs to the image's user, as an operator would set it up
    with container(images["serve"], "--capture", "/capture", "--capture-max-shift", "0",
                   mounts=(f"{models}:/models:ro", f"{volume}:/capture")) as (_, port):
        blobs = [p.read_bytes() for p in tiny.target_pngs[:4]]
        assert predict(port, blobs)[0] == 200
        deadline = time.monotonic() + START_S
        while request(port, "GET", "/health")[2]["capture"]["captured"] < 4:
            assert time.monotonic() < deadline, request(port, "GET", "/health")[2]["capture"]
            time.sleep(0.2)
    files = sorted(volume.iterdir())
    images_written = [p for p in files if p.suffix == ".png"]
    assert len(images_written) == 4 and (volume / "capture.jsonl").is_file()
    for path in files:
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000), path
        assert info.st_mode & 0o777 == 0o640, (path, oct(info.st_mode))
