"""Every bad input we know of, tried for real: the exact message and exit status (commands and stages) or HTTP
status (the service), written as the table in docs/reliability.md. The test fails when the table there is not what
the code does today; ``TADA_UPDATE_DOCS=1 pytest tests/test_reliability.py`` rewrites it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from serving_model import tiny_model

from tada.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- table: tests/test_reliability.py -->", "<!-- end of table -->"
HTTP_BEGIN, HTTP_END = "<!-- http table: tests/test_reliability.py -->", "<!-- end of http table -->"
TINY = {"data": {"source_train_per_class": 12, "source_test_per_class": 4},
        "model": {"bottleneck_dim": 16, "discriminator_hidden": 16, "region_discriminator_hidden": 8},
        "train": {"iterations": 4, "eval_interval": 2, "log_interval": 2, "batch_size": 8}}


def params(**sections) -> str:
    data = Config().to_dict()
    for section, values in {**TINY, **sections}.items():
        for key, value in values.items():
            if isinstance(value, dict):
                data[section][key].update(value)
            else:
                data[section][key] = value
    return yaml.safe_dump(data, sort_keys=False)


def image(path: Path, pixels: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path, format=fmt) if mode else Image.fromarray(pixels).save(path, format=fmt)


def user_data(root: Path) -> None:
    for label, shade in (("cat", 40), ("dog", 200)):
        for i in range(12):
            image(root / "source" / label / f"{i}.png", np.full((20, 20), shade + i, np.uint8))
    for i in range(6):
        image(root / "target" / f"{i}.png", np.full((20, 20), 30 * i, np.uint8))


FOLDER = {"data": {"name": "folder", "folder": {"source": "user_data/source", "target": "user_data/target"}},
          "validate": {"min_per_class": 2, "min_rows": 10, "image_modes": ["L", "RGB"], "check_image_size": False}}


def case_unknown_key(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params().replace("  iterations: 4", "  iterations: 4\n  iteration: 5"))
    return ["-m", "pipelines.train"]


def case_duplicate_key(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params().replace("  iterations: 4", "  iterations: 4\n  iterations: 5"))
    return ["-m", "pipelines.train"]


def case_params_not_utf8(d: Path) -> list[str]:
    (d / "params.yaml").write_bytes(("# réglages\n" + params()).encode("latin-1"))
    return ["-m", "pipelines.train"]


def case_set_not_yaml(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params())
    return ["-m", "tada.cli", "train", "--set", "train.iterations=[5"]


def case_truncated_model(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params())
    (d / "models").mkdir()
    (d / "models" / "model.pt").write_bytes(b"PK\x03\x04" + bytes(60))  # the start of a zip archive, then nothing
    return ["-m", "pipelines.evaluate"]


def case_empty_model(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params())
    (d / "models").mkdir()
    (d / "models" / "model.pt").write_bytes(b"")
    return ["-m", "pipelines.export"]


def case_batch_over_processes(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params(train={"nproc": 2, "batch_size": 7}))
    return ["-m", "pipelines.train"]


def case_same_source_and_target(d: Path) -> list[str]:
    user_data(d / "user_data")
    (d / "params.yaml").write_text(params(**{**FOLDER, "data": {"name": "folder", "folder": {
        "source": "user_data/source", "target": "user_data/source/cat"}}}))
    return ["-m", "pipelines.fetch"]


def case_empty_class_folder(d: Path) -> list[str]:
    user_data(d / "user_data")
    (d / "user_data" / "source" / "fox").mkdir()
    (d / "params.yaml").write_text(params(**FOLDER))
    return ["-m", "pipelines.fetch"]


def case_csv_with_bom(d: Path) -> list[str]:
    user_data(d / "user_data")
    rows = "path,label\n" + "".join(f"source/{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(12))
    (d / "user_data" / "source.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    (d / "params.yaml").write_text(params(data={"name": "folder", "folder": {"source": "user_data/source.csv",
                                                                            "target": "user_data/target"}}))
    return ["-m", "pipelines.fetch"]


def case_csv_not_utf8(d: Path) -> list[str]:
    user_data(d / "user_data")
    (d / "user_data" / "source.csv").write_bytes("path,label\nsource/cat/0.png,château\n".encode("latin-1"))
    (d / "params.yaml").write_text(params(data={"name": "folder", "folder": {"source": "user_data/source.csv",
                                                                            "target": "user_data/target"}}))
    return ["-m", "pipelines.fetch"]


def fetched(d: Path, extra: Path, pixels: np.ndarray, mode: str | None, fmt: str) -> list[str]:
    user_data(d / "user_data")
    image(d / "user_data" / "source" / "cat" / extra, pixels, mode, fmt)
    (d / "params.yaml").write_text(params(**FOLDER))
    subprocess.run([sys.executable, "-m", "pipelines.fetch"], cwd=d, env=_env(), check=True, capture_output=True)
    return ["-m", "pipelines.validate"]


def case_16_bit_grayscale(d: Path) -> list[str]:
    return fetched(d, Path("wide.png"), (np.arange(400, dtype=np.uint16).reshape(20, 20) * 160), None, "PNG")


def case_cmyk_jpeg(d: Path) -> list[str]:
    return fetched(d, Path("print.jpg"), np.full((20, 20, 4), (0, 200, 200, 0), np.uint8), "CMYK", "JPEG")


def case_predict_csv_with_undecodable_name(d: Path) -> list[str]:
    folder = d / "images"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1, not UTF-8, as an old camera or archive may name it
    with open(raw, "wb") as f:
        f.write(tiny_model().target_pngs[0].read_bytes())
    return ["-m", "tada.cli", "predict", str(tiny_model().onnx), str(folder), "-o", str(d / "out.csv"), "--no-progress"]


def _source_csv(d: Path, extra_row: str) -> list[str]:
    user_data(d / "user_data")
    rows = "path,label\n" + "".join(f"source/{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(12))
    (d / "user_data" / "source.csv").write_text(rows + extra_row + "\n")
    (d / "params.yaml").write_text(params(data={"name": "folder", "folder": {"source": "user_data/source.csv",
                                                                            "target": "user_data/target"}}))
    return ["-m", "pipelines.fetch"]


def case_listing_outside_its_folder(d: Path) -> list[str]:
    (d / "secret.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    return _source_csv(d, "../secret.png,cat")


def case_class_named_dot_dot(d: Path) -> list[str]:
    return _source_csv(d, "source/cat/0.png,..")


def case_one_class_source(d: Path) -> list[str]:
    user_data(d / "user_data")
    shutil.rmtree(d / "user_data" / "source" / "dog")
    (d / "params.yaml").write_text(params(**FOLDER))
    return ["-m", "pipelines.fetch"]


def case_batch_larger_than_the_data(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params(train={"batch_size": 100_000}))
    subprocess.run([sys.executable, "-m", "pipelines.fetch"], cwd=d, env=_env(), check=True, capture_output=True)
    return ["-m", "pipelines.train"]


def case_infinite_learning_rate(d: Path) -> list[str]:
    (d / "params.yaml").write_text(params().replace("  lr: 0.01", "  lr: .inf"))
    return ["-m", "pipelines.train"]


def case_full_disk(d: Path) -> list[str]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)  # CI runs as root
    (d / "params.yaml").write_text(params(data={"source_train_per_class": 200}))
    return ["-m", "pipelines.fetch"]


def case_predict_unconvertible_image(d: Path) -> list[str]:
    (d / "images").mkdir()
    (d / "images" / "0.png").write_bytes(tiny_model().target_pngs[0].read_bytes())
    (d / "images" / "lab.tif").write_bytes(lab_tiff())
    return ["-m", "tada.cli", "predict", str(tiny_model().onnx), str(d / "images"), "-o", str(d / "out.csv"),
            "--no-progress"]


def case_predict_nan_threshold(d: Path) -> list[str]:
    return ["-m", "tada.cli", "predict", str(tiny_model().onnx), str(tiny_model().target_pngs[0]),
            "--shift-threshold", "nan"]


def case_predict_output_not_writable(d: Path) -> list[str]:
    (d / "a-file").write_text("x")
    return ["-m", "tada.cli", "predict", str(tiny_model().onnx), str(tiny_model().target_pngs[0]), "-o",
            str(d / "a-file" / "out.csv")]


def case_serve_nan_threshold(d: Path) -> list[str]:
    return ["-m", "tada.cli", "serve", str(tiny_model().onnx), "--shift-threshold", "nan"]


CASES = {  # name -> (what is tried, how it is set up)
    "unknown params key": ("`train.iteration: 5` in params.yaml (a typo)", case_unknown_key),
    "duplicate params key": ("`iterations` twice under `train:` in params.yaml", case_duplicate_key),
    "params.yaml not UTF-8": ("params.yaml saved as Latin-1", case_params_not_utf8),
    "--set not YAML": ("`tada train --set train.iterations=[5`", case_set_not_yaml),
    "truncated checkpoint": ("models/model.pt cut short, then `evaluate`", case_truncated_model),
    "empty checkpoint": ("models/model.pt of 0 bytes, then `export`", case_empty_model),
    "batch over processes": ("`train.nproc: 2` with `train.batch_size: 7`", case_batch_over_processes),
    "target = source": ("`data.folder.target` inside `data.folder.source`", case_same_source_and_target),
    "empty class folder": ("`user_data/source/fox/` without images", case_empty_class_folder),
    "CSV with a BOM": ("a source CSV saved with a byte-order mark (accepted)", case_csv_with_bom),
    "CSV not UTF-8": ("a source CSV saved as Latin-1", case_csv_not_utf8),
    "16-bit grayscale": ("a 16-bit grayscale PNG in the source, `image_modes: [L, RGB]`", case_16_bit_grayscale),
    "CMYK JPEG": ("a CMYK JPEG in the source, `image_modes: [L, RGB]`", case_cmyk_jpeg),
    "undecodable file name": ("`tada predict -o out.csv` on a folder with a Latin-1 file name (accepted)",
                              case_predict_csv_with_undecodable_name),
    "listing outside its folder": ("a source CSV row `../secret.png,cat`", case_listing_outside_its_folder),
    "class named ..": ("a source CSV row labelled `..`", case_class_named_dot_dot),
    "one-class source": ("`user_data/source/` with the class folder `cat` only", case_one_class_source),
    "batch larger than the data": ("`train.batch_size: 100000`", case_batch_larger_than_the_data),
    "infinite learning rate": ("`optim.lr: .inf`", case_infinite_learning_rate),
    "full disk": ("`fetch` with `data/` on a 1 MiB file system", case_full_disk),
    "unconvertible image": ("`tada predict -o out.csv` on a folder holding a CIE-LAB TIFF",
                            case_predict_unconvertible_image),
    "predict threshold nan": ("`tada predict --shift-threshold nan`", case_predict_nan_threshold),
    "output not writable": ("`tada predict -o a-file/out.csv`", case_predict_output_not_writable),
    "serve threshold nan": ("`tada serve --shift-threshold nan`", case_serve_nan_threshold),
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def run_case(name: str, tmp_path: Path) -> tuple[int, str]:
    d = tmp_path / name.replace(" ", "_").replace(".", "dot")
    d.mkdir()
    args = CASES[name][1](d)
    try:
        result = subprocess.run([sys.executable, *args], cwd=d, env=_env(), capture_output=True, text=True,
                                errors="replace")
    finally:
        if os.path.ismount(d):
            subprocess.run(["umount", "-l", str(d)], check=False)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    message = "<br>".join(lines[-4:])  # the message (validate's summary spans a few lines)
    message = re.sub(r"in \d+\.\d+ s", "in … s", message)  # a duration, not part of the message
    return result.returncode, message.replace(str(d), "<dir>")


def table(rows: list[tuple[str, str, int, str]], status: str = "exit") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"| case | tried | {status} | message |", "|---|---|---|---|"]
    lines += [f"| {name} | {cell(tried)} | {code} | {cell(message) or '(nothing on stderr)'} |"
              for name, tried, code, message in rows]
    return "\n".join(lines)


def check_doc(rendered: str, begin: str, end: str) -> None:
    """The table between ``begin`` and ``end`` in docs/reliability.md is ``rendered`` (or becomes it)."""
    text = DOC.read_text()
    start, stop = text.index(begin) + len(begin), text.index(end)
    if os.environ.get("TADA_UPDATE_DOCS"):
        DOC.write_text(text[:start] + "\n" + rendered + "\n" + text[stop:])
    else:
        assert text[start:stop].strip() == rendered, \
            f"docs/reliability.md is stale; run TADA_UPDATE_DOCS=1 pytest {__file__}"


@pytest.mark.slow
def test_every_bad_input_gets_a_precise_message_and_the_doc_says_so(tmp_path):
    rows = []
    for name, (tried, _) in CASES.items():
        code, message = run_case(name, tmp_path)
        rows.append((name, tried, code, message))
    by_name = {r[0]: r for r in rows}
    assert by_name["CSV with a BOM"][2] == 0 and by_name["undecodable file name"][2] == 0
    assert all(code in (1, 2) for name, _, code, _ in rows if name not in ("CSV with a BOM", "undecodable file name"))
    assert by_name["unconvertible image"][2] == 1  # the other image is predicted and written
    assert len(list(csv.reader((tmp_path / "unconvertible_image" / "out.csv").open()))) == 3
    written = list(csv.reader(io.StringIO((tmp_path / "undecodable_file_name" / "out.csv").read_bytes().decode(
        "utf-8", "surrogateescape"))))
    assert written[1][0].encode("utf-8", "surrogateescape").endswith(b"caf\xe9.png")  # the name's own bytes
    check_doc(table(rows), BEGIN, END)


def test_16_bit_grayscale_is_converted_by_its_top_8_bits_everywhere(tmp_path):
    from tada.data.decoded import load_image
    from tada.serving.images import decode, to_array

    wide = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 160)
    image(tmp_path / "wide.png", wide)
    expected = (wide >> 8).astype(np.uint8)
    assert np.array_equal(load_image(tmp_path / "wide.png", "L", 20), expected)  # training's decoding
    served = to_array(decode((tmp_path / "wide.png").read_bytes(), 10**6), "L", 20)  # serving's
    assert np.array_equal(served, expected)


MULTIPART = "multipart/form-data; boundary=b"
HEAD = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + MULTIPART + "\r\n"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def lab_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("LAB", (8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


def http_cases(target: bytes) -> dict[str, tuple[str, object]]:
    """name -> (what is tried, an httpx request's keyword arguments or raw bytes to send)."""
    def files(*blobs, field="images", content_type="image/png"):
        return {"files": [(field, (f"{i}.png", blob, content_type)) for i, blob in enumerate(blobs)]}

    return {
        "not an image": ("a text file as the image", files(b"hello, not an image")),
        "corrupt image": ("a PNG cut in half, after a good one", files(target, target[: len(target) // 2])),
        "too many images": ("5 images, `max_images` 4", files(*[target] * 5)),
        "too many parts": ("1,001 files, over the multipart parser's limit", files(*[b"x"] * 1001)),
        "body too large": ("a 1.1 MB body, `max_body_bytes` 1 MiB", files(b"\0" * 1_100_000)),
        "image too large": ("a 65 x 65 PNG, `max_pixels` 64 x 64", files(png_bytes(np.zeros((65, 65), np.uint8)))),
        "JSON, not multipart": ("`Content-Type: application/json`", {"json": {"image": "aGVsbG8="}}),
        "part not an image type": ("a part declared `text/plain`", files(target, content_type="text/plain")),
        "wrong field": ("the image in the field `image`", files(target, field="image")),
        "no images": ("an empty multipart body", {"content": b"--b--\r\n", "headers": {"content-type": MULTIPART}}),
        "no boundary": ("`multipart/form-data` without a boundary",
                        {"content": b"x", "headers": {"content-type": "multipart/form-data"}}),
        "bad Content-Length": ("`Content-Length: abc`", (HEAD + "Content-Length: abc\r\n\r\n").encode()),
        "not HTTP": ("`HELLO THERE` on the socket", b"HELLO THERE\r\n\r\n"),
        "unknown path": ("`GET /predictions`", {"method": "GET", "url": "/predictions"}),
        "wrong method": ("`GET /predict`", {"method": "GET", "url": "/predict"}),
        "slow upload": ("a body trickled at 4 bytes/s, `body_timeout` 1 s", "trickle"),
        "slow headers": ("the headers trickled a byte every 0.25 s, `header_timeout` 1 s", "slow headers"),
        "unconvertible image": ("a CIE-LAB TIFF (Pillow decodes it, cannot convert it)",
                                files(lab_tiff(), content_type="image/tiff")),
    }


def send(port: int, request: object) -> tuple[int, dict]:
    import socket

    import httpx
    from test_serving_server import WAIT_S, answer

    if isinstance(request, dict):
        kwargs = {"method": "POST", "url": "/predict", **request}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
            response = client.request(**kwargs)
            return response.status_code, response.json()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
        if request == "slow headers":
            s.settimeout(0.25)
            raw = b""
            for byte in HEAD.encode():
                try:
                    s.sendall(bytes([byte]))
                    raw += s.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                if b"\r\n\r\n" in raw:
                    break
            s.settimeout(WAIT_S)
            while chunk := s.recv(65536):
                raw += chunk
        elif request == "trickle":
            s.sendall((HEAD + "Content-Length: 1000\r\n\r\n").encode())
            s.settimeout(0.25)
            raw = b""
            for _ in range(int(40 * WAIT_S)):  # until the server answers, at most 10 x WAIT_S
                try:
                    s.sendall(b"x")
                    raw += s.recv(65536)
                except (TimeoutError, BlockingIOError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                if b"\r\n\r\n" in raw:
                    break
            s.settimeout(WAIT_S)  # the headers are in; on a busy machine the body may come in a later segment
            head, _, body = raw.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            while length and len(body) < int(length.group(1)) and (chunk := s.recv(65536)):
                body += chunk
            raw = head + b"\r\n\r\n" + body
        else:
            s.sendall(request)
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
    status, _, body = answer(raw)
    return int(status.split()[1]), body


@pytest.mark.slow
def test_every_bad_request_gets_a_precise_json_answer_and_the_doc_says_so():
    from test_serving_server import running, still_serving

    tiny = tiny_model()
    target = tiny.target_pngs[0].read_bytes()
    rows = []
    limits = {"max_images": 4, "max_body_bytes": 1024 * 1024, "max_pixels": 64 * 64, "body_timeout": 1.0,
              "header_timeout": 1.0}
    with running(tiny, **limits) as port:
        for name, (tried, request) in http_cases(target).items():
            status, body = send(port, request)
            assert 400 <= status < 500 and set(body) == {"error", "detail"}, (name, status, body)
            detail = re.sub(r"\(\d+ bytes received\)", "(… bytes received)", body["detail"])  # timing-dependent
            rows.append((name, tried, status, f"`{body['error']}`: {detail}"))
        still_serving(port)
    check_doc(table(rows, "HTTP"), HTTP_BEGIN, HTTP_END)
