import argparse
import csv
import json
import subprocess
import sys

import pytest
from serving_model import tiny_model

from tada.cli import main
from tada.serving import Predictor
from tada.serving.batch import COLUMNS
from tada.serving.server import add_arguments, settings_from_args


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_predict_folders_and_files_to_csv(tiny, tmp_path, capsys):
    folder = tiny.target_pngs[0].parents[1]  # target/<label>/<n>.png, searched recursively
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out" / "predictions.csv"
    assert main(["predict", str(tiny.onnx), str(folder), str(bad), "-o", str(out)]) == 1  # one file failed
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == len(tiny.target_pngs) + 1
    expected = {str(p): q for p, q in zip(tiny.target_pngs, Predictor(tiny.onnx).predict_files(tiny.target_pngs),
                                          strict=True)}
    for row in rows[:-1]:
        want = expected[row["path"]]
        assert row["label"] == want.label and float(row["confidence"]) == pytest.approx(want.confidence)
        assert float(row["shift_score"]) == pytest.approx(want.shift_score, rel=1e-4)  # batch composition
        assert row["top_k"].split(";")[0].split(":")[0] == want.label and row["error"] == ""
    assert rows[-1]["path"] == str(bad) and rows[-1]["label"] == "" and "not an image" in rows[-1]["error"]
    err = capsys.readouterr().err
    assert f"{len(tiny.target_pngs)} images predicted" in err and "1 could not be read" in err
    assert "img/s" in err  # the progress bar, on stderr
    assert [p.name for p in out.parent.iterdir()] == ["predictions.csv"]  # written atomically, no leftovers


def test_predict_to_json_with_top_k(tiny, tmp_path):
    out = tmp_path / "p.json"
    assert main(["predict", str(tiny.onnx), *map(str, tiny.target_pngs[:3]), "-o", str(out), "--top-k", "2",
                 "--no-progress"]) == 0
    body = json.loads(out.read_text())
    assert body["model"]["classes"] == list(tiny.task.classes) and body["shift_threshold"] > 0
    assert [p["path"] for p in body["predictions"]] == list(map(str, tiny.target_pngs[:3]))
    assert all(len(p["top_k"]) == 2 and p["error"] is None for p in body["predictions"])


def test_predict_reports_missing_inputs(tiny, tmp_path, capsys):
    assert main(["predict", str(tiny.onnx), str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    assert main(["predict", str(tiny.onnx), str(tmp_path)]) == 2  # a folder without images
    assert "no image files" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m.onnx"), str(tiny.target_pngs[0])]) == 2
    assert "no model at" in capsys.readouterr().err


def test_predict_writes_csv_to_stdout_through_the_console_script(tiny):
    out = subprocess.run([sys.executable, "-m", "tada.cli", "predict", str(tiny.onnx), str(tiny.target_pngs[0])],
                         capture_output=True, text=True, check=True)
    [row] = list(csv.DictReader(out.stdout.splitlines()))
    assert row["path"] == str(tiny.target_pngs[0]) and row["label"] in tiny.task.classes


def test_serve_rejects_bad_settings(monkeypatch, capsys, tiny):
    monkeypatch.setenv("TADA_MAX_IMAGES", "many")
    assert main(["serve", str(tiny.onnx)]) == 2
    assert "TADA_MAX_IMAGES must be an integer, got 'many'" in capsys.readouterr().err
    monkeypatch.delenv("TADA_MAX_IMAGES")
    assert main(["serve", str(tiny.onnx), "--max-images", "0"]) == 2
    assert "max_images must be in [1, 10000], got 0 (set by the command line)" in capsys.readouterr().err
    monkeypatch.setenv("TADA_BODY_TIMEOUT", "soon")
    assert main(["serve", str(tiny.onnx)]) == 2
    assert "TADA_BODY_TIMEOUT must be a number, got 'soon'" in capsys.readouterr().err
    monkeypatch.delenv("TADA_BODY_TIMEOUT")
    assert main(["serve", str(tiny.onnx), "--body-timeout", "0"]) == 2
    assert "body_timeout must be in (0, 3600] seconds, got 0.0 (set by the command line)" in capsys.readouterr().err


def test_serve_takes_the_body_timeout_from_the_flag_over_the_variable_over_the_default(monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.delenv("TADA_BODY_TIMEOUT", raising=False)
    assert settings_from_args(parser.parse_args([])).body_timeout == 30
    monkeypatch.setenv("TADA_BODY_TIMEOUT", "5")
    assert settings_from_args(parser.parse_args([])).body_timeout == 5
    assert settings_from_args(parser.parse_args(["--body-timeout", "2.5"])).body_timeout == 2.5
    assert "--body-timeout" in parser.format_help() and "$TADA_BODY_TIMEOUT" in parser.format_help()
