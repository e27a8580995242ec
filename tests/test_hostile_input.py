"""What a stranger's files, requests and settings can do: one test per class of attack or accident, each at the depth
where the fix lives (`docs/reliability.md` lists the cases with their messages, from `tests/test_reliability.py`).

1. containment: a listing names only files under its own folder; 2. a degenerate task never trains;
3. one bad image costs only itself; 4. settings are finite and in range where they are parsed; 5. connections are
bounded in time and number; 6. outputs others open cannot run formulas; 7. a full disk is a message, not a crash.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serving_model import tiny_model
from test_serving_server import WAIT_S, answer, running

from tada.cli import main
from tada.config import Config, ConfigError
from tada.data.folder import read_folder_dataset
from tada.data.manifest import write_samples
from tada.data.samples import Sample
from tada.data.task import DomainTask, ImageSet, check_trainable
from tada.serving.batch import to_csv
from tada.serving.images import DecodeBudget, NotAnImageError, load_file
from tada.serving.settings import SettingsError, load_settings


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def source_folders(root: Path, classes=("cat", "dog"), n=4) -> Path:
    for label in classes:
        for i in range(n):
            path = root / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 + 20 * i, np.uint8)).save(path)
    return root


def flat_target(root: Path, n=4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(root / f"{i}.png")
    return root


def folder_config(tmp_path: Path, source: Path | str, target: Path | str):
    return Config().replace({"data.name": "folder", "data.folder.source": str(source),
                             "data.folder.target": str(target)}).data.folder


# --- 1. containment -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("listed", ["../../secret.png", "ABSOLUTE"])
def test_a_listing_naming_a_file_outside_its_folder_is_refused_before_anything_is_copied(tmp_path, listed):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(secret)
    user = tmp_path / "a" / "user_data"
    source_folders(user / "images")
    rows = "".join(f"images/{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(4))
    name = str(secret) if listed == "ABSOLUTE" else listed
    (user / "source.csv").write_text(f"path,label\n{rows}{name},cat\n")
    flat_target(user / "target_dir")
    with pytest.raises(ValueError, match=rf"source.csv, line 10: .*resolves to {secret}, outside {user}"):
        read_folder_dataset(folder_config(tmp_path, user / "source.csv", user / "target_dir"))


def test_a_symbolic_link_out_of_a_class_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    source = source_folders(tmp_path / "source")
    (source / "cat" / "link.png").symlink_to(outside)
    flat_target(tmp_path / "target")
    with pytest.raises(ValueError, match=r"link.png resolves to .*elsewhere.png, outside"):
        read_folder_dataset(folder_config(tmp_path, source, tmp_path / "target"))


def test_an_archive_listing_out_of_its_root_never_reaches_data(tmp_path):
    """The depth every reader goes through (`write_samples`): an archive's image list (`tada.data.registry`) names
    ``../../etc/hostname``; nothing is written under the data root, so nothing reaches DVC's cache."""
    root = tmp_path / "extracted"
    source_folders(root)
    listed = [Sample("cat", path=root / "cat" / "0.png", root=root, origin="image_list.txt, line 1"),
              Sample("cat", path=root / ".." / ".." / "etc" / "hostname", root=root, origin="image_list.txt, line 2")]
    with pytest.raises(ValueError, match="image_list.txt, line 2: .*outside"):
        write_samples({("source", "train"): listed}, ["cat"], tmp_path / "data")
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="has no root"):  # a reader that forgets the root is caught as well
        write_samples({("source", "train"): [Sample("cat", path=root / "cat" / "0.png")]}, ["cat"], tmp_path / "d")


# --- 2. degenerate training ----------------------------------------------------------------------------------------

def test_a_degenerate_task_is_refused_before_training():
    images = np.zeros((10, 8, 8), np.uint8)
    one_class = DomainTask(("cat", "dog"), ImageSet(images, np.zeros(10, np.int64)), ImageSet(images[:2], None),
                           ImageSet(images, None), None)
    with pytest.raises(ValueError, match=r"1 class\(es\) \(cat\): a classifier needs .* at least two classes"):
        check_trainable(one_class, 4)
    two = DomainTask(("cat", "dog"), ImageSet(images, np.arange(10) % 2), ImageSet(images[:2], None),
                     ImageSet(images[:6], None), None)
    check_trainable(two, 6)
    with pytest.raises(ValueError, match=r"train.batch_size \(7\) is larger than the target training split \(6 "):
        check_trainable(two, 7)


def test_a_one_class_folder_source_is_refused_when_it_is_read(tmp_path):
    source = source_folders(tmp_path / "source", classes=("cat",))
    flat_target(tmp_path / "target")
    with pytest.raises(ValueError, match="has 1 class"):
        read_folder_dataset(folder_config(tmp_path, source, tmp_path / "target"))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_no_param_can_be_infinite_or_nan(value):
    with pytest.raises(ConfigError, match="optim.lr must be a finite number"):
        Config().replace({"optim.lr": value})
    with pytest.raises(ConfigError, match="method.entropy_weight must be a finite number"):
        Config().replace({"method.entropy_weight": value})


