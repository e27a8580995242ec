"""The HTTP service: FastAPI over a `Predictor`.

- ``POST /predict``: ``multipart/form-data`` with one or more image files in the field ``images`` (any other field
  is refused) -> one prediction per image, in order, with its shift score.
- ``GET /health``: liveness, plus the rolling shift summary and its alert, and the estimated accuracy of the recent
  traffic (`tada.serving.accuracy`) beside the one measured at export.
- ``GET /metadata``: what the model says about itself and the service's limits.
- ``GET /metrics``: Prometheus text format (`tada.serving.metrics`).

Every response names the release that answered it (header ``X-Tada-Release``; ``release`` in the JSON of
``/predict``, ``/health`` and ``/metadata``): the release may be swapped while the service runs
(`tada.serving.release`), and a request is answered whole by the release it started on. Until a followed link points
at a model, ``/predict`` and ``/metadata`` answer 503 ``no_release`` and ``/health`` 503 with ``status:
no_release``. No endpoint changes the service's state: releases are swapped by moving the link, on disk.

Bad input never reaches the model: each case has its own status and ``error`` code, and a message naming the image
(index and filename) and the limit: 415 ``wrong_content_type`` (the request is not multipart, or a part declares a
non-image type), 413 ``body_too_large`` / ``too_many_images`` / ``image_too_large``, 422 ``not_an_image`` /
``corrupt_image`` / ``unsupported_image`` (decoded, but not convertible to the model's mode), 503 ``decode_busy``
(the process's decode budget, ``max_decoding_bytes``, stayed taken for ``body_timeout``), 400 ``no_images`` /
``malformed_multipart`` / ``unexpected_field`` / ``bad_content_length``, 408 ``body_timeout`` (the body took
longer than ``body_timeout``) / ``header_timeout``, 503 ``too_many_connections``, 404 ``not_found``, 405
``method_not_allowed``.
Requests uvicorn's HTTP parser refuses get the same JSON from `tada.serving.protocol`. Every 4xx is counted by its
code in /metrics. Anything unexpected is a 500 with a JSON body; the server keeps serving either way.
"""

from __future__ import annotations

import http
import logging
import time
from collections.abc import AsyncIterator

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from tada import __version__
from tada.serving.capture import Capture
from tada.serving.images import (
    DecodeBudget,
    DecodeBusyError,
    ImageError,
    ImageTooLargeError,
    decoded_bytes,
    finish,
    open_image,
)
from tada.serving.metrics import ServiceMetrics
from tada.serving.predictor import Predictor
from tada.serving.release import ReleaseSlot, Served
from tada.serving.settings import ServeSettings

log = logging.getLogger("tada.serving")
IMAGE_TYPES = ("image/", "application/octet-stream")  # what a part may declare (clients send the latter by default)
MIN_IMAGES_FOR_ALERT = 20  # a window of a handful of images says nothing about the traffic
IMAGES_FIELD = "images"
MAX_PARTS = 1_000  # parts the multipart parser reads before it gives up (counted exactly up to here)


