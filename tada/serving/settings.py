"""The service's settings: command-line flags over ``TADA_*`` environment variables over defaults.

| setting | variable | default | |
|---|---|---|---|
| model | ``TADA_MODEL`` | ``models/model.onnx`` | the exported model |
| host, port | ``TADA_HOST``, ``TADA_PORT`` | ``127.0.0.1``, ``8000`` | the image sets ``0.0.0.0`` |
| max_images | ``TADA_MAX_IMAGES`` | 32 | images per request |
| max_body_bytes | ``TADA_MAX_BODY_BYTES`` | 8 MiB | request body |
| max_pixels | ``TADA_MAX_PIXELS`` | 4096 x 4096 | decoded width x height per image |
| body_timeout | ``TADA_BODY_TIMEOUT`` | 30 | seconds to receive a request's whole body, then 408 |
| header_timeout | ``TADA_HEADER_TIMEOUT`` | 10 | seconds to receive a request's headers, then 408, closed |
| max_connections | ``TADA_MAX_CONNECTIONS`` | 256 | open connections (<= descriptor limit - 64); more: 503 |
| max_connections_per_client | ``TADA_MAX_CONNECTIONS_PER_CLIENT`` | 64 | open connections from one address |
| max_decoding_bytes | ``TADA_MAX_DECODING_BYTES`` | 512 MiB | memory of images being decoded at once, in all |
| intra_op_threads | ``TADA_INTRA_OP_THREADS`` | 1 | onnxruntime threads per request; requests run in parallel |
| batch_size | ``TADA_BATCH_SIZE`` | 32 | images per onnxruntime call |
| top_k | ``TADA_TOP_K`` | 3 | classes listed per image |
| shift_window | ``TADA_SHIFT_WINDOW`` | 1000 | images in the rolling shift summary |
| shift_threshold | ``TADA_SHIFT_THRESHOLD`` | the model's | score above which an image counts as shifted |
| shift_alert_fraction | ``TADA_SHIFT_ALERT_FRACTION`` | 0.05 | window fraction above it that raises the alert |
| access_log | ``TADA_ACCESS_LOG`` | false | uvicorn's per-request log lines |
| reload_interval | ``TADA_RELOAD_INTERVAL`` | 2 | seconds between looks at a followed link (``models/production``) |
| capture_dir | ``TADA_CAPTURE_DIR`` | none (off) | capture predicted images here (`tada.serving.capture`) |
| capture_rate | ``TADA_CAPTURE_RATE`` | 1.0 | fraction of eligible images captured |
| capture_max_bytes | ``TADA_CAPTURE_MAX_BYTES`` | 1 GiB | byte budget of the capture directory (oldest deleted first) |
| capture_queue | ``TADA_CAPTURE_QUEUE`` | 1024 | images waiting for the writer; beyond, dropped |
| capture_tokens | ``TADA_CAPTURE_TOKENS`` | none | ``client:token`` lines: only requests with a token are captured |
| capture_client_share | ``TADA_CAPTURE_CLIENT_SHARE`` | 1.0 | the most one client may make of the last 1,000 captured |
| capture_max_shift | ``TADA_CAPTURE_MAX_SHIFT`` | 4.0 | not captured above this x the shift threshold (0: off) |
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANGES = {  # integer settings: [low, high]. The highs keep one setting from exhausting the machine by itself.
    "port": (0, 65535), "max_images": (1, 10_000), "max_body_bytes": (1, 1 << 30), "max_pixels": (1, 1 << 28),
    "intra_op_threads": (0, 256), "batch_size": (1, 4096), "top_k": (1, 1000), "shift_window": (1, 1_000_000),
    "max_connections": (1, 65536), "max_connections_per_client": (1, 65536), "max_decoding_bytes": (1 << 20, 1 << 40),
}


class SettingsError(ValueError):
    """A setting is not of its type or out of range; the message names the variable or flag."""


@dataclass(frozen=True)
class ServeSettings:
    model: Path = Path("models/model.onnx")
    host: str = "127.0.0.1"
    port: int = 8000
    max_images: int = 32
    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    max_connections: int = 256
    max_connections_per_client: int = 64
    max_decoding_bytes: int = 512 * 1024 * 1024
    intra_op_threads: int = 1
    batch_size: int = 32
    top_k: int = 3
    shift_window: int = 1000
    shift_threshold: float | None = None
    shift_alert_fraction: float = 0.05
    access_log: bool = False
    reload_interval: float = 2.0
    capture_dir: Path | None = None
    capture_rate: float = 1.0
    capture_max_bytes: int = 1 << 30
    capture_queue: int = 1024
    capture_tokens: Path | None = None
    capture_client_share: float = 1.0
    capture_max_shift: float = 4.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # nan and inf pass most comparisons below, and break the service later
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{f.name} must be a finite number, got {value}")
        for name, (low, high) in RANGES.items():
            if not low <= getattr(self, name) <= high:
                raise SettingsError(f"{name} must be in [{low}, {high}], got {getattr(self, name)}")
        for name in ("body_timeout", "header_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise SettingsError(f"{name} must be in (0, 3600] seconds, got {getattr(self, name)}")
        if self.shift_threshold is not None and self.shift_threshold <= 0:
            raise SettingsError(f"shift_threshold must be > 0, got {self.shift_threshold}")
        if self.max_connections_per_client > self.max_connections:
            raise SettingsError(f"max_connections_per_client ({self.max_connections_per_client}) must be <= "
                                f"max_connections ({self.max_connections})")
        if not 0 < self.shift_alert_fraction <= 1:
            raise SettingsError(f"shift_alert_fraction must be in (0, 1], got {self.shift_alert_fraction}")
        if not 0 <= self.reload_interval <= 3600:  # also refuses NaN
            raise SettingsError(f"reload_interval must be in [0, 3600] seconds, got {self.reload_interval}")
        for name in ("capture_rate", "capture_client_share"):
            if not 0 < getattr(self, name) <= 1:
                raise SettingsError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 1 << 20 <= self.capture_max_bytes <= 1 << 50:
            raise SettingsError(f"capture_max_bytes must be between 1 MiB and 1 PiB, got {self.capture_max_bytes}")
        if not 1 <= self.capture_queue <= 100_000:
            raise SettingsError(f"capture_queue must be in [1, 100000] images, got {self.capture_queue}")
        if not 0 <= self.capture_max_shift < float("inf"):
            raise SettingsError(f"capture_max_shift must be a finite number >= 0 (0: off), got "
                                f"{self.capture_max_shift}")
        if self.capture_dir is None and self.capture_tokens is not None:
            raise SettingsError("capture_tokens is set without capture_dir: set both, or neither")


def env_name(field: str) -> str:
    return f"TADA_{field.upper()}"


def _convert(field: dataclasses.Field, text: str, source: str) -> Any:
    kind = str(field.type)
    try:
        if kind.startswith("Path"):
            return Path(text)
        if kind == "bool":
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError
            return text.lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(text)
        if kind.startswith("float"):
            return float(text)
        return text
    except ValueError:
        words = {"bool": "true or false", "int": "an integer"}.get(kind, "a number")
        raise SettingsError(f"{source} must be {words}, got {text!r}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ServeSettings:
    """Defaults, then ``TADA_*`` variables of ``environ`` (``os.environ``), then ``overrides`` that are not None
    (the command-line flags). Raises `SettingsError` naming the variable or setting."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ServeSettings):
        name = env_name(field.name)
        if environ.get(name, "") != "":
            values[field.name] = _convert(field, environ[name], name)
    sources = {name: env_name(name) for name in values}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    sources.update({name: "the command line" for name in given})
    try:
        return ServeSettings(**values)
    except SettingsError as e:
        name = str(e).split(" ", 1)[0]
        raise SettingsError(f"{e} (set by {sources[name]})" if name in sources else str(e)) from None
