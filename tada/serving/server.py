"""Run the HTTP service with uvicorn: ``tada serve MODEL.onnx`` or ``python -m tada.serving MODEL.onnx``.

One process, one onnxruntime session shared by all requests (onnxruntime sessions are thread-safe); requests are
decoded and predicted in worker threads, each with ``intra_op_threads`` onnxruntime threads, so concurrent requests
use the cores. One process also keeps /metrics and the shift window whole: run several containers to scale out.
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
    "--threads": ("intra_op_threads", int, "onnxruntime intra-op threads per request (0: onnxruntime's default)"),
    "--batch-size": ("batch_size", int, "images per onnxruntime call"),
    "--top-k": ("top_k", int, "classes listed per image"),
    "--shift-window": ("shift_window", int, "images in the rolling shift summary"),
    "--shift-threshold": ("shift_threshold", float, "shift score above which an image is shifted (default: the "
                          "model's calibrated 99th percentile of target images)"),
    "--shift-alert-fraction": ("shift_alert_fraction", float, "fraction of the window above the threshold that "
                               "raises the alert"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, nargs="?", default=None,
                        help=f"the exported model (default: ${env_name('model')} or {ServeSettings.model})")
    defaults = ServeSettings()
    for flag, (name, kind, text) in FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} [${env_name(name)}, default {getattr(defaults, name)}]")
    parser.add_argument("--access-log", dest="access_log", action="store_true", default=None,
                        help=f"log every request [${env_name('access_log')}]")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    names = ["model", "access_log"] + [name for name, _, _ in FLAGS.values()]
    return load_settings({name: getattr(args, name) for name in names})


def make_predictor(settings: ServeSettings):
    """The `Predictor` the service runs, with the settings' limits."""
    from tada.serving.predictor import Predictor

    return Predictor(settings.model, intra_op_threads=settings.intra_op_threads, batch_size=settings.batch_size,
                     top_k=settings.top_k, max_pixels=settings.max_pixels, shift_threshold=settings.shift_threshold)


def serve(settings: ServeSettings) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    from tada.serving.app import create_app

    predictor = make_predictor(settings)
    info = predictor.info
    print(f"tada serve: {settings.model} ({info.extra.get('method', '?')}, {info.extra.get('backbone', '?')}, "
          f"{len(info.classes)} classes, outputs {', '.join(info.outputs)}) on http://{settings.host}:{settings.port}",
          file=sys.stderr, flush=True)
    uvicorn.run(**uvicorn_options(create_app(predictor, settings), settings))


def uvicorn_options(app: ObservedApp, settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` serving ``app``: h11, whatever else is installed,
    through `json_h11_protocol` so that requests the HTTP parser refuses get the service's JSON errors too."""
    from tada.serving.protocol import json_h11_protocol

    return {"app": app, "host": settings.host, "port": settings.port, "log_level": "info",
            "access_log": settings.access_log, "timeout_graceful_shutdown": 10, "server_header": False,
            "http": json_h11_protocol(app.metrics)}


def run(args: argparse.Namespace) -> int:
    from tada.serving.model_info import ModelError

    try:
        serve(settings_from_args(args))
    except (SettingsError, ModelError, FileNotFoundError) as e:
        print(f"tada serve: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tada.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
