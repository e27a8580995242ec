"""Run the HTTP service with uvicorn: ``tada serve MODEL.onnx`` or ``python -m tada.serving MODEL.onnx``.

One process, one onnxruntime session shared by all requests (onnxruntime sessions are thread-safe); requests are
decoded and predicted in worker threads, each with ``intra_op_threads`` onnxruntime threads, so concurrent requests
use the cores. One process also keeps /metrics and the shift window whole: run several containers to scale out.

``MODEL`` is an ONNX file, a release directory, or the quality gate's link ``models/production``, which the service
follows: a promotion or a rollback is served within ``--reload-interval`` seconds, without a restart
(`tada.serving.release`). ``--capture DIR`` keeps a sampled copy of the predicted images as the next target domain
(`tada.serving.capture`); several replicas may follow the same link and capture into the same directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tada.serving.settings import ServeSettings, SettingsError, env_name, load_settings

if TYPE_CHECKING:
    from tada.serving.app import ObservedApp

FLAGS = {  # flag -> (setting, type, help)
    "--host": ("host", str, "interface to listen on (the image uses 0.0.0.0)"),
    "--port": ("port", int, "TCP port (0: any free port)"),
    "--max-images": ("max_images", int, "images per request"),
    "--max-body-bytes": ("max_body_bytes", int, "request body size limit"),
    "--max-pixels": ("max_pixels", int, "decoded width x height limit per image"),
    "--body-timeout": ("body_timeout", float, "seconds to receive a request's whole body (slow uploads get a 408)"),
    "--header-timeout": ("header_timeout", float, "seconds to receive a request's headers (slow clients get a 408 "
                         "and are disconnected)"),
    "--max-connections": ("max_connections", int, "open connections in all; more are answered 503"),
    "--max-connections-per-client": ("max_connections_per_client", int, "open connections from one address"),
    "--max-decoding-bytes": ("max_decoding_bytes", int, "memory of the images decoded at once, all requests "
                             "together"),
    "--threads": ("intra_op_threads", int, "onnxruntime intra-op threads per request (0: onnxruntime's default)"),
    "--batch-size": ("batch_size", int, "images per onnxruntime call"),
    "--top-k": ("top_k", int, "classes listed per image"),
    "--shift-window": ("shift_window", int, "images in the rolling shift summary"),
    "--shift-threshold": ("shift_threshold", float, "shift score above which an image is shifted (default: the "
                          "model's calibrated 99th percentile of target images)"),
    "--shift-alert-fraction": ("shift_alert_fraction", float, "fraction of the window above the threshold that "
                               "raises the alert"),
    "--reload-interval": ("reload_interval", float, "seconds between looks at a followed link such as "
                          "models/production (0: never)"),
    "--capture": ("capture_dir", Path, "capture predicted images into this flat folder (usable as "
                  "data.folder.target)"),
    "--capture-rate": ("capture_rate", float, "fraction of eligible images captured"),
    "--capture-max-bytes": ("capture_max_bytes", int, "byte budget of the capture folder; the oldest images are "
                            "deleted first"),
    "--capture-queue": ("capture_queue", int, "images waiting for the capture writer; more are dropped"),
    "--capture-tokens": ("capture_tokens", Path, "file of 'client:token' lines: only requests carrying such a "
                         "token (Authorization: Bearer) are captured"),
    "--capture-client-share": ("capture_client_share", float, "the most one client may make of the last 1000 "
                               "captured images"),
    "--capture-max-shift": ("capture_max_shift", float, "images whose shift score is above this times the "
                            "threshold are not captured (not from the domain at all; 0: off)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, nargs="?", default=None,
                        help="an exported model, a release directory, or the link models/production, which is "
                             f"followed (default: ${env_name('model')} or {ServeSettings.model})")
    defaults = ServeSettings()
    for flag, (name, kind, text) in FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} [${env_name(name)}, default {getattr(defaults, name)}]")
    parser.add_argument("--access-log", dest="access_log", action="store_true", default=None,
                        help=f"log every request [${env_name('access_log')}]")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    names = ["model", "access_log"] + [name for name, _, _ in FLAGS.values()]
    return load_settings({name: getattr(args, name) for name in names})


def make_predictor(settings: ServeSettings, model: Path | None = None):
    """The `Predictor` the service runs for ``model`` (default the settings' model), with the settings' limits."""
    from tada.serving.predictor import Predictor

    return Predictor(model or settings.model, intra_op_threads=settings.intra_op_threads,
                     batch_size=settings.batch_size, top_k=settings.top_k, max_pixels=settings.max_pixels,
                     shift_threshold=settings.shift_threshold)


def make_slot(settings: ServeSettings):
    """The `ReleaseSlot` for the settings' model: fixed for a file or a directory, followed for a link."""
    from tada.serving.release import ReleaseSlot

    if not settings.model.is_symlink() and not settings.model.exists():
        raise FileNotFoundError(f"no model at {settings.model}: export one with `dvc repro export` "
                                "(models/model.onnx), or follow the quality gate's link models/production")
    return ReleaseSlot(settings.model, lambda path: make_predictor(settings, path), settings.shift_window,
                       settings.reload_interval)


def make_capture(settings: ServeSettings):
    """The `Capture` of ``--capture``, or None."""
    if settings.capture_dir is None:
        return None
    from tada.serving.capture import Capture, read_tokens

    tokens = None if settings.capture_tokens is None else read_tokens(settings.capture_tokens)
    return Capture(settings.capture_dir, rate=settings.capture_rate, max_bytes=settings.capture_max_bytes,
                   queue_size=settings.capture_queue, tokens=tokens, client_share=settings.capture_client_share)


def serve(settings: ServeSettings) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    from tada.allocator import return_large_blocks
    from tada.serving.app import create_app

    return_large_blocks()  # decoded images go back to the kernel when freed (tada.allocator)
    slot = make_slot(settings)
    capture = make_capture(settings)
    served = slot.current
    what = "no release yet" if served is None else (
        f"release {served.release}: {served.predictor.info.extra.get('method', '?')}, "
        f"{served.predictor.info.extra.get('backbone', '?')}, {len(served.predictor.info.classes)} classes")
    follow = f", following {settings.model} every {settings.reload_interval:g} s" if slot.following else ""
    print(f"tada serve: {settings.model} ({what}{follow}) on http://{settings.host}:{settings.port}",
          file=sys.stderr, flush=True)
    if capture is not None:
        trust = ("requests with a token from " + str(settings.capture_tokens) if settings.capture_tokens else
                 "EVERY client (no --capture-tokens: anyone who can reach POST /predict adds training data)")
        print(f"tada serve: capturing {settings.capture_rate:g} of the images of {trust} into {capture.directory}",
              file=sys.stderr, flush=True)
    try:
        uvicorn.run(**uvicorn_options(create_app(slot, settings, capture), settings))
    finally:
        slot.close()
        if capture is not None:
            capture.close()


def uvicorn_options(app: ObservedApp, settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` serving ``app``: h11, whatever else is installed,
    through `json_h11_protocol` so that requests the HTTP parser refuses get the service's JSON errors too."""
    from tada.serving.protocol import json_h11_protocol

    return {"app": app, "host": settings.host, "port": settings.port, "log_level": "info",
            "access_log": settings.access_log, "timeout_graceful_shutdown": 10, "server_header": False,
            "http": json_h11_protocol(app.metrics, settings)}


def run(args: argparse.Namespace) -> int:
    from tada.serving.capture import CaptureError
    from tada.serving.model_info import ModelError

    try:
        serve(settings_from_args(args))
    except (SettingsError, ModelError, FileNotFoundError, CaptureError) as e:
        print(f"tada serve: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tada.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
