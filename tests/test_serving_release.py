"""Real ``tada serve`` processes following ``models/production`` while clients keep sending: a promotion, a
rollback and a broken release, each against running servers; two replicas capturing into one directory; a flood of
junk from an untrusted client; a kill -9 mid-capture; a full disk. No mocks: releases are directories of real ONNX
files, the link is moved with `tada.promote.ModelStore`, the servers are separate processes."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import pytest
from prometheus_text import metric
from serving_model import noise_images, png, tiny_model
from serving_process import ClientLoop, get_text, predict, serving

from tada.promote import ModelStore
from tada.serving.capture import LOG, Capture, read_log

TOKEN = "0123456789abcdef-trusted"
RELOAD_S = "0.2"


def make_release(store: ModelStore, release_id: str, onnx: Path, truncate: bool = False) -> None:
    """A release directory as `ModelStore.promote` writes it (model.onnx + release.json)."""
    release = store.releases / release_id
    release.mkdir(parents=True)
    data = onnx.read_bytes()
    (release / "model.onnx").write_bytes(data[: len(data) // 3] if truncate else data)
    (release / "release.json").write_text(json.dumps({"release": release_id}))


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture
def store(tmp_path, tiny) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for rid in ("v1", "v2"):
        make_release(store, rid, tiny.onnx)
    make_release(store, "broken", tiny.onnx, truncate=True)
    store.activate("v1")
    return store


def target_images(tiny, count: int = 48) -> list[bytes]:
    return [png(x) for x in tiny.task.target_test.images[:count]]


def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"app:{TOKEN}\n")
    path.chmod(0o600)
    return path


def test_two_replicas_follow_promotion_rollback_and_a_broken_release_without_a_failed_request(tmp_path, tiny, store):
    capture = tmp_path / "capture"
    args = ("--reload-interval", RELOAD_S, "--capture", str(capture), "--capture-tokens", str(tokens_file(tmp_path)),
            "--threads", "1")
    trusted = target_images(tiny)
    junk = [png(x) for x in noise_images(64, seed=7)]
    with serving(store.link, tmp_path / "a.log", *args) as a, serving(store.link, tmp_path / "b.log", *args) as b:
        assert a.release() == b.release() == "v1"
        phases = {}
        with ClientLoop([a.port, b.port], trusted, threads=3, token=TOKEN) as clients, \
                ClientLoop([a.port, b.port], junk, threads=1, per_request=8) as flood:
            time.sleep(1.0)
            for release in ("v2", "v1"):  # a promotion, then a rollback
                phases[release] = time.monotonic()
                store.activate(release, reason="test")
                for server in (a, b):
                    server.wait_for(lambda h, r=release: h["release"]["release"] == r, f"swap to {release}")
                phases[f"{release} live"] = time.monotonic()
                time.sleep(1.0)
            store.activate("broken", reason="a truncated model promoted by hand")
            for server in (a, b):
                health = server.wait_for(lambda h: h["release"]["refused"] is not None, "the broken one refused")
                assert health["release"]["release"] == "v1" and health["status"] == "ok"
                assert "broken" in health["release"]["refused"]["location"]
                assert "onnxruntime cannot load it" in health["release"]["refused"]["reason"]
            refused_at = time.monotonic()
            time.sleep(1.0)
        answers = [x for thread in clients.answers for x in thread]
        assert len(answers) > 50
        failed = [x for x in answers if x.status != 200]
        assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[0]}"
        assert all(x.release in ("v1", "v2") and x.header_release == x.release for x in answers)
        # Once both servers serve a release, every request started after that is answered by it.
        v2_window = [x for x in answers if phases["v2 live"] < x.started and x.finished < phases["v1"]]
        after_rollback = [x for x in answers if x.started > phases["v1 live"]]
        assert v2_window and {x.release for x in v2_window} == {"v2"}
        assert after_rollback and {x.release for x in after_rollback} == {"v1"}
        assert any(x.started > refused_at for x in answers)  # served by v1 after the refusal too
        text = get_text(a.port, "/metrics")
        assert metric(text, "tada_images_predicted_total", release="v2") > 0
        assert metric(text, "tada_images_predicted_total", release="v1") > 0
        assert metric(text, "tada_release_refused", release="v1") == 1
        assert metric(text, "tada_release_swaps_total") == 2  # v2, then v1 again; the first load is not a swap
        junk_answers = [x for thread in flood.answers for x in thread]
        assert junk_answers and all(x.status == 200 for x in junk_answers)
        health = a.health()
        assert health["capture"]["dropped"]["untrusted"] > 0
    # What the two replicas captured: the trusted images, each once, and none of the junk.
    records, bad = read_log(capture)
    assert bad == 0 and len({r["replica"] for r in records}) == 2 and {r["client"] for r in records} == {"app"}
    stored = {p.name for p in capture.iterdir() if p.name != LOG}
    trusted_names = {hashlib.sha256(d).hexdigest() + ".png" for d in trusted}
    junk_names = {hashlib.sha256(d).hexdigest() + ".png" for d in junk}
    assert stored == trusted_names and not stored & junk_names
    assert {r["release"] for r in records} == {"v1", "v2"}
    for path in capture.iterdir():
        assert path.stat().st_mode & 0o777 == 0o640


def test_a_server_started_before_any_release_waits_for_one(tmp_path, tiny):
    store = ModelStore(tmp_path / "models")
    store.releases.mkdir(parents=True)
    (store.link).symlink_to(Path("releases") / "v1")  # the link exists, its release does not yet
    with serving(store.link, tmp_path / "log", "--reload-interval", RELOAD_S) as server:
        status, headers, body = predict(server.port, target_images(tiny, 1))
        assert status == 503 and body["error"] == "no_release" and headers["retry-after"] == "5"
        make_release(store, "v1", tiny.onnx)
        server.wait_for(lambda h: h["release"]["release"] == "v1", "the first release")
        status, headers, body = predict(server.port, target_images(tiny, 1))
        assert status == 200 and body["release"] == "v1" and headers["x-tada-release"] == "v1"


def test_kill_9_mid_capture_leaves_only_whole_images_and_a_readable_log(tmp_path, tiny):
    capture = tmp_path / "capture"
    images = [png(x) for x in noise_images(400, size=96, seed=3)]  # unique, ~28 KB each: the writer stays busy
    with (serving(tiny.onnx, tmp_path / "log", "--capture", str(capture), "--max-images", "8",
                  "--capture-max-shift", "1000") as server,
          ClientLoop([server.port], images, threads=4, per_request=8) as clients):
        deadline = time.monotonic() + 120
        while server.health()["capture"]["captured"] < 20:
            assert time.monotonic() < deadline, "nothing captured"
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(60)
        clients.stop()
    names = {hashlib.sha256(d).hexdigest() for d in images}
    visible = [p for p in capture.iterdir() if not p.name.startswith(".") and p.name != LOG]
    assert len(visible) >= 20
    for path in visible:  # every visible image is whole: its bytes hash to its name, one of those sent
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem and path.stem in names
    records, bad = read_log(capture)
    assert bad == 0 and {r["file"] for r in records} <= {p.name for p in visible}
    assert len(records) >= len(visible) - 1  # a kill between an image's rename and its log line costs one line
    Capture(capture).close()  # the next start removes the temporaries of the killed writer
    assert not [p for p in capture.iterdir() if p.name.startswith(".")]


def test_a_full_disk_never_fails_a_request(tmp_path, tiny, small_disk):
    images = [png(x) for x in noise_images(120, size=96, seed=5)]  # ~3 MiB of unique images for 1 MiB of disk
    with serving(tiny.onnx, tmp_path / "log", "--capture", str(small_disk / "capture"), "--capture-max-shift",
                 "1000") as server:
        with ClientLoop([server.port], images, threads=2, per_request=4, max_requests=15) as clients:
            clients.wait()
        answers = [x for thread in clients.answers for x in thread]
        assert len(answers) == 30 and all(x.status == 200 for x in answers)
        health = server.wait_for(lambda h: h["capture"]["queued"] == 0, "the writer to finish")
        assert health["capture"]["dropped"]["disk_full"] > 0 and health["capture"]["captured"] > 0
        assert health["status"] == "ok"
        status, _, body = predict(server.port, images[:2])
        assert status == 200 and len(body["predictions"]) == 2
    visible = [p for p in (small_disk / "capture").iterdir() if p.suffix == ".png"]
    assert visible and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in visible)