class Rejection(Exception):
    """A 4xx answer: ``status``, a stable ``code`` for clients and metrics, a message for people, and ``headers``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def create_app(source: Predictor | ReleaseSlot, settings: ServeSettings,
               capture: Capture | None = None) -> ObservedApp:
    """The service around ``source`` (a `Predictor`, served as it is, or a `ReleaseSlot`, whose release may be
    swapped while serving), wrapped in `ObservedApp` (request metrics, the release header, last-resort error
    handling). With ``capture``, eligible predicted images are offered to it (`tada.serving.capture`)."""
    slot = source if isinstance(source, ReleaseSlot) else ReleaseSlot.fixed(source, settings.shift_window)

    def alert(served: Served | None = None) -> bool:
        served = served or slot.current
        if served is None or served.monitor is None:
            return False
        s = served.monitor.summary()
        return s["images"] >= min(MIN_IMAGES_FOR_ALERT, settings.shift_window) and (
            s["fraction_above"] > settings.shift_alert_fraction)

    metrics = ServiceMetrics(slot, alert, capture)
    budget = DecodeBudget(settings.max_decoding_bytes, wait=settings.body_timeout)
    started = time.time()
    app = FastAPI(title="TADA inference", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Predictions of an exported TADA model with onnxruntime, and domain-shift monitoring.")
    app.state.slot, app.state.settings, app.state.capture = slot, settings, capture

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        served = slot.current  # the whole request is answered by this release, whatever is swapped meanwhile
        try:
            if served is None:
                raise Rejection(503, "no_release", f"no release to serve yet: {slot.path} does not point at a "
                                "model (the quality gate promotes one)", headers={"retry-after": "5"})
            request.scope["tada.release"] = served.release
            parts = await _read_images(request, settings)
            predictions, formats = await anyio.to_thread.run_sync(_predict, served.predictor, parts, budget)
        except Rejection as r:
            metrics.reject(r.code, served.release if served else None)
            return JSONResponse({"error": r.code, "detail": r.detail}, status_code=r.status, headers=r.headers)
        scores = [p.shift_score for p in predictions if p.shift_score is not None]
        if served.monitor is not None and scores:
            served.monitor.add(scores)
        if served.accuracy is not None:
            served.accuracy.add([p.confident for p in predictions])
        metrics.predicted(served.release, [p.label for p in predictions], scores)
        if capture is not None:
            _offer(capture, request, served, parts, formats, predictions, settings)
        body = [{"filename": name, **p.to_dict()} for (name, _), p in zip(parts, predictions, strict=True)]
        return JSONResponse({"predictions": body, "shift_threshold": served.predictor.shift_threshold,
                             "release": served.release})

    @app.get("/health")
    async def health() -> JSONResponse:
        served = slot.current
        shift = None if served is None or served.monitor is None else {
            **served.monitor.summary(), "alert": alert(served), "alert_fraction": settings.shift_alert_fraction}
        body = {"status": "ok" if served is not None else "no_release",
                "model": None if served is None else served.predictor.path.name,
                "release": slot.status(), "uptime_s": round(time.time() - started, 1), "shift": shift,
                "accuracy": None if served is None or served.accuracy is None else served.accuracy.summary(),
                "capture": None if capture is None else capture.summary()}
        return JSONResponse(body, status_code=200 if served is not None else 503)

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        served = slot.current
        if served is None:
            return JSONResponse({"error": "no_release", "detail": "no release to serve yet"}, status_code=503)
        limits = {k: getattr(settings, k) for k in ("max_images", "max_body_bytes", "max_pixels", "body_timeout",
                                                     "batch_size", "top_k", "intra_op_threads", "shift_window",
                                                     "shift_alert_fraction", "reload_interval")}
        return JSONResponse({"model": served.predictor.info.to_dict(), "release": served.release,
                             "service": {**limits, "shift_threshold": served.predictor.shift_threshold,
                                         "capture": capture is not None, "version": __version__}})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    endpoints = ", ".join(f"{m} {r.path}" for r in app.routes if isinstance(r, APIRoute) for m in sorted(r.methods))

    @app.exception_handler(HTTPException)  # routing's 404 and 405
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = http.HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")  # not_found, method_not_allowed
        detail = {404: f"no endpoint at {request.url.path}: the service answers {endpoints}",
                  405: f"{request.method} is not allowed on {request.url.path}: it takes "
                       f"{(exc.headers or {}).get('Allow')}"}.get(exc.status_code, str(exc.detail))
        metrics.reject(code)
        return JSONResponse({"error": code, "detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # logged by ObservedApp
        return JSONResponse({"error": "internal_error", "detail": "unexpected server error (logged)"}, status_code=500)

    return ObservedApp(app, metrics)


def _offer(capture: Capture, request: Request, served: Served, parts: list[tuple[str, bytes]],
           formats: list[str | None], predictions: list, settings: ServeSettings) -> None:
    """Offer each predicted image to the capture (it queues, never waits)."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-capture-token")
    client = capture.client(token, request.client.host if request.client else None)
    threshold = served.predictor.shift_threshold
    max_shift = None if threshold is None or not settings.capture_max_shift else settings.capture_max_shift * threshold
    now = time.time()
    for (_, data), fmt, p in zip(parts, formats, predictions, strict=True):
        record = {"received": round(now, 3), "release": served.release, "prediction": p.label,
                  "confidence": round(p.confidence, 6), "entropy": round(p.entropy, 6),
                  "shift_score": None if p.shift_score is None else round(p.shift_score, 6)}
        capture.offer(client, data, fmt, record, p.shift_score, max_shift)


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, read within ``timeout`` seconds and at most ``limit`` bytes; `Rejection` otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # isdigit alone accepts '²', which int() refuses
            raise Rejection(400, "bad_content_length", f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > limit:
            raise Rejection(413, "body_too_large", f"request body of {declared} bytes is over the limit of {limit} "
                                                   "bytes: send fewer or smaller images per request")
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):  # the whole body: a trickling client resets no per-read timer
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # a chunked upload, or a body longer than it declared
                    raise Rejection(413, "body_too_large", f"request body over the limit of {limit} bytes: send "
                                                           "fewer or smaller images per request")
                chunks.append(chunk)
    except ClientDisconnect:
        raise Rejection(400, "client_disconnected", "the client closed the connection mid-request") from None
    except TimeoutError:
        # Close the connection: a client still trickling would otherwise hold it open after the answer.
        raise Rejection(408, "body_timeout", f"the request body did not arrive within the limit of {timeout:g} s "
                        f"({size} bytes received): send it faster, or fewer images per request",
                        headers={"connection": "close"}) from None
    return b"".join(chunks)


