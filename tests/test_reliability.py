"""Every bad input we know of, tried for real: the exact message and exit status (commands and stages) or HTTP
status (the service), written as the table in docs/reliability.md. The test fails when the table there is not what
the code does today; ``TADA_UPDATE_DOCS=1 pytest tests/test_reliability.py`` rewrites it.
"""

from __future__ import annotations

import csv
import io
import os
import re
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
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def run_case(name: str, tmp_path: Path) -> tuple[int, str]:
    d = tmp_path / name.replace(" ", "_")
    d.mkdir()
    args = CASES[name][1](d)
    result = subprocess.run([sys.executable, *args], cwd=d, env=_env(), capture_output=True, text=True,
                            errors="replace")
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    message = "<br>".join(lines[-4:])  # the message (validate's summary spans a few lines)
    message = re.sub(r"in \d+\.\d+ s", "in … s", message)  # a duration, not part of the message
    return result.returncode, message.replace(str(d), "<dir>")


def table(rows: list[tuple[str, str, int, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| case | tried | exit | message |", "|---|---|---|---|"]
    lines += [f"| {name} | {cell(tried)} | {code} | {cell(message) or '(nothing on stderr)'} |"
              for name, tried, code, message in rows]
    return "\n".join(lines)


@pytest.mark.slow
def test_every_bad_input_gets_a_precise_message_and_the_doc_says_so(tmp_path):
    rows = []
    for name, (tried, _) in CASES.items():
        code, message = run_case(name, tmp_path)
        rows.append((name, tried, code, message))
    by_name = {r[0]: r for r in rows}
    assert by_name["CSV with a BOM"][2] == 0 and by_name["undecodable file name"][2] == 0
    assert all(code in (1, 2) for name, _, code, _ in rows if name not in ("CSV with a BOM", "undecodable file name"))
    written = list(csv.reader(io.StringIO((tmp_path / "undecodable_file_name" / "out.csv").read_bytes().decode(
        "utf-8", "surrogateescape"))))
    assert written[1][0].encode("utf-8", "surrogateescape").endswith(b"caf\xe9.png")  # the name's own bytes
    rendered = table(rows)
    text = DOC.read_text()
    if os.environ.get("TADA_UPDATE_DOCS"):
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + rendered + "\n" + text[end:])
    else:
        assert rendered in text, f"docs/reliability.md is stale; run TADA_UPDATE_DOCS=1 pytest {__file__}"


def test_16_bit_grayscale_is_converted_by_its_top_8_bits_everywhere(tmp_path):
    from tada.data.decoded import load_image
    from tada.serving.images import decode, to_array

    wide = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 160)
    image(tmp_path / "wide.png", wide)
    expected = (wide >> 8).astype(np.uint8)
    assert np.array_equal(load_image(tmp_path / "wide.png", "L", 20), expected)  # training's decoding
    served = to_array(decode((tmp_path / "wide.png").read_bytes(), 10**6), "L", 20)  # serving's
    assert np.array_equal(served, expected)
