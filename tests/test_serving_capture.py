"""`tada.serving.capture` on its own: what is written, under which names and modes, what is dropped and why, the
byte budget, trust and the per-client share, and the folder reader taking a capture as a snapshot."""

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serving_model import noise_images, png

from tada.config import FolderConfig
from tada.data.folder import read_folder_dataset, snapshot
from tada.serving.capture import LOG, Capture, CaptureError, read_log, read_tokens

WAIT_S = 30


def images(count: int, seed: int = 0, size: int = 28) -> list[bytes]:
    return [png(x) for x in noise_images(count, size, seed)]


def drained(capture: Capture, written: int) -> None:
    """Wait until the writer has handled ``written`` images (stored or duplicates)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        s = capture.stats.summary()
        if s["captured"] + s["duplicates"] + s["dropped"]["disk_full"] + s["dropped"]["write_error"] >= written:
            return
        assert time.monotonic() < deadline, f"the writer handled only {s} of {written}"
        time.sleep(0.01)


def test_images_are_stored_once_by_content_hash_private_and_logged(tmp_path):
    capture = Capture(tmp_path / "cap", seed=0)
    blobs = images(5)
    for i, data in enumerate([*blobs, blobs[0]]):  # the first image again: stored once, logged twice
        assert capture.offer("address:127.0.0.1", data, "PNG", {"prediction": str(i)})
    drained(capture, 6)
    capture.close()
    files = sorted(p for p in (tmp_path / "cap").iterdir() if p.name != LOG)
    assert [p.name for p in files] == sorted(hashlib.sha256(b).hexdigest() + ".png" for b in blobs)
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem  # as received, byte for byte
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "cap").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "cap" / LOG).stat().st_mode) == 0o640
    records, bad = read_log(tmp_path / "cap")
    assert bad == 0 and [r["prediction"] for r in records] == [str(i) for i in range(6)]
    assert records[5]["file"] == records[0]["file"] and {r["client"] for r in records} == {"address:127.0.0.1"}
    assert capture.stats.summary()["captured"] == 5 and capture.stats.summary()["duplicates"] == 1


def test_the_oldest_images_are_deleted_first_to_keep_the_byte_budget(tmp_path):
    blobs = images(40, size=200)  # ~40 KB each, incompressible noise
    size = len(blobs[0])
    budget = 1 << 20
    capture = Capture(tmp_path, max_bytes=budget)
    for data in blobs:
        capture.offer("c", data, "PNG", {})
        drained(capture, blobs.index(data) + 1)
        time.sleep(0.002)  # distinct modification times
    capture.close()
    kept = {p.stem for p in tmp_path.iterdir() if p.suffix == ".png"}
    total = sum(p.stat().st_size for p in tmp_path.iterdir() if p.suffix == ".png")
    assert total <= budget and len(kept) < 40 and capture.stats.evicted == 40 - len(kept)
    newest = [hashlib.sha256(b).hexdigest() for b in blobs[-(budget // size) // 2:]]
    assert set(newest) <= kept  # the newest survive, the oldest went
    assert hashlib.sha256(blobs[0]).hexdigest() not in kept


def test_a_full_queue_drops_the_image_not_the_caller(tmp_path, monkeypatch):
    release = threading.Event()
    capture = Capture(tmp_path, queue_size=2)
    original = capture._store
    monkeypatch.setattr(capture, "_store", lambda item: (release.wait(WAIT_S), original(item)))
    started = time.perf_counter()
    results = [capture.offer("c", data, "PNG", {}) for data in images(6)]
    assert time.perf_counter() - started < 1.0  # never waits for the writer
    assert results.count(False) >= 3 and capture.stats.dropped["queue_full"] == results.count(False)
    release.set()
    capture.close()


def test_trust_the_client_share_and_the_shift_filter(tmp_path):
    capture = Capture(tmp_path, tokens={"t" * 16: "app"}, client_share=0.25, share_window=8)
    assert capture.client("t" * 16, "10.0.0.1") == "app" and capture.client("x" * 16, "10.0.0.1") is None
    assert not capture.offer(None, b"junk", "PNG", {})
    assert capture.stats.dropped["untrusted"] == 1
    assert [capture.offer("app", d, "PNG", {}) for d in images(3)] == [True, True, False]  # 2 of 8 at most
    assert capture.stats.dropped["client_share"] == 1
    assert capture.offer("other", images(1, seed=9)[0], "PNG", {}, shift_score=9.0, max_shift=5.0) is False
    assert capture.stats.dropped["shift_score"] == 1
    capture.close()


def test_tokens_file_must_be_private_and_well_formed(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# clients\napp: 0123456789abcdef0123\n")
    path.chmod(0o640)
    assert read_tokens(path) == {"0123456789abcdef0123": "app"}
    path.chmod(0o644)
    with pytest.raises(CaptureError, match="readable by every user"):
        read_tokens(path)
    path.chmod(0o600)
    path.write_text("app:short\n")
    with pytest.raises(CaptureError, match="line 1: the token of 'app' has 5 characters"):
        read_tokens(path)
    path.write_text("a:0123456789abcdef0123\nb:0123456789abcdef0123\n")
    with pytest.raises(CaptureError, match="line 2: the token of 'b' is also 'a'"):
        read_tokens(path)


def test_a_capture_directory_must_be_flat_and_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(CaptureError, match="sub-directories"):
        Capture(tmp_path)
    (tmp_path / "cls").rmdir()
    stale = tmp_path / ".abc.png.999999999.deadbeef.tmp"  # a writer that no longer runs
    stale.write_bytes(b"half an image")
    Capture(tmp_path).close()
    assert not stale.exists()


def test_read_log_skips_a_line_cut_short(tmp_path):
    (tmp_path / LOG).write_text(json.dumps({"file": "a.png"}) + "\n" + '{"file": "b.pn')
    records, bad = read_log(tmp_path)
    assert records == [{"file": "a.png"}] and bad == 1


def test_the_folder_reader_takes_a_capture_as_a_recent_snapshot(tmp_path):
    capture_dir = tmp_path / "capture"
    capture_dir.mkdir()
    now = time.time()
    for i, data in enumerate(images(6)):
        path = capture_dir / f"{hashlib.sha256(data).hexdigest()}.png"
        path.write_bytes(data)
        os.utime(path, (now - 600 + 100 * i, now - 600 + 100 * i))  # one every 100 s, oldest first
    (capture_dir / ".x.png.1.ab.tmp").write_bytes(b"being written")
    (capture_dir / LOG).write_text("")
    files, left = snapshot(capture_dir, recent=4)
    assert len(files) == 4 and left["older_than_recent"] == 2
    assert files == sorted(files, key=lambda p: p.stat().st_mtime)
    files, left = snapshot(capture_dir, since=now - 350)
    assert len(files) == 3 and left["before_since"] == 3
    source = tmp_path / "source"
    for label in "01":
        (source / label).mkdir(parents=True)
        for i, x in enumerate(noise_images(2, seed=int(label))):
            (source / label / f"{i}.png").write_bytes(png(x))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 350))
    splits, _ = read_folder_dataset(FolderConfig(str(source), str(capture_dir), target_since=stamp))
    target = splits[("target", "train")]
    assert len(target) == 3 and all(s.volatile and s.label is None for s in target)


def test_an_image_deleted_while_the_capture_is_laid_out_is_left_out(tmp_path):
    from tada.data.manifest import write_samples
    from tada.data.samples import Sample

    blobs = images(3)
    paths = []
    for data in blobs:
        paths.append(tmp_path / f"{hashlib.sha256(data).hexdigest()}.png")
        paths[-1].write_bytes(data)
    samples = [Sample(None, path=p, volatile=True, root=tmp_path) for p in paths]
    paths[1].unlink()  # evicted by capture's byte budget after the listing
    rows = write_samples({("target", "train"): samples}, ["0"], tmp_path / "data")
    assert sorted(r.sha256 for r in rows) == sorted(hashlib.sha256(b).hexdigest() for b in (blobs[0], blobs[2]))
    with pytest.raises(FileNotFoundError, match="not found"):
        write_samples({("target", "train"): [Sample(None, path=paths[1], root=tmp_path)]}, ["0"], tmp_path / "data2")
    assert np.all([Path(tmp_path / "data" / r.path).is_file() for r in rows])
