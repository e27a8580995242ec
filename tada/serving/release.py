"""Which model the service serves, and swapping it while it serves.

``tada serve`` takes an ONNX file, a release directory (``model.onnx`` + ``release.json``, as `tada.promote` writes
them) or the link the quality gate moves, ``models/production``. Given a link it **follows** it: a watcher thread
looks at it every ``reload_interval`` seconds; when it points somewhere else (a promotion, a rollback) the new model
is loaded beside the old one and checked (its metadata, a warm-up prediction with finite outputs), then swapped in
with one assignment. A request holds the `Served` it started on, so requests in flight finish on the old model. A
release that fails to load or to pass its check is refused: the old one keeps serving and `/health` says why.

Each `Served` carries its own shift and accuracy windows: they restart with a new release, whose reference they
are measured against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tada.serving.accuracy import AccuracyMonitor
from tada.serving.model_info import ModelError
from tada.serving.predictor import Predictor
from tada.serving.shift import ShiftMonitor

log = logging.getLogger("tada.serving")
MODEL_FILE, RELEASE_FILE = "model.onnx", "release.json"


@dataclass
class Served:
    """One loaded release and the windows of the traffic it answered."""

    release: str
    location: Path  # the resolved directory or file it was loaded from
    predictor: Predictor
    monitor: ShiftMonitor | None
    accuracy: AccuracyMonitor | None
    loaded_at: float = field(default_factory=time.time)


def model_file(location: Path) -> Path:
    """The ONNX file of a release directory, or ``location`` itself for a file."""
    return location / MODEL_FILE if location.is_dir() else location


def release_id(location: Path) -> str:
    """The release's id: ``release.json``'s ``release`` for a release directory, else ``model-<sha256[:12]>`` of
    the ONNX file (so two different files never share an id)."""
    record = (location if location.is_dir() else location.parent) / RELEASE_FILE
    if location.is_dir() and record.is_file():
        try:
            value = json.loads(record.read_text(encoding="utf-8")).get("release")
        except (OSError, ValueError) as e:
            raise ModelError(f"{record}: not a readable release record ({e})") from None
        if isinstance(value, str) and value:
            return value
        return location.name
    digest = hashlib.sha256()
    with open(model_file(location), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"model-{digest.hexdigest()[:12]}"


def load_served(location: Path, make_predictor: Callable[[Path], Predictor], window: int) -> Served:
    """Load and check the release at ``location`` (resolved): metadata, then a warm-up prediction of a blank image
    whose outputs must be finite. Raises `ModelError` (or `FileNotFoundError`) saying what is wrong."""
    path = model_file(location)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    rid = release_id(location)
    predictor = make_predictor(path)
    info = predictor.info
    shape = (1, info.image_size, info.image_size) + (() if info.color_mode == "L" else (3,))
    try:
        outputs = predictor.run(np.zeros(shape, np.uint8))
    except Exception as e:  # onnxruntime's own exception types
        raise ModelError(f"{path}: the warm-up prediction failed: {e}") from None
    bad = [name for name, value in outputs.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ModelError(f"{path}: the warm-up prediction gave non-finite {', '.join(bad)}")
    threshold = predictor.shift_threshold
    monitor = ShiftMonitor(window, threshold) if threshold is not None else None
    accuracy = (AccuracyMonitor(window, info.validation["estimated_target_accuracy"])
                if info.validation is not None else None)
    return Served(rid, location, predictor, monitor, accuracy)


class ReleaseSlot:
    """The release being served, and the watcher that swaps it when the followed link moves.

    Args:
        path: an ONNX file, a release directory, or a link to one (followed).
        make_predictor: builds a `Predictor` for an ONNX file with the service's settings.
        window: the size of each release's shift and accuracy windows.
        reload_interval: seconds between looks at the link (0: never look again).
        on_swap: called with the new `Served` after each swap (the service logs it).
    """

    def __init__(self, path: Path, make_predictor: Callable[[Path], Predictor], window: int,
                 reload_interval: float = 2.0, on_swap: Callable[[Served], None] | None = None) -> None:
        self.path, self.make_predictor, self.window = Path(path), make_predictor, window
        self.following = self.path.is_symlink()
        self.reload_interval = reload_interval if self.following else 0.0
        self.on_swap = on_swap
        self.swaps = 0
        self.refused: dict[str, Any] | None = None  # the last release that could not be loaded, and why
        self._refused_key: tuple | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.current: Served | None = None
        if not self.following or os.path.exists(self.path):
            self.current = load_served(self.path.resolve(), make_predictor, window)  # a bad start is an error
        self._thread: threading.Thread | None = None
        if self.reload_interval > 0:
            self._thread = threading.Thread(target=self._watch, name="tada-release-watch", daemon=True)
            self._thread.start()

    @classmethod
    def fixed(cls, predictor: Predictor, window: int) -> ReleaseSlot:
        """A slot that serves ``predictor`` as it is, never swapped (an app built around one `Predictor`)."""
        slot = cls.__new__(cls)
        slot.path, slot.make_predictor, slot.window = predictor.path, None, window
        slot.following, slot.reload_interval, slot.on_swap, slot.swaps = False, 0.0, None, 0
        slot.refused, slot._refused_key, slot._lock, slot._stop = None, None, threading.Lock(), threading.Event()
        slot._thread = None
        served = load_served(predictor.path.resolve(), lambda _: predictor, window)
        slot.current = served
        return slot

    def _key(self, location: Path) -> tuple:
        try:
            st = model_file(location).stat()
            return (str(location), st.st_mtime_ns, st.st_size)
        except OSError:
            return (str(location), None, None)

    def check(self) -> bool:
        """Look at the followed link once; load, check and swap in what it points at if that is new. Returns
        whether it swapped."""
        with self._lock:
            location = self.path.resolve()
            if self.current is not None and location == self.current.location:
                return False
            key = self._key(location)
            if key == self._refused_key:
                return False  # already refused; tried again when the link or the file changes
            started = time.perf_counter()
            try:
                served = load_served(location, self.make_predictor, self.window)
            except (ModelError, OSError, ValueError) as e:
                self._refused_key = key
                self.refused = {"location": str(location), "reason": str(e), "at": time.time()}
                log.error("release at %s refused, still serving %s: %s", location,
                          self.current.release if self.current else "nothing", e)
                return False
            previous = self.current
            self.current = served  # one assignment: a request holds the Served it started with
            self.swaps += 1
            self.refused, self._refused_key = None, None
            log.warning("now serving release %s (was %s), loaded and checked in %.3f s", served.release,
                        previous.release if previous else "nothing", time.perf_counter() - started)
        if self.on_swap is not None:
            self.on_swap(served)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next look may succeed
                log.exception("checking %s failed", self.path)

    def status(self) -> dict[str, Any]:
        current = self.current
        return {"release": None if current is None else current.release,
                "model": None if current is None else str(model_file(current.location)),
                "following": str(self.path) if self.following else None,
                "reload_interval": self.reload_interval, "swaps": self.swaps, "refused": self.refused,
                "loaded_at": None if current is None else current.loaded_at}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
