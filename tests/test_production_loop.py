"""The production loop end to end, with real processes and no mocks.

A server follows ``models/production``, serving release v1 (the Prefect flow trained it on the default task), and
captures what a client sends it: the handwritten digits at low contrast, a shifted target domain v1 was not adapted
to (generated here; their labels exist only in this test). The flow then runs on the capture as its target
(``data.folder.target``, no label on disk), the label-free gate promotes v2, and the server swaps to it by itself
while the client keeps sending. Measured: no failed request, every response names the release that answered, all
responses after the swap come from v2, and v2 is more accurate than v1 on that traffic.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from prefect.testing.utilities import prefect_test_harness
from repo_copy import copy_repo, set_params, sh
from serving_model import png
from serving_process import ClientLoop, serving

from pipelines.flow import retrain
from tada.config import Config
from tada.data.default_task import build_default_task
from tada.data.handwritten import load_handwritten_digits
from tada.serving import Predictor
from tada.serving.capture import LOG, read_log

TOKEN = "production-app-token-0123456789"
TINY = {
    "data": {"source_train_per_class": 50},
    "model": {"bottleneck_dim": 32, "discriminator_hidden": 32, "region_discriminator_hidden": 8},
    "train": {"iterations": 400, "eval_interval": 200, "log_interval": 50, "batch_size": 32},
    "validate": {"min_per_class": 10, "min_rows": 100},
    "evaluate": {"tsne_points": 40, "attention_images": 8},
    "flow": {"retry_delay": 0.0},
}


def low_contrast(images: np.ndarray) -> np.ndarray:
    """The shifted domain: strokes at a third of their contrast on a grey background."""
    return (images.astype(np.float64) * 0.35 + 60).astype(np.uint8)


def write_source(root: Path) -> None:
    """The default task's rendered digits in class folders: the labelled source of the second run."""
    task = build_default_task(Config().replace({"data.source_train_per_class": 50}).data)
    for i, (image, label) in enumerate(zip(task.source_train.images, task.source_train.labels, strict=True)):
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)


def accuracy(onnx: Path, images: list[bytes], labels: np.ndarray) -> float:
    predictions = Predictor(onnx).predict_bytes(images)
    return float(np.mean([p.label == str(y) for p, y in zip(predictions, labels, strict=True)]))


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> SimpleNamespace:
    repo = tmp_path_factory.mktemp("loop") / "repo"
    write_source(repo / "user_data" / "source")
    copy_repo(repo, TINY)
    tokens = repo.parent / "tokens"
    tokens.write_text(f"app:{TOKEN}\n")
    tokens.chmod(0o600)
    digits, labels = load_handwritten_digits(28)
    traffic = [png(x) for x in low_contrast(digits)]
    out = SimpleNamespace(repo=repo, labels=labels, traffic=traffic)
    with prefect_test_harness(server_startup_timeout=90):
        out.first = retrain(repo=str(repo), return_state=True)
        assert out.first.is_completed(), out.first.message
        capture = repo / "user_data" / "capture"
        with serving(repo / "models" / "production", repo.parent / "server.log", "--reload-interval", "0.5",
                     "--capture", str(capture), "--capture-tokens", str(tokens), "--threads", "1") as server:
            out.v1 = server.release()
            with ClientLoop([server.port], traffic, threads=2, per_request=8, token=TOKEN, pause=0.1) as clients:
                deadline = time.monotonic() + 600
                while server.health()["capture"]["captured"] < 0.9 * len(traffic):
                    assert time.monotonic() < deadline, f"capture stalled: {server.health()['capture']}"
                    time.sleep(0.5)
                out.capture_health = server.health()["capture"]
                set_params(repo, {"data": {"name": "folder", "folder": {
                    "source": "user_data/source", "target": "user_data/capture", "target_test": None,
                    "target_recent": 0, "target_since": None}}})
                sh(repo, "git", "commit", "-qam", "retrain on the captured traffic")
                out.second = retrain(repo=str(repo), return_state=True)
                assert out.second.is_completed(), out.second.message
                out.v2 = out.second.result()["decision"]["release"]
                out.swapped = server.wait_for(lambda h: h["release"]["release"] == out.v2, "the swap to v2", 300)
                out.swap_seen = time.monotonic()
                time.sleep(3.0)  # the client keeps sending to v2
            out.answers = clients.answers
            out.health = server.health()
    out.capture = capture
    return out


@pytest.mark.slow
def test_the_gate_promoted_v2_trained_on_the_capture_without_a_target_label(loop):
    decision = loop.second.result()["decision"]
    assert decision["promoted"] and decision["labels_used"] is False and decision["metric"] == "info_max"
    assert decision["previous_release"] == loop.v1 and loop.v2 != loop.v1
    assert "re-evaluated" in decision["production_source"]  # v1 judged on the captured data too
    rows = list(csv.DictReader((loop.repo / "data/manifest.csv").read_text().splitlines()))
    target = [r for r in rows if r["domain"] == "target"]
    assert {r["label"] for r in target} == {""} and len(target) >= 0.9 * len(loop.traffic)
    captured = {p.stem for p in loop.capture.iterdir() if p.suffix == ".png"}
    assert {r["sha256"] for r in target} <= captured  # the manifest names exactly the captured files used
    records, bad = read_log(loop.capture)
    assert bad == 0 and {r["client"] for r in records} == {"app"} and (loop.capture / LOG).is_file()


@pytest.mark.slow
def test_the_server_swapped_while_the_client_kept_sending_and_no_request_failed(loop):
    answers = [a for thread in loop.answers for a in thread]
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[0]}"
    assert all(a.release in (loop.v1, loop.v2) and a.header_release == a.release for a in answers)
    for thread in loop.answers:  # once a client has been answered by v2, it is never answered by v1 again
        releases = [a.release for a in thread]
        first = releases.index(loop.v2)
        assert set(releases[first:]) == {loop.v2} and set(releases[:first]) == {loop.v1}
    after = [a for a in answers if a.started > loop.swap_seen]
    assert after and {a.release for a in after} == {loop.v2}
    assert loop.health["release"]["swaps"] == 1 and loop.health["release"]["refused"] is None


@pytest.mark.slow
def test_v2_is_more_accurate_than_v1_on_the_traffic(loop):
    answers = [a for thread in loop.answers for a in thread]

    def served_accuracy(release: str) -> float:
        hits = [label == str(loop.labels[i]) for a in answers if a.release == release
                for label, i in zip(a.labels, a.sent, strict=True)]
        return float(np.mean(hits))

    v1_served, v2_served = served_accuracy(loop.v1), served_accuracy(loop.v2)
    releases = loop.repo / "models" / "releases"
    v1_all = accuracy(releases / loop.v1 / "model.onnx", loop.traffic, loop.labels)
    v2_all = accuracy(releases / loop.v2 / "model.onnx", loop.traffic, loop.labels)
    print(f"true accuracy on the low-contrast traffic: v1 {v1_all:.4f} (as served {v1_served:.4f}), "
          f"v2 {v2_all:.4f} (as served {v2_served:.4f})")
    assert v2_all > v1_all + 0.05 and v2_served > v1_served