@pytest.mark.parametrize("label", ["..", ".", "a/b", "x\x7fy", "x\ty"])
def test_a_class_name_that_is_not_a_safe_folder_name_is_refused(tmp_path, label):
    user = tmp_path / "user"
    source_folders(user / "images")
    rows = "".join(f"images/{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(3))
    (user / "source.csv").write_text(f"path,label\n{rows}images/cat/3.png,{label}\n", newline="")
    flat_target(user / "target")
    with pytest.raises(ValueError, match="is not a usable class name"):
        read_folder_dataset(folder_config(tmp_path, user / "source.csv", user / "target"))


# --- 3. one bad image costs only itself ------------------------------------------------------------------------------

def lab_tiff() -> bytes:
    """A CIE-LAB TIFF: Pillow decodes it but cannot convert it to L or RGB."""
    out = io.BytesIO()
    Image.new("LAB", (8, 8)).save(out, format="TIFF")
    return out.getvalue()


def test_an_image_that_cannot_be_converted_is_one_error_row_and_the_rest_is_written(tmp_path, tiny):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(tiny.target_pngs[:5]):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "2b_lab.tif").write_bytes(lab_tiff())
    out = tmp_path / "out.csv"
    assert main(["predict", str(tiny.onnx), str(folder), "-o", str(out), "--no-progress"]) == 1
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and sum(bool(r["label"]) for r in rows) == 5
    [bad] = [r for r in rows if r["path"].endswith("2b_lab.tif")]
    assert "unsupported TIFF image (mode LAB): cannot convert it to L" in bad["error"] and not bad["label"]


def test_the_service_answers_an_unconvertible_image_with_422_and_keeps_serving(tiny):
    with running(tiny) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
        response = client.post("/predict", files=[("images", ("lab.tif", lab_tiff(), "image/tiff"))])
        assert response.status_code == 422 and response.json()["error"] == "unsupported_image", response.text
        assert "image 0 ('lab.tif'): unsupported TIFF image (mode LAB)" in response.json()["detail"]
        ok = client.post("/predict", files=[("images", ("0.png", tiny.target_pngs[0].read_bytes(), "image/png"))])
        assert ok.status_code == 200


def test_a_huge_file_that_is_not_an_image_is_refused_from_its_first_bytes(tmp_path):
    big = tmp_path / "video.bin"
    with open(big, "wb") as f:  # 2 GiB, sparse: reading it whole would allocate 2 GiB
        f.write(b"\x00\x00\x01\xba not an image")
        f.truncate(2 << 30)
    tracemalloc.start()
    with pytest.raises(NotAnImageError, match="video.bin: not an image"):
        load_file(big, "L", 28, 4096 * 4096)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes allocated to refuse it"


