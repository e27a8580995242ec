"""The production install: a fresh virtual environment with only the serving extra, exactly as the Dockerfile's
serve target installs it. No torch in it; its service answers like the PyTorch model and survives bad input."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_text import metric, samples
from serving_model import tiny_model

from tada.data.decoded import load_image
from tada.serving.release import release_id

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_stage(name: str) -> str:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(rf"^FROM \S+ AS {re.escape(name)}\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no stage {name} in the Dockerfile"
    return match.group(1)


def serve_requirement() -> str:
    """What the serve image installs, e.g. ``.[serve]``."""
    [spec] = re.findall(r'pip install "([^"]+)"', dockerfile_stage("serve-build"))
    return spec


def test_dockerfile_serve_target_is_slim_non_root_and_healthchecked():
    assert serve_requirement() == ".[serve]"
    serve = dockerfile_stage("serve")
    assert "COPY --from=serve-build /opt/venv /opt/venv" in serve  # only the environment, no build tools
    assert re.search(r"^USER tada$", serve, re.MULTILINE) and "HEALTHCHECK" in serve and "/health" in serve
    assert 'ENTRYPOINT ["tada", "serve"]' in serve and "TADA_MODEL=/models/model.onnx" in serve
    assert "COPY --chown=tada:tada models/model.onnx /models/model.onnx" in dockerfile_stage("serve-bundled")
    assert 'pip install ".[pipeline]"' in dockerfile_stage("train")
    text = (ROOT / "Dockerfile").read_text()
    assert text.rstrip().split("\nFROM ")[-1].split("\n")[0].endswith("AS train")  # still the default target


@pytest.fixture(scope="module")
def serve_python(tmp_path_factory):
    """A fresh venv with ``pip install "<copy of the project>[serve]"``; its python."""
    root = tmp_path_factory.mktemp("serve-install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tada", src / "tada", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    spec = serve_requirement().replace(".", str(src), 1)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", spec], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return python


def run_in(python, code, cwd):
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_the_serving_install_has_no_torch(serve_python, tmp_path):
    for module in ("torch", "torchvision"):
        out = run_in(serve_python, f"import {module}", tmp_path)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, module
    out = run_in(serve_python, "import tada, fastapi, uvicorn, onnxruntime; from tada.serving import Predictor; "
                               "print(tada.__file__)", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout  # the installed package, not this checkout
    tiny = tiny_model()
    out = subprocess.run([str(serve_python.parent / "tada"), "predict", str(tiny.onnx), str(tiny.target_pngs[0])],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].startswith(f"{tiny.target_pngs[0]},")  # the CLI works without torch too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(serve_python, tmp_path):
    """``python -m tada.serving`` from the fresh venv on a free loopback port, settings from TADA_* variables."""
    tiny = tiny_model()
    port = free_port()
    env = {**os.environ, "TADA_MODEL": str(tiny.onnx), "TADA_PORT": str(port), "TADA_MAX_IMAGES": "4",
           "TADA_MAX_BODY_BYTES": "65536"}
    process = subprocess.Popen([str(serve_python), "-m", "tada.serving"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the service did not start within 60 s"
        time.sleep(0.2)
    yield url, tiny
    process.terminate()
    assert process.wait(timeout=20) in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    log = process.stdout.read()
    assert "Finished server process" in log and "Traceback" not in log, log  # graceful, and nothing crashed


def files(*paths_or_blobs, content_type="image/png"):
    return [("images", (f"{i}.png", b if isinstance(b, bytes) else b.read_bytes(), content_type))
            for i, b in enumerate(paths_or_blobs)]


@pytest.mark.slow
def test_the_installed_service_predicts_like_pytorch_and_survives_bad_input(server):
    url, tiny = server
    pngs = tiny.target_pngs[:8]
    with httpx.Client(base_url=url, timeout=30) as client:
        served = []
        for i in range(0, len(pngs), 4):
            response = client.post("/predict", files=files(*pngs[i : i + 4]))
            assert response.status_code == 200, response.text
            served += response.json()["predictions"]
        expected = tiny.torch_outputs(np.stack([load_image(p, "L", 28) for p in pngs]))
        assert [p["label"] for p in served] == [tiny.task.classes[i] for i in expected["probabilities"].argmax(1)]
        np.testing.assert_allclose([p["confidence"] for p in served], expected["probabilities"].max(1), atol=1e-5)
        np.testing.assert_allclose([p["entropy"] for p in served], expected["entropy"], atol=1e-5)
        np.testing.assert_allclose([p["domain_probability"] for p in served], expected["domain_probability"],
                                   atol=1e-5)
        assert all(p["shift_score"] > 0 for p in served)

        good = pngs[0].read_bytes()
        bad = {  # request -> (status, error code)
            "not an image": ({"files": files(b"GIF89a but not really")}, 422, "not_an_image"),
            "corrupt image": ({"files": files(good[: len(good) // 2])}, 422, "corrupt_image"),
            "too many images": ({"files": files(*[good] * 5)}, 413, "too_many_images"),
            "body too large": ({"files": files(b"\0" * 70_000)}, 413, "body_too_large"),
            "wrong content type": ({"json": {"image": "x"}}, 415, "wrong_content_type"),
        }
        for case, (request, status, code) in bad.items():
            response = client.post("/predict", **request)
            assert (response.status_code, response.json()["error"]) == (status, code), (case, response.text)
            assert client.post("/predict", files=files(good)).status_code == 200, f"not serving after {case}"
        metrics = client.get("/metrics").text
        # every series carries the release that answered, too
        assert metric(metrics, "tada_requests_total", endpoint="/predict", method="POST", status=200) == 7
        assert metric(metrics, "tada_requests_total", endpoint="/predict", method="POST", status=413) == 2
        assert {labels["release"] for labels, _ in samples(metrics, "tada_requests_total")} == {release_id(tiny.onnx)}
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["shift"]["images"] == 13
