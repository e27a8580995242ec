"""``tada predict MODEL.onnx PATH...``: predictions for image files and folders, written as CSV or JSON.

Folders are searched recursively for image files (by suffix); files named on the command line are read whatever
their suffix. A file that cannot be read as an image gets a row with its ``error`` and no label, and the command
exits with status 1 after writing everything else. Output is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tada.io import write_text_atomic
from tada.preprocessing import IMAGE_SUFFIXES
from tada.serving.images import ImageError, load_file
from tada.serving.predictor import Predictor

COLUMNS = ("path", "label", "confidence", "top_k", "entropy", "domain_probability", "shift_score", "shifted",
           "confident", "error")


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and the image files under the folders named (sorted), in command-line order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def predict_files(predictor: Predictor, paths: Sequence[Path], progress: bool = True) -> list[dict[str, Any]]:
    """One row per path (see `COLUMNS`), in ``predictor.batch_size`` batches, with a progress bar on stderr."""
    from tqdm import tqdm

    info = predictor.info
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(paths), predictor.batch_size):
            batch = paths[start : start + predictor.batch_size]
            pixels, readable, failed = [], [], {}
            for path in batch:
                try:
                    pixels.append(load_file(path, info.color_mode, info.image_size, predictor.max_pixels,
                                            info.load_size))
                    readable.append(path)
                except (ImageError, OSError) as e:
                    failed[path] = str(e)
            predictions = dict(zip(readable, predictor.predict_arrays(np.stack(pixels)) if pixels else [],
                                   strict=True))
            for path in batch:
                if path in failed:
                    rows.append({"path": str(path), "error": failed[path]})
                    continue
                p = predictions[path].to_dict()
                rows.append({"path": str(path), **{k: v for k, v in p.items() if k != "index"}, "error": None})
            bar.update(len(batch))
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (a class called ``=HYPERLINK(...)``, a file named
    ``+cmd...``) gets a leading ``'``, the usual neutraliser (OWASP); numbers and other text are written as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """``top_k`` as ``label:probability`` pairs joined by ``;``; empty cells for missing values; text that a
    spreadsheet would take for a formula is neutralised (`csv_cell`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {k: row.get(k) for k in COLUMNS}
        if cells["top_k"] is not None:
            cells["top_k"] = ";".join(f"{t['label']}:{t['probability']:.6f}" for t in cells["top_k"])
        writer.writerow({k: "" if v is None else csv_cell(v) for k, v in cells.items()})
    return out.getvalue()


def to_json(rows: list[dict[str, Any]], predictor: Predictor, threshold: float | None) -> str:
    info = predictor.info
    model = {"path": str(predictor.path), "classes": list(info.classes), **info.extra}
    return json.dumps({"model": model, "shift_threshold": threshold, "predictions": rows}, indent=2) + "\n"


def check_writable(output: Path) -> None:
    """Raise unless ``output`` can be written: not a folder, and its folder (created if missing, as the atomic write
    does) is under one this user can write to."""
    if output.is_dir():
        raise ValueError(f"-o {output}: is a folder; name a file, e.g. {output / 'predictions.csv'}")
    folder = output.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"-o {output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise PermissionError(f"-o {output}: not writable by this user ({folder})")


def run(model: Path, paths: Sequence[str], output: Path | None, fmt: str | None, top_k: int, batch_size: int,
        threads: int, shift_threshold: float | None, progress: bool) -> int:
    """The ``tada predict`` command; returns its exit status."""
    from tada.serving.model_info import ModelError

    try:
        if output is not None:
            check_writable(output)  # before the work, not after it
        predictor = Predictor(model, intra_op_threads=threads, batch_size=batch_size, top_k=top_k,
                              shift_threshold=shift_threshold)
        files = collect_images(paths)
    except (FileNotFoundError, ModelError, ValueError, PermissionError) as e:
        print(f"tada predict: error: {e}", file=sys.stderr)
        return 2
    if not files:
        print(f"tada predict: error: no image files in {', '.join(paths)} (suffixes: "
              f"{', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
        return 2
    fmt = fmt or ("json" if output is not None and output.suffix.lower() == ".json" else "csv")
    threshold = predictor.shift_threshold
    start = time.perf_counter()
    rows = predict_files(predictor, files, progress)
    seconds = time.perf_counter() - start
    text = to_json(rows, predictor, threshold) if fmt == "json" else to_csv(rows)
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(output, text, errors="surrogateescape")  # a file name that is not UTF-8: its own bytes
    failed = sum(r["error"] is not None for r in rows)
    shifted = [r["shifted"] for r in rows if r.get("shifted") is not None]
    summary = f"{len(rows) - failed} images predicted in {seconds:.2f} s"
    if shifted:
        summary += f", {sum(shifted)} above the shift threshold {threshold:.2f}"
    confident = [r["confident"] for r in rows if r.get("confident") is not None]
    if confident:
        summary += (f"; estimated accuracy {sum(confident) / len(confident):.1%} (label-free, ATC; "
                    f"{predictor.info.validation['estimated_target_accuracy']:.1%} on the target images at export)")
    if failed:
        summary += f"; {failed} could not be read (see the error column)"
    print(f"tada predict: {summary}" + (f" -> {output}" if output else ""), file=sys.stderr)
    return 1 if failed else 0