def test_the_decode_budget_bounds_what_concurrent_decodes_hold():
    budget = DecodeBudget(100, wait=WAIT_S)
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode(nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                inside[0] += nbytes
                most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= nbytes

    threads = [threading.Thread(target=decode, args=(n,)) for n in [40, 60, 30, 500, 70] * 8]  # 500: alone
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.peak <= 100 and most[0] <= 500 and budget.used == 0
    busy = DecodeBudget(10, wait=0.05)
    with busy.hold(10), pytest.raises(Exception, match="retry later"), busy.hold(1):
        pass


# --- 4. settings ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "value", "message"), [
    ("TADA_SHIFT_THRESHOLD", "nan", "shift_threshold must be a finite number, got nan (set by TADA_SHIFT_THRESHOLD)"),
    ("TADA_SHIFT_THRESHOLD", "-1", "shift_threshold must be > 0, got -1.0 (set by TADA_SHIFT_THRESHOLD)"),
    ("TADA_INTRA_OP_THREADS", "100000", "intra_op_threads must be in [0, 256], got 100000"),
    ("TADA_HEADER_TIMEOUT", "inf", "header_timeout must be a finite number, got inf"),
    ("TADA_MAX_CONNECTIONS_PER_CLIENT", "0", "max_connections_per_client must be in [1, 65536], got 0"),
])
def test_serve_settings_are_finite_and_in_range(variable, value, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(environ={variable: value})
    assert message in str(raised.value)


@pytest.mark.parametrize(("flags", "message"), [
    (["--shift-threshold", "nan"], "shift_threshold must be a finite number > 0, got nan"),
    (["--shift-threshold", "inf"], "shift_threshold must be a finite number > 0, got inf"),
    (["--shift-threshold", "-2"], "shift_threshold must be a finite number > 0, got -2.0"),
    (["--threads", "100000"], "intra_op_threads must be an integer in [0, 256], got 100000"),
])
def test_predict_settings_are_finite_and_in_range(tiny, capsys, flags, message):
    assert main(["predict", str(tiny.onnx), str(tiny.target_pngs[0]), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_refused_before_any_prediction(tiny, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for output, message in ((blocker / "out.csv", "is a file, not a folder"), (tmp_path, "is a folder")):
        assert main(["predict", str(tiny.onnx), str(tiny.target_pngs[0]), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert message in err and "images predicted" not in err, err


# --- 5. connections ------------------------------------------------------------------------------------------------

def slow_client(port: int, source: str, stop: threading.Event, closed: list[float]) -> None:
    """Headers a byte at a time, every 0.2 s, from ``source``; when the server closes, the time it did."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(source, 0)) as s:
        s.settimeout(0.2)
        started = time.monotonic()
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
            if stop.is_set():
                return
            try:
                s.sendall(bytes([byte]))
                if s.recv(65536) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        closed.append(time.monotonic() - started)


def test_slow_header_clients_are_dropped_after_the_header_timeout_while_health_answers(tiny):
    stop, closed = threading.Event(), []
    with running(tiny, header_timeout=1.5, max_connections_per_client=20) as port:
        clients = [threading.Thread(target=slow_client, args=(port, "127.0.0.2", stop, closed)) for _ in range(20)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
            during = [client.get("/health").status_code for _ in range(5)]  # from another address, meanwhile
        for c in clients:
            c.join(WAIT_S)
        stop.set()
        assert during == [200] * 5
        assert len(closed) == 20 and all(1.0 < t < 1.5 + WAIT_S for t in closed), closed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
            text = client.get("/metrics").text
        assert 'tada_rejected_requests_total{reason="header_timeout"' in text


def test_connections_over_the_per_client_cap_are_answered_503_and_the_others_served(tiny):
    with running(tiny, max_connections_per_client=3, header_timeout=WAIT_S) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=("127.0.0.2", 0))
                for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S,
                                          source_address=("127.0.0.2", 0)) as extra:
                raw = b""
                while chunk := extra.recv(65536):
                    raw += chunk
            status, headers, body = answer(raw)
            assert status.startswith("HTTP/1.1 503") and body["error"] == "too_many_connections", raw
            assert "3 connections from 127.0.0.2 are open, at most 3" in body["detail"]
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT_S).status_code == 200
        finally:
            for s in held:
                s.close()


def test_no_documentation_page_loads_anything_from_the_internet(tiny):
    with running(tiny) as port:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S).status_code == 404


# --- 6. outputs others open ----------------------------------------------------------------------------------------

def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    rows = [{"path": "+cmd|' /C calc'!A0.png", "label": '=HYPERLINK("http://x","y")', "confidence": -0.5,
             "top_k": [{"label": "@SUM(1)", "probability": 0.9}], "error": None},
            {"path": "plain.png", "label": "cat", "confidence": 0.5, "top_k": None, "error": "-bad"}]
    [first, second] = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert first["path"].startswith("'+") and first["label"].startswith("'=") and first["top_k"].startswith("'@")
    assert first["confidence"] == "-0.5"  # numbers are numbers
    assert second["path"] == "plain.png" and second["label"] == "cat" and second["error"] == "'-bad"


# --- 7. a full disk ------------------------------------------------------------------------------------------------

def test_a_decoded_cache_on_a_full_disk_is_a_message_not_a_sigbus(tmp_path, small_disk):
    """data.decoded_cache memory-maps the decoded images: writing into a map of a file the disk has no room for
    kills the process with SIGBUS. Reserving the file's blocks first turns that into ENOSPC, with what is free."""
    from tada.data.decoded import load_task
    from tada.data.manifest import write_dataset

    config = Config().replace({"data.source_train_per_class": 40, "data.image_size": 64,
                               "data.decoded_cache": str(small_disk / "decoded")})
    from tada.data.default_task import build_default_task

    write_dataset(build_default_task(config.replace({"data.image_size": 28}).data), tmp_path / "data")
    with pytest.raises(OSError) as raised:  # 400 x 64 x 64 source images alone: 1.6 MB, on a 1 MiB disk
        load_task(tmp_path / "data", config.data)
    assert raised.value.errno == errno.ENOSPC
    assert f"no space left on the device of {small_disk}" in str(raised.value)
    assert "set data.decoded_cache: null" in str(raised.value)


def test_a_stage_on_a_full_disk_names_it_and_exits_2(tmp_path, small_disk):
    import subprocess
    import sys

    import yaml

    data = Config().to_dict()
    data["data"]["source_train_per_class"] = 200  # ~2 MB of PNGs for a 1 MiB data/
    (small_disk / "params.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "pipelines.fetch"], cwd=small_disk, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "fetch: no space left on the device of" in result.stderr