async def _read_images(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """``(filename, bytes)`` of each file part, checked against the limits; `Rejection` otherwise."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise Rejection(415, "wrong_content_type", "POST /predict takes multipart/form-data with image files in the "
                        f"field 'images' (curl -F images=@digit.png), got Content-Type {content_type or '(none)'!r}")
    body = await _read_body(request, settings.max_body_bytes, settings.body_timeout)

    async def replay() -> AsyncIterator[bytes]:
        yield body

    limit = max(MAX_PARTS, settings.max_images)  # the parser must count every part a request may hold
    try:
        form = await MultiPartParser(request.headers, replay(), max_files=limit, max_fields=limit).parse()
    except MultiPartException as e:
        if str(e).startswith("Too many"):  # starlette's "Too many files/fields": past `limit`, the same 413 as below
            raise Rejection(413, "too_many_images", f"too many images: more than {limit} parts in this request, at "
                            f"most {settings.max_images} per request") from None
        raise Rejection(400, "malformed_multipart", f"malformed multipart body: {e}") from None
    try:
        files: list[UploadFile] = []
        for field, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise Rejection(400, "unexpected_field", f"form field {field!r} is not a file: send images as files "
                                "(curl -F images=@digit.png)")
            if field != IMAGES_FIELD:
                raise Rejection(400, "unexpected_field", f"file {value.filename!r} is in the form field {field!r}: "
                                f"send images in the field {IMAGES_FIELD!r} (curl -F images=@digit.png)")
            files.append(value)
        if not files:
            raise Rejection(400, "no_images", "no image in the request: send one or more files in the field 'images'")
        if len(files) > settings.max_images:
            raise Rejection(413, "too_many_images", f"too many images: {len(files)} in this request, at most "
                            f"{settings.max_images} per request")
        parts = []
        for i, upload in enumerate(files):
            declared = (upload.content_type or "application/octet-stream").lower()
            if not declared.startswith(IMAGE_TYPES):
                raise Rejection(415, "wrong_content_type", f"image {i} ({upload.filename!r}): content type "
                                f"{declared!r} is not an image type (image/png, image/jpeg, ...)")
            parts.append((upload.filename or f"image-{i}", await upload.read()))
        return parts
    finally:
        await form.close()


def _predict(predictor: Predictor, parts: list[tuple[str, bytes]],
             budget: DecodeBudget) -> tuple[list, list[str | None]]:
    """The predictions of the decoded ``parts`` and each image's format (Pillow's name). Each image is decoded under
    the process's ``budget`` and dropped as soon as it is preprocessed (a few kB), so the decoded pixels held at once
    stay within the budget however many requests arrive."""
    pixels, formats = [], []
    for i, (name, data) in enumerate(parts):
        try:
            image = open_image(data, predictor.max_pixels)
            with budget.hold(decoded_bytes(image)):
                formats.append(image.format)
                pixels.append(predictor.preprocess(finish(image)))
                image.close()
                del image
        except ImageError as e:
            status = 413 if isinstance(e, ImageTooLargeError) else 503 if isinstance(e, DecodeBusyError) else 422
            headers = {"retry-after": "5"} if isinstance(e, DecodeBusyError) else None
            raise Rejection(status, e.code, f"image {i} ({name!r}): {e}", headers) from None
    return predictor.predict_arrays(np.stack(pixels)), formats


class ObservedApp:
    """Outermost ASGI layer: counts and times every HTTP request by route, and turns an unexpected exception into a
    JSON 500 (logged) so that one bad request never takes the server down."""

    def __init__(self, app: FastAPI, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        started = False

        async def observed_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                release = scope.get("tada.release") or _current_release(self.state.slot)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-tada-release", release.encode("latin-1", "replace"))]}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            if not started:
                response = JSONResponse({"error": "internal_error", "detail": "unexpected server error (logged)"},
                                        status_code=500)
                await response(scope, receive, send)
        route = scope.get("route")
        endpoint = getattr(route, "path", "other")  # unknown paths share one label: no cardinality blow-up
        self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start,
                                     scope.get("tada.release"))


def _current_release(slot: ReleaseSlot) -> str:
    current = slot.current
    return "none" if current is None else current.release

